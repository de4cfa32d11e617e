"""Checkpoints: complete training state, saved and resumed.

The file I/O underneath (atomic writes, safe ``weights_only`` loading, :class:`CheckpointError`)
lives in :mod:`reid_pbn.utils.file_io`, the floor modeling and evaluation may use too; it is
re-exported here for users of this module.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import nn

from ..utils import comm
from ..utils.file_io import (
    TEMP_PREFIX,
    CheckpointError,
    UnreadableCheckpointError,
    atomic_torch_save,
    atomic_write,
    file_sha256,
    load_checkpoint_file,
)

__all__ = [
    "LAST_CHECKPOINT_FILE",
    "TEMP_PREFIX",
    "CheckpointError",
    "Checkpointer",
    "UnreadableCheckpointError",
    "atomic_torch_save",
    "atomic_write",
    "extract_state_dict",
    "file_sha256",
    "get_rng_states",
    "load_checkpoint_file",
    "load_model_weights",
    "key_mismatch_message",
    "load_state_dict_checked",
    "set_rng_states",
]

logger = logging.getLogger("reid_pbn")

LAST_CHECKPOINT_FILE = "last_checkpoint"
_CHECKPOINT_NAME = re.compile(r"model_(?:(\d+)|final)\.pth")


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
    allow_partial: bool = False, ignore: Callable[[str], bool] | None = None,
) -> tuple[list[str], list[str]]:
    """Load a state_dict whose keys and shapes must match the model's.

    A file whose keys do not match (for example one written by another toolkit, or for
    another architecture) would otherwise "load" and then give meaningless features, so any
    missing or unexpected key is refused unless ``allow_partial`` says a partial load is meant
    (e.g. initializing from a related model), in which case it is loaded with a warning.

    Args:
        model: the module to load into.
        state: the state_dict.
        source: name of the file, for messages.
        allow_partial: load the matching keys even when some of the model's keys are missing
            from the file or the file has keys the model lacks (``MODEL.WEIGHTS_PARTIAL_OK``).
        ignore: keys (of the file and of the model) that are neither loaded nor reported,
            e.g. the ID classifier when only features are needed.

    Returns:
        ``(missing_keys, unexpected_keys)``; both empty unless ``allow_partial``.

    Raises:
        CheckpointError: a tensor's shape differs from the model's (names every such key), or
            keys are missing / unexpected without ``allow_partial`` (counts and examples).
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
    if (missing or unexpected) and not allow_partial:
        raise CheckpointError(key_mismatch_message(source, own, state, missing, unexpected))
    model.load_state_dict(state, strict=False)
    if missing:
        logger.warning("%s: %d key(s) missing, left as initialized: %s", source, len(missing),
                       _short(missing))
    if unexpected:
        logger.warning("%s: %d unexpected key(s) ignored: %s", source, len(unexpected),
                       _short(unexpected))
    return missing, unexpected


def key_mismatch_message(source: str, own: Mapping, state: Mapping, missing: list[str],
                         unexpected: list[str]) -> str:
    """The refusal of a weight file whose keys do not match the model's.

    Args:
        source: name of the file.
        own: the model's state_dict (after ignored keys are dropped).
        state: the file's state_dict (likewise).
        missing: the model's keys the file lacks.
        unexpected: the file's keys the model lacks.

    Returns:
        One message with the counts, a few examples of each kind and how to load anyway.
    """
    matched = len(set(own) & set(state))
    return (
        f"{source} does not match this model: {len(missing)} of the model's {len(own)} keys "
        f"are missing from the file (e.g. {_short(missing, 3) or '-'}) and {len(unexpected)} "
        f"of the file's {len(state)} keys are unexpected (e.g. {_short(unexpected, 3) or '-'}); "
        f"only {matched} match. Check that the config describes the architecture the weights "
        "were trained with (a torchreid / fast-reid file needs tools/convert_checkpoint.py), or "
        f"set MODEL.WEIGHTS_PARTIAL_OK True to load the {matched} matching keys anyway."
    )


def _short(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f", ... (+{len(keys) - n})" if len(keys) > n else "")


def load_model_weights(model: nn.Module, path: str,
                       allow_partial: bool = False) -> tuple[list[str], list[str]]:
    """Load a model's weights from a checkpoint or a plain state_dict file (MODEL.WEIGHTS).

    Args:
        model: the model (a DDP wrapper is unwrapped).
        path: the file.
        allow_partial: accept missing / unexpected keys (see :func:`load_state_dict_checked`).

    Returns:
        ``(missing_keys, unexpected_keys)``.
    """
    model = getattr(model, "module", model)
    state = extract_state_dict(load_checkpoint_file(path))
    logger.info("Loading model weights from %s", path)
    return load_state_dict_checked(model, state, source=path, allow_partial=allow_partial)


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


