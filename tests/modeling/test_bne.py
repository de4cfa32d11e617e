"""Batch Normalization Embeddings: domain weights follow the input's domain, the batched
paths equal separate per-domain passes, and training uses the same mapping."""

import copy

import torch

from reid_pbn import layers
from reid_pbn.config import get_cfg
from reid_pbn.modeling import build_model


def _cfg(train_mapping=True):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.DEPTH = 18
    cfg.MODEL.BACKBONE.NORM = "DSBN"
    cfg.MODEL.BNE.TRAIN_MAPPING = train_mapping
    return cfg


def _styled(n, d, gen):
    """Images of domain d: domain 0 dark and flat, domain 1 bright and contrasted."""
    x = torch.randn(n, 3, 64, 32, generator=gen)
    return x * 0.5 - 1.0 if d == 0 else x * 2.0 + 1.5


def _batch(images, d):
    pids = torch.arange(images.size(0)) // 2
    return {"images": images, "pids": pids, "camids": torch.zeros_like(pids),
            "domains": torch.full_like(pids, d)}


def _trained(train_mapping=True, steps=4):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = build_model(_cfg(train_mapping), num_classes=4, num_domains=2).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(steps):
        for d in (0, 1):
            loss = sum(model(_batch(_styled(8, d, gen), d)).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval(), gen


def test_samples_weigh_their_own_domain_most():
    model, gen = _trained()
    with torch.no_grad():
        for d in (0, 1):
            model(_styled(6, d, gen))
            w = model.last_domain_weights
            assert w.shape == (6, 2)
            torch.testing.assert_close(w.sum(1), torch.ones(6))
            assert (w[:, d] > 0.5).all(), w


def test_batched_paths_equal_separate_passes():
    model, gen = _trained(steps=1)
    x = _styled(3, 0, gen)
    with torch.no_grad():
        got = model(x)
        w = model.last_domain_weights
        per_domain = []
        for d in (0, 1):
            layers.set_domains(model, d)
            per_domain.append(model.heads(model.backbone(x)))
    torch.testing.assert_close(got, w[:, :1] * per_domain[0] + w[:, 1:] * per_domain[1],
                               rtol=1e-4, atol=1e-5)


def test_training_mapping_updates_only_the_own_domains_statistics():
    model, gen = _trained(steps=1)
    model.train()
    before = copy.deepcopy(model.backbone.bn1.bns[1].state_dict())
    own_before = model.backbone.bn1.bns[0].running_mean.clone()
    losses = model(_batch(_styled(8, 0, gen), 0))
    sum(losses.values()).backward()
    for k, v in model.backbone.bn1.bns[1].state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not torch.equal(model.backbone.bn1.bns[0].running_mean, own_before)
    assert model.backbone.conv1.weight.grad is not None
    assert all(torch.isfinite(v) for v in losses.values())
    assert model.backbone.bn1.bns[1].training  # restored after the foreign paths


def test_without_training_mapping_each_sample_trains_its_own_path():
    model, gen = _trained(train_mapping=False, steps=1)
    model.train()
    before = model.backbone.bn1.bns[1].running_mean.clone()
    model(_batch(_styled(8, 0, gen), 0))
    assert torch.equal(model.backbone.bn1.bns[1].running_mean, before)


def test_state_dict_round_trip_keeps_domains_features_and_weights(tmp_path):
    model, gen = _trained(steps=1)
    x = torch.cat([_styled(3, 0, gen), _styled(3, 1, gen)])
    with torch.no_grad():
        feats, weights = model(x), model.last_domain_weights.clone()
    path = tmp_path / "bne.pth"
    torch.save(model.state_dict(), path)
    torch.manual_seed(123)  # a different init, overwritten by the load
    fresh = build_model(_cfg(), num_classes=4, num_domains=2).eval()
    fresh.load_state_dict(torch.load(path, weights_only=True), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), feats)
    torch.testing.assert_close(fresh.last_domain_weights, weights)
    per_domain = {k for k in fresh.state_dict() if ".bns.1.running_mean" in k}
    assert per_domain, "the domain-specific statistics must be in the state_dict"
