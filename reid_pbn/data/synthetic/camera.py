"""Cameras of a synthetic domain: a fixed background scene per camera and the photometric
effects (light, colour cast, contrast, resolution, blur, noise) applied to every image."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from ._common import hsv, uniform
from .styles import DomainStyle

__all__ = ["Camera", "camera_effects", "make_camera"]


@dataclass
class Camera:
    """One camera of a domain: its scene, viewpoints and photometric style (drawn once
    per camera by :func:`make_camera`)."""

    scene: np.ndarray  # panorama at drawing resolution
    views: tuple[float, float, float]  # probabilities of front, back, side
    side_dir: float  # probability that a side view faces right
    scale: tuple[float, float]
    gain: float
    cast: np.ndarray
    contrast: float
    saturation: float
    gradient: np.ndarray  # (gx, gy) illumination ramp
    blur: float
    noise: float
    downscale: float
    vignette: float
    quality: int


def make_camera(style: DomainStyle, rng: np.random.Generator, cam: int, h: int, w: int) -> Camera:
    """Draw camera ``cam`` of a domain from its style.

    Args:
        style: the domain's style distribution.
        rng: the camera's own generator.
        cam: camera index (sets the dominant viewpoint).
        h: drawing height (output height x :data:`SS`).
        w: drawing width; the scene panorama is four times as wide.

    Returns:
        The camera.
    """
    kinds = list(style.scenes)
    kind = str(rng.choice(kinds, p=np.array([style.scenes[k] for k in kinds]) / sum(
        style.scenes.values())))
    views = np.full(3, 0.2)
    views[(cam + int(rng.integers(3))) % 3] = 0.6
    cast_dir = np.array(style.casts[rng.integers(len(style.casts))], np.float32)
    strength = uniform(rng, style.cast_strength)
    cast = 1.0 + strength * (cast_dir - 1.0) + rng.normal(0, 0.02, 3).astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    g = uniform(rng, style.gradient)
    return Camera(
        scene=_scene(kind, rng, h, 4 * w),
        views=tuple(views / views.sum()),
        side_dir=float(rng.choice([0.25, 0.5, 0.75])),
        scale=style.scale,
        gain=uniform(rng, style.gain),
        cast=cast.astype(np.float32),
        contrast=uniform(rng, style.contrast),
        saturation=uniform(rng, style.saturation),
        gradient=np.array([g * math.cos(angle), g * math.sin(angle)], np.float32),
        blur=uniform(rng, style.blur),
        noise=uniform(rng, style.noise),
        downscale=uniform(rng, style.downscale),
        vignette=uniform(rng, style.vignette),
        quality=int(rng.integers(style.jpeg_quality[0], style.jpeg_quality[1] + 1)),
    )


def camera_effects(img: Image.Image, cam: Camera, rng: np.random.Generator) -> Image.Image:
    """Apply a camera's light, colour, resolution, blur and noise to an output-size image.

    Args:
        img: the scene with the person, at output resolution.
        cam: the camera.
        rng: the image's generator (continues the image's draws).

    Returns:
        The image as the camera records it (before JPEG compression).
    """
    H, W = img.height, img.width
    a = np.asarray(img, np.float32) / 255.0
    ys = np.linspace(-1, 1, H, dtype=np.float32)[:, None]
    xs = np.linspace(-1, 1, W, dtype=np.float32)[None, :]
    light = cam.gain * rng.uniform(0.94, 1.06) * (1 + cam.gradient[0] * xs + cam.gradient[1] * ys)
    if cam.vignette > 0:
        light = light * (1 - cam.vignette * (xs**2 + ys**2) / 2)
    a = a * light[..., None]
    grey = a.mean(axis=2, keepdims=True)
    a = grey + cam.saturation * (a - grey)
    a = a * cam.cast
    a = 0.5 + cam.contrast * (a - 0.5)
    out = Image.fromarray((np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8))
    if cam.downscale > 1.05:
        small = (max(int(W / cam.downscale), 1), max(int(H / cam.downscale), 1))
        out = out.resize(small, Image.Resampling.BILINEAR).resize((W, H), Image.Resampling.BILINEAR)
    if cam.blur > 0.05:
        out = out.filter(ImageFilter.GaussianBlur(cam.blur * H / 128))
    a = np.asarray(out, np.float32)
    a += cam.noise * rng.standard_normal((H, W, 1), dtype=np.float32)  # luminance noise
    a += 0.4 * cam.noise * rng.standard_normal((H, W, 3), dtype=np.float32)  # chroma noise
    return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8))


# ------------------------------------------------------------------------------------------
# Scenes (one background panorama per camera; images crop it at random offsets)
# ------------------------------------------------------------------------------------------
def _rect(a: np.ndarray, x0: float, y0: float, x1: float, y1: float, colour) -> None:
    h, w = a.shape[:2]
    xa, xb = max(int(x0), 0), min(int(x1), w)
    ya, yb = max(int(y0), 0), min(int(y1), h)
    if xa < xb and ya < yb:
        a[ya:yb, xa:xb] = colour


def _scene(kind: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Background of height ``h`` and width ``w`` (float RGB 0..255)."""
    a = np.zeros((h, w, 3), np.float32)
    yy = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    if kind == "street":
        horizon = int(h * rng.uniform(0.45, 0.62))
        sky = int(h * rng.uniform(0.0, 0.18))
        a[:] = np.array([200, 220, 240], np.float32) * (0.9 + 0.1 * yy)
        facade = np.array([(214, 196, 164), (176, 96, 74), (172, 172, 178), (226, 226, 218),
                           (222, 204, 128)][rng.integers(5)], np.float32)
        a[sky:horizon] = facade * rng.uniform(0.85, 1.05)
        win = np.array((80, 100, 125), np.float32) * rng.uniform(0.8, 1.2)
        step_x, step_y = rng.uniform(0.18, 0.3) * h, rng.uniform(0.14, 0.22) * h
        for y in np.arange(sky + 0.04 * h, horizon - 0.12 * h, step_y):
            for x in np.arange(rng.uniform(0, step_x), w, step_x):
                _rect(a, x, y, x + 0.5 * step_x, y + 0.6 * step_y, win)
        sign = np.array(hsv(rng.random(), 0.7, 0.85), np.float32)
        _rect(a, 0, horizon - 0.1 * h, w, horizon - 0.06 * h, sign)
        for _ in range(int(rng.integers(1, 4))):  # trees in front of the facade
            cx, cy, r = rng.uniform(0, w), horizon - rng.uniform(0.0, 0.15) * h, h * 0.12
            rows, cols = np.ogrid[:h, :w]
            mask = ((cols - cx) / r) ** 2 + ((rows - cy) / (1.3 * r)) ** 2 < 1
            a[mask] = np.array((70, 120, 60), np.float32) * rng.uniform(0.8, 1.2)
        ground = np.array([(190, 186, 176), (160, 160, 160), (200, 180, 150)][rng.integers(3)],
                          np.float32)
        a[horizon:] = ground * (0.9 + 0.15 * yy[horizon:])
        tile = max(int(h * rng.uniform(0.06, 0.1)), 2)
        a[horizon::tile] *= 0.8
        a[horizon:, ::tile] *= 0.85
    elif kind == "indoor":
        horizon = int(h * rng.uniform(0.55, 0.72))
        wall = np.array([(120, 140, 135), (200, 190, 170), (110, 80, 60), (150, 150, 160),
                         (170, 160, 120), (90, 110, 140)][rng.integers(6)], np.float32)
        a[:horizon] = wall * (0.8 + 0.35 * (1 - yy[:horizon]))
        panel = max(int(w / rng.uniform(6, 12)), 2)
        a[:horizon, ::panel] *= 0.75
        for _ in range(int(rng.integers(1, 3))):
            x = rng.uniform(0, w)
            _rect(a, x, horizon - 0.45 * h, x + 0.18 * h, horizon, wall * 0.55)
        _rect(a, 0, 0, w, 0.03 * h, (250, 250, 235))  # ceiling lights
        floor = np.array([(80, 75, 70), (110, 100, 90), (60, 60, 70), (140, 130, 115)]
                         [rng.integers(4)], np.float32)
        a[horizon:] = floor * (1.25 - 0.4 * (yy[horizon:] - yy[horizon]))
        tile = max(int(h * rng.uniform(0.08, 0.14)), 2)
        a[horizon:, ::tile] *= 0.85
    else:  # night street
        horizon = int(h * rng.uniform(0.5, 0.65))
        a[:] = np.array((14, 16, 28), np.float32) * (0.8 + 0.4 * yy)
        x = -rng.uniform(0, 0.3 * h)
        while x < w:  # dark buildings with a grid of windows, some lit
            bw, top = rng.uniform(0.3, 0.6) * h, rng.uniform(0.0, 0.25) * h
            _rect(a, x, top, x + bw, horizon, np.full(3, rng.uniform(25, 45), np.float32))
            for wy in np.arange(top + 0.04 * h, horizon - 0.15 * h, 0.09 * h):
                for wx in np.arange(x + 0.04 * h, x + bw - 0.06 * h, 0.08 * h):
                    if rng.random() < 0.3:
                        _rect(a, wx, wy, wx + 0.035 * h, wy + 0.045 * h, (230, 200, 120))
            x += bw + rng.uniform(0.02, 0.1) * h
        neon = np.array(hsv(rng.random(), 0.9, 1.0), np.float32)
        _rect(a, rng.uniform(0, w), horizon - 0.2 * h, w, horizon - 0.17 * h, neon)
        a[horizon:] = np.array((48, 48, 52), np.float32)
        for x in np.arange(rng.uniform(0, 0.3 * h), w, 0.4 * h):  # road marks
            _rect(a, x, h * 0.9, x + 0.2 * h, h * 0.92, (200, 200, 170))
        ys, xs = np.mgrid[:h, :w].astype(np.float32)
        for _ in range(int(rng.integers(1, 3))):  # street-lamp glow
            cx, cy = rng.uniform(0, w), rng.uniform(0.05, 0.3) * h
            glow = np.exp(-(((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * (0.25 * h) ** 2)))
            a += glow[..., None] * np.array((140, 110, 60), np.float32)
    a += rng.normal(0, 4, size=(h, w, 1)).astype(np.float32)  # surface texture
    return np.clip(a, 0, 255)
