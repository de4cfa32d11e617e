"""Pairwise circle loss (Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity
Optimization", CVPR 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .build import LOSS_REGISTRY
from .triplet import pair_masks

__all__ = ["CircleLoss", "pairwise_circle_loss"]


def pairwise_circle_loss(
    features: torch.Tensor, targets: torch.Tensor, margin: float = 0.25, gamma: float = 128.0
) -> torch.Tensor:
    """Circle loss on the cosine similarities of a batch.

    For each anchor, with within-class similarities s_p and between-class similarities s_n:
    ``log(1 + sum_n exp(gamma * a_n * (s_n - m)) * sum_p exp(-gamma * a_p * (s_p - (1 - m))))``
    where ``a_p = [1 + m - s_p]_+`` and ``a_n = [s_n + m]_+`` are treated as constants.
    Averaged over anchors that have both a positive and a negative.

    Args:
        features: (N, D) embeddings (normalized here).
        targets: (N,) identity labels.
        margin: relaxation margin m.
        gamma: scale factor.

    Returns:
        The loss (a scalar); 0 (with a graph) when no anchor has both kinds of pairs.
    """
    # float32 without autocast: gamma (128) amplifies any rounding of the similarities.
    with torch.autocast(features.device.type, enabled=False):
        f = F.normalize(features.float(), dim=1)
        sim = f @ f.t()
    pos, neg = pair_masks(targets)
    valid = pos.any(1) & neg.any(1)
    if not valid.any():
        return features.sum() * 0.0
    sim, pos, neg = sim[valid], pos[valid], neg[valid]
    alpha_p = (1 + margin - sim.detach()).clamp(min=0)
    alpha_n = (sim.detach() + margin).clamp(min=0)
    logit_p = (-gamma * alpha_p * (sim - (1 - margin))).masked_fill(~pos, float("-inf"))
    logit_n = (gamma * alpha_n * (sim - margin)).masked_fill(~neg, float("-inf"))
    return F.softplus(torch.logsumexp(logit_p, 1) + torch.logsumexp(logit_n, 1)).mean()


@LOSS_REGISTRY.register()
class CircleLoss(nn.Module):
    """Pairwise circle loss on the head's pre-neck "features".

    Args:
        margin: relaxation margin m.
        gamma: scale factor.
        scale: weight of the loss in the total.
    """

    key = "loss_circle"

    def __init__(self, margin: float = 0.25, gamma: float = 128.0, scale: float = 1.0) -> None:
        super().__init__()
        self.margin = margin
        self.gamma = gamma
        self.scale = scale

    @classmethod
    def from_config(cls, cfg) -> CircleLoss:
        """Build from ``cfg.MODEL.LOSSES.CIRCLE`` (MARGIN, GAMMA, SCALE)."""
        c = cfg.MODEL.LOSSES.CIRCLE
        return cls(margin=c.MARGIN, gamma=c.GAMMA, scale=c.SCALE)

    def forward(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """Weighted loss on ``outputs["features"]`` and the labels ``targets`` (N,)."""
        return self.scale * pairwise_circle_loss(
            outputs["features"], targets, self.margin, self.gamma
        )

    def extra_repr(self) -> str:
        return f"margin={self.margin}, gamma={self.gamma}, scale={self.scale}"
