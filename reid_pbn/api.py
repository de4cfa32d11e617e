"""Feature extraction API: images in, L2-normalized re-ID embeddings out."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .config import CfgNode, get_cfg
from .data import read_image
from .data.transforms import test_preprocess
from .engine.defaults import resolve_device
from .engine.inference import build_inference_model
from .evaluation.checks import check_finite_rows

logger = logging.getLogger("reid_pbn")

ImageLike = str | os.PathLike | Image.Image | np.ndarray


class FeatureExtractor:
    """Turns images into re-ID features with a trained model.

    Example:
        >>> fe = FeatureExtractor("configs/Demo/synthetic_cross_domain.yml",
        ...                       weights="logs/demo/model_final.pth")
        >>> feats = fe(["a.jpg", "b.jpg"])       # (2, D) float32, L2-normalized
        >>> one = fe("a.jpg")                     # (1, D): one path, PIL image or array

    Images are preprocessed exactly as the test loaders do
    (:func:`reid_pbn.data.transforms.test_preprocess`), so its features equal the evaluation's.

    Args:
        config_file: YAML config describing the model (defaults when None).
        weights: checkpoint or state_dict file (MODEL.WEIGHTS of the config when None).
        device: "auto" (CUDA when available), "cpu" or "cuda[:N]".
        model: an already built model to use instead of building one from the config.
        cfg: a config object instead of ``config_file``.
        opts: extra ``[KEY, VALUE, ...]`` config overrides.
        batch_size: images per forward pass.
        flip: average the features of each image and its horizontal mirror.
        normalize: L2-normalize the output features.
    """

    def __init__(
        self,
        config_file: str | None = None,
        weights: str | None = None,
        device: str = "auto",
        *,
        model: nn.Module | None = None,
        cfg: CfgNode | None = None,
        opts: Sequence[str] | None = None,
        batch_size: int = 64,
        flip: bool = False,
        normalize: bool = True,
    ):
        if cfg is None:
            cfg = get_cfg()
            if config_file:
                cfg.merge_from_file(config_file)
            if opts:
                cfg.merge_from_list(list(opts))
        self.cfg = cfg
        self.device = resolve_device(device)
        if model is None:
            model = build_inference_model(cfg, weights, device=str(self.device))
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        self.flip = flip
        self.normalize = normalize
        self.size = tuple(int(v) for v in cfg.INPUT.SIZE_TEST)
        # The evaluation's own preprocessing (what build_test_loader applies), so API features
        # equal evaluation features.
        self._preprocess = test_preprocess(self.size, cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD)
        self.mean = torch.tensor(cfg.INPUT.PIXEL_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.INPUT.PIXEL_STD).view(1, 3, 1, 1)

    def preprocess(self, images: ImageLike | Sequence[ImageLike] | torch.Tensor) -> torch.Tensor:
        """Turn inputs into a normalized float NCHW batch of the test size.

        Paths, PIL images and arrays go through the test loaders' preprocessing
        (:func:`reid_pbn.data.transforms.test_preprocess`: PIL bicubic resize to
        ``INPUT.SIZE_TEST``, then normalization). An NCHW tensor already at ``SIZE_TEST`` is
        only scaled and normalized, on its own device. A tensor of another size is resized
        image by image: a uint8 tensor through the same PIL bicubic resize (so it matches the
        loaders exactly); a float tensor with torch's antialiased bicubic resize, which uses
        PIL's filter but skips PIL's rounding to uint8 (so it matches to about 1/255).

        Args:
            images: one path, PIL image or HWC uint8 array, a list of any of these, or an NCHW
                tensor (uint8 in [0, 255] or float in [0, 1]).

        Returns:
            The batch, on the CPU for decoded images, on the input's device for a tensor.

        Raises:
            ValueError: no images, or an input of an unsupported type or shape.
            FileNotFoundError: a path that does not exist.
        """
        if torch.is_tensor(images):
            return self._preprocess_tensor(images)
        images = _as_list(images)
        if not images:
            raise ValueError("No images given")
        return torch.stack([self._preprocess(self._decoded(im)) for im in images])

    def _preprocess_tensor(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.size(1) != 3:
            raise ValueError(f"Expected an NCHW tensor with 3 channels, got {tuple(x.shape)}")
        if tuple(x.shape[-2:]) != self.size:
            if x.dtype == torch.uint8:
                arrays = x.permute(0, 2, 3, 1).cpu().numpy()
                return torch.stack([self._preprocess(a) for a in arrays]).to(x.device)
            x = F.interpolate(x.float(), size=self.size, mode="bicubic", align_corners=False,
                              antialias=True).clamp_(0.0, 1.0)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        # On the input's device: an NCHW tensor may already be on the GPU.
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def _decoded(self, im: ImageLike) -> Image.Image | np.ndarray:
        if isinstance(im, (str, os.PathLike)):
            return read_image(im, reduce_to=self.size)
        if isinstance(im, Image.Image):
            return im
        if not isinstance(im, np.ndarray) or im.ndim != 3 or im.shape[2] != 3:
            raise ValueError("Each image must be a path, a PIL image or an HWC RGB uint8 array; "
                             f"got {type(im).__name__} {getattr(im, 'shape', '')}")
        if im.dtype != np.uint8:
            raise ValueError(f"HWC arrays must be uint8 in [0, 255], got {im.dtype}")
        return im

    @torch.no_grad()
    def __call__(self, images: ImageLike | Sequence[ImageLike] | torch.Tensor) -> torch.Tensor:
        """Extract features.

        Args:
            images: one path, PIL image or HWC uint8 array, a list of any of these, or an NCHW
                tensor (see :meth:`preprocess`).

        Returns:
            A float32 tensor (N, D) on the CPU.

        Raises:
            ValueError: no images, or features with NaN or inf (the message names the images).
        """
        if not torch.is_tensor(images):
            images = _as_list(images)
        n = images.size(0) if torch.is_tensor(images) else len(images)
        if n == 0:
            raise ValueError("No images given")
        out = []
        for start in range(0, n, self.batch_size):
            x = self.preprocess(images[start:start + self.batch_size]).to(self.device)
            f = self.model(x).float()
            if self.flip:
                f = (f + self.model(torch.flip(x, dims=[3])).float()) / 2
            out.append(f.cpu())
        feats = torch.cat(out)
        # A NaN pixel or an unstable model gives NaN features that would silently poison every
        # distance and index built from them: refuse them here, naming the images.
        named = not torch.is_tensor(images)
        check_finite_rows(
            feats, "features",
            label=lambda i: (f"image {i} ({images[i]})"
                             if named and isinstance(images[i], (str, os.PathLike))
                             else f"image {i}"),
            hint="Check these images (a NaN pixel in a float tensor?) and the model's weights",
        )
        return F.normalize(feats, dim=1) if self.normalize else feats


def _as_list(images: ImageLike | Sequence[ImageLike]) -> list:
    """One image (a path is a ``str``, itself a sequence) as a list of one; a list as itself."""
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    if isinstance(images, np.ndarray) and images.ndim != 4:
        return [images]  # one HWC array (a wrong shape is reported by the per-image check)
    return list(images)
