"""The training loop: a thin epoch/iteration loop plus hooks, and the default re-ID trainer."""

from __future__ import annotations

import abc
import hashlib
import logging
import os
import random
import time
from contextlib import nullcontext

import numpy as np
import torch
from tqdm import tqdm

from ..config import ConfigError
from ..data import build_test_loader, build_train_loader
from ..evaluation import check_evaluation_options, evaluation_kwargs_from_config
from ..layers import DSBN2d
from ..modeling import build_model
from ..utils import comm
from . import hooks
from .checkpoint import (
    Checkpointer,
    CheckpointError,
    UnreadableCheckpointError,
    load_model_weights,
)
from .defaults import EVAL_DIR, evaluation_provenance, resolve_device
from .inference import inference_on_datasets
from .solver import build_lr_scheduler, build_optimizer

logger = logging.getLogger("reid_pbn")


class TrainerBase(abc.ABC):
    """Runs ``run_step`` for ``iters_per_epoch`` iterations per epoch and calls the hooks.

    Attributes:
        epoch: current epoch (0-based).
        iter: global iteration (0-based).
        start_epoch / max_epoch: epoch range of ``train``.
        iters_per_epoch: iterations in one epoch.
    """

    def __init__(self) -> None:
        self.hooks: list[hooks.HookBase] = []
        self.epoch = 0
        self.iter = 0
        self.start_epoch = 0
        self.max_epoch = 0
        self.iters_per_epoch = 1
        self.last_metrics: dict[str, float] = {}

    @property
    def max_iter(self) -> int:
        """Total iterations of the run."""
        return self.max_epoch * self.iters_per_epoch

    def register_hooks(self, new_hooks: list) -> None:
        """Append hooks (None entries are skipped) and attach them to this trainer."""
        for h in new_hooks:
            if h is not None:
                h.trainer = self
                self.hooks.append(h)

    def _call(self, name: str) -> None:
        for h in self.hooks:
            getattr(h, name)()

    def train(self, start_epoch: int, max_epoch: int) -> None:
        """Train epochs ``start_epoch .. max_epoch - 1``."""
        self.start_epoch, self.max_epoch = start_epoch, max_epoch
        self.iter = start_epoch * self.iters_per_epoch
        logger.info("Training epochs %d..%d, %d iterations per epoch", start_epoch + 1,
                    max_epoch, self.iters_per_epoch)
        try:
            self._call("before_train")
            for self.epoch in range(start_epoch, max_epoch):
                self._call("before_epoch")
                bar = tqdm(range(self.iters_per_epoch), desc=f"epoch {self.epoch + 1}/{max_epoch}",
                           disable=not comm.is_main_process(), leave=False, dynamic_ncols=True)
                for _ in bar:
                    self._call("before_step")
                    self.run_step()
                    self._call("after_step")
                    self.iter += 1
                    bar.set_postfix({k: f"{v:.3f}" for k, v in self.last_metrics.items()
                                     if k.startswith("loss")})
                bar.close()
                logger.info("epoch %d/%d done: %s", self.epoch + 1, max_epoch,
                            ", ".join(f"{k}={v:.4f}" for k, v in self.last_metrics.items()))
                self._call("after_epoch")
        finally:
            self._call("after_train")

    @abc.abstractmethod
    def run_step(self) -> None:
        """One optimization step; subclasses implement it."""


