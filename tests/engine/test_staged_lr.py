"""torchreid's staged learning rates (SOLVER.BACKBONE_LR_FACTOR) and its single-step schedule."""

import pytest
import torch

from reid_pbn.config import get_cfg
from reid_pbn.engine.solver import build_lr_scheduler, build_optimizer
from reid_pbn.modeling import build_model


def dg_cfg(name: str):
    """The MixStyle / EFDMix re-ID recipe (configs/DG): SGD 0.05, backbone x0.2, step at 20."""
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = name
    cfg.MODEL.BACKBONE.DEPTH = 18
    cfg.MODEL.HEADS.NECK = "none"
    cfg.MODEL.HEADS.EMBEDDING_DIM = 512 if name == "resnet" else 0
    cfg.MODEL.LOSSES.NAME = ("CrossEntropyLoss",)
    s = cfg.SOLVER
    s.OPT, s.BASE_LR, s.BACKBONE_LR_FACTOR = "SGD", 0.05, 0.2
    s.MAX_EPOCH, s.SCHED, s.STEPS, s.GAMMA, s.WARMUP_ITERS = 60, "multistep", (20,), 0.1, 0
    return cfg


@pytest.mark.parametrize("name", ["osnet_x0_25", "resnet"])
def test_backbone_at_reduced_rate_head_at_base_rate(name):
    cfg = dg_cfg(name)
    model = build_model(cfg, num_classes=7)
    opt = build_optimizer(cfg, model)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    for pname, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # torchreid's new_layers: OSNet's classifier; ResNet-50-fc512's fc and classifier.
        expected = 0.01 if pname.startswith("backbone.") else 0.05
        assert lr_of[id(p)] == pytest.approx(expected), pname
    if name.startswith("osnet"):  # torchreid's fc is a pretrained OSNet layer: reduced rate
        assert lr_of[id(model.backbone.fc[0].weight)] == pytest.approx(0.01)
    else:  # the fc512 embedding is new: base rate
        assert lr_of[id(model.heads.embedding[0].weight)] == pytest.approx(0.05)


def test_single_step_at_epoch_20_of_60():
    cfg = dg_cfg("osnet_x0_25")
    model = build_model(cfg, num_classes=3)
    opt = build_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt, iters_per_epoch=2)
    seen = []
    for _ in range(60 * 2):
        seen.append(sorted({round(g["lr"], 8) for g in opt.param_groups}))
        with torch.no_grad():
            opt.step()
        sched.step()
    assert seen[0] == seen[39] == [0.01, 0.05]
    assert seen[40] == seen[-1] == [0.001, 0.005]
