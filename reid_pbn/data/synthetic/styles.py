"""Camera-style distributions of the synthetic domains (A: daylight, B: indoor lamps, C: night)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DOMAIN_STYLES", "DomainStyle"]


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
