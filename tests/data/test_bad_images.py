"""Corrupt, truncated and empty images: reported with path and reason, skipped or fatal."""

from __future__ import annotations

import logging

import pytest
from reid_data_trees import make_market, write_jpeg

from reid_pbn.config import get_cfg
from reid_pbn.data import build_dataset, build_train_loader, read_image
from reid_pbn.data.datasets import UnreadableImageError, check_image


def _break_images(root):
    train = root / "Market-1501-v15.09.15" / "bounding_box_train"
    zero = train / "0002_c2s1_000100_01.jpg"
    zero.write_bytes(b"")
    corrupt = train / "0007_c1s1_000101_01.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 3)
    truncated = train / "0011_c5s1_000102_01.jpg"
    write_jpeg(truncated, 5, size=(64, 32))
    truncated.write_bytes(truncated.read_bytes()[:200])
    return [zero, corrupt, truncated]


def test_unreadable_images_are_skipped_and_logged(data_root, caplog):
    make_market(data_root)
    bad = _break_images(data_root)
    with caplog.at_level(logging.WARNING):
        ds = build_dataset("Market1501", root=str(data_root))
    assert len(ds.train) == 6  # the 6 good ones remain
    paths = {p for p, _, _ in ds.train}
    for b in bad:
        assert str(b) not in paths
        assert str(b) in caplog.text
    assert "empty file (0 bytes)" in caplog.text
    assert {p for p, _ in ds.skipped} == {str(b) for b in bad}
    assert "DATASETS.STRICT" in caplog.text


def test_strict_mode_fails_naming_every_bad_image(data_root):
    make_market(data_root)
    bad = _break_images(data_root)
    with pytest.raises(UnreadableImageError) as exc:
        build_dataset("Market1501", root=str(data_root), strict=True)
    for b in bad:
        assert str(b) in str(exc.value)
    assert len(exc.value.bad) == 3


def test_without_verification_bad_images_stay_listed(data_root):
    make_market(data_root)
    _break_images(data_root)
    ds = build_dataset("Market1501", root=str(data_root), verify_images=False)
    assert len(ds.train) == 9


def test_train_loader_skips_bad_images_from_config(data_root, caplog):
    make_market(data_root)
    bad = _break_images(data_root)
    cfg = get_cfg()
    cfg.DATASETS.ROOT = str(data_root)
    cfg.DATASETS.NAMES = ("Market1501",)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.DATALOADER.NUM_INSTANCE = 2
    cfg.INPUT.SIZE_TRAIN = (16, 8)
    with caplog.at_level(logging.WARNING):
        loader, info = build_train_loader(cfg)
    assert info["num_images"] == 6
    assert all(str(b) in caplog.text for b in bad)
    batch = next(iter(loader))
    assert not set(batch["img_paths"]) & {str(b) for b in bad}
    cfg.DATASETS.STRICT = True
    with pytest.raises(UnreadableImageError, match="0007_c1s1_000101_01.jpg"):
        build_train_loader(cfg)


def test_split_empty_after_skipping(data_root):
    make_market(data_root)
    for f in (data_root / "Market-1501-v15.09.15" / "query").glob("*.jpg"):
        f.write_bytes(b"")
    with pytest.raises(Exception, match="query split is empty after leaving out unreadable"):
        build_dataset("Market1501", root=str(data_root))


def test_read_image_errors_name_the_path(tmp_path):
    good = tmp_path / "ok.jpg"
    write_jpeg(good)
    img = read_image(good)
    assert img.mode == "RGB" and img.size == (8, 16)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        read_image(tmp_path / "missing.jpg")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"nope")
    with pytest.raises(UnreadableImageError, match="broken.jpg"):
        read_image(broken)
    assert check_image(str(good)) is None
    assert "cannot stat" in check_image(str(tmp_path / "missing.jpg"))
