"""PBN's fast training path: per-cell moments, coefficient maps and the custom autograd function.

Private to :mod:`reid_pbn.layers.pbn`; :func:`reid_pbn.layers.pbn_reference.pbn_reference_forward`
is the readable statement of what this module computes, and the tests hold the two equal.

All cut positions of a forward's drawn modes split the map into at most 3 x 3 "cells"
(:class:`~reid_pbn.layers._pbn_layout._Layout`). Per-position batch moments come from one pass
over x (BN's own Welford kernel on an (N, C*H*W) view) and pool into cell and then patch
moments, so the patch logic runs on (C, cells)-sized tensors (:class:`_CoefficientMap`); the
output is one fused ``x * A + B`` with per-position scale and shift. :class:`_PatchNormFunction`
computes the backward in three passes over the map.
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch import distributed as dist

from ._pbn_layout import _host_table, _Layout

_CONSTANTS: dict = {}


class _PatchNormFunction(torch.autograd.Function):
    """y = x * A + B, with A, B per channel and cell, from per-cell moments of x.

    With several cells, per-position moments over the batch (one pass over x on an
    (N, C*H*W) view) are pooled into cells; the output and the gradient are single fused
    passes with per-position coefficients. With one cell everything is per channel.

    ``sync``: ``None``, or ``(group, counts)`` to normalize with the cell moments of all ranks of
    the process group (``counts``: every rank's batch size); the layout is then built for the
    total batch size, and the backward all-reduces the gradient of the moments.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, layout, coef_map, sync):
        n, c, h, w = x.shape
        single = layout.num_cells == 1
        moments = _moments(x if single else x.view(n, c * h * w))
        if single:
            # Shift by the mean itself: E[q] = 0, E[q^2] = var.
            shift = moments[0][:, None]
            stats = torch.stack([torch.zeros_like(moments[1]), moments[1]])[..., None]
        else:
            # Per-position moments (exact, Welford) -> shifted raw moments per cell. The
            # shift (each channel's mean over the first row) keeps E[q^2] - E[q]^2 well
            # conditioned whatever the mean of the map.
            q, q_sq = (t.view(c, h * w) for t in moments)
            shift = q[:, :w].mean(1, keepdim=True)
            q_sq.addcmul_(q.sub_(shift), q)  # fresh outputs of _moments: update in place
            stats = layout.pool(q, q_sq) / layout.cell_size
        if sync is not None:
            shift, stats = _merge_statistics(shift, stats, *sync)
        coef = coef_map.forward(stats, shift, weight, bias)
        scale, offset = coef if single else layout.spread(coef.reshape(2 * c, -1)).view(
            2, c, -1)
        y = torch.empty_like(x)
        torch.addcmul(offset, x.view(n, c, h * w), scale, out=y.view(n, c, h * w))
        ctx.save_for_backward(x, scale, shift)
        ctx.layout, ctx.coef_map, ctx.sync = layout, coef_map, sync
        ctx.total = n if sync is None else sum(sync[1])
        ctx.has_weight, ctx.has_bias = weight is not None, bias is not None
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, scale, shift = ctx.saved_tensors
        with _no_autocast(x.device):
            return _PatchNormFunction._backward(ctx, grad.to(x.dtype).contiguous(), x, scale,
                                                shift)

    @staticmethod
    def _backward(ctx, grad, x, scale, shift):
        layout = ctx.layout
        n, c, h, w = x.shape
        single = layout.num_cells == 1
        if single:
            g_coef = torch.stack(_per_channel_sums(grad, x))[..., None]
        else:
            sums = _per_channel_sums(grad.view(n, c * h * w), x.view(n, c * h * w))
            g_coef = layout.pool(*(t.view(c, h * w) for t in sums))
        d_stats, d_w, d_b = ctx.coef_map.backward(g_coef)
        d_x = None
        if ctx.needs_input_grad[0]:
            if ctx.sync is not None:
                # The moments are those of all ranks: their gradient sums every rank's.
                dist.all_reduce(d_stats, group=ctx.sync[0])
            # d E[q] / dx = 1 / count, d E[q^2] / dx = 2 (x - s) / count, per cell.
            count = ctx.total * layout.cell_size
            slope = d_stats[1] * (2.0 / count)
            lin = torch.stack([slope, torch.addcmul(d_stats[0] / count, slope, shift,
                                                    value=-1)])
            slope, offset = lin if single else layout.spread(lin.view(2 * c, -1)).view(
                2, c, -1)
            # In the statistics' dtype: the two terms may cancel, so a half-precision map is
            # rounded once, at the end (a transient float32 map, not a saved one).
            d3 = torch.addcmul(offset, x.view(n, c, h * w), slope)
            d3.addcmul_(grad.view(n, c, h * w), scale)
            d_x = d3.view_as(x).to(x.dtype)
        return (d_x, d_w if ctx.has_weight else None, d_b if ctx.has_bias else None, None, None,
                None)