class SimpleTrainer(TrainerBase):
    """Loss-sum optimization of a model whose training forward returns a dict of losses.

    An epoch is one pass of ``data_loader``: ``len(data_loader.batch_sampler)`` iterations
    (``len(data_loader)`` for a loader without a batch sampler), so every batch of the
    sampler's epoch is trained exactly once.

    Args:
        model: the model (possibly DDP-wrapped).
        data_loader: yields batch dicts; its (batch) sampler may have ``set_epoch(epoch)``.
        optimizer: the optimizer.
        device: where batches go.
        amp: autocast (bf16 on CPU, fp16 with gradient scaling on CUDA).
        clip_grad_norm: max global gradient norm (0 disables).
    """

    def __init__(self, model, data_loader, optimizer, device: torch.device, *, amp: bool = False,
                 clip_grad_norm: float = 0.0):
        super().__init__()
        self.model = model
        self.data_loader = data_loader
        self.optimizer = optimizer
        self.device = device
        self.amp = amp
        self.clip_grad_norm = clip_grad_norm
        self.scaler = torch.amp.GradScaler("cuda") if amp and device.type == "cuda" else None
        self.iters_per_epoch = epoch_length(data_loader)
        self._data_iter = None
        self._batches_this_epoch = 0
        self.register_hooks([_EpochData()])

    def _next_batch(self) -> dict:
        if self._data_iter is None:
            self._data_iter = iter(self.data_loader)
        try:
            batch = next(self._data_iter)
        except StopIteration:
            # Restarting here would train the first batches of the pass twice and hide an
            # epoch length that disagrees with the sampler's.
            raise RuntimeError(
                f"The data loader ran out after {self._batches_this_epoch} batches of epoch "
                f"{self.epoch + 1}, which has {self.iters_per_epoch} iterations; the epoch "
                "length must be len(data_loader.batch_sampler)."
            ) from None
        self._batches_this_epoch += 1
        return batch

    def start_epoch_data(self, epoch: int) -> None:
        """Reseed the sampler for ``epoch`` and start a fresh pass (so a resumed run sees the
        same batches as an uninterrupted one).

        Args:
            epoch: the epoch about to start (0-based).
        """
        for obj in (getattr(self.data_loader, "batch_sampler", None),
                    getattr(self.data_loader, "sampler", None)):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)
        self._data_iter = None
        self._batches_this_epoch = 0

    def run_step(self) -> None:
        batch = self._next_batch()
        batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
                 for k, v in batch.items()}
        self.model.train()
        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        ctx = torch.autocast(self.device.type, dtype=dtype) if self.amp else nullcontext()
        with ctx:
            loss_dict = self.model(batch)
        losses = sum(loss_dict.values())
        # Agreed on by every rank, so that all of them stop (not one raising while the others
        # wait in the next collective).
        if not comm.all_true(torch.isfinite(losses.detach())):
            values = {k: float(v.detach()) for k, v in loss_dict.items()}
            raise FloatingPointError(
                f"Loss became non-finite at iteration {self.iter + 1} (this rank: {values}). "
                "Training "
                "stopped; the last good checkpoint is kept. Lower SOLVER.BASE_LR, enable "
                "SOLVER.CLIP_GRAD_NORM or disable SOLVER.AMP, then resume with --resume."
            )
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(losses).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            losses.backward()
        if self.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.last_metrics = {"loss": losses.item(), **{k: v.item() for k, v in loss_dict.items()}}


def epoch_length(data_loader) -> int:
    """Iterations in one epoch: one pass of the loader's batch sampler.

    The batch sampler is the one place that knows the epoch length (it reads
    ``SOLVER.ITERS_PER_EPOCH`` and the world size), so the trainer, the LR schedule and the
    sampler agree by construction.

    Args:
        data_loader: a ``DataLoader`` (or any iterable with ``batch_sampler`` or ``__len__``).

    Returns:
        ``len(data_loader.batch_sampler)``, else ``len(data_loader)``.

    Raises:
        ValueError: the loader yields no batch in an epoch.
    """
    batch_sampler = getattr(data_loader, "batch_sampler", None)
    n = len(batch_sampler) if batch_sampler is not None else len(data_loader)
    if n < 1:
        raise ValueError("The training loader yields no batch per epoch; lower "
                         "SOLVER.IMS_PER_BATCH or add training images.")
    return n


class _EpochData(hooks.HookBase):
    """Starts each epoch's pass of the loader (``SimpleTrainer.start_epoch_data``)."""

    def before_epoch(self) -> None:
        self.trainer.start_epoch_data(self.trainer.epoch)


def seed_all(seed: int, deterministic: bool = False) -> int:
    """Seed torch, numpy and Python (a negative seed draws one from the clock).

    Args:
        seed: the seed; each DDP rank adds its rank so augmentations differ across ranks.
        deterministic: use deterministic algorithms (bit-reproducible CPU runs).

    Returns:
        The seed used on this rank.
    """
    if seed < 0:
        seed = int(time.time() * 1000) % (2**31)
    seed += comm.get_rank()
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    random.seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    return seed


