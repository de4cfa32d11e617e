"""Learning-rate schedule against closed forms."""

import math

import pytest
from torch import nn

from reid_pbn.config import get_cfg
from reid_pbn.engine.solver import build_lr_scheduler, build_optimizer, lr_factor


def test_warmup_then_multistep():
    kw = dict(total_iters=100, warmup_iters=10, warmup_factor=0.1, sched="multistep",
              steps=(40, 80), gamma=0.1, eta_min_ratio=0.0)
    assert lr_factor(0, **kw) == pytest.approx(0.1)
    assert lr_factor(5, **kw) == pytest.approx(0.1 * 0.5 + 0.5)
    assert lr_factor(10, **kw) == pytest.approx(1.0)
    assert lr_factor(40, **kw) == pytest.approx(0.1)
    assert lr_factor(99, **kw) == pytest.approx(0.01)


def test_cosine_endpoints():
    kw = dict(total_iters=110, warmup_iters=10, warmup_factor=0.1, sched="cosine",
              steps=(), gamma=0.1, eta_min_ratio=0.01)
    assert lr_factor(10, **kw) == pytest.approx(1.0)
    assert lr_factor(60, **kw) == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert lr_factor(110, **kw) == pytest.approx(0.01)


def test_scheduler_and_param_groups():
    cfg = get_cfg()
    cfg.SOLVER.MAX_EPOCH, cfg.SOLVER.STEPS, cfg.SOLVER.WARMUP_ITERS = 3, (2,), 0
    cfg.SOLVER.BIAS_LR_FACTOR = 2.0
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    opt = build_optimizer(cfg, model)
    lrs = sorted({g["lr"] for g in opt.param_groups})
    assert lrs == pytest.approx([cfg.SOLVER.BASE_LR, 2 * cfg.SOLVER.BASE_LR])
    sched = build_lr_scheduler(cfg, opt, iters_per_epoch=5)
    for _ in range(10):
        opt.step()
        sched.step()
    assert sched.get_last_lr()[0] in (pytest.approx(cfg.SOLVER.BASE_LR * 0.1),
                                      pytest.approx(2 * cfg.SOLVER.BASE_LR * 0.1))
