"""Evaluate one model on several target data sets (cross-domain re-ID).

For every target it extracts query and gallery features, computes exact mAP, mINP and
Rank-1/5/10 (Market-1501 protocol, query-chunked, no full distance-matrix sort), prints a table,
and writes results.json, results.csv and a CMC-curve PNG per target into the output folder
(default OUTPUT_DIR/eval/, where training writes its evaluations). The result files name the
checkpoint evaluated (path and SHA-256) and the re-ranking and query-expansion settings.

Examples:
    python tools/cross_eval.py --config-file configs/CrossDomain/market2duke_pbn_R50.yml \\
        --weights logs/m2d_pbn/model_final.pth --targets DukeMTMC Market1501
    python tools/cross_eval.py --config-file configs/Demo/synthetic_cross_domain.yml \\
        --weights logs/demo/synthetic_A_to_B/model_final.pth --targets SyntheticB SyntheticC \\
        --rerank --roc --output logs/demo/cross_eval TEST.METRIC euclidean
"""

from __future__ import annotations

import argparse
import logging
import sys

from reid_pbn.engine import (
    EVAL_DIR,
    ToolError,
    add_weights_arguments,
    build_inference_model,
    default_argument_parser,
    default_setup,
    evaluation_provenance,
    inference_on_datasets,
    output_dir_of,
    tool_main,
)
from reid_pbn.engine.trainer import check_evaluation_setup
from reid_pbn.evaluation import save_results

logger = logging.getLogger("reid_pbn")


def build_parser() -> argparse.ArgumentParser:
    """The shared parser of reid_pbn tools plus this tool's flags (also used by ``--help``)."""
    parser = default_argument_parser(__doc__, training=False, config_required=True)
    add_weights_arguments(parser, required=True)
    parser.add_argument("--targets", nargs="+", metavar="NAME", default=None,
                        help="Registry names of the target data sets (default: DATASETS.TESTS "
                        "of the config), e.g. Market1501 DukeMTMC MSMT17 SyntheticB.")
    parser.add_argument("--rerank", action="store_true",
                        help="Apply k-reciprocal re-ranking (TEST.RERANK.K1/K2/LAMBDA).")
    parser.add_argument("--aqe", action="store_true",
                        help="Apply average query expansion (TEST.AQE.*).")
    parser.add_argument("--roc", action="store_true",
                        help="Also report TPR at FPR 1e-4/1e-3/1e-2 and write roc_<name>.png.")
    parser.add_argument("--output", metavar="DIR", default=None,
                        help="Folder for results.json, results.csv, the PNGs and the log "
                        f"(default: OUTPUT_DIR/{EVAL_DIR}, where training writes its results).")
    parser.add_argument("--device", default=None,
                        help="'auto', 'cpu' or 'cuda[:N]' (default: MODEL.DEVICE).")
    return parser


def run(args: argparse.Namespace) -> None:
    """Evaluate the model on every target and write the result files.

    Args:
        args: parsed arguments of :func:`build_parser`.
    """
    flags = []
    for flag, key in ((args.rerank, "TEST.RERANK.ENABLED"), (args.aqe, "TEST.AQE.ENABLED"),
                      (args.roc, "TEST.ROC.ENABLED")):
        if flag:
            flags += [key, "True"]
    if args.targets:
        # As DATASETS.TESTS, so that the saved config.yaml names them too.
        flags += ["DATASETS.TESTS", repr(tuple(args.targets))]
    cfg = default_setup(args, extra_opts=flags, output_dir=args.output, subdir=EVAL_DIR)
    output = output_dir_of(cfg, args.output, EVAL_DIR)
    targets = list(cfg.DATASETS.TESTS)
    if not targets:
        raise ToolError("No target data set: pass --targets NAME [NAME ...] or set "
                        "DATASETS.TESTS")
    # A missing data set or a bad TEST.* option is reported before the model is built.
    check_evaluation_setup(cfg)
    model = build_inference_model(cfg, args.weights, args.device)
    results = inference_on_datasets(cfg, model, targets)
    save_results(results, output, provenance=evaluation_provenance(cfg, args.weights))
    print(f"Results written to {output}")


def main(argv: list[str] | None = None) -> int:
    """Run the tool on ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    return tool_main(build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
