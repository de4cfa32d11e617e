"""Distributed and device handling: what every rank must agree on, checked with two gloo
processes on CPU, and the device / backend choices checked without a GPU."""

from __future__ import annotations

import importlib
import json
import logging
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from reid_pbn.config import ConfigError, get_cfg
from reid_pbn.engine.checkpoint import Checkpointer
from reid_pbn.engine.defaults import resolve_device
from reid_pbn.engine.trainer import (
    SimpleTrainer,
    check_sync_norms_route_alike,
    needs_unused_parameter_search,
)
from reid_pbn.layers import DSBN2d
from reid_pbn.utils import comm

# The module (the package exports a function of the same name).
launch_mod = importlib.import_module("reid_pbn.engine.launch")


class _LossModel(nn.Module):
    """Returns a loss that is NaN on the rank given."""

    def __init__(self, nan_rank: int):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.nan_rank = nan_rank

    def forward(self, batch):
        loss = (self.w * batch["x"]).sum()
        return {"loss": loss * float("nan") if comm.get_rank() == self.nan_rank else loss}


def _worker(rank: int, init: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    torch.set_num_threads(1)
    out = {}
    # A flag that holds on one rank only holds nowhere.
    out["all_true_mixed"] = comm.all_true(rank == 0)
    out["all_true_both"] = comm.all_true(torch.tensor(True))
    # Running statistics differ per rank, then agree on their average.
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.running_mean.fill_(float(rank))
        bn.running_var.fill_(1.0 + 2.0 * rank)
    comm.average_buffers(bn)
    out["mean"], out["var"] = bn.running_mean.tolist(), bn.running_var.tolist()
    out["tracked"] = int(bn.num_batches_tracked)
    # A non-finite loss on rank 1 stops both ranks (neither waits for the other).
    model = _LossModel(nan_rank=1)
    loader = [{"x": torch.ones(2)}] * 4
    trainer = SimpleTrainer(model, loader, torch.optim.SGD(model.parameters(), lr=0.1),
                            torch.device("cpu"))
    trainer.iter = 0
    try:
        trainer.run_step()
        out["raised"] = False
    except FloatingPointError:
        out["raised"] = True
    # Each rank's RNG states survive a checkpoint: after loading, each rank draws what it
    # would have drawn next.
    torch.manual_seed(100 + rank)
    ckpt = Checkpointer(nn.Linear(2, 2), out_dir, save_to_disk=rank == 0)
    ckpt.save("model_0001")
    out["expected_draw"] = torch.rand(3).tolist()
    dist.barrier()
    torch.manual_seed(7)
    ckpt.load(os.path.join(out_dir, "model_0001.pth"))
    out["draw"] = torch.rand(3).tolist()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(out, f)
    dist.destroy_process_group()


def test_ranks_agree_on_flags_buffers_and_keep_their_rng(tmp_path):
    init = f"file://{tmp_path / 'init'}"
    mp.spawn(_worker, args=(init, str(tmp_path)), nprocs=2, join=True)
    res = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r, out in enumerate(res):
        assert out["all_true_mixed"] is False and out["all_true_both"] is True
        assert out["mean"] == [0.5] * 3 and out["var"] == [2.0] * 3 and out["tracked"] == 0
        assert out["raised"] is True, f"rank {r} did not stop"
        assert out["draw"] == out["expected_draw"], f"rank {r} lost its RNG stream"
    assert res[0]["draw"] != res[1]["draw"]


def test_rank_missing_from_checkpoint_keeps_its_seed(tmp_path, monkeypatch, caplog):
    torch.manual_seed(1)
    ckpt = Checkpointer(nn.Linear(2, 2), str(tmp_path))
    path = ckpt.save("model_0001")
    monkeypatch.setattr(comm, "get_rank", lambda: 3)
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    with caplog.at_level(logging.WARNING, logger="reid_pbn"):
        ckpt.load(path)
    assert torch.equal(torch.rand(2), expected)
    assert "rank 3 keeps its own seed" in caplog.text


def test_sync_norms_inside_dsbn_are_refused():
    ok = nn.Sequential(DSBN2d(4, num_domains=2, inner="PBN"))
    check_sync_norms_route_alike(ok)
    bad = nn.Sequential(DSBN2d(4, num_domains=2, inner="PBN", sync=True))
    with pytest.raises(ConfigError, match="deadlock"):
        check_sync_norms_route_alike(bad)


def test_unused_parameter_search_only_where_needed():
    cfg = get_cfg()
    assert not needs_unused_parameter_search(cfg)
    cfg.SOLVER.FREEZE_ITERS = 10
    assert needs_unused_parameter_search(cfg)
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NORM = "DSBN"
    assert needs_unused_parameter_search(cfg)


@pytest.mark.parametrize("device,backend", [("cpu", "gloo"), ("auto", "nccl"), ("cuda", "nccl")])
def test_backend_follows_the_device_not_cuda_presence(monkeypatch, device, backend):
    chosen = []
    monkeypatch.setattr(launch_mod, "in_torchrun", lambda: True)
    monkeypatch.setattr(launch_mod.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(launch_mod.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(launch_mod.torch.cuda, "set_device", lambda i: None)
    monkeypatch.setattr(launch_mod.dist, "init_process_group",
                        lambda backend, **kw: chosen.append(backend))
    monkeypatch.setenv("LOCAL_RANK", "0")
    launch_mod.init_distributed(device)
    assert chosen == [backend]


def test_explicit_gpu_index_under_ddp_uses_the_local_rank(monkeypatch, caplog):
    monkeypatch.setattr(comm, "is_dist", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    with caplog.at_level(logging.WARNING, logger="reid_pbn"):
        assert resolve_device("cuda:0") == torch.device("cuda:1")
    assert "ignored under DDP" in caplog.text
    assert resolve_device("cuda") == torch.device("cuda:1")
