"""The one loader of pretrained backbone weights.

Every place that reads a checkpoint file for a backbone goes through ``read_state_dict`` (which
only unpickles tensors: ``torch.load(..., weights_only=True)``) and ``load_pretrained_weights``
(which maps torchvision / IBN-Net layouts onto the model, including domain-specific norms, and
reports what did not match).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

# The project's one safe file reader (weights_only=True, clear errors, nothing executed).
from ...utils.file_io import load_checkpoint_file

__all__ = [
    "IBN_NET_URLS",
    "LoadReport",
    "fetch_imagenet_state_dict",
    "imagenet_weights_url",
    "load_pretrained_weights",
    "read_state_dict",
]

logger = logging.getLogger(__name__)

#: IBN-Net's ImageNet checkpoints (GitHub release v1.0 of XingangPan/IBN-Net).
IBN_NET_URLS = {
    (18, "a"): "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/resnet18_ibn_a-2f571257.pth",
    (34, "a"): "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/resnet34_ibn_a-94bc1577.pth",
    (50, "a"): "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/resnet50_ibn_a-d9d0bb7b.pth",
    (101, "a"): "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/resnet101_ibn_a-59ea0ac6.pth",
    (18, "b"): "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/resnet18_ibn_b-bc2f3c11.pth",
    (34, "b"): "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/resnet34_ibn_b-04134c37.pth",
    (50, "b"): "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/resnet50_ibn_b-9ca61e85.pth",
    (101, "b"): "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/resnet101_ibn_b-c55f6dba.pth",
}  # fmt: skip

# Wrappers used by training frameworks around the actual state_dict, tried in this order.
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")
# Keys of ImageNet classifiers (torchvision's "fc", torchreid's "classifier"): dropped unless the
# model has such keys itself (torchreid's OSNet keeps its 512-d "fc" embedding in the backbone).
_CLASSIFIER_PREFIXES = ("fc.", "classifier.")
# Domain-specific norms keep one inner norm per domain under "<layer>.bns.<d>.".
_DOMAIN_PART = re.compile(r"(^|\.)bns\.\d+\.")


@dataclass
class LoadReport:
    """What ``load_pretrained_weights`` did.

    Attributes:
        source: where the weights came from (a path or URL).
        loaded: model keys that received a value.
        missing: model keys left at their initialization.
        unexpected: checkpoint keys with no place in the model.
        dropped: checkpoint keys discarded on purpose (an ImageNet classifier, ``fc.*`` or
            ``classifier.*``, that the model does not have).
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A multi-line human-readable report."""
        lines = [
            f"Loaded pretrained weights from {self.source}: {len(self.loaded)} tensors loaded, "
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.dropped)} dropped (classifier)."
        ]
        if self.missing:
            lines.append("Missing in the checkpoint (left at initialization):")
            lines.extend(f"  {k}" for k in _compact(self.missing))
        if self.unexpected:
            lines.append("Unexpected in the checkpoint (ignored):")
            lines.extend(f"  {k}" for k in _compact(self.unexpected))
        return "\n".join(lines)


def _compact(keys: list[str], limit: int = 40) -> list[str]:
    if len(keys) <= limit:
        return keys
    return keys[:limit] + [f"... and {len(keys) - limit} more"]


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state_dict from a checkpoint file, safely.

    Accepts a raw state_dict or one wrapped as ``{"state_dict": ...}`` / ``{"model": ...}``
    (also ``model_state_dict``, ``net``), and strips DataParallel/DDP ``module.`` prefixes.
    Only tensors and plain containers are unpickled (``weights_only=True``): a file that
    would run code when loaded is refused.

    Args:
        path: the checkpoint file.

    Returns:
        A flat dict from parameter names to tensors (on the CPU).

    Raises:
        reid_pbn.utils.file_io.CheckpointError: when the file is missing, damaged or would run code.
        RuntimeError: when the file holds no state_dict.
    """
    path = os.fspath(path)
    obj = load_checkpoint_file(path)
    return _extract_state_dict(obj, source=path)


def _extract_state_dict(obj: object, source: str) -> dict[str, torch.Tensor]:
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise RuntimeError(f"{source} does not hold a state_dict (got {type(obj).__name__})")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise RuntimeError(
            f"{source} holds no tensors at the top level or under any of {_WRAPPER_KEYS}; "
            f"its keys are {sorted(map(str, obj))[:10]}"
        )
    return _strip_prefix(state, "module.")


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _find_source(key: str, state: Mapping[str, torch.Tensor]) -> str | None:
    """Map a model key to a checkpoint key.

    The key itself when present; else, for a domain-specific norm (``bn1.bns.2.running_mean``),
    the same key without the domain part (``bn1.running_mean``): every domain starts from the
    ImageNet statistics and affine parameters.
    """
    if key in state:
        return key
    generic = _DOMAIN_PART.sub(r"\1", key)
    if generic != key and generic in state:
        return generic
    return None


