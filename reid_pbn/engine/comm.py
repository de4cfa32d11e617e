"""Process-group helpers that also work when torch.distributed is not initialized."""

from __future__ import annotations

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


def is_main_process() -> bool:
    """True on the process that writes checkpoints, logs and results."""
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across processes; a no-op outside DDP."""
    if is_dist() and get_world_size() > 1:
        dist.barrier()


def all_gather_object(obj) -> list:
    """Gather a picklable object from every rank (in rank order).

    Only used between processes of one job (never on data read from disk).

    Args:
        obj: the local object.

    Returns:
        The list of every rank's object; ``[obj]`` outside DDP.
    """
    if not is_dist() or get_world_size() == 1:
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Average a tensor over ranks (returns the tensor itself outside DDP)."""
    if not is_dist() or get_world_size() == 1:
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t / get_world_size()
