"""Export: ONNX (ONNX Runtime) and TorchScript reproduce the eager model's features at batch
sizes other than the traced one, for PBN, IBN and BNE models; a mismatch is reported."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from serving_helpers import REPO, load_tool, randomized_model, run_tool, tiny_cfg

from reid_pbn.config import get_cfg
from reid_pbn.serving.export import (
    FeatureModel,
    ParityError,
    check_parity,
    example_inputs,
    export_model,
    load_exported,
)


def _independent_check(model, path, fmt, cfg):
    """Exported vs eager features computed here, without check_parity's code."""
    run, meta = load_exported(path, fmt)
    x = example_inputs(cfg, 5, seed=7)
    with torch.no_grad():
        want = torch.nn.functional.normalize(model(x), dim=1).numpy()
    got = run(x.numpy())
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1)
    assert got.shape == want.shape and (1 - cos).max() < 1e-4
    return meta


@pytest.mark.parametrize("fmt,exporter", [("onnx", "auto"), ("torchscript", "auto")])
def test_pbn_resnet18_exports_with_parity(tmp_path, fmt, exporter):
    cfg = tiny_cfg()
    model = randomized_model(cfg)
    path = tmp_path / f"pbn.{fmt}"
    report = export_model(model, cfg, fmt, path, exporter=exporter,
                          provenance={"weights_sha256": "abc"})
    assert report.max_cosine_distance is not None and report.max_cosine_distance <= 1e-4
    assert report.exporter == ("dynamo" if fmt == "onnx" else "trace")
    meta = _independent_check(model, path, fmt, cfg)
    assert meta["input"]["size"] == [64, 32] and meta["input"]["layout"] == "NCHW"
    assert meta["output"]["normalization"] == "l2"
    assert meta["provenance"] == {"weights_sha256": "abc"}


@pytest.mark.parametrize("fmt,exporter", [("onnx", "torchscript"), ("torchscript", "auto")])
def test_ibn_resnet18_exports_with_parity(tmp_path, fmt, exporter):
    cfg = tiny_cfg(IBN="a")
    model = randomized_model(cfg, seed=1)
    assert any(isinstance(m, torch.nn.InstanceNorm2d) for m in model.modules())
    path = tmp_path / f"ibn.{fmt}"
    report = export_model(model, cfg, fmt, path, exporter=exporter)
    assert report.max_cosine_distance <= 1e-4
    _independent_check(model, path, fmt, cfg)


def test_a_changed_model_fails_the_parity_check(tmp_path):
    cfg = tiny_cfg()
    model = randomized_model(cfg)
    path = tmp_path / "m.pt"
    export_model(model, cfg, "torchscript", path)
    with torch.no_grad():
        for p in model.backbone.layer4.parameters():
            p.mul_(1.5)
    with pytest.raises(ParityError, match="1 - cos"):
        check_parity(FeatureModel(model), path, "torchscript", cfg)


@pytest.mark.slow
def test_bne_exports_its_combined_path(tmp_path):
    cfg = get_cfg()
    cfg.merge_from_file(str(REPO / "configs" / "MultiSource" / "synthetic_bne.yml"))
    cfg.INPUT.SIZE_TEST = (64, 32)
    model = randomized_model(cfg, num_domains=2)
    assert model.num_domains == 2
    for fmt in ("onnx", "torchscript"):
        report = export_model(model, cfg, fmt, tmp_path / f"bne.{fmt}")
        assert report.max_cosine_distance <= 1e-4
        if fmt == "onnx":
            assert report.exporter == "torchscript-based" and "torch.unique" in \
                report.fallback_reason
        _independent_check(model, tmp_path / f"bne.{fmt}", fmt, cfg)


def test_export_tool(tmp_path, model_files, capsys):
    config_file, weights, _ = model_files
    out = tmp_path / "m.pt"
    args = ["--config-file", config_file, "--format", "torchscript", "--output", out]
    assert run_tool("export", *args, "--weights", weights) == 0
    assert "Parity with the eager model" in capsys.readouterr().out and out.is_file()
    _, meta = load_exported(out, "torchscript")
    assert meta["provenance"]["weights_sha256"] and meta["provenance"]["feature_dim"] == 512
    assert run_tool("export", *args, "--weights", tmp_path / "missing.pth") == 1
    assert capsys.readouterr().err.strip().startswith("export: weights file not found")
    assert run_tool("export", *args, "--weights", weights, "--resume") == 1
    assert "--resume is a train_net.py option" in capsys.readouterr().err


@pytest.mark.parametrize("tool", ["export", "build_index", "search", "serve"])
def test_help(tool):
    text = load_tool(tool).build_parser().format_help()
    assert "--config-file" in text and "Examples" in text and "--resume" not in text
