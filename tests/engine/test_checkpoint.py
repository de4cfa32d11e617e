"""Atomic checkpoints, safe loading and RNG round trips."""

import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from reid_pbn.engine.checkpoint import (
    Checkpointer,
    CheckpointError,
    atomic_torch_save,
    get_rng_states,
    load_checkpoint_file,
    load_model_weights,
    set_rng_states,
)


class _Evil:
    """Unpickling this runs code that creates a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.ones(1)}, "payload": _Evil(str(marker))}, ckpt)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_checkpoint_file(str(ckpt))
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        load_model_weights(nn.Linear(1, 1), str(ckpt))
    assert not marker.exists()


def test_truncated_and_missing_files(tmp_path):
    p = tmp_path / "m.pth"
    atomic_torch_save({"w": torch.randn(100)}, str(p))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="damaged|truncated"):
        load_checkpoint_file(str(p))
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint_file(str(tmp_path / "none.pth"))


def test_shape_mismatch_names_key(tmp_path):
    p = tmp_path / "m.pth"
    torch.save(nn.Linear(3, 2).state_dict(), p)
    with pytest.raises(CheckpointError, match=r"weight: file \(2, 3\) vs model \(4, 3\)"):
        load_model_weights(nn.Linear(3, 4), str(p))


def test_atomic_save_leaves_old_file_on_failure(tmp_path):
    p = tmp_path / "m.pth"
    atomic_torch_save({"a": torch.zeros(1)}, str(p))

    class Boom:
        def __reduce__(self):
            raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError):
        atomic_torch_save({"a": Boom()}, str(p))
    assert torch.equal(load_checkpoint_file(str(p))["a"], torch.zeros(1))
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp")] == []


def test_rng_states_round_trip():
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    s = get_rng_states()
    a = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_states(s)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_checkpointer_restores_model_optimizer_and_extra(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    ck = Checkpointer(model, str(tmp_path), optimizer=opt)
    ck.save("model_0001", epoch=1, config="X: 1\n")
    assert ck.last_checkpoint().endswith("model_0001.pth")
    model2 = nn.Linear(4, 2)
    opt2 = torch.optim.Adam(model2.parameters(), lr=0.1)
    extra = Checkpointer(model2, str(tmp_path), optimizer=opt2).load(ck.last_checkpoint())
    assert extra["epoch"] == 1 and extra["config"] == "X: 1\n"
    assert torch.equal(model.weight, model2.weight)
    state, state2 = opt.state_dict()["state"][0], opt2.state_dict()["state"][0]
    assert torch.equal(state["exp_avg"], state2["exp_avg"])


def _small_cfg():
    from reid_pbn.config import get_cfg

    cfg = get_cfg()
    cfg.MODEL.BACKBONE.DEPTH = 18
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def test_inference_model_loads_training_checkpoint_without_classifier(tmp_path, caplog):
    from reid_pbn.engine.inference import build_inference_model
    from reid_pbn.modeling import build_model

    cfg = _small_cfg()
    torch.manual_seed(0)
    trained = build_model(cfg, num_classes=7).eval()  # 7 training identities
    path = tmp_path / "model_final.pth"
    torch.save({"model": trained.state_dict(), "epoch": 3}, path)
    x = torch.randn(2, 3, 64, 32)
    with caplog.at_level("WARNING", logger="reid_pbn"):
        model = build_inference_model(cfg, str(path))
    # The classifier's shape differs (7 vs 1 class) and is not needed: no error, no warning.
    assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text
    with torch.no_grad():
        torch.testing.assert_close(model(x), trained(x))

    # A file that misses part of the feature extractor is refused, naming the mismatch ...
    state = {k: v for k, v in trained.state_dict().items() if not k.startswith("backbone.layer4")}
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"keys are missing from the file \(e\.g\. "
                       r"backbone\.layer4.*MODEL\.WEIGHTS_PARTIAL_OK"):
        build_inference_model(cfg, str(tmp_path / "partial.pth"))
    # ... and loaded with a warning when a partial load is asked for.
    cfg.MODEL.WEIGHTS_PARTIAL_OK = True
    caplog.clear()
    with caplog.at_level("WARNING", logger="reid_pbn"):
        build_inference_model(cfg, str(tmp_path / "partial.pth"))
    assert "backbone.layer4" in caplog.text and "meaningless" in caplog.text
