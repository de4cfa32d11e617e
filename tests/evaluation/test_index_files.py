"""ReIDIndex folders: atomic saves (failed writes, kills, a full disk) and untrusted folders
(every metadata field and every FAISS header field corrupted, by an author who also rewrites
the checksum)."""

import errno
import hashlib
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time

import faiss
import numpy as np
import pytest

import reid_pbn.evaluation._atomic_dir as atomic_dir
import reid_pbn.evaluation.index as index_mod
from reid_pbn.evaluation import IndexFormatError, ReIDIndex
from reid_pbn.evaluation._index_format import inspect_faiss_file

D = 16


def _index(kind="Flat", metric="cosine", n=60, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, D)).astype(np.float32)
    index = ReIDIndex(D, kind, metric, nlist=4, nprobe=4, pq_m=4, pq_nbits=4, hnsw_m=8,
                      use_gpu=False)
    index.add(x, pids=np.arange(n) % 7, camids=np.arange(n) % 3,
              paths=[f"g/{i}.jpg" for i in range(n)])
    return index, x


def _assert_loads_as(folder, queries, expected):
    loaded = ReIDIndex.load(folder, use_gpu=False)
    dist, idx = loaded.search(queries, 5)
    np.testing.assert_array_equal(idx, expected[1])
    np.testing.assert_array_equal(dist, expected[0])
    return loaded


def _leftovers(parent):
    return sorted(n for n in os.listdir(parent)
                  if ".reid-index-" in n and not n.endswith(".reid-index.lock"))


# -- atomic saves

def _limited_writer(monkeypatch, limit, on_limit):
    """Makes the FAISS file write call ``on_limit`` once ``limit`` bytes are written (the part
    before the limit is written first, as a full disk would)."""
    real = faiss.PyCallbackIOWriter

    def writer(write, *args):
        written = [0]

        def limited(chunk):
            if written[0] + len(chunk) > limit:
                write(chunk[: limit - written[0]])
                on_limit()
            written[0] += len(chunk)
            return write(chunk)

        return real(limited, *args)

    monkeypatch.setattr(faiss, "PyCallbackIOWriter", writer)


def _disk_full():
    raise OSError(errno.ENOSPC, "No space left on device")


def test_failed_index_write_keeps_the_old_index(tmp_path, monkeypatch):
    old, x = _index(seed=0)
    folder = old.save(tmp_path / "idx")
    before = old.search(x[:5], 5)
    new, _ = _index(seed=1, n=200)
    _limited_writer(monkeypatch, 2000, _disk_full)
    with pytest.raises(OSError, match="No space left"):
        new.save(folder)
    _assert_loads_as(folder, x[:5], before)
    assert _leftovers(tmp_path) == []
    monkeypatch.undo()
    new.save(folder)  # and a later save goes through
    assert len(ReIDIndex.load(folder, use_gpu=False)) == 200


