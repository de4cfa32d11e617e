"""Image transforms: the training augmentation (resize, flip, pad + crop, colour jitter, erasing)
and the one test-time preprocessing that loaders and the feature-extraction API share."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torchvision.transforms import InterpolationMode

__all__ = ["TestTimePreprocess", "build_transforms", "test_preprocess", "train_transforms"]


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


class TestTimePreprocess:
    """The one test-time preprocessing: PIL image or HWC uint8 array in, normalized float
    tensor ``(3, H, W)`` out.

    The image is converted to RGB, resized to ``size`` with PIL's bicubic filter, scaled to
    ``[0, 1]`` and normalized with ``mean``/``std``. The test loaders and
    :class:`reid_pbn.FeatureExtractor` both call it, so features from either path are the same.
    A class rather than a closure, so that loader workers can pickle it.

    Args:
        size: output ``(height, width)``.
        mean: per-channel mean of images in ``[0, 1]``.
        std: per-channel standard deviation.
    """

    __test__ = False  # a library class, not a pytest test class

    def __init__(self, size: Sequence[int], mean: Sequence[float], std: Sequence[float]):
        self.size = (int(size[0]), int(size[1]))
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self._ops = T.Compose([
            T.Resize(self.size, interpolation=InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize(mean=self.mean, std=self.std),
        ])

    def __call__(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        """Preprocess one image.

        Args:
            image: a PIL image (any mode; converted to RGB) or an HWC RGB uint8 array.

        Returns:
            The normalized float32 tensor ``(3, H, W)``.

        Raises:
            ValueError: an array that is not HWC RGB uint8, or another type of input.
        """
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"Expected an HWC RGB uint8 array, got shape {image.shape}")
            if image.dtype != np.uint8:
                raise ValueError(f"HWC arrays must be uint8 in [0, 255], got {image.dtype}")
            image = Image.fromarray(np.ascontiguousarray(image))
        if not isinstance(image, Image.Image):
            raise ValueError("Expected a PIL image or an HWC RGB uint8 array, got "
                             f"{type(image).__name__}")
        return self._ops(image.convert("RGB"))

    def __repr__(self) -> str:
        return f"TestTimePreprocess(size={self.size}, mean={self.mean}, std={self.std})"


def test_preprocess(
    size: Sequence[int], mean: Sequence[float], std: Sequence[float]
) -> TestTimePreprocess:
    """The test-time preprocessing shared by the test loaders and the feature-extraction API.

    Args:
        size: output ``(height, width)``.
        mean: per-channel mean of images in ``[0, 1]``.
        std: per-channel standard deviation.

    Returns:
        A callable from a PIL image or HWC uint8 array to a normalized ``(3, H, W)`` tensor
        (PIL bicubic resize, see :class:`TestTimePreprocess`).
    """
    return TestTimePreprocess(size, mean, std)


test_preprocess.__test__ = False  # a library function, not a pytest test


def build_transforms(cfg, is_train: bool) -> T.Compose | TestTimePreprocess:
    """Build the transforms from ``cfg.INPUT`` (the one place that reads those keys).

    Args:
        cfg: the config (``INPUT.SIZE_TRAIN/SIZE_TEST``, ``PIXEL_MEAN/STD``, ``FLIP``,
            ``PADDING``, ``CJ``, ``REA``).
        is_train: training pipeline (with augmentation) or the test-time preprocessing
            (:func:`test_preprocess`).

    Returns:
        The transform: PIL image in, normalized ``(3, H, W)`` tensor out.
    """
    inp = cfg.INPUT
    if not is_train:
        return test_preprocess(inp.SIZE_TEST, inp.PIXEL_MEAN, inp.PIXEL_STD)
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
