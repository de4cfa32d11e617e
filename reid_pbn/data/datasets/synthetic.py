"""Synthetic domain-shift data: procedurally drawn persons seen by cameras of distinct styles.

Each *identity* is a cartoon person with a fixed body shape (height, width, head size, skin and
hair), clothing (upper and lower colours, a pattern such as stripes, checks, a chest logo or a
two-tone top; trousers, shorts or a skirt; shoes) and accessories (hat, shoulder bag,
backpack). Each *camera* of a domain has a fixed scene (background texture and layout), a
dominant viewpoint (front, back or side), a scale range and a photometric style (illumination
gain and gradient, colour cast, contrast, saturation, blur, sensor noise, resolution, JPEG
quality). A *domain* is a distribution over those camera styles:

* ``SyntheticA`` - bright daylight street scenes, neutral colours, sharp, little noise.
* ``SyntheticB`` - dim indoor scenes under coloured lamps: strong casts, low contrast, blur.
* ``SyntheticC`` - night surveillance: dark streets, blue/cyan cast, low resolution, heavy
  noise, vignetting.

Identity cues (clothing colours and patterns, accessories, body shape) are drawn from the same
distribution in every domain, so what a model learns on one domain transfers, while the global
style shift opens a domain gap like Market-1501 -> DukeMTMC. The files are written in the exact
Market-1501 tree and naming (``<root>/<Domain>/{bounding_box_train,query,bounding_box_test}/
0001_c1s1_000151_01.jpg``) and read back by the same parser as Market-1501. The shift families
(``SyntheticGlobal``, ``SyntheticLocal``: A's test split under one graded kind of shift) are in
:mod:`.synthetic_shift`.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .bases import resolve_root
from .market1501 import MarketStyleDataset
from .registry import register_dataset

__all__ = [
    "DOMAIN_STYLES",
    "GENERATOR_VERSION",
    "DomainStyle",
    "SyntheticA",
    "SyntheticB",
    "SyntheticC",
    "SyntheticDomain",
    "generate_domain",
]

logger = logging.getLogger(__name__)

#: Bumped whenever the drawing changes, so that stale trees are regenerated.
GENERATOR_VERSION = 2
MANIFEST = "manifest.json"
SPLIT_DIRS = ("bounding_box_train", "query", "bounding_box_test")
_SS = 2  # supersampling factor: draw at 2x, then box-filter down (anti-aliasing)
_VIEWS = ("front", "back", "side")


# ------------------------------------------------------------------------------------------
# Styles
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DomainStyle:
    """The distribution of camera styles of one synthetic domain.

    Ranges are ``(low, high)`` for a uniform draw per camera.

    Attributes:
        code: small integer mixed into the seeds, so domains hold different identities.
        scenes: ``{scene kind: probability}``, kinds ``"street"``, ``"indoor"``, ``"night"``.
        gain: global brightness factor.
        casts: colour-cast directions (RGB gains) one of which each camera takes.
        cast_strength: how far a camera moves from neutral towards its cast.
        contrast: contrast factor around mid grey.
        saturation: saturation factor (0 grey, 1 unchanged).
        gradient: strength of a left-right/top-bottom illumination ramp.
        blur: Gaussian blur sigma in output pixels (at 128 px height).
        noise: sensor noise standard deviation (0..255 scale).
        downscale: factor of a down-and-up resampling (low-resolution camera).
        vignette: darkening of the corners.
        jpeg_quality: JPEG quality range.
        scale: person height as a fraction of the image height.
        lower_value: shift of clothing brightness (darker clothes in winter-like domains).
    """

    code: int
    scenes: dict
    gain: tuple[float, float]
    casts: tuple[tuple[float, float, float], ...]
    cast_strength: tuple[float, float]
    contrast: tuple[float, float]
    saturation: tuple[float, float]
    gradient: tuple[float, float]
    blur: tuple[float, float]
    noise: tuple[float, float]
    downscale: tuple[float, float]
    vignette: tuple[float, float]
    jpeg_quality: tuple[int, int]
    scale: tuple[float, float]
    lower_value: float = 0.0


DOMAIN_STYLES: dict[str, DomainStyle] = {
    "SyntheticA": DomainStyle(
        code=1,
        scenes={"street": 0.85, "indoor": 0.15},
        gain=(1.0, 1.12),
        casts=((1.04, 1.0, 0.96), (0.97, 1.0, 1.03), (1.0, 1.0, 1.0)),
        cast_strength=(0.0, 1.0),
        contrast=(1.0, 1.1),
        saturation=(1.0, 1.15),
        gradient=(0.0, 0.1),
        blur=(0.0, 0.35),
        noise=(1.0, 2.5),
        downscale=(1.0, 1.0),
        vignette=(0.0, 0.05),
        jpeg_quality=(90, 95),
        scale=(0.82, 0.92),
    ),
    "SyntheticB": DomainStyle(
        code=2,
        scenes={"indoor": 0.5, "street": 0.5},
        gain=(0.8, 0.95),
        casts=((1.16, 1.0, 0.78),),
        cast_strength=(0.3, 0.6),
        contrast=(0.88, 0.97),
        saturation=(0.82, 0.95),
        gradient=(0.05, 0.15),
        blur=(0.3, 0.7),
        noise=(2.0, 4.0),
        downscale=(1.0, 1.15),
        vignette=(0.05, 0.15),
        jpeg_quality=(78, 90),
        scale=(0.8, 0.9),
        lower_value=-0.03,
    ),
    "SyntheticC": DomainStyle(
        code=3,
        scenes={"night": 0.8, "indoor": 0.2},
        gain=(0.85, 1.0),
        casts=((0.84, 0.96, 1.18),),
        cast_strength=(0.7, 1.0),
        contrast=(1.1, 1.25),
        saturation=(0.55, 0.75),
        gradient=(0.1, 0.25),
        blur=(0.2, 0.5),
        noise=(5.0, 8.0),
        downscale=(1.5, 2.0),
        vignette=(0.25, 0.4),
        jpeg_quality=(65, 80),
        scale=(0.8, 0.92),
    ),
}


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]))


def _u(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(lo_hi[0], lo_hi[1])) if lo_hi[1] > lo_hi[0] else float(lo_hi[0])


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


# ------------------------------------------------------------------------------------------
# Identities
# ------------------------------------------------------------------------------------------
_SKIN = ((241, 204, 177), (224, 172, 132), (198, 134, 96), (141, 85, 54), (92, 58, 40))
_HAIR = ((20, 16, 14), (60, 40, 25), (110, 75, 40), (200, 170, 110), (130, 130, 130), (140, 60, 30))
_SHOES = ((20, 20, 20), (240, 240, 240), (90, 60, 40), (60, 60, 70), (160, 30, 30))
_LOWER = ((40, 60, 110), (25, 25, 30), (190, 170, 130), (110, 110, 115), (70, 50, 40),
          (230, 230, 225), (60, 80, 60))
_PATTERNS = ("plain", "hstripes", "vstripes", "checks", "logo", "twotone")
_PATTERN_P = (0.32, 0.16, 0.1, 0.1, 0.17, 0.15)
_LOGOS = ("circle", "square", "triangle", "diamond")


def _clothing_colour(rng: np.random.Generator, value_shift: float) -> tuple[int, int, int]:
    if rng.random() < 0.22:  # achromatic: white, greys, black
        v = float(rng.choice([0.1, 0.3, 0.55, 0.8, 0.95])) + value_shift
        return _hsv(0.0, 0.0, v + rng.uniform(-0.04, 0.04))
    return _hsv(rng.random(), rng.uniform(0.4, 0.95), rng.uniform(0.35, 0.95) + value_shift)


def _contrasting(rng: np.random.Generator, c: tuple[int, int, int]) -> tuple[int, int, int]:
    h, s, v = colorsys.rgb_to_hsv(*(x / 255 for x in c))
    if rng.random() < 0.5:
        return _hsv(0.0, 0.0, 0.95 if v < 0.5 else 0.08)
    return _hsv(h + rng.uniform(0.25, 0.75), rng.uniform(0.5, 0.95), 1.25 - v)


def _make_identity(rng: np.random.Generator, value_shift: float = 0.0) -> dict:
    upper = _clothing_colour(rng, value_shift)
    lower_type = str(rng.choice(["trousers", "shorts", "skirt"], p=[0.65, 0.2, 0.15]))
    lower = (_LOWER[rng.integers(len(_LOWER))] if rng.random() < 0.6
             else _clothing_colour(rng, value_shift))
    return {
        "height": rng.uniform(0.88, 1.0),
        "width": rng.uniform(0.82, 1.2),
        "head": rng.uniform(0.9, 1.12),
        "skin": _SKIN[rng.integers(len(_SKIN))],
        "hair": _HAIR[rng.integers(len(_HAIR))],
        "long_hair": bool(rng.random() < 0.3),
        "upper": upper,
        "upper2": _contrasting(rng, upper),
        "pattern": str(rng.choice(_PATTERNS, p=_PATTERN_P)),
        "period": rng.uniform(0.035, 0.06),
        "logo": str(rng.choice(_LOGOS)),
        "long_sleeves": bool(rng.random() < 0.6),
        "lower": lower,
        "lower_type": lower_type,
        "shoes": _SHOES[rng.integers(len(_SHOES))],
        "hat": _clothing_colour(rng, 0.0) if rng.random() < 0.2 else None,
        "bag": _clothing_colour(rng, -0.1) if rng.random() < 0.3 else None,
        "bag_side": int(rng.choice([-1, 1])),
        "backpack": _clothing_colour(rng, -0.1) if rng.random() < 0.3 else None,
    }


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
        sign = np.array(_hsv(rng.random(), 0.7, 0.85), np.float32)
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
        neon = np.array(_hsv(rng.random(), 0.9, 1.0), np.float32)
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


@dataclass
class _Camera:
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


def _make_camera(style: DomainStyle, rng: np.random.Generator, cam: int, h: int, w: int) -> _Camera:
    kinds = list(style.scenes)
    kind = str(rng.choice(kinds, p=np.array([style.scenes[k] for k in kinds]) / sum(
        style.scenes.values())))
    views = np.full(3, 0.2)
    views[(cam + int(rng.integers(3))) % 3] = 0.6
    cast_dir = np.array(style.casts[rng.integers(len(style.casts))], np.float32)
    strength = _u(rng, style.cast_strength)
    cast = 1.0 + strength * (cast_dir - 1.0) + rng.normal(0, 0.02, 3).astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    g = _u(rng, style.gradient)
    return _Camera(
        scene=_scene(kind, rng, h, 4 * w),
        views=tuple(views / views.sum()),
        side_dir=float(rng.choice([0.25, 0.5, 0.75])),
        scale=style.scale,
        gain=_u(rng, style.gain),
        cast=cast.astype(np.float32),
        contrast=_u(rng, style.contrast),
        saturation=_u(rng, style.saturation),
        gradient=np.array([g * math.cos(angle), g * math.sin(angle)], np.float32),
        blur=_u(rng, style.blur),
        noise=_u(rng, style.noise),
        downscale=_u(rng, style.downscale),
        vignette=_u(rng, style.vignette),
        quality=int(rng.integers(style.jpeg_quality[0], style.jpeg_quality[1] + 1)),
    )


# ------------------------------------------------------------------------------------------
# Drawing a person
# ------------------------------------------------------------------------------------------
def _draw_person(img: Image.Image, p: dict, view: str, facing: int, cx: float, foot: float,
                 ph: float, phase: float, swing: float) -> None:
    """Draw identity ``p`` on ``img`` (drawing resolution); ``facing`` mirrors side views."""
    d = ImageDraw.Draw(img)
    u = ph
    top = foot - u
    s = facing

    def body_x(dx: float) -> float:  # x relative to the body's centre line, mirrored for side views
        return cx + s * dx

    side = view == "side"
    wf = p["width"]
    hw = (0.075 if side else 0.125) * u * wf  # half torso width at the shoulders
    y_sh, y_hip = top + 0.165 * u, top + 0.5 * u
    y_knee, y_ankle = top + 0.72 * u, top + 0.955 * u
    skin, upper, lower = p["skin"], p["upper"], p["lower"]

    # Shadow on the ground.
    shadow = Image.new("L", img.size, 0)
    ImageDraw.Draw(shadow).ellipse(
        [cx - 0.2 * u, foot - 0.025 * u, cx + 0.2 * u, foot + 0.025 * u], fill=90)
    img.paste((0, 0, 0), mask=shadow)

    # Backpack behind the body in side view; long hair behind in front view.
    if side and p["backpack"] is not None:
        d.rounded_rectangle(
            _box(body_x(-hw - 0.08 * u), y_sh + 0.02 * u, body_x(-hw + 0.02 * u), y_hip - 0.06 * u),
            radius=0.02 * u, fill=p["backpack"])
    head_r = 0.062 * u * p["head"]
    head_cy = top + 0.075 * u
    if p["long_hair"] and view == "front":
        d.rectangle([cx - head_r * 1.05, head_cy, cx + head_r * 1.05, y_sh + 0.06 * u],
                    fill=p["hair"])

    # Legs (trousers, or skin under shorts and skirts) and shoes.
    leg_w = 0.072 * u * wf
    if side:
        hips = [(cx, cx + s * phase * 0.13 * u), (cx, cx - s * phase * 0.13 * u)]
    else:
        spread = 0.05 * u * wf + 0.012 * u * abs(phase)
        hips = [(cx - 0.05 * u * wf, cx - spread), (cx + 0.05 * u * wf, cx + spread)]
    for hx, fx in hips:
        leg_colour = lower if p["lower_type"] == "trousers" else skin
        d.polygon([(hx - leg_w / 2, y_hip), (hx + leg_w / 2, y_hip),
                   (fx + leg_w * 0.4, y_ankle), (fx - leg_w * 0.4, y_ankle)], fill=leg_colour)
        if p["lower_type"] == "shorts":
            kx = hx + (fx - hx) * 0.35
            d.polygon([(hx - leg_w / 2, y_hip), (hx + leg_w / 2, y_hip),
                       (kx + leg_w * 0.5, top + 0.66 * u), (kx - leg_w * 0.5, top + 0.66 * u)],
                      fill=lower)
        toe = 0.06 * u if side else 0.035 * u
        d.rounded_rectangle(_box(fx - (0.035 * u if not side else s * 0.03 * u), y_ankle,
                                       fx + (toe if not side else s * toe), foot),
                            radius=0.01 * u, fill=p["shoes"])
    hip_w = hw * 0.9
    d.polygon([(cx - hip_w, y_hip - 0.01 * u), (cx + hip_w, y_hip - 0.01 * u),
               (cx + hip_w, y_hip + 0.06 * u), (cx - hip_w, y_hip + 0.06 * u)], fill=lower)
    if p["lower_type"] == "skirt":
        d.polygon([(cx - hip_w, y_hip), (cx + hip_w, y_hip),
                   (cx + hip_w * 1.45, y_knee), (cx - hip_w * 1.45, y_knee)], fill=lower)

    # Torso with the clothing pattern, pasted through a mask of the torso's shape.
    torso = [(cx - hw, y_sh), (cx + hw, y_sh), (cx + hw * 0.9, y_hip), (cx - hw * 0.9, y_hip)]
    mask = Image.new("L", img.size, 0)
    md = ImageDraw.Draw(mask)
    md.polygon(torso, fill=255)
    md.ellipse([cx - hw, y_sh - 0.02 * u, cx + hw, y_sh + 0.06 * u], fill=255)
    x0, y0 = int(cx - hw - 2), int(y_sh - 0.02 * u - 2)
    x1, y1 = int(cx + hw + 3), int(y_hip + 2)
    img.paste(_pattern(p, view, x1 - x0, y1 - y0, u, hw, y_sh - y0), (x0, y0),
              mask.crop((x0, y0, x1, y1)))

    # Backpack on the back, straps in front; shoulder bag with its strap.
    if p["backpack"] is not None:
        if view == "back":
            d.rounded_rectangle([cx - hw * 0.75, y_sh + 0.03 * u, cx + hw * 0.75, y_hip - 0.05 * u],
                                radius=0.025 * u, fill=p["backpack"])
        elif view == "front":
            for sx in (-1, 1):
                d.line([(cx + sx * hw * 0.6, y_sh), (cx + sx * hw * 0.55, y_hip - 0.08 * u)],
                       fill=p["backpack"], width=max(int(0.018 * u), 1))
    if p["bag"] is not None:
        bs = p["bag_side"] if not side else -s
        if not side:
            d.line([(cx - bs * hw * 0.8, y_sh), (cx + bs * hw, y_hip - 0.02 * u)],
                   fill=p["bag"], width=max(int(0.012 * u), 1))
        bx = cx + bs * (hw + 0.03 * u) if not side else cx
        d.rounded_rectangle(_box(bx - 0.05 * u, y_hip - 0.06 * u, bx + 0.05 * u,
                                       y_hip + 0.07 * u), radius=0.012 * u, fill=p["bag"])

    # Arms: sleeves in the upper colour, hands (and forearms for short sleeves) in skin.
    arm_w = 0.055 * u * wf
    y_hand = top + 0.5 * u
    arms = [(body_x(0.0), body_x(swing * 0.12 * u))] if side else [
        (cx - hw - arm_w * 0.3, cx - hw - arm_w * 0.5 - swing * 0.01 * u),
        (cx + hw + arm_w * 0.3, cx + hw + arm_w * 0.5 + swing * 0.01 * u)]
    for sx, hx in arms:
        y_sleeve = y_hand - 0.02 * u if p["long_sleeves"] else y_sh + 0.12 * u
        ex = sx + (hx - sx) * (y_sleeve - y_sh) / (y_hand - y_sh)
        d.polygon([(sx - arm_w / 2, y_sh + 0.01 * u), (sx + arm_w / 2, y_sh + 0.01 * u),
                   (hx + arm_w * 0.4, y_hand), (hx - arm_w * 0.4, y_hand)], fill=skin)
        d.polygon([(sx - arm_w / 2, y_sh), (sx + arm_w / 2, y_sh),
                   (ex + arm_w * 0.45, y_sleeve), (ex - arm_w * 0.45, y_sleeve)], fill=upper)
        d.ellipse([hx - arm_w * 0.45, y_hand - 0.01 * u, hx + arm_w * 0.45, y_hand + 0.045 * u],
                  fill=skin)

    # Neck, head, hair, hat.
    d.rectangle([cx - 0.025 * u, head_cy + head_r * 0.6, cx + 0.025 * u, y_sh + 0.01 * u],
                fill=skin)
    hb = [cx - head_r * 0.85, head_cy - head_r, cx + head_r * 0.85, head_cy + head_r]
    if view == "back":
        d.ellipse(hb, fill=p["hair"])
        if p["long_hair"]:
            d.rectangle([cx - head_r * 0.9, head_cy, cx + head_r * 0.9, y_sh + 0.07 * u],
                        fill=p["hair"])
    else:
        d.ellipse([hb[0] - 0.005 * u, hb[1] - 0.008 * u, hb[2] + 0.005 * u, hb[3] - 0.3 * head_r],
                  fill=p["hair"])
        off = s * head_r * 0.25 if side else 0.0
        d.ellipse([hb[0] + off + 0.1 * head_r, hb[1] + 0.45 * head_r, hb[2] + off - 0.1 * head_r,
                   hb[3]], fill=skin)
    if p["hat"] is not None:
        d.chord([hb[0] - 0.1 * head_r, hb[1] - 0.15 * head_r, hb[2] + 0.1 * head_r,
                 hb[1] + 1.1 * head_r], 180, 360, fill=p["hat"])
        if view != "back":
            bx0, bx1 = (hb[0], hb[2]) if not side else sorted((cx, body_x(head_r * 1.5)))
            d.rectangle([bx0, hb[1] + 0.45 * head_r, bx1, hb[1] + 0.6 * head_r], fill=p["hat"])


def _box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    """``[x0, y0, x1, y1]`` with the corners ordered, as PIL's shapes need."""
    return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]


