"""Checkpoints: atomic writes, safe (weights-only) loading and complete training state.

A checkpoint is a dict of tensors and plain Python values only (no pickled objects), so it
loads with ``torch.load(..., weights_only=True)``: a file crafted to run code on unpickling is
refused before anything in it executes.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import tempfile
import zipfile
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import nn

from . import comm

logger = logging.getLogger("reid_pbn")

LAST_CHECKPOINT_FILE = "last_checkpoint"


class CheckpointError(RuntimeError):
    """A checkpoint or weight file cannot be used; the message says why and what to do."""


def atomic_write(path: str, write_fn) -> None:
    """Write a file so that a crash never leaves a partial file under ``path``.

    Writes to a temporary file in the same directory, flushes and fsyncs it, then renames it
    over ``path`` (atomic on POSIX), and fsyncs the directory.

    Args:
        path: final file path.
        write_fn: callable taking a binary file object and writing the content.
    """
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    dir_fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_torch_save(obj, path: str) -> None:
    """``torch.save`` through :func:`atomic_write`."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint_file(path: str) -> dict:
    """Load a checkpoint or weight file safely (``weights_only=True``) onto the CPU.

    Args:
        path: file path.

    Returns:
        The loaded mapping.

    Raises:
        CheckpointError: the file is missing, truncated, not a torch file, or holds pickled
            Python objects (which are refused, never executed).
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"Weight file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"Refusing to load {path}: it contains pickled Python objects, which could run "
            f"code, and only tensors and plain values are accepted (weights_only=True). "
            f"Nothing from the file was executed. If you trust its source, load it yourself "
            f"and re-save only its state_dict. Detail: {str(e).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(
            f"Cannot read {path}: the file is damaged, truncated or not a PyTorch weight "
            f"file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})."
        ) from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path} holds a {type(obj).__name__}, expected a state_dict mapping."
        )
    return dict(obj)


def extract_state_dict(obj: Mapping) -> dict[str, torch.Tensor]:
    """Find the model state_dict in a checkpoint (``model`` / ``state_dict`` wrappers) and
    strip DDP's ``module.`` prefixes."""
    for key in ("model", "state_dict"):
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    return {
        (k[len("module."):] if k.startswith("module.") else k): v
        for k, v in obj.items()
        if isinstance(v, torch.Tensor)
    }


def load_state_dict_checked(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint",
    strict: bool = False, ignore: Callable[[str], bool] | None = None,
) -> tuple[list[str], list[str]]:
    """Load a state_dict after checking shapes, and log missing / unexpected keys.

    Args:
        model: the module to load into.
        state: the state_dict.
        source: name of the file, for messages.
        strict: raise when keys are missing or unexpected.
        ignore: keys (of the file and of the model) that are neither loaded nor reported,
            e.g. the ID classifier when only features are needed.

    Returns:
        ``(missing_keys, unexpected_keys)``.

    Raises:
        CheckpointError: a tensor's shape differs from the model's (names every such key), or
            strict loading found missing/unexpected keys.
    """
    own = model.state_dict()
    if ignore is not None:
        state = {k: v for k, v in state.items() if not ignore(k)}
        own = {k: v for k, v in own.items() if not ignore(k)}
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if mismatched:
        raise CheckpointError(
            f"{source} does not fit this model; shapes differ for {len(mismatched)} key(s):\n  "
            + "\n  ".join(mismatched[:20])
            + "\nCheck that the config (depth, IBN, norm, number of classes/domains) matches "
            "the one the weights were trained with."
        )
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"{source}: {len(missing)} missing and {len(unexpected)} unexpected keys "
            f"(missing: {missing[:10]}, unexpected: {unexpected[:10]})"
        )
    model.load_state_dict(state, strict=False)
    if missing:
        logger.warning("%s: %d key(s) missing, left as initialized: %s", source, len(missing),
                       _short(missing))
    if unexpected:
        logger.warning("%s: %d unexpected key(s) ignored: %s", source, len(unexpected),
                       _short(unexpected))
    return missing, unexpected


def _short(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f", ... (+{len(keys) - n})" if len(keys) > n else "")


def load_model_weights(model: nn.Module, path: str) -> tuple[list[str], list[str]]:
    """Load a model's weights from a checkpoint or a plain state_dict file (MODEL.WEIGHTS).

    Args:
        model: the model (a DDP wrapper is unwrapped).
        path: the file.

    Returns:
        ``(missing_keys, unexpected_keys)``.
    """
    model = getattr(model, "module", model)
    state = extract_state_dict(load_checkpoint_file(path))
    logger.info("Loading model weights from %s", path)
    return load_state_dict_checked(model, state, source=path)


