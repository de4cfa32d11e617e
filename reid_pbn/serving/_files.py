"""Small file-system helpers of the gallery store: durable writes and the folder lock."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from ..utils.file_io import fsync_dir

try:
    import fcntl
except ImportError:  # not POSIX: a second writer is not detected
    fcntl = None

TMP_SUFFIX = ".tmp"


def write_atomic(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Writes ``data`` to ``path`` so that ``path`` is either absent, old, or complete and new.

    The bytes go to a hidden temporary file in the same folder, which is renamed over ``path``.
    A killed writer leaves only the temporary file (removed by the gallery's cleanup).

    Args:
        path: destination file.
        data: its content.
        sync: fsync the file and the folder (durability across a power loss, not only a
            killed process).
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync:
        fsync_dir(path.parent)


class FolderLock:
    """An exclusive ``flock`` on a file in a folder, held until :meth:`release`.

    The kernel drops it when the process dies, so a killed server never leaves the gallery
    locked.

    Args:
        path: the lock file (created when missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Takes the lock without waiting.

        Returns:
            False when another process holds it.
        """
        if fcntl is None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        """Releases the lock (no-op when not held)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
