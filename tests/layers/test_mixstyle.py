"""MixStyle and EFDMix: the published formulas, draws, eval identity, seeds, crossdomain mixing."""

from __future__ import annotations

import logging

import pytest
import torch
from scipy import stats

from reid_pbn.config import get_cfg
from reid_pbn.layers import (
    MIX_LAYERS,
    EFDMix,
    MixStyle,
    apply_efdmix,
    apply_mixstyle,
    build_mix_layer,
    sample_beta,
    set_mix_domains,
)
from reid_pbn.layers import mixstyle as mixstyle_module
from reid_pbn.modeling import build_model, build_resnet


def published_mixstyle(x, lmda, perm, eps=1e-6):
    """MixStyle.forward of KaiyangZhou/mixstyle-release (reid/models/mixstyle.py), after its
    draws: lmda is (B, 1, 1, 1), perm the partner indices."""
    mu = x.mean(dim=[2, 3], keepdim=True)
    var = x.var(dim=[2, 3], keepdim=True)
    sig = (var + eps).sqrt()
    mu, sig = mu.detach(), sig.detach()
    x_normed = (x - mu) / sig
    mu2, sig2 = mu[perm], sig[perm]
    mu_mix = mu * lmda + mu2 * (1 - lmda)
    sig_mix = sig * lmda + sig2 * (1 - lmda)
    return x_normed * sig_mix + mu_mix


def published_efdmix(x, lmda, perm):
    """EFDMix.forward of YBZh/EFDM (DomainGeneralization/reid/models/efdmix.py), after its
    draws: lmda is (B, 1, 1), perm the partner indices."""
    B, C, W, H = x.size(0), x.size(1), x.size(2), x.size(3)  # noqa: N806
    x_view = x.view(B, C, -1)
    value_x, index_x = torch.sort(x_view)
    inverse_index = index_x.argsort(-1)
    x_view_copy = value_x[perm].gather(-1, inverse_index) * (1 - lmda)
    new_x = x_view + (x_view_copy - x_view.detach() * (1 - lmda))
    return new_x.view(B, C, W, H)


def fixed_inputs():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 4, 5, 3, generator=g) * torch.rand(6, 4, 1, 1, generator=g) * 3
    lam = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0, 0.3])
    perm = torch.tensor([3, 0, 5, 1, 2, 4])
    return x, lam, perm


