"""Losses against independent, loop-based computations."""

from __future__ import annotations

import math

import pytest
import torch

from reid_pbn.config import get_cfg
from reid_pbn.modeling import LOSS_REGISTRY, build_losses
from reid_pbn.modeling.losses import (
    CircleLoss,
    CrossEntropyLoss,
    TripletLoss,
    cross_entropy_loss,
    pairwise_circle_loss,
    triplet_loss,
)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(8, 5, generator=g, dtype=torch.float64).float()
    targets = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])  # identity 3 has no positive
    return feats, targets


def dist(a, b):
    return math.sqrt(sum((float(x) - float(y)) ** 2 for x, y in zip(a, b)))


def ranking(diff, margin):
    return max(diff + margin, 0.0) if margin > 0 else math.log1p(math.exp(diff))


def brute_triplet(feats, targets, margin, hard):
    n = len(targets)
    terms = []
    for a in range(n):
        pos = [p for p in range(n) if p != a and targets[p] == targets[a]]
        neg = [q for q in range(n) if targets[q] != targets[a]]
        if not pos or not neg:
            continue
        if hard:
            d_ap = max(dist(feats[a], feats[p]) for p in pos)
            d_an = min(dist(feats[a], feats[q]) for q in neg)
            terms.append(ranking(d_ap - d_an, margin))
        else:
            for p in pos:
                for q in neg:
                    terms.append(
                        ranking(dist(feats[a], feats[p]) - dist(feats[a], feats[q]), margin)
                    )
    return sum(terms) / len(terms)


@pytest.mark.parametrize("name", LOSS_REGISTRY.names())
def test_every_registered_loss_builds_and_runs(name, batch):
    cfg = get_cfg()
    cfg.MODEL.LOSSES.NAME = (name,)
    (loss,) = build_losses(cfg)
    feats, targets = batch
    feats.requires_grad_(True)
    logits = torch.randn(8, 4, requires_grad=True)
    value = loss({"features": feats, "neck_features": feats, "cls_outputs": logits}, targets)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert isinstance(loss.key, str) and loss.key.startswith("loss_")


def test_duplicate_loss_names_rejected():
    cfg = get_cfg()
    cfg.MODEL.LOSSES.NAME = ("TripletLoss", "TripletLoss")
    with pytest.raises(ValueError, match="twice"):
        build_losses(cfg)


def test_unknown_loss_lists_available():
    cfg = get_cfg()
    cfg.MODEL.LOSSES.NAME = ("Nope",)
    with pytest.raises(KeyError, match="TripletLoss"):
        build_losses(cfg)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_cross_entropy_label_smoothing(eps):
    torch.manual_seed(0)
    logits, targets = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    q = (1 - eps) * torch.nn.functional.one_hot(targets, 5).float() + eps / 5
    expected = -(q * torch.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(cross_entropy_loss(logits, targets, eps), expected)


def test_cross_entropy_scale_and_missing_classifier():
    logits, targets = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    one = CrossEntropyLoss(0.1, scale=1.0)({"cls_outputs": logits}, targets)
    two = CrossEntropyLoss(0.1, scale=2.0)({"cls_outputs": logits}, targets)
    torch.testing.assert_close(two, 2 * one)
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        CrossEntropyLoss()({"features": logits}, targets)


@pytest.mark.parametrize("margin", [0.3, 0.0])
@pytest.mark.parametrize("hard", [True, False])
def test_triplet_against_brute_force(batch, margin, hard):
    feats, targets = batch
    got = triplet_loss(feats, targets, margin=margin, hard_mining=hard)
    expected = brute_triplet(feats.tolist(), targets.tolist(), margin, hard)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_triplet_normalized_features(batch):
    feats, targets = batch
    normed = torch.nn.functional.normalize(feats, dim=1)
    got = triplet_loss(feats, targets, margin=0.3, norm_feat=True)
    assert got.item() == pytest.approx(brute_triplet(normed.tolist(), targets.tolist(), 0.3, True))


def test_triplet_stable_on_identical_features():
    feats = torch.ones(4, 3, requires_grad=True)
    loss = triplet_loss(feats, torch.tensor([0, 0, 1, 1]), margin=0.3)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(feats.grad).all()
    assert loss.item() == pytest.approx(0.3, abs=1e-4)


def test_triplet_without_valid_anchor_is_zero():
    feats = torch.randn(3, 4, requires_grad=True)
    loss = triplet_loss(feats, torch.tensor([0, 1, 2]))
    loss.backward()
    assert loss.item() == 0.0


def test_triplet_module_reads_features_and_scales(batch):
    feats, targets = batch
    base = triplet_loss(feats, targets, 0.3)
    got = TripletLoss(0.3, scale=0.5)({"features": feats, "neck_features": feats * 0}, targets)
    torch.testing.assert_close(got, 0.5 * base)


def brute_circle(feats, targets, m, gamma):
    n = len(targets)
    norm = [f / torch.linalg.vector_norm(f) for f in feats.double()]
    terms = []
    for i in range(n):
        sp = [float(norm[i] @ norm[j]) for j in range(n) if j != i and targets[j] == targets[i]]
        sn = [float(norm[i] @ norm[j]) for j in range(n) if targets[j] != targets[i]]
        if not sp or not sn:
            continue
        sum_p = sum(math.exp(-gamma * max(1 + m - s, 0) * (s - (1 - m))) for s in sp)
        sum_n = sum(math.exp(gamma * max(s + m, 0) * (s - m)) for s in sn)
        terms.append(math.log(1 + sum_n * sum_p))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("m, gamma", [(0.25, 4.0), (0.4, 16.0)])
def test_circle_against_direct_formula(batch, m, gamma):
    feats, targets = batch
    got = pairwise_circle_loss(feats, targets, margin=m, gamma=gamma)
    assert got.item() == pytest.approx(brute_circle(feats, targets.tolist(), m, gamma), rel=1e-4)


def test_circle_large_gamma_is_finite(batch):
    feats, targets = batch
    feats = feats.clone().requires_grad_(True)
    loss = CircleLoss(0.25, 128.0)({"features": feats}, targets)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(feats.grad).all()


def test_metric_losses_stay_float32_under_autocast(batch):
    feats, targets = batch
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tri = triplet_loss(feats, targets, 0.3)
        circ = pairwise_circle_loss(feats, targets, 0.25, 32.0)
    assert tri.dtype == circ.dtype == torch.float32
    assert tri.item() == pytest.approx(triplet_loss(feats, targets, 0.3).item(), rel=1e-5)
