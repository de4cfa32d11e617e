"""Batch-style normalizations besides BN and PBN: frozen BN, Batch Group Norm and IEBN."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from ._common import running_update_factor
from .norm import register_norm

logger = logging.getLogger(__name__)


@register_norm("FrozenBN")
class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine: y = (x - mean) / sqrt(var + eps) * w + b.

    Everything is a buffer (no parameters, nothing is updated, in training or not), with the
    ``state_dict`` keys of ``nn.BatchNorm2d``, so BN checkpoints load unchanged (a state dict
    without ``num_batches_tracked`` loads too). Gradients still flow to the input.

    Args:
        num_features: number of channels C.
        eps: added to the variance.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            False, 0.0, self.eps)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        key = prefix + "num_batches_tracked"
        if key not in state_dict:
            state_dict[key] = self.num_batches_tracked.clone()
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def _compatible_groups(num_channels: int, num_groups: int) -> int:
    if num_channels % num_groups == 0 or num_groups % num_channels == 0:
        return num_groups
    groups = max(d for d in range(1, min(num_groups, num_channels) + 1) if num_channels % d == 0)
    logger.info("BGN: %d groups fit neither way with %d channels; using %d groups",
                num_groups, num_channels, groups)
    return groups


@register_norm("BGN")
class BatchGroupNorm2d(nn.Module):
    """Batch Group Normalization (Zhou et al., 2020).

    The C x H x W dimension of each sample is merged and cut into ``num_groups`` equal
    consecutive groups; every group is normalized with statistics over the batch and the group
    (running statistics per group are kept for evaluation, as in BN), then a per-channel affine
    is applied. ``num_groups`` may divide C (groups of whole channels) or be a multiple of it
    (each channel's map split into ``num_groups / C`` parts, which requires H*W to be divisible
    by that); otherwise the largest divisor of C below it is used.

    Args:
        num_features: number of channels C.
        num_groups: number of groups G of the merged dimension.
        eps: added to the variance.
        momentum: running-statistics momentum (``None``: cumulative average).
        affine: learn a per-channel scale and shift.
        track_running_stats: keep per-group running statistics for evaluation.
    """

    def __init__(
        self,
        num_features: int,
        num_groups: int = 32,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ):
        super().__init__()
        self.num_features = num_features
        self.num_groups = _compatible_groups(num_features, num_groups)
        self.eps, self.momentum = eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(self.num_groups))
            self.register_buffer("running_var", torch.ones(self.num_groups))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if (c * h * w) % self.num_groups:
            raise ValueError(f"BGN: C*H*W = {c * h * w} is not divisible by "
                             f"{self.num_groups} groups")
        use_batch = self.training or not self.track_running_stats
        factor = running_update_factor(self) if self.training else 0.0
        # (N, G, L): BN over dim 1 gives exactly statistics over the batch and each group.
        y = F.batch_norm(x.reshape(n, self.num_groups, -1), self.running_mean, self.running_var,
                         None, None, use_batch, factor, self.eps).view_as(x)
        if self.weight is not None:
            y = torch.addcmul(self.bias[:, None, None], y, self.weight[:, None, None])
        return y

    def extra_repr(self) -> str:
        return (f"{self.num_features}, num_groups={self.num_groups}, eps={self.eps}, "
                f"momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


@register_norm("IEBN")
class IEBN2d(nn.BatchNorm2d):
    """Instance Enhancement Batch Normalization (Liang et al., AAAI 2020).

    BN without affine, then a per-sample channel gate from the input's global average:
    ``y = x_hat * weight * sigmoid(gate_weight * GAP(x) + gate_bias) + bias``, with
    ``gate_weight = 0`` and ``gate_bias = -1`` at initialization. ``weight``, ``bias`` and the
    running statistics keep ``nn.BatchNorm2d``'s names, so BN weights load into it (the gate
    keeps its initialization).

    Args:
        num_features: number of channels C.
        eps: added to the variance.
        momentum: running-statistics momentum (``None``: cumulative average).
        affine: learn the per-channel scale and shift around the gate.
        track_running_stats: keep running statistics for evaluation.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.gate_weight = nn.Parameter(torch.zeros(num_features))
        self.gate_bias = nn.Parameter(torch.full((num_features,), -1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        use_batch = self.training or self.running_mean is None
        factor = running_update_factor(self) if self.training else 0.0
        x_hat = F.batch_norm(x, self.running_mean, self.running_var, None, None, use_batch,
                             factor, self.eps)
        context = x.mean(dim=(2, 3))
        gate = torch.sigmoid(torch.addcmul(self.gate_bias, context, self.gate_weight))
        if self.weight is not None:
            gate = gate * self.weight
        y = x_hat * gate[:, :, None, None]
        if self.bias is not None:
            y = y + self.bias[:, None, None]
        return y
