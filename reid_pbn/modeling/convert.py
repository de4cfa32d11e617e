"""Import models trained in torchreid or fast-reid: map their state_dicts onto this toolkit's.

Known layouts (anything else is refused, naming the keys that do not fit):

* **torchreid** (KaiyangZhou/deep-person-reid), ``engine`` checkpoints ``{"state_dict": ...}``:
  - OSNet (``osnet_*``, ``osnet_ibn_x1_0``, ``osnet_ain_x1_0``): every key but
    ``classifier.*`` is the backbone's (``fc.*`` included, see ``backbones/osnet.py``);
    ``classifier.weight`` is the head's classifier. Config: ``NAME`` the same architecture,
    ``OSNET.FEATURE_DIM 512``, ``HEADS.NECK none``, ``HEADS.EMBEDDING_DIM 0``.
  - ResNet-50 (``resnet50``, ``resnet50_fc512``): ``conv1``/``bn1``/``layer*`` are the
    backbone's (torchvision layout); ``fc.0`` (Linear with bias) and ``fc.1`` (BatchNorm1d) of
    ``resnet50_fc512`` become the head's embedding (``HEADS.EMBEDDING_DIM 512``; the Linear
    bias is folded into the BatchNorm's running mean, exact in eval mode);
    ``classifier.weight`` is the classifier. Config: ``HEADS.NECK none``, ``LAST_STRIDE`` 2 for
    ``resnet50``, 1 for ``resnet50_fc512``.
* **fast-reid** (JDAI-CV/fast-reid), checkpoints ``{"model": ...}``: the BoT / SBS
  ``Baseline`` with a ResNet(-IBN) backbone: ``backbone.*`` keeps its names (torchvision /
  IBN-Net layout, as here), the BNNeck ``heads.bottleneck.0.*`` becomes ``heads.neck.*``,
  ``heads.weight`` (or older ``heads.classifier.weight``) the classifier, GeM's
  ``heads.pool_layer.p`` ``heads.pool.p``. ``pixel_mean``/``pixel_std`` (0-255 scale, inside
  fast-reid's model) must equal 255 x ``INPUT.PIXEL_MEAN``/``PIXEL_STD``, which this toolkit
  applies in its data pipeline. SBS's non-local blocks (``NL_*``) have no counterpart here and
  are refused.

The classifier's bias (torchreid) has no place in this toolkit's bias-free classifier and is
dropped: it changes logits only, never features.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .backbones import read_state_dict
from .build import build_model

__all__ = [
    "PEER_LAYOUTS",
    "ConversionResult",
    "UnknownLayoutError",
    "classifier_rows",
    "convert_checkpoint",
    "convert_peer_state_dict",
]

#: Toolkits whose checkpoints ``convert_peer_state_dict`` reads.
PEER_LAYOUTS = ("torchreid", "fastreid")

_BACKBONE_RESNET = re.compile(r"^(conv1|bn1|layer[1-4])\.")
_CLASSIFIER_TARGET = "heads.classifier.weight"


class UnknownLayoutError(ValueError):
    """A checkpoint whose keys do not follow a known layout for the configured model."""


@dataclass
class ConversionResult:
    """What ``convert_peer_state_dict`` produced.

    Attributes:
        state_dict: the model's state_dict, every key filled from the checkpoint.
        num_classes: rows of the checkpoint's classifier (0 when it has none).
        notes: human-readable remarks (dropped keys, folded biases).
    """

    state_dict: dict[str, torch.Tensor]
    num_classes: int
    notes: list[str] = field(default_factory=list)


def classifier_rows(state: Mapping[str, torch.Tensor], source: str) -> int:
    """Number of identities of a peer checkpoint's classifier (0 when it has none).

    Args:
        state: the peer's state_dict.
        source: "torchreid" or "fastreid".

    Returns:
        The classifier's output size.
    """
    keys = {"torchreid": ("classifier.weight",),
            "fastreid": ("heads.weight", "heads.classifier.weight")}[_check_source(source)]
    for key in keys:
        if key in state:
            return int(state[key].shape[0])
    return 0


def convert_checkpoint(cfg, source: str, path: str) -> tuple[nn.Module, ConversionResult]:
    """Read a torchreid / fast-reid checkpoint file and convert it for the model of ``cfg``.

    The file is read with ``weights_only`` loading (``read_state_dict``): a file holding
    pickled Python objects is refused with a clear error, never unpickled. The model is built
    without pretrained weights, with as many classes as the checkpoint's classifier.

    Args:
        cfg: config describing the same architecture as the checkpoint.
        source: "torchreid" or "fastreid".
        path: the checkpoint file.

    Returns:
        ``(model, result)``: the model (eval mode, converted weights loaded strictly) and the
        ``ConversionResult`` (``result.state_dict`` is what to save).

    Raises:
        reid_pbn.engine.CheckpointError: the file is missing, damaged or holds pickled objects.
        UnknownLayoutError: the checkpoint does not fit a known layout for this model.
    """
    state = read_state_dict(path)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.MODEL.BACKBONE.PRETRAIN_PATH = ""
    model = build_model(cfg, num_classes=classifier_rows(state, _check_source(source)))
    result = convert_peer_state_dict(state, source, model, pixel_mean=cfg.INPUT.PIXEL_MEAN,
                                     pixel_std=cfg.INPUT.PIXEL_STD)
    model.load_state_dict(result.state_dict, strict=True)
    return model.eval(), result


def convert_peer_state_dict(
    state: Mapping[str, torch.Tensor],
    source: str,
    model: nn.Module,
    *,
    pixel_mean: Sequence[float] | None = None,
    pixel_std: Sequence[float] | None = None,
) -> ConversionResult:
    """Map a torchreid or fast-reid state_dict onto ``model`` (built from a matching config).

    Args:
        state: the peer's model state_dict (wrappers and ``module.`` prefixes removed, e.g. by
            ``reid_pbn.modeling.read_state_dict``).
        source: "torchreid" or "fastreid".
        model: this toolkit's model (``build_model``), whose key set must be filled exactly.
        pixel_mean: the config's ``INPUT.PIXEL_MEAN`` (0-1 scale), checked against fast-reid's
            ``pixel_mean`` buffer.
        pixel_std: the config's ``INPUT.PIXEL_STD``, likewise.

    Returns:
        The ``ConversionResult``; ``model.load_state_dict(result.state_dict, strict=True)``
        then gives the peer's features.

    Raises:
        UnknownLayoutError: keys of the checkpoint that the layout does not know, model keys it
            does not fill, shapes that differ, or a fast-reid normalization that differs from
            the config's; the message names them and what to check.
    """
    source = _check_source(source)
    own = model.state_dict()
    notes: list[str] = []
    if source == "torchreid":
        mapped, unknown = _from_torchreid(dict(state), own, notes)
    else:
        mapped, unknown = _from_fastreid(dict(state), notes, pixel_mean, pixel_std)
    _check_complete(mapped, unknown, own, source)
    return ConversionResult(mapped, classifier_rows(state, source), notes)


def _check_source(source: str) -> str:
    if source not in PEER_LAYOUTS:
        raise UnknownLayoutError(f"Unknown checkpoint source '{source}'; known: {PEER_LAYOUTS}")
    return source


def _from_torchreid(state: dict, own: Mapping, notes: list[str]) -> tuple[dict, list[str]]:
    osnet = "backbone.conv1.conv.weight" in own
    mapped: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if key == "classifier.weight":
            mapped[_CLASSIFIER_TARGET] = value
        elif key == "classifier.bias":
            notes.append("dropped classifier.bias (logits only; features are unaffected)")
        elif osnet or _BACKBONE_RESNET.match(key):
            mapped[f"backbone.{key}"] = value
        elif key.startswith(("fc.0.", "fc.1.")):
            mapped[f"heads.embedding.{key[3:]}"] = value
        else:
            unknown.append(key)
    bias = mapped.pop("heads.embedding.0.bias", None)
    if bias is not None and "heads.embedding.1.running_mean" in mapped:
        # BN(Wx + b) in eval mode = BN'(Wx) with running_mean' = running_mean - b.
        mapped["heads.embedding.1.running_mean"] = mapped["heads.embedding.1.running_mean"] - bias
        notes.append("folded fc.0.bias into the embedding BatchNorm's running_mean")
    return mapped, unknown


def _from_fastreid(state: dict, notes: list[str], pixel_mean, pixel_std
                   ) -> tuple[dict, list[str]]:
    mapped: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if key in ("pixel_mean", "pixel_std"):
            wanted = pixel_mean if key == "pixel_mean" else pixel_std
            _check_normalization(key, value, wanted)
        elif key.startswith("backbone."):
            mapped[key] = value
        elif key.startswith("heads.bottleneck.0."):
            mapped[f"heads.neck.{key[len('heads.bottleneck.0.'):]}"] = value
        elif key in ("heads.weight", "heads.classifier.weight"):
            mapped[_CLASSIFIER_TARGET] = value
        elif key == "heads.pool_layer.p":
            mapped["heads.pool.p"] = value.reshape(())
        else:
            unknown.append(key)
    return mapped, unknown


def _check_normalization(key: str, value: torch.Tensor, wanted: Sequence[float] | None) -> None:
    got = [float(v) / 255.0 for v in value.flatten()]
    if wanted is None:
        return
    if len(got) != len(wanted) or any(not math.isclose(a, float(b), abs_tol=1e-6)
                                      for a, b in zip(got, wanted)):
        cfg_key = "INPUT.PIXEL_MEAN" if key == "pixel_mean" else "INPUT.PIXEL_STD"
        raise UnknownLayoutError(
            f"fast-reid's {key} {[round(v * 255, 4) for v in got]} (0-255) differs from the "
            f"config's {cfg_key} {list(wanted)} (0-1): set {cfg_key} "
            f"{tuple(round(v, 6) for v in got)} so the data pipeline normalizes as fast-reid's "
            "model did."
        )


def _check_complete(mapped: dict, unknown: list[str], own: Mapping, source: str) -> None:
    # num_batches_tracked is bookkeeping: take the model's own where the file has none.
    for key, value in own.items():
        if key.endswith("num_batches_tracked") and key not in mapped:
            mapped[key] = value.clone()
    extra = sorted(set(mapped) - set(own))
    missing = sorted(set(own) - set(mapped))
    shapes = [f"{k}: file {tuple(mapped[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(mapped) & set(own)) if mapped[k].shape != own[k].shape]
    if unknown or extra or missing or shapes:
        parts = []
        for title, keys in (("keys no known layout maps", unknown),
                            ("checkpoint keys with no place in this model", extra),
                            ("model keys the checkpoint does not fill", missing),
                            ("shapes that differ", shapes)):
            if keys:
                more = f" ... (+{len(keys) - 8})" if len(keys) > 8 else ""
                parts.append(f"  {title}: {', '.join(keys[:8])}{more}")
        raise UnknownLayoutError(
            f"The checkpoint does not fit a known {source} layout for this model:\n"
            + "\n".join(parts)
            + "\nKnown layouts: torchreid OSNet / ResNet-50(-fc512); fast-reid BoT/SBS Baseline "
            "with a ResNet(-IBN) backbone and BNNeck. Check that the config describes the same "
            "architecture (BACKBONE.NAME/DEPTH/IBN, OSNET.FEATURE_DIM, HEADS.NECK, "
            "HEADS.EMBEDDING_DIM, HEADS.POOL)."
        )
