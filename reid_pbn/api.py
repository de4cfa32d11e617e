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
        self.size = tuple(cfg.INPUT.SIZE_TEST)
        self.mean = torch.tensor(cfg.INPUT.PIXEL_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.INPUT.PIXEL_STD).view(1, 3, 1, 1)

    def preprocess(self, images: Sequence[ImageLike] | torch.Tensor) -> torch.Tensor:
        """Turn inputs into a normalized float NCHW batch of the test size.

        Args:
            images: paths, PIL images or HWC uint8 arrays (a list), or an NCHW tensor
                (uint8 in [0, 255] or float in [0, 1]).

        Returns:
            The batch, on the CPU for decoded images, on the input's device for a tensor.
        """
        if torch.is_tensor(images):
            if images.dim() != 4 or images.size(1) != 3:
                raise ValueError(
                    f"Expected an NCHW tensor with 3 channels, got {tuple(images.shape)}"
                )
            x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        else:
            if not len(images):
                raise ValueError("No images given")
            x = torch.stack([self._resized(self._to_tensor(im)) for im in images])
        # On the input's device: an NCHW tensor may already be on the GPU.
        return (self._resized(x) - self.mean.to(x.device)) / self.std.to(x.device)

    def _resized(self, x: torch.Tensor) -> torch.Tensor:
        # Images of different sizes are resized one by one before they are stacked.
        if tuple(x.shape[-2:]) == self.size:
            return x
        batched = x.unsqueeze(0) if x.dim() == 3 else x
        out = F.interpolate(batched, size=self.size, mode="bilinear", align_corners=False,
                            antialias=True)
        return out[0] if x.dim() == 3 else out

    def _to_tensor(self, im: ImageLike) -> torch.Tensor:
        if isinstance(im, (str, os.PathLike)):
            from .data import read_image

            im = read_image(str(im), reduce_to=self.size)
        if isinstance(im, Image.Image):
            im = np.asarray(im.convert("RGB"))
        if not isinstance(im, np.ndarray) or im.ndim != 3 or im.shape[2] != 3:
            raise ValueError("Each image must be a path, a PIL image or an HWC RGB uint8 array; "
                             f"got {type(im).__name__} {getattr(im, 'shape', '')}")
        if im.dtype != np.uint8:
            raise ValueError(f"HWC arrays must be uint8 in [0, 255], got {im.dtype}")
        if not im.flags.writeable:  # e.g. np.asarray of a PIL image: torch wants a writable one
            im = im.copy()
        return torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1).float() / 255.0

    @torch.no_grad()
    def __call__(self, images: Sequence[ImageLike] | torch.Tensor) -> torch.Tensor:
        """Extract features.

        Args:
            images: see :meth:`preprocess`.

        Returns:
            A float32 tensor (N, D) on the CPU.

        Raises:
            ValueError: no images, or features with NaN or inf (the message names the images).
        """
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
