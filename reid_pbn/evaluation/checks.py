"""Checks shared by the metrics, the re-ranker, the index and the feature extractor: non-finite
rows named in the error, and metric values that must lie in [0, 1].

A single NaN or inf feature or distance does not fail loudly on its own: NaN compares false
with everything, so a NaN gallery vector is never found and a NaN query gets arbitrary ranks,
and overflowing distances turn the rank engine's ordering into nonsense (mAP of 5.5 was seen).
Everything that consumes features or distances therefore refuses non-finite rows up front,
with the row numbers, so the caller can find the image or the feature that went wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

__all__ = [
    "nonfinite_rows", "check_finite_rows", "check_unit_interval", "MAX_ROWS_SHOWN",
    "OVERFLOW_HINT", "FEATURES_HINT",
]

#: Rows named in an error message; the message also gives how many rows are affected.
MAX_ROWS_SHOWN = 5
#: What to do about non-finite distances: the usual cause is squared Euclidean distances of
#: large features (above ~1e19 per coordinate, less in high dimensions) overflowing float32.
OVERFLOW_HINT = (
    "Squared Euclidean distances of large features overflow float32: L2-normalize the "
    "features or use metric='cosine'"
)
#: What to do about non-finite features.
FEATURES_HINT = (
    "Features must be finite; find the images or the model step that produced them (a NaN "
    "pixel, an unstable checkpoint)"
)


def nonfinite_rows(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Rows of a 2-D array or tensor that hold at least one NaN or inf.

    A row sum in float64 is NaN or inf exactly when the row holds NaN or inf (float32 values,
    however large, cannot overflow a float64 sum), which needs no elementwise mask of the whole
    input; float64 inputs whose sums overflow are checked again elementwise on those rows.

    Args:
        x: (N, D) numpy array or tensor (any device, any float or integer dtype).

    Returns:
        Sorted ``int64`` row indices (empty when every value is finite).
    """
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if not (x.is_floating_point() or x.is_complex()) or x.numel() == 0:
            return np.zeros(0, dtype=np.int64)
        sums = x.sum(dim=1, dtype=torch.float64)
        rows = torch.nonzero(~torch.isfinite(sums)).flatten()
        if len(rows) and x.dtype == torch.float64:
            rows = rows[~torch.isfinite(x[rows]).all(dim=1)]
        return rows.cpu().numpy().astype(np.int64)
    x = np.asarray(x)
    if x.dtype.kind not in "fc" or x.size == 0:
        return np.zeros(0, dtype=np.int64)
    with np.errstate(over="ignore", invalid="ignore"):
        sums = x.sum(axis=1, dtype=np.float64)
    rows = np.flatnonzero(~np.isfinite(sums))
    if len(rows) and x.dtype.itemsize >= 8:
        rows = rows[~np.isfinite(x[rows]).all(axis=1)]
    return rows.astype(np.int64)


def check_finite_rows(
    x: np.ndarray | torch.Tensor,
    what: str,
    *,
    label: Callable[[int], str] | None = None,
    hint: str = "",
    offset: int = 0,
    total: int | None = None,
) -> None:
    """Raises ``ValueError`` naming the first rows of ``x`` that hold NaN or inf.

    Args:
        x: (N, D) numpy array or tensor.
        what: what the rows are, for the message (e.g. ``"query features"``).
        label: maps a row index to the name shown for it (e.g. its image path); by default
            ``"row i"``.
        hint: what the caller can do about it, appended to the message.
        offset: added to the row indices shown (for blocks of a larger array).
        total: rows of the whole array, for the message; by default ``len(x)`` when
            ``offset`` is 0 and not shown otherwise.

    Raises:
        ValueError: some row is not finite.
    """
    rows = nonfinite_rows(x)
    if len(rows) == 0:
        return
    rows = rows + offset
    name = label or (lambda i: f"row {i}")
    shown = ", ".join(name(int(i)) for i in rows[:MAX_ROWS_SHOWN])
    more = f" and {len(rows) - MAX_ROWS_SHOWN} more" if len(rows) > MAX_ROWS_SHOWN else ""
    if total is None and offset == 0:
        total = x.shape[0]
    of = f" of {total}" if total is not None else ""
    message = f"{what}: NaN or inf in {len(rows)}{of} rows ({shown}{more})"
    raise ValueError(message + (f". {hint}" if hint else ""))


def check_unit_interval(values: dict[str, float | np.ndarray | Sequence[float]]) -> None:
    """Refuses metric values outside [0, 1] (mAP, mINP, CMC, AP, INP) before they are reported.

    The metrics are fractions by construction; a value outside [0, 1] (or NaN) means a bug or
    corrupted input slipped past the earlier checks, and reporting it would publish an
    impossible number.

    Args:
        values: metric name to value or array of values.

    Raises:
        RuntimeError: some value is NaN or outside [0, 1].
    """
    for name, v in values.items():
        arr = np.asarray(v, dtype=np.float64).reshape(-1)
        bad = np.flatnonzero(~((arr >= 0.0) & (arr <= 1.0)))
        if len(bad):
            raise RuntimeError(
                f"internal error: {name} has {len(bad)} value(s) outside [0, 1] (first: "
                f"{arr[bad[0]]!r} at position {int(bad[0])}); no metrics are reported rather "
                "than impossible ones. Please report this with the features or distances that "
                "produced it."
            )
