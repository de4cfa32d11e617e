"""The normalization factory: one name (or callable) -> one normalization module.

Registered normalizations take ``(num_channels, **kwargs)`` and return an ``nn.Module``
that maps (N, C, H, W) to the same shape.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

NORM_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "BN": nn.BatchNorm2d,
}


def register_norm(name: str) -> Callable:
    """Decorator that registers a normalization class or factory under ``name``."""

    def deco(fn: Callable) -> Callable:
        NORM_REGISTRY[name] = fn
        return fn

    return deco


def get_norm(spec: str | Callable[..., nn.Module], num_channels: int, **kwargs) -> nn.Module:
    """Build a normalization layer.

    Args:
        spec: a registered name (see ``NORM_REGISTRY``) or a callable
            ``(num_channels, **kwargs) -> nn.Module``.
        num_channels: number of channels to normalize.
        **kwargs: passed to the normalization's constructor.

    Returns:
        The normalization module.
    """
    if callable(spec):
        return spec(num_channels, **kwargs)
    if spec not in NORM_REGISTRY:
        raise KeyError(f"Unknown norm '{spec}'. Available: {sorted(NORM_REGISTRY)}")
    return NORM_REGISTRY[spec](num_channels, **kwargs)
