"""Evaluation and retrieval: exact ranking metrics, re-ranking, FAISS index, feature extraction,
result files and visualization. Features, ids and cameras in; no config, data or engine
(evaluating a model on configured data sets is :func:`reid_pbn.engine.inference_on_datasets`)."""

from .distance import PairwiseDistance, compute_distance
from .evaluator import (
    check_evaluation_options,
    evaluation_kwargs_from_config,
    extract_features,
    format_results_table,
    mean_over_splits,
    save_results,
)
from .index import IndexFormatError, ReIDIndex, exact_knn
from .metrics import (
    evaluate,
    pair_distances,
    query_expansion,
    roc_metrics,
)
from .options import QueryExpansionOptions, RerankOptions
from .rank import evaluate_rank
from .rerank import KReciprocalReRanker, re_ranking
from .visualize import (
    plot_cmc,
    plot_distance_histogram,
    plot_ranked_lists,
    plot_roc,
    plot_tsne,
)

__all__ = [
    "IndexFormatError",
    "KReciprocalReRanker",
    "PairwiseDistance",
    "QueryExpansionOptions",
    "ReIDIndex",
    "RerankOptions",
    "compute_distance",
    "evaluate",
    "evaluate_rank",
    "check_evaluation_options",
    "evaluation_kwargs_from_config",
    "exact_knn",
    "extract_features",
    "format_results_table",
    "mean_over_splits",
    "pair_distances",
    "plot_cmc",
    "plot_distance_histogram",
    "plot_ranked_lists",
    "plot_roc",
    "plot_tsne",
    "query_expansion",
    "re_ranking",
    "roc_metrics",
    "save_results",
]
