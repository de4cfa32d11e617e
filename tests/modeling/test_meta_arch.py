"""Baseline model: build from config, train forward (losses), eval forward (features)."""

from __future__ import annotations

import pytest
import torch

from reid_pbn import layers
from reid_pbn.config import get_cfg
from reid_pbn.modeling import (
    BACKBONE_REGISTRY,
    META_ARCH_REGISTRY,
    Baseline,
    build_backbone,
    build_model,
)


def tiny_cfg(**backbone):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.DEPTH = 18
    for k, v in backbone.items():
        setattr(cfg.MODEL.BACKBONE, k, v)
    return cfg


def make_batch(n_ids=4, k=2, domains=None):
    pids = torch.arange(n_ids).repeat_interleave(k)
    return {
        "images": torch.randn(len(pids), 3, 64, 32),
        "pids": pids,
        "camids": torch.zeros_like(pids),
        "domains": torch.zeros_like(pids) if domains is None else domains,
        "img_paths": [f"{i}.jpg" for i in range(len(pids))],
    }


@pytest.mark.parametrize("name", BACKBONE_REGISTRY.names())
def test_every_registered_backbone_builds(name):
    cfg = tiny_cfg(NAME=name)
    backbone = build_backbone(cfg).eval()
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, 64, 32))
    assert out.dim() == 4 and out.shape[1] == backbone.out_channels


@pytest.mark.parametrize("name", META_ARCH_REGISTRY.names())
def test_every_registered_meta_arch_builds(name):
    cfg = tiny_cfg()
    cfg.MODEL.META_ARCHITECTURE = name
    model = build_model(cfg, num_classes=4)
    assert hasattr(model, "backbone") and hasattr(model, "heads")
    assert model.device == torch.device("cpu")


def test_train_forward_losses_and_backward():
    torch.manual_seed(0)
    model = build_model(tiny_cfg(), num_classes=4)
    assert isinstance(model, Baseline)
    model.train()
    losses = model(make_batch())
    assert set(losses) == {"loss_cls", "loss_triplet"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.backbone.conv1.weight.grad is not None
    assert model.heads.classifier.weight.grad is not None


def test_loss_names_come_from_config():
    cfg = tiny_cfg()
    cfg.MODEL.LOSSES.NAME = ("CrossEntropyLoss", "CircleLoss")
    cfg.MODEL.LOSSES.CIRCLE.GAMMA = 32.0
    losses = build_model(cfg, num_classes=4).train()(make_batch())
    assert set(losses) == {"loss_cls", "loss_circle"}


def test_eval_forward_returns_features():
    model = build_model(tiny_cfg(), num_classes=4).eval()
    batch = make_batch()
    with torch.no_grad():
        from_tensor = model(batch["images"])
        from_dict = model(batch)
    assert from_tensor.shape == (8, 512)
    torch.testing.assert_close(from_tensor, from_dict)


def test_resnet50_ibn_forward():
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.IBN = "a"
    cfg.MODEL.HEADS.EMBEDDING_DIM = 128
    model = build_model(cfg, num_classes=4)
    losses = model.train()(make_batch(n_ids=2, k=2))
    assert all(torch.isfinite(v) for v in losses.values())
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 64, 32)).shape == (2, 128)


def test_num_classes_from_config_and_zero_classes():
    cfg = tiny_cfg()
    cfg.MODEL.HEADS.NUM_CLASSES = 7
    assert build_model(cfg).heads.num_classes == 7
    cfg.MODEL.HEADS.NUM_CLASSES = 0
    model = build_model(cfg)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 64, 32)).shape == (2, 512)
    with pytest.raises(ValueError, match="num_classes"):
        model.train()(make_batch())


def test_config_norm_kwargs_reach_the_norm():
    cfg = tiny_cfg(NORM_KWARGS=("momentum=0.3",))
    model = build_model(cfg, num_classes=2)
    assert model.backbone.layer3[0].bn2.momentum == 0.3


@pytest.mark.skipif("PBN" not in layers.NORM_REGISTRY, reason="PBN is not registered yet")
def test_pbn_stages_from_config():
    cfg = tiny_cfg(NORM="PBN")
    cfg.MODEL.BACKBONE.PBN.STAGES = ("layer1",)
    backbone = build_model(cfg, num_classes=2).backbone
    pbn = layers.NORM_REGISTRY["PBN"]
    assert isinstance(backbone.layer1[0].bn1, pbn)
    assert not isinstance(backbone.layer2[0].bn1, pbn) and not isinstance(backbone.bn1, pbn)
    losses = build_model(tiny_cfg(NORM="PBN"), num_classes=4).train()(make_batch(2, 2))
    assert all(torch.isfinite(v) for v in losses.values())


