"""``cells.jsonl``: one JSON object per finished cell, appended atomically, read back with repair.

Every write holds an exclusive ``flock`` on ``cells.jsonl.lock``, so concurrent writers (several
runners, or a runner and ``--render-only``) never interleave. A line is appended with one
``os.write`` on an ``O_APPEND`` descriptor and fsynced; a rewrite goes through a temporary file
and a rename. A crash can therefore leave at most a truncated last line, which :meth:`load`
drops (that cell is simply run again).
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from ...utils.file_io import atomic_write
from .config import StudyError

__all__ = ["CellStore", "record_key"]

logger = logging.getLogger("reid_pbn")


def record_key(record: dict) -> tuple[str, str, int]:
    """``(group, method, seed)`` of a record: what identifies its cell."""
    return (str(record["group"]), str(record["method"]), int(record["seed"]))


class CellStore:
    """The results file of a study.

    Args:
        path: the ``cells.jsonl`` path (its folder is created on the first write).
    """

    def __init__(self, path: str):
        self.path = path
        self.lock_path = path + ".lock"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the file's exclusive lock (blocking until other writers are done)."""
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def load(self, repair: bool = True) -> list[dict]:
        """Read every record; drop (and with ``repair`` remove) a truncated last line.

        Args:
            repair: rewrite the file without a truncated last line (and with a final newline).

        Returns:
            The records in file order.

        Raises:
            StudyError: a line other than the last is not valid JSON (the file was edited).
        """
        if not os.path.isfile(self.path):
            return []
        with self.locked():
            with open(self.path, "rb") as f:
                data = f.read()
            lines = data.split(b"\n")
            tail = lines.pop()  # b"" when the file ends with a newline
            records = [self._parse(line, i + 1) for i, line in enumerate(lines) if line.strip()]
            if tail.strip():
                try:
                    records.append(json.loads(tail))
                except ValueError:
                    logger.warning("%s: dropping a truncated last line (an interrupted write); "
                                   "its cell runs again", self.path)
                if repair:
                    self._rewrite_unlocked(records)
        return records

    def _parse(self, line: bytes, lineno: int) -> dict:
        try:
            record = json.loads(line)
            record_key(record)
            return record
        except (ValueError, KeyError, TypeError) as e:
            raise StudyError(f"{self.path} line {lineno} is not a cell record ({e}); delete or "
                             "fix that line, then run again") from e

    def append(self, record: dict) -> None:
        """Append one record as one line, atomically with respect to other writers.

        Args:
            record: a JSON-serializable mapping with ``group``, ``method`` and ``seed``.
        """
        data = _encode(record)
        with self.locked():
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                written = os.write(fd, data)
                if written != len(data):  # only on a full disk; the next load drops the line
                    raise OSError(f"short write to {self.path} ({written} of {len(data)} bytes)")
                os.fsync(fd)
            finally:
                os.close(fd)

    def rewrite(self, records: Sequence[dict]) -> None:
        """Replace the file's content with ``records`` (temporary file, then rename).

        Args:
            records: the records, in the order to write.
        """
        with self.locked():
            self._rewrite_unlocked(records)

    def _rewrite_unlocked(self, records: Sequence[dict]) -> None:
        payload = b"".join(_encode(r) for r in records)
        atomic_write(self.path, lambda f: f.write(payload))


def _clean(value):
    # Strict JSON has no NaN or infinity; a metric that is undefined is written as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _encode(record: dict) -> bytes:
    return (json.dumps(_clean(record), ensure_ascii=False) + "\n").encode("utf-8")