class _CoefficientMap:
    """Per-cell scale and shift from per-cell moments, for one PBN training forward.

    The statistics are shifted raw moments per cell, ``E[x - s]`` and ``E[(x - s)^2]`` with a
    per-channel shift ``s``; being plain averages they pool into patch moments with one
    product. Forward: patch mean ``s + E[q]`` and variance ``E[q^2] - E[q]^2`` -> mixing with
    the running statistics -> ``a = w / sqrt(var + eps)``, ``b = bias - mean * a`` per patch ->
    per cell through each channel's chosen mode. The tensors are (C, patches)-sized, so the
    backward is written out rather than recorded by autograd.

    Args:
        layout: the cells and patches of this forward.
        select: (C, patches, cells) 1 where the patch of the channel's chosen mode covers the
            cell.
        use_batch: ``"stochastic"``: (C, patches) bool, True where the patch statistics are
            used; ``None`` otherwise.
        keep: ``"weighted"``: weight of the running statistics; 0 otherwise.
        trajectory: maps the (2, C, patches) patch means and variances to the running
            statistics each patch sees (updating the buffers); ``None`` without running
            statistics.
        eps: added to the variance.
    """

    def __init__(self, layout, select, use_batch, keep, trajectory, eps):
        self.weights, self.select, self.use_batch, self.keep = (
            layout.weights, select, use_batch, keep)
        self.trajectory, self.eps = trajectory, eps

    def forward(self, stats, shift, weight, bias):
        c = stats.shape[1]
        q = (stats.view(2 * c, -1) @ self.weights).view(2, c, -1)
        stacked = torch.stack([q[0] + shift, torch.addcmul(q[1], q[0], q[0], value=-1)])
        stacked[1].clamp_min_(0)
        if self.trajectory is not None:
            running = self.trajectory(stacked)
            if self.use_batch is not None:
                stacked = torch.where(self.use_batch, stacked, running)
            elif self.keep:
                stacked = torch.lerp(stacked, running, self.keep)
        mean, var = stacked
        inv = (var + self.eps).rsqrt_()
        a = inv if weight is None else inv * weight[:, None]
        b = -mean * a if bias is None else torch.addcmul(bias[:, None], mean, a, value=-1)
        self.saved = (q[0], mean, inv, a, weight)
        # (C, 2, patches) @ (C, patches, cells): each channel's cells take its mode's patches.
        return torch.bmm(torch.stack([a, b], 1), self.select).transpose(0, 1)

    def backward(self, grad):
        q_mean, mean, inv, a, weight = self.saved
        c = grad.shape[1]
        g_a, g_b = torch.bmm(grad.transpose(0, 1), self.select.transpose(1, 2)).unbind(1)
        d_bias = g_b.sum(1)
        g_a = torch.addcmul(g_a, g_b, mean, value=-1)
        d_weight = (g_a * inv).sum(1)
        d_inv = g_a if weight is None else g_a * weight[:, None]
        # d_q0 = d_mean - 2 q_mean d_var and d_q1 = d_var, from mean = s + E[q] and
        # var = E[q^2] - E[q]^2 (s is a constant of the forward).
        d_var = inv.pow(3).mul_(d_inv).mul_(-0.5)
        d_q = torch.stack([torch.addcmul(-g_b * a, q_mean, d_var, value=-2), d_var])
        if self.use_batch is not None:
            d_q = d_q.where(self.use_batch, 0.0)
        elif self.keep:
            d_q.mul_(1 - self.keep)
        d_stats = (d_q.reshape(2 * c, -1) @ self.weights.t()).view(2, c, -1)
        return d_stats, d_weight, d_bias


def _running_trajectory(stacked: torch.Tensor, layout: _Layout, running_mean: torch.Tensor,
                        running_var: torch.Tensor, first: int, factor: float,
                        cumulative: bool) -> torch.Tensor:
    """Running statistics seen by each patch; updates the buffers with the first mode.

    Patch ``j < first`` of the first mode sees the statistics after ``j`` sequential
    momentum updates (one per earlier patch, with that patch's mean and unbiased variance);
    the other modes' patches see the final ones.

    Args:
        stacked: (2, C, patches) patch means and (biased) variances.
        layout: the cells and patches of this forward.
        running_mean: (C,) buffer, updated in place.
        running_var: (C,) buffer, updated in place.
        first: number of patches of the first drawn mode.
        factor: the update factor (momentum, or 1 / batches for a cumulative average).
        cumulative: ``momentum=None``: each patch moves the average by ``factor / first``.

    Returns:
        (2, C, patches): running means and variances.
    """
    c, num, dtype = stacked.shape[1], layout.num_patches, stacked.dtype
    d, t = _trajectory_coefficients(first, num, factor, cumulative, dtype, stacked.device)
    observed = stacked[:, :, :first] * layout.unbias[..., :first]
    r0 = torch.stack([running_mean, running_var]).view(2 * c, 1)
    traj = torch.addmm(r0.to(dtype) * d, observed.view(2 * c, first), t).view(2, c, -1)
    running_mean.copy_(traj[0, :, -1])
    running_var.copy_(traj[1, :, -1])
    return traj[:, :, :num]


