"""Heads: pooling, embedding, BNNeck and identity classifiers."""

from .classifiers import CLASSIFIERS, CosineClassifier, LinearClassifier
from .embedding_head import HEAD_REGISTRY, NECKS, EmbeddingHead, build_head
from .pooling import POOLINGS, GeneralizedMeanPooling, build_pooling

__all__ = [
    "CLASSIFIERS",
    "HEAD_REGISTRY",
    "NECKS",
    "POOLINGS",
    "CosineClassifier",
    "EmbeddingHead",
    "GeneralizedMeanPooling",
    "LinearClassifier",
    "build_head",
    "build_pooling",
]
