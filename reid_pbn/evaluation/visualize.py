"""Pictures of retrieval results: CMC curves, ranked lists, distance histograms, ROC curves and
t-SNE maps of features by domain. Every function writes a PNG file (matplotlib's Agg canvas, no
display needed) and returns its path."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from .distance import as_feature_tensor, compute_distance
from .rank import as_id_arrays, as_int_array

logger = logging.getLogger(__name__)

__all__ = [
    "plot_cmc",
    "plot_ranked_lists",
    "plot_distance_histogram",
    "plot_roc",
    "plot_tsne",
]

_GREEN, _RED, _BLUE = (40, 170, 60), (215, 40, 40), (40, 90, 215)


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def plot_cmc(
    curves: Mapping[str, Sequence[float]] | Sequence[float],
    path: str | os.PathLike,
    title: str | None = None,
) -> Path:
    """CMC curve(s): matching rate against rank.

    Args:
        curves: one CMC curve (values in [0, 1], rank 1 first) or ``{label: curve}``.
        path: output PNG path.
        title: figure title.

    Returns:
        The PNG path.
    """
    if not isinstance(curves, Mapping):
        curves = {"CMC": curves}
    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot()
    for label, cmc in curves.items():
        cmc = np.asarray(cmc, dtype=np.float64)
        ranks = np.arange(1, len(cmc) + 1)
        ax.plot(ranks, 100 * cmc, marker="." if len(cmc) <= 30 else None,
                label=f"{label} (R1 {100 * cmc[0]:.1f})" if len(cmc) else label)
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def _load_thumb(path: str, size: tuple[int, int]) -> Image.Image:
    """Image resized to (height, width); a grey tile naming the problem when unreadable."""
    h, w = size
    try:
        with Image.open(path) as im:
            return im.convert("RGB").resize((w, h))
    except (OSError, ValueError) as e:
        logger.warning("cannot read %s for the ranked list: %s", path, e)
        tile = Image.new("RGB", (w, h), (160, 160, 160))
        ImageDraw.Draw(tile).text((4, h // 2), "missing", fill=(0, 0, 0))
        return tile


def plot_ranked_lists(
    query_feats,
    gallery_feats,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    q_paths: Sequence[str],
    g_paths: Sequence[str],
    output_dir: str | os.PathLike,
    *,
    metric: str = "cosine",
    topk: int = 10,
    query_indices: Sequence[int] | None = None,
    num_queries: int = 16,
    seed: int = 0,
    image_size: tuple[int, int] = (128, 64),
) -> list[Path]:
    """One image per query: the query (blue border) and its top-k gallery items, green when
    the identity matches and red otherwise. Gallery items with the query's identity and camera
    are skipped, as the evaluation protocol removes them.

    Args:
        query_feats: (Q, D) query features.
        gallery_feats: (G, D) gallery features.
        q_pids: query identities.
        g_pids: gallery identities.
        q_camids: query cameras.
        g_camids: gallery cameras.
        q_paths: query image paths.
        g_paths: gallery image paths.
        output_dir: folder for ``ranked_<query index>.png``.
        metric: ``"cosine"`` or ``"euclidean"``.
        topk: gallery items shown per query.
        query_indices: which queries to draw; None draws ``num_queries`` chosen at random.
        num_queries: how many random queries when ``query_indices`` is None.
        seed: seed of the random choice.
        image_size: (height, width) of each thumbnail.

    Returns:
        The PNG paths written.
    """
    qp, gp, qc, gc = as_id_arrays(q_pids, g_pids, q_camids, g_camids)
    if query_indices is None:
        rng = np.random.default_rng(seed)
        n = min(num_queries, len(qp))
        query_indices = np.sort(rng.choice(len(qp), size=n, replace=False))
    query_indices = np.asarray(query_indices, dtype=np.int64)
    q_all = as_feature_tensor(query_feats, "query_feats")
    q_sel = q_all[torch.from_numpy(query_indices).to(q_all.device)]
    dist = compute_distance(q_sel, gallery_feats, metric).cpu().numpy()
    h, w = image_size
    pad, text_h = 6, 14
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for row, qi in enumerate(query_indices):
        keep = ~((gp == qp[qi]) & (gc == qc[qi]))
        order = np.argsort(dist[row], kind="stable")
        order = order[keep[order]][:topk]
        canvas = Image.new("RGB", ((len(order) + 1) * (w + 2 * pad) + pad, h + 2 * pad + text_h),
                           (255, 255, 255))
        draw = ImageDraw.Draw(canvas)
        tiles = [(q_paths[qi], _BLUE, f"q {qp[qi]}")]
        for j in order:
            color = _GREEN if gp[j] == qp[qi] else _RED
            tiles.append((g_paths[j], color, f"{dist[row, j]:.4g}"))
        for t, (path, color, label) in enumerate(tiles):
            x0 = pad + t * (w + 2 * pad) + (pad if t else 0)
            draw.rectangle([x0 - 4, pad - 4, x0 + w + 3, pad + h + 3], fill=color)
            canvas.paste(_load_thumb(path, image_size), (x0, pad))
            draw.text((x0, pad + h + 4), label, fill=(0, 0, 0))
        path = out_dir / f"ranked_{int(qi)}.png"
        canvas.save(path)
        written.append(path)
    return written


def plot_distance_histogram(
    pos_dists: np.ndarray,
    neg_dists: np.ndarray,
    path: str | os.PathLike,
    bins: int = 100,
    title: str | None = None,
) -> Path:
    """Normalized histograms of positive (same identity) and negative pair distances.

    Args:
        pos_dists: distances of same-identity pairs.
        neg_dists: distances of different-identity pairs.
        path: output PNG path.
        bins: histogram bins (shared by both).
        title: figure title.

    Returns:
        The PNG path.
    """
    pos, neg = np.asarray(pos_dists, np.float64), np.asarray(neg_dists, np.float64)
    both = np.concatenate([pos, neg])
    edges = np.linspace(both.min(), both.max(), bins + 1) if len(both) else bins
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.hist(neg, bins=edges, density=True, alpha=0.6, color="tab:red",
            label=f"negative pairs ({len(neg)})")
    ax.hist(pos, bins=edges, density=True, alpha=0.6, color="tab:green",
            label=f"positive pairs ({len(pos)})")
    ax.set_xlabel("distance")
    ax.set_ylabel("density")
    ax.legend()
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_roc(
    fpr: np.ndarray,
    tpr: np.ndarray,
    path: str | os.PathLike,
    tpr_at: Mapping[str, float] | None = None,
    title: str | None = None,
) -> Path:
    """ROC curve of the verification task, false positive rate on a log axis.

    Args:
        fpr: false positive rates (increasing), e.g. ``evaluate(..., roc=True)["roc_fpr"]``.
        tpr: true positive rates.
        path: output PNG path.
        tpr_at: optional ``{"TPR@FPR=1e-04": value, ...}`` shown in the legend.
        title: figure title.

    Returns:
        The PNG path.
    """
    fpr, tpr = np.asarray(fpr, np.float64), np.asarray(tpr, np.float64)
    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot()
    positive = fpr > 0
    label = "ROC"
    if tpr_at:
        label += " (" + ", ".join(f"{k.split('=')[-1]}: {100 * v:.1f}" for k, v in
                                  tpr_at.items()) + ")"
    ax.plot(fpr[positive], tpr[positive], label=label)
    ax.set_xscale("log")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_tsne(
    feats,
    domains,
    path: str | os.PathLike,
    domain_names: Mapping[int, str] | Sequence[str] | None = None,
    max_points: int = 3000,
    perplexity: float = 30.0,
    seed: int = 0,
    title: str | None = None,
) -> Path:
    """2-D t-SNE map (scikit-learn) of features coloured by domain, e.g. source vs target.

    Args:
        feats: (N, D) features.
        domains: (N,) integer domain label of every feature.
        path: output PNG path.
        domain_names: names of the domains (by label) for the legend.
        max_points: points drawn at most, sampled evenly across domains.
        perplexity: t-SNE perplexity (reduced for tiny inputs).
        seed: seed of the sampling and of t-SNE.
        title: figure title.

    Returns:
        The PNG path.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = as_feature_tensor(feats, "feats").cpu().numpy()
    dom = as_int_array(domains, "domains")
    if len(dom) != len(x):
        raise ValueError(f"{len(x)} features but {len(dom)} domain labels")
    if len(x) < 3:
        raise ValueError("t-SNE needs at least 3 points")
    rng = np.random.default_rng(seed)
    labels = np.unique(dom)
    per = max(1, max_points // len(labels))
    sel = np.concatenate([
        rng.choice(np.nonzero(dom == d)[0], size=min(per, int((dom == d).sum())), replace=False)
        for d in labels
    ])
    tsne = TSNE(n_components=2, init="pca", random_state=seed,
                perplexity=min(perplexity, (len(sel) - 1) / 3.0))
    # One OpenMP thread: the Barnes-Hut gradient opens a parallel region per iteration, and on a
    # busy machine spinning threads made a 50-point map take 30 s instead of 0.1 s.
    with threadpool_limits(limits=1, user_api="openmp"):
        emb = tsne.fit_transform(x[sel])
    fig = Figure(figsize=(6, 6))
    ax = fig.add_subplot()
    for d in labels:
        m = dom[sel] == d
        if domain_names is None:
            name = f"domain {d}"
        elif isinstance(domain_names, Mapping):
            name = domain_names.get(int(d), f"domain {d}")
        else:
            name = domain_names[int(d)] if 0 <= d < len(domain_names) else f"domain {d}"
        ax.scatter(emb[m, 0], emb[m, 1], s=4, alpha=0.6, label=f"{name} ({int(m.sum())})")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(markerscale=3)
    if title:
        ax.set_title(title)
    return _save(fig, path)
