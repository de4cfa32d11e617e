"""evaluate (feature level, query blocks) against evaluate_rank and direct computations."""

import numpy as np
import pytest
import torch
from eval_reference import clustered_features, four_hot
from sklearn.metrics import roc_curve

from reid_pbn.evaluation import (
    compute_distance,
    evaluate,
    evaluate_rank,
    pair_distances,
    query_expansion,
    re_ranking,
)


def _data(seed, num_q=25, num_g=70, dim=16, ties=False):
    rng = np.random.default_rng(seed)
    qp = rng.integers(1, 9, num_q)
    gp = rng.integers(-1, 9, num_g)
    qc, gc = rng.integers(0, 3, num_q), rng.integers(0, 3, num_g)
    if ties:
        qf, gf = four_hot(rng, num_q, dim), four_hot(rng, num_g, dim)
    else:
        qf, _ = clustered_features(rng, num_q, dim, 10, pids=qp + 1)
        gf, _ = clustered_features(rng, num_g, dim, 10, pids=gp + 1)
    return qf, gf, qp, gp, qc, gc


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("ties", [False, True])
def test_evaluate_equals_evaluate_rank(seed, metric, ties):
    qf, gf, qp, gp, qc, gc = _data(seed, ties=ties)
    dist = compute_distance(qf, gf, metric)
    cmc, ap, inp = evaluate_rank(dist, qp, gp, qc, gc, max_rank=20)
    for chunk in (None, 1, 3, 64):
        r = evaluate(qf, gf, qp, gp, qc, gc, metric=metric, max_rank=20, chunk_size=chunk)
        np.testing.assert_array_equal(r["cmc"], cmc)
        assert r["mAP"] == pytest.approx(ap.mean(), abs=1e-12)
        assert r["mINP"] == pytest.approx(inp.mean(), abs=1e-12)
        assert r["Rank-1"] == cmc[0] and r["Rank-5"] == cmc[4] and r["Rank-10"] == cmc[9]
        assert r["num_valid_queries"] == len(ap)
        assert r["num_queries_without_match"] == len(qp) - len(ap)


def test_torch_inputs_match_numpy_and_report_unmatched_queries():
    qf, gf, qp, gp, qc, gc = _data(7)
    qp = qp.copy()
    qp[:3] = 99  # identities absent from the gallery
    a = evaluate(qf, gf, qp, gp, qc, gc)
    b = evaluate(torch.from_numpy(qf), torch.from_numpy(gf), torch.from_numpy(qp),
                 torch.from_numpy(gp), torch.from_numpy(qc), torch.from_numpy(gc))
    assert a["mAP"] == b["mAP"] and np.array_equal(a["cmc"], b["cmc"])
    assert a["num_queries_without_match"] >= 3
    assert a["num_queries"] == len(qp)
    assert 0.0 <= a["mAP"] <= 1.0 and 0.0 <= a["mINP"] <= 1.0


def test_rank_10_is_exact_when_max_rank_is_shorter():
    qf, gf, qp, gp, qc, gc = _data(2, ties=True)
    r = evaluate(qf, gf, qp, gp, qc, gc, max_rank=3)
    cmc, _, _ = evaluate_rank(compute_distance(qf, gf), qp, gp, qc, gc, max_rank=10)
    assert len(r["cmc"]) == 3
    assert r["Rank-5"] == cmc[4] and r["Rank-10"] == cmc[9]


def test_compute_distance_formulas():
    rng = np.random.default_rng(0)
    q, g = rng.standard_normal((4, 8)), rng.standard_normal((6, 8))
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    np.testing.assert_allclose(compute_distance(q, g, "cosine"), 1 - qn @ gn.T, atol=1e-6)
    sq = ((q[:, None] - g[None]) ** 2).sum(-1)
    np.testing.assert_allclose(compute_distance(q, g, "euclidean"), sq, rtol=1e-5, atol=1e-5)


