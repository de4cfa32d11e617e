"""Every tool in tools/: --help, one-line user errors with exit code 1, trailing overrides.

Each command runs in its own process. Importing torch and the package takes seconds, so a
small server process imports them once and forks a child per command (the fork runs the tool
with ``runpy`` as ``python tools/X.py`` would, with its own stdout, stderr and exit code);
the whole file then runs in seconds rather than minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from reid_pbn.engine import CheckpointError, load_state_dict_checked
from reid_pbn.evaluation import save_results

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "Demo" / "synthetic_cross_domain.yml")
TOOLS = ("train_net", "cross_eval", "extract_features", "visualize_results", "domain_weights",
         "convert_checkpoint", "dg_study")
# Tiny synthetic domains, CPU, no worker processes.
TINY = [
    "MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0",
    "DATASETS.SYNTHETIC.NUM_IDS", "12", "DATASETS.SYNTHETIC.NUM_CAMS", "2",
    "DATASETS.SYNTHETIC.IMGS_PER_CAM", "2", "DATASETS.SYNTHETIC.SIZE", "(64, 32)",
    "INPUT.SIZE_TEST", "(64, 32)",
]

_SERVER = r"""
import json, os, runpy, signal, sys, traceback, warnings
import torch, reid_pbn.engine, reid_pbn.evaluation, reid_pbn.modeling, reid_pbn.data  # once
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            for fd, path in ((1, req["out"]), (2, req["err"])):
                os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
            sys.stdout = open(1, "w", closefd=False, buffering=1)
            sys.stderr = open(2, "w", closefd=False, buffering=1)
            warnings.simplefilter("ignore")  # library deprecation notes are not the tool's output
            signal.alarm(req["timeout"])
            sys.argv = [req["tool"], *req["args"]]
            sys.path.insert(0, os.path.dirname(req["tool"]))
            try:
                runpy.run_path(req["tool"], run_name="__main__")
                code = 0
            except SystemExit as e:
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), flush=True)
"""


class _ToolRunner:
    """Runs ``tools/<name>.py ARGS`` in a process forked from a server with the imports done."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.count = 0
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)

    def __call__(self, tool: str, *args: str, timeout: int = 120) -> tuple[int, str, str]:
        self.count += 1
        out, err = self.tmp / f"{self.count}.out", self.tmp / f"{self.count}.err"
        req = {"tool": str(ROOT / "tools" / f"{tool}.py"), "args": [str(a) for a in args],
               "out": str(out), "err": str(err), "timeout": timeout}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        rc = json.loads(self.proc.stdout.readline())["rc"]
        return rc, out.read_text(), err.read_text()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    runner = _ToolRunner(tmp_path_factory.mktemp("tool_runs"))
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A garbage weight file, a foreign-toolkit checkpoint, an image folder, a study."""
    from PIL import Image

    tmp = tmp_path_factory.mktemp("inputs")
    (tmp / "bad.pth").write_bytes(b"this is not a checkpoint")
    torch.save({"state_dict": {f"encoder.block{i}.weight": torch.zeros(2) for i in range(5)}},
               tmp / "foreign.pth")
    (tmp / "images").mkdir()
    Image.new("RGB", (32, 64), (120, 80, 40)).save(tmp / "images" / "a.jpg")
    base = {"_BASE_": str(ROOT / "configs" / "Study" / "Base-cell.yml"),
            "DATASETS": {"ROOT": str(tmp / "data")}}
    (tmp / "base.yml").write_text(yaml.safe_dump(base), encoding="utf-8")
    study = {"base": "base.yml", "output_dir": str(tmp / "study_out"), "seeds": 1,
             "groups": [{"name": "g", "sources": ["SyntheticA"], "targets": ["SyntheticB"],
                         "methods": ["BN"]}]}
    (tmp / "study.yml").write_text(yaml.safe_dump(study), encoding="utf-8")
    (tmp / "study_missing.yml").write_text(yaml.safe_dump({
        **study, "groups": [{**study["groups"][0], "targets": ["NoSuchDataSet"]}]}),
        encoding="utf-8")
    return {"tmp": tmp, "bad": tmp / "bad.pth", "foreign": tmp / "foreign.pth",
            "images": tmp / "images", "nodata": tmp / "no_data", "data": tmp / "data",
            "study": tmp / "study.yml", "study_missing": tmp / "study_missing.yml"}


def _args(tool: str, case: str, f: dict[str, Path], out: Path) -> tuple[list[str], str]:
    """The command line of ``tool`` that provokes ``case``, and a word its message must name.

    Cases: "dataset" (a data set whose files are missing), "key" (a misspelled config key),
    "checkpoint" (a weight file that is not a checkpoint).
    """
    weights = f["bad"] if case == "checkpoint" else f["foreign"]
    root = f["nodata"] if case == "dataset" else f["data"]
    target = "Market1501" if case == "dataset" else "SyntheticB"
    opts = [*TINY, "DATASETS.ROOT", root, "OUTPUT_DIR", out]
    if case == "key":
        opts += ["TEST.NOPE", "1"]
    expect = {"dataset": "Market1501", "key": "TEST.NOPE", "checkpoint": "CheckpointError"}[case]
    if tool == "train_net":
        extra = ["--eval-only", "MODEL.WEIGHTS", weights, "DATASETS.TESTS", f"('{target}',)"]
        return ["--config-file", CONFIG, *extra, *opts], expect
    if tool == "cross_eval":
        return ["--config-file", CONFIG, "--weights", weights, "--targets", target, *opts], expect
    if tool == "visualize_results":
        return ["--config-file", CONFIG, "--weights", weights, "--target", target,
                "--sources", *opts], expect
    if tool == "extract_features":
        src = ["--dataset", target] if case == "dataset" else ["--images", f["images"]]
        return ["--config-file", CONFIG, "--weights", weights, *src, "--output", out,
                *opts], expect
    if tool == "domain_weights":
        image = f["tmp"] / "missing.jpg" if case == "dataset" else f["images"] / "a.jpg"
        return ["--config-file", CONFIG, "--weights", weights, image, *opts], (
            "missing.jpg" if case == "dataset" else expect)
    if tool == "convert_checkpoint":
        # Its input is a checkpoint, not a data set: a missing input file stands for it.
        src = f["tmp"] / "missing.pth" if case == "dataset" else f["bad"]
        return ["--from", "torchreid", "--config-file", CONFIG, "--input", src,
                "--output", out / "converted.pth", *opts], (
            "missing.pth" if case == "dataset" else expect)
    assert tool == "dg_study"
    study = f["study_missing"] if case == "dataset" else f["study"]
    return ["--config-file", study, "--dry-run", *(["TEST.NOPE", "1"] if case == "key" else [])], (
        "NoSuchDataSet" if case == "dataset" else expect)


_CASES = [(tool, case) for tool in TOOLS for case in ("dataset", "key", "checkpoint")
          # dg_study loads no weights itself: each cell is a training run of its own.
          if (tool, case) != ("dg_study", "checkpoint")]


@pytest.mark.parametrize("tool, case", _CASES)
def test_user_error_is_one_line_and_exit_1(run, files, tmp_path, tool, case):
    args, expect = _args(tool, case, files, tmp_path / "out")
    rc, out, err = run(tool, *args)
    assert rc == 1, out + err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in out + err, out + err
    assert expect in err
    if tool in ("domain_weights", "convert_checkpoint"):
        # Tools whose output is not a folder write no log or config.yaml into OUTPUT_DIR,
        # which may be a training run's.
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("tool", TOOLS)
def test_help(run, tool):
    rc, out, err = run(tool, "--help")
    assert rc == 0 and "--config-file" in out and "KEY VALUE" in out, out + err
    # Training flags only where they mean something.
    assert ("--eval-only" in out) == (tool == "train_net")


@pytest.mark.parametrize("tool", ["cross_eval", "extract_features", "visualize_results",
                                  "domain_weights", "convert_checkpoint"])
def test_training_flags_refused(run, tool):
    rc, _, err = run(tool, "--config-file", CONFIG, "--resume")
    assert rc == 1 and "--resume is a train_net.py option" in err


def test_trailing_overrides_after_list_flags(run, files, tmp_path):
    from tools.cross_eval import build_parser as cross_eval_parser
    from tools.visualize_results import build_parser as visualize_parser

    args = cross_eval_parser().parse_args(["--config-file", CONFIG, "--weights", "w",
                                           "--targets", "MSMT17", "GRID", "TEST.METRIC",
                                           "euclidean", "OUTPUT_DIR", "x"])
    assert args.targets == ["MSMT17", "GRID"]  # upper-case names that are no config keys
    assert args.opts == ["TEST.METRIC", "euclidean", "OUTPUT_DIR", "x"]
    args = visualize_parser().parse_args(["--config-file", CONFIG, "--weights", "w", "--sources",
                                          "A", "--", "TEST.METRIC", "euclidean"])
    assert args.sources == ["A"] and args.opts == ["TEST.METRIC", "euclidean"]

    # Honoured end to end: the override's data root is the one reported missing, and the
    # saved config has the override after --targets.
    out = tmp_path / "ce"
    rc, _, err = run("cross_eval", "--config-file", CONFIG, "--weights", files["bad"],
                     "--targets", "Market1501", "DATASETS.ROOT", files["nodata"],
                     "TEST.METRIC", "euclidean", "OUTPUT_DIR", out, "MODEL.DEVICE", "cpu")
    assert rc == 1 and str(files["nodata"]) in err and "Unknown data set" not in err, err
    saved = yaml.safe_load((out / "eval" / "config.yaml").read_text())
    assert saved["TEST"]["METRIC"] == "euclidean" and saved["DATASETS"]["TESTS"] == ["Market1501"]
    rc, _, err = run("visualize_results", "--config-file", CONFIG, "--weights", files["bad"],
                     "--target", "Market1501", "--sources", "SyntheticA", "DATASETS.ROOT",
                     files["nodata"], "OUTPUT_DIR", tmp_path / "vis", "MODEL.DEVICE", "cpu")
    assert rc == 1 and str(files["nodata"]) in err and "Unknown data set" not in err, err


def test_eval_only_needs_weights_unless_random_init(run, tmp_path):
    rc, _, err = run("train_net", "--config-file", CONFIG, "--eval-only", "OUTPUT_DIR",
                     tmp_path / "o", "MODEL.DEVICE", "cpu")
    assert rc == 1 and "--random-init" in err and len(err.strip().splitlines()) == 1
    rc, _, err = run("train_net", "--config-file", CONFIG, "--random-init", "OUTPUT_DIR",
                     tmp_path / "o", "MODEL.DEVICE", "cpu")
    assert rc == 1 and "only applies with --eval-only" in err


def test_foreign_checkpoint_refused_with_counts(run, files, tmp_path):
    rc, _, err = run("cross_eval", "--config-file", CONFIG, "--weights", files["foreign"],
                     "--targets", "SyntheticB", *TINY, "DATASETS.ROOT", files["data"],
                     "OUTPUT_DIR", tmp_path)
    assert rc == 1 and len(err.strip().splitlines()) == 1, err
    assert "5 of the file's 5 keys are unexpected (e.g. encoder.block0.weight" in err, err
    assert "are missing from the file" in err and "MODEL.WEIGHTS_PARTIAL_OK" in err


def test_partial_load_rule():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    state = {"0.weight": torch.ones(4, 3), "0.bias": torch.zeros(4), "other.weight": torch.ones(1)}
    with pytest.raises(CheckpointError) as e:
        load_state_dict_checked(model, state, source="f.pth")
    msg = str(e.value)
    # The model has 7 keys (Linear 2, BatchNorm 5); 5 are missing, 1 of the file's 3 unexpected.
    assert "5 of the model's 7 keys are missing from the file" in msg
    assert "1 of the file's 3 keys are unexpected (e.g. other.weight)" in msg
    assert "only 2 match" in msg
    missing, unexpected = load_state_dict_checked(model, state, allow_partial=True)
    assert len(missing) == 5 and unexpected == ["other.weight"]
    assert torch.equal(model[0].weight, torch.ones(4, 3))
    # Ignored keys (the ID classifier at inference) are neither loaded nor a mismatch.
    load_state_dict_checked(model, {k: v for k, v in model.state_dict().items()}
                            | {"heads.classifier.weight": torch.ones(2)},
                            ignore=lambda k: "classifier" in k)


def test_results_name_checkpoint_and_settings(tmp_path):
    import csv

    import numpy as np

    from reid_pbn.config import get_cfg
    from reid_pbn.engine import evaluation_provenance, file_sha256

    weights = tmp_path / "w.pth"
    torch.save({"model": {}}, weights)
    cfg = get_cfg()
    cfg.TEST.RERANK.ENABLED = True
    prov = evaluation_provenance(cfg, str(weights))
    assert prov["checkpoint"] == str(weights) and prov["checkpoint_sha256"] == file_sha256(weights)
    assert prov["rerank"] == {"k1": 20, "k2": 6, "lambda": 0.3} and prov["aqe"] is None
    results = {"A": {"mAP": 0.5, "Rank-1": 0.75, "cmc": np.linspace(0.75, 1.0, 5)}}
    save_results(results, tmp_path / "eval", provenance=prov)
    doc = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert doc["A"]["mAP"] == 0.5 and doc["provenance"] == json.loads(json.dumps(prov))
    text = (tmp_path / "eval" / "results.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    assert rows[0]["checkpoint_sha256"] == prov["checkpoint_sha256"]
    assert json.loads(rows[0]["rerank"])["k1"] == 20 and rows[0]["aqe"] == ""
