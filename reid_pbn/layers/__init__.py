"""Normalization layers, the norm factory, and the feature-statistics mixers.

``get_norm(name, C, **kwargs)`` builds any registered normalization (``NORM_REGISTRY``:
"BN", "SyncBN", "FrozenBN", "GN", "IN", "StochNorm", "PBN", "BGN", "IEBN", "DSBN");
``convert_norm(model, name)`` swaps every ``nn.BatchNorm2d`` of a model for one of them.
``MixStyle`` / ``EFDMix`` (``MIX_LAYERS``) mix feature statistics between samples in training.
"""

from .batch_norms import BatchGroupNorm2d, FrozenBatchNorm2d, IEBN2d
from .bne import domain_weights, instance_statistics, wasserstein2_diag
from .dsbn import DSBN2d, set_domains
from .ibn import IBN
from .mixstyle import (
    MIX_LAYERS,
    EFDMix,
    MixDraw,
    MixStyle,
    apply_efdmix,
    apply_mixstyle,
    build_mix_layer,
    sample_beta,
    set_mix_domains,
)
from .norm import NORM_REGISTRY, convert_norm, get_norm, register_norm
from .pbn import PatchBatchNorm2d, Split, StochNorm2d
from .pbn_reference import pbn_reference_forward

__all__ = [
    "DSBN2d",
    "EFDMix",
    "IBN",
    "IEBN2d",
    "MIX_LAYERS",
    "NORM_REGISTRY",
    "BatchGroupNorm2d",
    "FrozenBatchNorm2d",
    "MixDraw",
    "MixStyle",
    "PatchBatchNorm2d",
    "Split",
    "StochNorm2d",
    "build_mix_layer",
    "convert_norm",
    "domain_weights",
    "apply_efdmix",
    "get_norm",
    "instance_statistics",
    "apply_mixstyle",
    "pbn_reference_forward",
    "register_norm",
    "sample_beta",
    "set_domains",
    "set_mix_domains",
    "wasserstein2_diag",
]
