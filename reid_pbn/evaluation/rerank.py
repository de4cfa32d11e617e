"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017) from k-nearest-neighbour lists and sparse matrices.

The classic implementation (the paper's code, copied by fast-reid and torchreid) builds several
dense ``N x N`` matrices over the N = Q + G probe and gallery items: the distances, their full
argsort, the encoding ``V`` and the Jaccard distances. Yet every quantity it uses is local:

* the k-reciprocal sets only read the first ``k1 + 1`` entries of each ranking list, and the
  local query expansion the first ``k2``; an exact FAISS index gives those lists;
* ``V`` has non-zeros only on each item's expanded k-reciprocal set, so it is a sparse matrix
  with ``O(N * k1)`` entries (and ``O(N * k1 * k2)`` after query expansion);
* the Jaccard distance of a pair is ``1 - m / (2 - m)`` with ``m = sum_j min(V[p, j], V[g, j])``,
  which is non-zero only where the supports meet, so it comes from a sparse join;
* the original distance is row-normalized by each item's largest distance to any other item
  (``original_dist / max(original_dist, axis=0)`` transposed), one max per row, computed in
  blocks; the final ``(1 - lambda) * jaccard + lambda * original`` is only needed for the query x
  gallery pairs.

Memory therefore grows with ``(Q + G) * k``, plus one ``chunk x G`` block of final distances at a
time. :meth:`KReciprocalReRanker.iter_chunks` yields those blocks (what :func:`evaluate` uses),
:meth:`~KReciprocalReRanker.topk` keeps the k best per query for large inputs, and
:func:`re_ranking` returns the dense ``Q x G`` matrix for small ones.

The original distance is the squared Euclidean distance between features, L2-normalized first
when ``metric="cosine"`` (the paper's code squares Euclidean distances). With neighbour lists that
agree with the dense argsort (no exact ties), the results equal the dense algorithm's up to float
rounding; the test suite checks this against a transcription of the classic code.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch

from .checks import OVERFLOW_HINT, check_finite_rows
from .distance import PairwiseDistance, as_feature_tensor, check_metric, l2_normalize
from .index import exact_knn
from .options import RerankOptions
from .rank import auto_chunk_size

logger = logging.getLogger(__name__)

__all__ = ["KReciprocalReRanker", "re_ranking"]

# Working bytes per query-gallery pair of a final-distance block (float64 Jaccard accumulator,
# float32 output and original distance).
_BYTES_PER_PAIR = 24
# Elements of the temporary (pairs x k x k) comparison arrays built at once.
_BLOCK_ELEMS = 1 << 24


def _reciprocal_sets(knn: np.ndarray, k: int) -> np.ndarray:
    """k-reciprocal neighbours: j in the first k+1 of i's list and i in the first k+1 of j's.

    Args:
        knn: (N, K) neighbour lists, nearest first, ``K >= min(k + 1, N)``.
        k: the k of the definition.

    Returns:
        (N, w) array, ``w = min(k + 1, K)``: row i keeps i's forward list where the neighbour is
        reciprocal and holds -1 elsewhere (forward order, as the classic code lists them).
    """
    w = min(k + 1, knn.shape[1])
    forward = knn[:, :w]
    out = np.full_like(forward, -1)
    step = max(1, _BLOCK_ELEMS // (w * w))
    for s in range(0, len(forward), step):
        fw = forward[s:s + step]
        back = knn[fw, :w]
        hit = (back == np.arange(s, s + len(fw))[:, None, None]).any(-1)
        out[s:s + step] = np.where(hit, fw, -1)
    return out


def _item_label(num_query: int):
    """Names row i of the stacked (queries, gallery) items as a query or a gallery item."""
    return lambda i: f"query {i}" if i < num_query else f"gallery item {i - num_query}"


class KReciprocalReRanker:
    """Sparse k-reciprocal re-ranking of a query set against a gallery.

    Building the object computes the neighbour lists, the row maxima and the sparse encoding
    ``V``; the final distances are then produced block by block.

    Args:
        query_feats: (Q, D) query features, numpy array or tensor.
        gallery_feats: (G, D) gallery features.
        k1: neighbourhood size of the k-reciprocal sets.
        k2: neighbours averaged in the local query expansion (1 disables it).
        lambda_value: weight of the original distance in the final distance.
        metric: ``"cosine"`` (features L2-normalized first) or ``"euclidean"``.
        use_gpu: run the FAISS neighbour search on GPUs when FAISS sees any.

    Raises:
        ValueError: bad parameters, non-finite features, squared distances that overflow
            float32 (large features under ``"euclidean"``), or features that are all identical.
    """

    def __init__(
        self,
        query_feats,
        gallery_feats,
        k1: int = RerankOptions.k1,
        k2: int = RerankOptions.k2,
        lambda_value: float = RerankOptions.lambda_value,
        *,
        metric: str = "cosine",
        use_gpu: bool = True,
    ) -> None:
        check_metric(metric)
        RerankOptions(k1, k2, lambda_value)  # the one range check of the parameters
        q = as_feature_tensor(query_feats, "query_feats")
        g = as_feature_tensor(gallery_feats, "gallery_feats").to(q.device)
        if q.shape[1] != g.shape[1]:
            raise ValueError(f"query features have dimension {q.shape[1]}, gallery {g.shape[1]}")
        x = torch.cat([q, g])
        if metric == "cosine":
            x = l2_normalize(x)
        self.k1, self.k2, self.lambda_value = k1, k2, lambda_value
        self.num_query, self.num_gallery = q.shape[0], g.shape[0]
        n = x.shape[0]
        self._x = x
        self._gallery_dist = PairwiseDistance(x[self.num_query:], "euclidean")

        x_np = x.cpu().numpy()
        num_nb = min(n, max(k1 + 1, k2))
        knn_d2, knn = exact_knn(x_np, x_np, num_nb, metric="l2", use_gpu=use_gpu)
        # Overflowing squared distances would make the neighbour lists arbitrary and the
        # re-ranked distances NaN; refuse them here, before any work builds on them.
        check_finite_rows(knn_d2, "re-ranking: squared distances to the nearest neighbours",
                          label=_item_label(self.num_query), hint=OVERFLOW_HINT)
        self._row_max = self._farthest(x)
        check_finite_rows(self._row_max[:, None], "re-ranking: largest squared distances",
                          label=_item_label(self.num_query), hint=OVERFLOW_HINT)
        if not (self._row_max > 0).all():
            raise ValueError(
                "re-ranking needs at least two distinct features: every feature is identical, "
                "so the distances cannot be normalized by the farthest item"
            )

        # Expanded k-reciprocal sets: R(i, k1) plus every R(c, k1/2) of a c in R(i, k1) that
        # shares more than 2/3 of its members with R(i, k1).
        r1 = _reciprocal_sets(knn, k1)
        r2 = _reciprocal_sets(knn, int(np.around(k1 / 2.0)))
        size2 = (r2 >= 0).sum(1)
        pi, pj = np.nonzero(r1 >= 0)
        cand = r1[pi, pj]
        accept = np.zeros(len(cand), dtype=bool)
        w1, w2 = r1.shape[1], r2.shape[1]
        step = max(1, _BLOCK_ELEMS // (w1 * w2))
        for s in range(0, len(cand), step):
            c2 = r2[cand[s:s + step]]
            same = (c2[:, :, None] == r1[pi[s:s + step]][:, None, :]) & (c2[:, :, None] >= 0)
            inter = same.any(-1).sum(1)
            accept[s:s + step] = 3 * inter > 2 * size2[cand[s:s + step]]
        extra = r2[cand[accept]]
        e_rows = np.concatenate([pi, np.repeat(pi[accept], w2)])
        e_cols = np.concatenate([cand, extra.reshape(-1)])
        keep = e_cols >= 0
        lin = np.unique(e_rows[keep] * n + e_cols[keep])
        e_rows, e_cols = lin // n, lin % n

        d2 = self._pair_sq_dist(e_rows, e_cols, knn, knn_d2)
        weight = np.exp(-d2 / self._row_max[e_rows].astype(np.float64))
        weight /= np.bincount(e_rows, weights=weight, minlength=n)[e_rows]
        v = sp.csr_matrix((weight.astype(np.float32), (e_rows, e_cols)), shape=(n, n))
        if k2 != 1:
            kk = min(k2, n)
            qe = sp.csr_matrix(
                (np.full(n * kk, 1.0 / kk, dtype=np.float32),
                 (np.repeat(np.arange(n), kk), knn[:, :kk].reshape(-1))),
                shape=(n, n),
            )
            v = (qe @ v).tocsr()
        v.eliminate_zeros()
        self._v_query = v[: self.num_query].tocsr()
        self._v_gallery = v[self.num_query:].tocsc()
        logger.info(
            "re-ranking: %d x %d, k1=%d, k2=%d, lambda=%.2f, %d non-zeros in V",
            self.num_query, self.num_gallery, k1, k2, lambda_value, v.nnz,
        )

    def _farthest(self, x: torch.Tensor) -> np.ndarray:
        """Each item's largest squared distance to any item (the classic row normalizer)."""
        dist = PairwiseDistance(x, "euclidean")
        out = np.empty(x.shape[0], dtype=np.float32)
        step = auto_chunk_size(x.shape[0], x.shape[0], bytes_per_pair=8)
        for s in range(0, x.shape[0], step):
            out[s:s + step] = dist(x[s:s + step]).amax(dim=1).cpu().numpy()
        return out

    def _pair_sq_dist(
        self, rows: np.ndarray, cols: np.ndarray, knn: np.ndarray, knn_d2: np.ndarray
    ) -> np.ndarray:
        """Squared distances of (row, col) pairs: from the neighbour lists where listed, else
        computed from the features."""
        out = np.empty(len(rows), dtype=np.float64)
        found = np.zeros(len(rows), dtype=bool)
        step = max(1, _BLOCK_ELEMS // knn.shape[1])
        for s in range(0, len(rows), step):
            hit = knn[rows[s:s + step]] == cols[s:s + step, None]
            f = hit.any(1)
            found[s:s + step] = f
            pos = hit.argmax(1)
            out[s:s + step] = knn_d2[rows[s:s + step], pos]
        missing = np.nonzero(~found)[0]
        if len(missing):
            x = self._x
            sq = (x * x).sum(1)
            step = max(1, _BLOCK_ELEMS // x.shape[1])
            for s in range(0, len(missing), step):
                m = missing[s:s + step]
                r = torch.from_numpy(rows[m]).to(x.device)
                c = torch.from_numpy(cols[m]).to(x.device)
                dots = (x[r] * x[c]).sum(1)
                out[m] = (sq[r] + sq[c] - 2.0 * dots).cpu().numpy()
        return out

    def _jaccard(self, start: int, stop: int) -> np.ndarray:
        """Jaccard distances of queries ``start:stop`` to the whole gallery, from the sparse
        join of their V rows with the gallery's V columns."""
        sub = self._v_query[start:stop]
        c, G = stop - start, self.num_gallery
        ent_row = np.repeat(np.arange(c), np.diff(sub.indptr))
        ent_col, ent_val = sub.indices, sub.data
        colptr = self._v_gallery.indptr
        cnt = colptr[ent_col + 1] - colptr[ent_col]
        rep = np.repeat(np.arange(len(ent_col)), cnt)
        offsets = np.arange(len(rep)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        pos = colptr[ent_col][rep] + offsets
        g = self._v_gallery.indices[pos]
        mins = np.minimum(ent_val[rep], self._v_gallery.data[pos])
        tm = np.bincount(ent_row[rep] * G + g, weights=mins, minlength=c * G).reshape(c, G)
        return (1.0 - tm / (2.0 - tm)).astype(np.float32)

    def block(self, start: int, stop: int) -> np.ndarray:
        """Final re-ranked distances of queries ``start:stop`` to every gallery item.

        Args:
            start: first query index.
            stop: one past the last query index.

        Returns:
            (stop - start, G) float32 array.

        Raises:
            ValueError: some distance is NaN or inf (named by query).
        """
        orig = self._gallery_dist(self._x[start:stop]).cpu().numpy()
        orig /= self._row_max[start:stop, None]
        out = self._jaccard(start, stop)
        out *= np.float32(1.0 - self.lambda_value)
        out += orig * np.float32(self.lambda_value)
        # Every consumer (iter_chunks, distances, topk, evaluate) reads blocks from here.
        check_finite_rows(out, "re-ranked distances", label=lambda i: f"query {i}",
                          hint=OVERFLOW_HINT, offset=start, total=self.num_query)
        return out

    def iter_chunks(self, chunk_size: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yields ``(first_query, block)`` pairs of final distances, in query order.

        Args:
            chunk_size: queries per block; None chooses it from the available memory.
        """
        step = chunk_size or auto_chunk_size(
            self.num_gallery, max(1, self.num_query), _BYTES_PER_PAIR
        )
        for s in range(0, self.num_query, step):
            yield s, self.block(s, min(s + step, self.num_query))

    def distances(self) -> np.ndarray:
        """The dense (Q, G) float32 matrix of final distances (for small inputs)."""
        out = np.empty((self.num_query, self.num_gallery), dtype=np.float32)
        for s, blk in self.iter_chunks():
            out[s:s + len(blk)] = blk
        return out

    def topk(self, k: int, chunk_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k closest gallery items of every query under the re-ranked distance.

        Args:
            k: neighbours kept per query (capped at the gallery size).
            chunk_size: queries per block; None chooses it from memory.

        Returns:
            ``(distances, indices)``, both (Q, k), closest first; ties keep gallery order.
        """
        k = min(k, self.num_gallery)
        dists = np.empty((self.num_query, k), dtype=np.float32)
        idx = np.empty((self.num_query, k), dtype=np.int64)
        for s, blk in self.iter_chunks(chunk_size):
            part = np.argpartition(blk, k - 1, axis=1)[:, :k] if k < blk.shape[1] else None
            if part is None:
                part = np.broadcast_to(np.arange(blk.shape[1]), blk.shape)
            vals = np.take_along_axis(blk, part, 1)
            order = np.lexsort((part, vals), axis=1)
            idx[s:s + len(blk)] = np.take_along_axis(part, order, 1)
            dists[s:s + len(blk)] = np.take_along_axis(vals, order, 1)
        return dists, idx


def re_ranking(
    query_feats,
    gallery_feats,
    k1: int = RerankOptions.k1,
    k2: int = RerankOptions.k2,
    lambda_value: float = RerankOptions.lambda_value,
    *,
    metric: str = "cosine",
) -> np.ndarray:
    """Dense (Q, G) k-reciprocal re-ranked distances (Zhong et al., CVPR 2017).

    Computed sparsely (see the module docstring); only the returned matrix is ``Q x G``. For
    large inputs use :class:`KReciprocalReRanker` and its ``iter_chunks`` / ``topk``, or
    ``evaluate(..., rerank={...})``, which never holds the matrix.

    Args:
        query_feats: (Q, D) query features.
        gallery_feats: (G, D) gallery features.
        k1: neighbourhood size of the k-reciprocal sets.
        k2: neighbours averaged in the local query expansion (1 disables it).
        lambda_value: weight of the original distance.
        metric: ``"cosine"`` or ``"euclidean"``.

    Returns:
        (Q, G) float32 distances.
    """
    return KReciprocalReRanker(
        query_feats, gallery_feats, k1, k2, lambda_value, metric=metric
    ).distances()
