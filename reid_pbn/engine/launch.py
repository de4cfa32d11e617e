"""Multi-process launch: ``--num-gpus N`` re-runs the command under torchrun (DDP)."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta

import torch
import torch.distributed as dist

from ..config import ConfigError
from ..data.datasets.bases import DatasetFormatError, DatasetNotFoundError, UnreadableImageError
from ..evaluation.index import IndexFormatError
from ..modeling.convert import UnknownLayoutError
from ..utils.file_io import CheckpointError
from ..utils.registry import UnknownNameError
from .defaults import setup_cfg
from .study.config import StudyError

logger = logging.getLogger("reid_pbn")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_torchrun() -> bool:
    """True inside a process started by torchrun."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def relaunch_with_torchrun(num_procs: int, num_machines: int = 1, machine_rank: int = 0,
                           dist_url: str = "auto") -> int:
    """Run ``sys.argv`` again under ``python -m torch.distributed.run`` and wait for it.

    Args:
        num_procs: processes on this machine (GPUs, or CPU workers with gloo).
        num_machines: number of machines.
        machine_rank: this machine's rank.
        dist_url: "HOST:PORT" of machine 0, or "auto" (single machine, free local port).

    Returns:
        torchrun's exit code.
    """
    if dist_url == "auto":
        if num_machines > 1:
            raise ValueError("--dist-url HOST:PORT is required with --num-machines > 1")
        dist_url = f"127.0.0.1:{_free_port()}"
    host, port = dist_url.replace("tcp://", "").rsplit(":", 1)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={num_procs}",
           f"--nnodes={num_machines}", f"--node_rank={machine_rank}",
           f"--master_addr={host}", f"--master_port={port}", *sys.argv]
    logger.info("Launching: %s", " ".join(cmd))
    return subprocess.call(cmd)


def init_distributed(device: str = "auto") -> None:
    """Initialize the process group inside torchrun: NCCL when the run uses GPUs, else gloo.

    Args:
        device: the run's ``MODEL.DEVICE``; "cpu" selects gloo even where CUDA exists (NCCL
            refuses CPU tensors).
    """
    if not in_torchrun() or dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() and not device.startswith("cpu") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))


class ToolError(Exception):
    """A mistake on a tool's command line the user can fix (a missing image folder, no target
    data set, ...); reported like every other user error: one line, exit code 1."""


def launch(main_func: Callable[[argparse.Namespace], int | None],
           args: argparse.Namespace) -> int:
    """Run ``main_func(args)`` in this process, or relaunch under torchrun when
    ``args.num_gpus * args.num_machines > 1`` and we are not inside torchrun yet.

    Args:
        main_func: the tool's main, taking the parsed arguments; it may return an exit code.
        args: parsed arguments of :func:`~reid_pbn.engine.defaults.default_argument_parser`.

    Returns:
        An exit code: ``main_func``'s (0 when it returns None), or 1 after one of
        :func:`user_errors`, which is printed as one line on stderr (``tool: Kind: message``)
        and logged with its traceback at debug level (the log file has it).
    """
    num_gpus, num_machines = getattr(args, "num_gpus", 1), getattr(args, "num_machines", 1)
    if num_gpus * num_machines > 1 and not in_torchrun():
        return relaunch_with_torchrun(num_gpus, num_machines, getattr(args, "machine_rank", 0),
                                      getattr(args, "dist_url", "auto"))
    try:
        init_distributed(_requested_device(args))
        code = main_func(args)
    except user_errors() as e:
        # What the user can fix (a config value, a data set, a weight file, a diverged run):
        # the message says what and how; the traceback goes to the log file only.
        message = f"{type(e).__name__}: {' '.join(str(e).split())}"
        logger.debug("Traceback of the error below", exc_info=True)
        if logger.handlers or logging.getLogger().handlers:
            # To the log file (the console handler skips it: it is printed below); with no
            # handler at all logging's last resort would print it a second time.
            logger.error("%s", message, extra={"console": False})
        print(f"{os.path.basename(sys.argv[0]) or 'reid_pbn'}: {message}", file=sys.stderr)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return int(code or 0)


def tool_main(build_parser: Callable[[], argparse.ArgumentParser],
              run: Callable[[argparse.Namespace], int | None],
              argv: list[str] | None = None) -> int:
    """Every tool's ``main``: parse ``argv`` with the tool's parser and :func:`launch` ``run``.

    Args:
        build_parser: the tool's parser factory (also used for ``--help``).
        run: the tool's body, taking the parsed arguments.
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0, or 1 after a user error reported as one line.
    """
    return launch(run, build_parser().parse_args(argv))


def _requested_device(args) -> str:
    """``MODEL.DEVICE`` of the tool's config and overrides ("auto" when it has none)."""
    if not in_torchrun():
        return "auto"
    cfg = setup_cfg(getattr(args, "config_file", "") or "", list(getattr(args, "opts", []) or []))
    return str(cfg.MODEL.DEVICE)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions whose message tells the user what is wrong and what to do.

    Tools report them as one error message (exit code 1) rather than a traceback.
    """
    return (ConfigError, CheckpointError, DatasetNotFoundError, DatasetFormatError,
            UnreadableImageError, IndexFormatError, UnknownNameError, UnknownLayoutError,
            StudyError, ToolError, FloatingPointError)
