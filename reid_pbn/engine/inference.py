"""Inference from a config: the model with its weights, test loaders per target data set, the
DDP feature gather, and the evaluation of every target (results tables and files).

This is the glue between the floors below: ``data`` builds the loaders, ``modeling`` the model,
``evaluation`` extracts features from a (model, loader) pair and scores them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..data import build_split_test_loader, build_test_loader, eval_split_ids
from ..evaluation import (
    evaluate,
    evaluation_kwargs_from_config,
    extract_features,
    format_results_table,
    mean_over_splits,
    save_results,
)
from ..modeling import build_model
from ..utils import comm
from .checkpoint import extract_state_dict, load_checkpoint_file, load_state_dict_checked
from .defaults import resolve_device

logger = logging.getLogger("reid_pbn")

__all__ = [
    "average_domain_weights",
    "build_inference_model",
    "gather_features",
    "inference_on_datasets",
]


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
    num_domains = max(len(cfg.DATASETS.NAMES), 1)
    model = build_model(cfg, num_classes=max(cfg.MODEL.HEADS.NUM_CLASSES, 1),
                        num_domains=num_domains)
    weights = weights or cfg.MODEL.WEIGHTS
    if weights:
        state = extract_state_dict(load_checkpoint_file(weights))
        missing, _ = load_state_dict_checked(
            model, state, source=weights, allow_partial=bool(cfg.MODEL.WEIGHTS_PARTIAL_OK),
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


def gather_features(data: dict) -> dict:
    """Concatenates every rank's :func:`extract_features` output in rank order.

    DDP test loaders give each rank a contiguous shard
    (:class:`~reid_pbn.data.samplers.InferenceSampler`), so rank order is data-set order.
    Outside DDP the input is returned as is.

    Args:
        data: this rank's ``extract_features`` dict.

    Returns:
        The dict over the whole data set (on every rank).
    """
    if comm.get_world_size() == 1:
        return data
    parts = comm.all_gather_object({k: (v.numpy() if torch.is_tensor(v) else v)
                                    for k, v in data.items()})

    def cat(key):
        arrays = [p[key] for p in parts if p[key] is not None and p[key].size]
        return torch.from_numpy(np.concatenate(arrays)) if arrays else None

    feats = cat("feats")
    return {
        "feats": feats if feats is not None else torch.zeros(0, 0),
        **{k: np.concatenate([p[k] for p in parts]) for k in ("pids", "camids", "domains")},
        "paths": [path for p in parts for path in p["paths"]],
        "domain_weights": cat("domain_weights"),
    }


def average_domain_weights(weights: torch.Tensor, source_names: Sequence[str]) -> dict:
    """Mean BNE domain weight of each source domain over a target's images.

    Args:
        weights: (N, D) per-image domain weights (rows sum to 1).
        source_names: the D source data sets in domain-index order (``DATASETS.NAMES``);
            ``domain<i>`` is used when the count does not match.

    Returns:
        ``{"domain_weight:<source name>": mean weight}`` in domain order.
    """
    mean = weights.float().mean(0).tolist()
    names = list(source_names)
    if len(names) != len(mean):
        names = [f"domain{i}" for i in range(len(mean))]
    return {f"domain_weight:{n}": float(v) for n, v in zip(names, mean)}


def _model_device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def inference_on_datasets(
    cfg,
    model: torch.nn.Module,
    names: Sequence[str],
    output_dir: str | os.PathLike | None = None,
    provenance: Mapping | None = None,
) -> dict[str, dict]:
    """Evaluates one model on several target data sets (query first, then gallery each).

    For every name it builds ``reid_pbn.data.build_test_loader(cfg, name)``, extracts features
    (``TEST.FLIP``), runs :func:`~reid_pbn.evaluation.evaluate` with ``TEST.METRIC``,
    ``TEST.MAX_RANK``, ``TEST.CHUNK_SIZE``, ``TEST.RERANK.*``, ``TEST.AQE.*`` and
    ``TEST.ROC.*``, and logs a table. With ``output_dir`` it writes ``results.json``,
    ``results.csv`` and a CMC curve ``cmc_<name>.png`` per target (and ``roc_<name>.png`` when
    ROC is enabled).

    Args:
        cfg: the config.
        model: the model (its device is used for extraction).
        names: registry names of the target data sets.
        output_dir: folder for the result files; None writes nothing.
        provenance: what the result files record as computed with (checkpoint path and
            SHA-256, re-ranking and query expansion: :func:`~reid_pbn.engine.defaults.\
evaluation_provenance`).

    For a BNE model (one exposing ``last_domain_weights``) each target's results also hold the
    average domain weight of every source, ``"domain_weight:<source>"``: which source
    domain the target resembles.

    A target with several standard splits (GRID's 10) that is not a training source and has
    no split fixed in ``DATASETS.KWARGS`` is evaluated on every split (``TEST.ALL_SPLITS``,
    see :func:`~reid_pbn.data.eval_split_ids`), from features extracted once; its results are
    the mean over the splits with ``"<metric>_std"`` and the per-split values under
    ``"splits"`` (:func:`~reid_pbn.evaluation.mean_over_splits`).

    Under DDP every rank must call it: each extracts its shard, the features are gathered in
    data-set order, and the main process evaluates and writes (the others return ``{}``).

    Returns:
        ``{name: results dict of evaluate}`` in the order of ``names``.
    """
    kwargs = evaluation_kwargs_from_config(cfg)
    device = _model_device(model)
    results: dict[str, dict] = {}
    for name in names:
        split_ids = eval_split_ids(cfg, name)
        if split_ids:
            loader, splits = build_split_test_loader(cfg, name, split_ids)
        else:
            loader, num_query = build_test_loader(cfg, name)
            splits = [(slice(0, num_query), slice(num_query, None))]
        data = gather_features(extract_features(model, loader, device, flip=bool(cfg.TEST.FLIP),
                                                desc=f"features of {name}"))
        if not comm.is_main_process():
            continue
        feats = data["feats"]
        pids, camids = data["pids"], data["camids"]
        per_split = []
        for q, g in splits:
            if not split_ids:
                logger.info("%s: %d query and %d gallery images, %d-d features", name,
                            q.stop, feats.shape[0] - q.stop,
                            feats.shape[1] if feats.dim() == 2 else 0)
            per_split.append(evaluate(feats[q], feats[g], pids[q], pids[g], camids[q],
                                      camids[g], **kwargs))
        if split_ids:
            res = mean_over_splits(per_split, split_ids)
            logger.info("%s: mean over %d splits (std over splits: mAP %.2f, Rank-1 %.2f); "
                        "per split:\n%s", name, len(split_ids), 100 * res["mAP_std"],
                        100 * res["Rank-1_std"], format_results_table(
                            {f"split {i}": r for i, r in zip(split_ids, per_split)},
                            label=name))
        else:
            res = per_split[0]
        if data["domain_weights"] is not None:
            weights = average_domain_weights(data["domain_weights"], cfg.DATASETS.NAMES)
            res.update(weights)
            logger.info("%s: average BNE domain weights (which source it resembles): %s", name,
                        ", ".join(f"{k.split(':', 1)[1]} {v:.3f}" for k, v in weights.items()))
        results[name] = res
        logger.info("Evaluation on %s (%d of %d queries with a true match):\n%s", name,
                    res["num_valid_queries"], res["num_queries"],
                    format_results_table({name: res}))
    if len(results) > 1:
        logger.info("All targets:\n%s", format_results_table(results))
    if output_dir is not None and results:
        save_results(results, output_dir, provenance=provenance)
    return results
