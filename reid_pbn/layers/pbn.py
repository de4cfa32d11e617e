"""Patch-aware Batch Normalization (PBN) and Stochastic Normalization.

PBN (Qi et al., "Patch-aware Batch Normalization for Improving Cross-domain Robustness") normalizes
random patches of the feature map with their own statistics during training. This
implementation follows the official layer
``block_split_random_block_bn2d_two_type_channel_fusion_close_affine`` (Qi5Lei/PBN):

* each training forward draws ``num_modes`` split modes without repetition from ``modes``:
  0 = the whole map, 1 = two patches (a cut along H or along W, coin flip), 2 = four patches (one
  row cut and one column cut);
* every patch is normalized with per-channel statistics over N x patch_h x patch_w, mixed with
  the running statistics (``mix="stochastic"``: per channel, a Bernoulli(``p``) choice of the
  patch statistics over the running statistics as they stood before this patch's update, as in
  StochNorm; ``mix="weighted"``: ``lam * running + (1 - lam) * patch``);
* only the first drawn mode updates the running statistics, one momentum update per patch with
  that patch's statistics (so 1, 2 or 4 updates per forward);
* each channel takes its output from one of the drawn modes, chosen uniformly (a Bernoulli(0.5)
  mask for two modes) anew every forward; one shared affine is applied.

In ``eval()`` mode PBN is exactly ``nn.BatchNorm2d``, and its ``state_dict`` has the same keys.

This module holds the layers and their random draws. The documented meaning of a training
forward, patch by patch, is :func:`reid_pbn.layers.pbn_reference.pbn_reference_forward`; the
layers compute the same thing with the fused kernel of :mod:`reid_pbn.layers._pbn_kernel`
(per-cell moments, one ``x * A + B`` pass, a custom backward), and the tests hold the two equal.

With ``sync=True`` under DDP, the ranks of the process group act as one batch: they draw from
one generator seeded alike on every rank, merge their cell moments exactly and all-reduce the
statistics' gradient.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import NamedTuple

import torch
from torch import distributed as dist
from torch import nn

from ..utils import comm
from ._common import running_update_factor
from ._pbn_kernel import (
    _acc_dtype,
    _CoefficientMap,
    _no_autocast,
    _PatchNormFunction,
    _running_trajectory,
)
from ._pbn_layout import _Layout, _layout
from .norm import register_norm

_MIXES = ("stochastic", "weighted")

class Split(NamedTuple):
    """One drawn split mode of a PBN training forward.

    Attributes:
        mode: the drawn mode (0 whole map, 1 two patches, 2 four patches).
        row: cut position along H (rows ``[0, row)`` and ``[row, H)``), or ``None``.
        col: cut position along W, or ``None``. A split mode with neither cut fell back to
            whole-map normalization because the map was too small.
    """

    mode: int
    row: int | None
    col: int | None


@register_norm("PBN")
class PatchBatchNorm2d(nn.BatchNorm2d):
    """Patch-aware Batch Normalization (see the module docstring for the algorithm).

    Drop-in for ``nn.BatchNorm2d``: same parameters, buffers and ``state_dict`` keys, and the
    same output in ``eval()`` mode.

    Args:
        num_features: number of channels C.
        eps: added to the variance.
        momentum: running-statistics momentum, or ``None`` for a cumulative average (each
            forward's patches then count as one batch, in equal parts).
        mix: how patch and running statistics combine: ``"stochastic"`` (official code) or
            ``"weighted"`` (paper text).
        p: ``"stochastic"``: per-channel probability of the patch statistics (else running).
        lam: ``"weighted"``: weight of the running statistics.
        modes: split modes to draw from (0 whole map, 1 two patches, 2 four patches).
        num_modes: how many modes are drawn (without repetition) per training forward.
        cut_range: ``(lo, hi)``: cut positions along a side of length ``s`` are drawn uniformly
            from ``[floor(s * lo), floor(floor(s * lo) * hi / lo))``; ``(0.25, 0.75)`` gives the
            official ``[s // 4, (s // 4) * 3)``. Cuts that leave a patch side shorter than
            ``min_size`` are excluded.
        min_size: shortest allowed patch side; when no cut is possible on a needed side (small
            maps, e.g. 3 x 2) that mode falls back to whole-map normalization.
        generator: ``torch.Generator`` for every random draw; default the global torch RNG, so
            ``torch.manual_seed`` reproduces a run.
        sync: in training under ``torch.distributed`` with more than one process in the group,
            normalize with the statistics of the whole batch of all processes, like
            ``nn.SyncBatchNorm``: all processes draw the same splits (for the total batch size)
            and masks from a private generator seeded alike on every process at the first
            synchronized forward (with a seed drawn from the first process's ``generator``),
            the patch statistics and the running statistics are those of the whole batch, and
            the gradient of the statistics is summed over the processes. Every process must
            then run every training forward of this layer (in the same order) and have at least
            one sample. Otherwise (and in ``eval()`` mode) it has no effect.
        process_group: the group to synchronize over (default: the default group).
        affine: learn a per-channel scale and shift.
        track_running_stats: keep running statistics (without them, patch statistics only).
        bias: learn the shift (with ``affine``), as ``nn.BatchNorm2d``'s ``bias`` flag.
        device: device of the parameters and buffers.
        dtype: dtype of the parameters and buffers.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        *,
        mix: str = "stochastic",
        p: float = 0.5,
        lam: float = 0.5,
        modes: tuple[int, ...] = (0, 1, 2),
        num_modes: int = 2,
        cut_range: tuple[float, float] = (0.25, 0.75),
        min_size: int = 2,
        generator: torch.Generator | None = None,
        sync: bool = False,
        process_group=None,
        affine: bool = True,
        track_running_stats: bool = True,
        bias: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__(num_features, eps, momentum, affine, track_running_stats,
                         device=device, dtype=dtype, bias=bias)
        modes = tuple(int(m) for m in modes)
        if mix not in _MIXES:
            raise ValueError(f"mix must be one of {_MIXES}, got '{mix}'")
        if not 0.0 <= p <= 1.0 or not 0.0 <= lam <= 1.0:
            raise ValueError(f"p and lam must lie in [0, 1], got p={p}, lam={lam}")
        if not modes or len(set(modes)) != len(modes) or not set(modes) <= {0, 1, 2}:
            raise ValueError(f"modes must be distinct values among 0, 1, 2; got {modes}")
        if not 1 <= num_modes <= len(modes):
            raise ValueError(f"num_modes must lie in [1, {len(modes)}], got {num_modes}")
        lo, hi = (float(v) for v in cut_range)
        if not 0.0 < lo < hi <= 1.0:
            raise ValueError(f"cut_range must satisfy 0 < lo < hi <= 1, got {cut_range}")
        if min_size < 1:
            raise ValueError(f"min_size must be >= 1, got {min_size}")
        self.mix, self.p, self.lam = mix, float(p), float(lam)
        self.modes, self.num_modes = modes, int(num_modes)
        self.cut_range, self.min_size = (lo, hi), int(min_size)
        self._cut_lo, self._cut_ratio = _fraction(lo), _fraction(hi) / _fraction(lo)
        self.generator = generator
        self.sync, self.process_group = bool(sync), process_group
        # Synchronized draws: one generator, seeded alike on every rank at the first
        # synchronized forward (see ``_sync_batch``).
        self._shared_generator: torch.Generator | None = None
        # What the last training forward drew (read by tests and for inspection).
        self.last_splits: list[Split] = []
        self.last_mode_choice: torch.Tensor | None = None
        self.last_use_batch: torch.Tensor | None = None

    def extra_repr(self) -> str:
        mix = f"p={self.p}" if self.mix == "stochastic" else f"lam={self.lam}"
        return (f"{super().extra_repr()}, mix={self.mix}, {mix}, modes={self.modes}, "
                f"num_modes={self.num_modes}, cut_range={self.cut_range}, "
                f"min_size={self.min_size}{', sync=True' if self.sync else ''}")

    # -- random draws -------------------------------------------------------------------------
    def cut_bounds(self, size: int) -> tuple[int, int]:
        """Half-open range ``[lo, hi)`` of allowed cut positions along a side (empty if lo >= hi).

        Args:
            size: length of the side.

        Returns:
            ``(lo, hi)``.
        """
        return _cut_bounds(size, self._cut_lo, self._cut_ratio, self.min_size)

    def _draw(self, n: int, h: int, w: int, c: int,
              generator: torch.Generator | None = None) -> tuple[list[Split], torch.Tensor]:
        """All random draws of one training forward, from a single call to the generator.

        Args:
            n: batch size (of all processes, when synchronized).
            h: map height.
            w: map width.
            c: number of channels.
            generator: the generator to draw from (default ``self.generator``).

        Returns:
            The splits (one per drawn mode, in draw order; the first updates the running
            statistics) and (8, C) uniforms for the per-channel draws (row 0: mode choice,
            rows 1...: the stochastic masks of the patches).
        """
        generator = self.generator if generator is None else generator
        # 9 uniforms for the splits, 8 C for the per-channel mode choice and masks.
        u = torch.rand(9 + 8 * c, generator=generator, device=_device_of(generator))
        return self._splits(u[:9].tolist(), n, h, w), u[9:].view(8, c)

    def _splits(self, scalars: list[float], n: int, h: int, w: int) -> list[Split]:
        """The splits drawn by 9 uniforms, for a batch of ``n`` maps of ``h`` x ``w``."""
        k = len(self.modes)
        # A uniform random permutation of the modes: argsort of k uniforms.
        order = sorted(range(k), key=scalars.__getitem__)[: self.num_modes]
        draws = iter(scalars[k:])

        def cut(size):
            lo, hi = self.cut_bounds(size)
            v = next(draws)
            return min(lo + int(v * (hi - lo)), hi - 1) if lo < hi else None

        splits = []
        for i in order:
            mode, row, col = self.modes[i], None, None
            if mode == 1:
                if next(draws) < 0.5:
                    col = cut(w)
                else:
                    row = cut(h)
            elif mode == 2:
                row, col = cut(h), cut(w)
                if row is None or col is None:
                    row = col = None
            ph = h if row is None else min(row, h - row)
            pw = w if col is None else min(col, w - col)
            if n * ph * pw < 2:
                row = col = None
            splits.append(Split(mode, row, col))
        return splits

    def _distributed(self) -> bool:
        """Whether ``torch.distributed`` runs with more than one process in the group."""
        return comm.is_dist() and dist.get_world_size(self.process_group) > 1

    def _sync_batch(self, n: int, device: torch.device) -> tuple[list[int], torch.Generator]:
        """Every rank's batch size, and the generator all ranks draw from, in one ``all_gather``.

        On the first synchronized forward every rank also sends a seed drawn from its own
        generator; all ranks seed one private generator with the first rank's, so they draw
        the same values from then on without exchanging them.

        Args:
            n: this rank's batch size.
            device: where the collective's tensors live (the input's device, as NCCL needs).

        Returns:
            The batch sizes in group-rank order and the shared generator.
        """
        group, first = self.process_group, self._shared_generator is None
        mine = [n]
        if first:
            mine.append(int(torch.randint(2**62, (1,), generator=self.generator,
                                          device=_device_of(self.generator))))
        local = torch.tensor(mine, dtype=torch.int64, device=device)
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, local, group=group)
        table = torch.stack(parts).tolist()  # one read-back
        if first:
            self._shared_generator = torch.Generator(_device_of(self.generator))
            self._shared_generator.manual_seed(table[0][1])
        return [row[0] for row in table], self._shared_generator

    # -- forward ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not self.training:
            return super().forward(x)
        n, c, h, w = x.shape
        synced = self.sync and self._distributed()
        if not synced and n * h * w < 2:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size {x.shape}")
        x = x.contiguous()
        with _no_autocast(x.device):
            return self._train_forward(x, synced)

    def _train_forward(self, x: torch.Tensor, synced: bool) -> torch.Tensor:
        """The training forward, run with autocast off: statistics, coefficients and their
        gradients in float32 (or float64 for a float64 map), the map itself in its own dtype."""
        n, c, h, w = x.shape
        dtype = _acc_dtype(x.dtype)
        if not synced:
            total, sync = n, None
            splits, uniforms = self._draw(n, h, w, c)
        else:
            counts, generator = self._sync_batch(n, x.device)
            total, sync = sum(counts), (self.process_group, counts)
            if min(counts) < 1 or total * h * w < 2:  # the same decision on every rank
                raise ValueError(
                    f"Synchronized PBN needs at least one sample on every process and more than "
                    f"1 value per channel in all; got batch sizes {counts} of {h} x {w} maps")
            splits, uniforms = self._draw(total, h, w, c, generator)
        layout = _layout(total, h, w, splits, x.device, dtype)
        self.last_splits = splits
        if uniforms.device != x.device:
            uniforms = uniforms.to(x.device, non_blocking=True)
        coef_map = self._coefficient_map(layout, uniforms, c, dtype)
        weight, bias = self.weight, self.bias
        if weight is not None and weight.dtype != dtype:
            weight = weight.to(dtype)
        if bias is not None and bias.dtype != dtype:
            bias = bias.to(dtype)
        return _PatchNormFunction.apply(x, weight, bias, layout, coef_map, sync)

    def _coefficient_map(self, layout: _Layout, uniforms: torch.Tensor, c: int,
                         dtype) -> _CoefficientMap:
        """Turn this forward's per-channel uniforms into masks and build its coefficient map."""
        k_modes, num = len(layout.patches_per_mode), layout.num_patches
        tracking = self.track_running_stats and self.running_mean is not None
        stochastic = tracking and self.mix == "stochastic"
        if k_modes > 1:
            # Uniform choice of a mode per channel (a Bernoulli(0.5) mask for two modes).
            choice = (uniforms[0] * k_modes).long().clamp_(max=k_modes - 1)
            select = layout.cover[choice]
        else:
            choice, select = None, layout.cover[0].expand(c, num, layout.num_cells)
        use_batch = (uniforms[1:1 + num] < self.p).t() if stochastic else None
        self.last_mode_choice, self.last_use_batch = choice, use_batch
        trajectory = None
        if tracking:
            factor = running_update_factor(self)
            first = layout.patches_per_mode[0]

            def trajectory(stacked):
                return _running_trajectory(stacked, layout, self.running_mean, self.running_var,
                                           first, factor, self.momentum is None)

        keep = self.lam if tracking and self.mix == "weighted" else 0.0
        return _CoefficientMap(layout, select, use_batch, keep, trajectory, self.eps)


@register_norm("StochNorm")
class StochNorm2d(PatchBatchNorm2d):
    """Stochastic Normalization (Kou et al., NeurIPS 2020) for 2D maps.

    In training, each channel is normalized with the batch statistics with probability ``p``
    and with the running statistics (before this batch's update) otherwise, the mask drawn anew
    every forward; running statistics are updated with the batch statistics as in BN. In
    ``eval()`` mode it is ``nn.BatchNorm2d``. Same parameters, buffers and ``state_dict`` keys
    as ``nn.BatchNorm2d``.

    Args:
        num_features: number of channels C.
        eps: added to the variance.
        momentum: running-statistics momentum (``None``: cumulative average).
        p: per-channel probability of using the batch statistics.
        generator: ``torch.Generator`` for the masks (default: the global torch RNG).
        affine: learn a per-channel scale and shift.
        track_running_stats: keep running statistics.
        bias: learn the shift (with ``affine``).
        device: device of the parameters and buffers.
        dtype: dtype of the parameters and buffers.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        *,
        p: float = 0.5,
        generator: torch.Generator | None = None,
        affine: bool = True,
        track_running_stats: bool = True,
        bias: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__(num_features, eps, momentum, mix="stochastic", p=p, modes=(0,),
                         num_modes=1, generator=generator, affine=affine,
                         track_running_stats=track_running_stats, bias=bias, device=device,
                         dtype=dtype)

    def extra_repr(self) -> str:
        return f"{nn.BatchNorm2d.extra_repr(self)}, p={self.p}"


def _fraction(value: float) -> Fraction:
    """``value`` as an exact fraction, so cut bounds do not depend on float rounding."""
    return Fraction(value).limit_denominator(1_000_000)


@functools.lru_cache(maxsize=4096)
def _cut_bounds(size: int, lo_frac: Fraction, ratio: Fraction, min_size: int) -> tuple[int, int]:
    """``PatchBatchNorm2d.cut_bounds``, cached: it runs for every side of every forward."""
    lo = math.floor(size * lo_frac)
    hi = math.floor(lo * ratio)
    return max(lo, min_size), min(hi, size - min_size + 1)


def _device_of(generator: torch.Generator | None) -> torch.device:
    """Where a generator draws (the global RNG: the CPU)."""
    return generator.device if generator is not None else torch.device("cpu")
