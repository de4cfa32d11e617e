"""Drawing one synthetic image: identities (body, clothing, accessories), the person drawn in
a camera's scene, and the hooks through which the shift families change a rendering."""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw

from ._common import SS, hsv, uniform
from .camera import Camera, camera_effects

__all__ = ["GENERATOR_VERSION", "SceneEdit", "Shift", "draw_person", "make_identity", "render"]

#: Bumped whenever the drawing changes, so that stale trees are regenerated.
GENERATOR_VERSION = 2
_VIEWS = ("front", "back", "side")


class SceneEdit:
    """Changes to one image's scene while it is drawn (the local shift family's hook).

    Edits act before the camera's effects, so an added object or a light change is tinted,
    blurred, noised and JPEG-compressed like the rest of the scene.
    """

    def background(self, canvas: Image.Image) -> Image.Image:
        """Return the background crop (drawing resolution), changed before the person.

        Args:
            canvas: the crop of the camera's scene.
        """
        return canvas

    def foreground(self, img: Image.Image) -> Image.Image:
        """Return the scene with the person (output resolution), changed.

        Args:
            img: the scene with the person.
        """
        return img


class Shift:
    """A controlled change of a domain's rendering; the base class changes nothing.

    The shift families (:mod:`.shift`) override these hooks. They draw from their own
    random generators, so the domain's own draws, and hence every unshifted pixel, stay those
    of the unshifted domain.
    """

    def camera(self, index: int, cam: Camera) -> Camera:
        """Return camera ``index``'s style as the shifted domain sees it.

        Args:
            index: camera index.
            cam: the unshifted camera.
        """
        return cam

    def edit(self, keys: tuple[int, ...]) -> SceneEdit | None:
        """Return the scene edit of the image whose random keys are ``keys`` (or ``None``).

        Args:
            keys: the image's random keys (after the seed and domain code).
        """
        return None


def render(p: dict, cam: Camera, rng: np.random.Generator, size: tuple[int, int],
           edit: SceneEdit | None = None) -> Image.Image:
    """Render one image: a crop of the camera's scene, the person, the camera's effects.

    Args:
        p: the identity (:func:`make_identity`).
        cam: the camera.
        rng: the image's own generator.
        size: output ``(height, width)``.
        edit: a scene edit of a shift family (``None``: none).

    Returns:
        The image (before JPEG compression).
    """
    H, W = size
    h, w = H * SS, W * SS
    off = int(rng.integers(0, cam.scene.shape[1] - w + 1))
    canvas = Image.fromarray(cam.scene[:, off:off + w].astype(np.uint8))
    if edit is not None:
        canvas = edit.background(canvas)
    view = _VIEWS[int(rng.choice(3, p=cam.views))]
    facing = 1 if rng.random() < cam.side_dir else -1
    ph = h * uniform(rng, cam.scale) * p["height"] * rng.uniform(0.97, 1.03)
    foot = h - (h - ph) * rng.uniform(0.25, 0.75)
    cx = w / 2 + rng.uniform(-0.07, 0.07) * w
    draw_person(canvas, p, view, facing, cx, foot, ph, phase=rng.uniform(-1, 1),
                swing=rng.uniform(-1, 1))
    if view == "front" and rng.random() < 0.5:
        # Front and back views are symmetric up to details; mirroring varies bag sides.
        canvas = canvas.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img = canvas.reduce(SS)
    if edit is not None:
        img = edit.foreground(img)
    return camera_effects(img, cam, rng)


def make_identity(rng: np.random.Generator, value_shift: float = 0.0) -> dict:
    """Draw one identity: body shape, skin and hair, clothing, accessories.

    Args:
        rng: the identity's own generator.
        value_shift: added to the clothing brightness (a domain's ``lower_value``).

    Returns:
        The identity's attributes, as :func:`draw_person` reads them.
    """
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


def draw_person(img: Image.Image, p: dict, view: str, facing: int, cx: float, foot: float,
                ph: float, phase: float, swing: float) -> None:
    """Draw identity ``p`` on ``img`` (drawing resolution), in place.

    Args:
        img: the canvas.
        p: the identity (:func:`make_identity`).
        view: ``"front"``, ``"back"`` or ``"side"``.
        facing: 1 or -1; mirrors side views.
        cx: x of the body's centre line.
        foot: y of the feet.
        ph: the person's height in pixels.
        phase: walking phase in [-1, 1] (leg positions).
        swing: arm swing in [-1, 1].
    """
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


# ------------------------------------------------------------------------------------------
# Identities and clothing
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
        return hsv(0.0, 0.0, v + rng.uniform(-0.04, 0.04))
    return hsv(rng.random(), rng.uniform(0.4, 0.95), rng.uniform(0.35, 0.95) + value_shift)


def _contrasting(rng: np.random.Generator, c: tuple[int, int, int]) -> tuple[int, int, int]:
    h, s, v = colorsys.rgb_to_hsv(*(x / 255 for x in c))
    if rng.random() < 0.5:
        return hsv(0.0, 0.0, 0.95 if v < 0.5 else 0.08)
    return hsv(h + rng.uniform(0.25, 0.75), rng.uniform(0.5, 0.95), 1.25 - v)


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
