"""Where features come from: the record kept with a saved gallery and an exported model.

Features of two models are not comparable, and neither are features of one model under two
preprocessings. A gallery therefore records the model config, the SHA-256 of the weight file,
the feature dimension, the normalization and the input contract, with the creation time; the
service compares its own model against this record before serving a gallery.
"""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone

import faiss
import torch

from ..utils.file_io import file_sha256
from ..version import __version__

__all__ = ["file_sha256", "input_contract", "model_provenance", "provenance_mismatches"]


def input_contract(cfg) -> dict:
    """What a model expects as input, as the toolkit's test-time preprocessing produces it.

    Args:
        cfg: the model's config (``INPUT.SIZE_TEST``, ``INPUT.PIXEL_MEAN``, ``INPUT.PIXEL_STD``).

    Returns:
        ``{"layout", "dtype", "color", "size", "pixel_mean", "pixel_std", "formula"}``.
    """
    return {
        "layout": "NCHW",
        "dtype": "float32",
        "color": "RGB",
        "size": [int(v) for v in cfg.INPUT.SIZE_TEST],
        "pixel_mean": [float(v) for v in cfg.INPUT.PIXEL_MEAN],
        "pixel_std": [float(v) for v in cfg.INPUT.PIXEL_STD],
        "formula": "(pixel / 255 - pixel_mean) / pixel_std after resizing to size (height, "
                   "width) with PIL's bicubic filter, as FeatureExtractor.preprocess and "
                   "reid_pbn.data.transforms.test_preprocess do",
    }


def model_provenance(
    cfg,
    *,
    config_file: str | None,
    weights: str | None,
    feature_dim: int,
    normalize: bool = True,
    flip: bool = False,
) -> dict:
    """The record of a model and its preprocessing, for a gallery or an exported file.

    Args:
        cfg: the model's config; its full text is kept (it is what rebuilds the model).
        config_file: the YAML file it was read from, or None.
        weights: the weight file (hashed here), or None for an untrained model.
        feature_dim: the dimension of the model's features.
        normalize: whether features are L2-normalized.
        flip: whether features average an image and its mirror.

    Returns:
        A JSON-friendly dict.
    """
    bb = cfg.MODEL.BACKBONE
    return {
        "config_file": os.path.abspath(config_file) if config_file else None,
        "config": cfg.dump(),
        "model": {"architecture": cfg.MODEL.META_ARCHITECTURE, "backbone": bb.NAME,
                  "depth": int(bb.DEPTH), "norm": bb.NORM, "ibn": bb.IBN or None,
                  "domains": max(len(cfg.DATASETS.NAMES), 1)},
        "weights": os.path.abspath(weights) if weights else None,
        "weights_sha256": file_sha256(weights) if weights else None,
        "feature_dim": int(feature_dim),
        "normalization": "l2" if normalize else "none",
        "flip": bool(flip),
        "input": input_contract(cfg),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {"reid_pbn": __version__, "torch": torch.__version__,
                     "faiss": getattr(faiss, "__version__", "unknown"),
                     "python": platform.python_version()},
    }


def provenance_mismatches(recorded: dict, current: dict) -> list[str]:
    """The ways in which ``current`` (a model about to be used) differs from ``recorded``.

    Only what changes the features counts: the weights' hash, the feature dimension, the
    normalization, flip averaging and the input contract. Paths and times may differ.

    Args:
        recorded: a :func:`model_provenance` record (from a saved gallery).
        current: the record of the model in use.

    Returns:
        One sentence per difference; empty when the features are comparable.
    """
    problems = []
    for key, what in (("weights_sha256", "weights (SHA-256)"), ("feature_dim", "feature dimension"),
                      ("normalization", "normalization"), ("flip", "flip averaging"),
                      ("input", "input preprocessing")):
        if recorded.get(key) != current.get(key):
            problems.append(f"{what}: gallery {recorded.get(key)!r}, model {current.get(key)!r}")
    return problems
