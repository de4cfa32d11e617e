"""Process-group helpers that also work when torch.distributed is not initialized.

The one set of distributed helpers: the engine, the samplers, evaluation and the layers all
ask here for the rank and world size, and gather or reduce through these functions.
"""

from __future__ import annotations

import functools

import torch
import torch.distributed as dist


def is_dist() -> bool:
    """True when a process group is initialized (a DDP run)."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Global rank of this process (0 outside DDP)."""
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    """Number of processes (1 outside DDP)."""
    return dist.get_world_size() if is_dist() else 1


def rank_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """Fill in the process rank and world size from ``torch.distributed`` when not given.

    Samplers take an explicit rank and world size (tests simulate several ranks in one
    process); ``None`` means "this process's".

    Args:
        rank: this process's rank, or ``None``.
        world_size: number of processes, or ``None``.

    Returns:
        ``(rank, world_size)``; ``(0, 1)`` without an initialized process group.

    Raises:
        ValueError: the rank is not in ``0..world_size-1``.
    """
    if world_size is None:
        world_size = get_world_size()
    if rank is None:
        rank = get_rank()
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank}")
    return int(rank), int(world_size)


def is_main_process() -> bool:
    """True on the process that writes checkpoints, logs and results."""
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across processes; a no-op outside DDP."""
    if is_dist() and get_world_size() > 1:
        dist.barrier()


def all_gather_object(obj) -> list:
    """Gather a picklable object from every rank (in rank order).

    Only used between processes of one job (never on data read from disk). Under NCCL the
    objects travel through a gloo group, in host memory: NCCL would stage every rank's pickled
    bytes in GPU memory (features of a whole test set, on every GPU).

    Args:
        obj: the local object.

    Returns:
        The list of every rank's object; ``[obj]`` outside DDP.
    """
    if not is_dist() or get_world_size() == 1:
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj, group=_host_group())
    return out


@functools.cache
def _host_group():
    """A gloo group over all ranks for host-memory collectives (the default group itself when
    it already is gloo). Made on first use, which every rank reaches in the same order."""
    if dist.get_backend() == "gloo":
        return None
    return dist.new_group(backend="gloo")


def collective_device() -> torch.device:
    """Where tensors for the default group's collectives must live (NCCL: this rank's GPU)."""
    if is_dist() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_true(flag: bool | torch.Tensor) -> bool:
    """Whether ``flag`` holds on every rank (one all-reduce under DDP).

    A condition that stops training (a non-finite loss) must be agreed on by all ranks: a
    rank that raises alone leaves the others waiting in their next collective forever.

    Args:
        flag: this rank's condition (a bool or a one-element tensor on any device).

    Returns:
        The logical AND over ranks (``flag`` itself outside DDP).
    """
    if not is_dist() or get_world_size() == 1:
        return bool(flag)
    t = torch.as_tensor(flag).detach().to(collective_device(), torch.int32).reshape(1)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def average_buffers(module: torch.nn.Module) -> None:
    """Average the floating-point buffers (BN / PBN running statistics) over ranks, in place.

    DDP runs with ``broadcast_buffers=False``, so each rank's running statistics follow its
    own batches. Before evaluating (every rank extracts a shard of the test set) and before
    saving, all ranks must hold the same network: the average is the statistics' estimate over
    every rank's data. Integer buffers (``num_batches_tracked``) are equal on all ranks already.
    No-op outside DDP.

    Args:
        module: the model (unwrapped from DDP).
    """
    if not is_dist() or get_world_size() == 1:
        return
    buffers = [b for b in module.buffers() if b.is_floating_point()]
    if not buffers:
        return
    device = collective_device()
    flat = torch.cat([b.detach().reshape(-1).to(device, torch.float64) for b in buffers])
    dist.all_reduce(flat)
    flat /= get_world_size()
    offset = 0
    with torch.no_grad():
        for b in buffers:
            b.copy_(flat[offset:offset + b.numel()].view_as(b))
            offset += b.numel()
