"""DSBN2d routing and the BNE math, against direct computations."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from reid_pbn.layers import (
    DSBN2d,
    PatchBatchNorm2d,
    domain_weights,
    instance_statistics,
    set_domains,
    wasserstein2_diag,
)


def test_one_domain_equals_bn():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(5).double()
    d = DSBN2d(5, num_domains=1).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
        d.weight.copy_(bn.weight)
        d.bias.copy_(bn.bias)
    for _ in range(2):
        x = torch.randn(4, 5, 6, 3, dtype=torch.float64)
        torch.testing.assert_close(d(x), bn(x))
    torch.testing.assert_close(d.bns[0].running_mean, bn.running_mean)
    torch.testing.assert_close(d.bns[0].running_var, bn.running_var)
    d.eval()
    bn.eval()
    torch.testing.assert_close(d(x), bn(x))


def test_per_sample_domains_route_and_reassemble():
    torch.manual_seed(1)
    d = DSBN2d(4, num_domains=3).double()
    with torch.no_grad():
        d.weight.uniform_(0.5, 1.5)
        d.bias.normal_()
    refs = [copy.deepcopy(bn) for bn in d.bns]
    x = torch.randn(7, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    domains = torch.tensor([2, 0, 2, 2, 0, 0, 2])
    assert set_domains(nn.Sequential(d), domains) == 1
    y = d(x)
    for dom in (0, 2):
        idx = (domains == dom).nonzero().squeeze(1)
        ref = refs[dom](x[idx]) * d.weight[:, None, None] + d.bias[:, None, None]
        torch.testing.assert_close(y[idx], ref)
        torch.testing.assert_close(d.bns[dom].running_mean, refs[dom].running_mean)
    # Domain 1 was absent: its statistics did not move.
    assert torch.equal(d.bns[1].running_mean, torch.zeros(4, dtype=torch.float64))
    y.sum().backward()
    assert x.grad is not None and d.weight.grad is not None


def test_whole_batch_domain_and_errors():
    d = DSBN2d(3, num_domains=2)
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(RuntimeError, match="set_domains"):
        d(x)
    set_domains(d, 1)
    d(x)
    assert d.bns[1].num_batches_tracked == 1 and d.bns[0].num_batches_tracked == 0
    set_domains(d, torch.tensor(0))
    assert d.domains == 0
    set_domains(d, 5)
    with pytest.raises(IndexError):
        d(x)
    set_domains(d, torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError):
        d(x)


def test_per_domain_affine_and_pbn_inner():
    d = DSBN2d(4, num_domains=2, inner="PBN", per_domain_affine=True, mix="weighted", lam=0.2)
    assert d.weight is None
    assert isinstance(d.bns[0], PatchBatchNorm2d) and d.bns[0].lam == 0.2
    assert {"bns.0.weight", "bns.1.running_var"} <= set(d.state_dict())
    set_domains(d, torch.tensor([0, 1, 1, 0]))
    x = torch.randn(4, 4, 8, 8, requires_grad=True)
    d(x).sum().backward()
    assert all(int(bn.num_batches_tracked) == 1 for bn in d.bns)
    d.eval()
    set_domains(d, 1)
    ref = nn.BatchNorm2d(4)
    ref.load_state_dict(d.bns[1].state_dict())
    ref.eval()
    torch.testing.assert_close(d(x), ref(x))


def test_record_instance_stats_and_domain_statistics():
    d = DSBN2d(3, num_domains=2)
    set_domains(d, 0)
    x = torch.randn(5, 3, 4, 6)
    d(x)
    assert d.instance_stats is None
    d.record_stats = True
    d(x)
    mean, var = d.instance_stats
    xn = x.numpy().reshape(5, 3, -1)
    np.testing.assert_allclose(mean.numpy(), xn.mean(-1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var.numpy(), xn.var(-1), rtol=1e-5, atol=1e-6)
    dm, dv = d.domain_statistics()
    assert dm.shape == (2, 3) and torch.equal(dm[0], d.bns[0].running_mean)
    assert torch.equal(dv[1], torch.ones(3))


def test_instance_statistics_against_numpy():
    x = torch.randn(4, 6, 5, 7, dtype=torch.float64)
    mean, var = instance_statistics(x)
    xn = x.numpy().reshape(4, 6, -1)
    np.testing.assert_allclose(mean.numpy(), xn.mean(-1))
    np.testing.assert_allclose(var.numpy(), xn.var(-1))


def test_wasserstein2_diag_against_numpy():
    rng = np.random.default_rng(0)
    mu_s, var_s = rng.normal(size=(5, 8)), rng.uniform(0.1, 2, size=(5, 8))
    mu_d, var_d = rng.normal(size=(3, 8)), rng.uniform(0.1, 2, size=(3, 8))
    expected = np.zeros((5, 3))
    for i in range(5):
        for j in range(3):
            expected[i, j] = (np.sum((mu_s[i] - mu_d[j]) ** 2)
                              + np.sum((np.sqrt(var_s[i]) - np.sqrt(var_d[j])) ** 2))
    t = torch.from_numpy
    got = wasserstein2_diag(t(mu_s)[:, None], t(var_s)[:, None], t(mu_d)[None], t(var_d)[None])
    np.testing.assert_allclose(got.numpy(), expected)
    same = wasserstein2_diag(t(mu_s), t(var_s), t(mu_s), t(var_s))
    np.testing.assert_allclose(same.numpy(), np.zeros(5))


def test_domain_weights_against_numpy():
    rng = np.random.default_rng(1)
    dist = rng.uniform(0.5, 3, size=(4, 3))
    inv = 1 / dist
    np.testing.assert_allclose(domain_weights(torch.from_numpy(dist)).numpy(),
                               inv / inv.sum(1, keepdims=True))
    e = np.exp(-dist / 0.5)
    np.testing.assert_allclose(
        domain_weights(torch.from_numpy(dist), "softmax", temperature=0.5).numpy(),
        e / e.sum(1, keepdims=True))
    w = domain_weights(torch.tensor([[0.0, 1.0, 2.0]]))
    assert abs(w.sum().item() - 1) < 1e-6 and w[0, 0] > 0.999
    with pytest.raises(ValueError):
        domain_weights(torch.from_numpy(dist), "nearest")
