"""Run a domain-generalization study: does method X beat the baseline on shift Y, by how much,
and with what confidence.

A study config (configs/Study/*.yml) names a base training config, the seeds, and groups of
sources -> targets with the methods to train (BN, PBN, IBN-a, IBN-a+PBN, StochNorm, BNE,
BNE+PBN, and the reference "untrained"). Every (group, method, seed) cell is trained in its own
process into OUTPUT_DIR/cells/<group>/<method>/seed<k>/ and evaluated on every target; one JSON
line per finished cell goes to OUTPUT_DIR/cells.jsonl. Then OUTPUT_DIR/results.md, results.csv
and plots/*.png give mean +- std over seeds and the paired difference to the baseline with a
95 % bootstrap interval and a Wilcoxon signed-rank p-value.

Interrupted? Run the same command again: recorded cells are skipped and the interrupted one is
redone from scratch.

Examples:
    python tools/dg_study.py --config-file configs/Study/default.yml --jobs 2
    python tools/dg_study.py --config-file configs/Study/default.yml --dry-run
    python tools/dg_study.py --config-file configs/Study/default.yml --only 'single/*/seed0'
    python tools/dg_study.py --config-file configs/Study/default.yml --render-only \\
        OUTPUT_DIR docs/results
    python tools/dg_study.py --config-file configs/Study/default.yml \\
        --verify-cell single/PBN/seed3 OUTPUT_DIR docs/results
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from reid_pbn.engine import default_argument_parser, tool_main
from reid_pbn.engine.defaults import setup_logger
from reid_pbn.engine.study import (
    CELLS_FILE,
    METHODS,
    CellStore,
    RunOptions,
    StudyError,
    load_study,
    render_study,
    run_study,
    verify_cell,
)
from reid_pbn.engine.study.runner import plan_cells

logger = logging.getLogger("reid_pbn")


def build_parser() -> argparse.ArgumentParser:
    """The shared parser of reid_pbn tools plus the study's flags (also used by ``--help``).

    The training flags (--eval-only, --resume, --num-gpus, ...) belong to single training runs
    (cells are one process each and resuming is automatic), so they are hidden and refused.
    """
    parser = default_argument_parser(__doc__, training=False)
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="Cells run in parallel, each in its own process (default 1).")
    parser.add_argument("--threads", type=int, default=0, metavar="T",
                        help="Torch threads per cell (default: max(1, cores // jobs)). The "
                        "thread count is recorded: a rerun with another count may change the "
                        "weights' last bits.")
    parser.add_argument("--only", action="append", default=[], metavar="PATTERN",
                        help="Run only the cells whose name group/method/seed<k> matches this "
                        "shell pattern, e.g. 'single/*/seed0' (repeat the flag for several).")
    parser.add_argument("--render-only", action="store_true",
                        help="Train nothing: render results.md, results.csv and the plots from "
                        "cells.jsonl.")
    parser.add_argument("--dry-run", action="store_true",
                        help="Validate the study config and list the cells to run; train "
                        "nothing.")
    parser.add_argument("--redo-changed", action="store_true",
                        help="Rerun cells recorded with another config (their old lines are "
                        "dropped) instead of stopping with an error.")
    parser.add_argument("--verify-cell", metavar="GROUP/METHOD/seedK", default=None,
                        help="Train one recorded cell again from its config and seed (with the "
                        "recorded thread count) and compare the weights checksum; exit 1 when "
                        "it differs.")
    parser.epilog = "\n".join([
        "Trailing KEY VALUE pairs override training-config keys in every cell, e.g.",
        "  SOLVER.MAX_EPOCH 4 DATASETS.ROOT /data OUTPUT_DIR logs/study/short",
        "(OUTPUT_DIR moves the study folder; keys the methods or the study set are refused).",
        "See reid_pbn/config/defaults.py for every key.",
        "",
        "Methods a study may name:",
        *(f"  {m.name:<12} {m.description}" for m in METHODS.values()),
        "The backbone comes from the base config; a study may choose another in its",
        "overrides, e.g. {MODEL.BACKBONE.NAME: osnet_x0_25} (the mixing methods then mix",
        "after OSNet's conv2 and conv3).",
    ])
    return parser


def _check_flags(args: argparse.Namespace) -> None:
    if not args.config_file:
        raise StudyError("--config-file STUDY.yml is required (see configs/Study/)")
    if sum(map(bool, (args.render_only, args.dry_run, args.verify_cell))) > 1:
        raise StudyError("--render-only, --dry-run and --verify-cell exclude each other")


def _dry_run(study) -> None:
    records = CellStore(os.path.join(study.output_dir, CELLS_FILE)).load(repair=False)
    todo, done, _ = plan_cells(study, records, redo_changed=True)
    todo_names = {c.name for c in todo}
    for cell in study.cells:
        print(f"{'to run ' if cell.name in todo_names else 'recorded'}  {cell.name}  "
              f"config {cell.config_hash[:12]}")
    print(f"{len(study.cells)} cells: {len(done)} recorded, {len(todo)} to run, "
          f"in {study.output_dir}")


def run(args: argparse.Namespace) -> int:
    """Run, render, list or verify the study's cells.

    Args:
        args: parsed arguments of :func:`build_parser`.

    Returns:
        The exit code (1 when a verified cell differs, 130 when interrupted).
    """
    _check_flags(args)
    study = load_study(args.config_file, args.opts)
    if args.dry_run:
        _dry_run(study)
        return 0
    setup_logger(study.output_dir)
    try:
        if args.render_only:
            records = CellStore(os.path.join(study.output_dir, CELLS_FILE)).load(repair=False)
            files = render_study(study, records)
            print(f"Rendered {files['markdown']}")
            return 0
        if args.verify_cell:
            res = verify_cell(study, args.verify_cell, args.threads)
            verdict = "identical" if res.identical else "DIFFERENT"
            print(f"{res.name}: recorded checksum {res.recorded}, rerun {res.rerun} "
                  f"({res.threads} threads): {verdict}")
            return 0 if res.identical else 1
        summary = run_study(study, RunOptions(jobs=args.jobs, threads=args.threads,
                                              only=tuple(args.only),
                                              redo_changed=args.redo_changed))
    except KeyboardInterrupt:
        print("dg_study: interrupted; finished cells are in cells.jsonl, run the same command "
              "to resume", file=sys.stderr)
        return 130
    print(f"{summary.ran} cell(s) run, {summary.skipped} already recorded; results in "
          f"{summary.files['markdown']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the tool on ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    return tool_main(build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
