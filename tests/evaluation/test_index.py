"""ReIDIndex: exact search, approximate recall, persistence and clear errors."""

import json

import faiss
import numpy as np
import pytest
import torch
from eval_reference import clustered_features

from reid_pbn.config import get_cfg
from reid_pbn.evaluation import IndexFormatError, ReIDIndex, compute_distance


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    gallery, pids = clustered_features(rng, 2000, 32, 40, noise=0.6)
    queries, _ = clustered_features(rng, 50, 32, 40, noise=0.6)
    return gallery, pids, queries


def _filled(kind, data, metric="cosine", **kw):
    gallery, pids, _ = data
    index = ReIDIndex(32, kind, metric, use_gpu=False, **kw)
    index.add(gallery, pids=pids, camids=pids % 3, paths=[f"img_{i}.jpg" for i in range(2000)])
    return index


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_flat_search_is_exact(data, metric):
    gallery, _, queries = data
    index = _filled("Flat", data, metric)
    dist, idx = index.search(torch.from_numpy(queries), 7)
    ref = compute_distance(queries, gallery, metric).numpy()
    order = np.argsort(ref, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_allclose(dist, np.take_along_axis(ref, order, 1), rtol=1e-4, atol=1e-4)
    assert dist.dtype == np.float32 and idx.dtype == np.int64


@pytest.mark.parametrize(
    "kind,kw",
    [("IVFFlat", {"nlist": 16, "nprobe": 8}), ("IVFPQ", {"nlist": 16, "nprobe": 8, "pq_m": 16}),
     ("HNSW", {"hnsw_m": 16})],
)
def test_approximate_indexes_have_sensible_recall(data, kind, kw):
    _, _, queries = data
    exact = _filled("Flat", data)
    approx = _filled(kind, data, **kw)
    _, truth = exact.search(queries, 10)
    _, found = approx.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])
    assert recall >= (0.5 if kind == "IVFPQ" else 0.9), recall


@pytest.mark.parametrize("kind", ["Flat", "IVFFlat", "IVFPQ", "HNSW"])
def test_save_load_round_trip_is_exact(tmp_path, data, kind):
    _, _, queries = data
    index = _filled(kind, data, nlist=16, pq_m=8)
    before = index.search(queries, 5)
    index.save(tmp_path / "idx")
    loaded = ReIDIndex.load(tmp_path / "idx", use_gpu=False)
    after = loaded.search(queries, 5)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    assert loaded.pids == index.pids and loaded.camids == index.camids
    assert loaded.paths[3] == "img_3.jpg" and len(loaded) == 2000
    meta = json.loads((tmp_path / "idx" / "metadata.json").read_text())
    assert meta["format_version"] == 1 and meta["type"] == kind and len(meta["sha256"]) == 64