class DefaultTrainer(SimpleTrainer):
    """The re-ID trainer built from a config: data, model, optimizer, schedule and hooks.

    Args:
        cfg: the frozen config.
    """

    def __init__(self, cfg):

        seed_all(cfg.SOLVER.SEED, cfg.SOLVER.DETERMINISTIC)
        check_evaluation_setup(cfg)
        if comm.is_main_process():  # also when built without default_setup (library use)
            os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        device = resolve_device(cfg.MODEL.DEVICE)
        loader, info = build_train_loader(cfg)
        self.data_info = info
        model = build_model(cfg, num_classes=info["num_classes"],
                            num_domains=info["num_domains"]).to(device)
        if cfg.MODEL.WEIGHTS:
            load_model_weights(model, cfg.MODEL.WEIGHTS,
                               allow_partial=bool(cfg.MODEL.WEIGHTS_PARTIAL_OK))
        optimizer = build_optimizer(cfg, model)
        if comm.get_world_size() > 1:
            check_sync_norms_route_alike(model)
            # Buffers stay per rank during training (each rank's statistics follow its own
            # batches); they are averaged before every evaluation and checkpoint.
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None,
                broadcast_buffers=False,
                find_unused_parameters=needs_unused_parameter_search(cfg))
        super().__init__(model, loader, optimizer, device, amp=cfg.SOLVER.AMP,
                         clip_grad_norm=cfg.SOLVER.CLIP_GRAD_NORM)
        self.cfg = cfg
        self.scheduler = build_lr_scheduler(cfg, optimizer, self.iters_per_epoch)
        self.checkpointer = Checkpointer(
            model, cfg.OUTPUT_DIR, save_to_disk=comm.is_main_process(),
            optimizer=optimizer, scheduler=self.scheduler, scaler=self.scaler)
        self.eval_hook = hooks.EvalHook(cfg.TEST.EVAL_PERIOD, self.evaluate,
                                        at_start=cfg.TEST.EVAL_AT_START)
        self.register_hooks([
            hooks.FreezeBackbone(self.unwrapped.backbone, cfg.SOLVER.FREEZE_ITERS)
            if cfg.SOLVER.FREEZE_ITERS > 0 else None,
            hooks.LRScheduler(self.scheduler),
            hooks.MetricsWriter(cfg.OUTPUT_DIR, cfg.SOLVER.LOG_PERIOD),
            hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD,
                                       self._checkpoint_extra,
                                       also_every=cfg.TEST.EVAL_PERIOD if cfg.DATASETS.TESTS
                                       else 0),
            self.eval_hook if cfg.DATASETS.TESTS else None,
        ])

    @property
    def unwrapped(self) -> torch.nn.Module:
        """The model without its DDP wrapper."""
        return getattr(self.model, "module", self.model)

    def _checkpoint_extra(self) -> dict:
        return {"epoch": self.epoch + 1, "iteration": self.iter + 1, "config": self.cfg.dump()}

    def resume_or_load(self, resume: bool, overwrite: bool = False) -> int:
        """Start a new run, or with ``resume`` restore the newest readable checkpoint.

        A new run refuses a folder holding an earlier run's checkpoints unless ``overwrite``.
        A resume never starts from scratch over existing checkpoints: when the newest cannot be
        read it falls back to older ones, and refuses when none can be read.

        Args:
            resume: continue from the checkpoints in OUTPUT_DIR.
            overwrite: a new run replaces (deletes) the earlier run's checkpoints.

        Returns:
            The epoch to start from (0 for a fresh run).

        Raises:
            CheckpointError: a new run over existing checkpoints without ``overwrite``, or a
                resume whose checkpoints are all unreadable.
        """
        if comm.is_main_process():
            self.checkpointer.remove_stale_temps()
        comm.synchronize()
        if not resume:
            self.checkpointer.check_new_run(overwrite)
            comm.synchronize()
            return 0
        last = self.checkpointer.last_checkpoint()
        candidates = [last] if last else []
        candidates += [p for p in self.checkpointer.checkpoints() if p != last]
        if not candidates:
            logger.info("No checkpoint in %s: starting from scratch", self.cfg.OUTPUT_DIR)
            return 0
        for path in candidates:
            try:
                extra = self.checkpointer.load(path)
            except UnreadableCheckpointError as e:
                logger.warning("Cannot resume from %s (%s); trying an older checkpoint", path,
                               str(e).splitlines()[0])
                continue
            epoch = extra.get("epoch", 0)
            if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
                raise CheckpointError(
                    f"{path} records epoch {epoch!r}, not a count of finished epochs; it was "
                    "not written by this trainer.")
            logger.info("Resumed from %s (epoch %d)", path, epoch)
            return epoch
        raise CheckpointError(
            f"None of the {len(candidates)} checkpoint(s) in {self.cfg.OUTPUT_DIR} can be read; "
            "refusing to start from scratch over them. Move them away, or start a new run with "
            "--overwrite.")

    def evaluate(self) -> dict:
        """Evaluate the model on DATASETS.TESTS (every rank extracts its shard; the main process
        evaluates and returns the results, the others return ``{}``)."""
        model = self.unwrapped
        comm.average_buffers(model)  # every rank extracts its shard with the same network
        was_training = model.training
        # An evaluation epoch is checkpointed first, so the last checkpoint holds this model
        # (before any: MODEL.WEIGHTS, or none for a fresh one).
        weights = self.checkpointer.last_checkpoint() or self.cfg.MODEL.WEIGHTS
        provenance = evaluation_provenance(self.cfg, weights) if comm.is_main_process() else None
        results = inference_on_datasets(self.cfg, model, list(self.cfg.DATASETS.TESTS),
                                        output_dir=os.path.join(self.cfg.OUTPUT_DIR, EVAL_DIR),
                                        provenance=provenance)
        model.train(was_training)
        return results

    def fit(self, resume: bool = False, overwrite: bool = False) -> dict:
        """Train (from the last checkpoint when ``resume``) and return the evaluation history.

        Args:
            resume: continue from OUTPUT_DIR's checkpoints.
            overwrite: a new run may replace an earlier run's checkpoints.
        """
        start = self.resume_or_load(resume, overwrite)
        if start >= self.cfg.SOLVER.MAX_EPOCH:
            logger.info("Checkpoint is at the final epoch already; nothing to train.")
        else:
            self.train(start, self.cfg.SOLVER.MAX_EPOCH)
        # Every rank logs this, so DDP runs can be checked for identical replicas.
        comm.average_buffers(self.unwrapped)
        logger.info("rank %d final weights checksum: %s, buffers checksum: %s", comm.get_rank(),
                    weights_checksum(self.unwrapped), buffers_checksum(self.unwrapped))
        return dict(self.eval_hook.history)


