"""Batch samplers: P identities x K images (optionally one domain per batch), random batches, and
an in-order sharded sampler for inference. All are DDP-aware and seeded with torch generators."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from ..utils.comm import rank_world

__all__ = [
    "DomainBalancedBatchSampler",
    "InferenceSampler",
    "PKBatchSampler",
    "RandomBatchSampler",
]


def _generator(*keys: int) -> torch.Generator:
    """A torch generator seeded from several integers (seed, epoch, rank, ...)."""
    seed = int(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(1)[0])
    return torch.Generator().manual_seed(seed)


class _EpochBatchSampler(Sampler[list[int]], ABC):
    """Epoch bookkeeping shared by the training batch samplers.

    ``set_epoch(e)`` makes the next iteration produce epoch ``e``'s batches, which depend only
    on ``(seed, e, rank)``; ``start_iter`` skips the first batches of that epoch (resuming in
    the middle of an epoch gives the batches an uninterrupted run would have seen). With
    ``infinite=True`` iteration runs through epochs ``e, e+1, ...`` without end.

    With ``sample_seeds`` True, every index comes paired with a seed, ``(index, seed)``, that
    depends only on ``(seed, rank, epoch, batch, position)``: :class:`ReIDImageDataset` draws
    that sample's augmentation from it, so the draws do not depend on the number of loader
    workers, on which worker gets the batch, or on where a run was resumed.
    """

    def __init__(self, *, seed: int, rank: int | None, world_size: int | None, infinite: bool):
        self.seed = int(seed)
        self.rank, self.world_size = rank_world(rank, world_size)
        self.infinite = infinite
        self.epoch = 0
        self.start_iter = 0
        self.sample_seeds = False

    def set_epoch(self, epoch: int, start_iter: int = 0) -> None:
        """Select the epoch whose batches the next iteration yields.

        Args:
            epoch: epoch number (the same on every rank).
            start_iter: batches of that epoch to skip (mid-epoch resume).
        """
        self.epoch = int(epoch)
        self.start_iter = int(start_iter)

    @abstractmethod
    def _epoch_batches(self, epoch: int) -> Iterator[list[int]]:
        """Yield this rank's batches of ``epoch``."""

    def __iter__(self) -> Iterator[list]:
        epoch, skip = self.epoch, self.start_iter
        while True:
            for i, batch in enumerate(self._epoch_batches(epoch)):
                if i >= skip:
                    yield self._with_seeds(batch, epoch, i) if self.sample_seeds else batch
            if not self.infinite:
                return
            epoch, skip = epoch + 1, 0

    def _with_seeds(self, batch: list[int], epoch: int, i: int) -> list[tuple[int, int]]:
        keys = [self.seed & 0xFFFFFFFF, self.rank, epoch, i]
        seeds = np.random.SeedSequence(keys).generate_state(len(batch), dtype=np.uint64)
        return [(idx, int(s) & 0x7FFF_FFFF_FFFF_FFFF) for idx, s in zip(batch, seeds)]


class _IdentityPool:
    """Hands out K-image chunks of P distinct identities at a time.

    Every identity's images are shuffled and cut into chunks of K (an identity with fewer
    than K images is sampled with replacement); P identities are drawn with probability
    proportional to their chunks left, until fewer than P identities have chunks left; then
    the exhausted identities are refilled. Over an epoch nearly every image is used once.
    """

    def __init__(self, index_by_pid: dict[int, list[int]], pids: Sequence[int], k: int,
                 generator: torch.Generator):
        self.index_by_pid = index_by_pid
        self.pids = list(pids)
        self.k = k
        self.g = generator
        self.chunks: dict[int, list[list[int]]] = {p: [] for p in self.pids}

    def _refill(self, pid: int) -> None:
        idxs = self.index_by_pid[pid]
        if len(idxs) < self.k:
            picks = torch.randint(len(idxs), (self.k,), generator=self.g).tolist()
        else:
            picks = torch.randperm(len(idxs), generator=self.g).tolist()
        order = [idxs[i] for i in picks]
        self.chunks[pid] = [order[i:i + self.k] for i in range(0, len(order) - self.k + 1, self.k)]

    def take(self, p: int) -> list[int]:
        available = [q for q in self.pids if self.chunks[q]]
        if len(available) < p:
            for q in self.pids:
                if not self.chunks[q]:
                    self._refill(q)
            available = self.pids
        # Identities with more chunks left are likelier picks, so that identities run out
        # together and an epoch uses (nearly) every image once.
        weights = torch.tensor([len(self.chunks[q]) for q in available], dtype=torch.float)
        chosen = torch.multinomial(weights, p, replacement=False, generator=self.g).tolist()
        batch: list[int] = []
        for i in chosen:
            batch += self.chunks[available[i]].pop()
        return batch


