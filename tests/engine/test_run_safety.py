"""No trained model overwritten, no checkpoint outside OUTPUT_DIR read, no evaluation setting
found wrong only after training work, and weight files described for what they are."""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_trainer_api import tiny_cfg

from reid_pbn.config import ConfigError
from reid_pbn.data.datasets.bases import DatasetNotFoundError
from reid_pbn.engine import DefaultTrainer
from reid_pbn.engine.checkpoint import CheckpointError, load_checkpoint_file

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def finished_run(tmp_path):
    """A finished 2-epoch run: model_0001.pth, model_final.pth and the pointer."""
    out = tmp_path / "run"
    cfg = tiny_cfg(tmp_path, out, **{"SOLVER.MAX_EPOCH": "2", "SOLVER.CHECKPOINT_PERIOD": "1",
                                     "DATASETS.TESTS": "()"})
    DefaultTrainer(cfg).fit()
    return cfg, out


def test_new_run_over_a_trained_model_is_refused_unless_overwrite(finished_run, caplog):
    cfg, out = finished_run
    before = (out / "model_final.pth").stat()
    with pytest.raises(CheckpointError, match="--resume.*--overwrite"):
        DefaultTrainer(cfg).fit()
    assert (out / "model_final.pth").stat() == before
    DefaultTrainer(cfg).fit(overwrite=True)
    assert "deleting 2 checkpoint(s)" in caplog.text
    # A new file (the seeded run rewrites the same bytes, so compare the files, not bytes).
    assert (out / "model_final.pth").stat().st_ino != before.st_ino


def test_train_net_refuses_before_touching_the_earlier_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    torch.save({"model": {}}, out / "model_final.pth")
    (out / "config.yaml").write_text("earlier run's config\n")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "train_net.py"), "--config-file",
         str(ROOT / "configs" / "Demo" / "synthetic_cross_domain.yml"), "OUTPUT_DIR", str(out),
         "MODEL.DEVICE", "cpu"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "--overwrite" in proc.stdout + proc.stderr
    assert (out / "config.yaml").read_text() == "earlier run's config\n"


def test_dangling_pointer_falls_back_to_newest_checkpoint(finished_run, caplog):
    cfg, out = finished_run
    (out / "model_final.pth").unlink()  # pointer now names a missing file
    (out / ".tmp-abcd-model_0002.pth").write_bytes(b"half a write")
    caplog.set_level(logging.INFO, logger="reid_pbn")
    DefaultTrainer(cfg).fit(resume=True)
    assert "Resumed from" in caplog.text and "model_0001.pth" in caplog.text
    assert (out / "model_final.pth").is_file()
    assert not list(out.glob(".tmp-*")), "temporary files of killed writes were left"


def test_unreadable_checkpoints_are_never_restarted_over(finished_run):
    cfg, out = finished_run
    for name in ("model_0001.pth", "model_final.pth"):
        (out / name).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="refusing to start from scratch"):
        DefaultTrainer(cfg).fit(resume=True)
    assert (out / "model_0001.pth").read_bytes() == b"PK\x03\x04 truncated"


@pytest.mark.parametrize("pointer", ["../elsewhere/model.pth", "/etc/passwd", "sub/model.pth"])
def test_pointer_outside_output_dir_is_refused(finished_run, pointer):
    cfg, out = finished_run
    (out / "last_checkpoint").write_text(pointer)
    with pytest.raises(CheckpointError, match="not a file of"):
        DefaultTrainer(cfg).fit(resume=True)


def test_resume_with_another_optimizer_or_a_negative_epoch_is_refused(finished_run):
    cfg, out = finished_run
    cfg.defrost()
    cfg.SOLVER.OPT = "SGD" if cfg.SOLVER.OPT != "SGD" else "Adam"
    with pytest.raises(CheckpointError, match="different optimizer"):
        DefaultTrainer(cfg).fit(resume=True)
    cfg.SOLVER.OPT = "SGD" if cfg.SOLVER.OPT != "SGD" else "Adam"
    data = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)
    data["epoch"] = -3
    torch.save(data, out / "model_final.pth")
    with pytest.raises(CheckpointError, match="epoch -3"):
        DefaultTrainer(cfg).fit(resume=True)


def test_weight_files_are_described_for_what_they_are(tmp_path):
    text = tmp_path / "config.yaml"
    text.write_text("MODEL:\n  DEVICE: cpu\n")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_checkpoint_file(str(text))
    pick = tmp_path / "obj.pkl"
    pick.write_bytes(pickle.dumps({"w": Path("x")}))
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_checkpoint_file(str(pick))
    good = tmp_path / "good.pth"
    torch.save({"w": torch.zeros(1000)}, good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint_file(str(cut))


@pytest.mark.parametrize("over,error,match", [
    ({"DATASETS.TESTS": "('NoSuchSet',)"}, ConfigError, "NoSuchSet"),
    ({"TEST.METRIC": "cosin"}, ConfigError, "TEST.METRIC 'cosin'"),
    ({"TEST.RERANK.ENABLED": "True", "TEST.RERANK.LAMBDA": "1.5"}, ConfigError, "LAMBDA"),
    ({"DATASETS.TESTS": "('Market1501',)"}, DatasetNotFoundError, "Market"),
])
def test_evaluation_settings_are_checked_before_training(tmp_path, over, error, match):
    cfg = tiny_cfg(tmp_path, tmp_path / "run", **over)
    with pytest.raises(error, match=match):
        DefaultTrainer(cfg)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_failed_evaluation_keeps_the_epoch_checkpoint(tmp_path):
    out = tmp_path / "run"
    cfg = tiny_cfg(tmp_path, out, **{"SOLVER.MAX_EPOCH": "3", "SOLVER.CHECKPOINT_PERIOD": "5",
                                     "TEST.EVAL_PERIOD": "1", "TEST.EVAL_AT_START": "False"})
    trainer = DefaultTrainer(cfg)

    def broken_eval():
        raise RuntimeError("evaluation failed")

    trainer.eval_hook.eval_fn = broken_eval
    with pytest.raises(RuntimeError, match="evaluation failed"):
        trainer.fit()
    saved = torch.load(out / "model_0001.pth", map_location="cpu", weights_only=True)
    assert saved["epoch"] == 1
