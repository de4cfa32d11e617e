"""Backbones: ResNet(-IBN) and OSNet with any normalization, and the pretrained-weights loader."""

from .build import (
    BACKBONE_REGISTRY,
    build_backbone,
    build_osnet_backbone,
    build_resnet_backbone,
    mixers_from_cfg,
    norm_from_cfg,
    norm_stages_from_cfg,
)
from .osnet import OSNET_ARCHS, OSNET_STAGES, OSNet, build_osnet
from .pretrained import (
    LoadReport,
    fetch_imagenet_state_dict,
    imagenet_weights_url,
    load_pretrained_weights,
    read_state_dict,
)
from .resnet import STAGES, ResNet, build_resnet

__all__ = [
    "BACKBONE_REGISTRY",
    "OSNET_ARCHS",
    "OSNET_STAGES",
    "STAGES",
    "LoadReport",
    "OSNet",
    "ResNet",
    "build_backbone",
    "build_osnet",
    "build_osnet_backbone",
    "build_resnet",
    "build_resnet_backbone",
    "fetch_imagenet_state_dict",
    "imagenet_weights_url",
    "load_pretrained_weights",
    "mixers_from_cfg",
    "norm_from_cfg",
    "norm_stages_from_cfg",
    "read_state_dict",
]