def test_mixstyle_equals_published_formula_values_and_gradients():
    x, lam, perm = fixed_inputs()
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    ours = apply_mixstyle(a, lam, perm)
    ref = published_mixstyle(b, lam.view(-1, 1, 1, 1), perm)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    w = torch.randn_like(x)
    (ours * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
    # lam = 1 keeps the sample's own statistics: its values come back (up to rounding).
    torch.testing.assert_close(ours[4], x[4], rtol=1e-5, atol=1e-5)


def test_efdmix_equals_published_formula_values_and_gradients():
    x, lam, perm = fixed_inputs()
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    ours = apply_efdmix(a, lam, perm)
    ref = published_efdmix(b, lam.view(-1, 1, 1), perm)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    w = torch.randn_like(x)
    (ours * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)


def test_efdmix_value_by_hand():
    # One channel, 3 values: sample 0 = [3, 1, 2] (ranks 2, 0, 1), partner sample 1 = [10, 30, 20].
    x = torch.tensor([[[[3.0, 1.0, 2.0]]], [[[10.0, 30.0, 20.0]]]])
    y = apply_efdmix(x, torch.tensor([0.25, 1.0]), torch.tensor([1, 0]))
    # sample 0: 0.25 * x + 0.75 * sorted partner at x's ranks = 0.25*[3,1,2] + 0.75*[30,10,20]
    torch.testing.assert_close(y[0, 0, 0], torch.tensor([23.25, 7.75, 15.5]))
    torch.testing.assert_close(y[1], x[1])


@pytest.mark.parametrize("cls, fn", [(MixStyle, published_mixstyle), (EFDMix, published_efdmix)])
def test_layer_applies_published_formula_to_its_own_draws(cls, fn):
    x, _, _ = fixed_inputs()
    layer = cls(p=1.0, alpha=0.1, generator=torch.Generator().manual_seed(5)).train()
    twin = cls(p=1.0, alpha=0.1, generator=torch.Generator().manual_seed(5))
    out = layer(x)
    draw = twin.draw(x.shape[0])
    assert draw is not None and sorted(draw.perm.tolist()) == list(range(6))
    shape = (-1, 1, 1, 1) if cls is MixStyle else (-1, 1, 1)
    lmda = draw.lam.float().view(shape)  # the published Beta draws are float32
    torch.testing.assert_close(out, fn(x, lmda, draw.perm), rtol=0, atol=0)


@pytest.mark.parametrize("cls", [MixStyle, EFDMix])
def test_identity_in_eval_and_with_p_zero(cls):
    x, _, _ = fixed_inputs()
    assert cls(p=1.0).eval()(x) is x
    assert cls(p=0.0).train()(x) is x
    single = x[:1]  # no partner to mix with
    assert cls(p=1.0).train()(single) is single


@pytest.mark.parametrize("cls", [MixStyle, EFDMix])
def test_same_seed_same_output(cls):
    x = torch.randn(8, 3, 4, 4)
    outs = []
    for seed in (0, 0, 1):
        layer = cls(p=1.0, generator=torch.Generator().manual_seed(seed)).train()
        outs.append(torch.stack([layer(x) for _ in range(3)]))
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2])
    # Without a generator the global one is used, which torch.manual_seed (the trainer) seeds.
    layer = cls(p=1.0).train()
    torch.manual_seed(4)
    a = layer(x)
    torch.manual_seed(4)
    assert torch.equal(layer(x), a)


def test_mixing_probability():
    layer = MixStyle(p=0.3, generator=torch.Generator().manual_seed(0))
    mixed = sum(layer.draw(4) is not None for _ in range(2000))
    assert abs(mixed / 2000 - 0.3) < 0.04


def test_random_mode_draws_permutations():
    layer = EFDMix(p=1.0, generator=torch.Generator().manual_seed(0))
    for n in (2, 5, 32):
        assert sorted(layer.draw(n).perm.tolist()) == list(range(n))


def test_crossdomain_with_labels_picks_partners_from_other_domains():
    domains = torch.tensor([0, 0, 1, 2, 1, 0, 2, 2])
    layer = MixStyle(p=1.0, mix="crossdomain", generator=torch.Generator().manual_seed(0))
    assert set_mix_domains(layer, domains) == 1
    seen = set()
    for _ in range(200):
        perm = layer.draw(8).perm
        assert (domains[perm] != domains).all()
        seen.update(zip(range(8), perm.tolist()))
    # Every cross-domain pair occurs (uniform choice among the other domains' samples).
    assert seen == {(i, j) for i in range(8) for j in range(8) if domains[i] != domains[j]}


@pytest.mark.parametrize("n", [6, 7])
def test_crossdomain_without_labels_mixes_the_two_halves_and_logs_once(caplog, n):
    mixstyle_module._LOGGED.clear()
    layer = EFDMix(p=1.0, mix="crossdomain", generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.WARNING, logger="reid_pbn.layers.mixstyle"):
        for _ in range(20):
            perm = layer.draw(n).perm
            h = n // 2
            assert (perm[:h] >= h).all() and (perm[h:] < h).all()
            if n % 2 == 0:  # the published case: each half's partners are a shuffle
                assert sorted(perm[:h].tolist()) == list(range(h, n))
                assert sorted(perm[h:].tolist()) == list(range(h))
    logged = [r for r in caplog.records if "no domain labels" in r.getMessage()]
    assert len(logged) == 1


