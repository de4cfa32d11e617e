"""The meaning of a PBN training forward, written patch by patch.

:class:`~reid_pbn.layers.PatchBatchNorm2d` computes its training forward with a fused kernel
(:mod:`reid_pbn.layers._pbn_kernel`) that never cuts the map into pieces. This module states what
that kernel must compute, in the most direct form: slice every patch, normalize it with its own
(mixed) statistics, put it back, update the running statistics one patch at a time, and take
each channel from its chosen mode. It uses plain autograd, so its gradients are those of the
definition; the tests hold the layer equal to it (output, gradients and running statistics).

It is slow (one small BN per patch, copies of the map) and meant for reading and testing, not
for training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pbn_reference_forward(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    splits: Sequence,
    mode_choice: torch.Tensor | None,
    use_batch: torch.Tensor | None,
    *,
    mix: str = "stochastic",
    lam: float = 0.5,
    eps: float = 1e-5,
    factor: float = 0.1,
    cumulative: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """One PBN training forward with given draws, one patch at a time.

    For every drawn split (in draw order) each patch ``x[:, :, rows, cols]`` is normalized per
    channel with its own statistics over N x patch_h x patch_w (biased variance), mixed with the
    running statistics as they stand before this patch's update. Patches of the first split then
    update the running statistics one after the other (the variance update with the unbiased
    variance, as BN); the other splits update nothing. Each channel takes its output from the
    split ``mode_choice`` names, and the shared affine is applied last.

    Args:
        x: (N, C, H, W) input.
        weight: (C,) scale, or ``None`` (no affine).
        bias: (C,) shift, or ``None``.
        running_mean: (C,) running means before the forward, or ``None`` (patch statistics
            only); not modified.
        running_var: (C,) running variances before the forward, or ``None``.
        splits: the drawn ``Split(mode, row, col)`` of each mode, in draw order (as
            ``PatchBatchNorm2d.last_splits``).
        mode_choice: (C,) index into ``splits`` of every channel's mode, or ``None`` for a
            single split (``last_mode_choice``).
        use_batch: ``mix="stochastic"``: (C, patches) bool, True where a patch uses its own
            statistics rather than the running ones, the patches of all splits numbered in
            draw order (``last_use_batch``); ``None`` uses the patch statistics everywhere.
        mix: ``"stochastic"`` or ``"weighted"``.
        lam: ``"weighted"``: weight of the running statistics.
        eps: added to the variance.
        factor: the running-statistics update factor (the momentum, or ``1 /
            num_batches_tracked`` after this forward's increment when ``cumulative``).
        cumulative: ``momentum=None``: the forward's patches count as one batch, in equal parts
            (each moves the average by ``factor / patches`` towards its statistics).

    Returns:
        ``(y, running_mean, running_var)``: the output and the running statistics after the
        forward (``None`` without running statistics).
    """
    c = x.shape[1]
    tracking = running_mean is not None and running_var is not None
    if tracking:
        rm, rv = running_mean.to(x.dtype), running_var.to(x.dtype)
    outputs, index = [], 0
    for k, split in enumerate(splits):
        out = torch.zeros_like(x)
        patches = patch_slices(split, x.shape[2], x.shape[3])
        start = (rm, rv) if tracking else None  # a cumulative average moves from here
        for rows, cols in patches:
            patch = x[:, :, rows, cols]
            mean = patch.mean((0, 2, 3))
            var = patch.var((0, 2, 3), unbiased=False)
            if tracking and mix == "stochastic" and use_batch is not None:
                mean = torch.where(use_batch[:, index], mean, rm)
                var = torch.where(use_batch[:, index], var, rv)
            elif tracking and mix == "weighted":
                mean, var = lam * rm + (1 - lam) * mean, lam * rv + (1 - lam) * var
            normalized = (patch - mean[:, None, None]) / torch.sqrt(var[:, None, None] + eps)
            out = out.clone()  # a fresh tensor per write keeps autograd's version check happy
            out[:, :, rows, cols] = normalized
            if tracking and k == 0:
                rm, rv = _update(rm, rv, patch.detach(), start, factor, cumulative,
                                 len(patches))
            index += 1
        outputs.append(out)
    if len(outputs) == 1:
        y = outputs[0]
    else:
        # (modes, N, C, H, W) -> channel j from mode mode_choice[j].
        y = torch.stack(outputs)[mode_choice, :, torch.arange(c)].transpose(0, 1)
    if weight is not None:
        y = y * weight[:, None, None]
    if bias is not None:
        y = y + bias[:, None, None]
    return (y, rm, rv) if tracking else (y, None, None)


def patch_slices(split, h: int, w: int) -> list[tuple[slice, slice]]:
    """The (rows, cols) slices of a split's patches, in the official order.

    Args:
        split: a ``Split(mode, row, col)``; ``row``/``col`` are cut positions or ``None``.
        h: map height.
        w: map width.

    Returns:
        One ``(rows, cols)`` pair per patch: top-left, top-right, bottom-left, bottom-right
        (those that exist).
    """
    rows = [slice(0, h)] if split.row is None else [slice(0, split.row), slice(split.row, h)]
    cols = [slice(0, w)] if split.col is None else [slice(0, split.col), slice(split.col, w)]
    return [(r, c) for r in rows for c in cols]


def _update(rm: torch.Tensor, rv: torch.Tensor, patch: torch.Tensor,
            start: tuple[torch.Tensor, torch.Tensor], factor: float, cumulative: bool,
            num_patches: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Running statistics after one patch of the first split.

    Args:
        rm: running means before this patch.
        rv: running variances before this patch.
        patch: (N, C, h, w) the patch.
        start: the running statistics before the forward.
        factor: the update factor.
        cumulative: cumulative average (``momentum=None``) instead of a momentum update.
        num_patches: patches of the first split.

    Returns:
        The updated ``(running_mean, running_var)``.
    """
    mean = patch.mean((0, 2, 3))
    var = patch.var((0, 2, 3), unbiased=True)  # BN's running update uses the unbiased variance
    if cumulative:
        share = factor / num_patches
        return rm + share * (mean - start[0]), rv + share * (var - start[1])
    return (1 - factor) * rm + factor * mean, (1 - factor) * rv + factor * var
