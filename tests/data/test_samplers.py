"""PK, domain-balanced, random and inference samplers, single process and sharded."""

from __future__ import annotations

from collections import Counter

import pytest

from reid_pbn.data.samplers import (
    DomainBalancedBatchSampler,
    InferenceSampler,
    PKBatchSampler,
    RandomBatchSampler,
)

# 30 identities with 1..6 images each (some below K, to exercise sampling with replacement).
PIDS = [pid for pid in range(30) for _ in range(1 + pid % 6)]


def _check_pk(batch, pids, p, k):
    counts = Counter(pids[i] for i in batch)
    assert len(batch) == p * k
    assert len(counts) == p and set(counts.values()) == {k}


def test_pk_batches_hold_p_ids_times_k_images():
    s = PKBatchSampler(PIDS, batch_size=16, num_instances=4, seed=1)
    batches = list(s)
    assert len(batches) == len(s) > 0
    for b in batches:
        _check_pk(b, PIDS, 4, 4)


def test_pk_epoch_covers_the_images():
    pids = [pid for pid in range(20) for _ in range(8)]
    s = PKBatchSampler(pids, batch_size=16, num_instances=4, seed=0)
    seen = Counter(i for b in s for i in b)
    assert len(s) == 10
    # Each image is used about once (chunks are drawn in proportion to what is left).
    assert len(seen) >= 0.9 * len(pids) and max(seen.values()) <= 2


def test_pk_seed_epoch_and_resume():
    s = PKBatchSampler(PIDS, 8, 2, seed=5)
    e0 = list(s)
    assert list(s) == e0  # same epoch, same batches
    s.set_epoch(1)
    e1 = list(s)
    assert e1 != e0
    s.set_epoch(1, start_iter=3)
    assert list(s) == e1[3:]  # mid-epoch resume continues exactly
    t = PKBatchSampler(PIDS, 8, 2, seed=5)  # a resumed run: a new sampler, same seed
    t.set_epoch(1)
    assert list(t) == e1
    assert list(PKBatchSampler(PIDS, 8, 2, seed=6)) != e0


def test_pk_infinite_runs_through_epochs():
    s = PKBatchSampler(PIDS, 8, 2, seed=5, infinite=True, iters_per_epoch=3)
    it = iter(s)
    got = [next(it) for _ in range(7)]
    s2 = PKBatchSampler(PIDS, 8, 2, seed=5, iters_per_epoch=3)
    expected = []
    for e in range(3):
        s2.set_epoch(e)
        expected += list(s2)
    assert got == expected[:7]


@pytest.mark.parametrize("world", [2, 3])
def test_pk_ddp_shards_are_disjoint(world):
    samplers = [PKBatchSampler(PIDS, 8, 2, seed=3, rank=r, world_size=world) for r in range(world)]
    assert len({len(s) for s in samplers}) == 1  # every rank steps the same number of times
    for epoch in range(3):
        ids = []
        for s in samplers:
            s.set_epoch(epoch)
            batches = list(s)
            for b in batches:
                _check_pk(b, PIDS, 4, 2)
            ids.append({PIDS[i] for b in batches for i in b})
        for a in range(world):
            for b in range(a + 1, world):
                assert not ids[a] & ids[b]


def test_pk_errors():
    with pytest.raises(ValueError, match="multiple of DATALOADER.NUM_INSTANCE"):
        PKBatchSampler(PIDS, 10, 4)
    with pytest.raises(ValueError, match="identities"):
        PKBatchSampler(PIDS, 64, 2)  # needs 32 identities, has 30
    with pytest.raises(ValueError, match="identities"):
        PKBatchSampler(PIDS, 32, 2, rank=0, world_size=2)


DOM_PIDS = [pid for pid in range(24) for _ in range(4)]
DOMAINS = [0 if pid < 8 else (1 if pid < 16 else 2) for pid in DOM_PIDS]


def test_domain_balanced_batches_are_pure_and_cycle():
    s = DomainBalancedBatchSampler(DOM_PIDS, DOMAINS, 8, 2, seed=0, iters_per_epoch=9)
    doms = []
    for b in s:
        _check_pk(b, DOM_PIDS, 4, 2)
        d = {DOMAINS[i] for i in b}
        assert len(d) == 1
        doms.append(d.pop())
    assert doms == [0, 1, 2] * 3


def test_domain_balanced_ddp():
    ss = [DomainBalancedBatchSampler(DOM_PIDS, DOMAINS, 4, 2, seed=1, rank=r, world_size=2)
          for r in range(2)]
    b0, b1 = list(ss[0]), list(ss[1])
    assert len(b0) == len(b1)
    for x, y in zip(b0, b1):
        assert {DOMAINS[i] for i in x} == {DOMAINS[i] for i in y}  # same domain per step
    assert not {DOM_PIDS[i] for b in b0 for i in b} & {DOM_PIDS[i] for b in b1 for i in b}


def test_domain_balanced_errors():
    with pytest.raises(ValueError, match="namespaced"):
        DomainBalancedBatchSampler([0, 0, 1, 1], [0, 1, 1, 1], 2, 2)
    with pytest.raises(ValueError, match="domain 0 has 8 identities"):
        DomainBalancedBatchSampler(DOM_PIDS, DOMAINS, 20, 2)


def test_random_batch_sampler():
    ss = [RandomBatchSampler(50, 8, seed=0, rank=r, world_size=2) for r in range(2)]
    assert len(ss[0]) == 3
    b = [sorted(i for batch in s for i in batch) for s in ss]
    assert not set(b[0]) & set(b[1])
    assert all(len(batch) == 8 for s in ss for batch in s)
    with pytest.raises(ValueError, match="IMS_PER_BATCH"):
        RandomBatchSampler(5, 8)


@pytest.mark.parametrize("size, world", [(10, 3), (2, 4), (7, 1)])
def test_inference_sampler_shards_in_order(size, world):
    shards = [list(InferenceSampler(size, rank=r, world_size=world)) for r in range(world)]
    assert sum(shards, []) == list(range(size))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
