"""Re-ID data sets: a registry of parsers for the public benchmarks, a user's own data and the
synthetic domains. ``build_dataset(name, root=None, **kwargs)`` builds any of them."""

from ..synthetic import shift_statistics
from . import (  # noqa: F401 (registers)
    cuhk03,
    custom,
    dukemtmc,
    grid,
    market1501,
    msmt17,
    synthetic,
)
from .bases import (
    ENV_ROOT,
    MARKET_NAME_PATTERN,
    DatasetFormatError,
    DatasetNotFoundError,
    EmptySplitError,
    ReIDDataset,
    UnreadableImageError,
    check_image,
    find_unreadable_images,
    parse_market_style_dir,
    resolve_root,
)
from .cuhk03 import CUHK03
from .custom import CustomDataset
from .dukemtmc import DukeMTMC
from .grid import GRID
from .market1501 import Market1501, MarketStyleDataset
from .msmt17 import MSMT17
from .registry import (
    DATASET_REGISTRY,
    ParsedName,
    build_dataset,
    parse_dataset_name,
    register_dataset,
)
from .synthetic import (
    SyntheticA,
    SyntheticB,
    SyntheticC,
    SyntheticDomain,
    SyntheticGlobal,
    SyntheticLocal,
    SyntheticShift,
    generate_domain,
    generate_shifted,
)

__all__ = [
    "CUHK03",
    "DATASET_REGISTRY",
    "ENV_ROOT",
    "MARKET_NAME_PATTERN",
    "GRID",
    "MSMT17",
    "CustomDataset",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "DukeMTMC",
    "EmptySplitError",
    "Market1501",
    "MarketStyleDataset",
    "ParsedName",
    "ReIDDataset",
    "SyntheticA",
    "SyntheticB",
    "SyntheticC",
    "SyntheticDomain",
    "SyntheticGlobal",
    "SyntheticLocal",
    "SyntheticShift",
    "UnreadableImageError",
    "build_dataset",
    "check_image",
    "find_unreadable_images",
    "generate_domain",
    "generate_shifted",
    "parse_dataset_name",
    "parse_market_style_dir",
    "register_dataset",
    "resolve_root",
    "shift_statistics",
]
