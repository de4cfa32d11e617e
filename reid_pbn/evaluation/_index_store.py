"""Reading and writing the files of a ReIDIndex folder: the field-by-field check of
``metadata.json``, plain regular files opened through one folder handle, the checked read of the
FAISS file, and the fsynced writes of a save."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from pathlib import Path
from typing import BinaryIO

import faiss

from ..utils.file_io import stream_sha256
from ._index_format import MAX_DIM, METRIC_CODES, IndexFormatError, inspect_faiss_file

__all__ = [
    "FolderReplacedError", "check_replaceable", "open_plain_file", "read_checked_index",
    "write_synced", "parse_metadata", "check_file_name", "INDEX_FILE", "METADATA_FILE",
]

INDEX_FILE = "index.faiss"
METADATA_FILE = "metadata.json"
# Files an existing index folder may hold; saving refuses to replace a folder with anything else.
_OWN_FILES = frozenset({INDEX_FILE, METADATA_FILE, METADATA_FILE + ".tmp"})
# What FAISS reads back for each index type (read_index returns the concrete class).
_FAISS_CLASSES = {
    "Flat": faiss.IndexFlat, "IVFFlat": faiss.IndexIVFFlat, "IVFPQ": faiss.IndexIVFPQ,
    "HNSW": faiss.IndexHNSWFlat,
}
_SHA256 = re.compile(r"[0-9a-f]{64}")
INT64_MAX = (1 << 63) - 1
# params: (lowest, highest) accepted value. Upper bounds keep search-time allocations sized by
# these numbers (HNSW's efSearch heap, FAISS's 2^nbits tables) reasonable.
PARAM_RANGES = {
    "nlist": (0, (1 << 31) - 1),
    "nprobe": (1, (1 << 31) - 1),
    "pq_m": (1, MAX_DIM),
    "pq_nbits": (1, 16),
    "hnsw_m": (1, 1 << 16),
    "ef_search": (1, 1 << 20),
}


class FolderReplacedError(Exception):
    """The folder was swapped by a concurrent save between two reads; read it again."""


def check_replaceable(target: Path) -> None:
    """Refuses to replace a file or a folder that holds anything but a ReIDIndex's files."""
    if not target.exists():
        return
    if not target.is_dir():
        raise FileExistsError(f"cannot save an index to {target}: it is a file, not a folder")
    foreign = sorted(set(os.listdir(target)) - _OWN_FILES)
    if foreign:
        raise FileExistsError(
            f"refusing to replace {target}: saving replaces the whole folder, and it holds "
            f"{foreign[:5]} besides a ReIDIndex's files; save into a new or empty folder"
        )


def write_synced(path: Path, data: bytes) -> None:
    """Writes a new file and fsyncs it."""
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def open_plain_file(folder: Path, dir_fd: int, name: str, what: str) -> BinaryIO:
    """Opens ``name`` in the open folder ``dir_fd``: a regular file, not through a link.

    Args:
        folder: the folder's path, for messages.
        dir_fd: the folder, opened once for the whole load.
        name: a plain file name (checked by the metadata parser).
        what: ``"metadata"`` or ``"index"``, for messages.

    Returns:
        The file, opened for binary reading.
    """
    path = folder / name
    # O_NONBLOCK: opening a FIFO planted under the file's name must not hang the loader.
    flags = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
             | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    try:
        if os.open in os.supports_dir_fd:
            fd = os.open(name, flags, dir_fd=dir_fd)
        else:
            if os.path.islink(path):
                raise OSError(errno.ELOOP, "symbolic link", str(path))
            fd = os.open(path, flags)
    except FileNotFoundError:
        # A concurrent save may have swapped the folder out since dir_fd was opened.
        if os.path.exists(folder) and os.stat(folder).st_ino != os.fstat(dir_fd).st_ino:
            raise FolderReplacedError() from None
        if what == "metadata":
            raise FileNotFoundError(
                f"{path} is missing: {folder} is not a ReIDIndex directory (or is damaged)"
            ) from None
        raise FileNotFoundError(f"index file {path} is missing") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise IndexFormatError(
                f"{path} is a symbolic link; a ReIDIndex folder holds only plain files"
            ) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IndexFormatError(f"{path} is not a regular file")
    return os.fdopen(fd, "rb")


