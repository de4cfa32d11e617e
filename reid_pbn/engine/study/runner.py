"""Running a study: every cell in its own process, N at a time, resumable, with a progress bar.

The runner is the only writer of ``cells.jsonl``: a cell process writes ``result.json`` into its
folder, and the runner appends the cell's line once the process has exited cleanly. Killed at
any point, a restarted runner skips the recorded cells (same group, method, seed and config
hash), deletes the folder of any cell without a record (a partial run) and runs it again.
"""

from __future__ import annotations

import fcntl
import fnmatch
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ...data import build_test_loader, build_train_loader
from .cell import CONFIG_FILE, PARENT_ENV, RESULT_FILE, SPEC_FILE
from .config import CellSpec, Study, StudyError
from .report import render_study
from .store import CellStore, record_key

__all__ = [
    "CELLS_FILE",
    "RunOptions",
    "RunSummary",
    "VerifyResult",
    "available_cores",
    "plan_cells",
    "prepare_data",
    "run_study",
    "study_lock",
    "verify_cell",
]

logger = logging.getLogger("reid_pbn")

CELLS_FILE = "cells.jsonl"
_LOCK_FILE = ".study.lock"
_POLL_S = 0.2


@dataclass(frozen=True)
class RunOptions:
    """How to run a study.

    Attributes:
        jobs: cells run in parallel.
        threads: torch threads per cell; 0 means ``max(1, cores // jobs)``.
        only: ``fnmatch`` patterns over cell names (``group/method/seed<k>``); empty runs all.
        redo_changed: rerun cells recorded with another config instead of refusing.
        progress: show the progress bar.
    """

    jobs: int = 1
    threads: int = 0
    only: tuple[str, ...] = ()
    redo_changed: bool = False
    progress: bool = True


@dataclass(frozen=True)
class RunSummary:
    """What a run did.

    Attributes:
        ran: cells trained and recorded now.
        skipped: cells already recorded.
        total: cells in the study.
        files: the rendered files (see :func:`~reid_pbn.engine.study.report.render_study`).
    """

    ran: int
    skipped: int
    total: int
    files: dict


