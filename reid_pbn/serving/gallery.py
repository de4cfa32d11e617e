"""A searchable, persistent gallery: a ReIDIndex plus item records, thumbnails and provenance.

Folder layout::

    DIR/gallery.json      {"format", "version", "created", "metric", "provenance", "index"}:
                          the model that made the features and the index type asked for
    DIR/index/            a ReIDIndex folder (``ReIDIndex.load(DIR / "index")`` reads it); its
                          ``paths`` are the live item ids, in index order
    DIR/items/seg-*.npy   features of the items (float32, no pickle), one pair per addition
    DIR/items/seg-*.json  their records: id, name, pid, camid, metadata, thumbnail flag
    DIR/thumbs/<id>.jpg   thumbnails

The index folder is the commit point. An addition writes its thumbnails and segment first,
then saves the index (``ReIDIndex.save`` replaces the folder atomically); a deletion saves an
index without the item. A process killed at any moment therefore leaves the previous or the
new index, never a mix, and every item the index names has its records on disk. Segments and
thumbnails no index names are removed when the gallery is next opened for writing.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..evaluation import ReIDIndex
from ._files import TMP_SUFFIX, FolderLock, write_atomic
from ._segments import (
    ITEM_ID,
    GalleryFormatError,
    Segment,
    check_features,
    make_records,
    read_segments,
    remove_segment,
    unlink,
    write_segment,
)
from .index_params import IndexChoice, choose_index

__all__ = ["Gallery", "GalleryBusyError", "GalleryFormatError", "Hit", "UnknownItemError"]

logger = logging.getLogger(__name__)

GALLERY_FILE = "gallery.json"
GALLERY_FORMAT = "reid_pbn.gallery"
INDEX_DIR, ITEMS_DIR, THUMBS_DIR = "index", "items", "thumbs"
LOCK_FILE = ".gallery.lock"
# Past this many segment files the live items are merged into one (fewer files to open).
MAX_SEGMENTS = 64
_INDEX_OPTIONS = ("nlist", "nprobe", "pq_m", "pq_nbits", "hnsw_m")


class GalleryBusyError(RuntimeError):
    """Another process holds the gallery open for writing."""


class UnknownItemError(KeyError):
    """No gallery item has this id."""


@dataclass
class Hit:
    """One search result.

    Attributes:
        rank: 1-based rank.
        distance: cosine distance ``1 - cos`` (or squared L2 for a euclidean gallery).
        item: the item's record (``id``, ``name``, ``pid``, ``camid``, ``metadata``,
            ``thumbnail``, ``added``).
    """

    rank: int
    distance: float
    item: dict


class Gallery:
    """A persistent gallery folder (see the module docstring); use :meth:`build` or :meth:`open`.

    Thread-safe: searches run concurrently with one writer; additions and deletions are
    serialized, and each returns once it is on disk.

    Attributes:
        directory: the gallery folder.
        info: the content of ``gallery.json`` (provenance, requested index).
    """

    def __init__(self, directory: Path, info: dict, index: ReIDIndex,
                 segments: list[Segment], lock: FolderLock | None) -> None:
        self.directory = directory
        self.info = info
        self._index = index
        self._lock = lock
        self._state = threading.RLock()  # guards the index and the record maps
        self._writer = threading.Lock()  # one addition or deletion at a time
        self._segments: dict[str, Segment] = {}
        self._where: dict[str, tuple[str, int]] = {}  # item id -> (segment, row)
        for seg in segments:
            self._register(seg)
        missing = [i for i in index.paths if i not in self._where]
        if missing:
            raise GalleryFormatError(
                f"{directory}: the index names {len(missing)} item(s) without records in "
                f"{ITEMS_DIR}/ (e.g. {missing[0]}); the folder is damaged")

    # -- creation and opening -------------------------------------------------------------
    @classmethod
    def build(
        cls,
        directory: str | os.PathLike,
        features: np.ndarray,
        *,
        provenance: dict,
        index_type: str = "Flat",
        index_options: dict | None = None,
        metric: str = "cosine",
        names: Sequence[str] | None = None,
        pids: Sequence[int] | None = None,
        camids: Sequence[int] | None = None,
        metadata: Sequence[dict] | None = None,
        thumbnails: Sequence[bytes | None] | None = None,
    ) -> tuple[Gallery, IndexChoice]:
        """Creates a gallery folder holding ``features`` (possibly none).

        Args:
            directory: a folder that does not exist or is empty.
            features: (N, D) float32 features.
            provenance: the record of the model (:func:`.provenance.model_provenance`).
            index_type: ``"Flat"``, ``"IVFFlat"``, ``"IVFPQ"`` or ``"HNSW"``; sized to the
                gallery by :func:`.index_params.choose_index` (the choice is returned).
            index_options: ``nlist``, ``nprobe``, ``pq_m``, ``pq_nbits``, ``hnsw_m`` requests.
            metric: ``"cosine"`` or ``"euclidean"``.
            names: a display name per item (e.g. the image's file name).
            pids: person ids (-1: unknown).
            camids: camera ids (-1: unknown).
            metadata: a JSON object per item.
            thumbnails: JPEG bytes per item, or None where there is none.

        Returns:
            The gallery, open for writing, and the index choice.

        Raises:
            FileExistsError: ``directory`` exists and is not empty.
            ValueError: bad features or metadata lengths.
        """
        folder = Path(directory)
        if folder.exists() and any(folder.iterdir()):
            raise FileExistsError(f"{folder} exists and is not empty; choose a new folder")
        options = {k: int(v) for k, v in (index_options or {}).items() if k in _INDEX_OPTIONS}
        feats = check_features(features, None)
        for sub in (ITEMS_DIR, THUMBS_DIR):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        lock = FolderLock(folder / LOCK_FILE)
        lock.acquire()
        dim = feats.shape[1]
        choice = choose_index(index_type, len(feats), dim, **options)
        info = {"format": GALLERY_FORMAT, "version": 1,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "metric": metric, "dim": int(dim), "provenance": provenance,
                "index": {**choice.as_dict(), "options": options}}
        index = ReIDIndex(dim, choice.index_type, metric=metric, use_gpu=False, **choice.params)
        gallery = cls(folder, info, index, [], lock)
        if len(feats):
            records = make_records(len(feats), names, pids, camids, metadata, thumbnails)
            gallery._commit_addition(feats, records, thumbnails)
        else:
            index.save(folder / INDEX_DIR)
        # Written last: a folder without it is an interrupted build, never opened as a gallery.
        write_atomic(folder / GALLERY_FILE, json.dumps(info, indent=1).encode("utf-8"))
        return gallery, choice

    @classmethod
    def open(cls, directory: str | os.PathLike, *, writable: bool = True) -> Gallery:
        """Opens a gallery folder.

        Args:
            directory: the folder made by :meth:`build`.
            writable: take the folder's lock (one writer process at a time) and remove what
                interrupted writes left behind; False for read-only use (search tools).

        Returns:
            The gallery.

        Raises:
            FileNotFoundError: not a gallery folder (or an interrupted build).
            GalleryBusyError: another process has it open for writing.
            GalleryFormatError: a damaged folder.
        """
        folder = Path(directory)
        meta = folder / GALLERY_FILE
        if not meta.is_file():
            raise FileNotFoundError(f"{folder} is not a gallery folder (no {GALLERY_FILE}; make "
                                    "one with tools/build_index.py)")
        try:
            info = json.loads(meta.read_bytes())
        except ValueError as e:
            raise GalleryFormatError(f"{meta}: not valid JSON ({e})") from None
        if not isinstance(info, dict) or info.get("format") != GALLERY_FORMAT:
            raise GalleryFormatError(f"{meta} is not a reid_pbn gallery description")
        lock = None
        if writable:
            lock = FolderLock(folder / LOCK_FILE)
            if not lock.acquire():
                raise GalleryBusyError(f"{folder} is open for writing in another process "
                                       "(a running tools/serve.py?)")
        try:
            index = ReIDIndex.load(folder / INDEX_DIR, use_gpu=False)
            if index.dim != info.get("dim"):
                raise GalleryFormatError(f"{folder}: the index holds {index.dim}-d vectors, "
                                         f"{GALLERY_FILE} says {info.get('dim')}")
            gallery = cls(folder, info, index, read_segments(folder / ITEMS_DIR, index.dim), lock)
            if writable:
                gallery._collect_garbage()
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return gallery

    @staticmethod
    def in_use(directory: str | os.PathLike) -> bool:
        """Whether another process has the gallery at ``directory`` open for writing.

        Args:
            directory: a gallery folder.
        """
        lock = FolderLock(Path(directory) / LOCK_FILE)
        if not lock.acquire():
            return True
        lock.release()
        return False

    def close(self) -> None:
        """Releases the write lock (the gallery stays usable for searches)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- reading ----------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Feature dimension."""
        return self._index.dim

    def __len__(self) -> int:
        return self._index.count

    @property
    def index_type(self) -> str:
        """The FAISS index type in use (may differ from the requested one, see ``info``)."""
        return self._index.index_type

    @property
    def metric(self) -> str:
        """``"cosine"`` or ``"euclidean"``."""
        return self._index.metric

    def get(self, item_id: str) -> dict:
        """The record of an item.

        Args:
            item_id: the item's id.

        Raises:
            UnknownItemError: no live item has this id.
        """
        with self._state:
            where = self._where.get(item_id) if ITEM_ID.fullmatch(str(item_id)) else None
            if where is None or item_id not in self._live_ids():
                raise UnknownItemError(item_id)
            return dict(self._segments[where[0]].items[where[1]])

    def thumbnail_path(self, item_id: str) -> Path | None:
        """The thumbnail file of a live item, or None when it has none.

        The path is built from a validated id only, never from user text.

        Args:
            item_id: the item's id.

        Raises:
            UnknownItemError: no live item has this id.
        """
        item = self.get(item_id)
        path = self.directory / THUMBS_DIR / f"{item['id']}.jpg"
        return path if item["thumbnail"] and path.is_file() else None

    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """The k nearest items of every query.

        Args:
            queries: (M, D) features.
            k: results per query (fewer when the gallery is smaller).

        Returns:
            M lists of hits, closest first; empty lists for an empty gallery.

        Raises:
            ValueError: wrong dimension, non-finite values, or k < 1.
        """
        q = check_features(queries, self.dim)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        with self._state:
            if self._index.count == 0:
                return [[] for _ in range(len(q))]
            dist, idx, valid = self._index.search(q, k, return_valid=True)
            ids = self._index.paths
            return [[Hit(r + 1, float(d), self._record(ids[i]))
                     for r, (d, i) in enumerate(zip(drow[vrow], irow[vrow]))]
                    for drow, irow, vrow in zip(dist, idx, valid)]

    # -- writing ----------------------------------------------------------------------------
    def add(
        self,
        features: np.ndarray,
        *,
        names: Sequence[str] | None = None,
        pids: Sequence[int] | None = None,
        camids: Sequence[int] | None = None,
        metadata: Sequence[dict] | None = None,
        thumbnails: Sequence[bytes | None] | None = None,
    ) -> list[dict]:
        """Adds items and returns once they are on disk (all of them or, on error, none).

        Args:
            features: (N, D) features.
            names: display names (default ``""``).
            pids: person ids (-1: unknown).
            camids: camera ids (-1: unknown).
            metadata: JSON objects, one per item.
            thumbnails: JPEG bytes or None, one per item.

        Returns:
            The new items' records.

        Raises:
            ValueError: wrong dimension, non-finite features, or mismatched lengths.
            PermissionError: the gallery was opened read-only.
        """
        feats = check_features(features, self.dim)
        records = make_records(len(feats), names, pids, camids, metadata, thumbnails)
        self._check_writable()
        with self._writer:
            self._commit_addition(feats, records, thumbnails)
            self._collect_garbage()
        return [dict(r) for r in records]

    def delete(self, item_id: str) -> None:
        """Removes an item and returns once the removal is on disk.

        Args:
            item_id: the item's id.

        Raises:
            UnknownItemError: no live item has this id.
            PermissionError: the gallery was opened read-only.
        """
        self._check_writable()
        with self._writer:
            self.get(item_id)
            keep = [i for i in self._index.paths if i != item_id]
            index = self._rebuilt(keep)
            index.save(self.directory / INDEX_DIR)
            with self._state:
                self._index = index
            self._collect_garbage()

    # -- internals --------------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self._lock is None:
            raise PermissionError(f"{self.directory} was opened read-only")

    def _register(self, seg: Segment) -> None:
        self._segments[seg.name] = seg
        for row, item in enumerate(seg.items):
            self._where[item["id"]] = (seg.name, row)

    def _record(self, item_id: str) -> dict:
        name, row = self._where[item_id]
        return self._segments[name].items[row]

    def _live_ids(self) -> set[str]:
        # Cached per index object: the index is replaced, never edited, except by add().
        cache = getattr(self, "_live_cache", None)
        if cache is None or cache[0] is not self._index or cache[1] != self._index.count:
            cache = (self._index, self._index.count, set(self._index.paths))
            self._live_cache = cache
        return cache[2]

    def _commit_addition(self, feats: np.ndarray, records: list[dict],
                         thumbnails: Sequence[bytes | None] | None) -> None:
        thumbs = self.directory / THUMBS_DIR
        for record, jpeg in zip(records, thumbnails or [None] * len(records)):
            if jpeg:
                # Not fsynced: a thumbnail lost to a power cut only shows as a placeholder.
                write_atomic(thumbs / f"{record['id']}.jpg", jpeg, sync=False)
        seg = write_segment(self.directory / ITEMS_DIR, feats, records)
        with self._state:
            self._register(seg)
            before = self._index.count
            self._index.add(feats, pids=[r["pid"] for r in records],
                            camids=[r["camid"] for r in records],
                            paths=[r["id"] for r in records])
        try:
            self._index.save(self.directory / INDEX_DIR)
        except BaseException:
            # Not on disk, so not in the gallery: go back to the saved index.
            logger.exception("saving the index failed; the addition is undone")
            with self._state:
                self._index = (ReIDIndex.load(self.directory / INDEX_DIR, use_gpu=False)
                               if before else self._rebuilt([]))
            raise

    def _rebuilt(self, ids: list[str]) -> ReIDIndex:
        """A new index over ``ids`` (in this order), sized for their number."""
        req = self.info["index"]
        choice = choose_index(req["requested"], len(ids), self.dim, **req.get("options", {}))
        index = ReIDIndex(self.dim, choice.index_type, metric=self.metric, use_gpu=False,
                          **choice.params)
        if ids:
            records = [self._record(i) for i in ids]
            index.add(self._features(ids), pids=[r["pid"] for r in records],
                      camids=[r["camid"] for r in records], paths=ids)
        return index

    def _features(self, ids: list[str]) -> np.ndarray:
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        for j, item_id in enumerate(ids):
            name, row = self._where[item_id]
            out[j] = self._segments[name].features[row]
        return out

    def _collect_garbage(self) -> None:
        """Removes segments, thumbnails and temporary files that no live item needs, and merges
        the segments when there are many."""
        live = self._live_ids()
        items_dir, thumbs_dir = self.directory / ITEMS_DIR, self.directory / THUMBS_DIR
        for seg in list(self._segments.values()):
            if not any(it["id"] in live and self._where[it["id"]][0] == seg.name
                       for it in seg.items):
                self._drop_segment(seg)
        if len(self._segments) > MAX_SEGMENTS:
            self._merge_segments(list(self._index.paths))
        known = {f"{name}{ext}" for name in self._segments for ext in (".json", ".npy")}
        for entry in os.listdir(items_dir):
            if entry not in known and (entry.endswith((".npy", ".json", TMP_SUFFIX))):
                unlink(items_dir / entry)
        for entry in os.listdir(thumbs_dir):
            stem = entry[:-4] if entry.endswith(".jpg") else None
            if stem not in live:
                unlink(thumbs_dir / entry)

    def _drop_segment(self, seg: Segment) -> None:
        with self._state:
            del self._segments[seg.name]
            for item in seg.items:
                if self._where.get(item["id"], (None,))[0] == seg.name:
                    del self._where[item["id"]]
        remove_segment(self.directory / ITEMS_DIR, seg.name)

    def _merge_segments(self, ids: list[str]) -> None:
        merged = write_segment(self.directory / ITEMS_DIR, self._features(ids),
                               [self._record(i) for i in ids])
        old = list(self._segments.values())
        with self._state:
            self._register(merged)
        for seg in old:
            self._drop_segment(seg)
        logger.info("merged %d segments into %s", len(old), merged.name)
