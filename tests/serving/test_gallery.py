"""Index sizing without FAISS warnings, the build_index -> search round trip with provenance,
and the gallery store: additions, deletions, reopening, leftovers of killed writes."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
import torch
from serving_helpers import random_unit, randomized_model, run_tool, tiny_cfg

from reid_pbn.evaluation import ReIDIndex
from reid_pbn.serving import Gallery, GalleryBusyError, UnknownItemError, choose_index
from reid_pbn.serving import gallery as gallery_module
from reid_pbn.serving._segments import write_segment


def test_choose_index_sizes_to_the_gallery():
    c = choose_index("IVFFlat", 100_000, 512)
    assert (c.index_type, c.params, c.notes) == ("IVFFlat", {"nlist": 1265, "nprobe": 32}, [])
    c = choose_index("IVFFlat", 1000, 512)
    assert c.params["nlist"] == 25 and "lowered from 126 to 25" in c.notes[0]
    c = choose_index("IVFFlat", 50, 512)
    assert c.index_type == "Flat" and "at least 78 vectors" in c.notes[0]
    c = choose_index("IVFPQ", 700, 512)
    assert c.index_type == "IVFPQ" and c.params == {"pq_m": 64, "pq_nbits": 4, "nlist": 17,
                                                     "nprobe": 17}
    c = choose_index("IVFPQ", 100, 512)
    assert c.index_type == "IVFFlat" and "IVFFlat (no compression)" in c.notes[0]
    c = choose_index("IVFPQ", 20_000, 100, pq_m=64)
    assert c.params["pq_m"] == 50 and any("does not divide" in n for n in c.notes)
    assert choose_index("HNSW", 3, 8).index_type == "HNSW"
    with pytest.raises(ValueError, match="index type"):
        choose_index("LSH", 10, 8)


def _train(kind, n, dim, params, capfd):
    capfd.readouterr()
    index = ReIDIndex(dim, kind, use_gpu=False, **params)
    index.add(random_unit(n, dim, seed=n))
    assert index.count == n
    return capfd.readouterr().err


@pytest.mark.parametrize("kind,n", [("IVFFlat", 1000), ("IVFPQ", 700), ("IVFPQ", 2500)])
def test_sized_indexes_train_without_faiss_warnings(kind, n, capfd):
    choice = choose_index(kind, n, 32)
    assert choice.index_type == kind
    assert "WARNING" not in _train(kind, n, 32, choice.params, capfd)


def test_the_warning_check_sees_faiss_warnings(capfd):
    """The unsized default (4 * sqrt(N) lists) makes FAISS warn: the check above can fail."""
    assert "please provide at least" in _train("IVFFlat", 1000, 32, {}, capfd)


def test_build_index_and_search_round_trip(tmp_path, synthetic, model_files, capsys):
    config_file, weights, _ = model_files
    folder = os.path.dirname(synthetic.gallery[0][0])
    out = tmp_path / "gal"
    assert run_tool("build_index", "--config-file", config_file, "--weights", weights,
                    "--images", folder, "--output", out, "--type", "IVFFlat") == 0
    text = capsys.readouterr().out
    assert "note: IVFFlat needs at least 78 vectors" in text and "Flat index" in text
    info = json.loads((out / "gallery.json").read_text())
    prov = info["provenance"]
    with open(weights, "rb") as f:
        assert prov["weights_sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert prov["feature_dim"] == 512 and prov["normalization"] == "l2" and prov["created"]
    assert "DEPTH: 18" in prov["config"] and prov["config_file"] == os.path.abspath(config_file)
    assert info["index"]["requested"] == "IVFFlat" and info["index"]["type"] == "Flat"
    assert ReIDIndex.load(out / "index", use_gpu=False).count == len(synthetic.gallery)

    query_dir = os.path.dirname(synthetic.query[0][0])
    itself = synthetic.gallery[2][0]
    res = tmp_path / "res"
    assert run_tool("search", "--index", out, "--queries", itself, query_dir, "--k", "3",
                    "--output", res) == 0
    doc = json.loads((res / "results.json").read_text())
    first = doc["queries"][0]
    assert first["query"] == itself and len(doc["queries"]) == 1 + len(synthetic.query)
    top = first["results"][0]
    assert top["name"] == os.path.basename(itself) and top["distance"] < 1e-5
    assert top["true_match"] is True and [r["rank"] for r in first["results"]] == [1, 2, 3]
    sheet = (res / "contact_sheet.html").read_text()
    assert sheet.count("data:image/jpeg;base64,") == 4 * (1 + len(synthetic.query))

    assert run_tool("build_index", "--config-file", config_file, "--weights", weights,
                    "--images", folder, "--output", out) == 1
    assert "pass --overwrite" in capsys.readouterr().err
    # Another model's features are not comparable with the gallery's: refused.
    other = tmp_path / "other.pth"
    torch.save(randomized_model(tiny_cfg(), seed=3).state_dict(), other)
    assert run_tool("search", "--index", out, "--queries", itself, "--weights", other,
                    "--output", res) == 1
    assert "differs from the one that built the gallery" in capsys.readouterr().err


def test_build_index_from_extracted_features(tmp_path, gallery_images, model_files, capsys):
    config_file, weights, _ = model_files
    feats_dir = tmp_path / "feats"
    feats_dir.mkdir()
    np.save(feats_dir / "features.npy", gallery_images.features)
    (feats_dir / "metadata.json").write_text(json.dumps({
        "paths": gallery_images.paths, "pids": gallery_images.pids,
        "camids": gallery_images.camids, "config_file": config_file, "weights": weights,
        "flip": False, "normalize": True}))
    out = tmp_path / "gal"
    assert run_tool("build_index", "--features", feats_dir, "--output", out, "--type",
                    "HNSW") == 0
    g = Gallery.open(out, writable=False)
    assert len(g) == len(gallery_images.paths) and g.index_type == "HNSW"
    assert g.info["provenance"]["weights_sha256"] and g.info["provenance"]["source"]
    hit = g.search(gallery_images.features[:1], 1)[0][0]
    assert hit.item["pid"] == gallery_images.pids[0] and hit.distance < 1e-5
    assert g.thumbnail_path(hit.item["id"]) is not None


def _gallery(tmp_path, n=20, dim=16, kind="Flat", **kw):
    g, choice = Gallery.build(tmp_path / "g", random_unit(n, dim, 0), provenance={"x": 1},
                              index_type=kind, pids=list(range(n)), **kw)
    return g, choice


def test_add_delete_and_reopen(tmp_path):
    g, _ = _gallery(tmp_path)
    new = random_unit(2, 16, 1)
    items = g.add(new, names=["a.jpg", "b.jpg"], pids=[100, 101], camids=[0, 1],
                  metadata=[{"site": "gate"}, {}], thumbnails=[b"\xff\xd8jpeg", None])
    assert len(g) == 22 and g.search(new[:1], 1)[0][0].item["id"] == items[0]["id"]
    thumb = g.thumbnail_path(items[0]["id"])
    assert thumb is not None and g.thumbnail_path(items[1]["id"]) is None
    g.delete(items[0]["id"])
    assert len(g) == 21 and not thumb.exists()
    with pytest.raises(UnknownItemError):
        g.delete(items[0]["id"])
    with pytest.raises(ValueError, match="shape"):
        g.add(random_unit(1, 8, 2))
    g.close()
    g = Gallery.open(tmp_path / "g")
    assert len(g) == 21 and g.get(items[1]["id"])["metadata"] == {}
    hit = g.search(new[1:], 1)[0][0]
    assert hit.item["name"] == "b.jpg" and hit.item["pid"] == 101 and hit.item["camid"] == 1
    with pytest.raises(UnknownItemError):
        g.get(items[0]["id"])
    with pytest.raises(GalleryBusyError):
        Gallery.open(tmp_path / "g")
    g.close()


def test_leftovers_of_an_interrupted_addition_are_ignored_and_removed(tmp_path):
    g, _ = _gallery(tmp_path)
    g.close()
    folder = tmp_path / "g"
    # What a process killed after writing its segment and thumbnail, before saving the
    # index, leaves behind.
    orphan = write_segment(folder / "items", random_unit(1, 16, 5), [{
        "id": "0123456789abcdef", "name": "lost", "pid": 1, "camid": 0, "metadata": {},
        "thumbnail": True, "added": ""}])
    (folder / "thumbs" / "0123456789abcdef.jpg").write_bytes(b"x")
    (folder / "items" / ".seg-x.npy.1234.tmp").write_bytes(b"partial")
    g = Gallery.open(folder)
    assert len(g) == 20
    with pytest.raises(UnknownItemError):
        g.get("0123456789abcdef")
    names = set(os.listdir(folder / "items")) | set(os.listdir(folder / "thumbs"))
    assert not any(orphan.name in n or "0123456789abcdef" in n or n.endswith(".tmp")
                   for n in names)
    g.close()


def test_ivf_gallery_stays_sized_after_deletions(tmp_path, capfd):
    g, choice = _gallery(tmp_path, n=100, dim=16, kind="IVFFlat")
    assert choice.params["nlist"] == 2 and g.index_type == "IVFFlat"
    ids = [h.item["id"] for h in g.search(random_unit(1, 16, 9), 30)[0]]
    for item_id in ids[:22]:
        g.delete(item_id)
    assert len(g) == 78 and g.index_type == "IVFFlat"
    g.delete(ids[22])
    assert len(g) == 77 and g.index_type == "Flat"  # below 78 vectors: exact
    assert "WARNING" not in capfd.readouterr().err
    g.close()


def test_many_additions_are_merged_into_few_segments(tmp_path, monkeypatch):
    monkeypatch.setattr(gallery_module, "MAX_SEGMENTS", 3)
    g, _ = _gallery(tmp_path)
    added = [g.add(random_unit(1, 16, 10 + i))[0]["id"] for i in range(5)]
    assert len(os.listdir(tmp_path / "g" / "items")) <= 2 * 3
    g.close()
    g = Gallery.open(tmp_path / "g")
    assert len(g) == 25 and all(g.get(i)["id"] == i for i in added)
    g.close()