@dataclass(frozen=True)
class VerifyResult:
    """A recorded cell run again.

    Attributes:
        name: the cell's name.
        recorded: the recorded checksum.
        rerun: the checksum of the rerun.
        threads: torch threads of the rerun.
        folder: where the rerun lies.
    """

    name: str
    recorded: str
    rerun: str
    threads: int
    folder: str

    @property
    def identical(self) -> bool:
        """The rerun reproduced the recorded weights."""
        return self.recorded == self.rerun


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@contextmanager
def study_lock(study_dir: str) -> Iterator[None]:
    """Hold the study folder for one runner; a second one gets a clear error.

    Args:
        study_dir: the study folder (created).

    Raises:
        StudyError: another runner holds the folder.
    """
    os.makedirs(study_dir, exist_ok=True)
    fd = os.open(os.path.join(study_dir, _LOCK_FILE), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise StudyError(f"Another dg_study run is using {study_dir}; wait for it or pick "
                             "another OUTPUT_DIR") from e
        yield
    finally:
        os.close(fd)  # closing releases the lock; so does the kernel if the process dies


def plan_cells(
    study: Study, records: Sequence[dict], only: Sequence[str] = (), redo_changed: bool = False
) -> tuple[list[CellSpec], list[CellSpec], list[dict]]:
    """Split the study's cells into those to run and those already recorded.

    Args:
        study: the study.
        records: the records of ``cells.jsonl``.
        only: ``fnmatch`` patterns over cell names; empty selects every cell.
        redo_changed: treat cells recorded with another config as to run (their records are
            returned as stale) instead of refusing.

    Returns:
        ``(todo, done, stale)``: cells to run, cells recorded with the current config, and the
        records of selected cells made with another config.

    Raises:
        StudyError: a pattern selects no cell, or a cell was recorded with another config and
            ``redo_changed`` is False.
    """
    selected = list(study.cells)
    if only:
        for pattern in only:
            if not any(fnmatch.fnmatchcase(c.name, pattern) for c in study.cells):
                raise StudyError(f"--only {pattern} matches no cell; cells are named like "
                                 f"'{study.cells[0].name}'")
        selected = [c for c in selected if any(fnmatch.fnmatchcase(c.name, p) for p in only)]
    by_key = {record_key(r): r for r in records}
    todo, done, stale = [], [], []
    for cell in selected:
        r = by_key.get(cell.key)
        if r is None:
            todo.append(cell)
        elif r.get("config_hash") == cell.config_hash:
            done.append(cell)
        else:
            stale.append(r)
            todo.append(cell)
    if stale and not redo_changed:
        names = ", ".join(f"{g}/{m}/seed{s}" for g, m, s in map(record_key, stale[:3]))
        raise StudyError(f"{len(stale)} cell(s) in {CELLS_FILE} were made with another config "
                         f"({names}{', ...' if len(stale) > 3 else ''}); use a new OUTPUT_DIR, "
                         "or --redo-changed to run them again")
    return todo, done, stale


def prepare_data(cells: Sequence[CellSpec]) -> None:
    """Build every source and target data set once, before any training.

    This writes the synthetic domains that are missing (so parallel cells do not all generate
    them) and turns a missing data set or an invalid name into an error now rather than after
    hours of training.

    Args:
        cells: the cells to run (one per group is enough; data options are per group).

    Raises:
        StudyError: a data set cannot be built.
    """
    seen = set()
    for cell in cells:
        if cell.group.name in seen:
            continue
        seen.add(cell.group.name)
        name = ", ".join(cell.group.sources)
        try:
            build_train_loader(cell.cfg)
            for name in cell.group.targets:
                build_test_loader(cell.cfg, name)
        except (ValueError, OSError, RuntimeError) as e:
            msg = " ".join(str(e).split())
            raise StudyError(f"group '{cell.group.name}', data set {name}: {msg}") from e


def run_study(study: Study, options: RunOptions | None = None) -> RunSummary:
    """Run every cell not yet recorded, then render the results.

    Args:
        study: the study.
        options: jobs, threads, selection (default: one job, every cell).

    Returns:
        What was run and the rendered files.

    Raises:
        StudyError: invalid options, another runner on the folder, changed cells, a data set
            that cannot be built, or a cell that failed (finished cells stay recorded).
    """
    options = options or RunOptions()
    if options.jobs < 1:
        raise StudyError(f"--jobs must be >= 1, got {options.jobs}")
    cores = available_cores()
    threads = options.threads or max(1, cores // options.jobs)
    if options.jobs * threads > cores:
        logger.warning("%d jobs x %d threads exceed the %d cores this process may use",
                       options.jobs, threads, cores)
    store = CellStore(os.path.join(study.output_dir, CELLS_FILE))
    with study_lock(study.output_dir):
        records = store.load()
        todo, done, stale = plan_cells(study, records, options.only, options.redo_changed)
        if stale:
            stale_keys = {record_key(r) for r in stale}
            records = [r for r in records if record_key(r) not in stale_keys]
            store.rewrite(records)
        logger.info("Study %s: %d cells, %d recorded, %d to run (%d jobs x %d threads) in %s",
                    study.name, len(study.cells), len(done), len(todo), options.jobs, threads,
                    study.output_dir)
        if todo:
            prepare_data(todo)
            _execute(study, todo, store, options.jobs, threads, options.progress)
        records = _canonical(study, store.load())
        store.rewrite(records)
        files = render_study(study, records)
    return RunSummary(len(todo), len(done), len(study.cells), files)


def verify_cell(study: Study, name: str, threads: int = 0) -> VerifyResult:
    """Train a recorded cell again, from its config and seed, and compare the checksums.

    Args:
        study: the study.
        name: the cell, ``group/method/seed<k>``.
        threads: torch threads; 0 uses the recorded cell's (thread counts may change the
            floating-point summation order, hence the weights).

    Returns:
        The recorded and new checksums; the rerun lies in ``<study>/verify/<cell folder>``.

    Raises:
        StudyError: unknown cell, no record, a record made with another config, or a failed
            rerun.
    """
    cell = study.cell(name)
    records = CellStore(os.path.join(study.output_dir, CELLS_FILE)).load(repair=False)
    record = next((r for r in records if record_key(r) == cell.key), None)
    if record is None:
        raise StudyError(f"{name} has no record in {study.output_dir}/{CELLS_FILE}; run it first")
    if record.get("config_hash") != cell.config_hash:
        raise StudyError(f"{name} was recorded with another config (hash "
                         f"{str(record.get('config_hash'))[:12]}, now {cell.config_hash[:12]}); "
                         "the recorded cell cannot be reproduced from this study config")
    threads = threads or int(record.get("num_threads") or 1)
    folder = os.path.join(study.output_dir, "verify", cell.rel_dir)
    proc = _launch(cell, folder, threads, keep_checkpoints=False)
    if proc.wait() != 0:
        raise StudyError(_failure(cell, folder, proc.returncode))
    result = _read_result(folder)
    return VerifyResult(name, str(record["checksum"]), result["checksum"], threads, folder)


def _execute(study: Study, todo: Sequence[CellSpec], store: CellStore, jobs: int, threads: int,
             progress: bool) -> None:
    queue = deque(todo)
    running: dict[subprocess.Popen, tuple[CellSpec, str, float]] = {}
    failure = None
    bar = tqdm(total=len(todo), unit="cell", desc=f"study {study.name}", dynamic_ncols=True,
               disable=not progress, smoothing=0.1)
    try:
        with logging_redirect_tqdm(loggers=[logger]):
            while queue or running:
                while queue and len(running) < jobs and failure is None:
                    cell = queue.popleft()
                    folder = os.path.join(study.output_dir, cell.rel_dir)
                    proc = _launch(cell, folder, threads, study.keep_checkpoints)
                    running[proc] = (cell, folder, time.perf_counter())
                    names = ", ".join(c.name for c, _, _ in running.values())
                    bar.set_postfix_str(f"running {names}")
                time.sleep(_POLL_S)
                for proc in [p for p in running if p.poll() is not None]:
                    cell, folder, t0 = running.pop(proc)
                    if proc.returncode != 0:
                        failure = failure or _failure(cell, folder, proc.returncode)
                        logger.error("%s", _failure(cell, folder, proc.returncode))
                        continue
                    wall = time.perf_counter() - t0
                    store.append(_record(cell, _read_result(folder), wall))
                    logger.info("%s done in %.0f s", cell.name, wall)
                    bar.update(1)
                if failure is not None and not running:
                    break
    finally:
        for proc in running:  # interrupted (Ctrl-C, an error): stop the cells we started
            proc.kill()
            proc.wait()
        bar.close()
    if failure is not None:
        raise StudyError(failure)


def _launch(cell: CellSpec, folder: str, threads: int, keep_checkpoints: bool
            ) -> subprocess.Popen:
    """Start one cell in a fresh folder (a partial folder of an interrupted run is removed)."""
    if os.path.exists(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    cfg = cell.cfg.clone()
    cfg.defrost()
    cfg.OUTPUT_DIR = folder
    with open(os.path.join(folder, CONFIG_FILE), "w", encoding="utf-8") as f:
        f.write(cfg.dump())
    spec = {"name": cell.name, "rel_dir": cell.rel_dir, "config_hash": cell.config_hash,
            "train": cell.method.definition.train, "threads": threads,
            "keep_checkpoints": keep_checkpoints}
    spec_path = os.path.join(folder, SPEC_FILE)
    with open(spec_path, "w", encoding="utf-8") as f:
        json.dump(spec, f, indent=1)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TQDM_DISABLE": "1",  # the per-epoch bars would only fill the cell's stderr file
        PARENT_ENV: str(os.getpid()),
        "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH"))
                                      if p),
    }
    with open(os.path.join(folder, "stderr.txt"), "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "reid_pbn.engine.study", spec_path],
            stdout=subprocess.DEVNULL, stderr=err, env=env)


