"""Backbone registry and the config readers of the ResNet and OSNet backbones."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from ...config import ConfigError, parse_kwargs
from ...layers import build_mix_layer, get_norm
from ...utils.registry import Registry
from .osnet import OSNET_ARCHS, OSNET_STAGES, build_osnet
from .pretrained import (
    _DOMAIN_PART,
    fetch_imagenet_state_dict,
    load_pretrained_weights,
    read_state_dict,
)
from .resnet import STAGES, build_resnet

__all__ = [
    "BACKBONE_REGISTRY",
    "build_backbone",
    "build_osnet_backbone",
    "build_resnet_backbone",
    "mixers_from_cfg",
    "norm_from_cfg",
    "norm_stages_from_cfg",
]

logger = logging.getLogger(__name__)

BACKBONE_REGISTRY = Registry("backbone")
BACKBONE_REGISTRY.__doc__ = """Backbones, by ``MODEL.BACKBONE.NAME``.

A registered object is a callable ``(cfg, num_domains=1) -> nn.Module`` that reads
``cfg.MODEL.BACKBONE.*`` (loading pretrained weights when asked). The module maps images
(N, 3, H, W) to a feature map (N, C, H', W') and has an ``out_channels`` attribute (C).
"""


def norm_from_cfg(cfg, num_domains: int = 1) -> tuple[str, dict[str, Any]]:
    """Read the backbone normalization from a config: the one place where it is read.

    ``MODEL.BACKBONE.PBN.*`` is used when the norm is ``"PBN"`` (or ``"DSBN"`` with PBN inside),
    ``MODEL.BACKBONE.DSBN.*`` when it is ``"DSBN"``; ``MODEL.BACKBONE.NORM_KWARGS`` entries
    (``"key=value"`` strings) are applied last and override both. The layers themselves take
    explicit keyword arguments only. ``PBN.STAGES`` is read by :func:`norm_stages_from_cfg`.

    Args:
        cfg: a config from ``reid_pbn.config.get_cfg()``.
        num_domains: number of source domains, passed to ``"DSBN"`` (it comes from the
            training data, not from the config).

    Returns:
        ``(name, kwargs)`` to pass on as ``get_norm(name, C, **kwargs)``.
    """
    bb = cfg.MODEL.BACKBONE
    name = bb.NORM
    kwargs: dict[str, Any] = {}
    pbn = bb.PBN
    pbn_kwargs = {
        "mix": pbn.MIX,
        "p": float(pbn.P),
        "lam": float(pbn.LAM),
        "modes": tuple(int(m) for m in pbn.MODES),
        "num_modes": int(pbn.NUM_MODES),
        "cut_range": tuple(float(c) for c in pbn.CUT_RANGE),
        "min_size": int(pbn.MIN_SIZE),
    }
    if pbn.SYNC:  # only when set: the default kwargs stay as they were
        pbn_kwargs["sync"] = True
    if name == "PBN":
        kwargs.update(pbn_kwargs)
    elif name == "DSBN":
        kwargs["inner"] = bb.DSBN.INNER
        kwargs["per_domain_affine"] = bool(bb.DSBN.PER_DOMAIN_AFFINE)
        kwargs["num_domains"] = num_domains
        if bb.DSBN.INNER == "PBN":
            kwargs.update(pbn_kwargs)
    kwargs.update(parse_kwargs(bb.NORM_KWARGS))
    return name, kwargs


def norm_stages_from_cfg(cfg) -> tuple[str, ...] | None:
    """The stages whose norms are the configured norm (``PBN.STAGES``); the others stay BN.

    ``PBN.STAGES`` applies to ``NORM "PBN"``. With ``NORM "DSBN"`` every stage must keep its
    domain-specific statistics, so a stage left out could only become plain BN and lose them:
    a DSBN whose inner norm is PBN therefore requires PBN in every stage.

    Args:
        cfg: the config.

    Returns:
        The stage names for ``NORM "PBN"``; ``None`` (every stage) for the other norms.

    Raises:
        ConfigError: ``NORM "DSBN"`` with ``DSBN.INNER "PBN"`` and ``PBN.STAGES`` not naming
            every stage.
    """
    bb = cfg.MODEL.BACKBONE
    stages = tuple(bb.PBN.STAGES)
    if bb.NORM == "PBN":
        return stages
    if bb.NORM == "DSBN" and bb.DSBN.INNER == "PBN" and set(stages) not in (
        set(STAGES), set(OSNET_STAGES)
    ):
        raise ConfigError(
            f"MODEL.BACKBONE.PBN.STAGES {list(stages)} cannot be honoured with NORM DSBN and "
            "DSBN.INNER PBN: every stage keeps domain-specific statistics, so PBN is used in "
            f"all of them. Set PBN.STAGES to {list(STAGES)} (or use NORM PBN)."
        )
    return None


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
    norm_stages = norm_stages_from_cfg(cfg)
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
    norm_stages = norm_stages_from_cfg(cfg)
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
