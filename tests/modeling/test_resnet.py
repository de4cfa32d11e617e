"""ResNet backbone: torchvision equivalence, IBN-Net key layouts, norms per stage."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from reid_pbn.layers import IBN, NORM_REGISTRY
from reid_pbn.modeling import build_resnet

BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
AFFINE_KEYS = ("weight", "bias")


def torchvision_body_state(depth: int) -> dict[str, torch.Tensor]:
    tv = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    return {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}


def expected_keys(depth: int, ibn: str | None) -> set[str]:
    """IBN-Net's published key layout, written from its rules (not from our model)."""
    bottleneck = depth >= 50
    keys = ["conv1.weight"]
    keys += [f"bn1.{s}" for s in (AFFINE_KEYS if ibn == "b" else BN_KEYS)]
    for stage, n in enumerate(BLOCKS[depth], start=1):
        for b in range(n):
            p = f"layer{stage}.{b}."
            for c in range(1, (3 if bottleneck else 2) + 1):
                keys.append(f"{p}conv{c}.weight")
                if c == 1 and ibn == "a" and stage <= 3:
                    keys += [f"{p}bn1.IN.{s}" for s in AFFINE_KEYS]
                    keys += [f"{p}bn1.BN.{s}" for s in BN_KEYS]
                else:
                    keys += [f"{p}bn{c}.{s}" for s in BN_KEYS]
            if b == 0 and (stage > 1 or bottleneck):
                keys.append(f"{p}downsample.0.weight")
                keys += [f"{p}downsample.1.{s}" for s in BN_KEYS]
            if ibn == "b" and stage <= 2 and b == n - 1:
                keys += [f"{p}IN.{s}" for s in AFFINE_KEYS]
    return set(keys)


@pytest.mark.parametrize("depth", [18, 50])
def test_bn_backbone_equals_torchvision_body(depth):
    torch.manual_seed(0)
    tv = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    # Non-trivial running statistics, so eval-mode BN is really exercised.
    for m in tv.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    tv.eval()
    model = build_resnet(depth, last_stride=2)
    state = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    model.load_state_dict(state, strict=True)
    model.eval()
    body = nn.Sequential(*list(tv.children())[:-2])
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        ours, ref = model(x), body(x)
    assert ours.shape == ref.shape == (2, model.out_channels, 2, 1)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_key_layout_matches_torchvision(depth):
    model = build_resnet(depth)
    state = torchvision_body_state(depth)
    assert set(model.state_dict()) == set(state) == expected_keys(depth, None)
    model.load_state_dict(state, strict=True)


@pytest.mark.parametrize("last_stride, size", [(1, (4, 2)), (2, (2, 1))])
def test_last_stride(last_stride, size):
    model = build_resnet(18, last_stride=last_stride).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 32))
    assert out.shape == (2, 512, *size)


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
@pytest.mark.parametrize("ibn", ["a", "b"])
def test_ibn_key_layout(depth, ibn):
    assert set(build_resnet(depth, ibn=ibn).state_dict()) == expected_keys(depth, ibn)


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("ibn", ["a", "b"])
def test_ibn_checkpoint_loads_strict(depth, ibn):
    # A checkpoint in that layout, with other values, loads strictly and is used as is.
    state = build_resnet(depth, ibn=ibn).state_dict()
    fresh = {k: torch.rand_like(v.float()).to(v.dtype) for k, v in state.items()}
    model = build_resnet(depth, ibn=ibn)
    model.load_state_dict(fresh, strict=True)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, fresh[k], rtol=0, atol=0)


