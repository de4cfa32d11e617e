"""OSNet backbones: torchreid's key layout and parameter counts, shapes, norms, pretrained loading.

The reference numbers were measured on torchreid 0.2.5 (its ``osnet.py`` / ``osnet_ain.py`` are
byte-identical to KaiyangZhou/deep-person-reid's master): for each architecture, the number of
parameters without ``classifier.*`` (what torchreid's model zoo counts: the layers used at test
time, conv body + ``fc``), without ``fc.*`` too, and a SHA-256 fingerprint of the sorted
``key:shape`` lines of the state_dict without ``classifier.*`` and ``fc.*``. The key layout is
also written out below from torchreid's architecture rules, independently of the model code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os

import pytest
import torch
from torch import nn

from reid_pbn.config import get_cfg
from reid_pbn.layers import NORM_REGISTRY, PatchBatchNorm2d, set_domains
from reid_pbn.modeling import BACKBONE_REGISTRY, build_model, build_osnet
from reid_pbn.modeling.backbones import OSNET_ARCHS

NAMES = ("osnet_x1_0", "osnet_x0_75", "osnet_x0_5", "osnet_x0_25", "osnet_ibn_x1_0",
         "osnet_ain_x1_0")

# name: (params with fc, params without fc, fingerprint of the body's key:shape lines),
# measured on torchreid 0.2.5's models.
TORCHREID = {
    "osnet_x1_0": (2169508, 1905828, "859eac5fbc936c7f"),
    "osnet_x0_75": (1285754, 1087610, "33de5ae74c4d4d93"),
    "osnet_x0_5": (630034, 497426, "eb858057967d9429"),
    "osnet_x0_25": (201864, 134792, "d650b541217ac75c"),
    "osnet_ibn_x1_0": (2170532, 1906852, "a94e722d6434ca17"),
    "osnet_ain_x1_0": (2169508, 1905828, "83b56ccb7126e356"),
}
# torchreid's MODEL_ZOO.md, "# Param (10^6)" column.
PUBLISHED_M = {"osnet_x1_0": 2.2, "osnet_x0_75": 1.3, "osnet_x0_5": 0.6, "osnet_x0_25": 0.2,
               "osnet_ibn_x1_0": 2.2, "osnet_ain_x1_0": 2.2}
CHANNELS = {"osnet_x1_0": (64, 256, 384, 512), "osnet_x0_75": (48, 192, 288, 384),
            "osnet_x0_5": (32, 128, 192, 256), "osnet_x0_25": (16, 64, 96, 128)}
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def channels(name: str) -> tuple[int, int, int, int]:
    """Stage widths; the IBN and AIN variants have x1.0's."""
    return CHANNELS.get(name, CHANNELS["osnet_x1_0"])


