"""Retrieval index on FAISS: gallery features plus metadata, exact or approximate search,
search on this process's GPU when FAISS sees one, and a checked on-disk format without pickle.

On-disk layout of ``ReIDIndex.save(dir)``::

    dir/index.faiss     the FAISS index (faiss.write_index of the CPU index)
    dir/metadata.json   {"format_version": 1, "dim", "type", "metric", "count", "params",
                         "pids", "camids", "paths", "index_file", "sha256", "faiss_version"}

Saving replaces ``dir`` atomically (a new folder is written and fsynced beside it, then swapped
in; see :mod:`._atomic_dir`). ``ReIDIndex.load(dir)`` treats the folder as untrusted: every
metadata field is checked (:func:`._index_store.parse_metadata`), ``index_file`` must be a plain
file in the folder, the SHA-256 must match, and the FAISS file's structure is walked and checked
against the metadata and its own size (:func:`._index_format.inspect_faiss_file`) before FAISS
reads it; the loaded index's type, metric, dimension and count are checked once more after.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np
import torch

from ._atomic_dir import folder_lock, fsync_dir, new_sibling, recover, recover_locked, swap_in
from ._index_format import IndexFormatError
from ._index_store import (
    INDEX_FILE,
    METADATA_FILE,
    FolderReplacedError,
    check_replaceable,
    open_plain_file,
    parse_metadata,
    read_checked_index,
    write_synced,
)
from .checks import FEATURES_HINT, OVERFLOW_HINT, check_finite_rows
from .distance import l2_normalize

logger = logging.getLogger(__name__)

__all__ = [
    "ReIDIndex", "IndexFormatError", "exact_knn", "INDEX_TYPES", "FORMAT_VERSION", "MISSING_ID",
]

FORMAT_VERSION = 1
INDEX_TYPES = ("Flat", "IVFFlat", "IVFPQ", "HNSW")
# Squared norms above this can make squared L2 distances overflow float32 (see _check_l2_range).
_MAX_SQ_NORM = float(np.finfo(np.float32).max) / 4
#: Position returned by :meth:`ReIDIndex.search` where a query has fewer results than asked.
#: FAISS returns -1 there, which ``pids[-1]`` would silently read as the last item; this value
#: raises IndexError when used to index a list, a numpy array or a tensor.
MISSING_ID = int(np.iinfo(np.int64).max)


def _num_gpus() -> int:
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


#: FAISS's GPU k-selection handles at most this many neighbours; larger k search on the CPU.
GPU_MAX_K = 2048


def _local_gpu() -> int:
    """This process's GPU: the current CUDA device (each DDP rank has set its own)."""
    return torch.cuda.current_device() if torch.cuda.is_available() else 0


@functools.cache
def _gpu_resources(device: int) -> faiss.StandardGpuResources:
    """One ``StandardGpuResources`` per process and GPU, made once and reused.

    Each one reserves scratch memory on its GPU; making a new one per search (and on every
    GPU, including those other ranks' PyTorch allocators hold) wastes that memory and time.
    """
    return faiss.StandardGpuResources()


def _to_gpu(index: faiss.Index, float16_tables: bool = False) -> faiss.Index:
    """Clones a CPU index onto this process's GPU, with its cached resources.

    Args:
        index: the CPU index.
        float16_tables: half-precision lookup tables (IVF-PQ with many sub-quantizers needs
            them on GPU).
    """
    device = _local_gpu()
    co = faiss.GpuClonerOptions()
    co.useFloat16 = float16_tables
    return faiss.index_cpu_to_gpu(_gpu_resources(device), device, index, co)


def _use_gpu_for(k: int, use_gpu: bool) -> bool:
    """Whether a search for ``k`` neighbours runs on the GPU (logged when k forces the CPU)."""
    if not use_gpu or _num_gpus() == 0:
        return False
    if k > GPU_MAX_K:
        logger.info("k=%d exceeds FAISS's GPU limit of %d; searching on the CPU", k, GPU_MAX_K)
        return False
    return True


def _as_float32(x, name: str) -> np.ndarray:
    """A contiguous float32 (N, D) copy or view of ``x``, refused when a row is not finite."""
    if isinstance(x, torch.Tensor):
        # numpy has no bfloat16: convert on the tensor's side first.
        x = x.detach().to(torch.float32).cpu().numpy()
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {arr.shape}")
    # A NaN gallery vector is never found and a NaN query gets -1 ids with infinite distances:
    # refuse them, naming the rows, before FAISS sees them.
    check_finite_rows(arr, name, hint=FEATURES_HINT)
    return arr


