"""Backbones: ResNet(-IBN) with any normalization, and the pretrained-weights loader."""

from .build import BACKBONE_REGISTRY, build_backbone, build_resnet_backbone, norm_from_cfg
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
    "STAGES",
    "LoadReport",
    "ResNet",
    "build_backbone",
    "build_resnet",
    "build_resnet_backbone",
    "fetch_imagenet_state_dict",
    "imagenet_weights_url",
    "load_pretrained_weights",
    "norm_from_cfg",
    "read_state_dict",
]
