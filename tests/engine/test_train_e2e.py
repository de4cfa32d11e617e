"""End-to-end runs of tools/train_net.py in subprocesses: train, evaluate, resume after
SIGKILL, DDP on CPU, and refusing malicious checkpoints on every loading path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
TRAIN_NET = str(ROOT / "tools" / "train_net.py")


def tiny_opts(out: Path, data_root: Path, **over) -> list[str]:
    """A tiny deterministic CPU job on two synthetic domains (seconds per epoch)."""
    opts = {
        "MODEL.DEVICE": "cpu",
        "MODEL.BACKBONE.DEPTH": "18",
        "MODEL.BACKBONE.PRETRAIN": "False",
        "INPUT.SIZE_TRAIN": "(64, 32)",
        "INPUT.SIZE_TEST": "(64, 32)",
        "INPUT.PADDING.SIZE": "4",
        "DATASETS.NAMES": "('SyntheticA',)",
        "DATASETS.TESTS": "('SyntheticB',)",
        "DATASETS.ROOT": str(data_root),
        "DATASETS.SYNTHETIC.NUM_IDS": "12",
        "DATASETS.SYNTHETIC.NUM_CAMS": "2",
        "DATASETS.SYNTHETIC.IMGS_PER_CAM": "2",
        "DATASETS.SYNTHETIC.SIZE": "(64, 32)",
        "DATALOADER.NUM_WORKERS": "0",
        "DATALOADER.NUM_INSTANCE": "2",
        "SOLVER.IMS_PER_BATCH": "8",
        "SOLVER.ITERS_PER_EPOCH": "2",
        "SOLVER.MAX_EPOCH": "3",
        "SOLVER.CHECKPOINT_PERIOD": "1",
        "SOLVER.WARMUP_ITERS": "0",
        "SOLVER.DETERMINISTIC": "True",
        "SOLVER.LOG_PERIOD": "1",
        "TEST.IMS_PER_BATCH": "16",
        "OUTPUT_DIR": str(out),
    }
    opts.update(over)
    return [x for kv in opts.items() for x in kv]


def run_train(args: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, TRAIN_NET, *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600, **kw)


def model_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("ref")
    r = run_train(tiny_opts(out, data_root))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out, r


def test_train_writes_config_log_metrics_and_results(reference_run):
    out, r = reference_run
    assert (out / "config.yaml").is_file() and (out / "log.txt").is_file()
    assert (out / "model_final.pth").is_file()
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in x for x in lines) and any("eval" in x for x in lines)
    assert "SyntheticB" in r.stdout and "mAP" in r.stdout
    # The last evaluation's results name the checkpoint written just before it.
    prov = json.loads((out / "eval" / "results.json").read_text())["provenance"]
    assert prov["checkpoint"] == str(out / "model_final.pth") and prov["rerank"] is None


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["0", "2"])
def test_resume_after_sigkill_matches_uninterrupted(reference_run, data_root, tmp_path, workers):
    """Killed and resumed, with or without loader workers, the run ends bit-identical to the
    uninterrupted reference (which ran without workers): each sample's augmentation has its own
    seed, whatever process makes it."""
    ref_out, _ = reference_run
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    opts = tiny_opts(out, data_root, **{"DATALOADER.NUM_WORKERS": workers})
    proc = subprocess.Popen([sys.executable, TRAIN_NET, *opts], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "model_0001.pth").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "model_0001.pth").exists(), "the run never wrote its first checkpoint"
    assert not (out / "model_final.pth").exists(), "the run finished before it was killed"
    r = run_train(["--resume", *opts])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Resumed from" in r.stdout
    a, b = model_state(ref_out / "model_final.pth"), model_state(out / "model_final.pth")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_eval_only_uses_model_weights(reference_run, data_root, tmp_path):
    ref_out, _ = reference_run
    out = tmp_path / "eval"
    r = run_train(["--eval-only", *tiny_opts(out, data_root),
                   "MODEL.WEIGHTS", str(ref_out / "model_final.pth")])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "SyntheticB" in r.stdout and "evaluated" in r.stdout
    # The training-time layout, naming the checkpoint evaluated.
    prov = json.loads((out / "eval" / "results.json").read_text())["provenance"]
    assert prov["checkpoint"] == str(ref_out / "model_final.pth") and prov["checkpoint_sha256"]


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_malicious_checkpoint_refused_on_every_path(data_root, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "payload": _Evil(str(marker))}, evil)

    out = tmp_path / "run"
    for extra in (["MODEL.BACKBONE.PRETRAIN", "True", "MODEL.BACKBONE.PRETRAIN_PATH", str(evil)],
                  ["MODEL.WEIGHTS", str(evil)]):
        r = run_train(tiny_opts(out, data_root, **{"SOLVER.MAX_EPOCH": "1"}) + extra)
        assert r.returncode != 0
        assert "pickled" in (r.stdout + r.stderr)
        assert not marker.exists()
    # --resume: a poisoned last checkpoint in OUTPUT_DIR.
    out.mkdir(exist_ok=True)
    (out / "model_0001.pth").write_bytes(evil.read_bytes())
    (out / "last_checkpoint").write_text("model_0001.pth")
    r = run_train(["--resume", *tiny_opts(out, data_root, **{"SOLVER.MAX_EPOCH": "1"})])
    assert r.returncode != 0 and "pickled" in (r.stdout + r.stderr)
    assert not marker.exists()
    # The Python API.
    from reid_pbn import FeatureExtractor
    from reid_pbn.engine import CheckpointError

    with pytest.raises(CheckpointError, match="pickled"):
        FeatureExtractor(weights=str(evil), device="cpu",
                         opts=["MODEL.BACKBONE.DEPTH", "18", "MODEL.BACKBONE.PRETRAIN", "False"])
    assert not marker.exists()


@pytest.mark.slow
def test_ddp_two_cpu_processes(data_root, tmp_path):
    out = tmp_path / "ddp"
    r = run_train(["--num-gpus", "2",
                   *tiny_opts(out, data_root, **{"SOLVER.MAX_EPOCH": "1",
                                                 "SOLVER.DETERMINISTIC": "False"})])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    logs = [(out / "log.txt").read_text(), (out / "log.txt.rank1").read_text()]
    sums = []
    for text in logs:
        assert "epoch 1/1 done" in text
        sums.append([ln.split("weights checksum:")[1].strip() for ln in text.splitlines()
                     if "weights checksum:" in ln][-1])
    # Parameters and running statistics (per rank while training) agree at the end.
    assert sums[0] == sums[1] and "buffers checksum" in sums[0]
    # Evaluation gathered both ranks' shards: every image on disk was seen exactly once.
    target = json.loads((out / "eval" / "results.json").read_text())["SyntheticB"]
    on_disk = {split: len(list((data_root / "SyntheticB" / split).glob("*.jpg")))
               for split in ("query", "bounding_box_test")}
    assert target["num_queries"] == on_disk["query"] > 0
    assert target["num_gallery"] == on_disk["bounding_box_test"] > 0
    # The ranks evaluated one network, the one saved: a single process evaluating the saved
    # checkpoint gets the same numbers.
    single = tmp_path / "single"
    r = run_train(["--eval-only", *tiny_opts(single, data_root, **{
        "MODEL.WEIGHTS": str(out / "model_final.pth")})])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    alone = json.loads(next(single.rglob("results.json")).read_text())["SyntheticB"]
    for key in ("mAP", "mINP", "Rank-1"):
        assert alone[key] == pytest.approx(target[key], abs=1e-6), key
