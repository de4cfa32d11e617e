"""The epoch length comes from the batch sampler: every batch of an epoch is trained once."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from reid_pbn.data.samplers import PKBatchSampler, RandomBatchSampler
from reid_pbn.engine.trainer import SimpleTrainer, epoch_length

# A Market-like identity distribution: uneven image counts, some below K.
PIDS = [pid for pid in range(40) for _ in range(1 + (pid * 7) % 9)]


class _Indexed(Dataset):
    """Item ``i`` is ``{"idx": i}``, so a batch tells which indices it holds."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"idx": torch.tensor(i)}


class _Recorder(torch.nn.Module):
    """A one-parameter model whose loss is finite; it records every batch it trains on."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[list[int]] = []

    def forward(self, batch: dict) -> dict:
        self.seen.append(batch["idx"].tolist())
        return {"loss": self.w * batch["idx"].float().mean()}


def _trainer(batch_sampler) -> tuple[SimpleTrainer, _Recorder]:
    model = _Recorder()
    loader = DataLoader(_Indexed(len(PIDS)), batch_sampler=batch_sampler)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    return SimpleTrainer(model, loader, opt, torch.device("cpu")), model


def _epoch_batches(sampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return [list(b) for b in sampler]


@pytest.mark.parametrize("iters", [None, 5])
def test_pk_loader_epoch_yields_each_batch_once(iters):
    sampler = PKBatchSampler(PIDS, 8, 2, seed=3, iters_per_epoch=iters)
    loader = DataLoader(_Indexed(len(PIDS)), batch_sampler=sampler)
    got = [b["idx"].tolist() for b in loader]
    assert len(got) == len(sampler) == (iters or len(got))
    assert got == _epoch_batches(sampler, 0)


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("iters", [None, 4])
def test_trainer_epoch_is_one_pass_of_the_batch_sampler(world, iters):
    for rank in range(world):
        sampler = PKBatchSampler(PIDS, 8, 2, seed=1, rank=rank, world_size=world,
                                 iters_per_epoch=iters)
        trainer, model = _trainer(sampler)
        assert trainer.iters_per_epoch == len(sampler) == epoch_length(trainer.data_loader)
        trainer.train(0, 2)
        assert trainer.iter == 2 * len(sampler)
        # Exactly the sampler's batches of epoch 0 then epoch 1: none repeated, none skipped.
        reference = PKBatchSampler(PIDS, 8, 2, seed=1, rank=rank, world_size=world,
                                   iters_per_epoch=iters)
        assert model.seen == _epoch_batches(reference, 0) + _epoch_batches(reference, 1)


def test_ddp_epoch_length_shrinks_with_world_size():
    one = PKBatchSampler(PIDS, 8, 2, seed=0, world_size=1, rank=0)
    two = [PKBatchSampler(PIDS, 8, 2, seed=0, world_size=2, rank=r) for r in range(2)]
    # Every rank steps the same number of times, and the ranks together cover about one pass.
    assert len(two[0]) == len(two[1]) == len(one) // 2


def test_random_sampler_honours_iters_per_epoch():
    base = RandomBatchSampler(len(PIDS), 8, seed=2)
    longer = RandomBatchSampler(len(PIDS), 8, seed=2, iters_per_epoch=len(base) + 3)
    shorter = RandomBatchSampler(len(PIDS), 8, seed=2, iters_per_epoch=2)
    assert len(list(longer)) == len(longer) == len(base) + 3
    assert list(longer)[:len(base)] == list(base)
    assert list(shorter) == list(base)[:2]


def test_exhausted_loader_inside_an_epoch_is_an_error():
    sampler = PKBatchSampler(PIDS, 8, 2, seed=0, iters_per_epoch=3)
    trainer, _ = _trainer(sampler)
    trainer.iters_per_epoch = 4  # disagrees with the sampler: must not silently restart
    with pytest.raises(RuntimeError, match="ran out after 3 batches"):
        trainer.train(0, 1)