def test_roc_metrics_equal_direct_computation():
    qf, gf, qp, gp, qc, gc = _data(3)
    r = evaluate(qf, gf, qp, gp, qc, gc, roc=True)
    dist = compute_distance(qf, gf).numpy()
    same = qp[:, None] == gp[None, :]
    removed = same & (qc[:, None] == gc[None, :])
    pos, neg = dist[same & ~removed], dist[~same]
    assert r["roc_num_positive_pairs"] == len(pos) and r["roc_num_negative_pairs"] == len(neg)
    assert not r["roc_negatives_subsampled"]
    labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    fpr, tpr, _ = roc_curve(labels, -np.r_[pos, neg])
    for t in (1e-4, 1e-3, 1e-2):
        expected = tpr[max(0, np.searchsorted(fpr, t, side="right") - 1)]
        assert r[f"TPR@FPR={t:.0e}"] == pytest.approx(expected)
    p2, n2 = pair_distances(qf, gf, qp, gp, qc, gc)
    np.testing.assert_allclose(np.sort(p2), np.sort(pos))
    np.testing.assert_allclose(np.sort(n2), np.sort(neg))


def test_roc_negatives_are_subsampled_when_many():
    qf, gf, qp, gp, qc, gc = _data(4)
    r = evaluate(qf, gf, qp, gp, qc, gc, roc=True, roc_max_negatives=200)
    assert r["roc_negatives_subsampled"]
    assert 100 < r["roc_num_negative_pairs"] < 300
    a = evaluate(qf, gf, qp, gp, qc, gc)
    assert a["mAP"] == r["mAP"]


def _dense_aqe(q, g, qe_times, qe_k, alpha):
    # fast-reid's aqe, transcribed with a full similarity matrix
    feats = np.concatenate([q, g]).astype(np.float64)
    for _ in range(qe_times):
        normed = feats / np.linalg.norm(feats, axis=1, keepdims=True)
        sims = normed @ normed.T
        order = np.argsort(-sims, axis=1, kind="stable")[:, :qe_k]
        w = np.take_along_axis(sims, order, 1) ** alpha
        feats = (feats[order] * w[..., None]).mean(1)
    return feats[: len(q)], feats[len(q):]


