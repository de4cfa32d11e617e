"""Normalization layers and the norm factory.

``get_norm(name, C, **kwargs)`` builds any registered normalization (``NORM_REGISTRY``:
"BN", "SyncBN", "FrozenBN", "GN", "IN", "StochNorm", "PBN", "BGN", "IEBN", "DSBN");
``convert_norm(model, name)`` swaps every ``nn.BatchNorm2d`` of a model for one of them.
"""

from .batch_norms import BatchGroupNorm2d, FrozenBatchNorm2d, IEBN2d
from .bne import domain_weights, instance_statistics, wasserstein2_diag
from .dsbn import DSBN2d, set_domains
from .ibn import IBN
from .norm import NORM_REGISTRY, convert_norm, get_norm, norm_kwargs_from_cfg, register_norm
from .pbn import PatchBatchNorm2d, Split, StochNorm2d

__all__ = [
    "DSBN2d",
    "IBN",
    "IEBN2d",
    "NORM_REGISTRY",
    "BatchGroupNorm2d",
    "FrozenBatchNorm2d",
    "PatchBatchNorm2d",
    "Split",
    "StochNorm2d",
    "convert_norm",
    "domain_weights",
    "get_norm",
    "instance_statistics",
    "norm_kwargs_from_cfg",
    "register_norm",
    "set_domains",
    "wasserstein2_diag",
]
