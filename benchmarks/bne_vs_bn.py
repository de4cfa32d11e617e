"""BNE vs plain BN on the synthetic multi-domain benchmark, in one run.

Trains two models on the same two synthetic source domains (SyntheticA + SyntheticB) with the
same schedule and seed: one with Batch Normalization Embeddings (configs/MultiSource/
synthetic_bne.yml: DSBN + BNE) and one with plain BN (synthetic_bn.yml). Both are evaluated
on the unseen SyntheticC and printed side by side.

Usage:
    python benchmarks/bne_vs_bn.py [--epochs N] [--output-dir DIR] [KEY VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import time

from reid_pbn.engine import DefaultTrainer, setup_cfg
from reid_pbn.engine.defaults import setup_logger

CONFIGS = {
    "BN (shared statistics)": "configs/MultiSource/synthetic_bn.yml",
    "BNE (DSBN + embeddings)": "configs/MultiSource/synthetic_bne.yml",
}
COLUMNS = ("mAP", "Rank-1", "Rank-5", "mINP")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=0, help="override SOLVER.MAX_EPOCH")
    parser.add_argument("--output-dir", default="logs/bench/bne_vs_bn",
                        help="where both runs write their outputs and summary.json")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for both")
    args = parser.parse_args()
    setup_logger(args.output_dir)
    rows, seconds = {}, {}
    for name, path in CONFIGS.items():
        opts = list(args.opts) + ["OUTPUT_DIR", os.path.join(args.output_dir,
                                                          os.path.basename(path)[:-4])]
        if args.epochs:
            opts += ["SOLVER.MAX_EPOCH", str(args.epochs)]
        cfg = setup_cfg(path, opts)
        t0 = time.perf_counter()
        history = DefaultTrainer(cfg).fit()
        final = list(history.values())[-1]
        rows[name] = {t: {c: float(v) for c, v in r.items()
                          if c in COLUMNS or c.startswith("domain_weight:")}
                      for t, r in final.items()}
        seconds[name] = time.perf_counter() - t0
    lines = [f"| {'model':<24} | {'target':<10} | " + " | ".join(f"{c:>6}" for c in COLUMNS)
             + " | seconds |"]
    notes = []
    for name, res in rows.items():
        for target, r in res.items():
            vals = " | ".join(f"{100 * r[c]:6.2f}" for c in COLUMNS)
            lines.append(f"| {name:<24} | {target:<10} | {vals} | {seconds[name]:7.0f} |")
            weights = [f"{k.split(':', 1)[1]} {v:.3f}" for k, v in r.items()
                       if k.startswith("domain_weight:")]
            if weights:
                notes.append(f"{name} on {target}: average domain weights {', '.join(weights)}")
    print("\n".join(lines + notes))
    summary = {name: {"targets": res, "train_eval_seconds": seconds[name]}
               for name, res in rows.items()}
    with open(os.path.join(args.output_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