def test_damaged_directories_give_clear_errors(tmp_path, data):
    index = _filled("Flat", data)
    folder = index.save(tmp_path / "idx")
    with open(folder / "index.faiss", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(IndexFormatError, match="checksum mismatch"):
        ReIDIndex.load(folder)
    folder2 = index.save(tmp_path / "idx2")
    (folder2 / "metadata.json").unlink()
    with pytest.raises(FileNotFoundError, match="metadata.json is missing"):
        ReIDIndex.load(folder2)
    folder3 = index.save(tmp_path / "idx3")
    (folder3 / "index.faiss").unlink()
    with pytest.raises(FileNotFoundError, match="index file"):
        ReIDIndex.load(folder3)
    folder4 = index.save(tmp_path / "idx4")
    meta = json.loads((folder4 / "metadata.json").read_text())
    meta["format_version"] = 99
    (folder4 / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(IndexFormatError, match="format_version 99"):
        ReIDIndex.load(folder4)
    (folder4 / "metadata.json").write_text("{not json")
    with pytest.raises(IndexFormatError, match="not valid JSON"):
        ReIDIndex.load(folder4)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ReIDIndex.load(tmp_path / "nowhere")


def test_dimension_and_metadata_mismatches(data):
    gallery, pids, _ = data
    index = ReIDIndex(32, use_gpu=False)
    with pytest.raises(ValueError, match="dimension 16 but the index holds 32-d"):
        index.add(gallery[:, :16])
    with pytest.raises(ValueError, match="empty"):
        index.search(gallery[:2], 3)
    index.add(gallery[:10], pids=pids[:10])
    with pytest.raises(ValueError, match="dimension 31"):
        index.search(gallery[:2, :31], 3)
    with pytest.raises(ValueError, match="10 features but 9 pids"):
        index.add(gallery[:10], pids=pids[:9])
    d, i = index.search(gallery[:2], 50)  # k capped at the count
    assert i.shape == (2, 10)
    with pytest.raises(ValueError, match="pq_m"):
        ReIDIndex(30, "IVFPQ", pq_m=8)


def test_from_config_reads_index_keys():
    cfg = get_cfg()
    cfg.INDEX.TYPE, cfg.INDEX.NLIST, cfg.INDEX.NPROBE = "IVFFlat", 8, 2
    cfg.TEST.METRIC = "euclidean"
    index = ReIDIndex.from_config(cfg, 16)
    assert (index.index_type, index.nlist, index.nprobe, index.metric) == (
        "IVFFlat", 8, 2, "euclidean")


@pytest.mark.skipif(faiss.get_num_gpus() == 0, reason="needs a GPU visible to FAISS")
def test_gpu_index_round_trip(tmp_path, data):
    _, _, queries = data
    gpu = ReIDIndex(32, "IVFFlat", nlist=16, use_gpu=True)
    gallery, pids, _ = data
    gpu.add(gallery, pids=pids)
    assert "GPU" in repr(gpu)
    before = gpu.search(queries, 5)
    gpu.save(tmp_path / "g")
    cpu = ReIDIndex.load(tmp_path / "g", use_gpu=False)
    np.testing.assert_array_equal(cpu.search(queries, 5)[1], before[1])


def test_gpu_search_path_with_a_stand_in_clone(monkeypatch, data):
    # Emulates a GPU machine: the "GPU clone" is a CPU copy, to check when it is (re)made.
    import reid_pbn.evaluation.index as index_mod

    gallery, pids, queries = data
    clones = []

    def fake_to_gpu(index, float16_tables=False):
        clones.append(float16_tables)
        return faiss.clone_index(index)

    monkeypatch.setattr(index_mod, "_num_gpus", lambda: 1)
    monkeypatch.setattr(index_mod, "_to_gpu", fake_to_gpu)
    index = ReIDIndex(32, "IVFPQ", nlist=16, nprobe=8, pq_m=8, use_gpu=True)
    index.add(gallery[:1000], pids=pids[:1000])
    first = index.search(queries, 5)
    index.search(queries, 5)
    assert clones == [True] and index.on_gpu
    index.add(gallery[1000:], pids=pids[1000:])
    second = index.search(queries, 5)
    assert len(clones) == 2 and second[1].max() >= 0
    cpu = ReIDIndex(32, "IVFPQ", nlist=16, nprobe=8, pq_m=8, use_gpu=False)
    cpu.add(gallery[:1000])
    np.testing.assert_array_equal(cpu.search(queries, 5)[1], first[1])
    hnsw = ReIDIndex(32, "HNSW", use_gpu=True)
    hnsw.add(gallery[:100])
    hnsw.search(queries, 3)
    assert not hnsw.on_gpu and len(clones) == 2


def test_gpu_k_limit_falls_back_to_cpu(monkeypatch, data):
    """FAISS GPU search takes k <= 2048: larger k searches the CPU index, same results."""
    import reid_pbn.evaluation.index as index_mod

    gallery, pids, queries = data
    clones = []

    def fake_to_gpu(index, float16_tables=False):
        clones.append(index)
        return faiss.clone_index(index)

    monkeypatch.setattr(index_mod, "_num_gpus", lambda: 1)
    monkeypatch.setattr(index_mod, "_to_gpu", fake_to_gpu)
    monkeypatch.setattr(index_mod, "GPU_MAX_K", 8)
    index = ReIDIndex(32, "Flat", use_gpu=True)
    index.add(gallery[:200])
    index.search(queries, 8)
    assert len(clones) == 1
    wide = index.search(queries, 9)
    assert len(clones) == 1  # k above the limit did not use (or make) the GPU clone
    cpu = ReIDIndex(32, "Flat", use_gpu=False)
    cpu.add(gallery[:200])
    np.testing.assert_array_equal(cpu.search(queries, 9)[1], wide[1])
    _, idx = index_mod.exact_knn(gallery[:200], queries, 9, use_gpu=True)
    assert len(clones) == 1
    np.testing.assert_array_equal(idx, index_mod.exact_knn(gallery[:200], queries, 9,
                                                           use_gpu=False)[1])


def test_gpu_resources_made_once_per_device(monkeypatch):
    import reid_pbn.evaluation.index as index_mod

    made = []
    monkeypatch.setattr(index_mod.faiss, "StandardGpuResources", lambda: made.append(1) or object())
    index_mod._gpu_resources.cache_clear()
    try:
        first = index_mod._gpu_resources(0)
        assert index_mod._gpu_resources(0) is first and len(made) == 1
        index_mod._gpu_resources(1)
        assert len(made) == 2
    finally:
        index_mod._gpu_resources.cache_clear()


def test_bfloat16_features_index_and_search(data):
    gallery, pids, queries = data
    g16 = torch.from_numpy(gallery[:300]).bfloat16()
    q16 = torch.from_numpy(queries).bfloat16()
    index = ReIDIndex(32, "Flat", use_gpu=False)
    index.add(g16, pids=pids[:300])
    ref = ReIDIndex(32, "Flat", use_gpu=False)
    ref.add(g16.float(), pids=pids[:300])
    np.testing.assert_array_equal(index.search(q16, 5)[1], ref.search(q16.float(), 5)[1])


# -- non-finite features and missing results ------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rows_are_refused_by_add_and_search_naming_them(data, bad):
    gallery, pids, queries = data
    index = ReIDIndex(32, "Flat", use_gpu=False)
    index.add(gallery[:100], pids=pids[:100])
    g = gallery[100:120].copy()
    g[[3, 11], 5] = bad
    with pytest.raises(ValueError, match=r"features: NaN or inf in 2 of 20 rows \(row 3, row 11\)"):
        index.add(g, pids=pids[100:120])
    assert len(index) == 100 and len(index.pids) == 100  # nothing was added
    q = queries[:8].copy()
    q[7, 0] = bad
    with pytest.raises(ValueError, match=r"query features: NaN or inf in 1 of 8 rows \(row 7\)"):
        index.search(q, 5)
    many = np.full((12, 32), np.nan, dtype=np.float32)
    with pytest.raises(ValueError, match=r"row 4 and 7 more"):
        index.search(many, 5)
    with pytest.raises(ValueError, match="NaN or inf"):
        index.search(torch.from_numpy(q), 5)


def test_missing_results_are_masked_never_minus_one(data):
    """IVF with one probe finds fewer than k items: FAISS says -1, which pids[-1] would read as
    the last gallery item. search() returns MISSING (indexing with it raises) and inf."""
    gallery, pids, queries = data
    index = ReIDIndex(32, "IVFFlat", nlist=40, nprobe=1, use_gpu=False)
    index.add(gallery, pids=pids, paths=[f"img_{i}.jpg" for i in range(len(gallery))])
    dist, idx, valid = index.search(queries, 200, return_valid=True)
    assert (~valid).any() and valid[:, 0].all()  # some queries have fewer than 200 results
    assert (idx >= 0).all()
    assert (idx[~valid] == ReIDIndex.MISSING).all() and np.isinf(dist[~valid]).all()
    assert (idx[valid] < len(index)).all() and np.isfinite(dist[valid]).all()
    two = index.search(queries, 200)
    np.testing.assert_array_equal(two[1], idx)
    row, col = np.argwhere(~valid)[0]
    with pytest.raises(IndexError):
        index.pids[idx[row, col]]
    with pytest.raises(IndexError):
        np.asarray(index.pids)[idx]
    meta = index.lookup(idx)
    np.testing.assert_array_equal(meta["valid"], valid)
    assert (meta["pids"][~valid] == -1).all() and (meta["paths"][~valid] == "").all()
    np.testing.assert_array_equal(meta["pids"][valid], np.asarray(pids)[idx[valid]])
    assert meta["paths"][row, 0] == f"img_{idx[row, 0]}.jpg"


def test_lookup_refuses_faiss_minus_one_and_out_of_range_ids(data):
    gallery, pids, _ = data
    index = ReIDIndex(32, "Flat", use_gpu=False)
    index.add(gallery[:10], pids=pids[:10])
    with pytest.raises(IndexError, match="-1 is FAISS's 'no result' marker"):
        index.lookup(np.array([[0, -1]]))
    with pytest.raises(IndexError, match=r"\[10\]"):
        index.lookup([10])
    with pytest.raises(TypeError, match="integers"):
        index.lookup(np.array([0.0]))
    out = index.lookup(torch.tensor([[9, 0]]))
    assert out["pids"].tolist() == [[pids[9], pids[0]]] and out["valid"].all()


def test_euclidean_features_whose_distances_overflow_are_refused(data):
    """FAISS answers overflowing squared distances with no result at all (-1 everywhere)."""
    gallery, _, queries = data
    index = ReIDIndex(32, "Flat", metric="euclidean", use_gpu=False)
    big = gallery[:50].copy()
    big[[4, 9]] *= 1e20
    with pytest.raises(ValueError, match=r"too large for metric='euclidean' \(row 4, row 9: "
                       r"norm .*metric='cosine'"):
        index.add(big)
    assert len(index) == 0
    index.add(gallery[:50] * 1e18)  # norms ~6e18: every squared distance stays finite
    dist, idx = index.search(queries * 1e18, 3)
    assert np.isfinite(dist).all() and (idx >= 0).all()
    with pytest.raises(ValueError, match="query features are too large"):
        index.search(queries * 1e20, 3)


def test_cosine_index_handles_features_too_large_to_square(data):
    """|x|^2 overflows float32 above ~1.8e19: normalization must not turn them into zeros."""
    gallery, _, queries = data
    small = ReIDIndex(32, "Flat", use_gpu=False)
    small.add(gallery[:200])
    large = ReIDIndex(32, "Flat", use_gpu=False)
    large.add(gallery[:200] * 1e30)
    np.testing.assert_array_equal(large.search(queries * 1e30, 5)[1], small.search(queries, 5)[1])