def _check_l2_range(x: np.ndarray, name: str) -> None:
    """Refuses vectors whose squared L2 distances could overflow float32.

    FAISS computes ``|q|^2 + |g|^2 - 2 q.g`` in float32; when that overflows it keeps no result
    at all and returns -1 ids, silently. Squared norms up to a quarter of float32's maximum
    (norms up to ~9.2e18) keep every distance finite, since ``|q - g|^2 <= 2|q|^2 + 2|g|^2``.
    """
    step = 1 << 16  # float64 squares of a bounded block, not of the whole array
    for start in range(0, len(x), step):
        sq = np.square(x[start:start + step], dtype=np.float64).sum(axis=1)
        bad = np.flatnonzero(sq > _MAX_SQ_NORM)
        if len(bad):
            shown = ", ".join(f"row {start + int(i)}" for i in bad[:5])
            raise ValueError(
                f"{name} are too large for metric='euclidean' ({shown}: norm "
                f"{math.sqrt(sq[bad[0]]):.3g}, at most {math.sqrt(_MAX_SQ_NORM):.3g}): their "
                "squared distances overflow float32. L2-normalize the features or use "
                "metric='cosine'"
            )


def exact_knn(
    base: np.ndarray, queries: np.ndarray, k: int, metric: str = "l2", use_gpu: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-nearest neighbours with a FAISS flat index (on this process's GPU when available).

    Args:
        base: (N, D) float32 vectors to search in.
        queries: (M, D) float32 query vectors.
        k: neighbours per query (at most N).
        metric: ``"l2"`` (squared L2 distances, ascending) or ``"ip"`` (inner products,
            descending).
        use_gpu: use GPUs when FAISS sees any.

    Returns:
        ``(values, indices)``, both (M, k).
    """
    base = _as_float32(base, "base")
    queries = _as_float32(queries, "queries")
    if metric not in ("l2", "ip"):
        raise ValueError(f"metric must be 'l2' or 'ip', got {metric!r}")
    if not 1 <= k <= base.shape[0]:
        raise ValueError(f"k must be in [1, {base.shape[0]}], got {k}")
    index = faiss.IndexFlatL2(base.shape[1]) if metric == "l2" else faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    if _use_gpu_for(k, use_gpu):
        index = _to_gpu(index)
    values, indices = index.search(queries, k)
    return values, indices.astype(np.int64, copy=False)


class ReIDIndex:
    """A FAISS index over gallery features with their identities, cameras and image paths.

    Distances returned by :meth:`search` are the cosine distance ``1 - cos`` for
    ``metric="cosine"`` (features are L2-normalized on the way in; the index stores inner
    products) and the *squared* L2 distance for ``metric="euclidean"``, closest first.

    Index types: ``"Flat"`` (exact), ``"IVFFlat"`` and ``"IVFPQ"`` (inverted lists, need
    :meth:`train`; the first :meth:`add` trains on its vectors when not trained yet) and
    ``"HNSW"`` (graph, CPU only). Non-finite features are refused by :meth:`add`,
    :meth:`train` and :meth:`search`, naming the rows. Training, adds and saving work on a CPU
    index; with ``use_gpu`` and ``faiss.get_num_gpus() > 0`` searches run on a clone of it on
    this process's current CUDA device (with one cached ``StandardGpuResources``; made again
    after an ``add``) for ``k <= GPU_MAX_K``, otherwise on the CPU index.

    Args:
        dim: feature dimension.
        index_type: one of ``"Flat"``, ``"IVFFlat"``, ``"IVFPQ"``, ``"HNSW"``.
        metric: ``"cosine"`` or ``"euclidean"``.
        nlist: inverted lists of the IVF types; 0 chooses ``4 * sqrt(N)`` at training time.
        nprobe: inverted lists visited per query.
        pq_m: sub-quantizers of IVF-PQ (must divide ``dim``).
        pq_nbits: bits per sub-quantizer code.
        hnsw_m: neighbours per HNSW node.
        ef_search: HNSW search beam width (raised to ``k`` when smaller).
        use_gpu: search on the GPU when FAISS sees one.
    """

    def __init__(
        self,
        dim: int,
        index_type: str = "Flat",
        metric: str = "cosine",
        nlist: int = 0,
        nprobe: int = 32,
        pq_m: int = 64,
        pq_nbits: int = 8,
        hnsw_m: int = 32,
        ef_search: int = 128,
        use_gpu: bool = True,
    ) -> None:
        if index_type not in INDEX_TYPES:
            raise ValueError(f"index_type must be one of {INDEX_TYPES}, got {index_type!r}")
        if metric not in ("cosine", "euclidean"):
            raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        if index_type == "IVFPQ" and dim % pq_m:
            raise ValueError(f"IVFPQ needs pq_m ({pq_m}) to divide the dimension ({dim})")
        self.dim = int(dim)
        self.index_type = index_type
        self.metric = metric
        self.nlist = int(nlist)
        self.nprobe = int(nprobe)
        self.pq_m = int(pq_m)
        self.pq_nbits = int(pq_nbits)
        self.hnsw_m = int(hnsw_m)
        self.ef_search = int(ef_search)
        self.use_gpu = bool(use_gpu)
        self.pids: list[int] = []
        self.camids: list[int] = []
        self.paths: list[str] = []
        # The CPU index is the source of truth (training, adds, saving); searches on GPUs go
        # through a sharded clone made after the last change.
        self._index: faiss.Index | None = None
        self._gpu_index: faiss.Index | None = None
        self._nlist = 0
        if index_type in ("Flat", "HNSW"):
            self._set_index(self._make_index(0))

    @classmethod
    def from_config(cls, cfg, dim: int) -> ReIDIndex:
        """Builds an empty index from ``cfg.INDEX.*`` and ``cfg.TEST.METRIC``.

        Args:
            cfg: a reid_pbn config node.
            dim: feature dimension.
        """
        c = cfg.INDEX
        return cls(
            dim,
            index_type=c.TYPE,
            metric=cfg.TEST.METRIC,
            nlist=c.NLIST,
            nprobe=c.NPROBE,
            pq_m=c.PQ_M,
            pq_nbits=c.PQ_NBITS,
            hnsw_m=c.HNSW_M,
            use_gpu=c.USE_GPU,
        )

    # -- construction ---------------------------------------------------------------------------
    @property
    def _faiss_metric(self) -> int:
        return faiss.METRIC_INNER_PRODUCT if self.metric == "cosine" else faiss.METRIC_L2

    def _make_index(self, num_train: int) -> faiss.Index:
        d, metric = self.dim, self._faiss_metric
        if self.index_type == "Flat":
            return faiss.IndexFlatIP(d) if self.metric == "cosine" else faiss.IndexFlatL2(d)
        if self.index_type == "HNSW":
            index = faiss.IndexHNSWFlat(d, self.hnsw_m, metric)
            index.hnsw.efSearch = self.ef_search
            return index
        nlist = self.nlist or max(1, int(round(4 * math.sqrt(num_train))))
        nlist = min(nlist, num_train)
        quantizer = faiss.IndexFlatIP(d) if self.metric == "cosine" else faiss.IndexFlatL2(d)
        if self.index_type == "IVFFlat":
            index = faiss.IndexIVFFlat(quantizer, d, nlist, metric)
        else:
            index = faiss.IndexIVFPQ(quantizer, d, nlist, self.pq_m, self.pq_nbits, metric)
        return index

    def _set_index(self, cpu_index: faiss.Index) -> None:
        self._index, self._gpu_index = cpu_index, None
        self._nlist = 0
        if self.index_type in ("IVFFlat", "IVFPQ"):
            ivf = faiss.extract_index_ivf(cpu_index)
            self._nlist = int(ivf.nlist)
            ivf.nprobe = min(self.nprobe, self._nlist)
        if self.index_type == "HNSW" and self.use_gpu and _num_gpus() > 0:
            logger.info("HNSW has no GPU implementation in FAISS; it stays on CPU")

    @property
    def on_gpu(self) -> bool:
        """Whether searches run on GPUs (``use_gpu``, GPUs visible to FAISS, not HNSW)."""
        return self.use_gpu and self.index_type != "HNSW" and _num_gpus() > 0

    def _search_index(self, k: int) -> faiss.Index:
        if not (self.on_gpu and _use_gpu_for(k, True)):
            return self._index
        if self._gpu_index is None:
            self._gpu_index = _to_gpu(self._index, float16_tables=self.index_type == "IVFPQ")
        return self._gpu_index

    def _prepare(self, feats, name: str) -> np.ndarray:
        x = _as_float32(feats, name)
        if x.shape[1] != self.dim:
            raise ValueError(
                f"{name} have dimension {x.shape[1]} but the index holds {self.dim}-d vectors"
            )
        if self.metric == "cosine":
            # The same normalization as the metrics (no overflow for very large features).
            x = l2_normalize(torch.from_numpy(x)).numpy()
        else:
            _check_l2_range(x, name)
        return np.ascontiguousarray(x, dtype=np.float32)

    @property
    def is_trained(self) -> bool:
        """Whether the index can take vectors (always for Flat and HNSW)."""
        return self._index is not None and bool(self._index.is_trained)

    def train(self, feats) -> None:
        """Trains the coarse quantizer (and PQ codebooks) of an IVF index.

        Args:
            feats: (N, dim) training vectors, typically the gallery or a sample of it; IVF needs
                at least ``nlist`` of them (FAISS warns below ``39 * nlist``), IVF-PQ at least
                ``2 ** pq_nbits``.

        Raises:
            ValueError: too few vectors, wrong dimension, or non-finite rows (named).
        """
        x = self._prepare(feats, "training features")
        if self.index_type in ("Flat", "HNSW"):
            return
        if self.index_type == "IVFPQ" and len(x) < (1 << self.pq_nbits):
            raise ValueError(
                f"IVFPQ with {self.pq_nbits}-bit codes needs at least {1 << self.pq_nbits} "
                f"training vectors, got {len(x)}"
            )
        if self.count:
            raise ValueError("cannot retrain an index that already holds vectors")
        index = self._make_index(len(x))
        index.train(x)
        self._set_index(index)

    def add(
        self,
        feats,
        pids: Sequence[int] | np.ndarray | None = None,
        camids: Sequence[int] | np.ndarray | None = None,
        paths: Sequence[str] | None = None,
    ) -> None:
        """Adds gallery vectors and their metadata (an untrained IVF index trains on them first).

        Args:
            feats: (N, dim) features, numpy array or tensor.
            pids: identities (N,); -1 when not given.
            camids: camera ids (N,); -1 when not given.
            paths: image paths (N,); "" when not given.

        Raises:
            ValueError: wrong dimension, metadata length, non-finite rows, or (euclidean)
                rows whose squared distances could overflow float32 (the message names the
                first rows; nothing is added).
        """
        x = self._prepare(feats, "features")
        n = len(x)
        meta = {}
        given = (("pids", pids, -1), ("camids", camids, -1), ("paths", paths, ""))
        for name, values, fill in given:
            if values is None:
                meta[name] = [fill] * n
                continue
            if isinstance(values, torch.Tensor):
                values = values.tolist()
            values = list(np.asarray(values).tolist()) if name != "paths" else list(values)
            if len(values) != n:
                raise ValueError(f"got {n} features but {len(values)} {name}")
            meta[name] = [str(v) for v in values] if name == "paths" else [int(v) for v in values]
        if not self.is_trained:
            self.train(x)
        self._index.add(x)
        self._gpu_index = None
        self.pids += meta["pids"]
        self.camids += meta["camids"]
        self.paths += meta["paths"]

    @property
    def count(self) -> int:
        """Number of vectors in the index."""
        return 0 if self._index is None else int(self._index.ntotal)

    def __len__(self) -> int:
        return self.count

    # -- search -------------------------------------------------------------------------------
    #: See :data:`MISSING_ID`.
    MISSING = MISSING_ID

    def search(
        self, query_feats, k: int, *, return_valid: bool = False
    ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The k nearest gallery items of every query.

        Args:
            query_feats: (M, dim) query features.
            k: neighbours per query; capped at the number of indexed vectors.
            return_valid: also return the mask of real results.

        Returns:
            ``(distances, indices)``, numpy arrays of shape (M, k') with ``k' = min(k, len(self))``:
            float32 distances (cosine distance or squared L2, closest first) and int64 positions
            in the index (look them up with :meth:`lookup`, or in :attr:`pids`, :attr:`camids`,
            :attr:`paths`). Approximate indexes can find fewer than k' items for a query (IVF
            visits only ``nprobe`` lists, an HNSW search may not reach k' nodes); those trailing
            slots hold the distance ``inf`` and the position :attr:`MISSING` (``2**63 - 1``),
            never FAISS's ``-1``: indexing a list or array with it raises IndexError instead of
            silently returning the last item. With ``return_valid=True``, a third (M, k') bool
            array is True exactly where a slot holds a real result.

        Raises:
            ValueError: empty index, wrong dimension, k < 1, non-finite query rows (named), or
                (euclidean) query rows whose squared distances could overflow float32.
        """
        if self.count == 0:
            raise ValueError("the index is empty; add() gallery features first")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        x = self._prepare(query_feats, "query features")
        k = min(k, self.count)
        if self.index_type == "HNSW":
            self._index.hnsw.efSearch = max(self.ef_search, k)
        dist, idx = self._search_index(k).search(x, k)
        dist = dist.astype(np.float32, copy=False)
        idx = idx.astype(np.int64, copy=False)
        valid = idx >= 0
        if (idx >= self.count).any():
            raise RuntimeError(
                f"internal error: FAISS returned positions beyond the index's {self.count} vectors"
            )
        if self.metric == "cosine":
            dist = 1.0 - dist
        dist[~valid] = np.inf
        idx[~valid] = MISSING_ID
        # Euclidean distances of features above ~1e19 overflow float32 inside FAISS.
        check_finite_rows(
            np.where(valid, dist, 0.0), "search distances", label=lambda i: f"query {i}",
            hint=OVERFLOW_HINT,
        )
        return (dist, idx, valid) if return_valid else (dist, idx)

    def lookup(self, indices) -> dict[str, np.ndarray]:
        """Identities, cameras and image paths of search results.

        Args:
            indices: positions from :meth:`search` (any shape); :attr:`MISSING` is allowed.

        Returns:
            A dict of arrays with the shape of ``indices``: ``"pids"`` and ``"camids"`` (int64,
            -1 where missing), ``"paths"`` (object array of str, ``""`` where missing) and
            ``"valid"`` (bool, False where missing).

        Raises:
            IndexError: a position neither in ``[0, len(self))`` nor :attr:`MISSING`, in
                particular FAISS's ``-1`` (which plain indexing would read as the last item).
            TypeError: ``indices`` are not integers.
        """
        idx = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"indices must be integers, got {idx.dtype}")
        idx = idx.astype(np.int64)
        valid = idx != MISSING_ID
        wrong = valid & ((idx < 0) | (idx >= self.count))
        if wrong.any():
            raise IndexError(
                f"positions {idx[wrong][:5].tolist()} are not in the index (0..{self.count - 1});"
                " -1 is FAISS's 'no result' marker, which search() reports as ReIDIndex.MISSING"
            )
        found = idx[valid].tolist()
        pids = np.full(idx.shape, -1, dtype=np.int64)
        camids = np.full(idx.shape, -1, dtype=np.int64)
        paths = np.full(idx.shape, "", dtype=object)
        pids[valid] = [self.pids[i] for i in found]
        camids[valid] = [self.camids[i] for i in found]
        paths[valid] = np.array([self.paths[i] for i in found], dtype=object)
        return {"pids": pids, "camids": camids, "paths": paths, "valid": valid}

    # -- persistence --------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Writes ``index.faiss`` and ``metadata.json`` (no pickle) into ``directory``, atomically.

        Both files are written and fsynced in a new hidden folder beside ``directory``, which
        then takes its place in one step (see :mod:`._atomic_dir`). At every moment
        ``directory`` holds the complete old index or the complete new one, also when the save
        fails (disk full) or the process is killed; leftovers of a killed save are removed by
        the next save or load. Saves of one folder are serialized by a lock file
        ``.<name>.reid-index.lock`` beside it. A symbolic link is followed: the folder it
        points to is replaced and the link kept.

        Args:
            directory: output folder, created with its parents if missing. An existing folder
                must hold nothing but a ReIDIndex's files, since it is replaced as a whole.

        Returns:
            The folder path.

        Raises:
            ValueError: the index was never trained or filled.
            FileExistsError: ``directory`` is a file, or a folder holding other files.
            OSError: writing failed (e.g. disk full); the previous index is untouched.
        """
        if self._index is None:
            raise ValueError("nothing to save: the index was never trained or filled")
        target = Path(directory)
        if target.is_symlink():
            target = target.resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        with folder_lock(target) as locked:
            if locked:
                recover_locked(target)
            check_replaceable(target)
            tmp = new_sibling(target)
            os.mkdir(tmp)
            try:
                self._write_files(tmp)
                swap_in(tmp, target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return Path(directory)

    def _write_files(self, folder: Path) -> None:
        """Writes and fsyncs the index file, then the metadata, then the folder entry list."""
        digest = hashlib.sha256()
        with open(folder / INDEX_FILE, "xb") as f:

            def write(chunk: bytes) -> int:
                digest.update(chunk)
                return f.write(chunk)

            # Through Python's file object: a failed write (ENOSPC) raises here, and the
            # checksum is computed from the bytes written without reading the file again.
            faiss.write_index(self._index, faiss.PyCallbackIOWriter(write))
            f.flush()
            os.fsync(f.fileno())
        meta = {
            "format_version": FORMAT_VERSION,
            "dim": self.dim,
            "type": self.index_type,
            "metric": self.metric,
            "count": self.count,
            "params": {
                "nlist": self.nlist, "nprobe": self.nprobe, "pq_m": self.pq_m,
                "pq_nbits": self.pq_nbits, "hnsw_m": self.hnsw_m, "ef_search": self.ef_search,
            },
            "index_file": INDEX_FILE,
            "sha256": digest.hexdigest(),
            "faiss_version": getattr(faiss, "__version__", "unknown"),
            "pids": self.pids,
            "camids": self.camids,
            "paths": self.paths,
        }
        write_synced(folder / METADATA_FILE, json.dumps(meta).encode("utf-8"))
        fsync_dir(folder)

    @classmethod
    def load(cls, directory: str | os.PathLike, use_gpu: bool = True) -> ReIDIndex:
        """Reads an index written by :meth:`save`, treating the folder as untrusted.

        Before FAISS reads anything: every metadata field is checked (type, range, presence,
        list lengths against ``count``); ``index_file`` must be a plain file name of a regular
        file in the folder (no ``..``, absolute path, subfolder or symbolic link); its SHA-256
        must match; and the FAISS file's structure is walked and checked against the metadata
        (type, metric, dimension, count) and against its own size, so it cannot make FAISS
        allocate more than its bytes pay for. After reading, the index's own type, metric,
        dimension and count are checked again. The folder is read through one open handle, so
        a concurrent :meth:`save` (which swaps folders) cannot mix two versions.

        Args:
            directory: the folder given to :meth:`save`.
            use_gpu: search on the GPU when FAISS sees one.

        Returns:
            The index, with its metadata.

        Raises:
            FileNotFoundError: the folder, its metadata or its index file is missing.
            IndexFormatError: anything malformed, inconsistent or unsupported; the message
                names the file and the field.
        """
        folder = Path(directory)
        recover(folder.resolve() if folder.is_symlink() else folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"index directory {folder} does not exist")
        for _ in range(3):
            try:
                return cls._load_folder(folder, use_gpu)
            except FolderReplacedError:
                continue
        raise IndexFormatError(f"{folder} was replaced three times while being read; try again")

    @classmethod
    def _load_folder(cls, folder: Path, use_gpu: bool) -> ReIDIndex:
        """One read of the folder through one open handle (see :meth:`load`)."""
        meta_path = folder / METADATA_FILE
        dir_fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            with open_plain_file(folder, dir_fd, METADATA_FILE, "metadata") as f:
                raw = f.read()
            meta = parse_metadata(raw, str(meta_path), format_version=FORMAT_VERSION,
                                  index_types=INDEX_TYPES)
            index_path = folder / meta["index_file"]
            with open_plain_file(folder, dir_fd, meta["index_file"], "index") as f:
                cpu_index = read_checked_index(f, index_path, meta)
        finally:
            os.close(dir_fd)
        p = meta["params"]
        obj = cls(
            meta["dim"], meta["type"], meta["metric"], nlist=p["nlist"], nprobe=p["nprobe"],
            pq_m=p["pq_m"], pq_nbits=p["pq_nbits"], hnsw_m=p["hnsw_m"],
            ef_search=p["ef_search"], use_gpu=use_gpu,
        )
        obj._set_index(cpu_index)
        obj.pids = list(meta["pids"])
        obj.camids = list(meta["camids"])
        obj.paths = list(meta["paths"])
        return obj

    def __repr__(self) -> str:
        where = "GPU" if self.on_gpu else "CPU"
        return (f"ReIDIndex(type={self.index_type}, metric={self.metric}, dim={self.dim}, "
                f"count={self.count}, {where})")
