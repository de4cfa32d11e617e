"""Image transforms for training and testing (resize, flip, pad + crop, colour jitter, erasing)."""

from __future__ import annotations

from collections.abc import Sequence

import torchvision.transforms as T
from torchvision.transforms import InterpolationMode

__all__ = ["build_transforms", "test_transforms", "train_transforms"]


def train_transforms(
    size: Sequence[int],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    flip_prob: float = 0.5,
    padding: int = 10,
    color_jitter: dict | None = None,
    color_jitter_prob: float = 0.5,
    erasing_prob: float = 0.5,
) -> T.Compose:
    """Training pipeline: PIL image in, normalized float tensor ``(3, H, W)`` out.

    Args:
        size: output ``(height, width)``.
        mean: per-channel mean of images in ``[0, 1]``.
        std: per-channel standard deviation.
        flip_prob: probability of a horizontal flip (0 disables it).
        padding: pixels of zero padding on every side before a random crop back to ``size``
            (0 disables pad + crop).
        color_jitter: ``{"brightness", "contrast", "saturation", "hue"}`` strengths, or
            ``None`` for no colour jitter.
        color_jitter_prob: probability of applying the colour jitter to an image.
        erasing_prob: probability of random erasing (Zhong et al.); erased pixels become 0
            after normalization, i.e. the mean colour.

    Returns:
        The composed transform.
    """
    size = (int(size[0]), int(size[1]))
    ops: list = [T.Resize(size, interpolation=InterpolationMode.BICUBIC)]
    if flip_prob > 0:
        ops.append(T.RandomHorizontalFlip(p=flip_prob))
    if padding > 0:
        ops += [T.Pad(padding, padding_mode="constant"), T.RandomCrop(size)]
    if color_jitter is not None and color_jitter_prob > 0:
        ops.append(T.RandomApply([T.ColorJitter(**color_jitter)], p=color_jitter_prob))
    ops += [T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))]
    if erasing_prob > 0:
        ops.append(T.RandomErasing(p=erasing_prob, value=0))
    return T.Compose(ops)


def test_transforms(
    size: Sequence[int], *, mean: Sequence[float], std: Sequence[float]
) -> T.Compose:
    """Test pipeline: resize, to tensor, normalize.

    Args:
        size: output ``(height, width)``.
        mean: per-channel mean of images in ``[0, 1]``.
        std: per-channel standard deviation.

    Returns:
        The composed transform.
    """
    size = (int(size[0]), int(size[1]))
    return T.Compose([
        T.Resize(size, interpolation=InterpolationMode.BICUBIC),
        T.ToTensor(),
        T.Normalize(mean=list(mean), std=list(std)),
    ])


def build_transforms(cfg, is_train: bool) -> T.Compose:
    """Build the transforms from ``cfg.INPUT`` (the one place that reads those keys).

    Args:
        cfg: the config (``INPUT.SIZE_TRAIN/SIZE_TEST``, ``PIXEL_MEAN/STD``, ``FLIP``,
            ``PADDING``, ``CJ``, ``REA``).
        is_train: training pipeline (with augmentation) or test pipeline.

    Returns:
        The composed transform.
    """
    inp = cfg.INPUT
    if not is_train:
        return test_transforms(inp.SIZE_TEST, mean=inp.PIXEL_MEAN, std=inp.PIXEL_STD)
    cj = None
    if inp.CJ.ENABLED:
        cj = {
            "brightness": inp.CJ.BRIGHTNESS,
            "contrast": inp.CJ.CONTRAST,
            "saturation": inp.CJ.SATURATION,
            "hue": inp.CJ.HUE,
        }
    return train_transforms(
        inp.SIZE_TRAIN,
        mean=inp.PIXEL_MEAN,
        std=inp.PIXEL_STD,
        flip_prob=inp.FLIP.PROB if inp.FLIP.ENABLED else 0.0,
        padding=inp.PADDING.SIZE if inp.PADDING.ENABLED else 0,
        color_jitter=cj,
        color_jitter_prob=inp.CJ.PROB,
        erasing_prob=inp.REA.PROB if inp.REA.ENABLED else 0.0,
    )
