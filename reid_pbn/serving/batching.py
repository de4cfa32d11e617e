"""Batched inference for a service: concurrent requests share forward passes.

One forward pass over 16 images costs far less than 16 passes over one, so requests that
arrive together are embedded together. A worker thread takes the first waiting request, waits
at most ``max_wait_ms`` for more (up to ``max_batch``), runs the model once, and hands every
request its own row.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import numpy as np

__all__ = ["BatchQueue"]

logger = logging.getLogger(__name__)

_STOP = object()


class BatchQueue:
    """Runs ``fn`` on batches of submitted items in a worker thread.

    Args:
        fn: maps a list of items to an array with one row per item.
        max_batch: most items per call of ``fn``.
        max_wait_ms: how long the first item of a batch waits for company.

    Attributes:
        batches: calls of ``fn`` so far.
        items: items processed so far.
    """

    def __init__(self, fn: Callable[[Sequence], np.ndarray], max_batch: int = 16,
                 max_wait_ms: float = 5.0) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.fn = fn
        self.max_batch = int(max_batch)
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        self.batches = 0
        self.items = 0
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="reid-batcher", daemon=True)
        self._thread.start()

    def submit(self, item) -> Future:
        """Queues one item.

        Args:
            item: what ``fn`` takes one of (e.g. an HWC image array).

        Returns:
            A future resolving to the item's row of ``fn``'s output.
        """
        fut: Future = Future()
        self._queue.put((item, fut))
        return fut

    def close(self) -> None:
        """Stops the worker after the queued items."""
        self._queue.put(_STOP)
        self._thread.join(timeout=30)

    def _next_batch(self) -> tuple[list, bool]:
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch, deadline = [first], time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                nxt = self._queue.get(timeout=remaining) if remaining > 0 else \
                    self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is _STOP:
                return batch, True
            batch.append(nxt)
        return batch, False

    def _run(self) -> None:
        stop = False
        while not stop:
            batch, stop = self._next_batch()
            live = [(item, fut) for item, fut in batch if fut.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                out = self.fn([item for item, _ in live])
            except Exception as e:  # noqa: BLE001 - every waiting request learns of it
                logger.exception("batched inference failed")
                for _, fut in live:
                    fut.set_exception(e)
                continue
            self.batches += 1
            self.items += len(live)
            for row, (_, fut) in zip(out, live):
                fut.set_result(row)
