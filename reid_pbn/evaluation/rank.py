"""Exact re-ID ranking metrics (CMC, mAP, mINP) on the Market-1501 protocol, computed without
argsorting the distance matrix.

The protocol (GUIDE section 3): for every query, gallery items with the same identity *and* the
same camera are removed; a query with no remaining true match is skipped; the filtered gallery
is ordered by distance, ties broken by gallery index. Peer toolkits (fast-reid, torchreid)
``argsort`` the whole ``Q x G`` matrix. Here a true match's 0-based rank is the number of kept
gallery items that come before it in the (distance, gallery index) order, and only the items no
farther than the query's last true match can. Blocks of query rows are processed one at a time,
so memory is ``O(chunk x G)``; see :func:`chunk_match_ranks` for the counting itself. The CMC,
AP and INP that follow are those of fast-reid's ``evaluate_rank`` (``eval_market1501``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .checks import OVERFLOW_HINT, check_finite_rows, check_unit_interval

logger = logging.getLogger(__name__)

__all__ = ["evaluate_rank", "RankResult", "rank_metrics_from_chunks", "auto_chunk_size"]

# Working memory per query-gallery pair of a block, in bytes: the float32 distance, the candidate
# mask, and in the worst case (every item a candidate) its index, row, column, value and two keys.
BYTES_PER_PAIR = 48
#: What to do when a given distance matrix holds NaN or inf.
DISTANCE_OVERFLOW_HINT = (
    f"Distances must be finite. {OVERFLOW_HINT}; fix NaN features at their source"
)
# Bits of a float32 sort key left for the block row and the gallery column (63 minus the 32
# distance bits): blocks whose rows do not fit are split.
_ROW_COL_KEY_BITS = 31


def auto_chunk_size(num_gallery: int, num_query: int, bytes_per_pair: int = BYTES_PER_PAIR) -> int:
    """Chooses how many query rows to process at once from the memory available now.

    A block gets an eighth of the available memory, at least 64 MiB and at most 512 MiB, so the
    peak stays far below the ``Q x G`` matrix even on MSMT17-size galleries.

    Args:
        num_gallery: number of gallery items (columns of a block).
        num_query: number of queries (no block is larger).
        bytes_per_pair: working bytes per query-gallery pair of a block.

    Returns:
        The number of query rows per block, between 1 and ``num_query``.
    """
    budget = min(512 << 20, max(64 << 20, _available_memory() // 8))
    rows = budget // max(1, num_gallery * bytes_per_pair)
    return int(max(1, min(num_query, rows)))


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def as_int_array(x, name: str) -> np.ndarray:
    """Converts ids (list, numpy array or tensor) into a 1-D ``int64`` numpy array.

    Args:
        x: the ids.
        name: argument name used in the error message.

    Returns:
        A 1-D ``int64`` array.

    Raises:
        ValueError: ``x`` is not one-dimensional.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr.astype(np.int64, copy=False)


def as_id_arrays(q_pids, g_pids, q_camids, g_camids) -> tuple[np.ndarray, ...]:
    """:func:`as_int_array` of the query and gallery identities and cameras.

    Args:
        q_pids: query identities.
        g_pids: gallery identities.
        q_camids: query camera ids.
        g_camids: gallery camera ids.

    Returns:
        ``(qp, gp, qc, gc)``: 1-D ``int64`` arrays, in the argument order.

    Raises:
        ValueError: one of them is not one-dimensional.
    """
    return (as_int_array(q_pids, "q_pids"), as_int_array(g_pids, "g_pids"),
            as_int_array(q_camids, "q_camids"), as_int_array(g_camids, "g_camids"))


