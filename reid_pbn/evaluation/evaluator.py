"""Feature extraction from a (model, loader) pair, result tables and result files.

Evaluation works on a model and a loader, or on features, ids and cameras; building the test
loaders from a config and gathering features across DDP ranks is the engine's job
(:func:`reid_pbn.engine.inference_on_datasets`).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..config import ConfigError
from .distance import METRICS
from .options import QueryExpansionOptions, RerankOptions
from .visualize import plot_cmc, plot_roc

logger = logging.getLogger(__name__)

__all__ = [
    "extract_features",
    "evaluation_kwargs_from_config",
    "format_results_table",
    "mean_over_splits",
    "save_results",
    "TABLE_COLUMNS",
]

# Columns of the results table, in percent.
TABLE_COLUMNS = ("mAP", "mINP", "Rank-1", "Rank-5", "Rank-10")


@torch.no_grad()
def extract_features(
    model: torch.nn.Module,
    loader,
    device: torch.device | str,
    flip: bool = False,
    normalize: bool = True,
    desc: str = "extracting features",
) -> dict:
    """Runs the model in eval mode over a loader of batch dicts and collects the features.

    Batches follow the project's format: ``{"images", "pids", "camids", "domains",
    "img_paths"}``. The model's eval forward takes the images tensor and returns (N, D)
    features. The model's train/eval mode is restored afterwards.

    Args:
        model: the re-ID model.
        loader: iterable of batch dicts.
        device: device the images are moved to (the model's).
        flip: average the features of each image and its horizontal flip.
        normalize: L2-normalize the features.
        desc: progress bar label.

    Returns:
        ``{"feats": float32 tensor (N, D) on CPU, "pids", "camids", "domains": int64 numpy
        arrays, "paths": list of str, "domain_weights": (N, source domains) float32 tensor of
        a BNE model's domain weights (``model.last_domain_weights``), else None}``.
    """
    was_training = model.training
    model.eval()
    feats, pids, camids, domains, paths, domain_weights = [], [], [], [], [], []
    try:
        for batch in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True):
            images = batch["images"].to(device, non_blocking=True)
            f = model(images)
            # BNE models keep each image's source-domain weights of their last eval forward.
            dw = getattr(model, "last_domain_weights", None)
            if torch.is_tensor(dw):
                domain_weights.append(dw.float().cpu())
            if flip:
                f = (f + model(torch.flip(images, dims=[3]))) / 2.0
            f = f.float()
            if normalize:
                f = F.normalize(f, dim=1)
            feats.append(f.cpu())
            n = f.shape[0]
            pids.append(np.asarray(batch["pids"], dtype=np.int64).reshape(n))
            camids.append(np.asarray(batch["camids"], dtype=np.int64).reshape(n))
            dom = batch.get("domains")
            domains.append(np.full(n, -1, np.int64) if dom is None
                           else np.asarray(dom, dtype=np.int64).reshape(n))
            paths.extend(str(p) for p in batch.get("img_paths", [""] * n))
    finally:
        model.train(was_training)
    empty = np.zeros(0, np.int64)
    return {
        "feats": torch.cat(feats) if feats else torch.zeros(0, 0),
        "pids": np.concatenate(pids) if pids else empty,
        "camids": np.concatenate(camids) if camids else empty,
        "domains": np.concatenate(domains) if domains else empty,
        "paths": paths,
        "domain_weights": torch.cat(domain_weights) if domain_weights else None,
    }


def evaluation_kwargs_from_config(cfg) -> dict:
    """Keyword arguments of :func:`~reid_pbn.evaluation.evaluate` from ``cfg.TEST.*``.

    Args:
        cfg: the config.

    Returns:
        ``{"metric", "max_rank", "chunk_size", "rerank", "aqe", "roc"}``.
    """
    t = cfg.TEST
    return {
        "metric": t.METRIC,
        "max_rank": int(t.MAX_RANK),
        "chunk_size": int(t.CHUNK_SIZE) or None,
        "rerank": {"k1": int(t.RERANK.K1), "k2": int(t.RERANK.K2),
                   "lambda": float(t.RERANK.LAMBDA)} if t.RERANK.ENABLED else None,
        "aqe": {"qe_times": int(t.AQE.QE_TIME), "qe_k": int(t.AQE.QE_K),
                "alpha": float(t.AQE.ALPHA)} if t.AQE.ENABLED else None,
        "roc": bool(t.ROC.ENABLED),
    }


def check_evaluation_options(kwargs: Mapping) -> None:
    """Check :func:`evaluation_kwargs_from_config`'s output before any work is done.

    Args:
        kwargs: the keyword arguments of :func:`~reid_pbn.evaluation.evaluate`.

    Raises:
        ConfigError: an option :func:`~reid_pbn.evaluation.evaluate` would refuse, named by its
            config key.
    """
    problems = []
    if kwargs["metric"] not in METRICS:
        problems.append(f"TEST.METRIC '{kwargs['metric']}' (choose from {', '.join(METRICS)})")
    if kwargs["max_rank"] < 1:
        problems.append(f"TEST.MAX_RANK {kwargs['max_rank']} (must be >= 1)")
    if kwargs["chunk_size"] is not None and kwargs["chunk_size"] < 1:
        problems.append(f"TEST.CHUNK_SIZE {kwargs['chunk_size']} (0 for automatic, or >= 1)")
    # The options' own checks, named by their config keys.
    for key, options, option_keys in (
        ("rerank", RerankOptions, "TEST.RERANK.K1/K2/LAMBDA"),
        ("aqe", QueryExpansionOptions, "TEST.AQE.QE_TIME/QE_K/ALPHA"),
    ):
        try:
            options.coerce(kwargs.get(key))
        except ValueError as e:
            problems.append(f"{option_keys}: {e}")
    if problems:
        raise ConfigError("Invalid evaluation settings: " + "; ".join(problems))


def format_results_table(
    results: Mapping[str, Mapping], columns: Sequence[str] = TABLE_COLUMNS,
    label: str = "dataset",
) -> str:
    """A plain-text table of metrics (percent) with one row per data set.

    Args:
        results: ``{row name (a data set): results dict of evaluate}``.
        columns: metric keys shown; a missing key shows "-". Verification metrics
            (``TPR@FPR=...``) are added when any row has them.
        label: header of the first column.

    Returns:
        The table (markdown-compatible pipes).
    """
    columns = list(columns)
    for r in results.values():
        for k in r:
            if k.startswith("TPR@FPR=") and k not in columns:
                columns.append(k)
    width = max([len(label)] + [len(n) for n in results])
    col_w = [max(7, len(c)) for c in columns]
    head = f"| {label:<{width}} | " + " | ".join(
        f"{c:>{w}}" for c, w in zip(columns, col_w)) + " |"
    sep = "|" + "-" * (width + 2) + "|" + "|".join("-" * (w + 2) for w in col_w) + "|"
    lines = [head, sep]
    for name, r in results.items():
        cells = []
        for c, w in zip(columns, col_w):
            v = r.get(c)
            cells.append(f"{100 * float(v):>{w}.2f}" if isinstance(v, (int, float, np.floating))
                         else f"{'-':>{w}}")
        lines.append(f"| {name:<{width}} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mean_over_splits(split_results: Sequence[Mapping], split_ids: Sequence[int]) -> dict:
    """One results dict for a data set evaluated on several standard splits (GRID's 10).

    Every numeric metric becomes its mean over the splits, with its population standard
    deviation (``numpy.std``, ``ddof=0``: the spread of these splits, not an estimate for
    others) under ``"<metric>_std"``; the CMC curve is averaged point-wise. ``"splits"`` keeps
    each split's scalar metrics (with ``"split"``, its id), so ``results.json`` records them;
    the CSV holds the scalar columns only. ROC curves are per split and not averaged (their
    ``TPR@FPR=...`` values are).

    Args:
        split_results: :func:`~reid_pbn.evaluation.evaluate` dicts, one per split.
        split_ids: the id of each split, in the same order.

    Returns:
        The averaged results, with ``"num_splits"``, ``"splits"`` and ``"<metric>_std"`` keys.

    Raises:
        ValueError: no splits, or ids and results of different lengths.
    """
    if not split_results or len(split_results) != len(split_ids):
        raise ValueError(f"{len(split_results)} split results for {len(split_ids)} split ids")
    out: dict = {}
    per_split: list[dict] = [{"split": int(i)} for i in split_ids]
    for key, first in split_results[0].items():
        if key in ("roc_fpr", "roc_tpr"):
            continue
        values = [r.get(key) for r in split_results]
        numeric = all(isinstance(v, (int, float, np.integer, np.floating))
                      and not isinstance(v, (bool, np.bool_)) for v in values)
        if key == "cmc":
            out[key] = np.mean(np.stack([np.asarray(v, dtype=np.float64) for v in values]), 0)
        elif numeric:
            arr = np.asarray(values, dtype=np.float64)
            out[key] = float(arr.mean())
            out[f"{key}_std"] = float(arr.std(ddof=0))
            for d, v in zip(per_split, arr.tolist()):
                d[key] = v
        else:
            out[key] = first  # settings such as the metric are the same on every split
    out["num_splits"] = len(split_results)
    out["splits"] = per_split
    return out


def _jsonable(results: Mapping) -> dict:
    out = {}
    for k, v in results.items():
        if k in ("roc_fpr", "roc_tpr"):
            continue
        if isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not np.isfinite(v):
            v = None  # strict JSON has no NaN (e.g. ROC metrics without positive pairs)
        out[k] = v
    return out


def save_results(results: Mapping[str, Mapping], output_dir: str | os.PathLike,
                 provenance: Mapping | None = None) -> dict:
    """Writes ``results.json``, ``results.csv``, ``cmc_<name>.png`` and, when ROC metrics are
    present, ``roc_<name>.png`` into ``output_dir``.

    Args:
        results: ``{data set name: results dict of evaluate}``.
        output_dir: output folder, created if missing.
        provenance: what the results were computed with (e.g.
            :func:`reid_pbn.engine.evaluation_provenance`: checkpoint path and SHA-256,
            re-ranking and query-expansion settings). It is stored under the key
            ``"provenance"`` of ``results.json``, repeated in every row of ``results.csv``
            (nested settings as JSON text) and logged.

    Returns:
        ``{"json": path, "csv": path, "cmc": {name: path}, "roc": {name: path}}``.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {n: _jsonable(r) for n, r in results.items()}
    prov = dict(provenance or {})
    if prov:
        doc["provenance"] = prov
        logger.info("Results computed with: %s", json.dumps(prov, sort_keys=True))
    json_path = out / "results.json"
    json_path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    scalar_keys: list[str] = []
    for r in results.values():
        for k, v in r.items():
            if isinstance(v, (int, float, np.floating, np.integer, bool)) and k not in scalar_keys:
                scalar_keys.append(k)
    prov_cells = [v if v is None or isinstance(v, (str, int, float, bool))
                  else json.dumps(v, sort_keys=True) for v in prov.values()]
    csv_path = out / "results.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["dataset", *scalar_keys, *prov])
        for name, r in results.items():
            writer.writerow([name, *(_csv_cell(r.get(k)) for k in scalar_keys),
                             *(_csv_cell(v) for v in prov_cells)])
    files: dict = {"json": json_path, "csv": csv_path, "cmc": {}, "roc": {}}
    for name, r in results.items():
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
        if "cmc" in r:
            files["cmc"][name] = plot_cmc(
                {name: r["cmc"]}, out / f"cmc_{safe}.png",
                title=f"{name}: mAP {100 * r.get('mAP', 0.0):.1f}%",
            )
        if len(r.get("roc_fpr", ())):
            tpr_at = {k: v for k, v in r.items() if k.startswith("TPR@FPR=")}
            files["roc"][name] = plot_roc(r["roc_fpr"], r["roc_tpr"], out / f"roc_{safe}.png",
                                          tpr_at=tpr_at, title=name)
    logger.info("Evaluation results written to %s", out)
    return files


def _csv_cell(v):
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.6f}"
    return v.item() if isinstance(v, np.generic) else v
