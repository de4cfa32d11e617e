"""Where gallery and query features come from: an image folder (through a FeatureExtractor) or
the output folder of ``tools/extract_features.py`` (``features.npy`` + ``metadata.json``)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data import read_image
from ..data.datasets.bases import UnreadableImageError
from .images import make_thumbnail, parse_person

__all__ = ["IMAGE_EXTENSIONS", "ImageSet", "embed_images", "list_images", "read_feature_dir"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass
class ImageSet:
    """Features of images with what a gallery stores about them.

    Attributes:
        features: (N, D) float32.
        paths: the image files (as given, or from the features' metadata).
        names: display names (paths relative to the folder searched).
        pids: person ids (from Market-1501-style names or the metadata; -1: unknown).
        camids: 0-based camera ids (-1: unknown).
        thumbnails: JPEG bytes per image, or None.
        skipped: ``{"path", "reason"}`` of unreadable images left out.
    """

    features: np.ndarray
    paths: list[str]
    names: list[str]
    pids: list[int]
    camids: list[int]
    thumbnails: list[bytes | None]
    skipped: list[dict] = field(default_factory=list)


def list_images(location: str | os.PathLike) -> list[Path]:
    """Image files: the file itself, or every image under a folder (recursively, sorted).

    Args:
        location: an image file or a folder.

    Raises:
        FileNotFoundError: nothing there, or a folder without images.
    """
    root = Path(location)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"no image or folder at {root}")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                   and p.is_file())
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
    return paths


def embed_images(
    extract: Callable[[Sequence[np.ndarray]], np.ndarray],
    paths: Sequence[str | os.PathLike],
    *,
    root: str | os.PathLike | None = None,
    batch_size: int = 64,
    thumbnail_height: int | None = 128,
    strict: bool = False,
    reduce_to: tuple[int, int] | None = None,
) -> ImageSet:
    """Decodes each image once, for its features and its thumbnail.

    Args:
        extract: maps HWC uint8 RGB arrays to (N, D) features (e.g. a ``FeatureExtractor``
            wrapped to return numpy).
        paths: image files.
        root: names are paths relative to it (default: the file names).
        batch_size: images per call of ``extract``.
        thumbnail_height: thumbnail height, or None for no thumbnails.
        strict: raise on the first unreadable image instead of skipping it (logged).
        reduce_to: ``(height, width)`` of the model input (large JPEGs decode at a reduced
            scale).

    Returns:
        The image set (unreadable images left out and listed in ``skipped``).

    Raises:
        UnreadableImageError: with ``strict``, or when no image could be read.
    """
    feats, kept, thumbs, skipped = [], [], [], []
    batch: list[tuple[str, np.ndarray]] = []

    def flush() -> None:
        if batch:
            feats.append(np.asarray(extract([rgb for _, rgb in batch]), dtype=np.float32))
            kept.extend(p for p, _ in batch)
            batch.clear()

    for path in map(str, paths):
        try:
            rgb = np.asarray(read_image(path, reduce_to=reduce_to))
        except (OSError, UnreadableImageError) as e:
            if strict:
                raise
            logger.warning("skipping unreadable image %s (%s)", path, e)
            skipped.append({"path": path, "reason": str(e)})
            continue
        thumbs.append(make_thumbnail(rgb, thumbnail_height) if thumbnail_height else None)
        batch.append((path, rgb))
        if len(batch) >= batch_size:
            flush()
    flush()
    if not kept:
        raise UnreadableImageError(f"none of the {len(paths)} images could be read")
    names = [os.path.relpath(p, root) if root else os.path.basename(p) for p in kept]
    persons = [parse_person(p) for p in kept]
    return ImageSet(np.concatenate(feats), kept, names, [p for p, _ in persons],
                    [c for _, c in persons], thumbs, skipped)


def read_feature_dir(folder: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Reads the output of ``tools/extract_features.py``.

    Args:
        folder: holding ``features.npy`` and ``metadata.json``.

    Returns:
        ``(features, metadata)``; metadata lists ``paths``, ``pids``, ``camids`` (checked to
        have one entry per row) and the ``config_file``/``weights``/``flip``/``normalize``
        used.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: the files disagree or are malformed.
    """
    folder = Path(folder)
    feats_path, meta_path = folder / "features.npy", folder / "metadata.json"
    for p in (feats_path, meta_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} is missing; --features expects the output folder of "
                                    "tools/extract_features.py")
    feats = np.load(feats_path, allow_pickle=False)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{meta_path} is not valid JSON ({e})") from None
    if feats.ndim != 2 or not isinstance(meta, dict):
        raise ValueError(f"{feats_path} must hold an (N, D) array, got shape {feats.shape}")
    n = len(feats)
    for key in ("paths", "pids", "camids"):
        values = meta.get(key)
        if not isinstance(values, list) or len(values) != n:
            raise ValueError(f"{meta_path}: '{key}' must list {n} values, one per feature row")
    return feats.astype(np.float32, copy=False), meta