def get_rng_states() -> dict:
    """This process's RNG states (torch CPU, its own CUDA device, numpy, Python), as
    weights-only-safe values."""
    np_state = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # Only this process's device: under DDP each rank drives one GPU, and a run may be
        # resumed on a machine with a different number of GPUs.
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def set_rng_states(states: Mapping) -> None:
    """Restore what :func:`get_rng_states` returned (on this process's CUDA device)."""
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if isinstance(cuda, (list, tuple)):  # older checkpoints: every visible GPU's state
            index = torch.cuda.current_device()
            cuda = cuda[index] if index < len(cuda) else None
        if cuda is not None:
            torch.cuda.set_rng_state(cuda)


def _restore_rng(data: Mapping) -> None:
    """Give this rank its own saved RNG states; a rank the saving run did not have keeps the
    seed it started with (logged: that rank's random stream then differs from a continuous
    run)."""
    per_rank = data.get("rng_per_rank")
    rank = comm.get_rank()
    if per_rank is None:  # older checkpoints kept rank 0's states only
        per_rank = [data["rng"]] if "rng" in data else []
    if rank < len(per_rank):
        set_rng_states(per_rank[rank])
    elif per_rank:
        logger.warning("The checkpoint holds RNG states of %d rank(s); rank %d keeps its own "
                       "seed, so its random draws differ from an uninterrupted run.",
                       len(per_rank), rank)


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, tuple) else x


class Checkpointer:
    """Saves and restores the complete training state in a directory.

    Files are ``<name>.pth`` plus a ``last_checkpoint`` file naming the newest complete one;
    both are written atomically, the pointer after the checkpoint.

    Args:
        model: the model (a DDP wrapper is unwrapped).
        save_dir: directory of the checkpoints.
        save_to_disk: False on non-main ranks (only rank 0 writes).
        **objects: other objects with ``state_dict`` / ``load_state_dict`` (optimizer,
            scheduler, grad scaler).
    """

    def __init__(self, model: nn.Module, save_dir: str, *, save_to_disk: bool = True, **objects):
        self.model = getattr(model, "module", model)
        self.save_dir = save_dir
        self.save_to_disk = save_to_disk
        self.objects = objects

    def save(self, name: str, **extra) -> str | None:
        """Write ``<save_dir>/<name>.pth`` with model, objects, RNG states and ``extra``.

        Args:
            name: file stem, e.g. ``model_0004`` or ``model_final``.
            **extra: plain values to store (epoch, iteration, config text, ...).

        Returns:
            The path written (None on ranks that do not write).
        """
        # Collective steps first: every rank calls save. The running statistics are averaged so
        # that the file holds the network every rank evaluates, and every rank's RNG states are
        # kept so that a resumed run continues each rank's own random streams.
        comm.average_buffers(self.model)
        rng = comm.all_gather_object(get_rng_states())
        if not self.save_to_disk:
            return None
        data = {"model": self.model.state_dict(), "rng": rng[0], "rng_per_rank": rng, **extra}
        for k, obj in self.objects.items():
            if obj is not None:
                data[k] = obj.state_dict()
        path = os.path.join(self.save_dir, f"{name}.pth")
        atomic_torch_save(data, path)
        atomic_write(os.path.join(self.save_dir, LAST_CHECKPOINT_FILE),
                     lambda f: f.write(os.path.basename(path).encode()))
        logger.info("Saved checkpoint %s", path)
        return path

    def last_checkpoint(self) -> str | None:
        """Path of the newest complete checkpoint, or None."""
        p = os.path.join(self.save_dir, LAST_CHECKPOINT_FILE)
        if not os.path.isfile(p):
            return None
        with open(p, encoding="utf-8") as f:
            path = os.path.join(self.save_dir, f.read().strip())
        return path if os.path.isfile(path) else None

    def load(self, path: str, *, restore_training_state: bool = True) -> dict:
        """Load a checkpoint into the model (and objects, RNG states when asked).

        Args:
            path: the checkpoint file.
            restore_training_state: also restore optimizer, scheduler, scaler and RNG states.

        Returns:
            The remaining entries (epoch, iteration, ...).
        """
        data = load_checkpoint_file(path)
        load_state_dict_checked(self.model, extract_state_dict(data), source=path)
        if restore_training_state:
            for k, obj in self.objects.items():
                if obj is not None and k in data:
                    obj.load_state_dict(data[k])
            _restore_rng(data)
        skip = {"model", "rng", "rng_per_rank", *self.objects}
        return {k: v for k, v in data.items() if k not in skip}
