"""Tiny file trees with the real naming conventions of every registered data set (test helpers).

Each ``make_*`` builder writes a small data set under a data root and returns the numbers a
correct parser must report; ``TREE_BUILDERS`` maps every registry name to its builder, so a
test can build every registered data set.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image


def write_jpeg(
    path: Path, seed: int = 0, size: tuple[int, int] = (16, 8), fmt: str = "JPEG"
) -> None:
    """A tiny real image (height, width) with seeded colours."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 255, size=(size[0], size[1], 3), dtype=np.uint8)
    Image.fromarray(a).save(path, format=fmt)


def _stray(folder: Path) -> None:
    (folder / "Thumbs.db").write_bytes(b"\x00" * 16)
    (folder / "readme.txt").write_text("not an image")
    (folder / "._0001_c1s1_000151_01.jpg").write_bytes(b"macOS resource fork")


def make_market(root: Path, folder: str = "Market-1501-v15.09.15") -> dict:
    """Market-1501: 3 train ids (pids 2, 7, 11), junk -1 and distractors 0000 in the gallery."""
    base = root / folder
    train = base / "bounding_box_train"
    for i, (pid, cam) in enumerate([(2, 1), (2, 3), (7, 2), (7, 6), (7, 6), (11, 4)]):
        write_jpeg(train / f"{pid:04d}_c{cam}s1_{i:06d}_01.jpg", i)
    query = base / "query"
    for i, (pid, cam) in enumerate([(1, 1), (3, 5)]):
        write_jpeg(query / f"{pid:04d}_c{cam}s2_{i:06d}_00.jpg", 100 + i)
    test = base / "bounding_box_test"
    for i, (pid, cam) in enumerate([(1, 2), (1, 3), (3, 1), (0, 4), (0, 6), (-1, 1), (-1, 2)]):
        name = f"{pid:04d}" if pid >= 0 else "-1"
        write_jpeg(test / f"{name}_c{cam}s1_{i:06d}_02.jpg", 200 + i)
    for d in (train, query, test):
        _stray(d)
    return {"name": "Market1501", "train": 6, "query": 2, "gallery": 5, "train_pids": 3,
            "train_cams": 5, "gallery_pids": {0, 1, 3}}


def make_duke(root: Path) -> dict:
    """DukeMTMC-reID: ``<pid>_c<cam>_f<frame>.jpg``, cameras 1..8."""
    base = root / "DukeMTMC-reID"
    for i, (pid, cam) in enumerate([(1, 1), (1, 8), (5, 2), (9, 7)]):
        write_jpeg(base / "bounding_box_train" / f"{pid:04d}_c{cam}_f{i:07d}.jpg", i)
    for i, (pid, cam) in enumerate([(3, 2), (4, 8)]):
        write_jpeg(base / "query" / f"{pid:04d}_c{cam}_f{i:07d}.jpg", 10 + i)
    for i, (pid, cam) in enumerate([(3, 5), (4, 1), (6, 3)]):
        write_jpeg(base / "bounding_box_test" / f"{pid:04d}_c{cam}_f{i:07d}.jpg", 20 + i)
    _stray(base / "query")
    return {"name": "DukeMTMC", "train": 4, "query": 2, "gallery": 3, "train_pids": 3,
            "train_cams": 4, "gallery_pids": {3, 4, 6}}


def make_cuhk03(root: Path) -> dict:
    """CUHK03-NP detected and labeled subsets: ``<pid>_c<cam>_<idx>.png``, cameras 1..2."""
    for subset, extra in (("detected", 0), ("labeled", 1)):
        base = root / "cuhk03-np" / subset
        for i, (pid, cam) in enumerate([(1, 1), (1, 2), (2, 1), (3, 2)][: 3 + extra]):
            write_jpeg(base / "bounding_box_train" / f"{pid:04d}_c{cam}_{i}.png", i, fmt="PNG")
        write_jpeg(base / "query" / "1400_c1_1.png", 50, fmt="PNG")
        write_jpeg(base / "bounding_box_test" / "1400_c2_3.png", 51, fmt="PNG")
        write_jpeg(base / "bounding_box_test" / "1401_c2_4.png", 52, fmt="PNG")
        _stray(base / "bounding_box_test")
    return {"name": "CUHK03", "train": 3, "query": 1, "gallery": 2, "train_pids": 2,
            "train_cams": 2, "gallery_pids": {1400, 1401}}


