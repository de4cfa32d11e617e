"""The norm factory, convert_norm, the config reader and the other registered norms."""

import copy

import pytest
import torch
import torchvision
from torch import nn

from reid_pbn.layers import (
    NORM_REGISTRY,
    BatchGroupNorm2d,
    DSBN2d,
    FrozenBatchNorm2d,
    IEBN2d,
    PatchBatchNorm2d,
    StochNorm2d,
    convert_norm,
    get_norm,
    register_norm,
    set_domains,
)

EXPECTED_NAMES = {"BN", "SyncBN", "FrozenBN", "GN", "IN", "StochNorm", "PBN", "BGN", "IEBN",
                  "DSBN"}


def _randomize_bns(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.num_batches_tracked.fill_(7)
    return model


def test_registry_has_every_documented_name():
    assert set(NORM_REGISTRY) >= EXPECTED_NAMES


@pytest.mark.parametrize("name", sorted(NORM_REGISTRY))
def test_every_registered_norm_builds_and_runs(name):
    torch.manual_seed(0)
    m = get_norm(name, 16)
    set_domains(m, torch.tensor([0, 1, 1, 0]))
    x = torch.randn(4, 16, 8, 4, requires_grad=True)
    m.train()
    y = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    m.eval()
    with torch.no_grad():
        y_eval = m(x)
    assert y_eval.shape == x.shape and torch.isfinite(y_eval).all()


def test_get_norm_accepts_callables_and_rejects_unknown_names():
    m = get_norm(lambda c, **kw: nn.GroupNorm(2, c, **kw), 8, eps=1e-3)
    assert isinstance(m, nn.GroupNorm) and m.eps == 1e-3
    with pytest.raises(KeyError, match="Unknown norm"):
        get_norm("NoSuchNorm", 8)


def test_register_norm():
    @register_norm("_TestNorm")
    def _test_norm(c):
        return nn.Identity()

    try:
        assert isinstance(get_norm("_TestNorm", 4), nn.Identity)
    finally:
        NORM_REGISTRY.unregister("_TestNorm")


def test_group_norm_picks_a_divisor():
    assert get_norm("GN", 64).num_groups == 32
    assert get_norm("GN", 48).num_groups == 24
    assert get_norm("GN", 48, num_groups=5).num_groups == 4
    assert get_norm("GN", 3).num_groups == 3


def test_instance_norm_is_affine():
    m = get_norm("IN", 6)
    assert isinstance(m, nn.InstanceNorm2d) and m.affine and not m.track_running_stats


def test_convert_resnet50_to_pbn_loads_strict_and_matches_in_eval():
    torch.manual_seed(0)
    model = _randomize_bns(torchvision.models.resnet50(weights=None))
    model.eval()
    state = model.state_dict()
    converted = convert_norm(copy.deepcopy(model), "PBN")
    assert not any(type(m) is nn.BatchNorm2d for m in converted.modules())
    assert sum(isinstance(m, PatchBatchNorm2d) for m in converted.modules()) == 53
    assert list(converted.state_dict()) == list(state)
    converted.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        assert torch.equal(model(x), converted(x))
    # A training step works and only moves the running statistics of PBN layers.
    converted.train()
    converted(x).sum().backward()
    assert converted.bn1.weight.grad is not None


def test_convert_norm_copies_state_and_settings():
    bn = _randomize_bns(nn.Sequential(nn.BatchNorm2d(8, eps=1e-3, momentum=0.3)))[0]
    bn.weight.requires_grad_(False)
    bn.eval()
    for spec in ("BN", "PBN", "StochNorm", "SyncBN", "FrozenBN", "IEBN"):
        new = convert_norm(nn.Sequential(copy.deepcopy(bn)), spec)[0]
        state = new.state_dict()
        for key in ("running_mean", "running_var", "weight", "bias", "num_batches_tracked"):
            assert torch.equal(state[key], bn.state_dict()[key]), (spec, key)
        assert new.eps == 1e-3
        assert not new.training
        if spec != "FrozenBN":
            assert new.momentum == 0.3
            assert not new.weight.requires_grad and new.bias.requires_grad
    gn = convert_norm(copy.deepcopy(bn), "GN", num_groups=4)
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 4
    assert torch.equal(gn.weight, bn.weight)
    bgn = convert_norm(copy.deepcopy(bn), "BGN", num_groups=2)
    assert torch.equal(bgn.bias, bn.bias) and bgn.running_mean.shape == (2,)


def test_convert_norm_to_dsbn_copies_statistics_into_every_domain():
    bn = _randomize_bns(nn.Sequential(nn.BatchNorm2d(6)))[0]
    for per_domain in (False, True):
        d = convert_norm(copy.deepcopy(bn), "DSBN", num_domains=3, per_domain_affine=per_domain)
        assert isinstance(d, DSBN2d)
        for inner in d.bns:
            assert torch.equal(inner.running_mean, bn.running_mean)
            assert torch.equal(inner.running_var, bn.running_var)
            assert int(inner.num_batches_tracked) == 7
            if per_domain:
                assert torch.equal(inner.weight, bn.weight)
        if not per_domain:
            assert torch.equal(d.weight, bn.weight) and torch.equal(d.bias, bn.bias)
        # Each domain now computes the original BN in eval mode.
        d.eval()
        bn.eval()
        x = torch.randn(2, 6, 5, 5)
        for dom in range(3):
            set_domains(d, dom)
            torch.testing.assert_close(d(x), bn(x))


def test_convert_norm_leaves_other_layers_and_subclasses():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), PatchBatchNorm2d(4),
                          nn.BatchNorm1d(4))
    convert_norm(model, "StochNorm", p=0.25)
    assert isinstance(model[1], StochNorm2d) and model[1].p == 0.25
    assert type(model[2]) is PatchBatchNorm2d
    assert type(model[3]) is nn.BatchNorm1d