def test_crossdomain_with_one_domain_or_mismatched_labels_falls_back_to_halves(caplog):
    mixstyle_module._LOGGED.clear()
    layer = MixStyle(p=1.0, mix="crossdomain", generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.WARNING, logger="reid_pbn.layers.mixstyle"):
        layer.domains = torch.zeros(4, dtype=torch.long)
        assert (layer.draw(4).perm[:2] >= 2).all()
        layer.domains = torch.tensor([0, 1])
        assert (layer.draw(4).perm[2:] < 2).all()
    text = caplog.text
    assert "one domain" in text and "2 domain labels for a batch of 4" in text


@pytest.mark.parametrize("a, b", [(0.1, 0.1), (0.3, 0.3), (2.0, 5.0)])
def test_beta_draws_follow_the_beta_distribution(a, b):
    draws = sample_beta(a, b, 4000, torch.Generator().manual_seed(0)).double().numpy()
    assert ((draws >= 0) & (draws <= 1)).all()
    assert stats.kstest(draws, stats.beta(a, b).cdf).pvalue > 1e-3
    assert torch.equal(sample_beta(a, b, 50, torch.Generator().manual_seed(9)),
                       sample_beta(a, b, 50, torch.Generator().manual_seed(9)))


def test_builder_and_arguments():
    assert set(MIX_LAYERS) == {"MixStyle", "EFDMix"}
    layer = build_mix_layer("EFDMix", p=0.2, alpha=0.3, mix="crossdomain")
    assert isinstance(layer, EFDMix) and (layer.p, layer.alpha, layer.mix) == (0.2, 0.3,
                                                                                "crossdomain")
    assert list(layer.state_dict()) == []
    with pytest.raises(KeyError, match="Registered: EFDMix, MixStyle"):
        build_mix_layer("AdaIN")
    with pytest.raises(ValueError, match="mix must be"):
        MixStyle(mix="half")


def test_resnet_mixers_keep_keys_and_eval_outputs():
    torch.manual_seed(0)
    plain = build_resnet(18)
    mixed = build_resnet(18, mixers={"layer1": MixStyle(p=1.0), "layer2": EFDMix(p=1.0)})
    assert list(mixed.state_dict()) == list(plain.state_dict())
    mixed.load_state_dict(plain.state_dict())
    plain.eval()
    mixed.eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(mixed(x), plain(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="Unknown backbone stages"):
        build_resnet(18, mixers={"conv2": MixStyle()})


@pytest.mark.parametrize("name, stages, expected", [
    ("resnet", ("layer1", "layer2"), ["layer1", "layer2"]),
    ("osnet_x0_25", ("conv2", "conv3"), ["conv2", "conv3"]),
    ("osnet_x0_25", ("layer1", "layer2"), ["conv2", "conv3"]),
])
def test_config_inserts_mixers_and_model_passes_domains(name, stages, expected):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = name
    cfg.MODEL.BACKBONE.DEPTH = 18
    cfg.MODEL.LOSSES.NAME = ("CrossEntropyLoss",)
    cfg.MODEL.BACKBONE.MIX.TYPE = "EFDMix"
    cfg.MODEL.BACKBONE.MIX.STAGES = stages
    cfg.MODEL.BACKBONE.MIX.P = 1.0
    cfg.MODEL.BACKBONE.MIX.ALPHA = 0.3
    cfg.MODEL.BACKBONE.MIX.MODE = "crossdomain"
    model = build_model(cfg, num_classes=4)
    mixers = model.backbone.mixers
    assert list(mixers) == expected
    assert all(isinstance(m, EFDMix) and m.alpha == 0.3 and m.mix == "crossdomain"
               for m in mixers.values())
    domains = torch.tensor([0, 0, 1, 1])
    batch = {"images": torch.randn(4, 3, 64, 32), "pids": torch.arange(4), "domains": domains}
    model.train()
    losses = model(batch)
    assert torch.isfinite(sum(losses.values()))
    assert all(torch.equal(m.domains, domains) for m in mixers.values())
