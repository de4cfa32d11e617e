"""Every visualization writes a PNG file."""

import numpy as np
from eval_reference import clustered_features
from PIL import Image

from reid_pbn.evaluation import (
    evaluate,
    pair_distances,
    plot_cmc,
    plot_distance_histogram,
    plot_ranked_lists,
    plot_roc,
    plot_tsne,
)


def _is_png(path):
    with Image.open(path) as im:
        return im.format == "PNG" and im.size[0] > 10 and im.size[1] > 10


def test_all_plots_write_pngs(tmp_path):
    rng = np.random.default_rng(0)
    qf, qp = clustered_features(rng, 12, 8, 5, noise=0.4, pids=np.arange(12) % 5)
    gf, gp = clustered_features(rng, 40, 8, 5, noise=0.4, pids=np.arange(40) % 5)
    qc, gc = np.zeros(12, int), np.arange(40) % 3
    paths = []
    for i in range(40):
        p = tmp_path / f"g{i}.png"
        Image.fromarray(rng.integers(0, 255, (32, 16, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    q_paths = paths[:11] + [str(tmp_path / "missing.jpg")]  # unreadable -> placeholder tile
    written = plot_ranked_lists(qf, gf, qp, gp, qc, gc, q_paths, paths, tmp_path / "ranked",
                                topk=5, num_queries=3)
    assert len(written) == 3 and all(_is_png(p) for p in written)
    one = plot_ranked_lists(qf, gf, qp, gp, qc, gc, q_paths, paths, tmp_path / "r2",
                            topk=4, query_indices=[11])
    assert _is_png(one[0])

    pos, neg = pair_distances(qf, gf, qp, gp, qc, gc)
    assert _is_png(plot_distance_histogram(pos, neg, tmp_path / "hist.png"))
    r = evaluate(qf, gf, qp, gp, qc, gc, roc=True, max_rank=10)
    tpr_at = {k: v for k, v in r.items() if k.startswith("TPR@")}
    assert _is_png(plot_roc(r["roc_fpr"], r["roc_tpr"], tmp_path / "roc.png", tpr_at=tpr_at))
    assert _is_png(plot_cmc({"target": r["cmc"]}, tmp_path / "cmc.png", title="CMC"))
    feats = np.concatenate([qf, gf])
    domains = np.r_[np.zeros(12, int), np.ones(40, int)]
    assert _is_png(plot_tsne(feats, domains, tmp_path / "tsne.png",
                             domain_names={0: "source", 1: "target"}, max_points=40))
