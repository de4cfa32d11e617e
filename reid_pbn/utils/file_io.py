"""Checkpoint file I/O: atomic writes and safe (``weights_only``) loading.

The floor every package may use to read or write weight files: a checkpoint is a dict of
tensors and plain Python values only, so it loads with ``torch.load(..., weights_only=True)``
and a file crafted to run code on unpickling is refused before anything in it executes.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from typing import IO

import torch

__all__ = [
    "TEMP_PREFIX",
    "CheckpointError",
    "UnreadableCheckpointError",
    "atomic_torch_save",
    "atomic_write",
    "file_sha256",
    "fsync_dir",
    "load_checkpoint_file",
    "stream_sha256",
]

#: Prefix of the temporary files of atomic writes (removed when a run starts).
TEMP_PREFIX = ".tmp-"


class CheckpointError(RuntimeError):
    """A checkpoint or weight file cannot be used; the message says why and what to do."""


class UnreadableCheckpointError(CheckpointError):
    """The file itself cannot be read as a checkpoint (missing, damaged, not a torch file,
    or refused pickled objects), as opposed to a readable file that does not fit."""


def atomic_write(path: str, write_fn: Callable[[IO[bytes]], object]) -> None:
    """Write a file so that a crash never leaves a partial file under ``path``.

    Writes to a temporary file in the same directory, flushes and fsyncs it, then renames it
    over ``path`` (atomic on POSIX), and fsyncs the directory.

    Args:
        path: final file path.
        write_fn: callable taking a binary file object and writing the content.
    """
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=TEMP_PREFIX, suffix="-" + os.path.basename(path))
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
    fsync_dir(d)


def atomic_torch_save(obj: object, path: str) -> None:
    """``torch.save`` through :func:`atomic_write`.

    Args:
        obj: what to save (tensors and plain values, so it loads with ``weights_only``).
        path: final file path.
    """
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
        raise UnreadableCheckpointError(f"Weight file not found: {path}")
    kind = _file_kind(path)
    if kind == "other":
        raise UnreadableCheckpointError(
            f"{path} is not a PyTorch checkpoint (neither torch's zip format nor a pickle; it "
            "starts with bytes " f"{_head(path)!r}). Check the path: was a config, an image or "
            "a log given as weights?")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnreadableCheckpointError(
            f"Refusing to load {path}: it contains pickled Python objects, which could run "
            f"code, and only tensors and plain values are accepted (weights_only=True). "
            f"Nothing from the file was executed. If you trust its source, load it yourself "
            f"and re-save only its state_dict. Detail: {str(e).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        what = ("a truncated or damaged PyTorch zip checkpoint (an interrupted copy or "
                "download?)" if kind == "zip" else "a damaged pickle-format file")
        raise UnreadableCheckpointError(
            f"Cannot read {path}: {what} ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''})."
        ) from None
    if not isinstance(obj, Mapping):
        raise UnreadableCheckpointError(
            f"{path} holds a {type(obj).__name__}, expected a state_dict mapping."
        )
    return dict(obj)


def _head(path: str, n: int = 8) -> bytes:
    """The first ``n`` bytes of a file (shown when it is not a checkpoint)."""
    with open(path, "rb") as f:
        return f.read(n)


def _file_kind(path: str) -> str:
    """"zip" (torch's format since 1.6), "pickle" (the legacy format) or "other"."""
    head = _head(path, 4)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    # Pickle protocols 2+ start with PROTO (0x80); torch's legacy files start with one.
    return "pickle" if head[:1] == b"\x80" else "other"


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file (read in 1 MiB blocks), naming exactly which weights were used.

    Args:
        path: the file.

    Returns:
        The hex digest.
    """
    with open(path, "rb") as f:
        return stream_sha256(f)


def stream_sha256(f: IO[bytes]) -> str:
    """The SHA-256 of what remains of an open binary file, read in 1 MiB blocks.

    Args:
        f: the file, positioned where hashing starts.

    Returns:
        The hex digest.
    """
    h = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
    return h.hexdigest()


def fsync_dir(path: str | os.PathLike) -> None:
    """fsyncs a folder, so renames and new entries in it survive a power loss.

    Args:
        path: the folder.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders; nothing more can be done there
        return
    try:
        os.fsync(fd)
    except OSError as e:
        # Some file systems (network ones) do not fsync folders; their renames are synchronous.
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)
