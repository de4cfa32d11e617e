"""Normalization layers and the norm factory."""

from .ibn import IBN
from .norm import NORM_REGISTRY, get_norm, register_norm

__all__ = ["IBN", "NORM_REGISTRY", "get_norm", "register_norm"]