def _read_result(folder: str) -> dict:
    with open(os.path.join(folder, RESULT_FILE), encoding="utf-8") as f:
        return json.load(f)


def _failure(cell: CellSpec, folder: str, returncode: int) -> str:
    last = ""
    try:
        with open(os.path.join(folder, "stderr.txt"), encoding="utf-8", errors="replace") as f:
            lines = [x.strip() for x in f if x.strip()]
        last = lines[-1] if lines else ""
    except OSError:
        pass
    return (f"cell {cell.name} failed (exit code {returncode}){': ' + last if last else ''}; "
            f"see {folder}/stderr.txt and log.txt. Finished cells are recorded: fix the cause "
            "and run the same command to resume")


def _jsonable(value):
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _record(cell: CellSpec, result: dict, wall: float) -> dict:
    return {
        "group": cell.group.name,
        "method": cell.method.label,
        "seed": cell.seed,
        "method_name": cell.method.definition.name,
        "sources": list(cell.group.sources),
        "overrides": {k: _jsonable(v) for k, v in cell.method.overrides.items()},
        "config_hash": cell.config_hash,
        "targets": result["targets"],
        "checksum": result["checksum"],
        "wall_time_s": round(wall, 1),
        "train_s": result.get("train_s"),
        "eval_s": result.get("eval_s"),
        "num_threads": result.get("num_threads"),
        "torch": result.get("torch"),
        "host": result.get("host"),
        "python": result.get("python"),
    }


def _canonical(study: Study, records: Sequence[dict]) -> list[dict]:
    """Records in the study's run order (others, e.g. of removed methods, after them), one per
    cell: the same file whatever order parallel cells finished in."""
    order = {c.key: i for i, c in enumerate(study.cells)}
    seen, known, other = set(), [], []
    for r in records:
        k = record_key(r)
        if k in seen:
            continue
        seen.add(k)
        (known if k in order else other).append(r)
    return sorted(known, key=lambda r: order[record_key(r)]) + other