def test_ibn_a_layout_details():
    model = build_resnet(50, ibn="a")
    for stage in (1, 2, 3):
        for block in getattr(model, f"layer{stage}"):
            assert isinstance(block.bn1, IBN)
            planes = block.conv1.out_channels
            assert block.bn1.IN.weight.shape == (planes // 2,)
            assert block.bn1.BN.weight.shape == (planes - planes // 2,)
            assert block.bn1.IN.affine and not block.bn1.IN.track_running_stats
    assert all(type(b.bn1) is nn.BatchNorm2d for b in model.layer4)
    assert type(model.bn1) is nn.BatchNorm2d
    basic = build_resnet(18, ibn="a")
    assert isinstance(basic.layer3[1].bn1, IBN) and type(basic.layer4[0].bn1) is nn.BatchNorm2d


def test_ibn_b_layout_details():
    model = build_resnet(50, ibn="b")
    assert isinstance(model.bn1, nn.InstanceNorm2d) and model.bn1.affine
    with_in = {
        name for name, m in model.named_modules() if name.endswith(".IN") and m is not None
    }
    assert with_in == {"layer1.2.IN", "layer2.3.IN"}
    assert model.layer1[2].IN.num_features == 256 and model.layer2[3].IN.num_features == 512
    assert build_resnet(18, ibn="b").layer2[1].IN.num_features == 128


@pytest.mark.parametrize("ibn", ["a", "b"])
def test_ibn_forward_train_and_eval(ibn):
    model = build_resnet(18, ibn=ibn)
    x = torch.randn(2, 3, 64, 32)
    out = model(x)
    out.mean().backward()
    assert out.shape == (2, 512, 4, 2)
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()


def test_ibn_b_in_applied_after_residual_sum():
    """The IN of an IBN-b block normalizes (out + identity), before the final ReLU."""
    model = build_resnet(18, ibn="b").eval()
    block = model.layer1[1]
    x = torch.randn(2, 64, 8, 4)
    with torch.no_grad():
        pre = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x))))) + x
        expected = torch.relu(block.IN(pre))
        torch.testing.assert_close(block(x), expected)


class MarkedBN(nn.BatchNorm2d):
    """A BN subclass used to see where the chosen norm ends up."""


def test_norm_stages_and_kwargs():
    model = build_resnet(18, norm=MarkedBN, norm_stages=("stem", "layer2"), momentum=0.3)
    for name, m in model.named_modules():
        if not isinstance(m, nn.BatchNorm2d):
            continue
        marked = name == "bn1" or name.startswith("layer2.")
        assert isinstance(m, MarkedBN) == marked, name
        assert m.momentum == (0.3 if marked else 0.1), name
    assert isinstance(model.layer2[0].downsample[1], MarkedBN)
    assert type(model.layer3[0].downsample[1]) is nn.BatchNorm2d
    ibn = build_resnet(18, norm=MarkedBN, ibn="a")
    assert isinstance(ibn.layer1[0].bn1.BN, MarkedBN)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="depth"):
        build_resnet(152)
    with pytest.raises(ValueError, match="ibn"):
        build_resnet(18, ibn="c")
    with pytest.raises(ValueError, match="stages"):
        build_resnet(18, norm_stages=("layer5",))


@pytest.mark.skipif("PBN" not in NORM_REGISTRY, reason="PBN is not registered yet")
def test_pbn_backbone_loads_torchvision_and_matches_in_eval():
    torch.manual_seed(0)
    state = torchvision_body_state(18)
    model = build_resnet(18, norm="PBN", last_stride=2)
    model.load_state_dict(state, strict=True)
    ref = build_resnet(18, last_stride=2)
    ref.load_state_dict(state, strict=True)
    model.eval()
    ref.eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))
    model.train()
    out = model(x)
    out.mean().backward()
    assert torch.isfinite(out).all()


@pytest.mark.skipif("PBN" not in NORM_REGISTRY, reason="PBN is not registered yet")
@pytest.mark.parametrize("ibn", ["a", "b"])
def test_pbn_ibn_backbone_keeps_ibn_layout(ibn):
    assert set(build_resnet(50, norm="PBN", ibn=ibn).state_dict()) == expected_keys(50, ibn)
