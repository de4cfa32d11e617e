"""Backbone registry and the config readers of the ResNet and OSNet backbones."""

from __future__ import annotations

import logging

from torch import nn

from ...layers import build_mix_layer, get_norm, norm_kwargs_from_cfg
from ..registry import Registry
from .osnet import OSNET_ARCHS, build_osnet
from .pretrained import (
    _DOMAIN_PART,
    fetch_imagenet_state_dict,
    load_pretrained_weights,
    read_state_dict,
)
from .resnet import build_resnet

__all__ = [
    "BACKBONE_REGISTRY",
    "build_backbone",
    "build_osnet_backbone",
    "build_resnet_backbone",
    "mixers_from_cfg",
    "norm_from_cfg",
]

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


def mixers_from_cfg(cfg) -> dict[str, nn.Module]:
    """The feature-statistics mixing layers of ``cfg.MODEL.BACKBONE.MIX``, by stage.

    Args:
        cfg: the config.

    Returns:
        ``{stage: layer}`` (one MixStyle / EFDMix per stage in MIX.STAGES), empty when
        MIX.TYPE is "".
    """
    m = cfg.MODEL.BACKBONE.MIX
    if not m.TYPE:
        return {}
    return {
        stage: build_mix_layer(m.TYPE, p=float(m.P), alpha=float(m.ALPHA), mix=m.MODE)
        for stage in m.STAGES
    }


@BACKBONE_REGISTRY.register("resnet")
def build_resnet_backbone(cfg, num_domains: int = 1) -> nn.Module:
    """Build the ResNet(-IBN) backbone from ``cfg.MODEL.BACKBONE`` and load its weights.

    Reads DEPTH, NORM (and its options through ``norm_from_cfg``), IBN, LAST_STRIDE,
    PBN.STAGES (which stages use PBN when NORM is "PBN"), MIX.* (``mixers_from_cfg``), PRETRAIN
    and PRETRAIN_PATH.

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
        mixers=mixers_from_cfg(cfg),
        **norm_kwargs,
    )
    if bcfg.PRETRAIN_PATH:
        state = read_state_dict(bcfg.PRETRAIN_PATH)
        load_pretrained_weights(model, state, source=bcfg.PRETRAIN_PATH)
    elif bcfg.PRETRAIN:
        state = fetch_imagenet_state_dict(bcfg.DEPTH, ibn)
        load_pretrained_weights(model, state, source=f"ImageNet ResNet-{bcfg.DEPTH} {ibn or ''}")
    return model


#: torchreid's ImageNet OSNet checkpoints (its MODEL_ZOO), for the message that asks for a file.
_OSNET_WEIGHTS = {
    "osnet_x1_0": "https://drive.google.com/file/d/1LaG1EJpHrxdAxKnSCJ_i0u-nbxSAeiFY",
    "osnet_x0_75": "https://drive.google.com/file/d/1uwA9fElHOk3ZogwbeY5GkLI6QPTX70Hq",
    "osnet_x0_5": "https://drive.google.com/file/d/16DGLbZukvVYgINws8u8deSaOqjybZ83i",
    "osnet_x0_25": "https://drive.google.com/file/d/1rb8UN5ZzPKRc_xvtHlyDh-cSz88YX9hs",
    "osnet_ibn_x1_0": "https://drive.google.com/file/d/1sr90V6irlYYDd4_4ISU2iruoRG8J__6l",
    "osnet_ain_x1_0": "https://drive.google.com/file/d/1-CaioD9NaqbHK_kzSMW8VE4_3KcsRjEo",
}


def _keeps_bn_keys(norm, norm_kwargs: dict) -> bool:
    """Whether ``norm`` stores what BN stores (PBN, FrozenBN, DSBN, ...), so that a BN
    checkpoint fills it completely; GN or IEBN, say, store other things."""
    probe = {_DOMAIN_PART.sub(r"\1", k) for k in get_norm(norm, 4, **norm_kwargs).state_dict()}
    return probe == set(nn.BatchNorm2d(4).state_dict())


def build_osnet_backbone(cfg, num_domains: int = 1) -> nn.Module:
    """Build the OSNet backbone named by ``cfg.MODEL.BACKBONE.NAME`` and load its weights.

    Reads NAME, NORM (and its options through ``norm_from_cfg``), PBN.STAGES (OSNet stage names
    or ResNet's), OSNET.FEATURE_DIM, MIX.* and PRETRAIN_PATH: a torchreid ImageNet checkpoint,
    loaded strictly (every key of the model filled, every key of the file used, its
    ``classifier.*`` aside) when the norm stores BN's keys; other norms (GN, ...) load what
    matches and log the rest. LAST_STRIDE, DEPTH and IBN do not apply (``osnet_ibn_x1_0`` and
    ``osnet_ain_x1_0`` are OSNet's own InstanceNorm variants).

    Args:
        cfg: the config.
        num_domains: number of source domains (for domain-specific norms).

    Returns:
        The ``OSNet`` backbone.

    Raises:
        RuntimeError: for PRETRAIN without PRETRAIN_PATH (torchreid's weights are on Google
            Drive, which is not downloaded automatically); the message names the file.
    """
    bcfg = cfg.MODEL.BACKBONE
    norm, norm_kwargs = norm_from_cfg(cfg, num_domains)
    norm_stages = tuple(bcfg.PBN.STAGES) if norm == "PBN" else None
    model = build_osnet(
        bcfg.NAME,
        norm=norm,
        norm_stages=norm_stages,
        feature_dim=int(bcfg.OSNET.FEATURE_DIM),
        mixers=mixers_from_cfg(cfg),
        **norm_kwargs,
    )
    if bcfg.PRETRAIN_PATH:
        state = read_state_dict(bcfg.PRETRAIN_PATH)
        load_pretrained_weights(model, state, source=bcfg.PRETRAIN_PATH,
                                strict=_keeps_bn_keys(norm, norm_kwargs))
    elif bcfg.PRETRAIN:
        raise RuntimeError(
            f"{bcfg.NAME}: torchreid's ImageNet weights are not downloaded automatically. "
            f"Download {bcfg.NAME}_imagenet.pth from {_OSNET_WEIGHTS[bcfg.NAME]} and set "
            f"MODEL.BACKBONE.PRETRAIN_PATH to its path (or set MODEL.BACKBONE.PRETRAIN False)."
        )
    return model


for _name in OSNET_ARCHS:
    BACKBONE_REGISTRY.register(_name)(build_osnet_backbone)


def build_backbone(cfg, num_domains: int = 1) -> nn.Module:
    """Build the backbone named by ``cfg.MODEL.BACKBONE.NAME``.

    Args:
        cfg: the config.
        num_domains: number of source domains (for domain-specific norms).

    Returns:
        The backbone module (with ``out_channels``).
    """
    return BACKBONE_REGISTRY.get(cfg.MODEL.BACKBONE.NAME)(cfg, num_domains=num_domains)