class PidIndex:
    """Gallery positions grouped by identity, to list each query's same-identity gallery items.

    This replaces a ``Q x G`` identity comparison: a block of queries gets its (row, column)
    pairs from the groups, columns ascending within a row.

    Args:
        g_pids: gallery identities, shape (G,).
    """

    def __init__(self, g_pids: np.ndarray) -> None:
        order = np.argsort(g_pids, kind="stable")
        self._order = order
        self._pids, self._starts, self._counts = np.unique(
            g_pids[order], return_index=True, return_counts=True
        )

    def count(self, q_pids: np.ndarray) -> np.ndarray:
        """Number of gallery items sharing each query's identity."""
        if len(self._pids) == 0:
            return np.zeros(len(q_pids), dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._pids, q_pids), len(self._pids) - 1)
        return np.where(self._pids[pos] == q_pids, self._counts[pos], 0)

    def pairs(self, q_pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, gallery column) of every same-identity pair, row-major, columns ascending.

        Args:
            q_pids: identities of a block of queries.

        Returns:
            ``rows`` (indices into ``q_pids``) and ``cols`` (gallery indices), both ``int64``.
        """
        cnt = self.count(q_pids)
        total = int(cnt.sum())
        rows = np.repeat(np.arange(len(q_pids), dtype=np.int64), cnt)
        if total == 0:
            return rows, np.zeros(0, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._pids, q_pids), len(self._pids) - 1)
        offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        cols = self._order[np.repeat(self._starts[pos], cnt) + offsets]
        return rows, cols


def _float32_order_bits(v: np.ndarray) -> np.ndarray:
    """Maps float32 values to ``int64`` in [0, 2**32) with the same order (as unsigned ints).

    The float's bits, read as int32, order non-negative floats; negative floats get their
    magnitude bits flipped. ``+ 0.0`` turns -0.0 into +0.0 so the two compare equal as floats do.
    """
    bits = (v + np.float32(0.0)).view(np.int32).astype(np.int64)
    np.bitwise_xor(bits, 0x7FFFFFFF, out=bits, where=bits < 0)
    bits += 1 << 31
    return bits


def chunk_match_ranks(
    dist: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    is_match: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """0-based rank of every true match of a block of queries in its filtered gallery list.

    Only kept items no farther than the query's last true match can come before a match, so
    only those *candidates* are gathered (``np.flatnonzero``). For float32 distances each
    candidate gets a unique ``int64`` key (block row, distance bits, gallery index) and one
    ``np.sort`` of the keys (SIMD, no argsort) orders them by (row, distance, index); a match's
    rank is its key's position minus its row's first position. float64 distances, which do not
    fit in such a key, use ``np.lexsort`` instead.

    Args:
        dist: distances of the block, shape (c, G), float32 or float64; not modified.
        rows: block row of every same-identity pair, row-major (``int64``).
        cols: gallery column of every same-identity pair, ascending within a row.
        is_match: for each pair, True if it is a true match (other camera), False if the item
            is removed by the protocol (same camera).

    Returns:
        ``(match_rows, ranks)``: for each true match its block row and its rank among the kept
        items ordered by (distance, gallery index); sorted by row, then rank.
    """
    c, G = dist.shape
    mrows, mcols = rows[is_match], cols[is_match]
    if len(mrows) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    col_bits = max(1, (G - 1).bit_length())
    row_bits = _ROW_COL_KEY_BITS - col_bits
    if dist.dtype == np.float32 and c > (1 << row_bits):
        # Very large galleries leave fewer key bits for the row: split the block.
        step = 1 << row_bits
        out_r, out_k = [], []
        for s in range(0, c, step):
            sel = (rows >= s) & (rows < s + step)
            r_, k_ = chunk_match_ranks(dist[s:s + step], rows[sel] - s, cols[sel], is_match[sel])
            out_r.append(r_ + s)
            out_k.append(k_)
        return np.concatenate(out_r), np.concatenate(out_k)

    mdist = dist[mrows, mcols]
    tmax = np.full(c, -np.inf, dtype=dist.dtype)
    urows, ustart = np.unique(mrows, return_index=True)
    tmax[urows] = np.maximum.reduceat(mdist, ustart)
    cand = dist <= tmax[:, None]
    cand[rows[~is_match], cols[~is_match]] = False
    flat = np.flatnonzero(cand)
    del cand
    r = flat // G
    g = flat - r * G
    v = dist.reshape(-1)[flat]
    row_start = np.cumsum(np.bincount(r, minlength=c)) - np.bincount(r, minlength=c)
    if dist.dtype == np.float32:
        shift = 32 + col_bits
        keys = (r << shift) | (_float32_order_bits(v) << col_bits) | g
        keys.sort()
        mkeys = (mrows << shift) | (_float32_order_bits(mdist) << col_bits) | mcols
        mkeys.sort()
        m_r = mkeys >> shift
        ranks = np.searchsorted(keys, mkeys) - row_start[m_r]
        return m_r, ranks
    order = np.lexsort((g, v, r))
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    ranks = position[np.searchsorted(flat, mrows * G + mcols)] - row_start[mrows]
    by_rank = np.lexsort((ranks, mrows))
    return mrows[by_rank], ranks[by_rank]


@dataclass
class RankResult:
    """Per-query ranking statistics collected over blocks of queries.

    Attributes:
        cmc: CMC curve averaged over valid queries, float32, length ``max_rank``.
        ap: average precision of every valid query (query order), float64.
        inp: inverse negative penalty of every valid query, float64.
        num_queries: number of queries evaluated.
        num_valid: number of queries with at least one true match left.
        cmc_long: the CMC curve up to ``max(max_rank, 10)`` (capped at the gallery size), for
            Rank-k figures beyond ``max_rank``.
    """

    cmc: np.ndarray
    ap: np.ndarray
    inp: np.ndarray
    num_queries: int
    num_valid: int
    cmc_long: np.ndarray = field(repr=False)

    @property
    def num_without_match(self) -> int:
        """Queries skipped because no true match of theirs is left in the gallery."""
        return self.num_queries - self.num_valid


class _RankStats:
    def __init__(self) -> None:
        self.first: list[np.ndarray] = []
        self.ap: list[np.ndarray] = []
        self.inp: list[np.ndarray] = []
        self.num_queries = 0

    def update(self, c: int, rows: np.ndarray, ranks: np.ndarray) -> None:
        rk = ranks.astype(np.float64)
        self.num_queries += c
        counts = np.bincount(rows, minlength=c)
        valid = counts > 0
        starts = np.cumsum(counts) - counts
        k = np.arange(len(rows)) - starts[rows]
        ap_sum = np.bincount(rows, weights=(k + 1.0) / (rk + 1.0), minlength=c)
        nv = counts[valid]
        self.ap.append(ap_sum[valid] / nv)
        self.inp.append(nv / (rk[starts[valid] + nv - 1] + 1.0))
        self.first.append(rk[starts[valid]].astype(np.int64))

    def result(self, max_rank: int, num_gallery: int) -> RankResult:
        first = np.concatenate(self.first) if self.first else np.zeros(0, np.int64)
        num_valid = len(first)
        long_len = min(max(max_rank, 10), num_gallery)
        hist = np.bincount(np.minimum(first, long_len), minlength=long_len + 1)[:long_len]
        if num_valid:
            cmc_long = (np.cumsum(hist) / num_valid).astype(np.float32)
        else:
            cmc_long = np.zeros(long_len, dtype=np.float32)
        return RankResult(
            cmc=cmc_long[:max_rank].copy(),
            ap=np.concatenate(self.ap) if self.ap else np.zeros(0),
            inp=np.concatenate(self.inp) if self.inp else np.zeros(0),
            num_queries=self.num_queries,
            num_valid=num_valid,
            cmc_long=cmc_long,
        )


def check_max_rank(max_rank: int, num_gallery: int) -> int:
    """Caps ``max_rank`` at the gallery size with a warning, as fast-reid does.

    Args:
        max_rank: requested length of the CMC curve.
        num_gallery: number of gallery items.

    Returns:
        ``min(max_rank, num_gallery)``.
    """
    if max_rank < 1:
        raise ValueError(f"max_rank must be at least 1, got {max_rank}")
    if num_gallery < max_rank:
        logger.warning(
            "Number of gallery samples is quite small (%d); max_rank reduced from %d to %d",
            num_gallery, max_rank, num_gallery,
        )
        return num_gallery
    return max_rank


def rank_metrics_from_chunks(
    chunks: Iterable[tuple[int, torch.Tensor | np.ndarray]],
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int,
    observers: Iterable = (),
    *,
    nonfinite_what: str = "distances",
    nonfinite_hint: str = "",
) -> RankResult:
    """Runs the protocol over distance blocks given in query order.

    Every block is checked for NaN and inf first: the rank engine orders distances by their
    bits, so non-finite values would give ranks (and an mAP above 1) instead of an error.
    The CMC, AP and INP are checked to lie in [0, 1] before they are returned.

    Args:
        chunks: ``(first_query_index, dist_block)`` pairs covering all queries in order; a block
            is a float32/float64 array or tensor of shape (c, G) (CUDA blocks are copied back).
        q_pids: query identities (Q,).
        g_pids: gallery identities (G,).
        q_camids: query cameras (Q,).
        g_camids: gallery cameras (G,).
        max_rank: CMC length, already checked against the gallery size.
        observers: callables ``f(start, dist, rows, cols, is_match)`` that see each block (numpy)
            and its same-identity pairs (used to sample verification pairs in the same pass).
        nonfinite_what: what the distances are, for the error message.
        nonfinite_hint: what the caller can do about non-finite distances, for the message.

    Returns:
        The collected :class:`RankResult`.

    Raises:
        ValueError: a block holds NaN or inf (the message names the first queries).
        RuntimeError: a metric came out outside [0, 1] (an internal error, never reported).
    """
    pid_index = PidIndex(g_pids)
    stats = _RankStats()
    expected = 0
    for start, block in chunks:
        if start != expected:
            raise ValueError(f"distance blocks out of order: got row {start}, expected {expected}")
        dist = block.detach().cpu().numpy() if isinstance(block, torch.Tensor) else block
        if dist.dtype not in (np.float32, np.float64):
            dist = dist.astype(np.float32)
        check_finite_rows(dist, nonfinite_what, label=lambda i: f"query {i}",
                          hint=nonfinite_hint, offset=start, total=len(q_pids))
        c = dist.shape[0]
        rows, cols = pid_index.pairs(q_pids[start:start + c])
        is_match = g_camids[cols] != q_camids[start:start + c][rows]
        for observe in observers:
            observe(start, dist, rows, cols, is_match)
        stats.update(c, *chunk_match_ranks(dist, rows, cols, is_match))
        expected += c
    if expected != len(q_pids):
        raise ValueError(f"distance blocks cover {expected} queries, expected {len(q_pids)}")
    result = stats.result(max_rank, len(g_pids))
    check_unit_interval({"CMC": result.cmc, "AP": result.ap, "INP": result.inp})
    if result.num_valid == 0:
        logger.warning(
            "No query has a true match in the gallery (same identity, other camera); all "
            "metrics are 0. Check that query and gallery come from the same data set and use "
            "the same identity numbering, and that the gallery is not only same-camera images."
        )
    elif result.num_without_match:
        logger.info(
            "%d of %d queries have no true match in the gallery and are skipped",
            result.num_without_match, result.num_queries,
        )
    return result


def _iter_rows(distmat: np.ndarray, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, distmat.shape[0], chunk):
        yield start, distmat[start:start + chunk]


def evaluate_rank(
    distmat,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    max_rank: int = 50,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CMC, AP and INP from a query x gallery distance matrix (Market-1501 protocol).

    Same values and return shape as fast-reid's ``evaluate_rank``: gallery items with the same
    identity and camera as the query are removed, queries without a remaining true match are
    skipped (counted and logged, not asserted), ties are broken by gallery index. When the
    gallery has fewer than ``max_rank`` items, ``max_rank`` is reduced to the gallery size with a
    warning. A valid query's CMC is 1 from its first match on, including ranks past the end of
    its filtered list (fast-reid's Python path fails there and its Cython path reads stale
    buffer values).

    Args:
        distmat: distances, shape (Q, G), numpy array or tensor; smaller is closer. float32 and
            float64 are used as given (no rounding); other dtypes are converted to float32.
        q_pids: query identities, shape (Q,).
        g_pids: gallery identities, shape (G,).
        q_camids: query camera ids, shape (Q,).
        g_camids: gallery camera ids, shape (G,).
        max_rank: length of the CMC curve.

    Returns:
        ``(cmc, all_AP, all_INP)``: the CMC curve averaged over valid queries (float32, length
        ``min(max_rank, G)``; zeros when no query is valid) and the AP and INP of every valid
        query in query order (float64).

    Raises:
        ValueError: shapes disagree, or the matrix holds NaN or inf (the message names the
            first query rows).
    """
    if isinstance(distmat, torch.Tensor):
        distmat = distmat.detach().cpu().numpy()
    dm = np.asarray(distmat)
    if dm.dtype not in (np.float32, np.float64):
        dm = dm.astype(np.float32)
    if dm.ndim != 2:
        raise ValueError(f"distmat must be 2-D (Q, G), got shape {tuple(dm.shape)}")
    qp, gp, qc, gc = as_id_arrays(q_pids, g_pids, q_camids, g_camids)
    num_q, num_g = dm.shape
    if len(qp) != num_q or len(qc) != num_q or len(gp) != num_g or len(gc) != num_g:
        raise ValueError(
            f"distmat is {num_q} x {num_g} but got {len(qp)} q_pids, {len(qc)} q_camids, "
            f"{len(gp)} g_pids, {len(gc)} g_camids"
        )
    if num_g == 0:
        raise ValueError("the gallery is empty")
    max_rank = check_max_rank(max_rank, num_g)
    chunk = auto_chunk_size(num_g, max(num_q, 1))
    res = rank_metrics_from_chunks(
        _iter_rows(dm, chunk), qp, gp, qc, gc, max_rank, nonfinite_what="distmat",
        nonfinite_hint=DISTANCE_OVERFLOW_HINT,
    )
    return res.cmc, res.ap, res.inp
