"""Command-line parsing, config setup and logging shared by every tool."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import torch

from ..config import CfgNode, ConfigError, get_cfg
from ..utils import comm
from .checkpoint import Checkpointer

logger = logging.getLogger("reid_pbn")

_LOG_FORMAT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"


def default_argument_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``tools/train_net.py`` (other tools add their own flags to it).

    Args:
        description: text shown at the top of ``--help``.

    Returns:
        An ``argparse.ArgumentParser``.
    """
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "Trailing KEY VALUE pairs override config keys, e.g.\n"
            "  SOLVER.MAX_EPOCH 10 MODEL.BACKBONE.NORM PBN OUTPUT_DIR logs/run1\n"
            "See reid_pbn/config/defaults.py for every key and what it means."
        ),
    )
    parser.add_argument(
        "--config-file", default="", metavar="FILE",
        help="YAML config (may inherit from others with _BASE_); defaults.py when omitted.",
    )
    parser.add_argument(
        "--eval-only", action="store_true",
        help="Skip training: load MODEL.WEIGHTS (or the last checkpoint with --resume) and "
        "evaluate on DATASETS.TESTS.",
    )
    parser.add_argument(
        "--resume", action="store_true",
        help="Continue from the last complete checkpoint in OUTPUT_DIR (model, optimizer, "
        "scheduler, epoch and RNG states); starts fresh when there is none.",
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="Start a new training run in an OUTPUT_DIR that holds an earlier run's "
        "checkpoints, deleting them (without it such a run is refused).",
    )
    parser.add_argument(
        "--num-gpus", type=int, default=1,
        help="Processes per machine. Above 1 the job is relaunched under torchrun with DDP "
        "(NCCL on GPUs, gloo on CPU).",
    )
    parser.add_argument(
        "--num-machines", type=int, default=1, help="Total number of machines (multi-node DDP)."
    )
    parser.add_argument(
        "--machine-rank", type=int, default=0, help="Rank of this machine (0 .. num-machines-1)."
    )
    parser.add_argument(
        "--dist-url", default="auto",
        help="Rendezvous address HOST:PORT of machine 0; 'auto' picks a free local port "
        "(single machine only).",
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
        help="Config overrides as KEY VALUE pairs (full key names, e.g. SOLVER.BASE_LR 0.001).",
    )
    return parser


def setup_cfg(config_file: str = "", opts: list | None = None) -> CfgNode:
    """Build a frozen config from the defaults, a YAML file and command-line overrides.

    Args:
        config_file: YAML path ("" for the defaults only).
        opts: ``[KEY, VALUE, ...]`` overrides.

    Returns:
        The frozen config.
    """
    cfg = get_cfg()
    if config_file:
        cfg.merge_from_file(config_file)
    if opts:
        cfg.merge_from_list(list(opts))
    cfg.freeze()
    return cfg


def setup_logger(
    output_dir: str | None = None, rank: int = 0, name: str = "reid_pbn"
) -> logging.Logger:
    """Log to the console (rank 0) and to ``output_dir/log.txt`` (``log.txt.rankN`` elsewhere).

    Args:
        output_dir: directory of the log file; no file when None.
        rank: process rank; only rank 0 logs INFO to the console.
        name: logger name.

    Returns:
        The configured logger.
    """
    log = logging.getLogger(name)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    fmt = logging.Formatter(_LOG_FORMAT, datefmt="%m/%d %H:%M:%S")
    if rank == 0:
        ch = logging.StreamHandler(sys.stdout)
        ch.setLevel(logging.INFO)
        ch.setFormatter(fmt)
        log.addHandler(ch)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        fname = "log.txt" if rank == 0 else f"log.txt.rank{rank}"
        fh = logging.FileHandler(os.path.join(output_dir, fname))
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(fmt)
        log.addHandler(fh)
    return log


def default_setup(args: argparse.Namespace) -> CfgNode:
    """Config, output directory, logging and the saved ``config.yaml`` for a tool run.

    Args:
        args: parsed arguments with ``config_file`` and ``opts``.

    Returns:
        The frozen config. Exits with a readable message on a config error.
    """
    try:
        cfg = setup_cfg(args.config_file, args.opts)
    except ConfigError as e:
        sys.exit(f"Config error: {e}")
    if not getattr(args, "eval_only", True) and not getattr(args, "resume", True):
        # Before anything is written: the earlier run's config.yaml and log stay intact.
        Checkpointer(None, cfg.OUTPUT_DIR, save_to_disk=False).check_new_run(
            bool(getattr(args, "overwrite", False)))
    rank = comm.get_rank()
    if rank == 0:
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    setup_logger(cfg.OUTPUT_DIR, rank)
    logger.info("Command line: %s", " ".join(sys.argv))
    logger.info("torch %s, %d process(es), device %s", torch.__version__,
                comm.get_world_size(), resolve_device(cfg.MODEL.DEVICE))
    if rank == 0:
        path = os.path.join(cfg.OUTPUT_DIR, "config.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(cfg.dump())
        logger.info("Full config saved to %s", path)
    return cfg


def resolve_device(spec: str) -> torch.device:
    """Turn "auto" / "cpu" / "cuda[:N]" into a device ("auto": CUDA when available).

    Args:
        spec: the device string.

    Returns:
        The torch device; under DDP on GPUs, the local rank's GPU.
    """
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda") and comm.is_dist():
        # Under torchrun each process drives the GPU of its local rank; an explicit index
        # would put every rank on one GPU.
        local = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        if spec not in ("cuda", local):
            logger.warning("MODEL.DEVICE %s ignored under DDP: this rank uses %s (its local "
                           "rank); choose GPUs with CUDA_VISIBLE_DEVICES", spec, local)
        spec = local
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"MODEL.DEVICE is '{spec}' but CUDA is not available; use 'auto' or 'cpu'."
        )
    return torch.device(spec)
