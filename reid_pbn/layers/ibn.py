"""Instance-Batch Normalization (IBN-Net, Pan et al., ECCV 2018)."""

from __future__ import annotations

import torch
from torch import nn

from .norm import get_norm


class IBN(nn.Module):
    """IBN-a's mixed normalization: affine InstanceNorm on the first half of the channels,
    a batch-style norm (BN, PBN, ...) on the rest.

    Parameter names (``IN.*``, ``BN.*``) follow IBN-Net's published checkpoints.

    Args:
        planes: number of input channels.
        ratio: fraction of channels given to InstanceNorm (``int(planes * ratio)``).
        norm: the norm for the remaining channels, any spec of ``get_norm``.
        **norm_kwargs: passed to that norm.
    """

    def __init__(self, planes: int, ratio: float = 0.5, norm="BN", **norm_kwargs):
        super().__init__()
        self.half = int(planes * ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = get_norm(norm, planes - self.half, **norm_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(x, [self.half, x.size(1) - self.half], dim=1)
        return torch.cat([self.IN(a.contiguous()), self.BN(b.contiguous())], dim=1)
