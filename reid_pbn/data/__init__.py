"""Data: data-set registry, synthetic domains, transforms, samplers and loaders."""

from .build import (
    build_split_test_loader,
    build_test_loader,
    build_train_loader,
    dataset_kwargs_from_cfg,
    eval_split_ids,
)
from .common import ReIDImageDataset, collate_batch, read_image
from .datasets import (
    DATASET_REGISTRY,
    DatasetFormatError,
    DatasetNotFoundError,
    EmptySplitError,
    ReIDDataset,
    UnreadableImageError,
    build_dataset,
    generate_domain,
    generate_shifted,
    parse_dataset_name,
    register_dataset,
)
from .samplers import (
    DomainBalancedBatchSampler,
    InferenceSampler,
    PKBatchSampler,
    RandomBatchSampler,
)
from .transforms import build_transforms

__all__ = [
    "DATASET_REGISTRY",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "DomainBalancedBatchSampler",
    "EmptySplitError",
    "InferenceSampler",
    "PKBatchSampler",
    "RandomBatchSampler",
    "ReIDDataset",
    "ReIDImageDataset",
    "UnreadableImageError",
    "build_dataset",
    "build_split_test_loader",
    "build_test_loader",
    "build_train_loader",
    "build_transforms",
    "collate_batch",
    "dataset_kwargs_from_cfg",
    "eval_split_ids",
    "generate_domain",
    "generate_shifted",
    "parse_dataset_name",
    "read_image",
    "register_dataset",
]
