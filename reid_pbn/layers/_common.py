"""Small helpers shared by the batch-style normalizations."""

from __future__ import annotations

from torch import nn


def running_update_factor(module: nn.Module) -> float:
    """Count one training batch and return the running-statistics update factor.

    Follows ``nn.BatchNorm2d``: ``num_batches_tracked`` grows by one per training forward, and
    the factor is ``momentum``, or ``1 / num_batches_tracked`` (a cumulative average) when
    ``momentum`` is ``None``.

    Args:
        module: a module with ``momentum``, ``track_running_stats`` and ``num_batches_tracked``
            as in ``nn.BatchNorm2d``; it must be in training mode.

    Returns:
        The factor, 0.0 when the module does not track running statistics.
    """
    if not module.track_running_stats or module.num_batches_tracked is None:
        return 0.0
    module.num_batches_tracked.add_(1)
    if module.momentum is None:
        return 1.0 / float(module.num_batches_tracked)
    return float(module.momentum)
