"""Untrusted images in: checked decoding, thumbnails, and person/camera ids from file names."""

from __future__ import annotations

import io
import os
import unicodedata
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..data.datasets.bases import MARKET_NAME_PATTERN

__all__ = ["RejectedImageError", "decode_image", "make_thumbnail", "parse_person", "display_name"]

#: Default pixel limit of an upload (width x height); re-ID crops are far smaller.
MAX_PIXELS = 25_000_000


class RejectedImageError(ValueError):
    """An upload that is not a usable image.

    Attributes:
        status: the HTTP status that describes it (413: too large, 415: not an image).
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def decode_image(
    data: bytes,
    *,
    name: str = "upload",
    max_pixels: int = MAX_PIXELS,
    reduce_to: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decodes an uploaded image to an RGB array, refusing what is not a bounded image.

    The header is read first and the pixel count checked before any pixel is decoded, so a
    small file declaring a huge image (a decompression bomb) costs nothing.

    Args:
        data: the file's bytes.
        name: the file's name, for messages.
        max_pixels: largest accepted width x height.
        reduce_to: ``(height, width)`` the image will be resized to; large JPEGs are then
            decoded at a reduced scale (PIL's ``draft``), as the toolkit's ``read_image`` does.

    Returns:
        An HWC uint8 RGB array.

    Raises:
        RejectedImageError: not an image PIL can read (415), or too many pixels (413).
    """
    try:
        with warnings.catch_warnings():
            # PIL warns (not raises) between its own limit and twice that: make it an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise RejectedImageError(
                        f"{name!r} is {w}x{h} = {w * h} pixels, above the limit of {max_pixels} "
                        "(a decompression bomb, or a photo to crop first)", 413)
                if reduce_to is not None and im.format == "JPEG":
                    im.draft("RGB", (4 * reduce_to[1], 4 * reduce_to[0]))
                return np.asarray(im.convert("RGB"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise RejectedImageError(f"{name!r} is refused as a decompression bomb ({e})",
                                 413) from None
    except UnidentifiedImageError:
        raise RejectedImageError(f"{name!r} is not an image (no decoder recognizes it)",
                                 415) from None
    except RejectedImageError:
        raise
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt data
        raise RejectedImageError(f"{name!r} cannot be decoded ({type(e).__name__}: {e})",
                                 415) from None


def make_thumbnail(rgb: np.ndarray, height: int = 128) -> bytes:
    """A JPEG thumbnail of at most ``height`` pixels in height.

    Args:
        rgb: HWC uint8 RGB image.
        height: largest thumbnail height.

    Returns:
        The JPEG bytes.
    """
    im = Image.fromarray(rgb)
    if im.height > height:
        im = im.resize((max(1, round(im.width * height / im.height)), height),
                       Image.Resampling.BILINEAR, reducing_gap=2.0)
    out = io.BytesIO()
    im.save(out, format="JPEG", quality=85)
    return out.getvalue()


def parse_person(name: str) -> tuple[int, int]:
    """Person id and 0-based camera id from a Market-1501-style file name.

    ``0002_c1s1_000451_03.jpg`` gives ``(2, 0)``; a name that does not follow the convention
    gives ``(-1, -1)`` (unknown).

    Args:
        name: a file name (any folders are ignored).

    Returns:
        ``(pid, camid)``.
    """
    m = MARKET_NAME_PATTERN.match(os.path.basename(name))
    if not m:
        return -1, -1
    try:
        return int(m.group(1)), int(m.group(2)) - 1
    except ValueError:  # e.g. "1-2_c1": digits and dashes but not a number
        return -1, -1


def display_name(filename: str | None, limit: int = 120) -> str:
    """A file name safe to show and store: no folders, no control characters, bounded.

    Args:
        filename: the name a client sent (may hold ``../`` or anything else).
        limit: most characters kept.

    Returns:
        The cleaned base name (``""`` when nothing is left).
    """
    base = os.path.basename((filename or "").replace("\\", "/"))
    clean = "".join(c for c in base if unicodedata.category(c)[0] != "C")
    return clean[:limit]