def make_msmt17(root: Path, version: str = "MSMT17_V1") -> dict:
    """MSMT17: list files ``<pid dir>/<pid>_<idx>_<cam>_<date>_<seq>_<n>.jpg <pid>``."""
    base = root / version
    train_dir, test_dir = ("train", "test") if version == "MSMT17_V1" else (
        "mask_train_v2", "mask_test_v2")
    lists: dict[str, list[str]] = {"train": [], "val": [], "query": [], "gallery": []}
    entries = {
        "train": [(0, 1), (0, 15), (1, 3)],
        "val": [(1, 4)],
        "query": [(0, 2)],
        "gallery": [(0, 9), (1, 12)],
    }
    for s, (split, items) in enumerate(entries.items()):
        img_dir = base / (train_dir if split in ("train", "val") else test_dir)
        for i, (pid, cam) in enumerate(items):
            rel = f"{pid:04d}/{pid:04d}_{i:03d}_{cam:02d}_0303morning_{i:04d}_0.jpg"
            write_jpeg(img_dir / rel, 10 * s + i)
            lists[split].append(f"{rel} {pid}")
    for split, lines in lists.items():
        (base / f"list_{split}.txt").write_text("\n".join(lines) + "\n")
    return {"name": "MSMT17", "train": 3, "query": 1, "gallery": 2, "train_pids": 2,
            "train_cams": 3, "gallery_pids": {0, 1}}


def make_grid(root: Path) -> dict:
    """GRID: probe/gallery ``<pid>_<cam>_....jpeg``, 775-style distractors, and a ``.mat`` with
    10 partitions (split s trains on ids {s+1, s+2})."""
    import scipy.io as sio

    base = root / "underground_reid"
    for pid in range(1, 7):
        write_jpeg(base / "probe" / f"{pid:04d}_1_25004_107_32_130.jpeg", pid)
        write_jpeg(base / "gallery" / f"{pid:04d}_5_25004_107_32_130.jpeg", 10 + pid)
    for j in range(3):
        write_jpeg(base / "gallery" / f"0000_{j + 2}_1000{j}_1_1_1.jpeg", 30 + j)
    _stray(base / "probe")
    parts = np.empty((1, 10), dtype=object)
    for s in range(10):
        st = np.zeros((1, 1), dtype=[("a", "O"), ("b", "O"), ("idx", "O")])
        st[0, 0]["a"], st[0, 0]["b"] = np.zeros((1, 1)), np.zeros((1, 1))
        st[0, 0]["idx"] = np.array([[s % 5 + 1, s % 5 + 2]])
        parts[0, s] = st
    sio.savemat(base / "features_and_partitions.mat", {"trainIdxAll": parts})
    return {"name": "GRID", "train": 4, "query": 4, "gallery": 7, "train_pids": 2,
            "train_cams": 2, "gallery_pids": {0, 3, 4, 5, 6}}


def make_custom(root: Path) -> dict:
    """CustomDataset: ``custom/list.csv`` with a split column, paths relative to it."""
    base = root / "custom"
    rows = [("images/a1.jpg", 10, 0, "train"), ("images/a2.jpg", 10, 1, "train"),
            ("images/b1.jpg", 20, 0, "train"), ("images/junk.jpg", -1, 0, "train"),
            ("images/q1.jpg", 30, 0, "query"), ("images/g1.jpg", 30, 2, "gallery"),
            ("images/g2.jpg", 0, 1, "gallery")]
    for i, (rel, *_rest) in enumerate(rows):
        write_jpeg(base / rel, i)
    lines = ["# my data set", "path,pid,camid,split"] + [",".join(map(str, r)) for r in rows]
    (base / "list.csv").write_text("\n".join(lines) + "\n")
    return {"name": "CustomDataset", "train": 3, "query": 1, "gallery": 2, "train_pids": 2,
            "train_cams": 2, "gallery_pids": {0, 30}}


SYNTH_KW = {"num_ids": 6, "num_cams": 2, "imgs_per_cam": 2, "size": (32, 16)}


def _make_synthetic(name: str):
    def make(root: Path) -> dict:
        # Nothing to write: the data set generates itself. 3 train ids x 2 cams x 2 imgs;
        # 3 test ids, one query camera each; gallery = the rest + 2 distractors.
        return {"name": name, "kwargs": SYNTH_KW, "train": 12, "query": 3, "gallery": 11,
                "train_pids": 3, "train_cams": 2, "gallery_pids": {0, 4, 5, 6}}

    return make


def _make_shift_family(name: str):
    def make(root: Path) -> dict:
        # SyntheticA's test split, shifted: no train images, the same query and gallery.
        return {"name": name, "kwargs": SYNTH_KW, "train": 0, "query": 3, "gallery": 11,
                "train_pids": 0, "train_cams": 0, "gallery_pids": {0, 4, 5, 6}}

    return make


TREE_BUILDERS = {
    "Market1501": make_market,
    "DukeMTMC": make_duke,
    "CUHK03": make_cuhk03,
    "MSMT17": make_msmt17,
    "GRID": make_grid,
    "CustomDataset": make_custom,
    "SyntheticA": _make_synthetic("SyntheticA"),
    "SyntheticB": _make_synthetic("SyntheticB"),
    "SyntheticC": _make_synthetic("SyntheticC"),
    "SyntheticGlobal": _make_shift_family("SyntheticGlobal"),
    "SyntheticLocal": _make_shift_family("SyntheticLocal"),
}


def file_digests(folder: str) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder``."""
    import hashlib

    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out