def test_failed_metadata_write_keeps_the_old_index(tmp_path, monkeypatch):
    old, x = _index(seed=0)
    folder = old.save(tmp_path / "idx")
    before = old.search(x[:5], 5)

    def half_then_full(path, data):
        with open(path, "xb") as f:
            f.write(data[: len(data) // 2])
        _disk_full()

    monkeypatch.setattr(index_mod, "write_synced", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        _index(seed=1, n=200)[0].save(folder)
    _assert_loads_as(folder, x[:5], before)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("exchange", [True, False], ids=["rename-exchange", "two-renames"])
def test_repeated_saves_replace_the_folder(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(atomic_dir, "_exchange", lambda a, b: False)
    folder = tmp_path / "idx"
    for seed, n in ((0, 60), (1, 90), (2, 30)):
        index, x = _index(seed=seed, n=n)
        index.save(folder)
        _assert_loads_as(folder, x[:4], index.search(x[:4], 5))
    assert sorted(os.listdir(folder)) == ["index.faiss", "metadata.json"]
    assert _leftovers(tmp_path) == []


def _kill_self():
    os.kill(os.getpid(), signal.SIGKILL)


def _save_killed_in_child(index, folder, arm):
    """Saves in a forked child that ``arm`` makes kill itself at one point of the save."""
    pid = os.fork()
    if pid == 0:  # the child: nothing here returns to pytest
        try:
            arm()
            index.save(folder)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


def _kill_in_metadata_write():
    def half_then_kill(path, data):
        with open(path, "xb") as f:
            f.write(data[: len(data) // 2])
        _kill_self()

    index_mod.write_synced = half_then_kill


def _kill_between_renames():
    atomic_dir._exchange = lambda a, b: False
    real = os.rename

    def rename(a, b):
        real(a, b)
        if atomic_dir.OLD_TAG in str(b):  # the old folder was just moved aside
            _kill_self()

    atomic_dir.os.rename = rename


def _kill_before_old_is_deleted():
    atomic_dir.shutil.rmtree = lambda *a, **k: _kill_self()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize(
    "arm,survivor",
    [
        ("index-write", "old"),
        ("metadata-write", "old"),
        ("between-renames", "old"),
        ("before-old-deleted", "new"),
    ],
)
def test_killed_save_leaves_one_complete_index(tmp_path, monkeypatch, arm, survivor):
    """A save killed at any point leaves the complete old or new index; the next load cleans
    up (and, when the kill came between the two renames, puts the old folder back)."""
    old, x = _index(seed=0)
    new, _ = _index(seed=1, n=90)
    folder = old.save(tmp_path / "idx")
    expected = (old if survivor == "old" else new).search(x[:5], 5)
    arms = {
        "index-write": lambda: _limited_writer(monkeypatch, 1500, _kill_self),
        "metadata-write": _kill_in_metadata_write,
        "between-renames": _kill_between_renames,
        "before-old-deleted": _kill_before_old_is_deleted,
    }
    _save_killed_in_child(new, folder, arms[arm])
    assert _leftovers(tmp_path), "the kill should have left a temporary folder"
    if arm == "between-renames":
        assert not folder.exists()  # the moment that recovery repairs
    _assert_loads_as(folder, x[:5], expected)
    assert _leftovers(tmp_path) == []


def test_next_save_also_cleans_up_and_recovers(tmp_path):
    old, x = _index(seed=0)
    folder = old.save(tmp_path / "idx")
    (tmp_path / ".idx.reid-index-tmp-0123").mkdir()
    (tmp_path / ".idx.reid-index-tmp-0123" / "index.faiss").write_bytes(b"partial")
    new, _ = _index(seed=1, n=90)
    new.save(folder)
    assert _leftovers(tmp_path) == []
    # A save killed between the two renames: no folder, the old one aside. The next save puts
    # it back first (so that it can be replaced, not lost), then replaces it.
    os.rename(folder, tmp_path / ".idx.reid-index-old-4567")
    (tmp_path / ".idx.reid-index-old-4567" / "notes.txt").write_text("not an index file")
    with pytest.raises(FileExistsError, match="notes.txt"):
        old.save(folder)  # restored, and then refused like any folder with foreign files
    assert (folder / "notes.txt").exists() and _leftovers(tmp_path) == []
    (folder / "notes.txt").unlink()
    old.save(folder)
    _assert_loads_as(folder, x[:3], old.search(x[:3], 5))


_DISK_FULL_SCRIPT = textwrap.dedent("""
    import errno, os, sys
    import numpy as np
    from reid_pbn.evaluation import ReIDIndex

    mnt = sys.argv[1]
    rng = np.random.default_rng(0)
    old = ReIDIndex(32, "Flat", use_gpu=False)
    old.add(rng.standard_normal((1000, 32)).astype(np.float32))
    folder = old.save(os.path.join(mnt, "idx"))
    q = rng.standard_normal((5, 32)).astype(np.float32)
    before = old.search(q, 5)
    new = ReIDIndex(32, "Flat", use_gpu=False)
    new.add(rng.standard_normal((4000, 32)).astype(np.float32))
    try:
        new.save(folder)
    except OSError as e:
        assert e.errno == errno.ENOSPC, e
    else:
        raise AssertionError("the save should not fit")
    after = ReIDIndex.load(folder, use_gpu=False).search(q, 5)
    assert (before[1] == after[1]).all() and (before[0] == after[0]).all()
    assert [n for n in os.listdir(mnt) if "-tmp-" in n or "-old-" in n] == []
    print("OK")
""")


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare to mount a tmpfs")
def test_disk_full_on_a_small_tmpfs_keeps_the_old_index(tmp_path):
    """A real ENOSPC: a 512 KiB tmpfs in a private mount namespace holds the old index
    (about 160 KiB) but not the new one (about 520 KiB) beside it."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    unshare = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c"]
    probe = subprocess.run(unshare + [f"mount -t tmpfs -o size=64k tmpfs {mnt}"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {probe.stderr.strip()}")
    script = tmp_path / "disk_full.py"
    script.write_text(_DISK_FULL_SCRIPT)
    cmd = f"mount -t tmpfs -o size=512k tmpfs {mnt} && exec {sys.executable} {script} {mnt}"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(unshare + [cmd], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr


def test_save_refuses_to_replace_a_folder_with_other_files(tmp_path):
    index, _ = _index()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="notes.txt"):
        index.save(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        index.save(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    index.save(tmp_path / "empty")  # an empty folder is fine
    assert len(ReIDIndex.load(tmp_path / "empty", use_gpu=False)) == 60


def test_save_through_a_symlink_replaces_its_target(tmp_path):
    index, x = _index()
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    index.save(tmp_path / "link")
    index.save(tmp_path / "link")
    assert (tmp_path / "link").is_symlink()
    _assert_loads_as(tmp_path / "real", x[:3], index.search(x[:3], 5))


# -- untrusted folders: metadata.json

def _set(key, value):
    return lambda m, folder: m.__setitem__(key, value)


def _set_param(key, value):
    return lambda m, folder: m["params"].__setitem__(key, value)


def _drop(key):
    return lambda m, folder: m.pop(key)


NAN = float("nan")
META_CASES = [
    ("format_version-str", _set("format_version", "1"), "format_version"),
    ("format_version-missing", _drop("format_version"), "format_version"),
    ("dim-negative", _set("dim", -4), "'dim'"),
    ("dim-str", _set("dim", "16"), "'dim'"),
    ("dim-nan", _set("dim", NAN), "'dim'"),
    ("dim-bool", _set("dim", True), "'dim'"),
    ("dim-missing", _drop("dim"), "'dim'"),
    ("dim-inconsistent", _set("dim", 8), "dim"),
    ("type-unknown", _set("type", "Bogus"), "'type'"),
    ("type-int", _set("type", 3), "'type'"),
    ("type-missing", _drop("type"), "'type'"),
    ("type-inconsistent", _set("type", "HNSW"), "type"),
    ("metric-unknown", _set("metric", "manhattan"), "'metric'"),
    ("metric-null", _set("metric", None), "'metric'"),
    ("metric-inconsistent", _set("metric", "euclidean"), "metric"),
    ("count-negative", _set("count", -1), "'count'"),
    ("count-float", _set("count", 60.0), "'count'"),
    ("count-nan", _set("count", NAN), "'count'"),
    ("count-missing", _drop("count"), "'count'"),
    ("count-lists-inconsistent", _set("count", 61), "count is 61"),
    ("count-file-inconsistent",
     lambda m, f: m.update(count=59, pids=m["pids"][:59], camids=m["camids"][:59],
                           paths=m["paths"][:59]), "count"),
    ("params-missing", _drop("params"), "'params'"),
    ("params-list", _set("params", []), "'params'"),
    ("params.nprobe-zero", _set_param("nprobe", 0), "params.nprobe"),
    ("params.nprobe-str", _set_param("nprobe", "8"), "params.nprobe"),
    ("params.ef_search-huge", _set_param("ef_search", 2**40), "params.ef_search"),
    ("params.pq_nbits-missing", lambda m, f: m["params"].pop("pq_nbits"), "params.pq_nbits"),
    ("params.nlist-nan", _set_param("nlist", NAN), "params.nlist"),
    ("index_file-parent", _set("index_file", "../index.faiss"), "index_file"),
    ("index_file-absolute",
     lambda m, f: m.__setitem__("index_file", str(f / "index.faiss")), "index_file"),
    ("index_file-subfolder", _set("index_file", "sub/index.faiss"), "index_file"),
    ("index_file-empty", _set("index_file", ""), "index_file"),
    ("index_file-dotdot", _set("index_file", ".."), "index_file"),
    ("index_file-int", _set("index_file", 7), "index_file"),
    ("index_file-missing", _drop("index_file"), "index_file"),
    ("sha256-short", _set("sha256", "abc"), "sha256"),
    ("sha256-wrong", _set("sha256", "0" * 64), "checksum mismatch"),
    ("faiss_version-missing", _drop("faiss_version"), "faiss_version"),
    ("pids-str", _set("pids", "x"), "'pids'"),
    ("pids-short", lambda m, f: m.__setitem__("pids", m["pids"][:-1]), "'pids'"),
    ("pids-str-entries", _set("pids", ["a"] * 60), "'pids'"),
    ("pids-float-entries", _set("pids", [1.5] * 60), "'pids'"),
    ("pids-bool-entries", _set("pids", [True] * 60), "'pids'"),
    ("pids-nan-entries", _set("pids", [NAN] * 60), "'pids'"),
    ("pids-too-large", _set("pids", [2**70] * 60), "'pids'"),
    ("camids-missing", _drop("camids"), "'camids'"),
    ("camids-null", _set("camids", None), "'camids'"),
    ("paths-ints", _set("paths", [1] * 60), "'paths'"),
]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    index, x = _index()
    return index.save(tmp_path_factory.mktemp("saved") / "idx"), x


def _copy(saved_folder, tmp_path):
    folder = tmp_path / "idx"
    shutil.copytree(saved_folder, folder)
    return folder


def _edit_meta(folder, fn):
    meta = json.loads((folder / "metadata.json").read_text())
    fn(meta, folder)
    (folder / "metadata.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("case,mutate,field", META_CASES, ids=[c[0] for c in META_CASES])
def test_every_malformed_metadata_field_is_an_index_format_error(
    saved, tmp_path, case, mutate, field
):
    folder = _copy(saved[0], tmp_path)
    _edit_meta(folder, mutate)
    with pytest.raises(IndexFormatError) as info:
        ReIDIndex.load(folder, use_gpu=False)
    assert field in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "text,message",
    [("[]", "JSON object"), ("{", "not valid JSON"), ("[" * 100_000, "not valid JSON"),
     ("\udcff", "not valid JSON"), ('{"format_version": 1e999}', "format_version")],
    ids=["list", "truncated", "deeply-nested", "not-utf8", "infinity"],
)
def test_unparseable_metadata(saved, tmp_path, text, message):
    folder = _copy(saved[0], tmp_path)
    (folder / "metadata.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(IndexFormatError, match=message):
        ReIDIndex.load(folder, use_gpu=False)


def test_index_file_must_be_a_regular_file_in_the_folder(saved, tmp_path):
    folder = _copy(saved[0], tmp_path)
    outside = tmp_path / "outside"
    shutil.copytree(saved[0], outside)
    os.symlink(outside / "index.faiss", folder / "linked.faiss")
    _edit_meta(folder, _set("index_file", "linked.faiss"))
    with pytest.raises(IndexFormatError, match="symbolic link"):
        ReIDIndex.load(folder, use_gpu=False)
    (folder / "sub").mkdir()
    _edit_meta(folder, _set("index_file", "sub"))
    with pytest.raises(IndexFormatError, match="not a regular file"):
        ReIDIndex.load(folder, use_gpu=False)
    os.mkfifo(folder / "fifo")  # opening a FIFO for reading would block forever
    _edit_meta(folder, _set("index_file", "fifo"))
    with pytest.raises(IndexFormatError, match="not a regular file"):
        ReIDIndex.load(folder, use_gpu=False)
    (folder / "metadata.json").unlink()
    os.symlink(outside / "metadata.json", folder / "metadata.json")
    with pytest.raises(IndexFormatError, match="symbolic link"):
        ReIDIndex.load(folder, use_gpu=False)


# -- untrusted folders: the FAISS file, with a matching checksum

def _write_index_bytes(folder, data):
    """What an attacker does: new bytes and the checksum that matches them."""
    (folder / "index.faiss").write_bytes(bytes(data))
    _edit_meta(folder, _set("sha256", hashlib.sha256(bytes(data)).hexdigest()))


def _patched(folder, fmt, offset, value):
    data = bytearray((folder / "index.faiss").read_bytes())
    struct.pack_into(fmt, data, offset, value)
    return data


# Flat (IxFI, d=16, 60 vectors): code(4) d(4) ntotal(8) unused(16) is_trained(1) metric(4)
# vector count(8) vectors.
FLAT_CASES = [
    ("ntotal-huge", lambda f: _patched(f, "<q", 8, 1_600_000_000), "claims 1600000000 vectors"),
    ("ntotal-negative", lambda f: _patched(f, "<q", 8, -5), "ntotal"),
    ("ntotal-mismatch", lambda f: _patched(f, "<q", 8, 59), "ntotal"),
    ("d-zero", lambda f: _patched(f, "<i", 4, 0), "dimension"),
    ("d-huge", lambda f: _patched(f, "<i", 4, 1 << 30), "dimension"),
    ("d-mismatch", lambda f: _patched(f, "<i", 4, 8), "dim"),
    ("is_trained-7", lambda f: _patched(f, "<B", 32, 7), "is_trained"),
    ("is_trained-0", lambda f: _patched(f, "<B", 32, 0), "is_trained"),
    ("metric-code", lambda f: _patched(f, "<i", 33, 5), "metric type"),
    ("metric-flipped", lambda f: b"IxF2" + _patched(f, "<i", 33, 1)[4:], "metric"),
    ("type-code", lambda f: b"IxHE" + (f / "index.faiss").read_bytes()[4:], "type"),
    ("vector-count-huge", lambda f: _patched(f, "<Q", 37, 1 << 60), "data"),
    ("vector-count-off", lambda f: _patched(f, "<Q", 37, 60 * D - 1), "data"),
    ("vector-nan", lambda f: _patched(f, "<f", 45 + 4 * 100, NAN), "NaN"),
    ("truncated", lambda f: (f / "index.faiss").read_bytes()[:-10], "bytes left in the file"),
    ("trailing", lambda f: (f / "index.faiss").read_bytes() + b"\0" * 8, "unexpected bytes"),
    ("empty", lambda f: b"", "file ends"),
]


@pytest.mark.parametrize("case,corrupt,message", FLAT_CASES, ids=[c[0] for c in FLAT_CASES])
def test_every_malformed_flat_header_field_is_refused(saved, tmp_path, case, corrupt, message):
    folder = _copy(saved[0], tmp_path)
    _write_index_bytes(folder, corrupt(folder))
    with pytest.raises(IndexFormatError, match=message):
        ReIDIndex.load(folder, use_gpu=False)


def test_huge_header_claim_is_refused_fast_without_allocating(saved, tmp_path):
    """A 1 KB file claiming 1.6e9 vectors: FAISS alone allocated ~7 GB before failing."""
    folder = _copy(saved[0], tmp_path)
    n = 1_600_000_000
    data = _patched(folder, "<q", 8, n)
    struct.pack_into("<Q", data, 37, n * D)  # the vector count agrees with the header
    _write_index_bytes(folder, bytes(data[:1024]))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(IndexFormatError, match="claims 1600000000 vectors"):
        ReIDIndex.load(folder, use_gpu=False)
    assert time.perf_counter() - start < 1.0
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) * 1024 < 200 << 20
    # Metadata that agrees with the header cannot help: the file's size refuses it.
    with open(folder / "index.faiss", "rb") as f, pytest.raises(
        IndexFormatError, match="but the file has 1024"
    ):
        inspect_faiss_file(f, 1024, "index.faiss", index_type="Flat", dim=D, metric="cosine",
                           count=n)


def _ivf_offsets(folder, nlist=4):
    """Offsets in an IVFFlat file (see _index_format's layout notes)."""
    quantizer = 37 + 16
    direct_map = quantizer + 4 + 33 + 8 + nlist * D * 4
    lists = direct_map + 9
    sizes = lists + 4 + 8 + 8 + 4 + 8
    payload = sizes + 8 * nlist
    data = (folder / "index.faiss").read_bytes()
    first = struct.unpack_from("<Q", data, sizes)[0]
    return {"nlist": 37, "lists": lists, "sizes": sizes,
            "first_id": payload + first * D * 4, "first_size": first}


@pytest.fixture(scope="module")
def saved_ivf(tmp_path_factory):
    index, _ = _index("IVFFlat")
    return index.save(tmp_path_factory.mktemp("saved") / "ivf")


IVF_CASES = [
    ("nlist-huge", lambda f, o: _patched(f, "<Q", o["nlist"], 1 << 40), "nlist"),
    ("list-size-huge", lambda f, o: _patched(f, "<Q", o["sizes"], 1 << 50), "inverted list"),
    ("list-size-off", lambda f, o: _patched(f, "<Q", o["sizes"], o["first_size"] + 1),
     "inverted list"),
    ("id-out-of-range", lambda f, o: _patched(f, "<q", o["first_id"], 10**12), "ids fall"),
    ("id-negative", lambda f, o: _patched(f, "<q", o["first_id"], -1), "ids fall"),
    ("id-repeated", lambda f, o: _patched(
        f, "<q", o["first_id"],
        struct.unpack_from("<q", (f / "index.faiss").read_bytes(), o["first_id"] + 8)[0]),
     "repeat"),
    ("lists-type", lambda f, o: _patched(f, "<4s", o["lists"], b"il00"), "inverted lists"),
]


@pytest.mark.parametrize("case,corrupt,message", IVF_CASES, ids=[c[0] for c in IVF_CASES])
def test_every_malformed_ivf_field_is_refused(saved_ivf, tmp_path, case, corrupt, message):
    folder = _copy(saved_ivf, tmp_path)
    offsets = _ivf_offsets(folder)
    assert offsets["first_size"] > 1
    _write_index_bytes(folder, corrupt(folder, offsets))
    with pytest.raises(IndexFormatError, match=message):
        ReIDIndex.load(folder, use_gpu=False)


def test_hnsw_and_ivfpq_fields_are_checked(tmp_path):
    hnsw = _index("HNSW")[0].save(tmp_path / "hnsw")
    data = bytearray((hnsw / "index.faiss").read_bytes())
    pos = 37
    pos += 8 + 8 * struct.unpack_from("<Q", data, pos)[0]  # assign_probas
    pos += 8 + 4 * struct.unpack_from("<Q", data, pos)[0]  # cum_nneighbor_per_level
    struct.pack_into("<Q", data, pos, 59)  # levels: one entry short of ntotal
    _write_index_bytes(hnsw, data)
    with pytest.raises(IndexFormatError, match="HNSW levels has 59 entries"):
        ReIDIndex.load(hnsw, use_gpu=False)

    pq = _index("IVFPQ", metric="euclidean")[0].save(tmp_path / "pq")
    nbits_at = 37 + 16 + 4 + 33 + 8 + 4 * D * 4 + 9 + 1 + 8 + 8 + 8
    assert struct.unpack_from("<Q", (pq / "index.faiss").read_bytes(), nbits_at)[0] == 4
    _write_index_bytes(pq, _patched(pq, "<Q", nbits_at, 30))
    with pytest.raises(IndexFormatError, match="nbits"):
        ReIDIndex.load(pq, use_gpu=False)
    _index("IVFPQ", metric="euclidean")[0].save(tmp_path / "pq2")
    _edit_meta(tmp_path / "pq2", lambda m, f: m["params"].update(pq_m=8))
    with pytest.raises(IndexFormatError, match="params.pq_m"):
        ReIDIndex.load(tmp_path / "pq2", use_gpu=False)


@pytest.mark.parametrize("kind", ["Flat", "IVFFlat", "IVFPQ", "HNSW"])
def test_truncated_or_bit_flipped_files_never_escape_as_other_errors(tmp_path, kind):
    """Whatever bytes an attacker writes (with a matching checksum), load either returns an
    index that agrees with its metadata or raises IndexFormatError: never a raw ValueError,
    KeyError, struct.error, MemoryError or FAISS RuntimeError."""
    index, x = _index(kind, metric="euclidean", n=40)
    folder = index.save(tmp_path / "idx")
    good = (folder / "index.faiss").read_bytes()
    rng = np.random.default_rng(0)
    cuts = sorted(set(range(0, 200)) | set(rng.integers(0, len(good), 40).tolist()))
    variants = [good[:c] for c in cuts]
    for pos in rng.integers(0, len(good), 60).tolist():
        flipped = bytearray(good)
        flipped[pos] ^= 1 << int(rng.integers(0, 8))
        variants.append(bytes(flipped))
    loaded = 0
    for data in variants:
        _write_index_bytes(folder, data)
        try:
            result = ReIDIndex.load(folder, use_gpu=False)
        except IndexFormatError:
            continue
        loaded += 1
        assert len(result) == 40 and result.dim == D
        try:  # a flipped exponent bit makes a wrong but consistent vector, maybe a huge one
            result.search(x[:2], 3)
        except ValueError as e:
            assert "NaN or inf" in str(e)
    assert loaded < len(variants)


def test_edited_metric_cannot_reverse_the_order(saved, tmp_path):
    """The issue's case: 'metric' edited from cosine to euclidean would read inner products as
    distances, best last."""
    folder = _copy(saved[0], tmp_path)
    _edit_meta(folder, _set("metric", "euclidean"))
    with pytest.raises(IndexFormatError, match="metric"):
        ReIDIndex.load(folder, use_gpu=False)


def test_no_pickle_is_ever_read(saved, tmp_path):
    """A pickle planted as index_file is just bytes that fail the structure check."""
    import pickle

    folder = _copy(saved[0], tmp_path)
    payload = pickle.dumps({"x": 1})
    (folder / "evil.pkl").write_bytes(payload)
    _edit_meta(folder, lambda m, f: m.update(index_file="evil.pkl",
                                             sha256=hashlib.sha256(payload).hexdigest()))
    with pytest.raises(IndexFormatError):
        ReIDIndex.load(folder, use_gpu=False)


@pytest.mark.parametrize(
    "module",
    ["index.py", "_index_format.py", "_index_store.py", "_atomic_dir.py", "checks.py", "rank.py",
     "rerank.py"],
)
def test_index_and_check_modules_stay_on_the_evaluation_floor(module):
    """numpy, torch, faiss, scipy, the standard library, sibling modules and utils only."""
    import ast
    from pathlib import Path

    src = Path(__file__).resolve().parents[2] / "reid_pbn" / "evaluation" / module
    allowed = {"numpy", "torch", "faiss", "scipy"} | set(sys.stdlib_module_names)
    for node in ast.walk(ast.parse(src.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                # Siblings, or the utils floor below (tests/test_architecture.py has the rule).
                assert node.level == 1 or (node.level == 2 and (node.module or "").startswith(
                    "utils")), f"{module} imports from above evaluation"
                continue
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            assert name.split(".")[0] in allowed, f"{module} imports {name}"
