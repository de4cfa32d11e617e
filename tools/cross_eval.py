"""Evaluate one model on several target data sets (cross-domain re-ID).

For every target it extracts query and gallery features, computes exact mAP, mINP and
Rank-1/5/10 (Market-1501 protocol, query-chunked, no full distance-matrix sort), prints a table,
and writes results.json, results.csv and a CMC-curve PNG per target into the output folder.

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
import os
import sys

logger = logging.getLogger("reid_pbn")


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (also used by ``--help``)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Trailing KEY VALUE pairs override config keys (e.g. TEST.MAX_RANK 20 "
        "TEST.CHUNK_SIZE 256 DATASETS.ROOT /data); see reid_pbn/config/defaults.py.",
    )
    parser.add_argument("--config-file", required=True, metavar="FILE",
                        help="YAML config describing the model (and data set options).")
    parser.add_argument("--weights", required=True, metavar="CKPT",
                        help="Checkpoint or state_dict file of the trained model.")
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
                        help="Folder for results.json, results.csv and the PNGs "
                        "(default: OUTPUT_DIR/cross_eval).")
    parser.add_argument("--device", default=None,
                        help="'auto', 'cpu' or 'cuda[:N]' (default: MODEL.DEVICE).")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="Config overrides as full-key/value pairs.")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from reid_pbn.config import ConfigError
    from reid_pbn.engine.defaults import setup_cfg, setup_logger
    from reid_pbn.engine.inference import build_inference_model
    from reid_pbn.evaluation import inference_on_datasets

    opts = list(args.opts)
    for flag, key in ((args.rerank, "TEST.RERANK.ENABLED"), (args.aqe, "TEST.AQE.ENABLED"),
                      (args.roc, "TEST.ROC.ENABLED")):
        if flag:
            opts += [key, "True"]
    try:
        cfg = setup_cfg(args.config_file, opts)
    except ConfigError as e:
        sys.exit(f"Config error: {e}")
    output = args.output or os.path.join(cfg.OUTPUT_DIR, "cross_eval")
    setup_logger(output)
    targets = args.targets or list(cfg.DATASETS.TESTS)
    if not targets:
        sys.exit("No target data set: pass --targets NAME [NAME ...] or set DATASETS.TESTS")
    if not os.path.isfile(args.weights):
        sys.exit(f"Weights file not found: {args.weights}")
    model = build_inference_model(cfg, args.weights, args.device)
    inference_on_datasets(cfg, model, targets, output_dir=output)
    print(f"Results written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
