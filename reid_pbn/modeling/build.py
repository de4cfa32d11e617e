"""Model builder."""

from __future__ import annotations

import logging

from torch import nn

from .meta_arch import META_ARCH_REGISTRY

__all__ = ["build_model"]

logger = logging.getLogger(__name__)


def build_model(cfg, num_classes: int | None = None, num_domains: int = 1) -> nn.Module:
    """Build the model named by ``cfg.MODEL.META_ARCHITECTURE``.

    The backbone's pretrained weights are loaded as MODEL.BACKBONE.PRETRAIN(_PATH) say. The
    model is returned on the CPU; the caller moves it to its device (MODEL.DEVICE through
    ``reid_pbn.engine.resolve_device``, which also handles DDP ranks).

    Args:
        cfg: the config.
        num_classes: training identities; None takes ``cfg.MODEL.HEADS.NUM_CLASSES``. 0 builds
            a model without classifier (feature extraction; losses needing logits then fail
            with a clear error).
        num_domains: source domains (for domain-specific norms).

    Returns:
        The model, with ``model.backbone``, ``model.heads`` and ``model.device``.
    """
    if num_classes is None:
        num_classes = int(cfg.MODEL.HEADS.NUM_CLASSES)
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")
    arch = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    model = arch.from_config(cfg, num_classes=num_classes, num_domains=num_domains)
    bb = cfg.MODEL.BACKBONE
    # DEPTH only means something for ResNet; OSNet names carry their architecture.
    backbone = f"{bb.NAME}-{bb.DEPTH}" if bb.NAME == "resnet" else bb.NAME
    logger.info(
        "Built %s (backbone %s): %d classes, %d domain(s), %.2fM parameters",
        cfg.MODEL.META_ARCHITECTURE,
        backbone,
        num_classes,
        num_domains,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    return model
