"""The BNNeck embedding head (Luo et al., "Bag of Tricks and a Strong Baseline for Deep
Person Re-identification", CVPRW 2019), with GeM pooling and a cosine classifier as options."""

from __future__ import annotations

import torch
from torch import nn

from ...utils.registry import Registry
from .classifiers import CLASSIFIERS
from .pooling import build_pooling

__all__ = ["HEAD_REGISTRY", "NECKS", "EmbeddingHead", "build_head"]

HEAD_REGISTRY = Registry("head")
HEAD_REGISTRY.__doc__ = """Heads, by ``MODEL.HEADS.NAME``.

A registered object is an ``nn.Module`` class with a classmethod
``from_config(cfg, in_channels, num_classes)``. Its ``forward(features, targets=None)`` takes
the backbone's map (N, C, H, W); in training it returns a dict with "features" (for metric
losses), "neck_features" and, when it has a classifier, "cls_outputs" (logits); in eval it
returns the test features (N, out_dim). It has ``out_dim`` and ``num_classes`` attributes.
"""


def _bnneck(dim: int) -> nn.Module:
    bn = nn.BatchNorm1d(dim)
    # Bag of tricks: no shift before the classifier, so the BN only rescales features.
    bn.bias.requires_grad_(False)
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)
    return bn


#: Necks by ``MODEL.HEADS.NECK`` name: builders ``(dim) -> nn.Module`` on (N, dim) features.
NECKS = Registry(
    "neck",
    doc="Necks: ``fn(dim) -> nn.Module`` on (N, dim) features.",
    items={"bnneck": _bnneck, "none": lambda dim: nn.Identity()},
)


@HEAD_REGISTRY.register()
class EmbeddingHead(nn.Module):
    """Pooling, optional embedding layer, BNNeck and identity classifier.

    Args:
        in_channels: channels of the backbone's feature map.
        num_classes: training identities; 0 builds no classifier (feature extraction only).
        pool: "avg", "max" or "gem".
        gem_p: initial GeM exponent.
        embedding_dim: when > 0, a Linear (no bias) + BatchNorm1d + ReLU maps the pooled
            features to this dimension; 0 keeps ``in_channels``.
        neck: "bnneck" (BatchNorm1d with frozen zero bias; its output feeds the classifier
            and is the test feature) or "none".
        cls_layer: "linear" (no bias) or "cosine" (normalized, scaled, additive margin).
        scale: logit scale of the cosine classifier.
        margin: additive margin of the cosine classifier.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int = 0,
        *,
        pool: str = "avg",
        gem_p: float = 3.0,
        embedding_dim: int = 0,
        neck: str = "bnneck",
        cls_layer: str = "linear",
        scale: float = 30.0,
        margin: float = 0.0,
    ) -> None:
        super().__init__()
        make_neck, make_classifier = NECKS.get(neck), CLASSIFIERS.get(cls_layer)
        self.pool = build_pooling(pool, gem_p)
        self.out_dim = embedding_dim if embedding_dim > 0 else in_channels
        self.embedding: nn.Module = nn.Identity()
        if embedding_dim > 0:
            linear = nn.Linear(in_channels, embedding_dim, bias=False)
            nn.init.kaiming_normal_(linear.weight, mode="fan_out")
            self.embedding = nn.Sequential(
                linear, nn.BatchNorm1d(embedding_dim), nn.ReLU(inplace=True)
            )
        self.neck = make_neck(self.out_dim)
        self.num_classes = num_classes
        self.classifier = (
            make_classifier(self.out_dim, num_classes, scale=scale, margin=margin)
            if num_classes > 0
            else None
        )

    @classmethod
    def from_config(cls, cfg, in_channels: int, num_classes: int) -> EmbeddingHead:
        """Build the head from ``cfg.MODEL.HEADS``.

        Args:
            cfg: the config.
            in_channels: channels of the backbone's feature map.
            num_classes: training identities (0: no classifier).

        Returns:
            The head.
        """
        h = cfg.MODEL.HEADS
        return cls(
            in_channels,
            num_classes,
            pool=h.POOL,
            gem_p=h.GEM_P,
            embedding_dim=h.EMBEDDING_DIM,
            neck=h.NECK,
            cls_layer=h.CLS_LAYER,
            scale=h.SCALE,
            margin=h.MARGIN,
        )

    def forward(
        self, features: torch.Tensor, targets: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor] | torch.Tensor:
        """Pool, embed and classify.

        Args:
            features: the backbone's map (N, C, H, W).
            targets: identity labels (N,), used by margin classifiers in training.

        Returns:
            In training, a dict: "features" (pre-neck, for the triplet/circle losses),
            "neck_features" and, with a classifier, "cls_outputs" (logits). In eval, the test
            features (N, out_dim): the neck's output.
        """
        feat = self.embedding(self.pool(features))
        neck_feat = self.neck(feat)
        if not self.training:
            return neck_feat
        outputs = {"features": feat, "neck_features": neck_feat}
        if self.classifier is not None:
            outputs["cls_outputs"] = self.classifier(neck_feat, targets)
        return outputs


def build_head(cfg, in_channels: int, num_classes: int) -> nn.Module:
    """Build the head named by ``cfg.MODEL.HEADS.NAME``.

    Args:
        cfg: the config.
        in_channels: channels of the backbone's feature map.
        num_classes: training identities (0: no classifier).

    Returns:
        The head module.
    """
    return HEAD_REGISTRY.get(cfg.MODEL.HEADS.NAME).from_config(cfg, in_channels, num_classes)
