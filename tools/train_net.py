"""Train a re-ID model and evaluate it on target data sets (cross-domain).

Evaluation results (after training epochs, and with --eval-only) go to OUTPUT_DIR/eval/:
results.json and results.csv name the checkpoint evaluated (path, SHA-256) and the re-ranking
and query-expansion settings.

Examples:
    python tools/train_net.py --config-file configs/Demo/synthetic_cross_domain.yml
    python tools/train_net.py --config-file configs/CrossDomain/market2duke_pbn_R50-ibn.yml \\
        MODEL.BACKBONE.PRETRAIN_PATH weights/resnet50_ibn_a.pth OUTPUT_DIR logs/m2d_pbn
    python tools/train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model_final.pth
    python tools/train_net.py --config-file CONFIG --eval-only --random-init   # a baseline
    python tools/train_net.py --config-file CONFIG --resume      # continue an interrupted run
    python tools/train_net.py --config-file CONFIG --num-gpus 4  # DDP under torchrun
"""

from __future__ import annotations

import argparse
import logging
import sys

from reid_pbn.engine import (
    EVAL_DIR,
    Checkpointer,
    DefaultTrainer,
    ToolError,
    build_inference_model,
    default_argument_parser,
    default_setup,
    evaluation_provenance,
    inference_on_datasets,
    output_dir_of,
    tool_main,
)
from reid_pbn.engine.trainer import check_evaluation_setup
from reid_pbn.evaluation import format_results_table, save_results

logger = logging.getLogger("reid_pbn")


def build_parser() -> argparse.ArgumentParser:
    """The shared parser with the training flags, plus ``--random-init`` and
    ``--allow-partial`` (also used by ``--help``)."""
    parser = default_argument_parser(__doc__)
    parser.add_argument(
        "--random-init", action="store_true",
        help="With --eval-only and no weights: evaluate the untrained model (random, or "
        "ImageNet-pretrained with MODEL.BACKBONE.PRETRAIN) as a baseline. Without it "
        "--eval-only needs MODEL.WEIGHTS or --resume.",
    )
    parser.add_argument(
        "--allow-partial", action="store_true",
        help="Load MODEL.WEIGHTS even when its keys do not all match the model (same as "
        "MODEL.WEIGHTS_PARTIAL_OK True); without it such a file is refused, naming the "
        "mismatch.",
    )
    return parser


def summary_table(history: dict[str, dict]) -> str:
    """One row per (stage, target) with the main metrics in percent.

    Args:
        history: ``{stage (e.g. "before training", "epoch 12"): {target: results}}``.

    Returns:
        The table as text.
    """
    rows = {f"{stage}: {target}": r for stage, results in history.items()
            for target, r in results.items()}
    return format_results_table(rows, label="model: target")


def evaluate_only(cfg, resume: bool, random_init: bool) -> None:
    """Evaluate MODEL.WEIGHTS (or the last checkpoint with ``resume``) on DATASETS.TESTS.

    Args:
        cfg: the run's config.
        resume: evaluate the last checkpoint of OUTPUT_DIR when there is one.
        random_init: no weights is a deliberate baseline rather than a mistake.

    Raises:
        ToolError: no weights to evaluate and no ``random_init``.
    """
    weights = cfg.MODEL.WEIGHTS
    if resume:
        weights = Checkpointer(None, cfg.OUTPUT_DIR).last_checkpoint() or weights
    if not weights and not random_init:
        raise ToolError("--eval-only needs weights: set MODEL.WEIGHTS (or --resume with "
                        "checkpoints in OUTPUT_DIR); pass --random-init to evaluate an "
                        "untrained model as a baseline")
    check_evaluation_setup(cfg)
    model = build_inference_model(cfg, weights)
    results = inference_on_datasets(cfg, model, list(cfg.DATASETS.TESTS))
    if results:
        save_results(results, output_dir_of(cfg, subdir=EVAL_DIR),
                     provenance=evaluation_provenance(cfg, weights))
        logger.info("Results:\n%s", summary_table({"evaluated": results}))


def run(args: argparse.Namespace) -> None:
    """Train, or evaluate with ``--eval-only``.

    Args:
        args: parsed arguments of :func:`build_parser`.
    """
    if args.random_init and not args.eval_only:
        raise ToolError("--random-init only applies with --eval-only")
    new_run = not (args.eval_only or args.resume)
    cfg = default_setup(args, new_training_run=new_run,
                        subdir=EVAL_DIR if args.eval_only else "")
    if args.eval_only:
        evaluate_only(cfg, args.resume, args.random_init)
        return
    trainer = DefaultTrainer(cfg)
    history = trainer.fit(resume=args.resume, overwrite=args.overwrite)
    if history:
        logger.info("Target-domain results (percent):\n%s", summary_table(history))


def main(argv: list[str] | None = None) -> int:
    """Run the tool on ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    return tool_main(build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
