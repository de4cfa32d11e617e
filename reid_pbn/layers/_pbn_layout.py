"""The cells and patches of a PBN training forward, as small tables (private to PBN).

All cut positions of a forward's drawn modes split the map into at most 3 x 3 "cells"; every
patch of every drawn mode is a union of cells. :class:`_Layout` holds, as small tensors, which
cell each position falls in, each patch's share of each cell, which patches belong to which
mode, and the counts the running update needs; :mod:`reid_pbn.layers._pbn_kernel` pools
per-position moments into cells and spreads per-cell coefficients back with them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch

_ONE_HOT_MAX_AREA = 128
_LAYOUT_CACHE: OrderedDict = OrderedDict()
_LAYOUT_LOCK = threading.Lock()
# A ResNet-50 draws a few hundred distinct cut combinations at its map sizes; each layout is a
# few small tables, so caching all maps (not only small ones) costs little and spares the
# host-to-device copies of the tables on every forward.
_LAYOUT_CACHE_SIZE = 1024


class _Layout:
    """Cells of the drawn cuts and each patch's cells, as small tensors.

    Attributes:
        num_cells: number of cells (1 when no mode cut the map).
        row_index: (H,) cell row of every map row; ``col_index``: (W,) cell column of every
            map column.
        cells: (H*W, cells) one-hot cell of every position on small maps, else ``None``.
        cell_size: (cells,) positions per cell.
        weights: (cells, patches) share of each cell in each patch (0 outside it); the patches
            of all drawn modes, in draw order.
        cover: (modes, patches, cells) 1 where the patch belongs to the mode and covers the
            cell.
        unbias: (2, 1, patches): 1 for the means, ``count / (count - 1)`` (``count = N * area``)
            for the variances, as BN's running update uses the unbiased variance.
        patches_per_mode: number of patches of each drawn mode.
    """

    def __init__(self, n: int, h: int, w: int, splits: list, device, dtype):
        rows = sorted({s.row for s in splits if s.row is not None})
        cols = sorted({s.col for s in splits if s.col is not None})
        rb, cb = [0, *rows, h], [0, *cols, w]
        nr, ncol = len(rb) - 1, len(cb) - 1
        nc = self.num_cells = nr * ncol
        k_modes = len(splits)
        cell_size = [(rb[i + 1] - rb[i]) * (cb[j + 1] - cb[j])
                     for i in range(nr) for j in range(ncol)]
        weights, cover, unbias = [], [], []
        self.patches_per_mode = []
        for k, s in enumerate(splits):
            per_row = 2 if s.col is not None else 1
            num = per_row * (2 if s.row is not None else 1)
            self.patches_per_mode.append(num)
            # Patch of every cell under this split, numbered as the official code orders
            # patches: (top-left, top-right, bottom-left, bottom-right).
            region = [
                (0 if s.row is None else int(rb[i] >= s.row)) * per_row
                + (0 if s.col is None else int(cb[j] >= s.col))
                for i in range(nr)
                for j in range(ncol)
            ]
            for p in range(num):
                area = sum(a for a, r in zip(cell_size, region) if r == p)
                weights.append([a / area if r == p else 0.0 for a, r in zip(cell_size, region)])
                count = n * area
                unbias.append(count / (count - 1))
                member = [1.0 if r == p else 0.0 for r in region]
                cover.extend(member if kk == k else [0.0] * nc for kk in range(k_modes))
        num = self.num_patches = len(weights)
        # One host-to-device tensor for all the small tables.
        flat = [v for row in weights for v in row]
        flat += [v for part in cover for v in part] + [1.0] * num + unbias + cell_size
        packed = _host_table(flat, dtype, device)
        sizes = [num * nc, num * k_modes * nc, 2 * num, nc]
        weights_t, cover_t, unbias_t, self.cell_size = packed.split(sizes)
        self.unbias = unbias_t.view(2, 1, num)
        self.weights = weights_t.view(num, nc).t()
        self.cover = cover_t.view(num, k_modes, nc).transpose(0, 1)
        self.h, self.w, self.num_rows, self.num_cols = h, w, nr, ncol
        # Cell row of every map row and cell column of every map column.
        index = [i for i in range(nr) for _ in range(rb[i], rb[i + 1])]
        index += [j for j in range(ncol) for _ in range(cb[j], cb[j + 1])]
        self.row_index, self.col_index = _host_table(index, torch.long, device).split([h, w])
        # Small maps (the most layers of a ResNet) pool and spread with one matrix product
        # against the one-hot cell of every position: fewer, cheaper calls there.
        self.cells = None
        if h * w <= _ONE_HOT_MAX_AREA:
            self.cells = (self.row_index[:, None, None] * ncol + self.col_index[None, :, None]
                          == torch.arange(nc, device=device)).to(dtype).view(h * w, nc)

    def pool(self, *ts: torch.Tensor) -> torch.Tensor:
        """Sums over each cell: tensors (B, H*W) -> stacked (len(ts), B, cells)."""
        if self.cells is not None:
            return torch.stack([t @ self.cells for t in ts])
        b, h, w = ts[0].shape[0], self.h, self.w
        rows = ts[0].new_zeros(len(ts), b, self.num_rows, w)
        for out, t in zip(rows, ts):
            out.index_add_(1, self.row_index, t.view(b, h, w))
        cells = rows.new_zeros(len(ts), b, self.num_rows, self.num_cols)
        return cells.index_add_(3, self.col_index, rows).view(len(ts), b, -1)

    def spread(self, v: torch.Tensor) -> torch.Tensor:
        """Each cell's value at all its positions: (B, cells) -> (B, H*W)."""
        if self.cells is not None:
            return v @ self.cells.t()
        b = v.shape[0]
        full = v.view(b, self.num_rows, self.num_cols).index_select(2, self.col_index)
        return full.index_select(1, self.row_index).view(b, self.h * self.w)


def _layout(n: int, h: int, w: int, splits: list, device, dtype) -> _Layout:
    """``_Layout``, cached (LRU): building it costs more than using it."""
    key = (n, h, w, tuple(splits), device, dtype)
    with _LAYOUT_LOCK:  # replicas of DataParallel run in threads
        layout = _LAYOUT_CACHE.get(key)
        if layout is None:
            layout = _LAYOUT_CACHE[key] = _Layout(n, h, w, splits, device, dtype)
            if len(_LAYOUT_CACHE) > _LAYOUT_CACHE_SIZE:
                _LAYOUT_CACHE.popitem(last=False)
        else:
            _LAYOUT_CACHE.move_to_end(key)
    return layout


def _host_table(values: list, dtype, device) -> torch.Tensor:
    """A small table built on the host and sent to ``device`` without a stream sync.

    ``torch.tensor(values, device="cuda")`` copies synchronously; a pinned host tensor is
    copied asynchronously (the caching host allocator keeps it alive until the copy is done).
    """
    table = torch.tensor(values, dtype=dtype)
    device = torch.device(device)
    if device.type == "cpu":
        return table
    if device.type == "cuda":
        table = table.pin_memory()
    return table.to(device, non_blocking=True)
