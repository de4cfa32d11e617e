"""What the serving tools (export, build_index, search, serve) share: the parser, the model, the
gallery's model check, and one-line errors with exit code 1."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from ..config import ConfigError
from ..engine import default_argument_parser
from ..engine.defaults import setup_cfg, setup_logger
from ..engine.inference import build_inference_model
from ..engine.launch import user_errors
from .export import ExportError, ParityError
from .gallery import GalleryBusyError, GalleryFormatError
from .provenance import model_provenance, provenance_mismatches

__all__ = ["ToolError", "build_model_for_tool", "checked_provenance", "load_config", "run_tool",
           "tool_parser"]

logger = logging.getLogger("reid_pbn")

# The shared parser's flags these tools use; the others (--eval-only, --resume, --num-gpus,
# ...) belong to training runs and are hidden from --help and refused when given.
_SHARED_FLAGS = ("help", "config_file", "opts")


class ToolError(Exception):
    """A mistake the user can fix; reported as one line, exit code 1."""


def tool_parser(description: str | None,
                overrides: dict[str, str] | None = None) -> argparse.ArgumentParser:
    """The toolkit's shared parser (``--config-file``, trailing ``KEY VALUE`` overrides) without
    the training flags.

    Args:
        description: the tool's ``--help`` text (its module docstring).
        overrides: shared flags the tool uses with its own meaning, by destination (e.g.
            ``{"overwrite": "Replace an existing gallery."}``), and their help text.

    Returns:
        The parser; the tool adds its own flags.
    """
    parser = default_argument_parser(description)
    overrides = overrides or {}
    for action in parser._actions:  # argparse has no public way to hide inherited flags
        if action.dest in overrides:
            action.help = overrides[action.dest]
        elif action.dest not in _SHARED_FLAGS:
            action.help = argparse.SUPPRESS
    return parser


def _refuse_training_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for action in parser._actions:
        if action.dest in _SHARED_FLAGS or action.help != argparse.SUPPRESS:
            continue
        if getattr(args, action.dest, action.default) != action.default:
            raise ToolError(f"{action.option_strings[0]} is a train_net.py option")


def _user_errors() -> tuple[type[BaseException], ...]:
    return (*user_errors(), ToolError, ConfigError, ExportError, ParityError, GalleryBusyError,
            GalleryFormatError, FileNotFoundError, FileExistsError)


def run_tool(name: str, parser: argparse.ArgumentParser, main: Callable[[argparse.Namespace], int],
             argv: list[str] | None = None) -> int:
    """Parses the arguments and runs ``main``, turning user errors into one line and exit 1.

    Args:
        name: the tool's name, prefixed to error lines.
        parser: from :func:`tool_parser`, with the tool's flags.
        main: the tool's body; returns an exit code.
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code.
    """
    args = parser.parse_args(argv)
    setup_logger(None)
    try:
        _refuse_training_flags(parser, args)
        return main(args)
    except _user_errors() as e:
        logger.debug("traceback of the error below", exc_info=True)
        print(f"{name}: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130


def load_config(config_file: str | None, opts: list[str] | None = None):
    """The frozen config of a tool.

    Args:
        config_file: YAML file (None or "": the defaults).
        opts: ``KEY VALUE`` overrides.

    Raises:
        ToolError: the file does not exist or does not parse.
    """
    if config_file and not os.path.isfile(config_file):
        raise ToolError(f"config file not found: {config_file}")
    try:
        return setup_cfg(config_file or "", list(opts or []))
    except ConfigError as e:
        raise ToolError(f"config error: {e}") from None


def build_model_for_tool(cfg, weights: str | None, device: str = "cpu"):
    """The inference model of a tool, with a clear error for a missing weight file.

    Args:
        cfg: the model's config.
        weights: the weight file (None: ``MODEL.WEIGHTS``).
        device: where to put it.

    Raises:
        ToolError: the weight file does not exist.
    """
    weights = weights or cfg.MODEL.WEIGHTS or None
    if weights and not os.path.isfile(weights):
        raise ToolError(f"weights file not found: {weights}")
    return build_inference_model(cfg, weights, device=device), weights


def checked_provenance(gallery_info: dict, cfg, *, config_file: str | None,
                       weights: str | None, feature_dim: int, flip: bool = False,
                       allow_mismatch: bool = False) -> dict:
    """The model's provenance, refused when it does not match the gallery's.

    Args:
        gallery_info: ``Gallery.info``.
        cfg: the model's config.
        config_file: its YAML file.
        weights: its weight file.
        feature_dim: its feature dimension.
        flip: flip averaging in use.
        allow_mismatch: warn instead of refusing.

    Returns:
        The model's provenance record.

    Raises:
        ToolError: the features of this model are not comparable with the gallery's.
    """
    current = model_provenance(cfg, config_file=config_file, weights=weights,
                               feature_dim=feature_dim, flip=flip)
    recorded = gallery_info.get("provenance", {})
    problems = provenance_mismatches(recorded, current)
    if problems and not allow_mismatch:
        raise ToolError("the model differs from the one that built the gallery ("
                        + "; ".join(problems) + "); its features are not comparable. Use the "
                        "gallery's model, rebuild the gallery, or pass --allow-model-mismatch")
    for problem in problems:
        logger.warning("model differs from the gallery's: %s", problem)
    return current
