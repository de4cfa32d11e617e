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


def summary_table(history: dict[str, dict]) -> str:
    """One row per (stage, target) with the main metrics in percent.

    Args:
        history: ``{stage (e.g. "before training", "epoch 12"): {target: results}}``.
    """
    from reid_pbn.evaluation import format_results_table

    rows = {f"{stage}: {target}": r for stage, results in history.items()
            for target, r in results.items()}
    return format_results_table(rows, label="model: target")


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
    history = trainer.fit(resume=args.resume, overwrite=args.overwrite)
    if history:
        logger.info("Target-domain results (percent):\n%s", summary_table(history))


if __name__ == "__main__":
    parser = default_argument_parser(__doc__)
    sys.exit(launch(main, parser.parse_args()))
