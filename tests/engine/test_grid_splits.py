"""GRID evaluated as the literature reports it: the mean (and std) over its 10 splits, checked
against evaluate() run on each split on its own; with GRID as a source, its split only."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

# The GRID-format tree builder is shared with the data tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from reid_data_trees import make_grid  # noqa: E402

from reid_pbn.config import get_cfg  # noqa: E402
from reid_pbn.data import build_test_loader, eval_split_ids  # noqa: E402
from reid_pbn.engine.inference import inference_on_datasets  # noqa: E402
from reid_pbn.evaluation import evaluate, extract_features  # noqa: E402

SIZE = (16, 8)


class _Projection(nn.Module):
    """A fixed random projection of the pixels: deterministic features, no training."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("w", torch.randn(3 * SIZE[0] * SIZE[1], 12, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w


@pytest.fixture
def grid_cfg(tmp_path, monkeypatch):
    monkeypatch.delenv("REID_PBN_DATASETS", raising=False)
    make_grid(tmp_path)
    cfg = get_cfg()
    cfg.DATASETS.ROOT = str(tmp_path)
    cfg.DATASETS.NAMES = ("Market1501",)
    cfg.INPUT.SIZE_TEST = SIZE
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.TEST.IMS_PER_BATCH = 4
    cfg.TEST.MAX_RANK = 3
    return cfg


def _one_split(cfg, split_id: int) -> dict:
    """evaluate() on the features of one split, built and extracted on its own."""
    cfg = cfg.clone()
    cfg.DATASETS.KWARGS = (f"GRID.split_id={split_id}",)
    loader, nq = build_test_loader(cfg, "GRID")
    d = extract_features(_Projection(), loader, torch.device("cpu"))
    f, p, c = d["feats"], d["pids"], d["camids"]
    return evaluate(f[:nq], f[nq:], p[:nq], p[nq:], c[:nq], c[nq:], max_rank=3)


def test_grid_target_reports_mean_over_10_splits(grid_cfg, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="reid_pbn"):
        res = inference_on_datasets(grid_cfg, _Projection(), ["GRID"],
                                    output_dir=tmp_path / "out")["GRID"]
    assert "GRID: mean over 10 splits" in caplog.text
    ref = [_one_split(grid_cfg, s) for s in range(10)]
    for key in ("mAP", "mINP", "Rank-1"):
        values = np.array([r[key] for r in ref])
        assert res[key] == pytest.approx(values.mean(), abs=1e-12)
        # Population std (ddof=0): the spread of these 10 splits.
        assert res[f"{key}_std"] == pytest.approx(values.std(ddof=0), abs=1e-12)
        assert [s[key] for s in res["splits"]] == pytest.approx(values.tolist())
    # make_grid's splits cycle with period 5, so the splits do differ from each other.
    assert res["mAP_std"] > 0
    np.testing.assert_allclose(res["cmc"], np.mean([r["cmc"] for r in ref], 0))
    assert res["num_splits"] == 10 and [s["split"] for s in res["splits"]] == list(range(10))
    saved = json.loads((tmp_path / "out" / "results.json").read_text())["GRID"]
    assert saved["mAP"] == pytest.approx(res["mAP"]) and len(saved["splits"]) == 10
    header = (tmp_path / "out" / "results.csv").read_text().splitlines()[0].split(",")
    assert "mAP_std" in header and "splits" not in header


def test_grid_source_or_fixed_split_uses_one_split(grid_cfg, caplog):
    src = grid_cfg.clone()
    src.DATASETS.NAMES = ("GRID",)
    src.DATASETS.KWARGS = ("GRID.split_id=3",)
    with caplog.at_level(logging.INFO, logger="reid_pbn"):
        assert eval_split_ids(src, "GRID") is None
        res = inference_on_datasets(src, _Projection(), ["GRID"])["GRID"]
    assert "GRID is a training source: evaluated on its configured split split_id=3 only" \
        in caplog.text
    assert "splits" not in res and res["mAP"] == pytest.approx(_one_split(grid_cfg, 3)["mAP"])
    fixed = grid_cfg.clone()
    fixed.DATASETS.KWARGS = ("split_id=2",)
    assert eval_split_ids(fixed, "GRID") is None
    off = grid_cfg.clone()
    off.TEST.ALL_SPLITS = False
    assert eval_split_ids(off, "GRID") is None
    assert eval_split_ids(grid_cfg, "GRID") == list(range(10))
    assert eval_split_ids(grid_cfg, "Market1501") is None