def read_checked_index(f: BinaryIO, path: Path, meta: dict) -> faiss.Index:
    """Checksum, structure walk, FAISS read and post-read checks of an open index file."""
    size = os.fstat(f.fileno()).st_size
    digest = stream_sha256(f)
    if digest != meta["sha256"]:
        raise IndexFormatError(
            f"checksum mismatch for {path}: the file is damaged or was replaced "
            f"(sha256 {digest}, metadata says {meta['sha256']})"
        )
    info = inspect_faiss_file(f, size, str(path), index_type=meta["type"], dim=meta["dim"],
                              metric=meta["metric"], count=meta["count"])
    params = meta["params"]
    if meta["type"] == "IVFPQ":
        for field, value in (("pq_m", info.pq_m), ("pq_nbits", info.pq_nbits)):
            if params[field] != value:
                raise IndexFormatError(f"{path}: the index has {field} {value}, the metadata's "
                                       f"field 'params.{field}' says {params[field]}")
    f.seek(0)
    try:
        # From the same open file that was checked (not by path: the name could be swapped).
        index = faiss.read_index(faiss.PyCallbackIOReader(f.read))
    except RuntimeError as e:
        raise IndexFormatError(f"FAISS cannot read {path}: {e}") from e
    expected = _FAISS_CLASSES[meta["type"]]
    if not isinstance(index, expected):
        raise IndexFormatError(f"{path}: FAISS read a {type(index).__name__}, but the metadata's "
                               f"field 'type' is {meta['type']!r}")
    checks = (("metric", index.metric_type, METRIC_CODES[meta["metric"]]),
              ("dim", index.d, meta["dim"]), ("count", index.ntotal, meta["count"]))
    for field, got, want in checks:
        if got != want:
            raise IndexFormatError(f"{path}: the index's {field} is {got}, the metadata's "
                                   f"field {field!r} says {want}")
    return index


def parse_metadata(
    raw: bytes, label: str, *, format_version: int, index_types: tuple[str, ...]
) -> dict:
    """Parses and checks ``metadata.json`` field by field.

    Args:
        raw: the file's bytes.
        label: the file's path for messages.
        format_version: the version this reader understands.
        index_types: the accepted ``type`` values.

    Returns:
        The metadata, with ``pids`` and ``camids`` as Python ints and ``paths`` as strs.

    Raises:
        IndexFormatError: invalid JSON, or a field that is missing, of the wrong type, out of
            range or inconsistent with another; the message names the field.
    """
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise IndexFormatError(f"{label} is not valid JSON: {e}") from e
    if not isinstance(meta, dict):
        raise IndexFormatError(f"{label} must hold a JSON object, got {type(meta).__name__}")

    def fail(field: str, message: str) -> IndexFormatError:
        return IndexFormatError(f"{label}: field {field!r} {message}")

    def get(field: str, obj: dict = meta, prefix: str = ""):
        if field not in obj:
            raise fail(prefix + field, "is missing")
        return obj[field]

    def integer(field: str, lo: int, hi: int, obj: dict = meta, prefix: str = "") -> int:
        v = get(field, obj, prefix)
        # bool is an int subclass, and a float (including NaN) is never a valid count here.
        if type(v) is not int or not lo <= v <= hi:
            raise fail(prefix + field, f"must be an integer in [{lo}, {hi}], got {v!r}")
        return v

    version = get("format_version")
    if version != format_version or type(version) is not int:
        raise IndexFormatError(f"{label} has format_version {version!r}; this reid_pbn reads "
                               f"version {format_version}")
    integer("dim", 1, MAX_DIM)
    if get("type") not in index_types:
        raise fail("type", f"must be one of {list(index_types)}, got {meta['type']!r}")
    if get("metric") not in METRIC_CODES:
        raise fail("metric", f"must be one of {list(METRIC_CODES)}, got {meta['metric']!r}")
    count = integer("count", 0, INT64_MAX)
    params = get("params")
    if not isinstance(params, dict):
        raise fail("params", f"must be an object, got {type(params).__name__}")
    for key, (lo, hi) in PARAM_RANGES.items():
        integer(key, lo, hi, params, "params.")
    if meta["type"] == "IVFPQ" and meta["dim"] % params["pq_m"]:
        raise fail("params.pq_m", f"({params['pq_m']}) must divide dim ({meta['dim']})")
    check_file_name(get("index_file"), label)
    sha = get("sha256")
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise fail("sha256", f"must be 64 lowercase hex digits, got {sha!r}")
    if not isinstance(get("faiss_version"), str):
        raise fail("faiss_version", f"must be a string, got {meta['faiss_version']!r}")
    for field in ("pids", "camids", "paths"):
        values = get(field)
        if not isinstance(values, list):
            raise fail(field, f"must be a list, got {type(values).__name__}")
        if len(values) != count:
            raise fail(field, f"has {len(values)} entries, but count is {count}")
        want = str if field == "paths" else int
        bad = next((i for i, v in enumerate(values) if type(v) is not want), None)
        if bad is not None:
            raise fail(field, f"must hold only {want.__name__} values; entry {bad} is "
                       f"{values[bad]!r}")
        if want is int and values and not -INT64_MAX - 1 <= min(values) <= max(values) <= INT64_MAX:
            raise fail(field, "holds values outside the 64-bit integer range")
    return meta


def check_file_name(name, label: str) -> str:
    """Refuses anything but a plain file name (no folder part, not absolute, not ``..``).

    Args:
        name: the metadata's ``index_file`` value.
        label: the metadata file's path for messages.

    Returns:
        ``name``.

    Raises:
        IndexFormatError: not a plain file name inside the folder.
    """
    ok = (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and "\x00" not in name
        and os.path.basename(name) == name
        and not os.path.isabs(name)
        and not (len(name) > 1 and name[1] == ":")  # Windows drive letters
    )
    if not ok:
        raise IndexFormatError(
            f"{label}: field 'index_file' must be a plain file name inside the index folder, "
            f"got {name!r}"
        )
    return name
