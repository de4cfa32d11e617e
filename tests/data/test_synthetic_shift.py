"""Synthetic shift families: SyntheticA's test split under a graded global or local shift."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict

import numpy as np
import PIL
import pytest
from PIL import Image
from reid_data_trees import file_digests

from reid_pbn.config import get_cfg
from reid_pbn.data import (
    build_dataset,
    build_test_loader,
    build_train_loader,
    dataset_kwargs_from_cfg,
    parse_dataset_name,
)
from reid_pbn.data.datasets import (
    EmptySplitError,
    SyntheticGlobal,
    SyntheticLocal,
    generate_domain,
    generate_shifted,
    shift_statistics,
)
from reid_pbn.data.synthetic import DOMAIN_STYLES, shift, writer

TINY = {"num_ids": 8, "num_cams": 2, "imgs_per_cam": 1, "size": (32, 16)}
FAMILIES = ("SyntheticGlobal", "SyntheticLocal")
STRENGTHS = (0.0, 0.33, 0.67, 1.0)
TEST_SPLITS = ("query", "bounding_box_test")


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict:
    """SyntheticA and both families at every strength, on one data root."""
    root = str(tmp_path_factory.mktemp("shift"))
    out = {"root": root, "SyntheticA": generate_domain(root, "SyntheticA", **TINY)}
    for family in FAMILIES:
        for s in STRENGTHS:
            out[family, s] = generate_shifted(root, family, s, **TINY)
    return out


def _test_digests(tree: str) -> dict[str, str]:
    return {split: file_digests(os.path.join(tree, split)) for split in TEST_SPLITS}


def _mean_stats(reference: str, shifted: str) -> dict[str, float]:
    stats = []
    for split in TEST_SPLITS:
        for name in sorted(os.listdir(os.path.join(reference, split))):
            pair = [np.asarray(Image.open(os.path.join(t, split, name))) for t in (reference,
                                                                                   shifted)]
            stats.append(shift_statistics(*pair))
    return {k: float(np.mean([s[k] for s in stats])) for k in stats[0]}


def test_synthetic_a_is_unchanged(tmp_path):
    # The families reuse A's renderer through new hooks: A's parameters, manifest and pixels
    # must stay those of generator version 2.
    path = generate_domain(str(tmp_path), "SyntheticA", **TINY)
    with open(os.path.join(path, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    assert list(manifest) == ["params", "counts", "style"]
    assert manifest["params"] == {
        "domain": "SyntheticA", "num_ids": 8, "num_cams": 2, "imgs_per_cam": 1,
        "size": [32, 16], "seed": 0, "num_distractors": 2, "generator_version": 2,
    }
    style = asdict(DOMAIN_STYLES["SyntheticA"])
    assert manifest["style"] == json.loads(json.dumps(style))
    assert manifest["counts"] == {"bounding_box_train": 8, "query": 4, "bounding_box_test": 6}
    versions = (np.__version__.split(".")[:2], PIL.__version__.split(".")[:2])
    if versions != (["2", "4"], ["13", "0"]):  # drawing and random streams may differ
        pytest.skip("pixel digest pinned with numpy 2.4 and Pillow 13.0")
    digest = hashlib.sha256()
    for _, name, img, _ in writer.render_images(manifest["params"]):
        digest.update(name.encode())
        digest.update(img.tobytes())
    # Computed with the generator before the shift hooks existed.
    assert digest.hexdigest() == "ff6fdb3fbcdf6d17760b4a9e606ddd5eada0e88ccfce283695b70e72322545d0"


@pytest.mark.parametrize("family", FAMILIES)
def test_strength_zero_is_synthetic_a_test_split(trees, family):
    tree = trees[family, 0.0]
    assert os.path.basename(tree) == f"{family}@0.0"
    assert _test_digests(tree) == _test_digests(trees["SyntheticA"])
    assert os.listdir(os.path.join(tree, "bounding_box_train")) == []
    for s in STRENGTHS[1:]:  # same names, other bytes
        shifted = _test_digests(trees[family, s])
        for split in TEST_SPLITS:
            ref = _test_digests(trees["SyntheticA"])[split]
            assert shifted[split].keys() == ref.keys()
            assert not set(shifted[split].values()) & set(ref.values())


@pytest.mark.parametrize("family", FAMILIES)
def test_deterministic_from_parameters(tmp_path, family):
    a = generate_shifted(str(tmp_path / "a"), family, 0.5, **TINY)
    b = generate_shifted(str(tmp_path / "b"), family, 0.5, **TINY)
    c = generate_shifted(str(tmp_path / "c"), family, 0.5, **{**TINY, "seed": 1})
    assert file_digests(a) == file_digests(b)
    assert _test_digests(a) != _test_digests(c)


def test_shift_grows_with_strength_and_has_its_kind(trees):
    ref = trees["SyntheticA"]
    for family in FAMILIES:
        stats = [_mean_stats(ref, trees[family, s]) for s in STRENGTHS]
        patch = [m["patch_mean"] + m["patch_std"] for m in stats]
        assert patch[0] == 0 and all(a < b for a, b in zip(patch, patch[1:])), (family, patch)
        for m in stats[1:]:
            ratio = (m["local_mean"] + m["local_std"]) / (m["global_mean"] + m["global_std"])
            if family == "SyntheticLocal":  # patches move more than the whole image
                assert ratio > 1, (family, m)
            else:  # the whole image moves; its patches all alike
                assert ratio < 0.5, (family, m)


def test_shift_statistics_against_hand_computation():
    rng = np.random.default_rng(0)
    x = rng.uniform(40, 200, (16, 8, 3))
    # A per-channel affine change moves the global statistics only.
    y = x * np.array([0.8, 1.0, 1.1]) + np.array([10.0, -5.0, 0.0])
    s = shift_statistics(x, y, grid=4)
    dm = np.abs(y.mean(axis=(0, 1)) - x.mean(axis=(0, 1))).mean()
    ds = np.abs(y.std(axis=(0, 1)) - x.std(axis=(0, 1))).mean()
    assert s["global_mean"] == pytest.approx(dm) and s["global_std"] == pytest.approx(ds)
    assert s["local_mean"] == pytest.approx(0, abs=1e-9)
    assert s["local_std"] == pytest.approx(0, abs=1e-9)
    # Brightening the top half by 20 and darkening the bottom half by 20 keeps the mean.
    z = x.copy()
    z[:8] += 20
    z[8:] -= 20
    s = shift_statistics(x, z, grid=4)
    assert s["global_mean"] == pytest.approx(0, abs=1e-9)
    assert s["patch_mean"] == pytest.approx(20) and s["patch_std"] == pytest.approx(0, abs=1e-9)
    assert s["local_mean"] > 10
    with pytest.raises(ValueError, match="shape"):
        shift_statistics(x, x[:8])


def test_name_syntax(trees):
    root = trees["root"]
    ds = build_dataset("SyntheticLocal@0.33", root, **TINY)
    assert isinstance(ds, SyntheticLocal) and ds.strength == 0.33
    assert ds.name == "SyntheticLocal@0.33" and ds.dataset_dir == trees["SyntheticLocal", 0.33]
    assert ds.train == [] and len(ds.query) == 4 and len(ds.gallery) == 6
    default = build_dataset("SyntheticGlobal", root, **TINY)
    assert isinstance(default, SyntheticGlobal) and default.strength == 1.0
    assert default.dataset_dir == trees["SyntheticGlobal", 1.0]
    # The value is canonical: "@.330" is the tree "@0.33".
    assert build_dataset("SyntheticLocal@.330", root, **TINY).dataset_dir == ds.dataset_dir
    assert parse_dataset_name("SyntheticLocal@1e-1") == ("SyntheticLocal", SyntheticLocal,
                                                         {"strength": 0.1})
    assert parse_dataset_name("SyntheticB").options == {}


@pytest.mark.parametrize("name, match", [
    ("SyntheticB@0.5", r"SyntheticB takes no '@' parameter .*SyntheticLocal@<strength>"),
    ("Market1501@1", "Market1501 takes no '@' parameter"),
    ("SyntheticLocal@abc", "'abc' is not a valid strength for SyntheticLocal"),
    ("SyntheticLocal@", "'' is not a valid strength"),
    ("SyntheticLocal@-0.5", "strength must be a finite number >= 0"),
    ("SyntheticLocal@nan", "strength must be a finite number >= 0"),
    ("SyntheticLocl@0.5", "Unknown data set 'SyntheticLocl'. Did you mean: SyntheticLocal"),
])
def test_name_syntax_errors(tmp_path, name, match):
    with pytest.raises(ValueError, match=match):
        build_dataset(name, str(tmp_path), **TINY)
    assert not any(e.startswith("Synthetic") for e in os.listdir(tmp_path))


def test_name_and_option_must_agree(trees):
    with pytest.raises(ValueError, match="sets strength=0.5 but the options say strength=0.7"):
        build_dataset("SyntheticLocal@0.5", trees["root"], strength=0.7, **TINY)
    ds = build_dataset("SyntheticLocal@0.33", trees["root"], strength=0.33, **TINY)
    assert ds.strength == 0.33


def test_strengths_live_in_their_own_folders(tmp_path, monkeypatch):
    root = str(tmp_path)
    low = generate_shifted(root, "SyntheticLocal", 0.33, **TINY)
    high = generate_shifted(root, "SyntheticLocal", 0.67, **TINY)
    assert sorted(os.listdir(root)) == ["SyntheticLocal@0.33", "SyntheticLocal@0.67"]
    before = file_digests(root)
    calls = []
    real = shift.write_images
    monkeypatch.setattr(shift, "write_images",
                        lambda *a: calls.append(a) or real(*a))
    # Reused, whichever order they are asked for: one does not regenerate the other.
    for s in (0.67, 0.33, 0.67):
        build_dataset(f"SyntheticLocal@{s}", root, **TINY)
    assert generate_shifted(root, "SyntheticLocal", 0.33, **TINY) == low
    assert calls == [] and file_digests(root) == before
    with open(os.path.join(high, "manifest.json"), encoding="utf-8") as f:
        params = json.load(f)["params"]
    assert params["strength"] == 0.67 and params["source"] == "SyntheticA"
    # Other sizes rewrite that strength's tree only.
    generate_shifted(root, "SyntheticLocal", 0.33, **{**TINY, "seed": 2})
    assert len(calls) == 1
    assert file_digests(high) == {k[len("SyntheticLocal@0.67/"):]: v for k, v in before.items()
                                  if k.startswith("SyntheticLocal@0.67/")}


def _cfg(root, tests):
    cfg = get_cfg()
    cfg.DATASETS.ROOT = str(root)
    cfg.DATASETS.NAMES = ("SyntheticA",)
    cfg.DATASETS.TESTS = tuple(tests)
    cfg.DATASETS.SYNTHETIC.NUM_IDS = TINY["num_ids"]
    cfg.DATASETS.SYNTHETIC.NUM_CAMS = TINY["num_cams"]
    cfg.DATASETS.SYNTHETIC.IMGS_PER_CAM = TINY["imgs_per_cam"]
    cfg.DATASETS.SYNTHETIC.SIZE = TINY["size"]
    cfg.INPUT.SIZE_TEST = (32, 16)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.TEST.IMS_PER_BATCH = 4
    return cfg


def test_test_loader_from_config(trees):
    cfg = _cfg(trees["root"], ("SyntheticB", "SyntheticLocal@0.5"))
    counts = {}
    for name in cfg.DATASETS.TESTS:
        loader, num_query = build_test_loader(cfg, name)
        batches = list(loader)
        paths = sum((b["img_paths"] for b in batches), [])
        counts[name] = (num_query, len(paths))
        assert all((b["domains"] == -1).all() for b in batches)
    assert counts["SyntheticLocal@0.5"] == (4, 10)
    assert all(f"{os.sep}SyntheticLocal@0.5{os.sep}" in p for p in paths)
    kw = dataset_kwargs_from_cfg(cfg, "SyntheticLocal@0.5")
    assert kw["num_ids"] == TINY["num_ids"] and kw["size"] == TINY["size"]
    assert "strength" not in kw
    # A config-wide strength reaches the families named without one; a name's own wins.
    cfg.DATASETS.KWARGS = ("strength=0.67",)
    assert dataset_kwargs_from_cfg(cfg, "SyntheticLocal")["strength"] == 0.67
    assert "strength" not in dataset_kwargs_from_cfg(cfg, "SyntheticLocal@0.5")
    cfg.DATASETS.KWARGS = ("SyntheticLocal.seed=4",)
    assert dataset_kwargs_from_cfg(cfg, "SyntheticLocal@0.5")["seed"] == 4


def test_a_family_is_not_a_source(trees):
    cfg = _cfg(trees["root"], ())
    cfg.DATASETS.NAMES = ("SyntheticLocal@0.5",)
    with pytest.raises(EmptySplitError, match="SyntheticLocal@0.5 has no training images"):
        build_train_loader(cfg)
