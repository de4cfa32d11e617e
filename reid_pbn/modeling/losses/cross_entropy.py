"""Identity (softmax cross-entropy) loss with label smoothing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .build import LOSS_REGISTRY

__all__ = ["CrossEntropyLoss", "cross_entropy_loss"]


def cross_entropy_loss(
    logits: torch.Tensor, targets: torch.Tensor, epsilon: float = 0.0
) -> torch.Tensor:
    """Cross-entropy against smoothed labels ``(1 - eps) * one_hot + eps / K`` (Szegedy et al.).

    Args:
        logits: (N, K) class scores.
        targets: (N,) class indices.
        epsilon: smoothing in [0, 1).

    Returns:
        The mean loss (a scalar, float32).
    """
    # float32: softmax over thousands of classes is fragile in bf16/fp16 autocast.
    return F.cross_entropy(logits.float(), targets, label_smoothing=epsilon)


@LOSS_REGISTRY.register()
class CrossEntropyLoss(nn.Module):
    """ID loss on the head's "cls_outputs".

    Args:
        epsilon: label-smoothing epsilon.
        scale: weight of the loss in the total.
    """

    key = "loss_cls"

    def __init__(self, epsilon: float = 0.1, scale: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= epsilon < 1.0:
            raise ValueError(f"Label smoothing epsilon must be in [0, 1), got {epsilon}")
        self.epsilon = epsilon
        self.scale = scale

    @classmethod
    def from_config(cls, cfg) -> CrossEntropyLoss:
        """Build from ``cfg.MODEL.LOSSES.CE`` (EPSILON, SCALE)."""
        return cls(epsilon=cfg.MODEL.LOSSES.CE.EPSILON, scale=cfg.MODEL.LOSSES.CE.SCALE)

    def forward(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """Weighted loss.

        Args:
            outputs: the head's training outputs; needs "cls_outputs".
            targets: identity labels (N,).

        Returns:
            ``scale * CE``.
        """
        if "cls_outputs" not in outputs:
            raise ValueError(
                "CrossEntropyLoss needs class logits but the head has no classifier: the model "
                "was built with 0 classes. Pass num_classes to build_model or set "
                "MODEL.HEADS.NUM_CLASSES (or drop CrossEntropyLoss from MODEL.LOSSES.NAME)."
            )
        return self.scale * cross_entropy_loss(outputs["cls_outputs"], targets, self.epsilon)

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}, scale={self.scale}"
