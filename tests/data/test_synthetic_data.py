"""Synthetic domains: Market-1501 format, deterministic, reused, regenerated, atomic."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from reid_data_trees import SYNTH_KW, file_digests

from reid_pbn.data import DATASET_REGISTRY, build_dataset
from reid_pbn.data.datasets import MARKET_NAME_PATTERN, market1501, synthetic
from reid_pbn.data.datasets.synthetic import DOMAIN_STYLES, generate_domain
from reid_pbn.data.synthetic import writer


def _manifest(path: str) -> dict:
    with open(os.path.join(path, "manifest.json"), encoding="utf-8") as f:
        return json.load(f)


def test_every_style_is_registered():
    for name in DOMAIN_STYLES:
        assert issubclass(DATASET_REGISTRY[name], synthetic.SyntheticDomain)


def test_market_tree_and_names(synth_root):
    root = os.path.join(synth_root, "SyntheticA")
    assert sorted(os.listdir(root)) == ["bounding_box_test", "bounding_box_train", "manifest.json",
                                        "query"]
    names = os.listdir(os.path.join(root, "bounding_box_test"))
    for n in names:
        assert MARKET_NAME_PATTERN.match(n), n
        assert len(n) == len("0001_c1s1_000151_01.jpg") and n.endswith(".jpg")
    assert sum(n.startswith("0000_") for n in names) == 2  # distractors
    manifest = _manifest(root)
    assert manifest["params"]["num_ids"] == SYNTH_KW["num_ids"]
    assert manifest["counts"] == {"bounding_box_train": 12, "query": 3, "bounding_box_test": 11}


def test_parsed_by_the_market_reader(synth_root, tmp_path, monkeypatch):
    # The same tree renamed to Market-1501's folder reads identically through Market1501.
    shutil.copytree(os.path.join(synth_root, "SyntheticA"), tmp_path / "Market-1501")
    market = build_dataset("Market1501", root=str(tmp_path))
    synth = build_dataset("SyntheticA", root=synth_root, **SYNTH_KW)
    strip = lambda items: [(os.path.basename(p), pid, c) for p, pid, c in items]  # noqa: E731
    for split in ("train", "query", "gallery"):
        assert strip(getattr(market, split)) == strip(getattr(synth, split))
    # ... because both call the one shared parser.
    calls = []
    real = market1501.parse_market_style_dir
    monkeypatch.setattr(market1501, "parse_market_style_dir",
                        lambda *a, **k: calls.append(a) or real(*a, **k))
    build_dataset("SyntheticB", root=synth_root, **SYNTH_KW)
    assert len(calls) == 3


def test_query_has_a_cross_camera_match(synth_root):
    ds = build_dataset("SyntheticB", root=synth_root, **SYNTH_KW)
    for _, pid, cam in ds.query:
        assert any(g_pid == pid and g_cam != cam for _, g_pid, g_cam in ds.gallery)
    assert {pid for _, pid, _ in ds.query}.isdisjoint(range(1, 4))  # test ids are 4..6


def test_deterministic_from_seed(tmp_path):
    a = generate_domain(str(tmp_path / "a"), "SyntheticC", **SYNTH_KW, seed=3)
    b = generate_domain(str(tmp_path / "b"), "SyntheticC", **SYNTH_KW, seed=3)
    c = generate_domain(str(tmp_path / "c"), "SyntheticC", **SYNTH_KW, seed=4)
    da, db, dc = file_digests(a), file_digests(b), file_digests(c)
    assert da == db
    assert da != dc


def test_domains_differ(synth_root):
    a = file_digests(os.path.join(synth_root, "SyntheticA", "bounding_box_train"))
    b = file_digests(os.path.join(synth_root, "SyntheticB", "bounding_box_train"))
    assert a.keys() == b.keys() and not set(a.values()) & set(b.values())


def test_reused_and_other_parameters_never_replace_a_tree(tmp_path, monkeypatch):
    """Two jobs with different DATASETS.SYNTHETIC on one root: the second gets its own folder,
    keyed by its parameters, and the first job's tree is left as it was."""
    root = str(tmp_path)
    path = generate_domain(root, "SyntheticA", **SYNTH_KW)
    before = file_digests(path)
    calls = []
    real = writer.write_tree
    monkeypatch.setattr(writer, "write_tree", lambda *a: calls.append(a) or real(*a))
    assert generate_domain(root, "SyntheticA", **SYNTH_KW) == path
    assert calls == []  # reused
    build_dataset("SyntheticA", root=root, **SYNTH_KW)
    assert calls == []
    other = generate_domain(root, "SyntheticA", **{**SYNTH_KW, "imgs_per_cam": 1})
    assert len(calls) == 1 and os.path.basename(other).startswith("SyntheticA+")
    assert file_digests(path) == before  # the first job's tree is untouched
    assert _manifest(other)["params"]["imgs_per_cam"] == 1
    ds = build_dataset("SyntheticA", root=root, **{**SYNTH_KW, "imgs_per_cam": 1})
    assert ds.dataset_dir == other
    assert generate_domain(root, "SyntheticA", **{**SYNTH_KW, "imgs_per_cam": 1}) == other
    assert len(calls) == 1
    # A deleted file makes a tree incomplete: regenerated in place.
    victim = os.path.join(path, "query", sorted(os.listdir(os.path.join(path, "query")))[0])
    os.remove(victim)
    assert generate_domain(root, "SyntheticA", **SYNTH_KW) == path
    assert len(calls) == 2 and os.path.isfile(victim)
    assert [e for e in os.listdir(root) if e.startswith(".")] == []  # no temp folders left


def test_interrupted_generation_leaves_no_tree(tmp_path, monkeypatch):
    def crash(out_dir, params):
        os.makedirs(os.path.join(out_dir, "query"))
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "write_tree", crash)
    with pytest.raises(KeyboardInterrupt):
        generate_domain(str(tmp_path), "SyntheticA", **SYNTH_KW)
    assert os.listdir(tmp_path) == []


def test_interrupted_regeneration_keeps_the_old_tree(tmp_path, monkeypatch):
    path = generate_domain(str(tmp_path), "SyntheticA", **SYNTH_KW)
    before = file_digests(path)

    def crash(out_dir, params):
        raise RuntimeError("killed")

    monkeypatch.setattr(writer, "write_tree", crash)
    with pytest.raises(RuntimeError):
        generate_domain(str(tmp_path), "SyntheticA", **{**SYNTH_KW, "seed": 9})
    assert file_digests(path) == before
    assert os.listdir(tmp_path) == ["SyntheticA"]


@pytest.mark.parametrize("kw, match", [
    ({"num_cams": 1}, "num_cams"),
    ({"num_cams": 10}, "num_cams"),
    ({"num_ids": 1}, "num_ids"),
    ({"imgs_per_cam": 0}, "imgs_per_cam"),
    ({"size": (8, 4)}, "size"),
])
def test_invalid_parameters(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        generate_domain(str(tmp_path), "SyntheticA", **{**SYNTH_KW, **kw})
    with pytest.raises(ValueError, match="Unknown synthetic domain"):
        generate_domain(str(tmp_path), "SyntheticZ")


def test_image_size_and_content(synth_root):
    ds = build_dataset("SyntheticA", root=synth_root, **SYNTH_KW)
    img = Image.open(ds.train[0][0])
    assert img.size == (16, 32) and img.mode == "RGB"
    assert np.asarray(img).std() > 10  # not a blank image