def _index_by_pid(pids: Sequence[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for i, pid in enumerate(pids):
        out[int(pid)].append(i)
    return dict(out)


def _num_chunks(index_by_pid: dict[int, list[int]], k: int) -> int:
    return sum(max(1, len(v) // k) for v in index_by_pid.values())


def _pk_epoch_length(index_by_pid: dict[int, list[int]], k: int, p: int, world_size: int,
                     iters_per_epoch: int | None) -> int:
    """Batches per epoch of a P x K sampler: ``iters_per_epoch``, or by default enough to use
    every K-image chunk about once (``sum_i max(1, n_i // K) // (P * world_size)``, at least 1)."""
    return iters_per_epoch or max(1, _num_chunks(index_by_pid, k) // (p * world_size))


class PKBatchSampler(_EpochBatchSampler):
    """Batches of P identities x K images each (the batch-hard triplet loss needs K >= 2).

    Under DDP the identities are permuted each epoch with a generator shared by all ranks
    and dealt round-robin, so ranks draw from disjoint identity sets; every rank yields the
    same number of batches.

    Args:
        pids: identity of every data-set index (training labels).
        batch_size: images per batch on this process (P = batch_size // K).
        num_instances: K, images per identity in a batch.
        seed: base seed; batches depend only on (seed, epoch, rank).
        rank: this process's rank (``None``: from ``torch.distributed``, else 0).
        world_size: number of processes (``None``: from ``torch.distributed``, else 1).
        iters_per_epoch: batches per epoch; ``None`` covers every image about once
            (``sum_i max(1, n_i // K) // (P * world_size)`` batches).
        infinite: iterate over epochs without end.

    Raises:
        ValueError: ``batch_size`` not a multiple of K, or fewer than P identities per rank.
    """

    def __init__(
        self,
        pids: Sequence[int],
        batch_size: int,
        num_instances: int,
        *,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        iters_per_epoch: int | None = None,
        infinite: bool = False,
    ):
        super().__init__(seed=seed, rank=rank, world_size=world_size, infinite=infinite)
        self.k, self.p = _check_pk(batch_size, num_instances)
        self.index_by_pid = _index_by_pid(pids)
        self.all_pids = sorted(self.index_by_pid)
        _check_enough_ids(len(self.all_pids), self.p, self.world_size, "the training set")
        self._len = _pk_epoch_length(self.index_by_pid, self.k, self.p, self.world_size,
                                     iters_per_epoch)

    def __len__(self) -> int:
        return self._len

    def _epoch_batches(self, epoch: int) -> Iterator[list[int]]:
        perm = torch.randperm(len(self.all_pids), generator=_generator(self.seed, epoch)).tolist()
        mine = [self.all_pids[i] for i in perm[self.rank::self.world_size]]
        pool = _IdentityPool(self.index_by_pid, mine, self.k,
                             _generator(self.seed, epoch, self.rank + 1))
        for _ in range(self._len):
            yield pool.take(self.p)


class DomainBalancedBatchSampler(_EpochBatchSampler):
    """P x K batches whose images all come from one source domain, cycling through domains.

    Batch ``i`` of an epoch holds domain ``i % num_domains`` on every rank (so domain-specific
    normalization sees one domain per step), with identities of that domain sharded across
    ranks as in :class:`PKBatchSampler`.

    Args:
        pids: identity of every data-set index.
        domains: domain index of every data-set index.
        batch_size: images per batch on this process.
        num_instances: K, images per identity in a batch.
        seed: base seed.
        rank: this process's rank (``None``: from ``torch.distributed``).
        world_size: number of processes (``None``: from ``torch.distributed``).
        iters_per_epoch: batches per epoch; ``None`` covers every image about once.
        infinite: iterate over epochs without end.

    Raises:
        ValueError: a domain has fewer than P identities per rank, or an identity appears in
            two domains.
    """

    def __init__(
        self,
        pids: Sequence[int],
        domains: Sequence[int],
        batch_size: int,
        num_instances: int,
        *,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        iters_per_epoch: int | None = None,
        infinite: bool = False,
    ):
        super().__init__(seed=seed, rank=rank, world_size=world_size, infinite=infinite)
        if len(pids) != len(domains):
            raise ValueError(f"pids ({len(pids)}) and domains ({len(domains)}) differ in length")
        self.k, self.p = _check_pk(batch_size, num_instances)
        self.index_by_pid = _index_by_pid(pids)
        pid_domain: dict[int, int] = {}
        for pid, dom in zip(pids, domains):
            if pid_domain.setdefault(int(pid), int(dom)) != int(dom):
                raise ValueError(
                    f"identity {pid} appears in domains {pid_domain[int(pid)]} and {dom}; "
                    "pids must be namespaced per source data set"
                )
        self.domains = sorted(set(pid_domain.values()))
        self.pids_by_domain = {d: sorted(p for p, dd in pid_domain.items() if dd == d)
                               for d in self.domains}
        for d, dpids in self.pids_by_domain.items():
            _check_enough_ids(len(dpids), self.p, self.world_size, f"domain {d}")
        self._len = _pk_epoch_length(self.index_by_pid, self.k, self.p, self.world_size,
                                     iters_per_epoch)

    def __len__(self) -> int:
        return self._len

    def _epoch_batches(self, epoch: int) -> Iterator[list[int]]:
        pools = []
        for d in self.domains:
            dpids = self.pids_by_domain[d]
            perm = torch.randperm(len(dpids), generator=_generator(self.seed, epoch, 0, d)).tolist()
            mine = [dpids[i] for i in perm[self.rank::self.world_size]]
            pools.append(_IdentityPool(self.index_by_pid, mine, self.k,
                                       _generator(self.seed, epoch, self.rank + 1, d)))
        for i in range(self._len):
            yield pools[i % len(pools)].take(self.p)


class RandomBatchSampler(_EpochBatchSampler):
    """Shuffled batches without identity structure (e.g. for an ID-loss-only baseline).

    Each epoch permutes all indices with a generator shared by all ranks; rank ``r`` takes
    every ``world_size``-th index starting at ``r``; incomplete batches are dropped. An epoch
    longer than one pass continues with further permutations.

    Args:
        size: number of data-set items.
        batch_size: images per batch on this process.
        seed: base seed.
        rank: this process's rank (``None``: from ``torch.distributed``).
        world_size: number of processes (``None``: from ``torch.distributed``).
        iters_per_epoch: batches per epoch; ``None`` is one pass over the items
            (``(size // world_size) // batch_size`` batches).
        infinite: iterate over epochs without end.

    Raises:
        ValueError: fewer items per rank than one batch.
    """

    def __init__(self, size: int, batch_size: int, *, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, iters_per_epoch: int | None = None,
                 infinite: bool = False):
        super().__init__(seed=seed, rank=rank, world_size=world_size, infinite=infinite)
        self.size, self.batch_size = int(size), int(batch_size)
        self._per_pass = (self.size // self.world_size) // self.batch_size
        if self._per_pass < 1:
            raise ValueError(
                f"{self.size} training images cannot fill one batch of {self.batch_size} per "
                f"process on {self.world_size} process(es); lower SOLVER.IMS_PER_BATCH"
            )
        self._len = iters_per_epoch or self._per_pass

    def __len__(self) -> int:
        return self._len

    def _epoch_batches(self, epoch: int) -> Iterator[list[int]]:
        done, npass = 0, 0
        while done < self._len:
            # The first pass keeps the (seed, epoch) generator, so a default-length epoch is
            # the same as before epochs could be longer than one pass.
            keys = (self.seed, epoch) if npass == 0 else (self.seed, epoch, npass)
            perm = torch.randperm(self.size, generator=_generator(*keys)).tolist()
            mine = perm[self.rank::self.world_size]
            for i in range(min(self._per_pass, self._len - done)):
                yield mine[i * self.batch_size:(i + 1) * self.batch_size]
                done += 1
            npass += 1


class InferenceSampler(Sampler[int]):
    """Indices ``0..size-1`` in order, split into contiguous shards, one per rank.

    Concatenating the ranks' outputs in rank order gives the data-set order back, so
    gathered features line up with the data set (query first, then gallery).

    Args:
        size: number of items.
        rank: this process's rank (``None``: from ``torch.distributed``).
        world_size: number of processes (``None``: from ``torch.distributed``).
    """

    def __init__(self, size: int, *, rank: int | None = None, world_size: int | None = None):
        self.size = int(size)
        self.rank, self.world_size = rank_world(rank, world_size)
        per, extra = divmod(self.size, self.world_size)
        self.start = self.rank * per + min(self.rank, extra)
        self.end = self.start + per + (1 if self.rank < extra else 0)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.end))

    def __len__(self) -> int:
        return self.end - self.start


def _check_pk(batch_size: int, num_instances: int) -> tuple[int, int]:
    k, bs = int(num_instances), int(batch_size)
    if k < 1 or bs < k or bs % k:
        raise ValueError(
            f"batch size {bs} per process must be a positive multiple of DATALOADER.NUM_INSTANCE "
            f"(K = {k}): each batch holds P identities x K images"
        )
    return k, bs // k


def _check_enough_ids(num_ids: int, p: int, world_size: int, what: str) -> None:
    if num_ids < p * world_size:
        raise ValueError(
            f"{what} has {num_ids} identities but a batch needs P = {p} distinct identities on "
            f"each of {world_size} process(es) ({p * world_size} in all); lower "
            "SOLVER.IMS_PER_BATCH or raise DATALOADER.NUM_INSTANCE"
        )
