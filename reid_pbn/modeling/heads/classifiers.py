"""Identity classifiers of the embedding head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...utils.registry import Registry

__all__ = ["CLASSIFIERS", "CosineClassifier", "LinearClassifier"]


class LinearClassifier(nn.Linear):
    """Linear layer without bias (bag-of-tricks' BNNeck classifier), weights ~ N(0, 0.001^2).

    Args:
        in_features: feature dimension.
        num_classes: number of identities.
    """

    def __init__(self, in_features: int, num_classes: int, **_) -> None:
        super().__init__(in_features, num_classes, bias=False)
        nn.init.normal_(self.weight, std=0.001)

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (N, num_classes); ``targets`` is unused (accepted for a uniform call)."""
        return super().forward(x)


class CosineClassifier(nn.Module):
    """Cosine classifier with additive margin (CosFace / AM-softmax).

    logits = scale * (cos(theta_j) - margin * [j == target]), where theta_j is the angle
    between the L2-normalized feature and the normalized weight of class j. The margin is
    applied only when targets are given (training).

    Args:
        in_features: feature dimension.
        num_classes: number of identities.
        scale: logit scale s.
        margin: additive cosine margin m.
    """

    def __init__(
        self, in_features: int, num_classes: int, scale: float = 30.0, margin: float = 0.0
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.normal_(self.weight, std=0.01)
        self.scale = scale
        self.margin = margin

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled cosine logits (N, num_classes), with the margin on the target class."""
        cos = F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))
        if targets is not None and self.margin != 0:
            cos = cos - self.margin * F.one_hot(targets, cos.size(1)).to(cos.dtype)
        return self.scale * cos

    def extra_repr(self) -> str:
        n, d = self.weight.shape
        return f"in_features={d}, num_classes={n}, scale={self.scale}, margin={self.margin}"


#: Classifiers by ``MODEL.HEADS.CLS_LAYER`` name; each is called as
#: ``cls(in_features, num_classes, scale=..., margin=...)``.
CLASSIFIERS = Registry(
    "classifier",
    doc="Classifiers: ``cls(in_features, num_classes, scale=, margin=)``.",
    items={"linear": LinearClassifier, "cosine": CosineClassifier},
)