def _pattern(p: dict, view: str, w: int, h: int, u: float, hw: float, y_sh: float) -> Image.Image:
    """The upper garment's texture for a ``w`` x ``h`` box around the torso."""
    c1, c2 = np.array(p["upper"], np.uint8), np.array(p["upper2"], np.uint8)
    a = np.empty((h, w, 3), np.uint8)
    a[:] = c1
    period = max(p["period"] * u, 4.0)
    yy, xx = np.mgrid[:h, :w]
    pat = p["pattern"]
    if pat == "hstripes":
        a[(yy // (period / 2)).astype(int) % 2 == 1] = c2
    elif pat == "vstripes":
        a[(xx // (period / 2)).astype(int) % 2 == 1] = c2
    elif pat == "checks":
        a[((yy // period).astype(int) + (xx // period).astype(int)) % 2 == 1] = c2
    elif pat == "twotone":
        a[: int(y_sh + 0.12 * u)] = c2
    img = Image.fromarray(a)
    if pat == "logo" and view == "front":
        d = ImageDraw.Draw(img)
        cx, cy, r = w / 2, y_sh + 0.12 * u, 0.045 * u
        box = [cx - r, cy - r, cx + r, cy + r]
        shape, fill = p["logo"], tuple(int(v) for v in c2)
        if shape == "circle":
            d.ellipse(box, fill=fill)
        elif shape == "square":
            d.rectangle(box, fill=fill)
        elif shape == "triangle":
            d.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
        else:
            d.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    return img


# ------------------------------------------------------------------------------------------
# Rendering one image
# ------------------------------------------------------------------------------------------
class _SceneEdit:
    """Changes to one image's scene while it is drawn (the local shift family's hook).

    Edits act before the camera's effects, so an added object or a light change is tinted,
    blurred, noised and JPEG-compressed like the rest of the scene.
    """

    def background(self, canvas: Image.Image) -> Image.Image:
        """Return the background crop (drawing resolution), changed before the person."""
        return canvas

    def foreground(self, img: Image.Image) -> Image.Image:
        """Return the scene with the person (output resolution), changed."""
        return img


class _Shift:
    """A controlled change of a domain's rendering; the base class changes nothing.

    The shift families (``synthetic_shift.py``) override these hooks. They draw from their own
    random generators, so the domain's own draws, and hence every unshifted pixel, stay those
    of the unshifted domain.
    """

    def camera(self, index: int, cam: _Camera) -> _Camera:
        """Return camera ``index``'s style as the shifted domain sees it."""
        return cam

    def edit(self, keys: tuple[int, ...]) -> _SceneEdit | None:
        """Return the scene edit of the image whose random keys are ``keys`` (or ``None``)."""
        return None


def _render(p: dict, cam: _Camera, rng: np.random.Generator, size: tuple[int, int],
            edit: _SceneEdit | None = None) -> Image.Image:
    H, W = size
    h, w = H * _SS, W * _SS
    off = int(rng.integers(0, cam.scene.shape[1] - w + 1))
    canvas = Image.fromarray(cam.scene[:, off:off + w].astype(np.uint8))
    if edit is not None:
        canvas = edit.background(canvas)
    view = _VIEWS[int(rng.choice(3, p=cam.views))]
    facing = 1 if rng.random() < cam.side_dir else -1
    ph = h * _u(rng, cam.scale) * p["height"] * rng.uniform(0.97, 1.03)
    foot = h - (h - ph) * rng.uniform(0.25, 0.75)
    cx = w / 2 + rng.uniform(-0.07, 0.07) * w
    _draw_person(canvas, p, view, facing, cx, foot, ph, phase=rng.uniform(-1, 1),
                 swing=rng.uniform(-1, 1))
    if view == "front" and rng.random() < 0.5:
        # Front and back views are symmetric up to details; mirroring varies bag sides.
        canvas = canvas.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img = canvas.reduce(_SS)
    if edit is not None:
        img = edit.foreground(img)
    return _camera_effects(img, cam, rng)


def _camera_effects(img: Image.Image, cam: _Camera, rng: np.random.Generator) -> Image.Image:
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
# Writing a domain
# ------------------------------------------------------------------------------------------
def _params(name: str, num_ids: int, num_cams: int, imgs_per_cam: int, size, seed: int,
            num_distractors: int | None) -> dict:
    if name not in DOMAIN_STYLES:
        raise ValueError(f"Unknown synthetic domain '{name}'; known: {', '.join(DOMAIN_STYLES)}")
    size = [int(v) for v in size]
    if len(size) != 2 or min(size) < 16:
        raise ValueError(f"size must be (height, width) with both >= 16, got {size}")
    if num_ids < 2:
        raise ValueError(f"num_ids must be >= 2 (half train, half test), got {num_ids}")
    if not 2 <= num_cams <= 9:
        raise ValueError(
            f"num_cams must be in 2..9 (Market-1501 names hold one camera digit), got {num_cams}"
        )
    if imgs_per_cam < 1:
        raise ValueError(f"imgs_per_cam must be >= 1, got {imgs_per_cam}")
    if num_ids > 9999:
        raise ValueError(f"num_ids must be <= 9999 (4-digit pids), got {num_ids}")
    if num_distractors is None:
        num_distractors = max(2, num_ids // 10)
    return {
        "domain": name, "num_ids": int(num_ids), "num_cams": int(num_cams),
        "imgs_per_cam": int(imgs_per_cam), "size": size, "seed": int(seed),
        "num_distractors": int(num_distractors), "generator_version": GENERATOR_VERSION,
    }


def _read_manifest(path: str) -> dict | None:
    try:
        with open(os.path.join(path, MANIFEST), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _is_complete(path: str, params: dict) -> bool:
    """The tree at ``path`` was written with ``params`` and still holds all its files."""
    man = _read_manifest(path)
    if man is None or man.get("params") != params:
        return False
    for split, n in man.get("counts", {}).items():
        d = os.path.join(path, split)
        if not os.path.isdir(d) or sum(f.endswith(".jpg") for f in os.listdir(d)) != n:
            return False
    return True


def _images(
    params: dict, splits: tuple[str, ...] = SPLIT_DIRS, shift: _Shift | None = None
) -> Iterator[tuple[str, str, Image.Image, int]]:
    """Render the images of the domain ``params`` describes, in a fixed order.

    Every image draws from its own generator keyed by (seed, domain, image), so leaving out a
    split or shifting the rendering does not change the other images.

    Args:
        params: generation parameters from :func:`_params`.
        splits: the split folders to render (the others are skipped, not drawn).
        shift: hooks that change the cameras and scenes (``None``: the domain itself).

    Yields:
        ``(split folder, file name, image, JPEG quality)``.
    """
    style = DOMAIN_STYLES[params["domain"]]
    H, W = params["size"]
    seed, code = params["seed"], style.code
    n_ids, n_cams, n_imgs = params["num_ids"], params["num_cams"], params["imgs_per_cam"]
    shift = shift or _Shift()
    cams = [shift.camera(c, _make_camera(style, _rng(seed, code, 1, c), c, H * _SS, W * _SS))
            for c in range(n_cams)]
    n_train = n_ids // 2

    def name(pid: int, c: int, frame: int, box: int) -> str:
        return f"{pid:04d}_c{c + 1}s1_{frame:06d}_{box:02d}.jpg"

    for pid in range(1, n_ids + 1):
        if pid <= n_train and "bounding_box_train" not in splits:
            continue
        person = _make_identity(_rng(seed, code, 2, pid), style.lower_value)
        q_rng = _rng(seed, code, 3, pid)
        query_cams = set(q_rng.choice(n_cams, size=max(1, n_cams // 2), replace=False).tolist())
        for c in range(n_cams):
            for k in range(n_imgs):
                if pid <= n_train:
                    split = "bounding_box_train"
                else:
                    split = "query" if (c in query_cams and k == 0) else "bounding_box_test"
                if split not in splits:
                    continue
                img = _render(person, cams[c], _rng(seed, code, 4, pid, c, k), (H, W),
                              shift.edit((4, pid, c, k)))
                yield split, name(pid, c, 25 * (pid * n_imgs + k) + 1, 1), img, cams[c].quality
    if "bounding_box_test" not in splits:
        return
    for j in range(params["num_distractors"]):
        r = _rng(seed, code, 5, j)
        person = _make_identity(r, style.lower_value)
        c = int(r.integers(n_cams))
        img = _render(person, cams[c], r, (H, W), shift.edit((5, j)))
        yield "bounding_box_test", name(0, c, 25 * j + 1, 2), img, cams[c].quality


def _write_images(out_dir: str, images: Iterable[tuple[str, str, Image.Image, int]]) -> dict:
    """Save ``(split, file name, image, quality)`` items as JPEGs; return counts per split."""
    counts = dict.fromkeys(SPLIT_DIRS, 0)
    for sub in SPLIT_DIRS:
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    for split, fname, img, quality in images:
        img.save(os.path.join(out_dir, split, fname), quality=quality)
        counts[split] += 1
    return counts


def _write_tree(out_dir: str, params: dict) -> dict:
    return _write_images(out_dir, _images(params))


def generate_domain(
    root: str,
    name: str,
    *,
    num_ids: int = 120,
    num_cams: int = 4,
    imgs_per_cam: int = 3,
    size: tuple[int, int] = (128, 64),
    seed: int = 0,
    num_distractors: int | None = None,
    force: bool = False,
) -> str:
    """Write (or reuse) a synthetic domain under ``<root>/<name>`` in Market-1501's format.

    Identities ``1..num_ids // 2`` form the training split; the others are tested: for each
    test identity, the first image from ``num_cams // 2`` randomly chosen cameras goes to
    ``query/`` and the rest to ``bounding_box_test/``, which also receives
    ``num_distractors`` images of random persons with pid ``0000``. A ``manifest.json`` records
    the parameters; a tree written with other parameters (or missing files) is regenerated.
    The tree is written into a temporary folder and renamed into place, so an interrupted
    run never leaves half a tree under the final name.

    Args:
        root: data root.
        name: domain, a key of :data:`DOMAIN_STYLES` (``"SyntheticA"``, ...).
        num_ids: identities (train and test halves).
        num_cams: cameras, 2..9.
        imgs_per_cam: images per identity and camera.
        size: image size ``(height, width)``.
        seed: generator seed; the same seed writes byte-identical files.
        num_distractors: distractor images in the gallery (default ``max(2, num_ids // 10)``).
        force: regenerate even when a matching tree exists.

    Returns:
        The domain's folder.

    Raises:
        ValueError: invalid parameters.
    """
    params = _params(name, num_ids, num_cams, imgs_per_cam, size, seed, num_distractors)
    return _materialize(root, name, params, lambda out: _write_tree(out, params),
                        {"style": asdict(DOMAIN_STYLES[name])}, force=force)


def _materialize(root: str, folder: str, params: dict, write: Callable[[str], dict],
                 extra: dict, *, force: bool = False) -> str:
    """Write a generated tree under ``<root>/<folder>`` atomically, unless it is up to date.

    Args:
        root: data root.
        folder: the tree's folder name under the root.
        params: generation parameters, recorded in the manifest; a tree whose manifest holds
            other parameters (or which misses files) is rewritten.
        write: writes the images into the folder it is given; returns image counts per split.
        extra: more manifest entries (after ``params`` and ``counts``).
        force: rewrite even when the tree is up to date.

    Returns:
        The tree's folder.
    """
    root = os.path.abspath(root)
    if not force:
        folder = _folder_for(root, folder, params)
    target = os.path.join(root, folder)
    if not force and _is_complete(target, params):
        return target
    os.makedirs(root, exist_ok=True)
    _remove_stale_temps(root, folder)
    tmp = tempfile.mkdtemp(prefix=f".{folder}.tmp-", dir=root)
    try:
        t0 = time.perf_counter()
        counts = write(tmp)
        manifest = {"params": params, "counts": counts, **extra}
        with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
        os.chmod(tmp, 0o755)
        if os.path.exists(target):
            if not force and _is_complete(target, params):  # another process finished first
                shutil.rmtree(tmp, ignore_errors=True)
                return target
            old = tempfile.mkdtemp(prefix=f".{folder}.old-", dir=root)
            os.rename(target, os.path.join(old, folder))
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.rename(tmp, target)
            except OSError:
                if not _is_complete(target, params):
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        logger.info(
            "Generated synthetic data %s (%d images) in %s in %.1f s",
            folder, sum(counts.values()), target, time.perf_counter() - t0,
        )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _folder_for(root: str, folder: str, params: dict) -> str:
    """The folder that holds (or will hold) the tree generated with ``params``.

    The plain name belongs to the parameters first generated there. A complete tree of other
    parameters (same generator version) is never replaced, since another job may be reading
    it: other parameters get ``<folder>+<hash of the parameters>``. Incomplete trees and trees
    of an older generator version are rewritten in place.
    """
    path = os.path.join(root, folder)
    man = _read_manifest(path)
    held = man.get("params") if isinstance(man, dict) else None
    if (not isinstance(held, dict) or held == params
            or held.get("generator_version") != params.get("generator_version")
            or not _is_complete(path, held)):
        return folder
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    keyed = f"{folder}+{digest}"
    logger.info("%s holds %s generated with other parameters; using %s for these", path,
                folder, keyed)
    return keyed


def _remove_stale_temps(root: str, name: str, max_age_s: float = 3600.0) -> None:
    """Delete temporary trees that killed generations left behind (older than an hour)."""
    now = time.time()
    for entry in os.listdir(root):
        if entry.startswith((f".{name}.tmp-", f".{name}.old-")):
            path = os.path.join(root, entry)
            try:
                if now - os.path.getmtime(path) > max_age_s:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                pass


# ------------------------------------------------------------------------------------------
# Registered data sets
# ------------------------------------------------------------------------------------------
class SyntheticDomain(MarketStyleDataset):
    """A synthetic domain, generated on first use and then read like Market-1501.

    Subclasses are named after a key of :data:`DOMAIN_STYLES`, or override :meth:`_generate`
    (the shift families of :mod:`.synthetic_shift`).
    """

    url = "generated by reid_pbn (reid_pbn.data.datasets.synthetic.generate_domain)"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.folder_names = (cls.__name__,)

    def __init__(
        self,
        root: str | None = None,
        *,
        num_ids: int = 120,
        num_cams: int = 4,
        imgs_per_cam: int = 3,
        size: tuple[int, int] = (128, 64),
        seed: int = 0,
        num_distractors: int | None = None,
        verify_images: bool = True,
        strict: bool = False,
    ):
        """Generate the domain if needed, then parse it with the Market-1501 reader.

        Args:
            root: data root (``None``: ``$REID_PBN_DATASETS``, else ``datasets/``); the domain
                is written to ``<root>/<ClassName>``.
            num_ids: identities (half train, half test).
            num_cams: cameras, 2..9.
            imgs_per_cam: images per identity and camera.
            size: image size ``(height, width)``.
            seed: generator seed.
            num_distractors: distractor images (pid 0) in the gallery.
            verify_images: decode every image once and leave out unreadable ones (logged).
            strict: fail on unreadable images instead of leaving them out.
        """
        self.num_cams = num_cams
        self.root = resolve_root(root)
        self.dataset_dir = self._generate(
            self.root, num_ids=num_ids, num_cams=num_cams, imgs_per_cam=imgs_per_cam,
            size=tuple(size), seed=seed, num_distractors=num_distractors,
        )
        self._parse_and_init(self.dataset_dir, verify_images=verify_images, strict=strict)

    def _generate(self, root: str, **sizes) -> str:
        """Write (or reuse) the tree under ``root``; return its folder."""
        return generate_domain(root, self.name, **sizes)

    expected_tree = """
<root>/
  SyntheticA/                   (written on first use; likewise SyntheticB, SyntheticC)
    bounding_box_train/         0001_c1s1_000151_01.jpg
    query/
    bounding_box_test/
    manifest.json
"""


@register_dataset
class SyntheticA(SyntheticDomain):
    """Synthetic domain A: bright daylight street scenes, neutral colours, sharp images."""


@register_dataset
class SyntheticB(SyntheticDomain):
    """Synthetic domain B: dim indoor scenes, strong colour casts, low contrast, blur."""


@register_dataset
class SyntheticC(SyntheticDomain):
    """Synthetic domain C: night surveillance, blue cast, low resolution, heavy noise."""
