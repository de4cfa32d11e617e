"""Keyed random generators and colour helpers shared by the synthetic renderers."""

from __future__ import annotations

import colorsys

import numpy as np

__all__ = ["SS", "hsv", "keyed_rng", "uniform"]

#: Supersampling factor: persons and scenes are drawn at SS x the output size, then
#: box-filtered down (anti-aliasing).
SS = 2


def keyed_rng(*keys: int) -> np.random.Generator:
    """A generator seeded by integer keys (seed, domain code, image, ...).

    Every image draws from its own keys, so leaving images out or changing one image's
    rendering does not change the others.

    Args:
        *keys: the integers (each taken modulo 2**32).

    Returns:
        A fresh numpy generator.
    """
    return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]))


def uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    """A uniform draw from ``lo_hi``; an empty range returns its low end without drawing.

    Args:
        rng: the generator.
        lo_hi: ``(low, high)``.

    Returns:
        The value.
    """
    return float(rng.uniform(lo_hi[0], lo_hi[1])) if lo_hi[1] > lo_hi[0] else float(lo_hi[0])


def hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    """An 8-bit RGB colour from hue (wrapped), saturation and value (clipped to [0, 1]).

    Args:
        h: hue, in turns.
        s: saturation.
        v: value.

    Returns:
        ``(r, g, b)`` in 0..255.
    """
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(r * 255), int(g * 255), int(b * 255)