def test_frozen_bn():
    bn = _randomize_bns(nn.Sequential(nn.BatchNorm2d(5)))[0].eval()
    fz = FrozenBatchNorm2d(5)
    assert list(fz.parameters()) == []
    assert list(fz.state_dict()) == list(bn.state_dict())
    fz.load_state_dict(bn.state_dict(), strict=True)
    state = {k: v for k, v in bn.state_dict().items() if k != "num_batches_tracked"}
    FrozenBatchNorm2d(5).load_state_dict(state, strict=True)
    fz.train()
    x = torch.randn(3, 5, 4, 4, requires_grad=True)
    y = fz(x)
    torch.testing.assert_close(y, bn(x))
    torch.testing.assert_close(fz.running_mean, bn.running_mean)  # not updated in training
    y.sum().backward()
    assert x.grad is not None


def test_batch_group_norm_against_formula():
    torch.manual_seed(0)
    m = BatchGroupNorm2d(8, num_groups=4, momentum=0.1).double()
    with torch.no_grad():
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_()
    x = torch.randn(3, 8, 5, 6, dtype=torch.float64)
    y = m(x)
    groups = x.reshape(3, 4, -1)
    mean = groups.mean((0, 2))
    var = groups.var((0, 2), unbiased=False)
    ref = ((groups - mean[:, None]) / torch.sqrt(var[:, None] + 1e-5)).view_as(x)
    ref = ref * m.weight[:, None, None] + m.bias[:, None, None]
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(m.running_mean, 0.1 * mean)
    torch.testing.assert_close(m.running_var, 0.9 + 0.1 * groups.var((0, 2), unbiased=True))
    m.eval()
    ref_eval = ((groups - m.running_mean[:, None]) / torch.sqrt(m.running_var[:, None] + 1e-5))
    ref_eval = ref_eval.view_as(x) * m.weight[:, None, None] + m.bias[:, None, None]
    torch.testing.assert_close(m(x), ref_eval)
    # More groups than channels: groups split each channel's map.
    m2 = BatchGroupNorm2d(4, num_groups=8).double()
    groups = x[:, :4].reshape(3, 8, -1)
    ref = ((groups - groups.mean((0, 2), keepdim=True))
           / torch.sqrt(groups.var((0, 2), unbiased=False, keepdim=True) + 1e-5))
    torch.testing.assert_close(m2(x[:, :4]), ref.view(3, 4, 5, 6))
    assert BatchGroupNorm2d(6, num_groups=4).num_groups == 3


def test_iebn_against_formula():
    torch.manual_seed(0)
    m = IEBN2d(6).double()
    assert torch.equal(m.gate_weight, torch.zeros(6, dtype=torch.float64))
    assert torch.equal(m.gate_bias, torch.full((6,), -1.0, dtype=torch.float64))
    with torch.no_grad():
        for p in (m.weight, m.bias, m.gate_weight, m.gate_bias):
            p.normal_()
    x = torch.randn(4, 6, 5, 3, dtype=torch.float64)

    def formula(mean, var):
        x_hat = (x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + 1e-5)
        gate = torch.sigmoid(m.gate_weight * x.mean((2, 3)) + m.gate_bias)  # (N, C)
        return x_hat * (m.weight * gate)[:, :, None, None] + m.bias[:, None, None]

    torch.testing.assert_close(m(x), formula(x.mean((0, 2, 3)),
                                             x.var((0, 2, 3), unbiased=False)))
    m.eval()
    torch.testing.assert_close(m(x), formula(m.running_mean, m.running_var))
    bn_keys = set(nn.BatchNorm2d(6).state_dict())
    assert bn_keys <= set(m.state_dict())


def test_syncbn_without_process_group_is_bn():
    torch.manual_seed(0)
    s, bn = get_norm("SyncBN", 4), nn.BatchNorm2d(4)
    x = torch.randn(3, 4, 5, 5)
    torch.testing.assert_close(s(x), bn(x))
    torch.testing.assert_close(s.running_var, bn.running_var)


@pytest.mark.parametrize("name", sorted(NORM_REGISTRY))
@pytest.mark.parametrize("bn_kwargs", [{"affine": False}, {"bias": False},
                                       {"track_running_stats": False}],
                         ids=["no-affine", "no-bias", "no-running-stats"])
def test_convert_norm_handles_bn_variants(name, bn_kwargs):
    model = convert_norm(nn.Sequential(nn.BatchNorm2d(8, **bn_kwargs)), name)
    set_domains(model, 0)
    x = torch.randn(2, 8, 6, 4)
    model.train()
    assert model(x).shape == x.shape
    model.eval()
    assert model(x).shape == x.shape
