"""Checkpoint import from torchreid and fast-reid: peer-layout models give the same features.

Each test builds a model in the peer's key layout and with the peer's inference (written here
from the peer's code: torchreid's ``OSNet.forward`` / ``ResNet.forward`` in eval mode, fast-reid's
``Baseline.preprocess_image`` + ``EmbeddingHead`` with ``neck_feat="after"``), saves its
state_dict as that toolkit saves checkpoints, converts it and compares the features.
"""

from __future__ import annotations

import os
import pickle

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from reid_pbn.config import get_cfg
from reid_pbn.modeling import build_model, build_osnet, build_resnet
from reid_pbn.modeling.convert import UnknownLayoutError, convert_checkpoint

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def cfg_from(path: str, *opts):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, path))
    cfg.merge_from_list(["MODEL.BACKBONE.PRETRAIN", "False", *opts])
    return cfg


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            m.bias.data.copy_(torch.rand(m.out_features, generator=g) - 0.5)
    return model.eval()


def assert_same_features(ours: torch.Tensor, ref: torch.Tensor) -> None:
    cos = F.cosine_similarity(ours, ref, dim=1)
    assert (cos > 1 - 1e-4).all(), cos
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


class TorchreidOSNet(nn.Module):
    """torchreid's OSNet: the body and fc (keys as ``build_osnet``) plus ``classifier``."""

    def __init__(self, arch: str, num_classes: int) -> None:
        super().__init__()
        body = build_osnet(arch)
        for name, child in body.named_children():
            if name != "mixers":
                self.add_module(name, child)
        self._body = [body]  # not a submodule: keys stay torchreid's
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x):  # eval: the fc output
        return self.fc(F.adaptive_avg_pool2d(self._body[0].featuremaps(x), 1).flatten(1))


class TorchreidResNet50FC512(nn.Module):
    """torchreid's resnet50_fc512: torchvision body with last stride 1, fc 512, classifier."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        tv = torchvision.models.resnet50(weights=None)
        tv.layer4[0].conv2.stride = (1, 1)
        tv.layer4[0].downsample[0].stride = (1, 1)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            self.add_module(name, getattr(tv, name))
        self.fc = nn.Sequential(nn.Linear(2048, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class FastreidBaseline(nn.Module):
    """fast-reid's Baseline (BoT): pixel normalization inside, ResNet(-IBN), BNNeck head."""

    def __init__(self, depth: int, ibn: str | None, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor([0.485, 0.456, 0.406]).view(1, -1, 1, 1)
                             * 255)
        self.register_buffer("pixel_std", torch.tensor([0.229, 0.224, 0.225]).view(1, -1, 1, 1)
                             * 255)
        self.backbone = build_resnet(depth, ibn=ibn, last_stride=1)
        self.heads = nn.Module()
        self.heads.bottleneck = nn.Sequential(nn.BatchNorm2d(self.backbone.out_channels))
        self.heads.weight = nn.Parameter(torch.randn(num_classes, self.backbone.out_channels))

    def forward(self, images):  # images in 0-255, eval: BNNeck output
        x = (images - self.pixel_mean) / self.pixel_std
        feat = F.adaptive_avg_pool2d(self.backbone(x), 1)
        return self.heads.bottleneck(feat)[..., 0, 0]


def test_torchreid_osnet_round_trip(tmp_path):
    torch.manual_seed(0)
    peer = randomize(TorchreidOSNet("osnet_x0_25", num_classes=11))
    path = tmp_path / "osnet.pth.tar-60"
    # torchreid's save_checkpoint under DataParallel: module. prefixes inside "state_dict".
    torch.save({"state_dict": {f"module.{k}": v for k, v in peer.state_dict().items()},
                "epoch": 60, "rank1": 0.9}, path)
    cfg = cfg_from("configs/DG/Base-osnet.yml", "MODEL.BACKBONE.NAME", "osnet_x0_25")
    model, result = convert_checkpoint(cfg, "torchreid", str(path))
    assert result.num_classes == 11
    assert any("classifier.bias" in n for n in result.notes)
    torch.testing.assert_close(model.heads.classifier.weight, peer.classifier.weight)
    x = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        assert_same_features(model(x), peer(x))


def test_torchreid_resnet50_fc512_round_trip(tmp_path):
    torch.manual_seed(0)
    peer = randomize(TorchreidResNet50FC512(num_classes=5))
    path = tmp_path / "r50.pth"
    torch.save({"state_dict": peer.state_dict(), "epoch": 60}, path)
    model, result = convert_checkpoint(cfg_from("configs/DG/Base-R50.yml"), "torchreid",
                                       str(path))
    assert any("folded" in n for n in result.notes)
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        assert_same_features(model(x), peer(x))


