"""Backbone registry and the config reader of the ResNet backbone."""

from __future__ import annotations

import logging

from torch import nn

from ...layers import norm_kwargs_from_cfg
from ..registry import Registry
from .pretrained import fetch_imagenet_state_dict, load_pretrained_weights, read_state_dict
from .resnet import build_resnet

__all__ = ["BACKBONE_REGISTRY", "build_backbone", "build_resnet_backbone", "norm_from_cfg"]

logger = logging.getLogger(__name__)

BACKBONE_REGISTRY = Registry("backbone")
BACKBONE_REGISTRY.__doc__ = """Backbones, by ``MODEL.BACKBONE.NAME``.

A registered object is a callable ``(cfg, num_domains=1) -> nn.Module`` that reads
``cfg.MODEL.BACKBONE.*`` (loading pretrained weights when asked). The module maps images
(N, 3, H, W) to a feature map (N, C, H', W') and has an ``out_channels`` attribute (C).
"""


def norm_from_cfg(cfg, num_domains: int = 1) -> tuple[str, dict]:
    """The backbone normalization (name and keyword arguments) configured in ``cfg``.

    Uses ``reid_pbn.layers.norm_kwargs_from_cfg`` (the one reader of MODEL.BACKBONE.NORM,
    NORM_KWARGS, PBN.* and DSBN.*) and adds the number of domains for domain-specific norms.

    Args:
        cfg: the config.
        num_domains: number of source domains (used by "DSBN").

    Returns:
        ``(norm_name, norm_kwargs)`` for ``build_resnet``.
    """
    name, kwargs = norm_kwargs_from_cfg(cfg)
    kwargs = dict(kwargs)
    if name == "DSBN":
        kwargs.setdefault("num_domains", num_domains)
    return name, kwargs


@BACKBONE_REGISTRY.register("resnet")
def build_resnet_backbone(cfg, num_domains: int = 1) -> nn.Module:
    """Build the ResNet(-IBN) backbone from ``cfg.MODEL.BACKBONE`` and load its weights.

    Reads DEPTH, NORM (and its options through ``norm_from_cfg``), IBN, LAST_STRIDE,
    PBN.STAGES (which stages use PBN when NORM is "PBN"), PRETRAIN and PRETRAIN_PATH.

    Args:
        cfg: the config.
        num_domains: number of source domains (for domain-specific norms).

    Returns:
        The ``ResNet`` backbone.
    """
    bcfg = cfg.MODEL.BACKBONE
    norm, norm_kwargs = norm_from_cfg(cfg, num_domains)
    norm_stages = tuple(bcfg.PBN.STAGES) if norm == "PBN" else None
    ibn = bcfg.IBN or None
    model = build_resnet(
        bcfg.DEPTH,
        norm=norm,
        ibn=ibn,
        last_stride=bcfg.LAST_STRIDE,
        norm_stages=norm_stages,
        **norm_kwargs,
    )
    if bcfg.PRETRAIN_PATH:
        state = read_state_dict(bcfg.PRETRAIN_PATH)
        load_pretrained_weights(model, state, source=bcfg.PRETRAIN_PATH)
    elif bcfg.PRETRAIN:
        state = fetch_imagenet_state_dict(bcfg.DEPTH, ibn)
        load_pretrained_weights(model, state, source=f"ImageNet ResNet-{bcfg.DEPTH} {ibn or ''}")
    return model


def build_backbone(cfg, num_domains: int = 1) -> nn.Module:
    """Build the backbone named by ``cfg.MODEL.BACKBONE.NAME``.

    Args:
        cfg: the config.
        num_domains: number of source domains (for domain-specific norms).

    Returns:
        The backbone module (with ``out_channels``).
    """
    return BACKBONE_REGISTRY.get(cfg.MODEL.BACKBONE.NAME)(cfg, num_domains=num_domains)
