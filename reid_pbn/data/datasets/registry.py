"""The data-set registry: one name per data set, one function to build any of them."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, TypeVar

from .bases import ReIDDataset

__all__ = ["DATASET_REGISTRY", "build_dataset", "register_dataset"]

#: Registered data sets by name. A registered object is a subclass of
#: :class:`~reid_pbn.data.datasets.bases.ReIDDataset` whose constructor takes ``root`` (the data
#: root, ``None`` for the default) plus keyword-only options, parses its files and calls
#: ``ReIDDataset.__init__(train, query, gallery, ...)``. The built object then provides
#: ``train``, ``query`` and ``gallery`` lists of ``(img_path, pid, camid)`` tuples (train pids
#: relabelled to ``0..num_train_pids-1``, query/gallery pids as in the files, camera ids
#: 0-based), ``num_train_pids``, ``num_train_cams`` and a ``summary()`` table. A data set whose
#: files are missing raises :class:`~reid_pbn.data.datasets.bases.DatasetNotFoundError` with
#: the expected tree and where to get it.
DATASET_REGISTRY: dict[str, type[ReIDDataset]] = {}

T = TypeVar("T", bound=type[ReIDDataset])


def register_dataset(cls: T | None = None, *, name: str | None = None) -> T | Callable[[T], T]:
    """Class decorator that adds a data set to :data:`DATASET_REGISTRY`.

    Use as ``@register_dataset`` (registered under the class name) or
    ``@register_dataset(name="Other")``.

    Args:
        cls: the data-set class (given when used without parentheses).
        name: registry name; defaults to the class name.

    Returns:
        The class itself (so the decorator leaves it unchanged), or the decorator.

    Raises:
        ValueError: the name is already taken by another class.
        TypeError: the object is not a ``ReIDDataset`` subclass.
    """

    def _register(c: T) -> T:
        if not (isinstance(c, type) and issubclass(c, ReIDDataset)):
            raise TypeError(f"register_dataset expects a ReIDDataset subclass, got {c!r}")
        key = name or c.__name__
        if key in DATASET_REGISTRY and DATASET_REGISTRY[key] is not c:
            raise ValueError(
                f"Data set name '{key}' is already registered by {DATASET_REGISTRY[key]!r}"
            )
        DATASET_REGISTRY[key] = c
        return c

    if cls is not None:
        return _register(cls)
    return _register


def build_dataset(name: str, root: str | None = None, **kwargs: Any) -> ReIDDataset:
    """Build a registered data set by name.

    Args:
        name: registry name, e.g. ``"Market1501"``, ``"DukeMTMC"``, ``"MSMT17"``, ``"CUHK03"``,
            ``"GRID"``, ``"CustomDataset"``, ``"SyntheticA"``.
        root: data root holding the data-set folders; ``None`` or ``""`` uses
            ``$REID_PBN_DATASETS`` when set, else ``datasets/`` relative to the working
            directory.
        **kwargs: data-set options (``verify_images``, ``strict`` for every data set, plus the
            data set's own, e.g. ``split_id`` for GRID or ``subset`` for CUHK03).

    Returns:
        The parsed data set.

    Raises:
        ValueError: no data set of that name is registered (the message lists close names).
        DatasetNotFoundError: the data set's files are not under the root.
    """
    if name not in DATASET_REGISTRY:
        close = difflib.get_close_matches(name, list(DATASET_REGISTRY), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(
            f"Unknown data set '{name}'.{hint} Registered: {', '.join(sorted(DATASET_REGISTRY))}"
        )
    return DATASET_REGISTRY[name](root=root, **kwargs)
