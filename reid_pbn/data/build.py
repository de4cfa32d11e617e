"""Train and test data loaders from the config (the one place that reads ``DATASETS.*`` and
``DATALOADER.*``)."""

from __future__ import annotations

import inspect
import logging
import random
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from ..config import parse_kwargs
from ..utils import comm
from ..utils.comm import rank_world
from ..utils.registry import Registry, UnknownNameError
from .common import ReIDImageDataset, collate_batch
from .datasets import build_dataset, parse_dataset_name
from .datasets.bases import DatasetFormatError, EmptySplitError, ReIDDataset
from .datasets.synthetic import SyntheticDomain
from .samplers import (
    DomainBalancedBatchSampler,
    InferenceSampler,
    PKBatchSampler,
    RandomBatchSampler,
)
from .transforms import build_transforms

__all__ = [
    "TRAIN_SAMPLERS",
    "build_split_test_loader",
    "build_test_loader",
    "build_train_loader",
    "dataset_kwargs_from_cfg",
    "eval_split_ids",
    "merge_train_sets",
]

logger = logging.getLogger(__name__)


def dataset_kwargs_from_cfg(cfg, name: str) -> dict[str, Any]:
    """Constructor options of data set ``name`` from the config.

    ``verify_images``/``strict`` come from ``DATASETS.VERIFY_IMAGES``/``DATASETS.STRICT``; the
    synthetic domains take their sizes from ``DATASETS.SYNTHETIC.*``; ``DATASETS.KWARGS``
    entries are ``"key=value"`` (given to every data set whose constructor takes ``key``) or
    ``"Name.key=value"`` (given to data set ``Name`` only, e.g. ``"GRID.split_id=3"``).

    A name with an ``@value`` suffix (``"SyntheticLocal@0.33"``) gets the options of its
    registered data set (``SyntheticLocal``); ``Name.key`` entries may use either name, and
    the suffix's option is left to the name (it is not taken from ``DATASETS.KWARGS``).

    Args:
        cfg: the config.
        name: registry name of the data set, optionally with an ``@value`` suffix.

    Returns:
        Keyword arguments for :func:`~reid_pbn.data.build_dataset`.

    Raises:
        ValueError: unknown data set, an invalid ``@value`` suffix, or a ``Name.key`` entry
            that names an option the data set does not take.
    """
    base, cls, named = parse_dataset_name(name)
    kwargs: dict[str, Any] = {
        "verify_images": bool(cfg.DATASETS.VERIFY_IMAGES),
        "strict": bool(cfg.DATASETS.STRICT),
    }
    if issubclass(cls, SyntheticDomain):
        syn = cfg.DATASETS.SYNTHETIC
        kwargs.update(num_ids=int(syn.NUM_IDS), num_cams=int(syn.NUM_CAMS),
                      imgs_per_cam=int(syn.IMGS_PER_CAM), size=tuple(syn.SIZE),
                      seed=int(syn.SEED))
    accepted = set(inspect.signature(cls.__init__).parameters)
    for key, value in parse_kwargs(cfg.DATASETS.KWARGS).items():
        target, _, option = key.rpartition(".")
        if target and target not in (name, base):
            continue
        if option in named:
            continue
        if option in accepted:
            kwargs[option] = value
        elif target:
            raise ValueError(
                f"DATASETS.KWARGS entry '{key}': {name} takes no option '{option}' "
                f"(it takes {', '.join(sorted(accepted - {'self', 'root'}))})"
            )
    return kwargs


def _build(cfg, name: str, **extra: Any) -> ReIDDataset:
    kwargs = {**dataset_kwargs_from_cfg(cfg, name), **extra}
    root = cfg.DATASETS.ROOT or None
    rank, world = rank_world()
    if world == 1:
        return build_dataset(name, root, **kwargs)
    # Rank 0 first: it writes what a data set may generate (synthetic trees, GRID's
    # splits.json); the other ranks then find it in place instead of racing to write it.
    ds = build_dataset(name, root, **kwargs) if rank == 0 else None
    comm.synchronize()
    return ds if ds is not None else build_dataset(name, root, **kwargs)


