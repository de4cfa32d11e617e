"""Item segments of a gallery: the features and records of one addition, written before the
index that makes them visible.

A segment is ``<name>.npy`` (float32 features, no pickle) plus ``<name>.json`` (one record per
row), each written atomically, the JSON last. The index folder lists the live item ids; a
segment whose ids are not in it (an addition killed before its index was saved, or deleted
items) is garbage that the gallery removes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ._files import write_atomic

SEGMENT_FORMAT = "reid_pbn.gallery-segment"
ITEM_ID = re.compile(r"[0-9a-f]{16}")
_NAME = re.compile(r"seg-[0-9a-f]{12}")


class GalleryFormatError(ValueError):
    """A gallery folder is damaged or was not written by this toolkit; the message says where."""


@dataclass
class Segment:
    """One addition's items.

    Attributes:
        name: file stem (``seg-<hex>``).
        features: (n, D) float32 features (memory-mapped when read back).
        items: n records ``{"id", "name", "pid", "camid", "metadata", "thumbnail", "added"}``.
    """

    name: str
    features: np.ndarray
    items: list[dict]


def new_item_id() -> str:
    """A random 16-hex-digit item id (never reused, unlike a counter after a crash)."""
    return secrets.token_hex(8)


def write_segment(folder: Path, features: np.ndarray, items: list[dict]) -> Segment:
    """Writes a new segment durably: the features, then the records.

    Args:
        folder: the gallery's ``items`` folder.
        features: (n, D) float32.
        items: n records.

    Returns:
        The segment (holding ``features`` as given).
    """
    name = f"seg-{secrets.token_hex(6)}"
    buf = _npy_bytes(np.ascontiguousarray(features, dtype=np.float32))
    write_atomic(folder / f"{name}.npy", buf)
    doc = {"format": SEGMENT_FORMAT, "version": 1, "dim": int(features.shape[1]),
           "count": len(items), "items": items}
    write_atomic(folder / f"{name}.json", json.dumps(doc).encode("utf-8"))
    return Segment(name, features, items)


def _npy_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


def read_segments(folder: Path, dim: int) -> list[Segment]:
    """Reads every segment of a gallery (features memory-mapped).

    Args:
        folder: the gallery's ``items`` folder.
        dim: the gallery's feature dimension.

    Returns:
        The segments, by name.

    Raises:
        GalleryFormatError: a segment is malformed (the message names the file).
    """
    segments = []
    for entry in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(entry)
        if ext != ".json" or not _NAME.fullmatch(stem):
            continue
        path = folder / entry
        try:
            doc = json.loads(path.read_bytes())
        except (OSError, ValueError) as e:
            raise GalleryFormatError(f"{path}: unreadable segment ({e})") from None
        if not isinstance(doc, dict) or doc.get("format") != SEGMENT_FORMAT:
            raise GalleryFormatError(f"{path}: not a gallery segment")
        items = doc.get("items")
        if doc.get("dim") != dim or not isinstance(items, list) or doc.get("count") != len(items):
            raise GalleryFormatError(f"{path}: dimension or item count does not match")
        for i, item in enumerate(items):
            _check_item(item, f"{path} item {i}")
        try:
            feats = np.load(folder / f"{stem}.npy", mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise GalleryFormatError(f"{folder / stem}.npy: unreadable features ({e})") from None
        if feats.dtype != np.float32 or feats.shape != (len(items), dim):
            raise GalleryFormatError(
                f"{folder / stem}.npy holds {feats.dtype} {feats.shape}, expected float32 "
                f"({len(items)}, {dim})")
        segments.append(Segment(stem, feats, items))
    return segments


def _check_item(item, where: str) -> None:
    ok = (isinstance(item, dict) and isinstance(item.get("id"), str)
          and ITEM_ID.fullmatch(item["id"]) is not None and isinstance(item.get("name"), str)
          and all(isinstance(item.get(k), int) and not isinstance(item.get(k), bool)
                  for k in ("pid", "camid"))
          and isinstance(item.get("metadata"), dict) and isinstance(item.get("thumbnail"), bool))
    if not ok:
        raise GalleryFormatError(f"{where}: malformed record {str(item)[:200]}")


def remove_segment(folder: Path, name: str) -> None:
    """Deletes a segment, records first (so a half-deleted one reads as absent).

    Args:
        folder: the gallery's ``items`` folder.
        name: the segment's stem.
    """
    for ext in (".json", ".npy"):
        unlink(folder / f"{name}{ext}")


def check_features(features, dim: int | None) -> np.ndarray:
    """Features as a contiguous float32 (N, dim) array, refused when malformed or not finite."""
    x = np.asarray(features.detach().cpu() if hasattr(features, "detach") else features,
                   dtype=np.float32)
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim) or x.shape[1] == 0:
        want = f"(N, {dim})" if dim is not None else "(N, D)"
        raise ValueError(f"features must have shape {want}, got {tuple(x.shape)}")
    if not np.isfinite(x).all():
        raise ValueError("features hold NaN or infinite values")
    return np.ascontiguousarray(x)


def make_records(n: int, names, pids, camids, metadata, thumbnails) -> list[dict]:
    """New item records (fresh ids) from per-item columns, each None or of length ``n``."""
    columns = {"names": names, "pids": pids, "camids": camids, "metadata": metadata,
               "thumbnails": thumbnails}
    for key, values in columns.items():
        if values is not None and len(values) != n:
            raise ValueError(f"got {n} features but {len(values)} {key}")
    added = datetime.now(timezone.utc).isoformat(timespec="seconds")
    records = []
    for i in range(n):
        meta = metadata[i] if metadata is not None else {}
        if not isinstance(meta, dict):
            raise ValueError(f"metadata of item {i} must be a JSON object, got "
                             f"{type(meta).__name__}")
        records.append({
            "id": new_item_id(), "name": str(names[i]) if names is not None else "",
            "pid": int(pids[i]) if pids is not None else -1,
            "camid": int(camids[i]) if camids is not None else -1,
            "metadata": meta, "thumbnail": bool(thumbnails is not None and thumbnails[i]),
            "added": added,
        })
    return records


def unlink(path: Path) -> None:
    """Deletes a file that may already be gone."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)

