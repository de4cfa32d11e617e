"""PatchBatchNorm2d and StochNorm2d against the package reference and direct computations."""

import pytest
import torch
from torch import nn

from reid_pbn.layers import IBN, PatchBatchNorm2d, Split, StochNorm2d, pbn_reference_forward
from reid_pbn.layers.pbn_reference import patch_slices


def _reference(m, x, state):
    """The package reference on the draws of ``m``'s last forward, from the state before it."""
    factor = m.momentum if m.momentum is not None else 1.0 / float(m.num_batches_tracked)
    return pbn_reference_forward(
        x, m.weight, m.bias, state.get("running_mean"), state.get("running_var"), m.last_splits,
        m.last_mode_choice, m.last_use_batch, mix=m.mix, lam=m.lam, eps=m.eps, factor=factor,
        cumulative=m.momentum is None)


def _randomize(m, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        m.bias.copy_(torch.randn(m.num_features, generator=g))
        m.running_mean.copy_(torch.randn(m.num_features, generator=g))
        m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return m


def test_state_dict_keys_and_eval_equal_bn():
    pbn = _randomize(PatchBatchNorm2d(6))
    bn = nn.BatchNorm2d(6)
    assert list(pbn.state_dict()) == list(bn.state_dict())
    bn.load_state_dict(pbn.state_dict(), strict=True)
    pbn.load_state_dict(bn.state_dict(), strict=True)
    pbn.eval()
    bn.eval()
    x = torch.randn(3, 6, 10, 7)
    assert torch.equal(pbn(x), bn(x))


@pytest.mark.parametrize("mix", ["stochastic", "weighted"])
@pytest.mark.parametrize("modes", [(0,), (1,), (2,)])
def test_patch_statistics_only_normalize_every_patch(mix, modes):
    torch.manual_seed(1)
    m = PatchBatchNorm2d(5, eps=1e-8, mix=mix, p=1.0, lam=0.0, modes=modes, num_modes=1)
    x = torch.randn(4, 5, 12, 9, dtype=torch.float64) * 3 + 2
    m.double()
    for _ in range(4):  # several draws of the cuts
        y = m(x)
        (s,) = m.last_splits
        assert s.mode == modes[0]
        expected_patches = {0: 1, 1: 2, 2: 4}[modes[0]]
        assert len(patch_slices(s, 12, 9)) == expected_patches
        for rs, cs in patch_slices(s, 12, 9):
            patch = y[:, :, rs, cs]
            torch.testing.assert_close(patch.mean((0, 2, 3)), torch.zeros(5, dtype=x.dtype),
                                       atol=1e-9, rtol=0)
            torch.testing.assert_close(patch.var((0, 2, 3), unbiased=False),
                                       torch.ones(5, dtype=x.dtype), atol=1e-6, rtol=0)


def test_two_modes_mix_per_channel():
    torch.manual_seed(2)
    m = PatchBatchNorm2d(8, eps=1e-8, mix="weighted", lam=0.0, modes=(1, 2), num_modes=2).double()
    x = torch.randn(3, 8, 16, 8, dtype=torch.float64)
    y = m(x)
    choice = m.last_mode_choice
    assert choice.shape == (8,) and set(choice.tolist()) <= {0, 1}
    for c in range(8):
        for rs, cs in patch_slices(m.last_splits[int(choice[c])], 16, 8):
            patch = y[:, c, rs, cs]
            assert abs(patch.mean().item()) < 1e-9
            assert abs(patch.var(unbiased=False).item() - 1) < 1e-6


def test_mode_choice_is_fair_coin():
    torch.manual_seed(3)
    m = PatchBatchNorm2d(512, modes=(0, 1), num_modes=2)
    m(torch.randn(2, 512, 8, 8))
    frac = m.last_mode_choice.double().mean().item()
    assert 0.4 < frac < 0.6


def test_running_statistics_only_equals_eval_bn():
    for kwargs in ({"mix": "stochastic", "p": 0.0}, {"mix": "weighted", "lam": 1.0}):
        # momentum 0: the running statistics cannot move within the forward.
        m = _randomize(PatchBatchNorm2d(6, momentum=0.0, **kwargs))
        bn = nn.BatchNorm2d(6)
        bn.load_state_dict(m.state_dict())
        bn.eval()
        x = torch.randn(4, 6, 12, 8)
        torch.testing.assert_close(m(x), bn(x))


def _check_against_reference(m, x_shape, steps=3):
    """``steps`` training forwards of ``m`` against the package reference: output, running
    statistics, and the input, weight and bias gradients."""
    for step in range(steps):
        state = {k: v.clone() for k, v in m.state_dict().items()}
        x = (torch.randn(*x_shape, dtype=torch.float64) * 2 + 1).requires_grad_()
        y = m(x)
        ref_x = x.detach().clone().requires_grad_()
        ref, rm, rv = _reference(m, ref_x, state)
        torch.testing.assert_close(y, ref)
        if m.track_running_stats:
            torch.testing.assert_close(m.running_mean, rm)
            torch.testing.assert_close(m.running_var, rv)
            assert int(m.num_batches_tracked) == step + 1
        g = torch.randn_like(y)
        params = [p for p in (m.weight, m.bias) if p is not None]
        grads = torch.autograd.grad(y, [x, *params], g)
        ref_grads = torch.autograd.grad(ref, [ref_x, *params], g)
        for a, b in zip(grads, ref_grads):
            torch.testing.assert_close(a, b)


# 12 x 10 and 16 x 8 pool cells with the one-hot matrix, 21 x 34 with index_add; 5 x 3 allows
# cuts only along H (min_size 2), and 3 x 2 falls back to whole-map normalization.
@pytest.mark.parametrize("size", [(12, 10), (16, 8), (21, 34), (5, 3), (3, 2)])
@pytest.mark.parametrize("mix", ["stochastic", "weighted"])
@pytest.mark.parametrize("modes,num_modes", [((0, 1, 2), 2), ((0, 1, 2), 3), ((1, 2), 2),
                                             ((0, 2), 2), ((2,), 1), ((1,), 1), ((0,), 1)])
def test_matches_reference_output_gradients_and_running_stats(mix, modes, num_modes, size):
    torch.manual_seed(4)
    m = _randomize(PatchBatchNorm2d(6, mix=mix, p=0.5, lam=0.3, modes=modes,
                                    num_modes=num_modes)).double()
    _check_against_reference(m, (3, 6, *size))


@pytest.mark.parametrize("kwargs", [
    {"momentum": None},
    {"momentum": None, "modes": (2,), "num_modes": 1},
    {"affine": False},
    {"track_running_stats": False},
    {"affine": False, "track_running_stats": False, "mix": "weighted"},
    {"bias": False, "mix": "weighted", "lam": 0.7},
    {"p": 1.0},
    {"p": 0.0, "momentum": 0.3},
])
def test_matches_reference_with_other_options(kwargs):
    torch.manual_seed(5)
    m = PatchBatchNorm2d(4, **kwargs)
    if m.affine and m.track_running_stats and m.bias is not None:
        _randomize(m)
    _check_against_reference(m.double(), (2, 4, 16, 12))


def test_stochnorm_matches_reference():
    torch.manual_seed(6)
    _check_against_reference(_randomize(StochNorm2d(5)).double(), (4, 5, 6, 6))


def test_reference_whole_map_with_batch_statistics_is_training_bn():
    """The reference itself, independently of the layer: one whole-map split with the batch
    statistics everywhere is BN in training mode, running-statistics update included."""
    x = torch.randn(4, 3, 5, 7, dtype=torch.float64)
    bn = _randomize(nn.BatchNorm2d(3, momentum=0.2)).double()
    rm, rv = bn.running_mean.clone(), bn.running_var.clone()
    y, rm, rv = pbn_reference_forward(
        x, bn.weight, bn.bias, rm, rv, [Split(0, None, None)], None,
        torch.ones(3, 1, dtype=torch.bool), eps=bn.eps, factor=0.2)
    torch.testing.assert_close(y, bn.train()(x))
    torch.testing.assert_close(rm, bn.running_mean)
    torch.testing.assert_close(rv, bn.running_var)


def test_gradients_reach_weight_bias_and_input():
    m = PatchBatchNorm2d(4)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    (m(x) * torch.randn(2, 4, 8, 8)).sum().backward()
    for t in (x, m.weight, m.bias):
        assert t.grad is not None and t.grad.abs().sum() > 0


def test_gradcheck():
    m = _randomize(PatchBatchNorm2d(3, momentum=0.0, p=0.5)).double()
    x = torch.randn(2, 3, 6, 4, dtype=torch.float64, requires_grad=True)
    weight = m.weight.detach().clone().requires_grad_()
    bias = m.bias.detach().clone().requires_grad_()

    def fn(inp, w, b):
        m.generator = torch.Generator().manual_seed(7)  # the same draws on every call
        return torch.func.functional_call(m, {"weight": w, "bias": b}, (inp,))

    assert torch.autograd.gradcheck(fn, (x, weight, bias), fast_mode=True)


def test_running_stats_hand_computed_four_patches():
    # cut_range (0.5, 0.625) on an 8 x 8 map leaves exactly one cut position: 4.
    m = _randomize(PatchBatchNorm2d(3, momentum=0.2, modes=(2,), num_modes=1,
                                    cut_range=(0.5, 0.625))).double()
    r_mean, r_var = m.running_mean.clone(), m.running_var.clone()
    x = torch.randn(5, 3, 8, 8, dtype=torch.float64)
    m(x)
    assert m.last_splits[0].row == 4 and m.last_splits[0].col == 4
    for patch in (x[:, :, :4, :4], x[:, :, :4, 4:], x[:, :, 4:, :4], x[:, :, 4:, 4:]):
        flat = patch.transpose(0, 1).reshape(3, -1)
        r_mean = 0.8 * r_mean + 0.2 * flat.mean(1)
        r_var = 0.8 * r_var + 0.2 * flat.var(1, unbiased=True)
    torch.testing.assert_close(m.running_mean, r_mean)
    torch.testing.assert_close(m.running_var, r_var)


def test_only_first_mode_updates_running_stats():
    # First mode whole map (one BN update), second mode four patches (no update).
    torch.manual_seed(5)
    for _ in range(10):
        m = PatchBatchNorm2d(3, modes=(0, 2), num_modes=2).double()
        x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
        m(x)
        if m.last_splits[0].mode == 0:
            break
    assert m.last_splits[0].mode == 0 and m.last_splits[1].row is not None
    flat = x.transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(m.running_mean, 0.1 * flat.mean(1))
    torch.testing.assert_close(m.running_var, 0.9 + 0.1 * flat.var(1, unbiased=True))


def test_cumulative_average_when_momentum_is_none():
    m = PatchBatchNorm2d(3, momentum=None, modes=(1,), num_modes=1).double()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    m(x)
    means = [x[:, :, rs, cs].mean((0, 2, 3)) for rs, cs in patch_slices(m.last_splits[0], 8, 8)]
    torch.testing.assert_close(m.running_mean, torch.stack(means).mean(0))
    assert int(m.num_batches_tracked) == 1


def test_cut_bounds_reproduce_official_range():
    m = PatchBatchNorm2d(2, min_size=1)
    for size in range(5, 80):
        assert m.cut_bounds(size) == (size // 4, (size // 4) * 3)
    m2 = PatchBatchNorm2d(2)  # min_size 2 clips the range on tiny sides
    assert m2.cut_bounds(16) == (4, 12)
    assert m2.cut_bounds(4) == (2, 3)
    assert m2.cut_bounds(3)[0] >= m2.cut_bounds(3)[1]


def test_cut_positions_are_uniform_over_the_range():
    torch.manual_seed(6)
    m = PatchBatchNorm2d(2, modes=(2,), num_modes=1)
    seen = set()
    for _ in range(200):
        m(torch.randn(2, 2, 16, 8))
        s = m.last_splits[0]
        assert 4 <= s.row < 12 and 2 <= s.col < 6
        seen.add(s.row)
    assert seen == set(range(4, 12))


@pytest.mark.parametrize("shape", [(2, 4, 3, 2), (2, 4, 1, 1), (1, 4, 4, 4), (3, 4, 2, 9)])
def test_small_maps_fall_back_without_error(shape):
    m = PatchBatchNorm2d(4, p=1.0, eps=1e-8).double()
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    for _ in range(5):
        y = m(x)
        y.sum().backward()
        assert torch.isfinite(y).all()
    if shape[2:] == (3, 2):
        assert all(s.row is None and s.col is None for s in m.last_splits)
        torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(4, dtype=x.dtype),
                                   atol=1e-9, rtol=0)


def test_single_value_per_channel_raises_like_bn():
    with pytest.raises(ValueError):
        PatchBatchNorm2d(3)(torch.randn(1, 3, 1, 1))


def test_same_seed_same_output():
    m = PatchBatchNorm2d(8)
    x = torch.randn(4, 8, 16, 8)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    torch.manual_seed(123)
    y1 = m(x)
    splits1 = m.last_splits
    m.load_state_dict(state)
    torch.manual_seed(123)
    y2 = m(x)
    assert splits1 == m.last_splits
    assert torch.equal(y1, y2)
    # An explicit generator gives the same independence from the global RNG.
    m.generator = torch.Generator().manual_seed(9)
    m.load_state_dict(state)
    y3 = m(x)
    m.generator = torch.Generator().manual_seed(9)
    m.load_state_dict(state)
    torch.manual_seed(999)
    assert torch.equal(m(x), y3)


def test_no_grad_training_forward_and_non_contiguous_input():
    m = PatchBatchNorm2d(4)
    x = torch.randn(3, 8, 4, 8).transpose(1, 3)  # (3, 8, 4, 8) view, not contiguous
    x = x[:, :4]
    with torch.no_grad():
        y = m(x)
    assert y.shape == x.shape and not y.requires_grad


def test_affine_false_and_no_running_stats():
    m = PatchBatchNorm2d(4, affine=False, track_running_stats=False, eps=1e-8).double()
    assert list(m.state_dict()) == []
    x = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    y = m(x)
    choice = m.last_mode_choice
    for c in range(4):
        for rs, cs in patch_slices(m.last_splits[int(choice[c])], 8, 8):
            assert abs(y[:, c, rs, cs].mean().item()) < 1e-9
    m.eval()
    bn = nn.BatchNorm2d(4, eps=1e-8, affine=False, track_running_stats=False).double()
    torch.testing.assert_close(m(x), bn(x))


def test_invalid_options_raise():
    for kwargs in ({"mix": "avg"}, {"p": 1.5}, {"modes": (0, 3)}, {"num_modes": 3, "modes": (0, 1)},
                   {"cut_range": (0.5, 0.25)}, {"min_size": 0}):
        with pytest.raises(ValueError):
            PatchBatchNorm2d(4, **kwargs)


def test_stochnorm_extremes_and_masks():
    x = torch.randn(6, 5, 4, 4, dtype=torch.float64)
    bn = nn.BatchNorm2d(5).double()
    _randomize(bn)
    state = {k: v.clone() for k, v in bn.state_dict().items()}
    # p = 1: BN in training mode, including the running-statistics update.
    sn = StochNorm2d(5, p=1.0).double()
    sn.load_state_dict(state)
    bn.train()
    torch.testing.assert_close(sn(x), bn(x))
    torch.testing.assert_close(sn.running_mean, bn.running_mean)
    torch.testing.assert_close(sn.running_var, bn.running_var)
    # p = 0: running statistics from before the update.
    sn = StochNorm2d(5, p=0.0).double()
    sn.load_state_dict(state)
    bn.load_state_dict(state)
    bn.eval()
    torch.testing.assert_close(sn(x), bn(x))
    # p = 0.5: per-channel choice, given by the drawn mask.
    sn = StochNorm2d(5, p=0.5).double()
    sn.load_state_dict(state)
    y = sn(x)
    use_batch = sn.last_use_batch[:, 0]
    mu = torch.where(use_batch, x.mean((0, 2, 3)), state["running_mean"])
    var = torch.where(use_batch, x.var((0, 2, 3), unbiased=False), state["running_var"])
    ref = (x - mu[:, None, None]) / torch.sqrt(var[:, None, None] + 1e-5)
    ref = ref * state["weight"][:, None, None] + state["bias"][:, None, None]
    torch.testing.assert_close(y, ref)
    assert list(sn.state_dict()) == list(bn.state_dict())


def test_ibn_with_pbn():
    m = IBN(10, norm="PBN", mix="weighted", lam=0.5)
    assert isinstance(m.BN, PatchBatchNorm2d) and m.BN.num_features == 5
    assert sorted(m.state_dict()) == ["BN.bias", "BN.num_batches_tracked", "BN.running_mean",
                                      "BN.running_var", "BN.weight", "IN.bias", "IN.weight"]
    x = torch.randn(4, 10, 16, 8, requires_grad=True)
    m(x).sum().backward()
    assert x.grad is not None
    m.eval()
    bn = nn.BatchNorm2d(5)
    bn.load_state_dict(m.BN.state_dict())
    bn.eval()
    torch.testing.assert_close(m(x)[:, 5:], bn(x[:, 5:]))


def test_statistics_stable_with_large_mean():
    # float32 input whose mean is 1000 standard deviations away from zero.
    torch.manual_seed(8)
    m = PatchBatchNorm2d(4, mix="weighted", lam=0.0, modes=(2,), num_modes=1)
    x = torch.randn(8, 4, 16, 12) + 1000.0
    y = m(x)
    for rs, cs in patch_slices(m.last_splits[0], 16, 12):
        patch = y[:, :, rs, cs].double()
        assert patch.mean((0, 2, 3)).abs().max() < 1e-3
        assert (patch.var((0, 2, 3), unbiased=False) - 1).abs().max() < 1e-3


def test_multithreaded_forward_matches_reference(monkeypatch):
    # With several threads the result is the reference's, and neither the forward nor the
    # backward touches the process-wide thread setting.
    torch.set_num_threads(2)
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    m = _randomize(PatchBatchNorm2d(6, lam=0.3, mix="weighted")).double()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.randn(3, 6, 24, 20, dtype=torch.float64, requires_grad=True)
    y = m(x)
    ref, _, _ = _reference(m, x, state)
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(ref, x, g)[0])
    assert calls == [] and torch.get_num_threads() == 2
