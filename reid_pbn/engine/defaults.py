"""The one skeleton of every tool: argument parser, config setup, logging and provenance.

A tool is::

    parser = default_argument_parser(__doc__, training=False)
    parser.add_argument("--weights", ...)           # the tool's own flags
    ...
    def main(args):
        cfg = default_setup(args, output_dir=args.output, subdir=EVAL_DIR)
        ...                                         # raise a user error, never sys.exit
    if __name__ == "__main__":
        sys.exit(launch(main, parser.parse_args()))

:func:`~reid_pbn.engine.launch.launch` turns the user errors of
:func:`~reid_pbn.engine.launch.user_errors` into one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import sys
from collections.abc import Mapping, Sequence

import torch

from ..config import CfgNode, get_cfg
from ..evaluation import evaluation_kwargs_from_config
from ..utils import comm
from .checkpoint import Checkpointer, file_sha256

logger = logging.getLogger("reid_pbn")

_LOG_FORMAT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"

# Where evaluation results go below OUTPUT_DIR, for the trainer and the evaluation tools alike.
EVAL_DIR = "eval"

# Flags of single training runs (train_net.py); other tools hide and refuse them.
TRAINING_FLAGS = ("eval_only", "resume", "overwrite", "num_gpus", "num_machines",
                  "machine_rank", "dist_url")

_OVERRIDES_HELP = (
    "Trailing KEY VALUE pairs override config keys, e.g.\n"
    "  SOLVER.MAX_EPOCH 10 MODEL.BACKBONE.NORM PBN OUTPUT_DIR logs/run1\n"
    "They may follow a flag that takes several values (--targets A B TEST.METRIC euclidean): "
    "the\nvalues stop at the first config key (a word whose first dotted part is a top-level "
    "key,\ne.g. TEST.*, MODEL.*, OUTPUT_DIR). Or put -- before them. "
    "See reid_pbn/config/defaults.py."
)


class ToolArgumentParser(argparse.ArgumentParser):
    """The parser every tool shares: ``--config-file``, trailing ``KEY VALUE`` overrides and,
    for training, the launch flags.

    Beyond ``argparse`` it (1) moves ``KEY VALUE`` overrides that a flag with several values
    swallowed (``--targets A B KEY VALUE``) into ``opts``, and (2) refuses the training flags
    that :func:`default_argument_parser` hides for a tool built with ``training=False``, with
    one line and exit code 1.
    """

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        """``argparse.ArgumentParser.add_argument``, keeping ``opts`` the last positional.

        Args:
            *args: passed to ``argparse.ArgumentParser.add_argument``.
            **kwargs: passed to ``argparse.ArgumentParser.add_argument``.

        Returns:
            The new action.
        """
        action = super().add_argument(*args, **kwargs)
        if not action.option_strings and action.dest != "opts":
            # argparse fills positionals in the order they were added: a tool's own positionals
            # (image files) must come before the trailing overrides.
            for actions in (self._actions, self._positionals._group_actions):
                for a in [a for a in actions if a.dest == "opts"]:
                    actions.remove(a)
                    actions.append(a)
        return action

    def parse_args(self, args: Sequence[str] | None = None,
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        """Parse, then move swallowed overrides into ``opts`` and refuse hidden flags.

        Args:
            args: the arguments (default: ``sys.argv[1:]``).
            namespace: an object to fill (default: a new namespace).

        Returns:
            The parsed arguments; ``opts`` holds the ``KEY VALUE`` overrides.
        """
        self._refuse_hidden_flags(list(sys.argv[1:] if args is None else args))
        ns = super().parse_args(args, namespace)
        opts = list(getattr(ns, "opts", None) or [])
        if opts[:1] == ["--"]:
            opts = opts[1:]
        moved: list[str] = []
        for action in self._actions:
            value = getattr(ns, action.dest, None)
            if action.dest == "opts" or action.nargs not in ("+", "*") or not value:
                continue
            cut = next((i for i, v in enumerate(value) if is_override_key(v)), None)
            if cut is None:
                continue
            if cut == 0 and action.nargs == "+":
                name = action.option_strings[0] if action.option_strings else action.dest
                self.error(f"{name} needs at least one value before the overrides")
            setattr(ns, action.dest, list(value[:cut]))
            moved += value[cut:]
        if hasattr(ns, "opts"):
            ns.opts = moved + opts
        return ns

    def _refuse_hidden_flags(self, args: list[str]) -> None:
        # Before parsing, so that the refusal is what is reported, not a missing required flag.
        hidden = {opt for a in self._actions if a.dest in TRAINING_FLAGS
                  and a.help == argparse.SUPPRESS for opt in a.option_strings}
        for word in args:
            if word == "--":
                break
            if word.split("=", 1)[0] in hidden:
                self.exit(1, f"{self.prog}: {word.split('=', 1)[0]} is a train_net.py "
                          "option\n")


def is_override_key(token: str) -> bool:
    """Whether a command-line word is a config key (``TEST.METRIC``, ``OUTPUT_DIR``).

    Data-set names may be upper case too (``MSMT17``, ``GRID``), so a word counts as a key only
    when its first dotted part is a top-level config key.

    Args:
        token: the word.

    Returns:
        True for a (possibly misspelled below the top level) config key.
    """
    head = token.split(".", 1)[0]
    return head.isupper() and head in _top_level_keys()


@functools.cache
def _top_level_keys() -> frozenset[str]:
    return frozenset(get_cfg().keys())


def default_argument_parser(
    description: str | None = None, *, training: bool = True,
    keep: Mapping[str, str] | None = None, config_required: bool = False,
) -> ToolArgumentParser:
    """The parser shared by every tool; each tool adds its own flags to it.

    Args:
        description: text shown at the top of ``--help`` (the tool's module docstring).
        training: offer the training flags (``--eval-only``, ``--resume``, ``--overwrite``,
            ``--num-gpus``, ...). Tools that do not train pass False: the flags are then hidden
            from ``--help`` and refused with one line and exit code 1 when given.
        keep: training flags such a tool still uses with its own meaning, by destination,
            with their help text (e.g. ``{"overwrite": "Replace an existing gallery."}``).
        config_required: ``--config-file`` must be given (tools whose model the defaults
            cannot describe).

    Returns:
        The parser; ``args.opts`` holds the trailing ``KEY VALUE`` overrides.
    """
    parser = ToolArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_OVERRIDES_HELP,
    )
    parser.add_argument(
        "--config-file", default="", metavar="FILE", required=config_required,
        help="YAML config (may inherit from others with _BASE_)"
        + ("." if config_required else "; defaults.py when omitted."),
    )
    parser.add_argument(
        "--eval-only", action="store_true",
        help="Skip training: load MODEL.WEIGHTS (or the last checkpoint with --resume) and "
        "evaluate on DATASETS.TESTS (results in OUTPUT_DIR/eval).",
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
    if not training:
        keep = keep or {}
        for action in parser._actions:  # argparse offers no public way to hide a flag
            if action.dest in keep:
                action.help = keep[action.dest]
            elif action.dest in TRAINING_FLAGS:
                action.help = argparse.SUPPRESS
    return parser


def add_weights_arguments(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    """``--weights`` and ``--allow-partial``, the same in every tool that loads a model.

    Args:
        parser: the tool's parser.
        required: whether ``--weights`` must be given (else ``MODEL.WEIGHTS`` is the default).
    """
    parser.add_argument(
        "--weights", required=required, default=None, metavar="CKPT",
        help="Checkpoint or state_dict file of the model"
        + ("." if required else " (default: MODEL.WEIGHTS)."),
    )
    parser.add_argument(
        "--allow-partial", action="store_true",
        help="Load a weight file whose keys do not all match the model (missing keys stay as "
        "initialized); same as MODEL.WEIGHTS_PARTIAL_OK True. Without it such a file is "
        "refused, naming the mismatch.",
    )


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
        # launch() prints a user error itself, as one line on stderr.
        ch.addFilter(lambda record: getattr(record, "console", True))
        log.addHandler(ch)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        fname = "log.txt" if rank == 0 else f"log.txt.rank{rank}"
        fh = logging.FileHandler(os.path.join(output_dir, fname))
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(fmt)
        log.addHandler(fh)
    return log


def default_setup(
    args: argparse.Namespace, *, extra_opts: Sequence[str] = (), output_dir: str | None = None,
    subdir: str = "", new_training_run: bool = False, write_files: bool = True,
) -> CfgNode:
    """Config, output folder, logging and the saved ``config.yaml`` of a tool run.

    The config is the defaults, then ``args.config_file``, then ``extra_opts`` (what the
    tool's own flags mean as config keys), then the user's ``args.opts``. ``args.weights`` and
    ``args.allow_partial`` of :func:`add_weights_arguments` become ``MODEL.WEIGHTS`` and
    ``MODEL.WEIGHTS_PARTIAL_OK``, so the saved config names the weights the run used.

    Args:
        args: parsed arguments of :func:`default_argument_parser`.
        extra_opts: ``KEY VALUE`` words from the tool's flags.
        output_dir: folder of the log and ``config.yaml`` (None: see ``subdir``).
        subdir: with no ``output_dir``, the folder is ``OUTPUT_DIR/subdir`` (e.g.
            :data:`EVAL_DIR`).
        new_training_run: refuse an ``OUTPUT_DIR`` holding an earlier run's checkpoints
            (unless ``args.overwrite``) before anything is written.
        write_files: write ``log.txt`` and ``config.yaml`` into the output folder; False logs
            to the console only (tools whose output is a file or the console, which must not
            overwrite a training run's ``config.yaml`` in ``OUTPUT_DIR``).

    Returns:
        The frozen config.

    Raises:
        ConfigError: a missing config file, an unknown key or a bad value.
        CheckpointError: ``new_training_run`` over an earlier run without ``--overwrite``.
    """
    opts = list(extra_opts)
    if getattr(args, "allow_partial", False):
        opts += ["MODEL.WEIGHTS_PARTIAL_OK", "True"]
    cfg = setup_cfg(getattr(args, "config_file", "") or "",
                    opts + list(getattr(args, "opts", None) or []))
    if getattr(args, "weights", None):
        # Set directly: a path given as an override would go through literal_eval.
        cfg.defrost()
        cfg.MODEL.WEIGHTS = str(args.weights)
        cfg.freeze()
    if new_training_run:
        # Before anything is written: the earlier run's config.yaml and log stay intact.
        Checkpointer(None, cfg.OUTPUT_DIR, save_to_disk=False).check_new_run(
            bool(getattr(args, "overwrite", False)))
    out = output_dir_of(cfg, output_dir, subdir) if write_files else None
    rank = comm.get_rank()
    if rank == 0 and out:
        os.makedirs(out, exist_ok=True)
    setup_logger(out, rank)
    logger.info("Command line: %s", " ".join(sys.argv))
    logger.info("torch %s, %d process(es), device %s", torch.__version__,
                comm.get_world_size(), resolve_device(cfg.MODEL.DEVICE))
    if rank == 0 and out:
        path = os.path.join(out, "config.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(cfg.dump())
        logger.info("Full config saved to %s", path)
    return cfg


def output_dir_of(cfg: CfgNode, output_dir: str | None = None, subdir: str = "") -> str:
    """The folder a tool writes to: ``output_dir`` when given, else ``OUTPUT_DIR/subdir``.

    Args:
        cfg: the config.
        output_dir: the tool's ``--output``, or None.
        subdir: folder below ``OUTPUT_DIR`` (``""``: ``OUTPUT_DIR`` itself).

    Returns:
        The folder path.
    """
    return output_dir or os.path.join(cfg.OUTPUT_DIR, subdir)


def evaluation_provenance(cfg: CfgNode, weights: str | None = None) -> dict:
    """What a result was computed with: the checkpoint (path and SHA-256) and the evaluation
    settings (re-ranking, query expansion, metric, flip).

    Args:
        cfg: the evaluation config (``TEST.*``).
        weights: the evaluated weight file (None: ``MODEL.WEIGHTS``; "" for a random model).

    Returns:
        ``{"checkpoint", "checkpoint_sha256", "metric", "flip", "rerank", "aqe"}``;
        ``rerank`` / ``aqe`` are None when off, else their parameters.
    """
    weights = cfg.MODEL.WEIGHTS if weights is None else weights
    kwargs = evaluation_kwargs_from_config(cfg)
    return {
        "checkpoint": os.path.abspath(weights) if weights else None,
        "checkpoint_sha256": file_sha256(weights) if weights else None,
        "metric": kwargs["metric"],
        "flip": bool(cfg.TEST.FLIP),
        "rerank": _plain(kwargs["rerank"]),
        "aqe": _plain(kwargs["aqe"]),
    }


def _plain(options):
    # Options may be a dict or a frozen dataclass; result files need plain JSON values.
    if dataclasses.is_dataclass(options):
        return dataclasses.asdict(options)
    return None if options is None else dict(options)


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
