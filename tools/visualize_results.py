"""Pictures of a model's retrieval results on a target data set.

Writes into the output folder (default OUTPUT_DIR/eval/visualize/):
    ranked/ranked_<query>.png   query (blue) and its top-k gallery items, green for a true
                                match and red otherwise; same-identity same-camera items are
                                skipped as the evaluation protocol does
    distance_hist.png           distances of positive vs negative query-gallery pairs
    roc.png                     verification ROC curve (TPR at FPR 1e-4 / 1e-3 / 1e-2 in legend)
    tsne.png                    t-SNE map of source and target features, coloured by domain
    results.json / results.csv  the metrics of the target (as tools/cross_eval.py writes them,
                                naming the checkpoint and the evaluation settings)

Examples:
    python tools/visualize_results.py --config-file configs/Demo/synthetic_cross_domain.yml \\
        --weights logs/demo/synthetic_A_to_B/model_final.pth --target SyntheticB \\
        --output logs/demo/vis
    python tools/visualize_results.py --config-file configs/CrossDomain/market2duke_pbn_R50.yml \\
        --weights model_final.pth --target DukeMTMC --sources Market1501 --num-queries 30 \
        TEST.METRIC euclidean
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import numpy as np
import torch

from reid_pbn.data import build_test_loader
from reid_pbn.engine import (
    EVAL_DIR,
    ToolError,
    add_weights_arguments,
    build_inference_model,
    default_argument_parser,
    default_setup,
    evaluation_provenance,
    output_dir_of,
    tool_main,
)
from reid_pbn.evaluation import (
    evaluate,
    evaluation_kwargs_from_config,
    extract_features,
    format_results_table,
    pair_distances,
    plot_distance_histogram,
    plot_ranked_lists,
    plot_roc,
    plot_tsne,
    roc_metrics,
    save_results,
)

logger = logging.getLogger("reid_pbn")

# Below the evaluation folder, beside the results of training and cross_eval.py.
_SUBDIR = os.path.join(EVAL_DIR, "visualize")


def build_parser() -> argparse.ArgumentParser:
    """The shared parser of reid_pbn tools plus this tool's flags (also used by ``--help``)."""
    parser = default_argument_parser(__doc__, training=False, config_required=True)
    add_weights_arguments(parser, required=True)
    parser.add_argument("--target", default=None, metavar="NAME",
                        help="Target data set (default: the first of DATASETS.TESTS).")
    parser.add_argument("--sources", nargs="*", default=None, metavar="NAME",
                        help="Source data sets whose test features join the t-SNE map "
                        "(default: DATASETS.NAMES; pass none to skip them).")
    parser.add_argument("--output", default=None, metavar="DIR",
                        help=f"Output folder (default: OUTPUT_DIR/{_SUBDIR}).")
    parser.add_argument("--num-queries", type=int, default=16,
                        help="Random queries drawn as ranked lists.")
    parser.add_argument("--topk", type=int, default=10, help="Gallery items per ranked list.")
    parser.add_argument("--tsne-points", type=int, default=2000,
                        help="Points in the t-SNE map at most (split evenly between domains).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of query and point sampling.")
    parser.add_argument("--device", default=None,
                        help="'auto', 'cpu' or 'cuda[:N]' (default: MODEL.DEVICE).")
    return parser


def run(args: argparse.Namespace) -> None:
    """Evaluate the target, then draw the ranked lists, histograms, ROC and t-SNE map.

    Args:
        args: parsed arguments of :func:`build_parser`.
    """
    cfg = default_setup(args, output_dir=args.output, subdir=_SUBDIR)
    out = output_dir_of(cfg, args.output, _SUBDIR)
    target = args.target or (list(cfg.DATASETS.TESTS) or [None])[0]
    if not target:
        raise ToolError("No target data set: pass --target NAME or set DATASETS.TESTS")
    sources = list(cfg.DATASETS.NAMES) if args.sources is None else args.sources
    # Every data set is found (or reported missing) before any feature is extracted.
    loaders = {name: build_test_loader(cfg, name)
               for name in dict.fromkeys([target, *sources])}
    model = build_inference_model(cfg, args.weights, args.device)
    device = next(model.parameters()).device

    def features(name):
        loader, num_query = loaders[name]
        data = extract_features(model, loader, device, flip=bool(cfg.TEST.FLIP),
                                desc=f"features of {name}")
        return data, num_query

    data, nq = features(target)
    f, pids, cams, paths = data["feats"], data["pids"], data["camids"], data["paths"]
    q, g = slice(0, nq), slice(nq, None)
    kwargs = evaluation_kwargs_from_config(cfg)
    kwargs["roc"] = False
    metric = kwargs["metric"]
    results = evaluate(f[q], f[g], pids[q], pids[g], cams[q], cams[g], **kwargs)
    pos, neg = pair_distances(f[q], f[g], pids[q], pids[g], cams[q], cams[g], metric=metric,
                              seed=args.seed)
    roc = roc_metrics(pos, neg)
    results.update(roc)
    save_results({target: results}, out, provenance=evaluation_provenance(cfg, args.weights))
    print(format_results_table({target: results}))

    ranked = plot_ranked_lists(f[q], f[g], pids[q], pids[g], cams[q], cams[g], paths[q], paths[g],
                               os.path.join(out, "ranked"), metric=metric, topk=args.topk,
                               num_queries=args.num_queries, seed=args.seed)
    plot_distance_histogram(pos, neg, os.path.join(out, "distance_hist.png"),
                            title=f"{target}: {metric} distance")
    tpr_at = {k: v for k, v in roc.items() if k.startswith("TPR@")}
    plot_roc(roc["roc_fpr"], roc["roc_tpr"], os.path.join(out, "roc.png"), tpr_at=tpr_at,
             title=target)

    feats, domains, names = [f], [np.zeros(len(f), np.int64)], {0: f"{target} (target)"}
    for i, name in enumerate(s for s in sources if s != target):
        d, _ = features(name)
        feats.append(d["feats"])
        domains.append(np.full(len(d["feats"]), i + 1, np.int64))
        names[i + 1] = f"{name} (source)"
    plot_tsne(torch.cat(feats), np.concatenate(domains), os.path.join(out, "tsne.png"),
              domain_names=names, max_points=args.tsne_points, seed=args.seed,
              title="t-SNE of features by domain")
    print(f"Wrote {len(ranked)} ranked lists, distance_hist.png, roc.png and tsne.png to {out}")


def main(argv: list[str] | None = None) -> int:
    """Run the tool on ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    return tool_main(build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
