"""The re-ID model: ResNet(-IBN) and OSNet backbones, the BNNeck head, losses and the Baseline."""

from ..utils.registry import Registry
from .backbones import (
    BACKBONE_REGISTRY,
    OSNet,
    ResNet,
    build_backbone,
    build_osnet,
    build_resnet,
    load_pretrained_weights,
    read_state_dict,
)
from .bne import BatchNormEmbedding
from .build import build_model
from .heads import HEAD_REGISTRY, EmbeddingHead, build_head
from .losses import LOSS_REGISTRY, build_losses
from .meta_arch import META_ARCH_REGISTRY, Baseline

__all__ = [
    "BACKBONE_REGISTRY",
    "HEAD_REGISTRY",
    "LOSS_REGISTRY",
    "META_ARCH_REGISTRY",
    "BatchNormEmbedding",
    "Baseline",
    "EmbeddingHead",
    "OSNet",
    "Registry",
    "ResNet",
    "build_backbone",
    "build_head",
    "build_losses",
    "build_model",
    "build_osnet",
    "build_resnet",
    "load_pretrained_weights",
    "read_state_dict",
]
