"""Global pooling layers mapping (N, C, H, W) to (N, C)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...utils.registry import Registry

__all__ = ["POOLINGS", "GeneralizedMeanPooling", "build_pooling"]


class GeneralizedMeanPooling(nn.Module):
    """GeM pooling (Radenovic et al., TPAMI 2018): ``(mean(x ** p)) ** (1 / p)`` per channel.

    p = 1 is average pooling, p -> infinity max pooling; p is learned.

    Args:
        p: initial exponent.
        eps: lower clamp of the input, so that fractional powers of zero stay differentiable.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        if p <= 0:
            raise ValueError(f"GeM exponent must be positive, got {p}")
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool (N, C, H, W) to (N, C)."""
        pooled = F.adaptive_avg_pool2d(x.clamp(min=self.eps).pow(self.p), 1)
        return pooled.pow(1.0 / self.p).flatten(1)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4f}, eps={self.eps}"


class _GlobalPool(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, 1).flatten(1)


#: Pooling builders by ``MODEL.HEADS.POOL`` name; each takes the GeM exponent (ignored by the
#: fixed poolings) and returns a module mapping (N, C, H, W) to (N, C).
POOLINGS = Registry(
    "pooling",
    doc="Poolings: ``fn(gem_p) -> nn.Module`` mapping (N, C, H, W) to (N, C).",
    items={
        "avg": lambda gem_p: _GlobalPool(F.adaptive_avg_pool2d),
        "max": lambda gem_p: _GlobalPool(F.adaptive_max_pool2d),
        "gem": lambda gem_p: GeneralizedMeanPooling(gem_p),
    },
)


def build_pooling(name: str, gem_p: float = 3.0) -> nn.Module:
    """Build a global pooling layer.

    Args:
        name: "avg", "max" or "gem".
        gem_p: initial exponent of GeM.

    Returns:
        A module mapping (N, C, H, W) to (N, C).
    """
    return POOLINGS.get(name)(gem_p)
