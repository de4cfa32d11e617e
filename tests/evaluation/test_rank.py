"""evaluate_rank against an argsort implementation of the Market-1501 protocol."""

import logging

import numpy as np
import pytest
import torch
from eval_reference import argsort_protocol

from reid_pbn.evaluation import evaluate_rank


def _check(distmat, qp, gp, qc, gc, max_rank):
    cmc, ap, inp = evaluate_rank(distmat, qp, gp, qc, gc, max_rank=max_rank)
    r_cmc, r_ap, r_inp = argsort_protocol(np.asarray(distmat), qp, gp, qc, gc, max_rank)
    assert cmc.dtype == np.float32 and cmc.shape == (min(max_rank, len(gp)),)
    np.testing.assert_allclose(cmc, r_cmc, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ap, r_ap, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(inp, r_inp, rtol=1e-12, atol=1e-12)
    return cmc, ap, inp


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_with_ties_distractors_and_unmatched_queries(seed, dtype):
    rng = np.random.default_rng(seed)
    num_q, num_g = int(rng.integers(1, 30)), int(rng.integers(1, 90))
    qp = rng.integers(1, 10, num_q)
    gp = rng.integers(-1, 10, num_g)  # -1 and 0 play junk/distractor negatives
    qc, gc = rng.integers(0, 3, num_q), rng.integers(0, 3, num_g)
    if seed % 2:
        dist = rng.integers(0, 4, (num_q, num_g)).astype(dtype)  # many exact ties
    else:
        dist = rng.standard_normal((num_q, num_g)).astype(dtype)
    _check(dist, qp, gp, qc, gc, max_rank=20)


def test_gallery_smaller_than_max_rank_warns_and_reduces(caplog):
    rng = np.random.default_rng(0)
    qp, gp = np.array([1, 2, 3]), np.array([1, 2, 2, 3, 7])
    qc, gc = np.array([0, 0, 1]), np.array([1, 1, 0, 0, 2])
    dist = rng.random((3, 5)).astype(np.float32)
    with caplog.at_level(logging.WARNING):
        cmc, _, _ = _check(dist, qp, gp, qc, gc, max_rank=50)
    assert len(cmc) == 5
    assert "max_rank reduced" in caplog.text


def test_cmc_past_the_filtered_list_stays_one():
    # Query 0 has two same-camera items removed, so its filtered list (2 items) is shorter
    # than max_rank (4); its CMC must stay at 1 after its first match.
    qp, gp = np.array([1]), np.array([1, 1, 1, 5])
    qc, gc = np.array([0]), np.array([0, 0, 1, 1])
    dist = np.array([[0.1, 0.2, 0.9, 0.3]], dtype=np.float32)
    cmc, ap, inp = evaluate_rank(dist, qp, gp, qc, gc, max_rank=4)
    np.testing.assert_array_equal(cmc, [0, 1, 1, 1])
    np.testing.assert_allclose(ap, [0.5])
    np.testing.assert_allclose(inp, [0.5])


def test_ties_break_by_gallery_index():
    qp, gp = np.array([1]), np.array([2, 1, 2, 1])
    qc, gc = np.array([0]), np.array([1, 1, 1, 1])
    dist = np.zeros((1, 4), dtype=np.float32)
    cmc, ap, inp = evaluate_rank(dist, qp, gp, qc, gc, max_rank=4)
    np.testing.assert_array_equal(cmc, [0, 1, 1, 1])
    np.testing.assert_allclose(ap, [(1 / 2 + 2 / 4) / 2])
    np.testing.assert_allclose(inp, [2 / 4])


def test_negative_zero_and_negative_distances_order_like_floats():
    qp, gp = np.array([1]), np.array([2, 1, 2, 2, 1])
    qc, gc = np.array([0]), np.ones(5, dtype=int)
    dist = np.array([[0.0, -0.0, -1.0, -0.5, 2.0]], dtype=np.float32)
    _check(dist, qp, gp, qc, gc, max_rank=5)


def test_no_valid_query_reports_zeros(caplog):
    qp, gp = np.array([1, 2]), np.array([1, 3])
    qc, gc = np.array([0, 0]), np.array([0, 0])
    with caplog.at_level(logging.WARNING):
        cmc, ap, inp = evaluate_rank(np.ones((2, 2)), qp, gp, qc, gc, max_rank=2)
    np.testing.assert_array_equal(cmc, [0, 0])
    assert ap.size == 0 and inp.size == 0
    assert "No query" in caplog.text


def test_torch_inputs_and_large_block_split():
    rng = np.random.default_rng(3)
    qp, gp = rng.integers(0, 5, 7), rng.integers(0, 5, 40)
    qc, gc = rng.integers(0, 2, 7), rng.integers(0, 2, 40)
    dist = rng.random((7, 40)).astype(np.float32)
    ref = argsort_protocol(dist, qp, gp, qc, gc, 10)
    out = evaluate_rank(torch.from_numpy(dist), torch.from_numpy(qp), torch.from_numpy(gp),
                        torch.from_numpy(qc), torch.from_numpy(gc), max_rank=10)
    np.testing.assert_allclose(out[0], ref[0], atol=1e-6)
    np.testing.assert_allclose(out[1], ref[1])


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="distmat is 2 x 3"):
        evaluate_rank(np.zeros((2, 3)), [1, 2], [1, 2], [0, 0], [0, 0])
    with pytest.raises(ValueError, match="NaN"):
        evaluate_rank(np.full((1, 1), np.nan), [1], [1], [0], [1])
    with pytest.raises(ValueError, match="2-D"):
        evaluate_rank(np.zeros(3), [1], [1, 2, 3], [0], [0, 0, 0])


def test_blocks_split_when_key_bits_run_out(monkeypatch):
    # Galleries above ~2M items leave few key bits for the block row; emulate that here.
    import reid_pbn.evaluation.rank as rank

    rng = np.random.default_rng(5)
    qp, gp = rng.integers(0, 4, 9), rng.integers(0, 4, 50)
    qc, gc = rng.integers(0, 2, 9), rng.integers(0, 2, 50)
    dist = rng.integers(0, 5, (9, 50)).astype(np.float32)
    monkeypatch.setattr(rank, "_ROW_COL_KEY_BITS", (50 - 1).bit_length() + 1)
    _check(dist, qp, gp, qc, gc, max_rank=10)
