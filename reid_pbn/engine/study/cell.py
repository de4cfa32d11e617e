"""One study cell in its own process: train (or not), evaluate every target, write the result.

The runner starts ``python -m reid_pbn.engine.study <cell folder>/cell.json`` with the
cell's ``config.yaml`` beside it, and reads ``result.json`` when the process exits with 0. A
fresh process per cell gives every cell the same start (RNG, thread pool, global torch flags),
so a cell's weights do not depend on which cells ran before it in the same worker.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import json
import logging
import os
import platform
import signal
import socket
import sys
import threading
import time

import torch

from ...config import get_cfg
from ...utils.file_io import atomic_write
from ..checkpoint import LAST_CHECKPOINT_FILE
from ..defaults import setup_logger
from ..trainer import DefaultTrainer, weights_checksum
from .config import config_hash

__all__ = ["METRICS", "PARENT_ENV", "main", "run_cell"]

logger = logging.getLogger("reid_pbn")

#: Metrics recorded per target (fractions in [0, 1], as ``reid_pbn.evaluation.evaluate``).
METRICS = ("mAP", "Rank-1", "mINP")
#: Environment variable holding the runner's pid; the cell exits when the runner is gone.
PARENT_ENV = "REID_PBN_STUDY_PARENT"
SPEC_FILE, CONFIG_FILE, RESULT_FILE = "cell.json", "config.yaml", "result.json"
_PR_SET_PDEATHSIG = 1


def run_cell(spec_path: str) -> dict:
    """Run the cell described by ``spec_path`` and write ``result.json`` beside it.

    Args:
        spec_path: the cell's ``cell.json`` (``rel_dir``, ``config_hash``, ``train``,
            ``threads``, ``keep_checkpoints``); ``config.yaml`` lies in the same folder.

    Returns:
        The result: ``targets`` (``{name: {mAP, Rank-1, mINP}}``), ``checksum``, ``train_s``,
        ``eval_s``, ``num_threads``, ``torch``, ``host``.

    Raises:
        RuntimeError: the config on disk does not match the hash the runner computed.
    """
    cell_dir = os.path.dirname(os.path.abspath(spec_path))
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    torch.set_num_threads(int(spec["threads"]))
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(cell_dir, CONFIG_FILE))
    cfg.freeze()
    if config_hash(cfg, spec["rel_dir"]) != spec["config_hash"]:
        raise RuntimeError(
            f"{CONFIG_FILE} in {cell_dir} no longer gives the config hash the runner computed: "
            "the config defaults (reid_pbn/config/defaults.py) changed after the runner started; "
            "run the study again")
    setup_logger(cell_dir)
    trainer = DefaultTrainer(cfg)
    eval_time = [0.0]
    evaluate = trainer.evaluate

    def timed_evaluate() -> dict:
        t = time.perf_counter()
        out = evaluate()
        eval_time[0] += time.perf_counter() - t
        return out

    # The trainer's evaluation hook calls this after the last epoch; timing it separates the
    # evaluation's share of the cell's cost from training's.
    trainer.eval_hook.eval_fn = timed_evaluate
    t0 = time.perf_counter()
    if spec["train"]:
        history = trainer.fit()
        results = list(history.values())[-1]
    else:
        results = timed_evaluate()
    total = time.perf_counter() - t0
    result = {
        "targets": {name: {m: float(r[m]) for m in METRICS} for name, r in results.items()},
        "checksum": weights_checksum(trainer.unwrapped),
        "train_s": round(total - eval_time[0], 2),
        "eval_s": round(eval_time[0], 2),
        "num_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "host": socket.gethostname(),
        "python": platform.python_version(),
    }
    if not spec.get("keep_checkpoints", False):
        _remove_checkpoints(cell_dir)
    payload = json.dumps(result, indent=1).encode("utf-8")
    atomic_write(os.path.join(cell_dir, RESULT_FILE), lambda f: f.write(payload))
    logger.info("Cell done: checksum %s, %.1f s training, %.1f s evaluation", result["checksum"],
                result["train_s"], result["eval_s"])
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point of a cell process.

    Args:
        argv: ``[cell.json path]`` (default: ``sys.argv[1:]``).

    Returns:
        0 on success; 1 on failure (the traceback goes to stderr, which the runner saves).
    """
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m reid_pbn.engine.study CELL_JSON", file=sys.stderr)
        return 2
    if os.environ.get(PARENT_ENV):
        _follow_parent(int(os.environ[PARENT_ENV]))
    run_cell(argv[0])
    return 0


def _remove_checkpoints(cell_dir: str) -> None:
    # The checksum is recorded and the cell can be rerun from its config; the files themselves
    # (weights plus optimizer state) would fill gigabytes over a study.
    for path in glob.glob(os.path.join(cell_dir, "model_*.pth")):
        os.remove(path)
    marker = os.path.join(cell_dir, LAST_CHECKPOINT_FILE)
    if os.path.exists(marker):
        os.remove(marker)


def _follow_parent(parent_pid: int) -> None:
    """Exit when the runner exits: a runner killed with SIGKILL cannot stop its cells, and a
    cell left running would race with the restarted runner that redoes it."""
    with contextlib.suppress(OSError, AttributeError):  # Linux: the kernel kills us with it
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:  # elsewhere: notice the re-parenting within a second
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="follow-parent", daemon=True).start()