@pytest.mark.parametrize("ibn", ["", "a"])
def test_fastreid_bot_round_trip(tmp_path, ibn):
    torch.manual_seed(0)
    peer = randomize(FastreidBaseline(18, ibn or None, num_classes=7))
    path = tmp_path / "model_final.pth"
    torch.save({"model": peer.state_dict(), "iteration": 100}, path)
    cfg = cfg_from("configs/Market1501/bagtricks_R50.yml", "MODEL.BACKBONE.DEPTH", "18",
                   "MODEL.BACKBONE.IBN", ibn)
    model, result = convert_checkpoint(cfg, "fastreid", str(path))
    assert result.num_classes == 7
    images = torch.rand(2, 3, 64, 32) * 255
    # This toolkit's pipeline: ToTensor (0-1) then INPUT.PIXEL_MEAN/STD.
    mean = torch.tensor(cfg.INPUT.PIXEL_MEAN).view(1, -1, 1, 1)
    std = torch.tensor(cfg.INPUT.PIXEL_STD).view(1, -1, 1, 1)
    with torch.no_grad():
        assert_same_features(model((images / 255 - mean) / std), peer(images))


def test_unknown_keys_missing_keys_and_normalization_are_refused(tmp_path):
    peer = FastreidBaseline(18, None, num_classes=3)
    state = peer.state_dict()
    cfg = cfg_from("configs/Market1501/bagtricks_R50.yml", "MODEL.BACKBONE.DEPTH", "18")

    def convert(st, source="fastreid", c=cfg):
        path = tmp_path / "ckpt.pth"
        torch.save({"model": st}, path)
        return convert_checkpoint(c, source, str(path))

    with pytest.raises(UnknownLayoutError, match=r"no place in this model: backbone\.NL_2"):
        convert({**state, "backbone.NL_2.0.g.weight": torch.zeros(1)})
    with pytest.raises(UnknownLayoutError, match=r"does not fill: .*heads\.neck\.weight"):
        convert({k: v for k, v in state.items() if k != "heads.bottleneck.0.weight"})
    with pytest.raises(UnknownLayoutError, match="INPUT.PIXEL_MEAN"):
        convert({**state, "pixel_mean": state["pixel_mean"] * 0.5})
    with pytest.raises(UnknownLayoutError, match="shapes that differ"):
        convert(state, c=cfg_from("configs/Market1501/bagtricks_R50.yml"))  # depth 50
    with pytest.raises(UnknownLayoutError, match="known layout"):
        convert(state, source="torchreid")  # a fast-reid file read as torchreid's
    with pytest.raises(UnknownLayoutError, match="Unknown checkpoint source"):
        convert(state, source="mmreid")


class _Code:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_tool_converts_and_refuses_pickles(tmp_path, capsys):
    from tools.convert_checkpoint import main

    peer = randomize(TorchreidOSNet("osnet_x0_25", num_classes=4))
    src, out = tmp_path / "in.pth", tmp_path / "sub" / "out.pth"
    torch.save({"state_dict": peer.state_dict()}, src)
    args = ["--from", "torchreid", "--config-file", os.path.join(ROOT, "configs/DG/Base-osnet.yml"),
            "--input", str(src), "--output", str(out), "MODEL.BACKBONE.NAME", "osnet_x0_25"]
    assert main(args) == 0
    saved = torch.load(out, weights_only=True)["model"]
    cfg = cfg_from("configs/DG/Base-osnet.yml", "MODEL.BACKBONE.NAME", "osnet_x0_25")
    model = build_model(cfg, num_classes=4).eval()
    model.load_state_dict(saved, strict=True)
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        assert_same_features(model(x), peer(x))

    bad = tmp_path / "evil.pth"
    with open(bad, "wb") as f:
        pickle.dump({"state_dict": _Code()}, f, protocol=2)
    capsys.readouterr()
    assert main(["--from", "torchreid", "--config-file",
                 os.path.join(ROOT, "configs/DG/Base-osnet.yml"), "--input", str(bad),
                 "--output", str(tmp_path / "x.pth")]) == 1
    captured = capsys.readouterr()
    assert "pickled Python objects" in captured.err and captured.err.count("\n") == 1
    assert "this must never run" not in captured.out
