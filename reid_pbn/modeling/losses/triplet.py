"""Triplet loss with batch-hard or batch-all mining (Hermans et al., 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .build import LOSS_REGISTRY

__all__ = ["TripletLoss", "euclidean_dist", "pair_masks", "triplet_loss"]


def euclidean_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances, computed in float32 and clamped before the square root.

    Autocast is switched off here: ``|x|^2 + |y|^2 - 2 x.y`` cancels catastrophically in
    bf16/fp16. The clamp keeps the gradient finite where it rounds to zero or below.

    Args:
        x: (M, D) features.
        y: (N, D) features.

    Returns:
        (M, N) float32 distances.
    """
    with torch.autocast(x.device.type, enabled=False):
        x, y = x.float(), y.float()
        xx = x.pow(2).sum(1, keepdim=True)
        yy = y.pow(2).sum(1, keepdim=True).t()
        d2 = torch.addmm(xx + yy, x, y.t(), beta=1, alpha=-2)
        return d2.clamp(min=1e-12).sqrt()


def pair_masks(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive (same label, not itself) and negative (other label) pair masks, (N, N) bool."""
    same = targets.view(-1, 1) == targets.view(1, -1)
    eye = torch.eye(len(targets), dtype=torch.bool, device=targets.device)
    return same & ~eye, ~same


def _ranking_loss(diff: torch.Tensor, margin: float) -> torch.Tensor:
    # diff = d(a, p) - d(a, n); margin 0 selects the soft margin log(1 + exp(diff)).
    return F.relu(diff + margin) if margin > 0 else F.softplus(diff)


def triplet_loss(
    features: torch.Tensor,
    targets: torch.Tensor,
    margin: float = 0.3,
    hard_mining: bool = True,
    norm_feat: bool = False,
) -> torch.Tensor:
    """Triplet loss over a batch.

    Anchors without a positive (another sample of their identity) or a negative are skipped.

    Args:
        features: (N, D) embeddings.
        targets: (N,) identity labels.
        margin: hinge margin; 0 selects the soft margin ``log(1 + exp(d_ap - d_an))``.
        hard_mining: batch-hard (hardest positive and negative per anchor, averaged over
            anchors); otherwise batch-all (averaged over every valid (a, p, n) triplet).
        norm_feat: L2-normalize features before computing distances.

    Returns:
        The loss (a scalar); 0 (with a graph) when no anchor has both a positive and a negative.
    """
    if norm_feat:
        features = F.normalize(features.float(), dim=1)
    dist = euclidean_dist(features, features)
    pos, neg = pair_masks(targets)
    valid = pos.any(1) & neg.any(1)
    if not valid.any():
        return features.sum() * 0.0
    dist, pos, neg = dist[valid], pos[valid], neg[valid]
    if hard_mining:
        d_ap = dist.masked_fill(~pos, float("-inf")).amax(1)
        d_an = dist.masked_fill(~neg, float("inf")).amin(1)
        return _ranking_loss(d_ap - d_an, margin).mean()
    triplets = pos.unsqueeze(2) & neg.unsqueeze(1)  # (anchor, positive, negative)
    diff = dist.unsqueeze(2) - dist.unsqueeze(1)
    return _ranking_loss(diff[triplets], margin).mean()


@LOSS_REGISTRY.register()
class TripletLoss(nn.Module):
    """Metric loss on the head's pre-neck "features".

    Args:
        margin: hinge margin; 0 selects the soft margin.
        hard_mining: batch-hard mining; otherwise batch-all.
        norm_feat: L2-normalize features first.
        scale: weight of the loss in the total.
    """

    key = "loss_triplet"

    def __init__(
        self,
        margin: float = 0.3,
        hard_mining: bool = True,
        norm_feat: bool = False,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        if margin < 0:
            raise ValueError(f"Triplet margin must be >= 0, got {margin}")
        self.margin = margin
        self.hard_mining = hard_mining
        self.norm_feat = norm_feat
        self.scale = scale

    @classmethod
    def from_config(cls, cfg) -> TripletLoss:
        """Build from ``cfg.MODEL.LOSSES.TRI`` (MARGIN, HARD_MINING, NORM_FEAT, SCALE)."""
        t = cfg.MODEL.LOSSES.TRI
        return cls(
            margin=t.MARGIN, hard_mining=t.HARD_MINING, norm_feat=t.NORM_FEAT, scale=t.SCALE
        )

    def forward(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """Weighted loss on ``outputs["features"]`` and the labels ``targets`` (N,)."""
        return self.scale * triplet_loss(
            outputs["features"], targets, self.margin, self.hard_mining, self.norm_feat
        )

    def extra_repr(self) -> str:
        return (
            f"margin={self.margin}, hard_mining={self.hard_mining}, "
            f"norm_feat={self.norm_feat}, scale={self.scale}"
        )
