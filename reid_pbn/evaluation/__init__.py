"""Evaluation and retrieval: exact ranking metrics, re-ranking, FAISS index, cross-dataset
evaluation and visualization."""

from .evaluator import (
    check_evaluation_options,
    evaluation_kwargs_from_config,
    extract_features,
    format_results_table,
    inference_on_datasets,
    save_results,
)
from .index import IndexFormatError, ReIDIndex, exact_knn
from .metrics import (
    PairwiseDistance,
    compute_distance,
    evaluate,
    pair_distances,
    query_expansion,
    roc_metrics,
)
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
    "ReIDIndex",
    "compute_distance",
    "evaluate",
    "evaluate_rank",
    "check_evaluation_options",
    "evaluation_kwargs_from_config",
    "exact_knn",
    "extract_features",
    "format_results_table",
    "inference_on_datasets",
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
