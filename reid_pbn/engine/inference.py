"""Building a model for feature extraction / evaluation from a config and a weight file."""

from __future__ import annotations

import logging

from .checkpoint import extract_state_dict, load_checkpoint_file, load_state_dict_checked
from .defaults import resolve_device

logger = logging.getLogger("reid_pbn")


def build_inference_model(cfg, weights: str | None = None, device: str | None = None):
    """A model in eval mode, on its device, with ``weights`` loaded (MODEL.WEIGHTS when None).

    The ID classifier is not needed to extract features, so its weights are not loaded and
    the number of training identities need not be known.

    Args:
        cfg: config describing the architecture.
        weights: checkpoint or state_dict file ("" or None: MODEL.WEIGHTS, possibly empty).
        device: device spec; MODEL.DEVICE when None.

    Returns:
        The model.
    """
    from ..modeling import build_model

    num_domains = max(len(cfg.DATASETS.NAMES), 1)
    model = build_model(cfg, num_classes=max(cfg.MODEL.HEADS.NUM_CLASSES, 1),
                        num_domains=num_domains)
    weights = weights or cfg.MODEL.WEIGHTS
    if weights:
        state = extract_state_dict(load_checkpoint_file(weights))
        missing, _ = load_state_dict_checked(model, state, source=weights,
                                             ignore=lambda key: "classifier" in key)
        if missing:
            logger.warning("The weights do not cover the whole feature extractor; "
                           "features may be meaningless.")
    else:
        logger.warning("No weights given: the model is randomly initialized "
                       "(or ImageNet-pretrained when MODEL.BACKBONE.PRETRAIN is set).")
    model.to(resolve_device(device or cfg.MODEL.DEVICE))
    model.eval()
    return model
