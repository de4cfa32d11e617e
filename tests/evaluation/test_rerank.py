"""Sparse k-reciprocal re-ranking against the classic dense algorithm."""

import numpy as np
import pytest
import torch
from eval_reference import clustered_features, dense_re_ranking

from reid_pbn.evaluation import KReciprocalReRanker, re_ranking


def _inputs(seed, num_q, num_g, dim, metric):
    rng = np.random.default_rng(seed)
    x, _ = clustered_features(rng, num_q + num_g, dim, 8, noise=0.7)
    xx = x.astype(np.float64)
    if metric == "cosine":
        xx = xx / np.linalg.norm(xx, axis=1, keepdims=True)
    sq = ((xx[:, None, :] - xx[None, :, :]) ** 2).sum(-1)
    return x[:num_q], x[num_q:], sq


@pytest.mark.parametrize(
    "num_q,num_g,k1,k2,lam,metric",
    [
        (15, 45, 6, 3, 0.3, "cosine"),
        (20, 60, 20, 6, 0.3, "euclidean"),
        (10, 30, 4, 1, 0.5, "cosine"),  # no local query expansion
        (5, 10, 20, 6, 0.3, "cosine"),  # k1 + 1 > number of items
        (30, 90, 5, 2, 0.0, "euclidean"),  # pure Jaccard distance
        (12, 40, 7, 4, 1.0, "cosine"),  # pure (normalized) original distance
    ],
)
def test_matches_dense_reference(num_q, num_g, k1, k2, lam, metric):
    q, g, sq = _inputs(num_q + k1, num_q, num_g, 16, metric)
    ref = dense_re_ranking(sq, num_q, k1, k2, lam)
    out = re_ranking(q, g, k1, k2, lam, metric=metric)
    assert out.shape == (num_q, num_g) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=0, atol=2e-6)


def test_blocks_and_topk_agree_with_dense_output():
    q, g, _ = _inputs(1, 14, 50, 8, "cosine")
    rr = KReciprocalReRanker(torch.from_numpy(q), torch.from_numpy(g), 6, 3, 0.3)
    full = rr.distances()
    blocks = np.concatenate([b for _, b in rr.iter_chunks(chunk_size=3)])
    # Block shapes change the BLAS call, so the last bit of a distance may differ.
    np.testing.assert_allclose(blocks, full, rtol=0, atol=1e-6)
    d, idx = rr.topk(5, chunk_size=3)
    order = np.argsort(blocks, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_array_equal(d, np.take_along_axis(blocks, order, 1))


def test_invalid_parameters():
    q, g, _ = _inputs(0, 4, 8, 4, "cosine")
    with pytest.raises(ValueError, match="k1"):
        re_ranking(q, g, k1=0)
    with pytest.raises(ValueError, match="lambda"):
        re_ranking(q, g, lambda_value=1.5)
