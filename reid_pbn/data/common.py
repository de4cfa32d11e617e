"""Reading images and turning data-set items into batch dicts."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .datasets.bases import UnreadableImageError

__all__ = ["ReIDImageDataset", "collate_batch", "read_image"]


def read_image(path: str | os.PathLike, reduce_to: tuple[int, int] | None = None) -> Image.Image:
    """Read an image as RGB.

    Args:
        path: image file.
        reduce_to: ``(height, width)`` the image will be resized to. A JPEG more than 8 times
            larger per side is then decoded at a reduced scale (PIL's ``draft``: 1/2 to 1/8,
            never below 4 times this size), so a huge photo never needs its full-resolution
            pixels in memory. Smaller images decode exactly as without it.

    Returns:
        The decoded RGB image.

    Raises:
        FileNotFoundError: the file does not exist (the message names it).
        UnreadableImageError: the file exists but is not a decodable image (the message names
            it and gives the decoder's reason).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Image not found: {path}")
    try:
        with Image.open(path) as im:
            if reduce_to is not None:
                h, w = reduce_to
                im.draft("RGB", (4 * w, 4 * h))
            return im.convert("RGB")
    except Exception as e:  # noqa: BLE001 - any decoder failure becomes one clear error
        raise UnreadableImageError(
            f"Cannot read image {path} ({type(e).__name__}: {e}). Replace or delete it; with "
            "DATASETS.VERIFY_IMAGES True such files are found and skipped before training.",
            [(path, f"{type(e).__name__}: {e}")],
        ) from e


class ReIDImageDataset(Dataset):
    """Items ``(img_path, pid, camid[, domain])`` as samples ``{"images", "pids", "camids",
    "domains", "img_paths"}``.

    Args:
        items: data-set items; a missing domain becomes ``default_domain``.
        transform: applied to the PIL image (e.g. from :func:`~reid_pbn.data.build_transforms`);
            ``None`` keeps the PIL image.
        default_domain: domain of items without a fourth element.
        reduce_to: ``(height, width)`` the transform resizes to, for :func:`read_image`'s
            reduced-scale decoding of huge JPEGs (``None`` decodes at full size). The test
            loaders pass ``INPUT.SIZE_TEST``, as the feature-extraction API does.
    """

    def __init__(self, items: Sequence[tuple], transform: Callable | None = None,
                 default_domain: int = 0, reduce_to: tuple[int, int] | None = None):
        self.items = [
            (str(it[0]), int(it[1]), int(it[2]), int(it[3]) if len(it) > 3 else default_domain)
            for it in items
        ]
        self.transform = transform
        self.reduce_to = reduce_to

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        """One sample.

        Args:
            index: an item index, or ``(index, seed)`` (training batch samplers with
                ``sample_seeds``): the transform then draws from RNGs seeded with ``seed``, and
                the process's own RNG states are left as they were.
        """
        seed = None
        if isinstance(index, tuple):
            index, seed = index
        path, pid, camid, domain = self.items[index]
        img = read_image(path, reduce_to=self.reduce_to)
        if self.transform is not None:
            with _seeded(seed):
                img = self.transform(img)
        return {"images": img, "pids": pid, "camids": camid, "domains": domain, "img_paths": path}

    @property
    def pids(self) -> list[int]:
        """Identity of every item."""
        return [it[1] for it in self.items]

    @property
    def domains(self) -> list[int]:
        """Domain of every item."""
        return [it[3] for it in self.items]


@contextlib.contextmanager
def _seeded(seed: int | None):
    """Seed torch's CPU RNG, numpy's and Python's for a block, then restore their states.

    Restoring matters with ``num_workers=0``, where samples are made in the training process:
    its own random stream (initialization, PBN's draws) must not depend on the augmentation.
    """
    if seed is None:
        yield
        return
    states = torch.get_rng_state(), np.random.get_state(), random.getstate()
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])


def collate_batch(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples of :class:`ReIDImageDataset` into one batch dict.

    Args:
        samples: the samples (images already tensors of one shape).

    Returns:
        ``{"images": float32 (N, 3, H, W), "pids", "camids", "domains": int64 (N,),
        "img_paths": list[str]}``.
    """
    return {
        "images": torch.stack([s["images"] for s in samples]),
        "pids": torch.tensor([s["pids"] for s in samples], dtype=torch.int64),
        "camids": torch.tensor([s["camids"] for s in samples], dtype=torch.int64),
        "domains": torch.tensor([s["domains"] for s in samples], dtype=torch.int64),
        "img_paths": [s["img_paths"] for s in samples],
    }
