"""Synchronized PatchBatchNorm2d: two gloo processes on CPU against one process on the whole batch.

Every case runs a few training steps. The ranks draw from one generator seeded, at their first
synchronized forward, with a seed drawn from rank 0's generator (rank 1's is seeded differently:
it must be ignored); the reference is a plain PBN on the whole batch whose generator is seeded
with that seed. Each rank runs a synchronized PBN on its rows and a loss on its rows, so the
reference loss is the sum of the ranks' losses.
"""

from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from reid_pbn.layers import PatchBatchNorm2d

C, STEPS, SEED = 5, 3, 11
# name: PBN options, map size and the rows of each rank. 8 x 4 maps pool cells with the one-hot
# matrix, 40 x 24 maps with index_add; modes (0,) is the single-cell (per-channel) path.
CASES = {
    "stochastic-onehot": ({"mix": "stochastic"}, (8, 4), (3, 3)),
    "weighted-onehot": ({"mix": "weighted", "lam": 0.3}, (8, 4), (3, 3)),
    "stochastic-index": ({"mix": "stochastic", "modes": (1, 2)}, (40, 24), (3, 3)),
    "weighted-index-uneven": ({"mix": "weighted", "lam": 0.3}, (40, 24), (2, 4)),
    "single-cell": ({"mix": "stochastic", "modes": (0,), "num_modes": 1}, (12, 10), (3, 3)),
    "single-cell-weighted": ({"mix": "weighted", "modes": (0,), "num_modes": 1}, (6, 6), (1, 4)),
}


def _module(options, seed, **kwargs):
    m = PatchBatchNorm2d(C, generator=torch.Generator().manual_seed(seed), **options, **kwargs)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        m.weight.copy_(torch.rand(C, generator=g) + 0.5)
        m.bias.copy_(torch.randn(C, generator=g))
        m.running_mean.copy_(torch.randn(C, generator=g))
        m.running_var.copy_(torch.rand(C, generator=g) + 0.5)
    return m.double()


def _data(size, rows, step):
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(sum(rows), C, *size, generator=g, dtype=torch.float64) * 2 + 1
    return x, torch.randn(x.shape, generator=g, dtype=torch.float64)


def _splits(m):
    return torch.tensor([[s.mode, -1 if s.row is None else s.row, -1 if s.col is None else s.col]
                         for s in m.last_splits])


def _run(m, size, rows, lo, hi):
    """STEPS training steps on rows [lo, hi) of each step's batch; what to compare."""
    steps = []
    for step in range(STEPS):
        x, target = _data(size, rows, step)
        x = x[lo:hi].clone().requires_grad_()
        y = m(x)
        m.weight.grad = m.bias.grad = None
        (y * target[lo:hi]).sum().backward()
        steps.append({"y": y.detach(), "x_grad": x.grad, "w_grad": m.weight.grad,
                      "b_grad": m.bias.grad, "splits": _splits(m),
                      "running_mean": m.running_mean.clone(),
                      "running_var": m.running_var.clone()})
    return steps


def _worker(rank, world, init, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        results = {}
        for name, (options, size, rows) in CASES.items():
            m = _module(options, SEED if rank == 0 else SEED + 1 + rank, sync=True)
            lo = sum(rows[:rank])
            results[name] = _run(m, size, rows, lo, lo + rows[rank])
            results[f"{name}-seed"] = m._shared_generator.initial_seed()
        # A process without samples: every process raises, none waits for the others.
        m = _module({}, SEED, sync=True)
        try:
            m(torch.randn(2 - 2 * rank, C, 8, 4, dtype=torch.float64))
            results["empty"] = "no error"
        except ValueError as e:
            results["empty"] = str(e)
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("pbn_sync")
    mp.spawn(_worker, args=(2, f"file://{out}/store", str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_equal_one_process_on_the_whole_batch(ranks, name):
    options, size, rows = CASES[name]
    seed = ranks[0][f"{name}-seed"]
    assert ranks[1][f"{name}-seed"] == seed
    # The shared seed is the first draw of rank 0's generator: seeding rank 0 reproduces a run.
    assert seed == int(torch.randint(2**62, (1,), generator=torch.Generator().manual_seed(SEED)))
    ref = _run(_module(options, seed), size, rows, 0, sum(rows))
    bounds = [(0, rows[0]), (rows[0], sum(rows))]
    tight = {"atol": 1e-10, "rtol": 1e-10}
    for step, want in enumerate(ref):
        got = [r[name][step] for r in ranks]
        for g, (lo, hi) in zip(got, bounds):
            assert torch.equal(g["splits"], want["splits"])
            torch.testing.assert_close(g["y"], want["y"][lo:hi], **tight)
            torch.testing.assert_close(g["x_grad"], want["x_grad"][lo:hi], **tight)
            torch.testing.assert_close(g["running_mean"], want["running_mean"], **tight)
            torch.testing.assert_close(g["running_var"], want["running_var"], **tight)
        # DDP sums (then averages) the parameter gradients of the processes.
        for key in ("w_grad", "b_grad"):
            torch.testing.assert_close(got[0][key] + got[1][key], want[key], **tight)
    if name.startswith("single"):
        assert all((s[:, 1:] == -1).all() for s in (w["splits"] for w in ref))
    else:
        assert any((w["splits"][:, 1:] >= 0).any() for w in ref)  # some cut was drawn


def test_a_process_without_samples_raises_on_every_process(ranks):
    for r in ranks:
        assert "at least one sample on every process" in r["empty"]
        assert "[2, 0]" in r["empty"]


@pytest.mark.parametrize("size", [(8, 4), (40, 24)])
def test_sync_without_process_group_equals_unsynchronized(size):
    assert not dist.is_initialized()
    plain, synced = (_module({}, SEED, sync=s) for s in (False, True))
    for step in range(STEPS):
        x, target = _data(size, (4,), step)
        out = []
        for m in (plain, synced):
            xi = x.clone().requires_grad_()
            m.weight.grad = m.bias.grad = None
            y = m(xi)
            (y * target).sum().backward()
            out.append((y, xi.grad, m.weight.grad, m.bias.grad, m.running_mean, m.running_var,
                        m.last_mode_choice, m.last_use_batch))
        assert plain.last_splits == synced.last_splits
        for a, b in zip(*out):
            assert torch.equal(a, b)
    assert "sync=True" in repr(synced) and "sync" not in repr(plain)
