"""Loss registry and builder."""

from __future__ import annotations

from torch import nn

from ...utils.registry import Registry

__all__ = ["LOSS_REGISTRY", "build_losses"]

LOSS_REGISTRY = Registry("loss")
LOSS_REGISTRY.__doc__ = """Losses, by the names in ``MODEL.LOSSES.NAME``.

A registered object is an ``nn.Module`` class with a classmethod ``from_config(cfg)`` and a
class attribute ``key`` (the name of its entry in the model's loss dict, e.g. "loss_cls").
It is called as ``loss(outputs, targets)`` with the head's training outputs (a dict with
"cls_outputs", "features", "neck_features") and the identity labels (N,), and returns a scalar
already multiplied by its weight (the loss's SCALE key).
"""


def build_losses(cfg) -> nn.ModuleList:
    """Build every loss listed in ``cfg.MODEL.LOSSES.NAME``.

    Args:
        cfg: the config.

    Returns:
        The losses, in the listed order.
    """
    names = list(cfg.MODEL.LOSSES.NAME)
    losses = nn.ModuleList(LOSS_REGISTRY.get(name).from_config(cfg) for name in names)
    keys = [loss.key for loss in losses]
    if len(set(keys)) != len(keys):
        raise ValueError(f"MODEL.LOSSES.NAME lists a loss twice: {names}")
    return losses