def weights_checksum(model: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of all parameters' bytes, in name order."""
    return _checksum(model.named_parameters())


def buffers_checksum(model: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of all buffers' bytes (running statistics), in name order."""
    return _checksum(model.named_buffers())


def _checksum(named_tensors) -> str:
    h = hashlib.sha256()
    for _, t in sorted(named_tensors, key=lambda kv: kv[0]):
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def check_evaluation_setup(cfg) -> None:
    """Fail before the first iteration on what evaluation would fail on after an epoch.

    Checks the ``TEST.*`` options and builds the loader of every ``DATASETS.TESTS`` entry
    (images are not decoded here), so an unknown or missing target data set, or a bad metric,
    is reported before any training work.

    Args:
        cfg: the config.

    Raises:
        ConfigError: a bad evaluation option or an unknown target data set.
        DatasetNotFoundError: a target data set's files are not under the data root.
    """
    check_evaluation_options(evaluation_kwargs_from_config(cfg))
    probe = cfg.clone()
    probe.defrost()
    probe.DATASETS.VERIFY_IMAGES = False
    for name in cfg.DATASETS.TESTS:
        try:
            build_test_loader(probe, name)
        except ValueError as e:
            raise ConfigError(f"DATASETS.TESTS entry '{name}': {e}") from None


def needs_unused_parameter_search(cfg) -> bool:
    """Whether DDP must look for parameters without a gradient in a step.

    That search costs a traversal of the autograd graph every step, so it is on only where
    parameters can miss a gradient: ``SOLVER.DDP_FIND_UNUSED_PARAMETERS``, a backbone frozen
    for the first iterations, or DSBN (a domain absent from a batch leaves its per-domain
    parameters unused).

    Args:
        cfg: the config.

    Returns:
        The flag for ``DistributedDataParallel(find_unused_parameters=...)``.
    """
    return bool(cfg.SOLVER.DDP_FIND_UNUSED_PARAMETERS or cfg.SOLVER.FREEZE_ITERS > 0
                or cfg.MODEL.BACKBONE.NORM == "DSBN")


def check_sync_norms_route_alike(model: torch.nn.Module) -> None:
    """Refuse synchronized norms inside DSBN under DDP.

    DSBN routes each sample to its domain's norm, so with mixed-domain batches the ranks call
    different domains' norms; synchronized norms there would enter different collectives
    on different ranks and hang.

    Args:
        model: the model before DDP wrapping.

    Raises:
        ConfigError: a DSBN layer holds SyncBN or PBN with ``sync``.
    """
    for name, m in model.named_modules():
        if not isinstance(m, DSBN2d):
            continue
        for inner in m.bns:
            if isinstance(inner, torch.nn.SyncBatchNorm) or getattr(inner, "sync", False):
                raise ConfigError(
                    f"{name}: DSBN with a synchronized inner norm ({type(inner).__name__}) "
                    "cannot run under DDP: ranks route samples of different domains to "
                    "different norms and their collectives would deadlock. Use "
                    "MODEL.BACKBONE.DSBN.INNER BN (or PBN with MODEL.BACKBONE.PBN.SYNC False).")
