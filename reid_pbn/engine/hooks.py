"""Training hooks: each does one job at fixed points of the loop (detectron2's HookBase shape).

A hook may implement ``before_train``, ``before_epoch``, ``before_step``, ``after_step``,
``after_epoch`` and ``after_train``; ``self.trainer`` is set when it is registered.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable

import torch

from ..utils import comm

logger = logging.getLogger("reid_pbn")


class HookBase:
    """Base class of hooks; every method is a no-op by default."""

    trainer = None

    def before_train(self) -> None:
        """Called once before the first epoch."""

    def before_epoch(self) -> None:
        """Called at the start of every epoch."""

    def before_step(self) -> None:
        """Called before every iteration."""

    def after_step(self) -> None:
        """Called after every iteration."""

    def after_epoch(self) -> None:
        """Called at the end of every epoch."""

    def after_train(self) -> None:
        """Called once after training ends (also after an exception)."""


class LRScheduler(HookBase):
    """Steps a per-iteration LR scheduler after every iteration."""

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def after_step(self) -> None:
        self.scheduler.step()


class FreezeBackbone(HookBase):
    """Trains only the head for the first ``freeze_iters`` iterations (new layers settle
    before they push gradients into pretrained weights)."""

    def __init__(self, backbone: torch.nn.Module, freeze_iters: int):
        self.backbone = backbone
        self.freeze_iters = freeze_iters
        self._frozen = False

    def _set(self, frozen: bool) -> None:
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        self._frozen = frozen

    def before_step(self) -> None:
        want = self.trainer.iter < self.freeze_iters
        if want != self._frozen:
            self._set(want)
            logger.info("Backbone %s at iteration %d", "frozen" if want else "unfrozen",
                        self.trainer.iter)


class PeriodicCheckpointer(HookBase):
    """Saves the full training state every ``period`` epochs, every ``also_every`` epochs
    (the evaluation period, so that an evaluation that fails never costs the epoch's
    training) and at the end of training.

    Register it before the evaluation hook: hooks run in registration order.
    """

    def __init__(self, checkpointer, period: int, extra: Callable[[], dict],
                 also_every: int = 0):
        self.checkpointer = checkpointer
        self.period = max(int(period), 1)
        self.also_every = max(int(also_every), 0)
        self.extra = extra

    def after_epoch(self) -> None:
        t = self.trainer
        done = t.epoch + 1
        if done == t.max_epoch:
            self.checkpointer.save("model_final", **self.extra())
        elif done % self.period == 0 or (self.also_every and done % self.also_every == 0):
            self.checkpointer.save(f"model_{done:04d}", **self.extra())


class EvalHook(HookBase):
    """Evaluates every ``period`` epochs (0: only after the last epoch), optionally also
    before training, and keeps every result in ``self.history``.

    Args:
        period: epochs between evaluations.
        eval_fn: callable returning ``{dataset name: results dict}``.
        at_start: also evaluate the untrained model before the first epoch.
    """

    def __init__(self, period: int, eval_fn: Callable[[], dict], at_start: bool = False):
        self.period = period
        self.eval_fn = eval_fn
        self.at_start = at_start
        self.history: list[tuple[str, dict]] = []

    def _run(self, tag: str) -> None:
        results = self.eval_fn()
        self.history.append((tag, results))
        writer = next((h for h in self.trainer.hooks if isinstance(h, MetricsWriter)), None)
        if writer is not None:
            writer.write({"eval": tag, **{
                name: {k: float(v) for k, v in r.items() if isinstance(v, (int, float))}
                for name, r in results.items()
            }})
        comm.synchronize()

    def before_train(self) -> None:
        if self.at_start and self.trainer.start_epoch == 0:
            self._run("before training")

    def after_epoch(self) -> None:
        done = self.trainer.epoch + 1
        if done == self.trainer.max_epoch or (self.period and done % self.period == 0):
            self._run(f"epoch {done}")


class MetricsWriter(HookBase):
    """Appends training metrics to ``metrics.jsonl`` (and TensorBoard when installed) and logs
    them every ``period`` iterations."""

    def __init__(self, output_dir: str, period: int):
        self.period = max(int(period), 1)
        self.path = os.path.join(output_dir, "metrics.jsonl")
        self.tb = None
        self._t0 = None
        if comm.is_main_process():
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(output_dir)
            except ImportError:
                logger.debug("tensorboard is not installed; metrics go to %s only", self.path)

    def write(self, record: dict) -> None:
        """Append one JSON line (main process only)."""
        if not comm.is_main_process():
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def before_step(self) -> None:
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def after_step(self) -> None:
        t = self.trainer
        if (t.iter + 1) % self.period and t.iter + 1 != t.max_iter:
            return
        elapsed = time.perf_counter() - self._t0
        self._t0 = time.perf_counter()
        rec = {"iteration": t.iter + 1, "epoch": t.epoch + 1,
               "lr": t.optimizer.param_groups[0]["lr"],
               "sec_per_iter": elapsed / self.period, **t.last_metrics}
        self.write(rec)
        if self.tb is not None:
            for k, v in rec.items():
                if k not in ("iteration", "epoch"):
                    self.tb.add_scalar(k, v, t.iter + 1)
        logger.debug("iter %d: %s", t.iter + 1,
                     ", ".join(f"{k}={v:.4g}" for k, v in t.last_metrics.items()))

    def after_train(self) -> None:
        if self.tb is not None:
            self.tb.close()
