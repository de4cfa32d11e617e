"""Replacing a folder so that a reader always finds the old or the new one, complete.

A save writes into a fresh sibling folder (same file system), fsyncs its files and the folder,
and then swaps it with the target:

* on Linux with ``renameat2(RENAME_EXCHANGE)`` (ext4, xfs, btrfs, tmpfs, ...) the two folders
  trade names in one atomic step, so the target path never stops naming a complete folder;
* elsewhere the target is renamed aside and the new folder renamed into place. A crash between
  the two renames leaves no folder at the target but the complete old one aside; the next
  save or load renames it back (:func:`recover`).

The parent folder is fsynced after the swap, and the old folder is deleted last. A killed save
leaves hidden siblings (``.<name>.reid-index-tmp-*`` / ``-old-*``) that the next save or load
removes. A lock file ``.<name>.reid-index.lock`` beside the target serializes saves, and
cleanup only runs while holding it, so it never removes the folder of a save in progress.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from ..utils.file_io import fsync_dir

try:
    import fcntl
except ImportError:  # not POSIX: saves are not serialized across processes
    fcntl = None

logger = logging.getLogger(__name__)

__all__ = ["fsync_dir", "folder_lock", "new_sibling", "recover", "recover_locked", "swap_in"]

TMP_TAG = ".reid-index-tmp-"
OLD_TAG = ".reid-index-old-"
LOCK_TAG = ".reid-index.lock"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _prefix(target: Path, tag: str) -> str:
    return f".{target.name}{tag}"


def new_sibling(target: Path, tag: str = TMP_TAG) -> Path:
    """A fresh, not yet existing hidden path beside ``target`` (same file system).

    Args:
        target: the folder being replaced.
        tag: :data:`TMP_TAG` or :data:`OLD_TAG`.
    """
    return target.parent / (_prefix(target, tag) + secrets.token_hex(6))


def _exchange(a: Path, b: Path) -> bool:
    """Swaps the names of ``a`` and ``b`` atomically; False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # glibc older than 2.28, or another libc
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM):
        return False  # the file system or kernel does not support the exchange
    raise OSError(err, os.strerror(err), str(b))


def swap_in(new: Path, target: Path) -> None:
    """Puts the complete folder ``new`` at ``target``, replacing whatever folder is there.

    Args:
        new: a fully written and fsynced folder beside ``target``.
        target: the destination; absent, or a folder that may be replaced.
    """
    parent = target.parent
    if not target.exists():
        os.rename(new, target)
        fsync_dir(parent)
        return
    if _exchange(new, target):
        fsync_dir(parent)
        shutil.rmtree(new, ignore_errors=True)  # ``new`` now holds the old folder
        return
    old = new_sibling(target, OLD_TAG)
    os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(old, target)  # put the old folder back rather than leave nothing
        raise
    fsync_dir(parent)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def folder_lock(target: Path, blocking: bool = True) -> Iterator[bool]:
    """Holds the lock file beside ``target`` (``flock``), released when the process dies.

    Args:
        target: the folder saved into.
        blocking: wait for the lock; otherwise give up at once if another process holds it.

    Yields:
        Whether the lock is held (False without ``fcntl``, when another process holds it and
        ``blocking`` is False, or when the lock file cannot be created, e.g. read-only media).
    """
    if fcntl is None:
        yield False
        return
    lock_path = target.parent / (_prefix(target, LOCK_TAG))
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _leftovers(target: Path) -> tuple[list[Path], list[Path]]:
    """Temporary and set-aside folders of earlier saves of ``target``."""
    try:
        names = os.listdir(target.parent)
    except OSError:
        return [], []
    tmp, old = _prefix(target, TMP_TAG), _prefix(target, OLD_TAG)
    return ([target.parent / n for n in names if n.startswith(tmp)],
            [target.parent / n for n in names if n.startswith(old)])


def recover_locked(target: Path) -> None:
    """Finishes or undoes interrupted saves of ``target``; the caller holds the lock.

    A set-aside old folder with no folder at ``target`` means a save died between its two
    renames: the old folder goes back. Every other leftover is removed.

    Args:
        target: the folder saved into.
    """
    tmps, olds = _leftovers(target)
    if olds and not os.path.lexists(target):
        newest = max(olds, key=lambda p: p.stat().st_mtime)
        os.rename(newest, target)
        fsync_dir(target.parent)
        olds.remove(newest)
        logger.warning("restored %s from an interrupted save", target)
    for p in tmps + olds:
        logger.info("removing %s, left by an interrupted save", p)
        shutil.rmtree(p, ignore_errors=True)


def recover(target: Path) -> None:
    """:func:`recover_locked` when leftovers exist and no save of ``target`` is running.

    Nothing is created or locked when there is nothing to clean (loading a read-only folder
    writes nothing).

    Args:
        target: the folder saved into.
    """
    tmps, olds = _leftovers(target)
    if not (tmps or olds):
        return
    with folder_lock(target, blocking=False) as held:
        if held:
            recover_locked(target)
