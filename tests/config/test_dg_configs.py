"""configs/DG: the MixStyle / EFDMix re-ID recipe loads, and every method builds its model."""

from __future__ import annotations

import glob
import os

import pytest
import torch

from reid_pbn.config import get_cfg
from reid_pbn.layers import EFDMix, MixStyle, PatchBatchNorm2d
from reid_pbn.modeling import build_model

DG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "DG")
PAIRS = ("market2grid", "grid2market", "market2duke", "duke2market")
METHODS = ("bn", "mixstyle", "efdmix", "pbn", "efdmix-pbn", "mixstyle-pbn")


def load(name: str):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(DG, f"{name}.yml"))
    return cfg


def test_every_pair_arch_and_method_is_shipped():
    files = {os.path.basename(f)[:-4] for f in glob.glob(os.path.join(DG, "*.yml"))}
    expected = {f"{p}_{a}_{m}" for p in PAIRS for a in ("osnet", "R50") for m in METHODS}
    assert expected <= files


@pytest.mark.parametrize("pair", PAIRS)
def test_recipe(pair):
    cfg = load(f"{pair}_osnet_efdmix")
    s = cfg.SOLVER
    assert (s.OPT, s.BASE_LR, s.BACKBONE_LR_FACTOR, s.IMS_PER_BATCH) == ("SGD", 0.05, 0.2, 32)
    assert (s.MAX_EPOCH, tuple(s.STEPS), s.GAMMA, s.WARMUP_ITERS) == (60, (20,), 0.1, 0)
    assert cfg.MODEL.LOSSES.NAME == ("CrossEntropyLoss",)
    assert cfg.INPUT.FLIP.ENABLED and cfg.INPUT.CJ.ENABLED and not cfg.INPUT.REA.ENABLED
    assert cfg.TEST.METRIC == "cosine"
    src, tgt = {"market2grid": ("Market1501", "GRID"), "grid2market": ("GRID", "Market1501"),
                "market2duke": ("Market1501", "DukeMTMC"),
                "duke2market": ("DukeMTMC", "Market1501")}[pair]
    names, tests = cfg.DATASETS.NAMES, cfg.DATASETS.TESTS
    assert (names, tests) == ((src,), (tgt,))


@pytest.mark.parametrize("arch", ["osnet", "R50"])
@pytest.mark.parametrize("method", METHODS)
def test_method_builds_its_model(arch, method):
    cfg = load(f"market2grid_{arch}_{method}")
    cfg.MODEL.BACKBONE.PRETRAIN = False
    model = build_model(cfg, num_classes=3)
    mods = list(model.backbone.modules())
    mix = {"mixstyle": MixStyle, "efdmix": EFDMix}.get(method.split("-")[0])
    mixers = [m for m in mods if isinstance(m, (MixStyle, EFDMix))]
    assert len(mixers) == (2 if mix else 0)
    assert all(type(m) is mix and (m.p, m.alpha, m.mix) == (0.5, 0.1, "random") for m in mixers)
    assert any(isinstance(m, PatchBatchNorm2d) for m in mods) == method.endswith("pbn")
    assert list(model.backbone.mixers) == ([] if not mix else
                                           ["conv2", "conv3"] if arch == "osnet" else
                                           ["layer1", "layer2"])
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 32)).shape == (1, 512)
