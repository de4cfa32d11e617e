"""Losses: identity cross-entropy, triplet and circle losses, chosen through LOSS_REGISTRY."""

from .build import LOSS_REGISTRY, build_losses
from .circle import CircleLoss, pairwise_circle_loss
from .cross_entropy import CrossEntropyLoss, cross_entropy_loss
from .triplet import TripletLoss, euclidean_dist, pair_masks, triplet_loss

__all__ = [
    "LOSS_REGISTRY",
    "CircleLoss",
    "CrossEntropyLoss",
    "TripletLoss",
    "build_losses",
    "cross_entropy_loss",
    "euclidean_dist",
    "pair_masks",
    "pairwise_circle_loss",
    "triplet_loss",
]