def torchreid_layout(name: str, feature_dim: int = 512) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of torchreid's model ``name`` (without classifier), from its rules."""
    c0, c1, c2, c3 = channels(name)
    ain, ibn = "ain" in name, "ibn" in name
    out: dict[str, tuple[int, ...]] = {}

    def norm(p, c, affine_only=False):
        for s in (BN[:2] if affine_only else BN):
            out[f"{p}.{s}"] = () if s == "num_batches_tracked" else (c,)

    def conv_bn(p, cin, cout, k=1, bn=True):
        out[f"{p}.conv.weight"] = (cout, cin, k, k)
        if bn:
            norm(f"{p}.bn", cout)

    def light(p, c):
        out[f"{p}.conv1.weight"] = (c, c, 1, 1)
        out[f"{p}.conv2.weight"] = (c, 1, 3, 3)
        norm(f"{p}.bn", c)

    def block(p, cin, cout, inin=False, in_out=False):
        mid = cout // 4
        conv_bn(f"{p}.conv1", cin, mid)
        for t in range(1, 5):
            for i in range(t):
                if ain:
                    light(f"{p}.conv2.{t - 1}.layers.{i}", mid)
                else:
                    light(f"{p}.conv2{'abcd'[t - 1]}" + (f".{i}" if t > 1 else ""), mid)
        out[f"{p}.gate.fc1.weight"] = (mid // 16, mid, 1, 1)
        out[f"{p}.gate.fc1.bias"] = (mid // 16,)
        out[f"{p}.gate.fc2.weight"] = (mid, mid // 16, 1, 1)
        out[f"{p}.gate.fc2.bias"] = (mid,)
        conv_bn(f"{p}.conv3", mid, cout, bn=not inin)
        if cin != cout:
            conv_bn(f"{p}.downsample", cin, cout)
        if inin or in_out:
            norm(f"{p}.IN", cout, affine_only=True)

    out["conv1.conv.weight"] = (c0, 3, 7, 7)
    norm("conv1.bn", c0, affine_only=ain or ibn)
    ain_kinds = ((True, True), (False, True), (True, False))
    for s, (cin, cout) in enumerate(((c0, c1), (c1, c2), (c2, c3))):
        for b in range(2):
            block(f"conv{s + 2}.{b}", cin if b == 0 else cout, cout,
                  inin=ain and ain_kinds[s][b], in_out=ibn and s == 0)
        if s < 2:
            conv_bn(f"pool{s + 2}.0" if ain else f"conv{s + 2}.2.0", cout, cout)
    conv_bn("conv5", c3, c3)
    if feature_dim:
        out["fc.0.weight"] = (feature_dim, c3)
        out["fc.0.bias"] = (feature_dim,)
        norm("fc.1", feature_dim)
    return out


def fingerprint(layout: dict[str, tuple[int, ...]]) -> str:
    lines = "".join(f"{k}:{v}\n" for k, v in sorted(layout.items()) if not k.startswith("fc."))
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def randomize_norms(model: nn.Module) -> None:
    """Non-trivial affine and running statistics, so eval-mode norms are really exercised."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)


def test_every_name_is_registered():
    assert set(NAMES) == set(OSNET_ARCHS)
    assert set(NAMES) <= set(BACKBONE_REGISTRY.names())


@pytest.mark.parametrize("name", NAMES)
def test_key_layout_and_parameter_counts_equal_torchreid(name):
    model = build_osnet(name)
    layout = torchreid_layout(name)
    assert shapes(model) == layout
    assert fingerprint(layout) == TORCHREID[name][2]
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == TORCHREID[name][0]
    assert round(n_params / 1e6, 1) == PUBLISHED_M[name]
    no_fc = build_osnet(name, feature_dim=0)
    assert sum(p.numel() for p in no_fc.parameters()) == TORCHREID[name][1]
    assert shapes(no_fc) == torchreid_layout(name, feature_dim=0)


def test_instance_norms_of_the_ibn_and_ain_variants():
    def count(name):
        model = build_osnet(name, norm="PBN")
        return sum(isinstance(m, nn.InstanceNorm2d) for m in model.modules())

    # IBN: stem + after the residual sum of both conv2 blocks; AIN: stem + 4 INin blocks.
    assert count("osnet_x1_0") == 0
    assert count("osnet_ibn_x1_0") == 3
    assert count("osnet_ain_x1_0") == 5


@pytest.mark.parametrize("name", NAMES)
def test_output_shapes(name):
    model = build_osnet(name).eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        assert model(x).shape == (2, 512, 1, 1)
        assert model.featuremaps(x).shape == (2, channels(name)[3], 4, 2)
    assert model.out_channels == 512
    assert build_osnet(name, feature_dim=0).out_channels == channels(name)[3]


def test_full_size_feature_map_and_fc_free_output():
    model = build_osnet("osnet_x0_25", feature_dim=0).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 256, 128)).shape == (1, 128, 16, 8)


def test_fc_output_is_fc_of_pooled_map():
    model = build_osnet("osnet_x0_25").eval()
    randomize_norms(model)
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        expected = model.fc(model.featuremaps(x).mean(dim=(2, 3)))
        torch.testing.assert_close(model(x).flatten(1), expected)


@pytest.mark.parametrize("name", ["osnet_x0_25", "osnet_ain_x1_0"])
def test_pbn_inside_osnet_keeps_eval_equal_to_bn(name):
    torch.manual_seed(0)
    bn = build_osnet(name)
    randomize_norms(bn)
    pbn = build_osnet(name, norm="PBN")
    assert sum(isinstance(m, PatchBatchNorm2d) for m in pbn.modules()) > 0
    pbn.load_state_dict(bn.state_dict(), strict=True)
    bn.eval()
    pbn.eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(pbn(x), bn(x), rtol=0, atol=0)
    pbn.train()
    y = pbn(torch.randn(4, 3, 64, 32))  # patch statistics on the 16x8 ... 4x2 maps
    assert y.shape == (4, 512, 1, 1) and torch.isfinite(y).all()


def test_norm_stages_take_osnet_names_and_resnet_aliases():
    def pbn_convs(stages):
        model = build_osnet("osnet_x0_25", norm="PBN", norm_stages=stages)
        return sorted({n.split(".")[0] for n, m in model.named_modules()
                       if isinstance(m, PatchBatchNorm2d)})

    assert pbn_convs(["conv2", "conv5"]) == ["conv2", "conv5"]
    assert pbn_convs(["stem", "layer1"]) == ["conv1", "conv2"]
    with pytest.raises(ValueError, match="Unknown OSNet stages"):
        build_osnet("osnet_x0_25", norm_stages=["layer9"])


@pytest.mark.parametrize("norm", sorted(set(NORM_REGISTRY) - {"SyncBN"}))
def test_every_norm_works_inside(norm):
    torch.manual_seed(0)
    kwargs = {"num_domains": 2} if norm == "DSBN" else {}
    model = build_osnet("osnet_x0_25", norm=norm, **kwargs)
    if norm == "DSBN":
        set_domains(model, torch.tensor([0, 1, 0, 1]))
    y = model(torch.randn(4, 3, 64, 32))
    assert y.shape == (4, 512, 1, 1) and torch.isfinite(y).all()
    y.sum().backward()


def osnet_cfg(name="osnet_x0_25", **backbone):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = name
    cfg.MODEL.HEADS.NECK = "none"
    cfg.MODEL.LOSSES.NAME = ("CrossEntropyLoss",)
    for key, value in backbone.items():
        node, _, leaf = key.rpartition(".")
        setattr(cfg.MODEL.BACKBONE[node] if node else cfg.MODEL.BACKBONE, leaf, value)
    return cfg


@pytest.mark.parametrize("name", NAMES)
def test_build_model_selects_osnet_by_name(name):
    model = build_model(osnet_cfg(name), num_classes=5)
    assert shapes(model.backbone) == torchreid_layout(name)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 32)).shape == (2, 512)


def torchreid_checkpoint(name: str) -> dict[str, torch.Tensor]:
    """A state_dict in torchreid's layout (its 1000-class ImageNet classifier included)."""
    g = torch.Generator().manual_seed(1)
    state = {}
    for key, shape in torchreid_layout(name).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        else:
            state[key] = torch.rand(shape, generator=g) + (0.5 if "running_var" in key else 0)
    state["classifier.weight"] = torch.randn(1000, 512, generator=g)
    state["classifier.bias"] = torch.randn(1000, generator=g)
    return state


@pytest.mark.parametrize("name", ["osnet_x0_25", "osnet_ain_x1_0"])
def test_pretrained_torchreid_weights_load_strictly_from_path(tmp_path, name):
    state = torchreid_checkpoint(name)
    path = tmp_path / f"{name}_imagenet.pth"
    torch.save(state, path)
    for norm in ("BN", "PBN"):
        backbone = build_model(osnet_cfg(name, PRETRAIN_PATH=str(path), NORM=norm),
                               num_classes=3).backbone
        own = backbone.state_dict()
        assert set(own) == set(state) - {"classifier.weight", "classifier.bias"}
        for key, value in own.items():
            torch.testing.assert_close(value, state[key], rtol=0, atol=0)


def test_pretrained_loading_refuses_a_mismatched_layout(tmp_path):
    state = torchreid_checkpoint("osnet_x0_25")
    del state["conv3.0.gate.fc1.bias"]
    state["conv9.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"strict(.|\n)*conv3.0.gate.fc1.bias(.|\n)*conv9"):
        build_model(osnet_cfg(PRETRAIN_PATH=str(path)), num_classes=3)
    # A norm that stores other things than BN (GN) loads what matches and logs the rest.
    good = tmp_path / "good.pth"
    torch.save(torchreid_checkpoint("osnet_x0_25"), good)
    model = build_model(osnet_cfg(PRETRAIN_PATH=str(good), NORM="GN"), num_classes=3)
    torch.testing.assert_close(model.backbone.conv5.conv.weight,
                               torchreid_checkpoint("osnet_x0_25")["conv5.conv.weight"])


def test_fc_free_backbone_drops_torchreid_fc(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(torchreid_checkpoint("osnet_x0_25"), path)
    cfg = osnet_cfg(PRETRAIN_PATH=str(path), **{"OSNET.FEATURE_DIM": 0})
    model = build_model(cfg, num_classes=3)
    assert not any(k.startswith("fc.") for k in model.backbone.state_dict())
    assert model.heads.out_dim == 128


def test_pretrain_without_path_names_the_file():
    with pytest.raises(RuntimeError, match="PRETRAIN_PATH"):
        build_model(osnet_cfg(PRETRAIN=True), num_classes=3)


def _torchreid_models_dir() -> str | None:
    spec = importlib.util.find_spec("torchreid")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = list(spec.submodule_search_locations)[0]
    for sub in ("models", os.path.join("reid", "models")):
        if os.path.exists(os.path.join(root, sub, "osnet_ain.py")):
            return os.path.join(root, sub)
    return None


@pytest.mark.skipif(_torchreid_models_dir() is None, reason="torchreid is not installed")
@pytest.mark.parametrize("name", NAMES)
def test_outputs_equal_installed_torchreid(name):
    """Where torchreid is installed: the same weights give the same maps and features."""
    file = "osnet_ain.py" if "ain" in name else "osnet.py"
    spec = importlib.util.spec_from_file_location(f"_tr_{file[:-3]}",
                                                  os.path.join(_torchreid_models_dir(), file))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # these two files import only torch
    ref = getattr(module, name)(num_classes=10, pretrained=False)
    randomize_norms(ref)
    ours = build_osnet(name)
    ours.load_state_dict({k: v for k, v in ref.state_dict().items()
                          if not k.startswith("classifier.")}, strict=True)
    ref.eval()
    ours.eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours.featuremaps(x), ref(x, return_featuremaps=True))
        torch.testing.assert_close(ours(x).flatten(1), ref(x))