def test_dsbn_model_trains_with_domains_and_loads_imagenet_bn(tmp_path):
    import torchvision

    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    cfg = tiny_cfg(NORM="DSBN", PRETRAIN_PATH=str(path))
    model = build_model(cfg, num_classes=4, num_domains=2)
    assert model.num_domains == 2
    assert isinstance(model.backbone.bn1, layers.DSBN2d)
    own = model.backbone.state_dict()
    for key in own:
        if ".bns." in key and key.endswith(("running_mean", "running_var")):
            generic = key.replace(".bns.0.", ".").replace(".bns.1.", ".")
            torch.testing.assert_close(own[key], state[generic])
    torch.testing.assert_close(own["layer1.0.bn1.weight"], state["layer1.0.bn1.weight"])
    batch = make_batch(domains=torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]))
    losses = model.train()(batch)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())


def dsbn_model(combine="weighted", layers_=()):
    cfg = tiny_cfg(NORM="DSBN")
    cfg.MODEL.BNE.COMBINE = combine
    cfg.MODEL.BNE.LAYERS = layers_
    model = build_model(cfg, num_classes=4, num_domains=2)
    # Two domains with different population statistics, from one training step each.
    model.train()
    for d in (0, 1):
        batch = make_batch(n_ids=2, k=2, domains=torch.full((4,), d))
        batch["images"] = batch["images"] * (1 + 2 * d) + d
        model(batch)
    return model.eval()


def test_bne_eval_matches_direct_computation():
    torch.manual_seed(0)
    names = ("layer1.0.bn1", "backbone.layer4.1.bn2")
    model = dsbn_model(layers_=names)
    chosen = [model.backbone.layer1[0].bn1, model.backbone.layer4[1].bn2]
    x = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        got = model(x)
        inputs = {}
        hooks = [
            m.register_forward_pre_hook(lambda mod, inp, i=i: inputs.__setitem__(i, inp[0]))
            for i, m in enumerate(chosen)
        ]
        feats, dists = [], []
        for d in (0, 1):
            layers.set_domains(model, d)
            feats.append(model.heads(model.backbone(x)))
            dist = torch.zeros(3)
            for i, m in enumerate(chosen):
                mean = inputs[i].mean((2, 3))
                std = inputs[i].var((2, 3), unbiased=False).sqrt()
                rm, rv = m.bns[d].running_mean, m.bns[d].running_var
                dist += ((mean - rm) ** 2).sum(1) + ((std - rv.sqrt()) ** 2).sum(1)
            dists.append(dist)
        for h in hooks:
            h.remove()
    inv = 1 / torch.stack(dists, 1)
    w = inv / inv.sum(1, keepdim=True)
    assert not torch.allclose(w[:, 0], w[:, 1])
    expected = w[:, :1] * feats[0] + w[:, 1:] * feats[1]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_bne_concat_and_single_domain_eval():
    with torch.no_grad():
        assert dsbn_model("concat")(torch.randn(2, 3, 64, 32)).shape == (2, 1024)
    model = build_model(tiny_cfg(NORM="DSBN"), num_classes=4, num_domains=1)
    model.train()(make_batch(2, 2))
    with torch.no_grad():
        assert model.eval()(torch.randn(3, 3, 64, 32)).shape == (3, 512)


def test_bne_rejects_unknown_layer():
    cfg = tiny_cfg(NORM="DSBN")
    cfg.MODEL.BNE.LAYERS = ("layer1.0.conv1",)
    with pytest.raises(ValueError, match="not a DSBN layer"):
        build_model(cfg, num_classes=2, num_domains=2)


@pytest.mark.parametrize("norm", sorted(layers.NORM_REGISTRY))
def test_every_registered_norm_trains_in_the_backbone(norm):
    model = build_model(tiny_cfg(NORM=norm), num_classes=2, num_domains=1)
    losses = model.train()(make_batch(n_ids=2, k=2))
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 64, 32)).shape == (2, 512)
