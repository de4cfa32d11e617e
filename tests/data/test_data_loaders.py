"""Train/test loaders from the config: batch dicts, multi-source namespacing, kwargs, transforms."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from reid_data_trees import SYNTH_KW, make_grid, make_market

from reid_pbn.config import get_cfg
from reid_pbn.data import (
    build_test_loader,
    build_train_loader,
    build_transforms,
    dataset_kwargs_from_cfg,
)
from reid_pbn.data.datasets import DatasetFormatError, EmptySplitError


def _cfg(root, names=("SyntheticA",)):
    cfg = get_cfg()
    cfg.DATASETS.ROOT = str(root)
    cfg.DATASETS.NAMES = tuple(names)
    cfg.DATASETS.SYNTHETIC.NUM_IDS = SYNTH_KW["num_ids"]
    cfg.DATASETS.SYNTHETIC.NUM_CAMS = SYNTH_KW["num_cams"]
    cfg.DATASETS.SYNTHETIC.IMGS_PER_CAM = SYNTH_KW["imgs_per_cam"]
    cfg.DATASETS.SYNTHETIC.SIZE = SYNTH_KW["size"]
    cfg.INPUT.SIZE_TRAIN = (32, 16)
    cfg.INPUT.SIZE_TEST = (32, 16)
    cfg.INPUT.PADDING.SIZE = 2
    cfg.SOLVER.IMS_PER_BATCH = 6
    cfg.DATALOADER.NUM_INSTANCE = 2
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.TEST.IMS_PER_BATCH = 5
    return cfg


def _check_batch(batch, n, size=(32, 16)):
    assert set(batch) == {"images", "pids", "camids", "domains", "img_paths"}
    assert batch["images"].dtype == torch.float32 and batch["images"].shape == (n, 3, *size)
    for key in ("pids", "camids", "domains"):
        assert batch[key].dtype == torch.int64 and batch[key].shape == (n,)
    assert isinstance(batch["img_paths"], list) and len(batch["img_paths"]) == n


def test_train_loader_single_source(synth_root):
    loader, info = build_train_loader(_cfg(synth_root))
    assert info["num_classes"] == 3 and info["num_domains"] == 1
    assert info["num_images"] == 12 and info["datasets"] == ["SyntheticA"]
    batch = next(iter(loader))
    _check_batch(batch, 6)
    assert sorted(torch.bincount(batch["pids"]).tolist()) == [2, 2, 2]
    assert (batch["domains"] == 0).all()
    assert len(loader) == len(loader.batch_sampler) >= 1


def test_train_loader_multi_source_namespaces_pids(synth_root):
    cfg = _cfg(synth_root, ("SyntheticA", "SyntheticB"))
    cfg.DATALOADER.SAMPLER = "domain_balanced"
    cfg.SOLVER.ITERS_PER_EPOCH = 4
    loader, info = build_train_loader(cfg)
    assert info["num_classes"] == 6 and info["num_domains"] == 2 and info["num_images"] == 24
    assert info["pid_offsets"] == [0, 3]
    items = loader.dataset.items
    for path, pid, cam, dom in items:
        assert ("SyntheticA" in path) == (dom == 0)
        assert pid in (range(3) if dom == 0 else range(3, 6))
        assert cam in (range(2) if dom == 0 else range(2, 4))
    batches = list(loader)
    assert len(batches) == 4
    for i, b in enumerate(batches):
        _check_batch(b, 6)
        assert set(b["domains"].tolist()) == {i % 2}


def test_train_loader_random_and_worker_paths(synth_root):
    cfg = _cfg(synth_root)
    cfg.DATALOADER.SAMPLER = "random"
    cfg.DATALOADER.NUM_WORKERS = 1
    loader, _ = build_train_loader(cfg)
    assert loader.persistent_workers
    b = next(iter(loader))
    _check_batch(b, 6)


def test_train_loader_config_errors(synth_root):
    cfg = _cfg(synth_root)
    cfg.DATALOADER.SAMPLER = "pk_typo"
    with pytest.raises(ValueError, match="DATALOADER.SAMPLER: Unknown .*Registered: domain_bal"):
        build_train_loader(cfg)
    cfg = _cfg(synth_root, ("SyntheticA", "SyntheticA"))
    with pytest.raises(ValueError, match="twice"):
        build_train_loader(cfg)
    cfg = _cfg(synth_root)
    cfg.SOLVER.IMS_PER_BATCH = 5
    with pytest.raises(ValueError, match="NUM_INSTANCE"):
        build_train_loader(cfg)


def test_test_loader_query_first(synth_root):
    cfg = _cfg(synth_root)
    loader, num_query = build_test_loader(cfg, "SyntheticB")
    assert num_query == 3
    batches = list(loader)
    paths = sum((b["img_paths"] for b in batches), [])
    assert len(paths) == 3 + 11
    assert all("/query/" in p for p in paths[:num_query])
    assert all("/bounding_box_test/" in p for p in paths[num_query:])
    _check_batch(batches[0], 5)
    # SyntheticB is not a source: its domain is -1; pids are the original ones.
    assert (batches[0]["domains"] == -1).all()
    assert set(torch.cat([b["pids"] for b in batches]).tolist()) == {0, 4, 5, 6}
    loader, _ = build_test_loader(cfg, "SyntheticA")
    assert (next(iter(loader))["domains"] == 0).all()


def test_test_loader_checks(data_root):
    make_market(data_root)
    cfg = _cfg(data_root, ("Market1501",))
    for f in (data_root / "Market-1501-v15.09.15" / "query").glob("*.jpg"):
        f.rename(f.with_name("9" + f.name[1:]))  # query ids 9001/9003, absent from the gallery
    with pytest.raises(DatasetFormatError, match="none of the 2 query identities"):
        build_test_loader(cfg, "Market1501")


def test_custom_without_query_cannot_be_a_test_set(data_root):
    base = data_root / "custom"
    from reid_data_trees import write_jpeg

    write_jpeg(base / "a.jpg")
    (base / "train.csv").write_text("path,pid,camid\na.jpg,1,0\n")
    with pytest.raises(EmptySplitError, match="no query images"):
        build_test_loader(_cfg(data_root, ("CustomDataset",)), "CustomDataset")


def test_dataset_kwargs(data_root):
    make_grid(data_root)
    cfg = _cfg(data_root, ("GRID",))
    cfg.DATASETS.KWARGS = ("GRID.split_id=3", "combine_val=True")
    kw = dataset_kwargs_from_cfg(cfg, "GRID")
    assert kw["split_id"] == 3 and "combine_val" not in kw
    assert dataset_kwargs_from_cfg(cfg, "MSMT17")["combine_val"] is True
    assert "split_id" not in dataset_kwargs_from_cfg(cfg, "MSMT17")
    syn = dataset_kwargs_from_cfg(cfg, "SyntheticC")
    assert syn["num_ids"] == SYNTH_KW["num_ids"] and syn["size"] == SYNTH_KW["size"]
    cfg.DATASETS.STRICT = True
    assert dataset_kwargs_from_cfg(cfg, "GRID")["strict"] is True
    cfg.DATASETS.KWARGS = ("GRID.bogus=1",)
    with pytest.raises(ValueError, match="GRID takes no option 'bogus'"):
        dataset_kwargs_from_cfg(cfg, "GRID")
    cfg.DATASETS.KWARGS = ("GRID.split_id=3",)
    _, num_query = build_test_loader(cfg, "GRID")
    assert num_query == 4


def test_transforms_from_config():
    cfg = get_cfg()
    cfg.INPUT.SIZE_TRAIN = (64, 32)
    cfg.INPUT.SIZE_TEST = (48, 24)
    cfg.INPUT.CJ.ENABLED = True
    img = Image.new("RGB", (20, 50), (255, 0, 0))
    x = build_transforms(cfg, is_train=True)(img)
    assert x.shape == (3, 64, 32) and x.dtype == torch.float32
    y = build_transforms(cfg, is_train=False)(img)
    assert y.shape == (3, 48, 24)
    # Normalized with PIXEL_MEAN/STD: pure red -> (1 - mean) / std in channel 0.
    expected = (1 - cfg.INPUT.PIXEL_MEAN[0]) / cfg.INPUT.PIXEL_STD[0]
    assert torch.allclose(y[0], torch.full_like(y[0], expected), atol=1e-4)
    names = [type(t).__name__ for t in build_transforms(cfg, True).transforms]
    assert names == ["Resize", "RandomHorizontalFlip", "Pad", "RandomCrop", "RandomApply",
                     "ToTensor", "Normalize", "RandomErasing"]
    cfg.INPUT.FLIP.ENABLED = cfg.INPUT.PADDING.ENABLED = cfg.INPUT.REA.ENABLED = False
    cfg.INPUT.CJ.ENABLED = False
    names = [type(t).__name__ for t in build_transforms(cfg, True).transforms]
    assert names == ["Resize", "ToTensor", "Normalize"]