def test_query_expansion_matches_dense_alpha_qe():
    rng = np.random.default_rng(1)
    x, _ = clustered_features(rng, 60, 12, 6, noise=0.3)
    q, g = x[:20], x[20:]
    eq, eg = query_expansion(q, g, qe_times=2, qe_k=4, alpha=3.0)
    rq, rg = _dense_aqe(q, g, 2, 4, 3.0)
    np.testing.assert_allclose(eq.numpy(), rq, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(eg.numpy(), rg, rtol=1e-4, atol=1e-5)
    qp, gp = rng.integers(0, 5, 20), rng.integers(0, 5, 40)
    qc, gc = np.zeros(20, int), np.ones(40, int)
    r = evaluate(q, g, qp, gp, qc, gc, aqe={"qe_times": 2, "qe_k": 4, "alpha": 3.0})
    r2 = evaluate(eq, eg, qp, gp, qc, gc)
    assert r["mAP"] == pytest.approx(r2["mAP"]) and r["aqe"]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_rerank_path_equals_evaluate_rank_on_reranked_distances(metric):
    qf, gf, qp, gp, qc, gc = _data(5, num_q=15, num_g=50)
    rr = {"k1": 8, "k2": 3, "lambda": 0.3}
    dist = re_ranking(qf, gf, 8, 3, 0.3, metric=metric)
    cmc, ap, _ = evaluate_rank(dist, qp, gp, qc, gc, max_rank=20)
    for chunk in (None, 4):
        r = evaluate(qf, gf, qp, gp, qc, gc, metric=metric, rerank=rr, chunk_size=chunk,
                     max_rank=20)
        np.testing.assert_array_equal(r["cmc"], cmc)
        assert r["mAP"] == pytest.approx(ap.mean()) and r["rerank"]


def test_bad_arguments_raise_clear_errors():
    qf, gf, qp, gp, qc, gc = _data(0)
    with pytest.raises(ValueError, match="metric"):
        evaluate(qf, gf, qp, gp, qc, gc, metric="manhattan")
    with pytest.raises(ValueError, match="dimension"):
        evaluate(qf, gf[:, :5], qp, gp, qc, gc)
    with pytest.raises(ValueError, match="pids"):
        evaluate(qf, gf, qp[:-1], gp, qc, gc)
    bad = qf.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate(bad, gf, qp, gp, qc, gc)


def test_all_queries_absent_from_gallery_reported_not_asserted(caplog):
    rng = np.random.default_rng(3)
    q, g = rng.standard_normal((4, 8)).astype(np.float32), rng.standard_normal((6, 8))
    with caplog.at_level("WARNING", logger="reid_pbn"):
        r = evaluate(q, g.astype(np.float32), [10, 11, 12, 13], [1, 2, 3, 1, 2, 3],
                     [0, 0, 0, 0], [1, 1, 1, 1, 1, 1], max_rank=5)
    assert r["num_queries"] == 4 and r["num_valid_queries"] == 0
    assert r["num_queries_without_match"] == 4 and r["mAP"] == 0.0
    assert "No query has a true match" in caplog.text and "same data set" in caplog.text


@pytest.mark.parametrize("rerank", [None, {"k1": 6, "k2": 2, "lambda": 0.3}])
def test_bfloat16_features_evaluate_like_their_float32_values(rerank):
    """AMP inference gives bf16 features: evaluation takes them (numpy has no bf16)."""
    qf, gf, qp, gp, qc, gc = _data(3)
    q16, g16 = torch.from_numpy(qf).bfloat16(), torch.from_numpy(gf).bfloat16()
    a = evaluate(q16, g16, qp, gp, qc, gc, rerank=rerank)
    b = evaluate(q16.float(), g16.float(), qp, gp, qc, gc, rerank=rerank)
    assert a["mAP"] == b["mAP"] and np.array_equal(a["cmc"], b["cmc"])


# -- impossible numbers: non-finite distances and metrics outside [0, 1] -----------------------

def _huge(scale, dim=512, seed=0):
    qf, gf, qp, gp, qc, gc = _data(seed, dim=dim)
    return qf * np.float32(scale), gf * np.float32(scale), qp, gp, qc, gc


@pytest.mark.parametrize("scale,dim", [(1e18, 512), (1e19, 16)], ids=["1e18x512", "1e19x16"])
@pytest.mark.parametrize(
    "kwargs,what",
    [({}, "euclidean distances"), ({"chunk_size": 3}, "euclidean distances"),
     ({"rerank": {"k1": 6, "k2": 2, "lambda": 0.3}}, "re-ranking"),
     ({"aqe": {"qe_k": 3}}, "euclidean distances"), ({"roc": True}, "euclidean distances")],
    ids=["plain", "chunked", "rerank", "aqe", "roc"],
)
def test_euclidean_overflow_is_an_error_not_an_impossible_map(scale, dim, kwargs, what):
    """Features around 1e18 once gave mAP 5.5 under euclidean distances."""
    qf, gf, qp, gp, qc, gc = _huge(scale, dim)
    with pytest.raises(ValueError, match=f"{what}.*NaN or inf.*metric='cosine'"):
        evaluate(qf, gf, qp, gp, qc, gc, metric="euclidean", max_rank=10, **kwargs)


def test_every_other_path_refuses_non_finite_distances():
    qf, gf, qp, gp, qc, gc = _huge(1e19, 16)
    dist = compute_distance(qf, gf, "euclidean")
    with pytest.raises(ValueError, match=r"distmat: NaN or inf in \d+ of 25 rows \(query 0"):
        evaluate_rank(dist, qp, gp, qc, gc, max_rank=10)
    finite = compute_distance(qf / 1e19, gf / 1e19, "euclidean").numpy()
    for bad in (np.inf, -np.inf, np.nan):
        d = finite.copy()
        d[7, 3] = bad
        with pytest.raises(ValueError, match=r"distmat: NaN or inf in 1 of 25 rows \(query 7\)"):
            evaluate_rank(d, qp, gp, qc, gc, max_rank=10)
    with pytest.raises(ValueError, match="euclidean distances: NaN or inf"):
        pair_distances(qf, gf, qp, gp, qc, gc, metric="euclidean")
    with pytest.raises(ValueError, match="re-ranking.*NaN or inf"):
        re_ranking(qf, gf, 6, 2, 0.3, metric="euclidean")
    near_max = np.full((4, 8), 3e38, dtype=np.float32)  # averages overflow in float32
    with pytest.raises(ValueError, match="features after query expansion"):
        query_expansion(near_max, near_max, qe_k=4, alpha=0.0)


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_non_finite_features_are_refused_naming_rows(bad):
    qf, gf, qp, gp, qc, gc = _data(1)
    gf = gf.copy()
    gf[[2, 40], 0] = bad
    with pytest.raises(ValueError, match=r"gallery_feats: NaN or inf in 2 of 70 rows "
                                         r"\(row 2, row 40\)"):
        evaluate(qf, gf, qp, gp, qc, gc)

def test_float64_features_beyond_float32_are_refused():
    """float64 features beyond float32's range become inf when cast: refused, not ranked."""
    qf, gf, qp, gp, qc, gc = _data(1)
    q64 = qf.astype(np.float64)
    q64[3] = 1e300
    with pytest.raises(ValueError, match=r"query_feats: NaN or inf in 1 of 25 rows \(row 3\)"):
        evaluate(q64, gf, qp, gp, qc, gc)


@pytest.mark.parametrize("rerank", [None, {"k1": 6, "k2": 2, "lambda": 0.3}])
def test_cosine_is_scale_free_even_beyond_float32_squares(rerank):
    """F.normalize squares in float32: features of 1e20 used to become zeros (all distances 1)."""
    qf, gf, qp, gp, qc, gc = _data(2)
    ref = evaluate(qf, gf, qp, gp, qc, gc, rerank=rerank)
    for scale in (1e20, 1e-25):
        r = evaluate(qf * np.float32(scale), gf * np.float32(scale), qp, gp, qc, gc,
                     rerank=rerank)
        assert r["mAP"] == pytest.approx(ref["mAP"], abs=1e-6)
        np.testing.assert_allclose(r["cmc"], ref["cmc"], atol=1e-6)


def test_metrics_outside_unit_interval_are_an_internal_error(monkeypatch):
    """If a bug ever produced AP > 1, nothing is reported."""
    import reid_pbn.evaluation.rank as rank

    real = rank.chunk_match_ranks

    def broken(*args):
        rows, ranks = real(*args)
        return rows, ranks // 3  # ranks too small: later matches get precision above 1

    monkeypatch.setattr(rank, "chunk_match_ranks", broken)
    qf, gf, qp, gp, qc, gc = _data(0)
    with pytest.raises(RuntimeError, match=r"internal error: AP has \d+ value\(s\) outside"):
        evaluate(qf, gf, qp, gp, qc, gc)
    with pytest.raises(RuntimeError, match="internal error"):
        evaluate_rank(compute_distance(qf, gf), qp, gp, qc, gc)


def test_check_helpers():
    from reid_pbn.evaluation.checks import check_unit_interval, nonfinite_rows

    x = np.ones((4, 3), dtype=np.float64)
    x[1] = 1e308  # the float64 row sum overflows, the values are finite
    x[2, 1] = np.nan
    assert nonfinite_rows(x).tolist() == [2]
    assert nonfinite_rows(torch.from_numpy(x)).tolist() == [2]
    assert nonfinite_rows(np.full((2, 2), 3e38, dtype=np.float32)).tolist() == []
    assert nonfinite_rows(np.zeros((3, 2), dtype=np.int64)).tolist() == []
    check_unit_interval({"mAP": 1.0, "cmc": np.array([0.0, 0.5, 1.0])})
    for bad in (1.0000001, -0.1, float("nan")):
        with pytest.raises(RuntimeError, match="mINP"):
            check_unit_interval({"mINP": bad})
