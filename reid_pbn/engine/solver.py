"""Optimizer and per-iteration learning-rate schedule built from ``SOLVER.*``."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import ConfigError
from ..utils.registry import Registry, UnknownNameError

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
#: Optimizers by ``SOLVER.OPT`` name: ``torch.optim.Optimizer`` classes.
OPTIMIZERS = Registry(
    "optimizer",
    doc="Optimizers: ``torch.optim.Optimizer`` classes, by ``SOLVER.OPT``.",
    items={"SGD": torch.optim.SGD, "Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW},
)


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """Optimizer with per-parameter groups: norm weight decay, bias, head and backbone LR factors.

    ``BACKBONE_LR_FACTOR`` < 1 gives torchreid's staged learning rates: pretrained (backbone)
    layers at ``BASE_LR * BACKBONE_LR_FACTOR``, new (head) layers at ``BASE_LR``.

    Args:
        cfg: config (reads SOLVER.OPT, BASE_LR, WEIGHT_DECAY, WEIGHT_DECAY_NORM,
            BIAS_LR_FACTOR, HEADS_LR_FACTOR, BACKBONE_LR_FACTOR, MOMENTUM, NESTEROV).
        model: the model (unwrapped).

    Returns:
        The optimizer.
    """
    s = cfg.SOLVER
    try:
        optimizer_cls = OPTIMIZERS.get(s.OPT)
    except UnknownNameError as e:
        raise ConfigError(f"SOLVER.OPT: {e}") from None
    groups: dict[tuple, list] = {}
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            lr = s.BASE_LR
            wd = s.WEIGHT_DECAY_NORM if isinstance(module, _NORM_TYPES) else s.WEIGHT_DECAY
            if mod_name.startswith("heads"):
                lr *= s.HEADS_LR_FACTOR
            elif mod_name == "backbone" or mod_name.startswith("backbone."):
                lr *= s.BACKBONE_LR_FACTOR
            if p_name == "bias":
                lr *= s.BIAS_LR_FACTOR
            groups.setdefault((lr, wd), []).append(p)
    params = [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]
    kwargs = {"momentum": s.MOMENTUM, "nesterov": s.NESTEROV} if s.OPT == "SGD" else {}
    return optimizer_cls(params, lr=s.BASE_LR, **kwargs)


def lr_factor(it: int, *, total_iters: int, warmup_iters: int, warmup_factor: float,
              sched: str, steps: tuple[int, ...], gamma: float, eta_min_ratio: float) -> float:
    """Multiplier of the base learning rate at iteration ``it``.

    Linear warmup from ``warmup_factor`` to 1 over ``warmup_iters``, then "cosine" decay to
    ``eta_min_ratio`` at ``total_iters`` or "multistep" decay by ``gamma`` at each of ``steps``
    (iterations).

    Args:
        it: iteration (0-based).
        total_iters: length of training in iterations.
        warmup_iters: warmup length.
        warmup_factor: factor at iteration 0.
        sched: "cosine" or "multistep".
        steps: iterations of the multistep decays.
        gamma: multistep decay factor.
        eta_min_ratio: final cosine LR / base LR.

    Returns:
        The factor.
    """
    warm = 1.0
    if it < warmup_iters:
        alpha = it / warmup_iters
        warm = warmup_factor * (1 - alpha) + alpha
    if sched == "cosine":
        t = min(max(it - warmup_iters, 0) / max(total_iters - warmup_iters, 1), 1.0)
        base = eta_min_ratio + (1 - eta_min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    elif sched == "multistep":
        base = gamma ** sum(it >= s for s in steps)
    else:
        raise ValueError(f"SOLVER.SCHED must be 'cosine' or 'multistep', got '{sched}'")
    return warm * base


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer, iters_per_epoch: int):
    """Per-iteration ``LambdaLR`` from ``SOLVER.*`` (epochs converted to iterations).

    Args:
        cfg: config.
        optimizer: the optimizer.
        iters_per_epoch: iterations in one epoch.

    Returns:
        The scheduler; call ``step()`` after every iteration.
    """
    s = cfg.SOLVER
    kwargs = dict(
        total_iters=s.MAX_EPOCH * iters_per_epoch, warmup_iters=s.WARMUP_ITERS,
        warmup_factor=s.WARMUP_FACTOR, sched=s.SCHED,
        steps=tuple(e * iters_per_epoch for e in s.STEPS), gamma=s.GAMMA,
        eta_min_ratio=s.ETA_MIN_LR / s.BASE_LR,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, **kwargs))