def _names(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def merge_train_sets(datasets: list[ReIDDataset]) -> tuple[list[tuple], dict[str, Any]]:
    """Concatenate the train splits of several source data sets.

    Pids (and camera ids) are shifted so that every data set has its own range: data set
    ``d`` holds pids ``offset_d .. offset_d + num_train_pids_d - 1``. Each item gets the index
    of its data set as fourth element (its domain).

    Args:
        datasets: the source data sets, in domain order.

    Returns:
        ``(items, info)``: items ``(img_path, pid, camid, domain)`` and ``info`` with
        ``num_classes``, ``num_domains``, ``num_images``, ``datasets`` (names) and
        ``pid_offsets``.

    Raises:
        EmptySplitError: a data set has no training images.
    """
    items: list[tuple] = []
    pid_off = cam_off = 0
    offsets = []
    for domain, ds in enumerate(datasets):
        if not ds.train:
            raise EmptySplitError(
                f"{ds.name} has no training images (folder {ds.dataset_dir}); it cannot be a "
                "source in DATASETS.NAMES"
            )
        offsets.append(pid_off)
        items += [(p, pid + pid_off, cam + cam_off, domain) for p, pid, cam in ds.train]
        pid_off += max(pid for _, pid, _ in ds.train) + 1
        cam_off += max(cam for _, _, cam in ds.train) + 1
    info = {
        "num_classes": pid_off,
        "num_domains": len(datasets),
        "num_images": len(items),
        "datasets": [ds.name for ds in datasets],
        "pid_offsets": offsets,
    }
    return items, info


def _resolve_seed(seed: int) -> int:
    if seed >= 0:
        return int(seed)
    # A negative seed asks for a fresh one; all ranks must agree on it, or their identity
    # shards would overlap.
    t = torch.tensor([int(time.time() * 1000) % (2**31)], dtype=torch.int64)
    if comm.is_dist():
        t = t.to(comm.collective_device())
        dist.broadcast(t, src=0)
    logger.info("SOLVER.SEED < 0: data sampling uses seed %d", int(t))
    return int(t)


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker; numpy and Python's random (used by some user transforms) are
    # seeded from it so that a seeded run is reproducible.
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def _loader(dataset, cfg, seed: int, **kwargs) -> DataLoader:
    workers = int(cfg.DATALOADER.NUM_WORKERS)
    return DataLoader(
        dataset,
        num_workers=workers,
        persistent_workers=workers > 0,
        collate_fn=collate_batch,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    )


#: ``DATALOADER.SAMPLER`` -> builder ``(dataset, batch_size, cfg, seed, iters_per_epoch)`` of
#: the batch sampler.
TRAIN_SAMPLERS = Registry(
    "train sampler",
    doc="Train batch samplers: ``fn(dataset, batch_size, cfg, seed, iters_per_epoch)``.",
    items={
        "pk": lambda ds, bs, cfg, seed, iters: PKBatchSampler(
            ds.pids, bs, cfg.DATALOADER.NUM_INSTANCE, seed=seed, iters_per_epoch=iters),
        "domain_balanced": lambda ds, bs, cfg, seed, iters: DomainBalancedBatchSampler(
            ds.pids, ds.domains, bs, cfg.DATALOADER.NUM_INSTANCE, seed=seed,
            iters_per_epoch=iters),
        "random": lambda ds, bs, cfg, seed, iters: RandomBatchSampler(
            len(ds), bs, seed=seed, iters_per_epoch=iters),
    },
)


def build_train_loader(cfg) -> tuple[DataLoader, dict[str, Any]]:
    """Training loader over the train splits of ``DATASETS.NAMES``.

    Batches are dicts ``{"images", "pids", "camids", "domains", "img_paths"}`` (see
    :func:`~reid_pbn.data.common.collate_batch`); pids are namespaced per source data set and
    ``domains`` is the source's index in ``DATASETS.NAMES``. The batch sampler
    (``loader.batch_sampler``) has ``set_epoch(epoch, start_iter=0)``; call it before each
    epoch (its batches depend only on the seed, the epoch and the rank, so a resumed run needs
    no sampler state beyond them).

    Args:
        cfg: the config (``DATASETS.*``, ``DATALOADER.*``, ``INPUT.*``,
            ``SOLVER.IMS_PER_BATCH`` (all processes together), ``SOLVER.ITERS_PER_EPOCH``,
            ``SOLVER.SEED``).

    Returns:
        ``(loader, info)`` with ``info`` = ``{"num_classes", "num_domains", "num_images",
        "datasets", "pid_offsets"}``.

    Raises:
        ValueError: unknown sampler, duplicate source names, or a batch size that does not
            split into P x K per process.
    """
    names = _names(cfg.DATASETS.NAMES)
    if not names:
        raise ValueError("DATASETS.NAMES is empty: name at least one training data set")
    if len(set(names)) != len(names):
        raise ValueError(f"DATASETS.NAMES lists a data set twice: {names}")
    sampler_name = cfg.DATALOADER.SAMPLER
    try:
        make_batch_sampler = TRAIN_SAMPLERS.get(sampler_name)
    except UnknownNameError as e:
        raise ValueError(f"DATALOADER.SAMPLER: {e}") from None
    datasets = [_build(cfg, n) for n in names]
    items, info = merge_train_sets(datasets)
    dataset = ReIDImageDataset(items, build_transforms(cfg, is_train=True))
    rank, world = rank_world()
    total = int(cfg.SOLVER.IMS_PER_BATCH)
    if total % world:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH ({total}) must be divisible by the number of processes ({world})"
        )
    seed = _resolve_seed(int(cfg.SOLVER.SEED))
    iters = int(cfg.SOLVER.ITERS_PER_EPOCH) or None
    batch_sampler = make_batch_sampler(dataset, total // world, cfg, seed, iters)
    # Each sample's augmentation draws from its own seed, so that runs with any number of
    # workers, and resumed runs, see the same augmented images.
    batch_sampler.sample_seeds = True
    loader = _loader(dataset, cfg, seed + rank, batch_sampler=batch_sampler)
    logger.info(
        "Train loader: %d images, %d identities, %d domain(s) %s, sampler %s, %d batches/epoch",
        info["num_images"], info["num_classes"], info["num_domains"], info["datasets"],
        sampler_name, len(batch_sampler),
    )
    return loader, info


def build_test_loader(cfg, name: str) -> tuple[DataLoader, int]:
    """Test loader of data set ``name``: its query images, then its gallery images, in order.

    Under DDP each rank reads a contiguous shard (see
    :class:`~reid_pbn.data.samplers.InferenceSampler`); gathering in rank order restores the
    order. ``domains`` in the batches is the data set's index in ``DATASETS.NAMES`` when it is
    also a source, else -1 (an unseen domain).

    Args:
        cfg: the config (``DATASETS.*``, ``INPUT.*``, ``TEST.IMS_PER_BATCH`` (all processes
            together), ``DATALOADER.NUM_WORKERS``).
        name: registry name of the data set.

    Returns:
        ``(loader, num_query)``: the first ``num_query`` items are the query.

    Raises:
        EmptySplitError: the query or gallery split is empty.
        DatasetFormatError: no query identity appears in the gallery.
    """
    ds = _build(cfg, name)
    _check_test_splits(ds, name)
    sources = _names(cfg.DATASETS.NAMES)
    domain = sources.index(name) if name in sources else -1
    return _test_loader(cfg, ds.query + ds.gallery, domain), len(ds.query)


def eval_split_ids(cfg, name: str) -> list[int] | None:
    """The standard splits of test set ``name`` that evaluation averages over, if any.

    A data set with several standard splits (``num_eval_splits > 1``, e.g. GRID's 10) is
    evaluated on all of them, as the literature reports it, when ``TEST.ALL_SPLITS`` is on,
    the data set is not a training source (a source was trained on one split's train ids, so
    only that split's test ids are unseen) and ``DATASETS.KWARGS`` fixes no split for it
    (``"GRID.split_id=3"`` or ``"split_id=3"``). The decision is logged.

    Args:
        cfg: the config (``DATASETS.NAMES``, ``DATASETS.KWARGS``, ``TEST.ALL_SPLITS``).
        name: registry name of the test set.

    Returns:
        The split ids to evaluate, or ``None`` to evaluate the configured split only (also
        for a name that is not registered: :func:`build_test_loader` reports that).
    """
    try:
        base, cls, named = parse_dataset_name(name)
    except ValueError:
        return None
    option = cls.eval_split_option
    if cls.num_eval_splits <= 1 or option is None:
        return None
    configured = dataset_kwargs_from_cfg(cfg, name).get(option, 0)
    explicit = option in named or any(
        key.rpartition(".")[2] == option and key.rpartition(".")[0] in ("", name, base)
        for key in parse_kwargs(cfg.DATASETS.KWARGS)
    )
    if name in _names(cfg.DATASETS.NAMES):
        logger.info("%s is a training source: evaluated on its configured split %s=%s only",
                    name, option, configured)
        return None
    if explicit:
        logger.info("%s: %s=%s fixed in DATASETS.KWARGS: evaluated on that split only", name,
                    option, configured)
        return None
    if not cfg.TEST.ALL_SPLITS:
        logger.info("%s: TEST.ALL_SPLITS is off: evaluated on split %s=%s only", name, option,
                    configured)
        return None
    logger.info("%s: mean over %d splits (%s=0..%d)", name, cls.num_eval_splits, option,
                cls.num_eval_splits - 1)
    return list(range(cls.num_eval_splits))


def build_split_test_loader(
    cfg, name: str, split_ids: list[int]
) -> tuple[DataLoader, list[tuple[np.ndarray, np.ndarray]]]:
    """One test loader over several splits of ``name``, with each split's query and gallery.

    Every image is read once, however many splits it is tested in (GRID's splits share their
    images), so features are extracted once and each split is scored on its own rows.

    Args:
        cfg: the config (as for :func:`build_test_loader`).
        name: registry name of a data set with ``eval_split_option`` (see
            :func:`eval_split_ids`).
        split_ids: the splits, each given to the data set's ``eval_split_option``.

    Returns:
        ``(loader, splits)``: ``splits[i]`` is ``(query_rows, gallery_rows)``, integer index
        arrays into the loader's items for ``split_ids[i]``.

    Raises:
        ValueError: the data set has no split option.
        EmptySplitError: a split's query or gallery is empty.
        DatasetFormatError: a split has no query identity in its gallery.
    """
    option = parse_dataset_name(name).cls.eval_split_option
    if option is None:
        raise ValueError(f"{name} has no standard splits to evaluate")
    # Keyed by the whole item, so an image labelled differently in two splits is kept twice.
    rows: dict[tuple, int] = {}
    splits = []
    for split_id in split_ids:
        ds = _build(cfg, name, **{option: split_id})
        _check_test_splits(ds, f"{name} ({option}={split_id})")
        idx = [np.array([rows.setdefault(tuple(it), len(rows)) for it in items], dtype=np.int64)
               for items in (ds.query, ds.gallery)]
        splits.append((idx[0], idx[1]))
    return _test_loader(cfg, list(rows), -1), splits


def _check_test_splits(ds: ReIDDataset, name: str) -> None:
    for split in ("query", "gallery"):
        if not getattr(ds, split):
            raise EmptySplitError(
                f"{name} has no {split} images (folder {ds.dataset_dir}); it cannot be a test "
                "set in DATASETS.TESTS"
            )
    q_pids, g_pids = {it[1] for it in ds.query}, {it[1] for it in ds.gallery}
    if not q_pids & g_pids:
        raise DatasetFormatError(
            f"{name}: none of the {len(q_pids)} query identities appears in the gallery, so no "
            "query can be evaluated; check the query/gallery folders or list files"
        )
    missing = len(q_pids - g_pids)
    if missing:
        logger.warning("%s: %d query identities have no gallery image; those queries are skipped",
                       name, missing)


def _test_loader(cfg, items: list[tuple], domain: int) -> DataLoader:
    # The reduced-scale decoding of huge JPEGs is part of the test-time preprocessing that
    # FeatureExtractor shares, so both give the same features for any image.
    dataset = ReIDImageDataset(items, build_transforms(cfg, is_train=False),
                               default_domain=domain,
                               reduce_to=tuple(int(v) for v in cfg.INPUT.SIZE_TEST))
    _, world = rank_world()
    batch = max(1, int(cfg.TEST.IMS_PER_BATCH) // world)
    return _loader(dataset, cfg, max(int(cfg.SOLVER.SEED), 0), batch_size=batch,
                   sampler=InferenceSampler(len(dataset)), shuffle=False, drop_last=False)
