"""Retrieval index on FAISS: gallery features plus metadata, exact or approximate search,
GPU sharding when FAISS sees GPUs, and a checked on-disk format without pickle.

On-disk layout of ``ReIDIndex.save(dir)``::

    dir/index.faiss     the FAISS index (faiss.write_index of the CPU index)
    dir/metadata.json   {"format_version": 1, "dim", "type", "metric", "count", "params",
                         "pids", "camids", "paths", "index_file", "sha256", "faiss_version"}

``ReIDIndex.load(dir)`` checks the version, the SHA-256 of the index file, and that the index
agrees with the metadata (dimension, count) before using it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["ReIDIndex", "IndexFormatError", "exact_knn", "INDEX_TYPES", "FORMAT_VERSION"]

FORMAT_VERSION = 1
INDEX_TYPES = ("Flat", "IVFFlat", "IVFPQ", "HNSW")
INDEX_FILE = "index.faiss"
METADATA_FILE = "metadata.json"


class IndexFormatError(ValueError):
    """An index directory is missing a file, damaged, or from an unsupported format version."""


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
    if isinstance(x, torch.Tensor):
        # numpy has no bfloat16: convert on the tensor's side first.
        x = x.detach().to(torch.float32).cpu().numpy()
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {arr.shape}")
    return arr


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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ReIDIndex:
    """A FAISS index over gallery features with their identities, cameras and image paths.

    Distances returned by :meth:`search` are the cosine distance ``1 - cos`` for
    ``metric="cosine"`` (features are L2-normalized on the way in; the index stores inner
    products) and the *squared* L2 distance for ``metric="euclidean"``, closest first.

    Index types: ``"Flat"`` (exact), ``"IVFFlat"`` and ``"IVFPQ"`` (inverted lists, need
    :meth:`train`; the first :meth:`add` trains on its vectors when not trained yet) and
    ``"HNSW"`` (graph, CPU only). Training, adds and saving work on a CPU index; with
    ``use_gpu`` and ``faiss.get_num_gpus() > 0`` searches run on a clone of it on this process's
    current CUDA device (with one cached ``StandardGpuResources``; made again
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
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            x = x / np.maximum(norms, 1e-12)
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
            ValueError: too few vectors or wrong dimension.
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
            ValueError: wrong dimension or metadata length.
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
    def search(self, query_feats, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest gallery items of every query.

        Args:
            query_feats: (M, dim) query features.
            k: neighbours per query; capped at the number of indexed vectors.

        Returns:
            ``(distances, indices)``, numpy arrays of shape (M, k'): float32 distances (cosine
            distance or squared L2, closest first) and int64 positions in the index (use
            :attr:`pids`, :attr:`camids`, :attr:`paths` to look them up). Approximate indexes
            may return -1 (with an infinite distance) when they find fewer than k'.

        Raises:
            ValueError: empty index, wrong dimension, or k < 1.
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
        missing = idx < 0
        if self.metric == "cosine":
            dist = 1.0 - dist
        dist[missing] = np.inf
        return dist, idx.astype(np.int64, copy=False)

    # -- persistence --------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Writes ``index.faiss`` and ``metadata.json`` (no pickle) into ``directory``.

        Args:
            directory: output folder, created if missing.

        Returns:
            The folder path.
        """
        if self._index is None:
            raise ValueError("nothing to save: the index was never trained or filled")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        index_path = out / INDEX_FILE
        faiss.write_index(self._index, str(index_path))
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
            "sha256": _sha256(index_path),
            "faiss_version": getattr(faiss, "__version__", "unknown"),
            "pids": self.pids,
            "camids": self.camids,
            "paths": self.paths,
        }
        tmp = out / (METADATA_FILE + ".tmp")
        tmp.write_text(json.dumps(meta), encoding="utf-8")
        tmp.replace(out / METADATA_FILE)
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike, use_gpu: bool = True) -> ReIDIndex:
        """Reads an index written by :meth:`save`, after checking it.

        Args:
            directory: the folder given to :meth:`save`.
            use_gpu: search on the GPU when FAISS sees one.

        Returns:
            The index, with its metadata.

        Raises:
            FileNotFoundError: the folder, its metadata or its index file is missing.
            IndexFormatError: unreadable metadata, unsupported version, checksum mismatch, or an
                index that disagrees with its metadata.
        """
        folder = Path(directory)
        meta_path = folder / METADATA_FILE
        if not folder.is_dir():
            raise FileNotFoundError(f"index directory {folder} does not exist")
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{meta_path} is missing: {folder} is not a ReIDIndex directory (or is damaged)"
            )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise IndexFormatError(f"{meta_path} is not valid JSON: {e}") from e
        version = meta.get("format_version") if isinstance(meta, dict) else None
        if version != FORMAT_VERSION:
            raise IndexFormatError(
                f"{meta_path} has format_version {version!r}; this reid_pbn reads version "
                f"{FORMAT_VERSION}"
            )
        required = ("dim", "type", "metric", "count", "params", "index_file", "sha256",
                    "pids", "camids", "paths")
        missing = [k for k in required if k not in meta]
        if missing:
            raise IndexFormatError(f"{meta_path} lacks the keys {missing}")
        index_path = folder / meta["index_file"]
        if not index_path.is_file():
            raise FileNotFoundError(f"index file {index_path} is missing")
        digest = _sha256(index_path)
        if digest != meta["sha256"]:
            raise IndexFormatError(
                f"checksum mismatch for {index_path}: the file is damaged or was replaced "
                f"(sha256 {digest}, metadata says {meta['sha256']})"
            )
        try:
            cpu_index = faiss.read_index(str(index_path))
        except RuntimeError as e:
            raise IndexFormatError(f"FAISS cannot read {index_path}: {e}") from e
        if cpu_index.d != meta["dim"] or cpu_index.ntotal != meta["count"]:
            raise IndexFormatError(
                f"{index_path} holds {cpu_index.ntotal} vectors of dimension {cpu_index.d}, "
                f"the metadata says {meta['count']} of dimension {meta['dim']}"
            )
        n = meta["count"]
        if not (len(meta["pids"]) == len(meta["camids"]) == len(meta["paths"]) == n):
            raise IndexFormatError(f"{meta_path}: metadata lists do not have {n} entries")
        p = meta["params"]
        obj = cls(
            meta["dim"], meta["type"], meta["metric"], nlist=p.get("nlist", 0),
            nprobe=p.get("nprobe", 32), pq_m=p.get("pq_m", 64), pq_nbits=p.get("pq_nbits", 8),
            hnsw_m=p.get("hnsw_m", 32), ef_search=p.get("ef_search", 128), use_gpu=use_gpu,
        )
        obj._set_index(cpu_index)
        obj.pids = [int(v) for v in meta["pids"]]
        obj.camids = [int(v) for v in meta["camids"]]
        obj.paths = [str(v) for v in meta["paths"]]
        return obj

    def __repr__(self) -> str:
        where = "GPU" if self.on_gpu else "CPU"
        return (f"ReIDIndex(type={self.index_type}, metric={self.metric}, dim={self.dim}, "
                f"count={self.count}, {where})")
