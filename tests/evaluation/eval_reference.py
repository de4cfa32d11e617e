"""Independent reference implementations used by the evaluation tests."""

from __future__ import annotations

import numpy as np


def argsort_protocol(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """Market-1501 protocol by argsorting every row (fast-reid's algorithm, stable ties).

    Returns ``(cmc, all_AP, all_INP)`` like fast-reid; CMC rows of valid queries are padded
    with 1 past the end of their filtered list (cumulative, capped at 1).
    """
    distmat = np.asarray(distmat)
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    indices = np.argsort(distmat, axis=1, kind="stable")
    matches = (g_pids[indices] == q_pids[:, None]).astype(np.int32)
    all_cmc, all_ap, all_inp = [], [], []
    for i in range(num_q):
        order = indices[i]
        keep = ~((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i]))
        raw = matches[i][keep]
        if not raw.any():
            continue
        cmc = raw.cumsum()
        last = int(np.max(np.where(raw == 1)))
        all_inp.append(cmc[last] / (last + 1.0))
        cmc[cmc > 1] = 1
        row = np.ones(max_rank)
        n = min(max_rank, len(cmc))
        row[:n] = cmc[:n]
        all_cmc.append(row)
        precision = raw.cumsum() / (np.arange(len(raw)) + 1.0)
        all_ap.append((precision * raw).sum() / raw.sum())
    if not all_cmc:
        return np.zeros(max_rank), np.zeros(0), np.zeros(0)
    return np.mean(all_cmc, axis=0), np.asarray(all_ap), np.asarray(all_inp)


def dense_re_ranking(original_dist, query_num, k1, k2, lambda_value):
    """The classic dense k-reciprocal re-ranking (Zhong et al. CVPR 2017, the paper's code),
    on a full (N, N) matrix of squared distances over probe + gallery."""
    original_dist = original_dist.astype(np.float32)
    original_dist = np.transpose(1.0 * original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist).astype(np.float32)
    initial_rank = np.argsort(original_dist).astype(np.int32)
    all_num = original_dist.shape[0]
    half = int(np.around(k1 / 2.0))
    for i in range(all_num):
        forward = initial_rank[i, :k1 + 1]
        backward = initial_rank[forward, :k1 + 1]
        fi = np.where(backward == i)[0]
        k_reciprocal = forward[fi]
        expansion = k_reciprocal
        for candidate in k_reciprocal:
            c_forward = initial_rank[candidate, :half + 1]
            c_backward = initial_rank[c_forward, :half + 1]
            c_reciprocal = c_forward[np.where(c_backward == candidate)[0]]
            if len(np.intersect1d(c_reciprocal, k_reciprocal)) > 2.0 / 3 * len(c_reciprocal):
                expansion = np.append(expansion, c_reciprocal)
        expansion = np.unique(expansion)
        weight = np.exp(-original_dist[i, expansion])
        V[i, expansion] = 1.0 * weight / np.sum(weight)
    original_dist = original_dist[:query_num]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
    inv_index = [np.where(V[:, i] != 0)[0] for i in range(all_num)]
    jaccard = np.zeros_like(original_dist, dtype=np.float32)
    for i in range(query_num):
        temp_min = np.zeros((1, all_num), dtype=np.float32)
        nonzero = np.where(V[i, :] != 0)[0]
        for j in nonzero:
            images = inv_index[j]
            temp_min[0, images] = temp_min[0, images] + np.minimum(V[i, j], V[images, j])
        jaccard[i] = 1 - temp_min / (2.0 - temp_min)
    final = jaccard * (1 - lambda_value) + original_dist * lambda_value
    return final[:query_num, query_num:]


def clustered_features(rng, num, dim, num_ids, noise=0.5, pids=None):
    """Features around one random centre per identity; returns (feats, pids)."""
    centres = rng.standard_normal((num_ids, dim))
    if pids is None:
        pids = rng.integers(0, num_ids, num)
    feats = centres[pids] + noise * rng.standard_normal((len(pids), dim))
    return feats.astype(np.float32), np.asarray(pids)


def four_hot(rng, num, dim):
    """Binary vectors with exactly four ones: their cosine similarities are multiples of 1/4
    and squared distances small integers, exact in float32 whatever the summation order, so
    ties are real ties for every BLAS call shape."""
    x = np.zeros((num, dim), dtype=np.float32)
    for i in range(num):
        x[i, rng.choice(dim, 4, replace=False)] = 1.0
    return x
