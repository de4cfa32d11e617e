"""Train a re-ID model and evaluate it on target data sets (cross-domain).

Examples:
    python tools/train_net.py --config-file configs/Demo/synthetic_cross_domain.yml
    python tools/train_net.py --config-file configs/CrossDomain/market2duke_pbn_R50-ibn.yml \\
        MODEL.BACKBONE.PRETRAIN_PATH weights/resnet50_ibn_a.pth OUTPUT_DIR logs/m2d_pbn
    python tools/train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model_final.pth
    python tools/train_net.py --config-file CONFIG --resume      # continue an interrupted run
    python tools/train_net.py --config-file CONFIG --num-gpus 4  # DDP under torchrun
"""

from __future__ import annotations

import logging
import sys

from reid_pbn.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from reid_pbn.engine.inference import build_inference_model

logger = logging.getLogger("reid_pbn")

_COLUMNS = ("mAP", "Rank-1", "Rank-5", "Rank-10", "mINP")


def summary_table(history: dict[str, dict]) -> str:
    """Rows of (stage, target) with the main metrics in percent."""
    header = f"| {'model':<18} | {'target':<14} | " + " | ".join(f"{c:>7}" for c in _COLUMNS)
    lines = [header, "|" + "-" * (len(header) - 2) + "|"]
    for stage, results in history.items():
        for target, r in results.items():
            vals = " | ".join(f"{100 * r[c]:7.2f}" for c in _COLUMNS)
            lines.append(f"| {stage:<18} | {target:<14} | {vals}")
    return "\n".join(lines)


def main(args) -> None:
    cfg = default_setup(args)
    if args.eval_only:
        from reid_pbn.evaluation import inference_on_datasets

        if args.resume:
            from reid_pbn.engine import Checkpointer

            last = Checkpointer(None, cfg.OUTPUT_DIR).last_checkpoint()
            weights = last or cfg.MODEL.WEIGHTS
        else:
            weights = cfg.MODEL.WEIGHTS
        model = build_inference_model(cfg, weights)
        results = inference_on_datasets(cfg, model, list(cfg.DATASETS.TESTS),
                                         output_dir=cfg.OUTPUT_DIR)
        logger.info("Results:\n%s", summary_table({"evaluated": results}))
        return
    trainer = DefaultTrainer(cfg)
    history = trainer.fit(resume=args.resume)
    if history:
        logger.info("Target-domain results (percent):\n%s", summary_table(history))


if __name__ == "__main__":
    parser = default_argument_parser(__doc__)
    sys.exit(launch(main, parser.parse_args()))