def load_pretrained_weights(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str = "state_dict",
    *,
    strict: bool = False,
) -> LoadReport:
    """Copy pretrained weights into ``model`` and log what matched.

    ``module.`` prefixes are stripped; a full re-ID checkpoint (``backbone.*`` keys) gives its
    backbone part; ``fc.*`` and ``classifier.*`` are dropped unless the model has keys with that
    prefix; keys of domain-specific norms (``.bns.<d>.``) take the value of the corresponding
    plain key, so an ImageNet BN initializes every domain. By default missing and unexpected
    keys are reported, not fatal.

    Args:
        model: the module to fill (a backbone).
        state_dict: parameter names to tensors (e.g. from ``read_state_dict``).
        source: a description of where the weights came from, for the report.
        strict: raise instead of loading when a model key is missing from the checkpoint or a
            checkpoint key (classifier aside) has no place in the model.

    Returns:
        The ``LoadReport`` (also logged at INFO level, missing/unexpected at WARNING level).

    Raises:
        ValueError: when a checkpoint tensor's shape differs from the model's (the message
            names the key and both shapes), or, with ``strict``, when keys do not match.
    """
    own = model.state_dict()
    state = _strip_prefix(dict(state_dict), "module.")
    if not any(k in own for k in state) and any(k.startswith("backbone.") for k in state):
        # A full re-ID model checkpoint: take its backbone part.
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    drop = tuple(p for p in _CLASSIFIER_PREFIXES if not any(k.startswith(p) for k in own))
    dropped = sorted(k for k in state if k.startswith(drop))
    state = {k: v for k, v in state.items() if not k.startswith(drop)}

    mapped: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for key, target in own.items():
        src = _find_source(key, state)
        if src is None:
            continue
        value = state[src]
        if value.shape != target.shape:
            raise ValueError(
                f"Shape mismatch for '{key}' (checkpoint key '{src}' in {source}): "
                f"checkpoint {tuple(value.shape)} vs model {tuple(target.shape)}. "
                "Check MODEL.BACKBONE.DEPTH / IBN against the checkpoint."
            )
        mapped[key] = value
        used.add(src)

    # BN's loader fills num_batches_tracked for old checkpoints without it: not "missing".
    missing = sorted(k for k in own if k not in mapped and not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - used)
    if strict and (missing or unexpected):
        partial = LoadReport(source, [], missing, unexpected, dropped)
        raise ValueError(
            f"{source} does not match the model's key layout (strict loading):\n"
            + "\n".join(partial.summary().splitlines()[1:])
        )
    model.load_state_dict(mapped, strict=False)
    report = LoadReport(
        source=source, loaded=sorted(mapped), missing=missing, unexpected=unexpected,
        dropped=dropped,
    )
    if report.missing or report.unexpected:
        logger.warning(report.summary())
    else:
        logger.info(report.summary())
    return report


def imagenet_weights_url(depth: int, ibn: str | None = None) -> str:
    """URL of the ImageNet checkpoint for a ResNet depth and IBN variant.

    Plain ResNets use torchvision's weights API (``ResNet50_Weights.IMAGENET1K_V1`` etc.);
    IBN variants use IBN-Net's GitHub release.

    Args:
        depth: 18, 34, 50 or 101.
        ibn: None (or ""), "a" or "b".

    Returns:
        The download URL.
    """
    if ibn:
        key = (depth, ibn.lower())
        if key not in IBN_NET_URLS:
            raise ValueError(f"No IBN-Net ImageNet weights for ResNet-{depth}-IBN-{ibn}")
        return IBN_NET_URLS[key]
    import torchvision.models as tvm

    weights_enum = getattr(tvm, f"ResNet{depth}_Weights", None)
    if weights_enum is None:
        raise ValueError(f"torchvision has no ImageNet weights for ResNet-{depth}")
    return weights_enum.IMAGENET1K_V1.url


def fetch_imagenet_state_dict(depth: int, ibn: str | None = None) -> dict[str, torch.Tensor]:
    """Download (or read from the torch hub cache) ImageNet weights for a ResNet(-IBN).

    Args:
        depth: 18, 34, 50 or 101.
        ibn: None (or ""), "a" or "b".

    Returns:
        The checkpoint's state_dict.

    Raises:
        RuntimeError: when the file cannot be fetched (e.g. no internet); the message names
            the URL to download and the ``MODEL.BACKBONE.PRETRAIN_PATH`` key to set.
    """
    url = imagenet_weights_url(depth, ibn)
    try:
        obj = torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=True, check_hash=True, weights_only=True
        )
    except Exception as e:  # network, hash and unpickling errors all need the same advice
        filename = os.path.basename(url)
        cache = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
        raise RuntimeError(
            f"Could not fetch pretrained weights from {url} ({type(e).__name__}: {e}).\n"
            f"Download {filename} on a machine with internet access, then either set "
            f"MODEL.BACKBONE.PRETRAIN_PATH to the file's path (e.g. on the command line: "
            f"MODEL.BACKBONE.PRETRAIN_PATH /path/to/{filename}) or copy it to {cache}."
        ) from e
    return _extract_state_dict(obj, source=url)
