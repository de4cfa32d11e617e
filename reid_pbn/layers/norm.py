"""The normalization factory: one name (or callable) -> one normalization module.

A registered normalization is a class or factory called as ``fn(num_channels, **kwargs)`` that
returns an ``nn.Module`` mapping (N, C, H, W) to the same shape. Batch-style norms should accept
``eps`` and ``momentum`` keywords (``convert_norm`` passes them when the signature has them) and
keep ``nn.BatchNorm2d``'s parameter and buffer names where they have the same meaning, so that
BN weights load into them. A module that needs a custom way of taking over a BN layer's state
(for example one set of running statistics per domain) defines ``load_bn_state(bn)``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from torch import nn

from ..utils.registry import Registry

logger = logging.getLogger(__name__)

#: Normalizations by ``MODEL.BACKBONE.NORM`` name (what a registered one provides: see the
#: module docstring).
NORM_REGISTRY = Registry(
    "norm",
    doc="Normalizations: ``fn(num_channels, **kwargs) -> nn.Module`` on (N, C, H, W).",
    items={"BN": nn.BatchNorm2d, "SyncBN": nn.SyncBatchNorm},
)


def register_norm(name: str) -> Callable:
    """Decorator that registers a normalization class or factory under ``name``.

    Args:
        name: the registry key, used as ``get_norm(name, C)`` and in ``MODEL.BACKBONE.NORM``.

    Returns:
        The decorator, which returns the decorated object unchanged.

    Raises:
        DuplicateNameError: another object is registered under ``name``.
    """
    return NORM_REGISTRY.register(name)


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
    return NORM_REGISTRY.get(spec)(num_channels, **kwargs)


@register_norm("GN")
def group_norm(
    num_channels: int, num_groups: int = 32, eps: float = 1e-5, affine: bool = True
) -> nn.GroupNorm:
    """GroupNorm whose group count always divides the channel count.

    Args:
        num_channels: number of channels.
        num_groups: wanted number of groups; when it does not divide ``num_channels`` the
            largest divisor of ``num_channels`` below it is used instead.
        eps: added to the variance.
        affine: learn a per-channel scale and shift.

    Returns:
        The ``nn.GroupNorm`` module.
    """
    groups = max(d for d in range(1, min(num_groups, num_channels) + 1) if num_channels % d == 0)
    if groups != num_groups:
        logger.info("GN: %d groups do not divide %d channels; using %d groups",
                    num_groups, num_channels, groups)
    return nn.GroupNorm(groups, num_channels, eps=eps, affine=affine)


@register_norm("IN")
def instance_norm(
    num_channels: int,
    eps: float = 1e-5,
    momentum: float | None = 0.1,
    affine: bool = True,
    track_running_stats: bool = False,
) -> nn.InstanceNorm2d:
    """Affine InstanceNorm (statistics per sample and channel).

    Args:
        num_channels: number of channels.
        eps: added to the variance.
        momentum: running-statistics momentum (used only with ``track_running_stats``).
        affine: learn a per-channel scale and shift (IBN-Net uses ``True``).
        track_running_stats: keep running statistics for evaluation.

    Returns:
        The ``nn.InstanceNorm2d`` module.
    """
    return nn.InstanceNorm2d(num_channels, eps=eps, momentum=momentum, affine=affine,
                             track_running_stats=track_running_stats)


def _accepted(fn: Callable, name: str) -> bool:
    """Whether ``fn`` (a class or function) accepts keyword ``name``."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _copy_bn_state(bn: nn.BatchNorm2d, new: nn.Module) -> None:
    """Copy ``bn``'s parameters and running statistics into ``new``.

    Key sets that agree are loaded with ``strict=True``; otherwise every key present in both
    with the same shape is copied and the rest keep their initial values.
    """
    loader = getattr(new, "load_bn_state", None)
    if callable(loader):
        loader(bn)
        return
    src, dst = bn.state_dict(), new.state_dict()
    if set(src) == set(dst) and all(src[k].shape == dst[k].shape for k in src):
        new.load_state_dict(src, strict=True)
        return
    shared = {k: v for k, v in src.items() if k in dst and dst[k].shape == v.shape}
    new.load_state_dict(shared, strict=False)
    skipped = sorted(set(src) - set(shared))
    if skipped:
        logger.debug("convert_norm: %s keeps its own %s", type(new).__name__, skipped)


def convert_norm(module: nn.Module, spec: str | Callable[..., nn.Module], **kwargs) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``module`` by the normalization ``spec``.

    Only layers whose type is exactly ``nn.BatchNorm2d`` are replaced (subclasses such as
    ``PatchBatchNorm2d`` are left alone), at any depth, e.g. inside torchvision models. Each new
    layer gets the old one's ``eps``/``momentum`` (when its constructor accepts them), its
    weight, bias, running statistics and ``num_batches_tracked``, its device, dtype,
    ``requires_grad`` flags and train/eval mode, as ``nn.SyncBatchNorm.convert_sync_batchnorm``
    does.

    Args:
        module: the module to convert (changed in place, and returned).
        spec: a ``get_norm`` spec (registered name or callable).
        **kwargs: extra constructor arguments for the new layers (e.g. PBN options).

    Returns:
        ``module`` itself, or the new layer when ``module`` is itself an ``nn.BatchNorm2d``.
    """
    if type(module) is nn.BatchNorm2d:
        return _replace_bn(module, spec, kwargs)
    for name, child in module.named_children():
        new_child = convert_norm(child, spec, **kwargs)
        if new_child is not child:
            setattr(module, name, new_child)
    return module


def _replace_bn(bn: nn.BatchNorm2d, spec, kwargs: dict[str, Any]) -> nn.Module:
    fn = spec if callable(spec) else NORM_REGISTRY.get(spec)
    kw = dict(kwargs)
    inherited = {"eps": bn.eps, "momentum": bn.momentum}
    if not bn.affine:
        inherited["affine"] = False
    elif bn.bias is None:
        inherited["bias"] = False
    if not bn.track_running_stats:
        inherited["track_running_stats"] = False
    for key, value in inherited.items():
        if key not in kw and _accepted(fn, key):
            kw[key] = value
    new = get_norm(spec, bn.num_features, **kw)
    ref = next(iter(bn.parameters()), None)
    if ref is None:
        ref = next(iter(bn.buffers()), None)
    if ref is not None:
        new.to(device=ref.device, dtype=ref.dtype if ref.is_floating_point() else None)
    _copy_bn_state(bn, new)
    for name in ("weight", "bias"):
        param, old = getattr(new, name, None), getattr(bn, name)
        if isinstance(param, nn.Parameter) and old is not None:
            param.requires_grad_(old.requires_grad)
    new.train(bn.training)
    return new