def _load_object_state(obj, state, name: str, path: str) -> None:
    """Load an optimizer / scheduler / scaler state, refusing one made for another kind.

    ``torch.optim.Optimizer.load_state_dict`` accepts another optimizer's state and replaces
    the hyper-parameters with the saved ones, which fails only at the next step (SGD's
    ``KeyError: 'momentum'`` after Adam's state).
    """
    groups = getattr(obj, "param_groups", None)
    if groups is not None and isinstance(state, Mapping):
        saved = state.get("param_groups") or []
        if saved and set(saved[0]) - {"params"} != set(groups[0]) - {"params"}:
            raise CheckpointError(
                f"The {name} state in {path} was made by a different optimizer (its settings "
                f"{sorted(set(saved[0]) - {'params'})} differ from this run's "
                f"{sorted(set(groups[0]) - {'params'})}). Resume with the optimizer the run "
                "started with (SOLVER.OPTIMIZER), or start a new run from these weights with "
                "MODEL.WEIGHTS.")
    try:
        obj.load_state_dict(state)
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(
            f"The {name} state in {path} does not fit this run ({type(e).__name__}: {e}). "
            "Was the config changed since the checkpoint was written?") from None


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

    def checkpoints(self) -> list[str]:
        """Checkpoint files of ``save_dir``, newest first (``model_final``, then by number)."""
        if not os.path.isdir(self.save_dir):
            return []
        found = []
        for name in os.listdir(self.save_dir):
            m = _CHECKPOINT_NAME.fullmatch(name)
            if m and os.path.isfile(os.path.join(self.save_dir, name)):
                found.append((m.group(1) is None, int(m.group(1) or 0), name))
        return [os.path.join(self.save_dir, n) for *_, n in sorted(found, reverse=True)]

    def last_checkpoint(self) -> str | None:
        """Path of the newest complete checkpoint, or None when the folder holds none.

        The ``last_checkpoint`` pointer names it. A pointer to a missing file (deleted, or a
        copy of a folder without it) falls back to the newest checkpoint file in the folder.

        Raises:
            CheckpointError: the pointer names anything but a file name in ``save_dir``
                (e.g. ``../other/model.pth`` or an absolute path).
        """
        p = os.path.join(self.save_dir, LAST_CHECKPOINT_FILE)
        if os.path.isfile(p):
            with open(p, encoding="utf-8", errors="replace") as f:
                name = f.read(4096).strip()
            if not name or os.path.basename(name) != name or name in (".", ".."):
                raise CheckpointError(
                    f"{p} names '{name[:200]}', which is not a file of {self.save_dir}; a "
                    "resume only reads checkpoints inside OUTPUT_DIR. Fix or delete the file.")
            path = os.path.join(self.save_dir, name)
            if os.path.isfile(path):
                return path
            logger.warning("%s names %s, which is missing; looking for the newest checkpoint "
                           "in %s instead", p, name, self.save_dir)
        found = self.checkpoints()
        return found[0] if found else None

    def remove_stale_temps(self) -> list[str]:
        """Delete temporary files that killed writes left in ``save_dir`` (``.tmp-*``).

        Call it when a run starts, when no other process writes to the folder.

        Returns:
            The removed paths.
        """
        removed = []
        if os.path.isdir(self.save_dir):
            for name in os.listdir(self.save_dir):
                if name.startswith(TEMP_PREFIX):
                    path = os.path.join(self.save_dir, name)
                    with contextlib.suppress(OSError):
                        os.remove(path)
                        removed.append(path)
        if removed:
            logger.info("Removed %d temporary file(s) of interrupted writes in %s",
                        len(removed), self.save_dir)
        return removed

    def check_new_run(self, overwrite: bool) -> None:
        """Refuse to start a new run over an earlier run's checkpoints, unless ``overwrite``.

        Args:
            overwrite: the user asked to replace the earlier run; its checkpoints and pointer
                are then deleted (by the writing process).

        Raises:
            CheckpointError: the folder holds checkpoints and ``overwrite`` is False.
        """
        found = self.checkpoints()
        if not found:
            return
        names = ", ".join(os.path.basename(p) for p in found[:4])
        if not overwrite:
            raise CheckpointError(
                f"{self.save_dir} already holds a training run ({names}"
                f"{', ...' if len(found) > 4 else ''}). Continue it with --resume, choose "
                "another OUTPUT_DIR, or pass --overwrite to replace it.")
        if self.save_to_disk:
            logger.warning("--overwrite: deleting %d checkpoint(s) of the earlier run in %s",
                           len(found), self.save_dir)
            for path in [*found, os.path.join(self.save_dir, LAST_CHECKPOINT_FILE)]:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)

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
                    _load_object_state(obj, data[k], k, path)
            _restore_rng(data)
        skip = {"model", "rng", "rng_per_rank", *self.objects}
        return {k: v for k, v in data.items() if k not in skip}
