"""Feature-level evaluation: distances in query blocks, exact ranks, AQE, ROC verification metrics.

:func:`evaluate` never forms or sorts the ``Q x G`` matrix: it computes one block of query rows
at a time (``chunk x G`` distances), hands it to the rank engine of :mod:`.rank` and drops it.
Its values equal :func:`~reid_pbn.evaluation.rank.evaluate_rank` applied to
:func:`compute_distance` of the same features, ties included, because both go through the same
:class:`PairwiseDistance` formula.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping

import numpy as np
import torch

from .checks import OVERFLOW_HINT, check_finite_rows, check_unit_interval
from .distance import (
    METRICS,
    PairwiseDistance,
    as_feature_tensor,
    check_metric,
    compute_distance,
    iter_distance_blocks,
    l2_normalize,
)
from .index import exact_knn
from .options import QueryExpansionOptions, RerankOptions
from .rank import (
    DISTANCE_OVERFLOW_HINT,
    PidIndex,
    RankResult,
    as_id_arrays,
    auto_chunk_size,
    check_max_rank,
    rank_metrics_from_chunks,
)
from .rerank import KReciprocalReRanker

logger = logging.getLogger(__name__)

__all__ = [
    "METRICS",
    "PairwiseDistance",
    "as_feature_tensor",
    "compute_distance",
    "evaluate",
    "l2_normalize",
    "query_expansion",
    "pair_distances",
    "roc_metrics",
    "ROC_FPR_TARGETS",
]

# False positive rates at which the verification TPR is reported.
ROC_FPR_TARGETS = (1e-4, 1e-3, 1e-2)


def _distance_blocks(
    q: torch.Tensor, g: torch.Tensor, metric: str, chunk_size: int | None
) -> Iterator[tuple[int, torch.Tensor]]:
    """:func:`iter_distance_blocks` of ``q`` against ``g`` under ``metric``; a ``chunk_size``
    of None or 0 is chosen from the available memory."""
    dist_fn = PairwiseDistance(g, metric)
    chunk = chunk_size or auto_chunk_size(g.shape[0], max(1, q.shape[0]))
    return iter_distance_blocks(q, dist_fn, chunk)


def query_expansion(
    query_feats,
    gallery_feats,
    qe_times: int = QueryExpansionOptions.qe_times,
    qe_k: int = QueryExpansionOptions.qe_k,
    alpha: float = QueryExpansionOptions.alpha,
    use_gpu: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average query expansion (alpha-QE, Radenovic et al.), as fast-reid's ``aqe``.

    Every feature (queries and gallery together) is replaced by the mean of its ``qe_k``
    nearest features (itself included) under cosine similarity, each weighted by
    ``similarity ** alpha``. Neighbours come from an exact FAISS index, so memory is
    ``O(N * qe_k)`` instead of fast-reid's ``N x N`` similarity matrix. Negative similarities
    are clamped to 0 before the power (fast-reid would produce NaN for a fractional alpha).

    Args:
        query_feats: (Q, D) features.
        gallery_feats: (G, D) features.
        qe_times: number of expansion rounds.
        qe_k: neighbours averaged into each feature.
        alpha: exponent of the similarity weights.
        use_gpu: search on GPUs when FAISS sees any.

    Returns:
        The expanded ``(query_feats, gallery_feats)``, float32 CPU tensors (not normalized).

    Raises:
        ValueError: non-finite input features, or expanded features that overflow float32.
    """
    q = as_feature_tensor(query_feats, "query_feats").cpu()
    g = as_feature_tensor(gallery_feats, "gallery_feats").cpu()
    num_q = q.shape[0]
    feats = torch.cat([q, g]).numpy()
    k = max(1, min(qe_k, feats.shape[0]))
    for _ in range(qe_times):
        normed = l2_normalize(torch.from_numpy(feats)).numpy()
        sims, idx = exact_knn(normed, normed, k, metric="ip", use_gpu=use_gpu)
        weights = np.power(np.clip(sims, 0.0, None), alpha).astype(np.float32)
        out = np.empty_like(feats)
        step = max(1, (64 << 20) // max(1, k * feats.shape[1] * 4))
        with np.errstate(over="ignore", invalid="ignore"):  # checked just below
            for s in range(0, feats.shape[0], step):
                nb = feats[idx[s:s + step]]
                out[s:s + step] = (nb * weights[s:s + step, :, None]).mean(axis=1)
        feats = out
        # Averages of features near float32's limit can overflow; refuse them here rather than
        # let inf reach the distances.
        check_finite_rows(feats, "features after query expansion",
                          hint="L2-normalize the features before query expansion")
    t = torch.from_numpy(feats)
    return t[:num_q], t[num_q:]


class _PairSampler:
    """Collects verification pairs during the ranking pass: every true match as a positive and
    a uniform sample (with replacement) of the different-identity pairs as negatives."""

    def __init__(
        self,
        q_pids: np.ndarray,
        g_pids: np.ndarray,
        max_negatives: int,
        seed: int,
    ) -> None:
        num_same = int(PidIndex(g_pids).count(q_pids).sum())
        self.total_negatives = len(q_pids) * len(g_pids) - num_same
        self.rate = min(1.0, max_negatives / max(1, self.total_negatives))
        self.q_pids, self.g_pids = q_pids, g_pids
        self.rng = np.random.default_rng(seed)
        self.pos: list[np.ndarray] = []
        self.neg: list[np.ndarray] = []

    @property
    def subsampled(self) -> bool:
        return self.rate < 1.0

    def __call__(self, start, dist, rows, cols, is_match) -> None:
        self.pos.append(dist[rows[is_match], cols[is_match]].astype(np.float32))
        c, G = dist.shape
        if not self.subsampled:
            keep = np.ones((c, G), dtype=bool)
            keep[rows, cols] = False
            self.neg.append(dist[keep].astype(np.float32))
            return
        flat = self.rng.integers(0, c * G, int(self.rng.binomial(c * G, self.rate)))
        r, g = flat // G, flat % G
        diff = self.g_pids[g] != self.q_pids[start + r]
        self.neg.append(dist[r[diff], g[diff]].astype(np.float32))

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        pos = np.concatenate(self.pos) if self.pos else np.zeros(0, np.float32)
        neg = np.concatenate(self.neg) if self.neg else np.zeros(0, np.float32)
        return pos, neg


def roc_metrics(pos_dists: np.ndarray, neg_dists: np.ndarray) -> dict:
    """Verification metrics from positive and negative pair distances (scikit-learn ROC).

    Args:
        pos_dists: distances of same-identity pairs.
        neg_dists: distances of different-identity pairs.

    Returns:
        ``{"TPR@FPR=1e-04": .., "TPR@FPR=1e-03": .., "TPR@FPR=1e-02": .., "roc_auc": ..,
        "roc_fpr": array, "roc_tpr": array}``; the TPR at a target is read at the largest
        FPR not above it. All values are NaN when either set is empty.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    out: dict = {}
    if len(pos_dists) == 0 or len(neg_dists) == 0:
        for t in ROC_FPR_TARGETS:
            out[f"TPR@FPR={t:.0e}"] = float("nan")
        out.update(roc_auc=float("nan"), roc_fpr=np.zeros(0), roc_tpr=np.zeros(0))
        return out
    labels = np.concatenate([np.ones(len(pos_dists)), np.zeros(len(neg_dists))])
    scores = -np.concatenate([pos_dists, neg_dists]).astype(np.float64)
    fpr, tpr, _ = roc_curve(labels, scores)
    for t in ROC_FPR_TARGETS:
        i = max(0, int(np.searchsorted(fpr, t, side="right")) - 1)
        out[f"TPR@FPR={t:.0e}"] = float(tpr[i])
    out["roc_auc"] = float(roc_auc_score(labels, scores))
    out["roc_fpr"], out["roc_tpr"] = fpr, tpr
    return out


def pair_distances(
    query_feats,
    gallery_feats,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    *,
    metric: str = "cosine",
    max_negatives: int = 2_000_000,
    chunk_size: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative query-gallery pair distances, for histograms and ROC curves.

    Positives are all true matches (same identity, other camera); same-identity same-camera
    pairs are left out as the ranking protocol does. Negatives are all different-identity pairs,
    or a uniform sample of ``max_negatives`` of them (with replacement) when there are more.

    Args:
        query_feats: (Q, D) features.
        gallery_feats: (G, D) features.
        q_pids: query identities.
        g_pids: gallery identities.
        q_camids: query cameras.
        g_camids: gallery cameras.
        metric: ``"cosine"`` or ``"euclidean"``.
        max_negatives: cap on the number of negative pairs kept.
        chunk_size: query rows per block (None: chosen from memory).
        seed: seed of the negative sampling.

    Returns:
        ``(pos_dists, neg_dists)`` float32 arrays.
    """
    q = as_feature_tensor(query_feats, "query_feats")
    g = as_feature_tensor(gallery_feats, "gallery_feats").to(q.device)
    qp, gp, qc, gc = as_id_arrays(q_pids, g_pids, q_camids, g_camids)
    blocks = _distance_blocks(q, g, metric, chunk_size)
    sampler = _PairSampler(qp, gp, max_negatives, seed)
    pid_index = PidIndex(gp)
    for start, block in blocks:
        dist = block.cpu().numpy()
        check_finite_rows(dist, f"{metric} distances", label=lambda i: f"query {i}",
                          hint=_nonfinite_hint(metric), offset=start, total=len(qp))
        c = dist.shape[0]
        rows, cols = pid_index.pairs(qp[start:start + c])
        sampler(start, dist, rows, cols, gc[cols] != qc[start:start + c][rows])
    return sampler.result()


def _nonfinite_hint(metric: str) -> str:
    """What to do about non-finite distances under ``metric``."""
    return OVERFLOW_HINT if metric == "euclidean" else DISTANCE_OVERFLOW_HINT


def _rank_at(cmc_long: np.ndarray, k: int) -> float:
    if len(cmc_long) == 0:
        return 0.0
    return float(cmc_long[min(k, len(cmc_long)) - 1])


def evaluate(
    query_feats,
    gallery_feats,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    *,
    metric: str = "cosine",
    max_rank: int = 50,
    rerank: RerankOptions | Mapping | bool | None = None,
    chunk_size: int | None = None,
    aqe: QueryExpansionOptions | Mapping | bool | None = None,
    roc: bool = False,
    roc_max_negatives: int = 2_000_000,
    seed: int = 0,
) -> dict:
    """Exact re-ID metrics from query and gallery features, in query blocks.

    Per block of ``chunk_size`` queries it computes the ``chunk x G`` distances, and for every
    true match its rank = number of kept gallery items strictly closer + kept items equally
    close with a lower gallery index; CMC, AP and INP follow. Nothing of size ``Q x G`` is
    held or sorted. Values equal ``evaluate_rank(compute_distance(q, g, metric), ...)``.

    Args:
        query_feats: (Q, D) query features, numpy array or tensor (CUDA tensors are evaluated
            on their device).
        gallery_feats: (G, D) gallery features.
        q_pids: query identities, shape (Q,).
        g_pids: gallery identities, shape (G,); distractors (e.g. pid 0 or -1) are negatives.
        q_camids: query camera ids.
        g_camids: gallery camera ids.
        metric: ``"cosine"`` (1 - cosine similarity of L2-normalized features) or
            ``"euclidean"`` (squared Euclidean distance).
        max_rank: length of the returned CMC curve (reduced to the gallery size with a warning).
        rerank: None, a :class:`RerankOptions`, ``True`` (its defaults) or the dict form
            ``{"k1": 20, "k2": 6, "lambda": 0.3}`` for k-reciprocal re-ranking; metrics are
            then computed from the re-ranked distances, block by block.
        chunk_size: query rows per block; None or 0 chooses it from the available memory.
        aqe: None, a :class:`QueryExpansionOptions`, ``True`` (its defaults) or the dict form
            ``{"qe_times": 1, "qe_k": 5, "alpha": 3.0}`` to apply average query expansion to
            the features first.
        roc: also report verification metrics (TPR at FPR 1e-4, 1e-3, 1e-2) over query-gallery
            pairs, collected in the same pass.
        roc_max_negatives: negative pairs kept for the ROC; above it they are sampled uniformly
            and ``roc_negatives_subsampled`` is True.
        seed: seed of the ROC negative sampling.

    Returns:
        A dict with ``"mAP"``, ``"mINP"`` (floats in [0, 1]), ``"cmc"`` (float32 array of length
        ``max_rank``), ``"Rank-1"``, ``"Rank-5"``, ``"Rank-10"``, ``"num_queries"``,
        ``"num_gallery"``, ``"num_valid_queries"``, ``"num_queries_without_match"``, ``"metric"``,
        ``"rerank"``,
        ``"aqe"``; with ``roc``, also ``"TPR@FPR=1e-04"`` (etc.), ``"roc_auc"``, ``"roc_fpr"``,
        ``"roc_tpr"``, ``"roc_num_positive_pairs"``, ``"roc_num_negative_pairs"`` and
        ``"roc_negatives_subsampled"``.

    Raises:
        ValueError: shapes or lengths disagree, unknown metric, non-finite features, or
            non-finite distances (squared euclidean distances overflow float32 for features
            beyond ~1e19; the message says what to do).
        RuntimeError: a metric came out outside [0, 1] (an internal error; never reported).
    """
    check_metric(metric)
    rerank = RerankOptions.coerce(rerank)
    aqe = QueryExpansionOptions.coerce(aqe)
    q = as_feature_tensor(query_feats, "query_feats")
    g = as_feature_tensor(gallery_feats, "gallery_feats").to(q.device)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query features have dimension {q.shape[1]}, gallery {g.shape[1]}")
    qp, gp, qc, gc = as_id_arrays(q_pids, g_pids, q_camids, g_camids)
    if len(qp) != q.shape[0] or len(qc) != q.shape[0]:
        raise ValueError(f"{q.shape[0]} query features but {len(qp)} pids, {len(qc)} camids")
    if len(gp) != g.shape[0] or len(gc) != g.shape[0]:
        raise ValueError(f"{g.shape[0]} gallery features but {len(gp)} pids, {len(gc)} camids")
    if g.shape[0] == 0:
        raise ValueError("the gallery is empty")
    max_rank = check_max_rank(max_rank, g.shape[0])

    if aqe:
        q, g = query_expansion(q, g, aqe.qe_times, aqe.qe_k, aqe.alpha)
    observers = []
    sampler = None
    if roc:
        sampler = _PairSampler(qp, gp, roc_max_negatives, seed)
        observers.append(sampler)
    if rerank:
        reranker = KReciprocalReRanker(
            q, g, k1=rerank.k1, k2=rerank.k2, lambda_value=rerank.lambda_value, metric=metric
        )
        blocks = reranker.iter_chunks(chunk_size or None)
    else:
        blocks = _distance_blocks(q, g, metric, chunk_size)
    res: RankResult = rank_metrics_from_chunks(
        blocks, qp, gp, qc, gc, max_rank, observers,
        nonfinite_what=("re-ranked distances" if rerank else f"{metric} distances"),
        nonfinite_hint=_nonfinite_hint(metric),
    )

    out = {
        "mAP": float(res.ap.mean()) if res.num_valid else 0.0,
        "mINP": float(res.inp.mean()) if res.num_valid else 0.0,
        "cmc": res.cmc,
        "Rank-1": _rank_at(res.cmc_long, 1),
        "Rank-5": _rank_at(res.cmc_long, 5),
        "Rank-10": _rank_at(res.cmc_long, 10),
        "num_queries": res.num_queries,
        "num_gallery": int(g.shape[0]),
        "num_valid_queries": res.num_valid,
        "num_queries_without_match": res.num_without_match,
        "metric": metric,
        "rerank": rerank is not None,
        "aqe": aqe is not None,
    }
    check_unit_interval({k: out[k] for k in ("mAP", "mINP", "cmc", "Rank-1", "Rank-5", "Rank-10")})
    if sampler is not None:
        pos, neg = sampler.result()
        out.update(roc_metrics(pos, neg))
        out["roc_num_positive_pairs"] = int(len(pos))
        out["roc_num_negative_pairs"] = int(len(neg))
        out["roc_negatives_subsampled"] = sampler.subsampled
        if sampler.subsampled:
            logger.info(
                "ROC: %d of %d negative pairs sampled uniformly",
                len(neg), sampler.total_negatives,
            )
    return out