@functools.lru_cache(maxsize=256)
def _trajectory_coefficients(first: int, num: int, factor: float, cumulative: bool, dtype,
                             device) -> tuple[torch.Tensor, torch.Tensor]:
    """Coefficients of the running statistics each patch sees: ``r_j = d_j r_0 + sum_i t_ij s_i``.

    Columns ``j < first`` are the first mode's patches (``j`` updates done); the remaining
    ``num - first`` patches and the last column see the final state (``first`` updates).
    """
    m = factor
    if cumulative:  # each patch moves the average by factor / first towards its statistic
        d = [1.0 - m * j / first for j in range(first + 1)]
        t = [[m / first if i < j else 0.0 for j in range(first + 1)] for i in range(first)]
    else:
        d = [(1.0 - m) ** j for j in range(first + 1)]
        t = [[m * (1.0 - m) ** (j - 1 - i) if i < j else 0.0 for j in range(first + 1)]
             for i in range(first)]
    cols = list(range(first)) + [first] * (num - first + 1)
    d = _host_table([d[j] for j in cols], dtype, device)
    t = _host_table([[row[j] for j in cols] for row in t], dtype, device)
    return d, t


def _merge_statistics(shift: torch.Tensor, stats: torch.Tensor, group, counts: list[int]
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The cell moments of the whole batch of all ranks, from every rank's own.

    Every rank's per-cell mean ``shift + E[q]`` and biased variance ``E[q^2] - E[q]^2`` are
    gathered and merged exactly (Chan et al.): ``M = sum_r n_r m_r / N`` and
    ``V = sum_r n_r (v_r + (m_r - M)^2) / N``. The result is shifted by the first cell's merged
    mean, so every rank computes the same shift and moments.

    Args:
        shift: (C, 1) this rank's shift; stats: (2, C, cells) its shifted moments.
        group: the process group (``None``: the default group).
        counts: the batch size of every rank of the group, in group-rank order.

    Returns:
        ``(shift, stats)`` of the whole batch, shaped as the inputs.
    """
    local = torch.stack([stats[0] + shift, torch.addcmul(stats[1], stats[0], stats[0], value=-1)])
    parts = [torch.empty_like(local) for _ in counts]
    dist.all_gather(parts, local, group=group)
    table = torch.stack(parts)  # (ranks, 2, C, cells)
    total = sum(counts)
    share = local.new_tensor([k / total for k in counts]).view(-1, 1, 1)
    mean = (table[:, 0] * share).sum(0)
    dev = table[:, 0] - mean
    var = (torch.addcmul(table[:, 1], dev, dev) * share).sum(0)
    shift = mean[:, :1]
    q = mean - shift
    return shift, torch.stack([q, torch.addcmul(var, q, q)])


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance over all dims but 1 (Welford, no temporaries), in float32 for
    half-precision ``x``.

    Given float32 running statistics, ``batch_norm_update_stats`` runs its mixed-precision form
    and returns float32 statistics (without them the CPU kernel returns the input's dtype). The
    scratch buffers take a zero-momentum update, so their values are never read.
    """
    k, dtype = x.shape[1], _acc_dtype(x.dtype)
    scratch = (None, None) if dtype == x.dtype else (
        x.new_zeros(k, dtype=dtype), x.new_ones(k, dtype=dtype))
    return torch.batch_norm_update_stats(x, *scratch, 0.0)


def _per_channel_sums(g: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum g * x, sum g) over all dims but 1, in one fused pass and without temporaries.

    BN's backward in eval mode with zero mean and unit variance computes exactly these sums,
    accumulated in float32 for half-precision ``x``. Both the running and the saved statistics
    are given: the CPU kernel reads the running ones when ``train=False``, while the CUDA
    kernel requires the saved ones to be defined (``batch_norm_backward_cuda`` asserts it) and
    uses them when non-empty. For half-precision ``x`` they are float32 (the mixed-precision
    form both kernels accept).
    """
    c, dtype = x.shape[1], _acc_dtype(x.dtype)
    zeros, ones = _constant(0.0, c, dtype, x.device), _constant(1.0, c, dtype, x.device)
    _, g_x, g_sum = torch.ops.aten.native_batch_norm_backward(
        g, x, ones, zeros, ones, zeros, ones, False, 0.0, [False, True, True])
    return g_x, g_sum


def _constant(value: float, size: int, dtype: torch.dtype, device) -> torch.Tensor:
    """A contiguous vector of ``size`` copies of ``value``, a prefix of a kept buffer (read-only:
    never pass it where a kernel writes)."""
    key = (value, dtype, device)
    buf = _CONSTANTS.get(key)
    if buf is None or buf.numel() < size:
        buf = _CONSTANTS[key] = torch.full((size,), value, dtype=dtype, device=device)
    return buf[:size]


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype of the statistics: float32 for half-precision maps (as BN under autocast)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _no_autocast(device: torch.device):
    """A region where autocast is off, so the statistics' small matmuls stay in float32."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()
