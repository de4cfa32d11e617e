"""The study runner (tools/dg_study.py): config validation, the results file, pairing of methods
by seed, and tiny studies run end to end, killed and resumed, and re-run cell by cell."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from reid_pbn.engine import DefaultTrainer
from reid_pbn.engine.study import CellStore, StudyError, load_study
from reid_pbn.engine.study.config import config_hash
from reid_pbn.engine.study.runner import plan_cells, study_lock
from reid_pbn.layers import EFDMix, MixStyle, PatchBatchNorm2d
from reid_pbn.modeling import build_model

ROOT = Path(__file__).resolve().parents[2]
TOOL = str(ROOT / "tools" / "dg_study.py")
# Fields that describe how long a run took, not what it computed.
TIMING = ("wall_time_s", "train_s", "eval_s")


def write_study(tmp: Path, data_root: Path, *, out: str = "out", methods=("BN", "PBN"),
                seeds=2, targets=("SyntheticA", "SyntheticB"), **extra) -> Path:
    """A tiny study (32x16 images, 12 identities, 2 iterations per cell) in ``tmp``."""
    base = {
        "_BASE_": str(ROOT / "configs" / "Study" / "Base-cell.yml"),
        "INPUT": {"SIZE_TRAIN": [32, 16], "SIZE_TEST": [32, 16], "PADDING": {"SIZE": 2}},
        "DATASETS": {"ROOT": str(data_root),
                     "SYNTHETIC": {"NUM_IDS": 12, "NUM_CAMS": 2, "IMGS_PER_CAM": 2,
                                   "SIZE": [32, 16]}},
        "DATALOADER": {"NUM_INSTANCE": 2},
        "SOLVER": {"IMS_PER_BATCH": 8, "ITERS_PER_EPOCH": 2, "MAX_EPOCH": 1,
                   "WARMUP_ITERS": 0, "LOG_PERIOD": 1},
        "TEST": {"IMS_PER_BATCH": 16},
    }
    (tmp / "base.yml").write_text(yaml.safe_dump(base), encoding="utf-8")
    study = {
        "base": "base.yml",
        "output_dir": str(tmp / out),
        "seeds": seeds,
        "groups": [{"name": "single", "sources": ["SyntheticA"], "targets": list(targets),
                    "methods": list(methods)}],
        **extra,
    }
    path = tmp / "study.yml"
    path.write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
    return path


def run_tool(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600, **kw)


def records(path: Path) -> list[dict]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING} for x in lines]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("study_data")


# ---------------------------------------------------------------------------------------------
# Validation: everything is checked before anything trains
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    ({"seeds": 0}, "seeds is 0"),
    ({"seeds": []}, "seeds must be"),
    ({"methods": ("BN", "PBM")}, "unknown method 'PBM'; known methods: BN, PBN"),
    ({"targets": ("SyntheticA", "SyntheticZ")}, "unknown data set 'SyntheticZ'"),
    ({"targets": ("SyntheticQ@0.5",)}, "unknown data set 'SyntheticQ@0.5'"),
    ({"methods": ("BN", "BNE")}, "BNE needs at least 2 sources"),
    ({"methods": ("PBN", "untrained")}, "baseline 'BN' is not a trained method"),
    ({"methods": ("BN", {"name": "PBN", "overrides": {"SOLVER.BASE_LRR": 0.1}})},
     "Unknown config key 'SOLVER.BASE_LRR'"),
    ({"overrides": {"SOLVER.SEED": 3}}, "SOLVER.SEED is set by the study"),
    ({"methods": ("BN", "BN")}, "two methods share a label"),
    ({"colour": "red"}, "unknown key(s) colour; valid keys:"),
])
def test_invalid_study_configs_are_refused(tmp_path, data_root, change, message):
    kw = {k: v for k, v in change.items() if k in ("methods", "seeds", "targets")}
    extra = {k: v for k, v in change.items() if k not in kw}
    path = write_study(tmp_path, data_root, **kw, **extra)
    with pytest.raises(StudyError, match=None) as err:
        load_study(str(path))
    assert message in str(err.value)


def test_command_line_cannot_override_what_methods_or_study_set(tmp_path, data_root):
    path = str(write_study(tmp_path, data_root))
    with pytest.raises(StudyError, match="MODEL.BACKBONE.NORM is what the methods BN, PBN set"):
        load_study(path, ["MODEL.BACKBONE.NORM", "BN"])
    with pytest.raises(StudyError, match="DATASETS.TESTS is set by the study"):
        load_study(path, ["DATASETS.TESTS", "('SyntheticC',)"])


@pytest.mark.parametrize("change, message", [
    ({"methods": ("BN", "PBNX")}, "unknown method 'PBNX'"),
    ({"targets": ("Nowhere",)}, "unknown data set 'Nowhere'"),
    ({"seeds": 0}, "seeds is 0"),
])
def test_tool_exits_1_with_one_line(tmp_path, data_root, change, message):
    path = write_study(tmp_path, data_root, **change)
    r = run_tool("--config-file", str(path), "--dry-run")
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()  # nothing was written, let alone trained


def test_tool_help_and_refused_flags(tmp_path, data_root):
    r = run_tool("--help")
    assert r.returncode == 0 and "--jobs N" in r.stdout and "IBN-a+PBN" in r.stdout
    assert "EFDMix+PBN" in r.stdout and "osnet_x0_25" in r.stdout
    assert "--eval-only" not in r.stdout
    path = write_study(tmp_path, data_root)
    r = run_tool("--config-file", str(path), "--resume")
    assert r.returncode == 1 and "--resume is a train_net.py option" in r.stderr


def test_cells_config_and_hash(tmp_path, data_root):
    study = load_study(str(write_study(tmp_path, data_root, methods=("BN", "IBN-a+PBN"))))
    assert [c.name for c in study.cells] == [
        "single/BN/seed0", "single/IBN-a+PBN/seed0", "single/BN/seed1", "single/IBN-a+PBN/seed1"]
    cell = study.cell("single/IBN-a+PBN/seed1")
    assert cell.cfg.MODEL.BACKBONE.NORM == "PBN" and cell.cfg.MODEL.BACKBONE.IBN == "a"
    assert cell.cfg.SOLVER.SEED == 1 and tuple(cell.cfg.DATASETS.TESTS) == (
        "SyntheticA", "SyntheticB")
    expected = tmp_path / "out" / "cells" / "single" / "IBN-a+PBN" / "seed1"
    assert str(expected) == cell.cfg.OUTPUT_DIR
    # The hash ignores where the study folder lies, so a moved folder still resumes.
    moved = load_study(str(tmp_path / "study.yml"), ["OUTPUT_DIR", str(tmp_path / "elsewhere")])
    assert moved.cell(cell.name).config_hash == cell.config_hash
    other = load_study(str(tmp_path / "study.yml"), ["SOLVER.BASE_LR", "0.01"])
    assert other.cell(cell.name).config_hash != cell.config_hash
    # Only differences from the defaults count: a key the defaults gain later (at its default)
    # or lose leaves the hash, and so the recorded cells, valid.
    saved = yaml.safe_load(cell.cfg.dump())
    saved["MODEL"]["SOME_FUTURE_KEY"] = 1
    saved["VERSION"] = 1
    assert config_hash(saved, cell.rel_dir) == cell.config_hash


def test_mixing_methods_validate_and_set_their_keys(tmp_path, data_root):
    mixing = ("MixStyle", "EFDMix", "MixStyle+PBN", "EFDMix+PBN")
    # The base mixes, so BN must switch it off; OSNet comes from the study's overrides.
    path = write_study(tmp_path, data_root, methods=("BN", *mixing), seeds=1,
                       overrides={"MODEL.BACKBONE.NAME": "osnet_x0_25",
                                  "MODEL.BACKBONE.MIX.TYPE": "MixStyle"})
    study = load_study(str(path))
    assert [c.method.label for c in study.cells] == ["BN", *mixing]
    for cell in study.cells:
        b = cell.cfg.MODEL.BACKBONE
        kind, _, norm = cell.method.label.partition("+")
        want_norm, want_mix = norm or "BN", "" if kind == "BN" else kind
        assert b.NAME == "osnet_x0_25" and b.IBN == ""
        assert [want_norm, want_mix] == [b.NORM, b.MIX.TYPE]
        assert tuple(b.MIX.STAGES) == ("layer1", "layer2")  # OSNet's conv2 and conv3
    model = build_model(study.cell("single/EFDMix+PBN/seed0").cfg, num_classes=4)
    mixers = [m for m in model.modules() if isinstance(m, EFDMix)]
    assert len(mixers) == 2
    assert any(isinstance(m, PatchBatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, (EFDMix, MixStyle)) for m in
                   build_model(study.cell("single/BN/seed0").cfg, num_classes=4).modules())
    with pytest.raises(StudyError, match="MODEL.BACKBONE.MIX.TYPE is what the methods"):
        load_study(str(path), ["MODEL.BACKBONE.MIX.TYPE", "EFDMix"])


def test_shipped_default_study_is_valid():
    study = load_study(str(ROOT / "configs" / "Study" / "default.yml"))
    assert study.seeds == tuple(range(10))
    assert {g.name: [m.label for m in g.methods] for g in study.groups} == {
        "single": ["BN", "PBN", "IBN-a", "IBN-a+PBN", "untrained"], "multi": ["BN", "BNE"]}
    assert len(study.cells) == 70
    assert "SyntheticLocal@1.0" in study.groups[0].targets


# ---------------------------------------------------------------------------------------------
# The results file
# ---------------------------------------------------------------------------------------------
def test_store_appends_lines_and_drops_a_truncated_last_line(tmp_path):
    store = CellStore(str(tmp_path / "cells.jsonl"))
    store.append({"group": "g", "method": "BN", "seed": 0, "x": float("nan")})
    store.append({"group": "g", "method": "BN", "seed": 1})
    with open(store.path, "ab") as f:
        f.write(b'{"group": "g", "meth')  # a write cut short by a crash
    recs = store.load()
    assert [r["seed"] for r in recs] == [0, 1] and recs[0]["x"] is None
    assert Path(store.path).read_bytes().endswith(b'"seed": 1}\n')  # repaired on disk


def test_store_refuses_a_corrupt_middle_line(tmp_path):
    path = tmp_path / "cells.jsonl"
    path.write_text('{"group": "g", "method": "BN", "seed": 0}\nnot json\n'
                    '{"group": "g", "method": "BN", "seed": 1}\n', encoding="utf-8")
    with pytest.raises(StudyError, match="line 2 is not a cell record"):
        CellStore(str(path)).load()


def test_cells_recorded_with_another_config_are_not_silently_reused(tmp_path, data_root):
    study = load_study(str(write_study(tmp_path, data_root)))
    rec = {"group": "single", "method": "BN", "seed": 0, "config_hash": "old"}
    good = {"group": "single", "method": "PBN", "seed": 0,
            "config_hash": study.cell("single/PBN/seed0").config_hash}
    with pytest.raises(StudyError, match="made with another config"):
        plan_cells(study, [rec, good])
    todo, done, stale = plan_cells(study, [rec, good], redo_changed=True)
    assert [c.name for c in done] == ["single/PBN/seed0"] and stale == [rec]
    assert [c.name for c in todo] == ["single/BN/seed0", "single/BN/seed1", "single/PBN/seed1"]
    todo, _, _ = plan_cells(study, [good], only=["*/seed1"])
    assert [c.name for c in todo] == ["single/BN/seed1", "single/PBN/seed1"]


def test_one_runner_per_study_folder(tmp_path):
    with study_lock(str(tmp_path)):
        held_twice = study_lock(str(tmp_path))
        with pytest.raises(StudyError, match="Another dg_study run"):
            held_twice.__enter__()


# ---------------------------------------------------------------------------------------------
# Pairing: a method and the baseline with one seed share init, batches and augmentation
# ---------------------------------------------------------------------------------------------
def test_method_and_baseline_share_init_batches_and_augmentation(tmp_path, data_root):
    study = load_study(str(write_study(tmp_path, data_root)))
    seen = {}
    for name in ("single/BN/seed1", "single/PBN/seed1"):
        trainer = DefaultTrainer(study.cell(name).cfg)
        conv = trainer.unwrapped.backbone.conv1.weight.detach().clone()
        batches = []
        next_batch = trainer._next_batch
        trainer._next_batch = lambda nb=next_batch, out=batches: out.append(nb()) or out[-1]
        trainer.start_epoch_data(0)
        for _ in range(2):  # PBN draws from the process RNG between the two batches
            trainer.run_step()
        seen[name] = (conv, batches)
    (c_bn, b_bn), (c_pbn, b_pbn) = seen.values()
    assert torch.equal(c_bn, c_pbn)
    for x, y in zip(b_bn, b_pbn):
        assert x["img_paths"] == y["img_paths"] and torch.equal(x["images"], y["images"])


# ---------------------------------------------------------------------------------------------
# End to end (subprocesses; tens of seconds)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference_study(tmp_path_factory, data_root):
    """A 2-method x 2-seed study run without interruption (2 jobs, 1 thread each)."""
    tmp = tmp_path_factory.mktemp("study_ref")
    path = write_study(tmp, data_root)
    r = run_tool("--config-file", str(path), "--jobs", "2", "--threads", "1")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp, path


@pytest.mark.slow
def test_study_runs_end_to_end(reference_study):
    tmp, _ = reference_study
    out = tmp / "out"
    recs = [json.loads(x) for x in (out / "cells.jsonl").read_text().splitlines()]
    assert [(r["method"], r["seed"]) for r in recs] == [("BN", 0), ("PBN", 0), ("BN", 1),
                                                        ("PBN", 1)]
    for r in recs:
        assert set(r["targets"]) == {"SyntheticA", "SyntheticB"}
        assert set(r["targets"]["SyntheticB"]) == {"mAP", "Rank-1", "mINP"}
        assert 0.0 <= r["targets"]["SyntheticB"]["mAP"] <= 1.0
        assert len(r["checksum"]) == 16 and len(r["config_hash"]) == 64
        assert r["num_threads"] == 1 and r["wall_time_s"] > 0 and r["torch"]
        cell = out / "cells" / "single" / r["method"] / f"seed{r['seed']}"
        assert (cell / "log.txt").is_file() and not list(cell.glob("*.pth"))
    # The rendered tables hold the recorded numbers (percent).
    md = (out / "results.md").read_text(encoding="utf-8")
    bn_b = [100 * r["targets"]["SyntheticB"]["mAP"] for r in recs if r["method"] == "BN"]
    assert f"| SyntheticB | BN (baseline) | 2 | {np.mean(bn_b):.2f} ± {np.std(bn_b, ddof=1):.2f}" \
        in md
    csv_text = (out / "results.csv").read_text(encoding="utf-8")
    assert csv_text.startswith("group,target,metric,method") and csv_text.count("\n") == 13
    assert {p.name for p in (out / "plots").glob("*.png")} == {
        "single_SyntheticA.png", "single_SyntheticB.png"}
    # A second run finds everything recorded and trains nothing.
    again = run_tool("--config-file", str(tmp / "study.yml"), "--threads", "1")
    assert again.returncode == 0 and "0 cell(s) run, 4 already recorded" in again.stdout


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return kids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the cell process")
def test_killed_study_resumes_to_the_same_cells(reference_study, tmp_path, data_root):
    ref_tmp, _ = reference_study
    path = write_study(tmp_path, data_root)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, TOOL, "--config-file", str(path), "--threads", "1"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        cells = out / "cells.jsonl"
        while time.time() < deadline and proc.poll() is None:
            if cells.is_file() and cells.read_text().count("\n") >= 1:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the study finished before it could be killed"
        time.sleep(1.0)  # let the second cell start
        kids = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.time() + 10
    while time.time() < deadline and any(map(_alive, kids)):
        time.sleep(0.1)
    assert kids and not any(map(_alive, kids)), "a cell outlived its killed runner"
    assert (out / "cells" / "single" / "PBN" / "seed0").is_dir()  # the interrupted cell
    with open(out / "cells.jsonl", "ab") as f:
        f.write(b'{"group": "single", "method": "PBN", "se')  # and a torn last line
    r = run_tool("--config-file", str(path), "--jobs", "2", "--threads", "1")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "3 cell(s) run, 1 already recorded" in r.stdout
    assert records(out / "cells.jsonl") == records(ref_tmp / "out" / "cells.jsonl")


@pytest.mark.slow
def test_rerunning_a_recorded_cell_gives_its_checksum(reference_study):
    _, path = reference_study
    r = run_tool("--config-file", str(path), "--verify-cell", "single/PBN/seed1")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "identical" in r.stdout
    r = run_tool("--config-file", str(path), "--verify-cell", "single/PBN/seed7")
    assert r.returncode == 1 and "No cell 'single/PBN/seed7'" in r.stderr


@pytest.mark.slow
def test_render_only_rewrites_results_from_cells(reference_study):
    tmp, path = reference_study
    (tmp / "out" / "results.md").unlink()
    r = run_tool("--config-file", str(path), "--render-only")
    assert r.returncode == 0 and (tmp / "out" / "results.md").is_file()
