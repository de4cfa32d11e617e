"""Embedding head: pooling, BNNeck, classifiers, train/eval outputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reid_pbn.config import get_cfg
from reid_pbn.modeling import HEAD_REGISTRY, EmbeddingHead, build_head
from reid_pbn.modeling.heads import CLASSIFIERS, NECKS, POOLINGS, GeneralizedMeanPooling


@pytest.mark.parametrize("name", HEAD_REGISTRY.names())
def test_every_registered_head_builds(name):
    cfg = get_cfg()
    cfg.MODEL.HEADS.NAME = name
    head = build_head(cfg, in_channels=16, num_classes=5)
    head.train()
    out = head(torch.rand(4, 16, 4, 2), torch.tensor([0, 1, 2, 3]))
    assert {"features", "neck_features", "cls_outputs"} <= set(out)
    head.eval()
    assert head(torch.rand(4, 16, 4, 2)).shape == (4, head.out_dim)


@pytest.mark.parametrize("pool", sorted(POOLINGS))
@pytest.mark.parametrize("neck", sorted(NECKS))
@pytest.mark.parametrize("cls_layer", sorted(CLASSIFIERS))
def test_every_option_combination(pool, neck, cls_layer):
    head = EmbeddingHead(8, 3, pool=pool, neck=neck, cls_layer=cls_layer, embedding_dim=6)
    out = head(torch.rand(4, 8, 3, 2), torch.tensor([0, 1, 2, 0]))
    assert out["features"].shape == out["neck_features"].shape == (4, 6)
    assert out["cls_outputs"].shape == (4, 3)
    sum(v.sum() for v in out.values()).backward()


def test_poolings_against_direct_formulas():
    x = torch.rand(3, 5, 4, 2) + 0.1
    flat = x.flatten(2)
    torch.testing.assert_close(POOLINGS["avg"](3.0)(x), flat.mean(2))
    torch.testing.assert_close(POOLINGS["max"](3.0)(x), flat.amax(2))
    gem = GeneralizedMeanPooling(3.0)
    torch.testing.assert_close(gem(x), flat.pow(3).mean(2).pow(1 / 3))
    torch.testing.assert_close(GeneralizedMeanPooling(1.0)(x), flat.mean(2))
    gem(x).sum().backward()
    assert gem.p.grad is not None and torch.isfinite(gem.p.grad)
    with pytest.raises(ValueError, match="pooling"):
        EmbeddingHead(4, pool="nope")


def test_bnneck_outputs_and_init():
    torch.manual_seed(0)
    head = EmbeddingHead(8, num_classes=4)
    assert not head.neck.bias.requires_grad and head.neck.weight.requires_grad
    assert torch.all(head.neck.weight == 1) and torch.all(head.neck.bias == 0)
    assert head.classifier.bias is None
    assert head.classifier.weight.std() < 0.01
    x = torch.rand(6, 8, 4, 2)
    out = head(x)
    pooled = x.mean((2, 3))
    torch.testing.assert_close(out["features"], pooled)
    normalized = F.batch_norm(pooled, None, None, training=True)
    torch.testing.assert_close(out["neck_features"], normalized)
    torch.testing.assert_close(out["cls_outputs"], normalized @ head.classifier.weight.t())
    head.eval()
    feats = head(x)
    expected = (pooled - head.neck.running_mean) / torch.sqrt(head.neck.running_var + 1e-5)
    torch.testing.assert_close(feats, expected)


def test_no_neck_eval_returns_pooled_features():
    head = EmbeddingHead(8, num_classes=4, neck="none").eval()
    x = torch.rand(2, 8, 4, 2)
    torch.testing.assert_close(head(x), x.mean((2, 3)))


def test_embedding_layer():
    head = EmbeddingHead(8, num_classes=4, embedding_dim=5)
    assert head.out_dim == 5
    assert head.train()(torch.rand(4, 8, 2, 2))["cls_outputs"].shape == (4, 4)
    assert head.eval()(torch.rand(4, 8, 2, 2)).shape == (4, 5)


def test_cosine_classifier_with_margin():
    head = EmbeddingHead(8, num_classes=4, cls_layer="cosine", scale=16.0, margin=0.35)
    x = torch.rand(5, 8, 2, 2)
    targets = torch.tensor([0, 1, 2, 3, 0])
    out = head(x, targets)
    w = head.classifier.weight
    cos = F.normalize(out["neck_features"], dim=1) @ F.normalize(w, dim=1).t()
    expected = 16.0 * (cos - 0.35 * F.one_hot(targets, 4))
    torch.testing.assert_close(out["cls_outputs"], expected)
    # Without targets (no margin) the logits are the plain scaled cosines.
    torch.testing.assert_close(head.classifier(out["neck_features"]), 16.0 * cos)


def test_head_without_classes_has_no_logits():
    head = EmbeddingHead(8, num_classes=0)
    assert head.classifier is None
    assert "cls_outputs" not in head(torch.rand(2, 8, 2, 2))
