"""The pretrained-weights loader: files, wrappers, reports, errors and safety."""

from __future__ import annotations

import logging
import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from reid_pbn.config import get_cfg
from reid_pbn.modeling import build_model, build_resnet
from reid_pbn.modeling.backbones import (
    fetch_imagenet_state_dict,
    imagenet_weights_url,
    load_pretrained_weights,
    read_state_dict,
)


@pytest.fixture(scope="module")
def tv_state():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).state_dict()


def assert_loaded(model: nn.Module, state: dict) -> None:
    own = model.state_dict()
    for k, v in state.items():
        if not k.startswith("fc."):
            torch.testing.assert_close(own[k], v, rtol=0, atol=0)


def test_local_file_round_trip(tmp_path, tv_state):
    path = tmp_path / "resnet18.pth"
    torch.save(tv_state, path)
    state = read_state_dict(path)
    assert set(state) == set(tv_state)
    model = build_resnet(18)
    report = load_pretrained_weights(model, state, source=str(path))
    assert report.missing == [] and report.unexpected == []
    assert report.dropped == ["fc.bias", "fc.weight"]
    assert len(report.loaded) == len(tv_state) - 2
    assert_loaded(model, tv_state)


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_wrappers_and_module_prefix(tmp_path, tv_state, wrapper):
    path = tmp_path / "wrapped.pth"
    wrapped = {k if wrapper == "model" else f"module.{k}": v for k, v in tv_state.items()}
    torch.save({wrapper: wrapped, "epoch": 7}, path)
    model = build_resnet(18)
    report = load_pretrained_weights(model, read_state_dict(path))
    assert report.missing == [] and report.unexpected == []
    assert_loaded(model, tv_state)


def test_full_reid_checkpoint_gives_backbone(tv_state):
    full = {f"module.backbone.{k}": v for k, v in tv_state.items()}
    full["module.heads.neck.weight"] = torch.ones(512)
    model = build_resnet(18)
    report = load_pretrained_weights(model, full)
    assert report.missing == [] and report.unexpected == []
    assert_loaded(model, tv_state)


def test_missing_and_unexpected_are_reported(tv_state, caplog):
    state = {k: v for k, v in tv_state.items() if not k.startswith("layer4.")}
    state["extra.weight"] = torch.zeros(3)
    model = build_resnet(18)
    with caplog.at_level(logging.WARNING):
        report = load_pretrained_weights(model, state, source="partial.pth")
    assert report.unexpected == ["extra.weight"]
    assert report.missing and all(k.startswith("layer4.") for k in report.missing)
    assert "layer4.0.conv1.weight" in report.missing
    assert "partial.pth" in caplog.text and "extra.weight" in caplog.text
    assert "layer4.0.conv1.weight" in caplog.text


def test_old_checkpoint_without_num_batches_tracked_is_not_missing(tv_state):
    state = {k: v for k, v in tv_state.items() if not k.endswith("num_batches_tracked")}
    report = load_pretrained_weights(build_resnet(18), state)
    assert report.missing == []


def test_shape_mismatch_names_key_and_shapes(tv_state):
    state = dict(tv_state)
    state["conv1.weight"] = torch.zeros(32, 3, 7, 7)
    with pytest.raises(ValueError) as e:
        load_pretrained_weights(build_resnet(18), state)
    msg = str(e.value)
    assert "conv1.weight" in msg and "(32, 3, 7, 7)" in msg and "(64, 3, 7, 7)" in msg


class _PerDomainBN(nn.Module):
    """Stand-in for a domain-specific BN: shared affine, one inner BN per domain in ``bns``."""

    def __init__(self, num_features: int, num_domains: int = 2) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.bns = nn.ModuleList(
            nn.BatchNorm2d(num_features, affine=False) for _ in range(num_domains)
        )


def test_bn_statistics_go_to_every_domain(tv_state):
    model = build_resnet(18, norm=_PerDomainBN, num_domains=3)
    report = load_pretrained_weights(model, tv_state)
    assert report.missing == [] and report.unexpected == []
    own = model.state_dict()
    for d in range(3):
        torch.testing.assert_close(own[f"bn1.bns.{d}.running_mean"], tv_state["bn1.running_mean"])
        torch.testing.assert_close(
            own[f"layer2.0.downsample.1.bns.{d}.running_var"],
            tv_state["layer2.0.downsample.1.running_var"],
        )
    torch.testing.assert_close(own["layer1.0.bn2.weight"], tv_state["layer1.0.bn2.weight"])


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": Payload()}, path)
    with pytest.raises(RuntimeError, match="evil.pth"):
        read_state_dict(path)
    assert not marker.exists()


def test_missing_file_error(tmp_path):
    with pytest.raises(Exception, match="nope.pth"):
        read_state_dict(tmp_path / "nope.pth")


def _offline(*args, **kwargs):
    raise urllib.error.URLError("no network")


@pytest.mark.parametrize(
    "depth, ibn, filename",
    [(50, None, "resnet50-0676ba61.pth"), (50, "a", "resnet50_ibn_a-d9d0bb7b.pth")],
)
def test_offline_download_error_names_file_and_key(monkeypatch, depth, ibn, filename):
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _offline)
    url = imagenet_weights_url(depth, ibn)
    assert url.endswith(filename)
    with pytest.raises(RuntimeError) as e:
        fetch_imagenet_state_dict(depth, ibn)
    msg = str(e.value)
    assert url in msg and filename in msg and "MODEL.BACKBONE.PRETRAIN_PATH" in msg


def test_torchvision_url_comes_from_weights_api():
    assert imagenet_weights_url(18) == torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    assert imagenet_weights_url(101, "b").endswith("resnet101_ibn_b-c55f6dba.pth")


def _cfg(**opts):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.DEPTH = 18
    for k, v in opts.items():
        setattr(cfg.MODEL.BACKBONE, k, v)
    return cfg


def test_build_model_pretrain_offline_fails_clearly(monkeypatch):
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _offline)
    with pytest.raises(RuntimeError, match="PRETRAIN_PATH"):
        build_model(_cfg(PRETRAIN=True), num_classes=4)


def test_build_model_pretrain_online_path_uses_download(monkeypatch, tv_state):
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: tv_state)
    model = build_model(_cfg(PRETRAIN=True), num_classes=4)
    assert_loaded(model.backbone, tv_state)


def test_build_model_pretrain_path(tmp_path, tv_state, monkeypatch):
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _offline)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": tv_state}, path)
    model = build_model(_cfg(PRETRAIN=True, PRETRAIN_PATH=str(path)), num_classes=4)
    assert_loaded(model.backbone, tv_state)
