"""The data-set registry: one name per data set, one function to build any of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from ...utils.registry import Registry
from .bases import ReIDDataset

__all__ = [
    "DATASET_REGISTRY",
    "ParsedName",
    "build_dataset",
    "parse_dataset_name",
    "register_dataset",
]

#: Registered data sets by name. A registered object is a subclass of
#: :class:`~reid_pbn.data.datasets.bases.ReIDDataset` whose constructor takes ``root`` (the data
#: root, ``None`` for the default) plus keyword-only options, parses its files and calls
#: ``ReIDDataset.__init__(train, query, gallery, ...)``. The built object then provides
#: ``train``, ``query`` and ``gallery`` lists of ``(img_path, pid, camid)`` tuples (train pids
#: relabelled to ``0..num_train_pids-1``, query/gallery pids as in the files, camera ids
#: 0-based), ``num_train_pids``, ``num_train_cams`` and a ``summary()`` table. A data set whose
#: files are missing raises :class:`~reid_pbn.data.datasets.bases.DatasetNotFoundError` with
#: the expected tree and where to get it. A class that sets ``name_parameter`` is also built
#: from ``"Name@value"`` (see :func:`parse_dataset_name`).
DATASET_REGISTRY = Registry(
    "data set", doc="Data sets: ``ReIDDataset`` subclasses built as ``cls(root, **kwargs)``."
)

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
        DuplicateNameError: the name is already taken by another class (a ``ValueError``).
        TypeError: the object is not a ``ReIDDataset`` subclass.
    """

    def _register(c: T) -> T:
        if not (isinstance(c, type) and issubclass(c, ReIDDataset)):
            raise TypeError(f"register_dataset expects a ReIDDataset subclass, got {c!r}")
        return DATASET_REGISTRY.register(c, name=name or c.__name__)

    if cls is not None:
        return _register(cls)
    return _register


class ParsedName(NamedTuple):
    """A data-set name resolved by :func:`parse_dataset_name`.

    Attributes:
        registered: the registry name (the part before ``@``).
        cls: the registered class.
        options: the constructor options the ``@value`` suffix sets (empty without one).
    """

    registered: str
    cls: type[ReIDDataset]
    options: dict[str, Any]


def parse_dataset_name(name: str) -> ParsedName:
    """Resolve a data-set name, with its optional ``@value`` suffix, to a class and options.

    ``"SyntheticLocal@0.5"`` names the registered ``SyntheticLocal`` with its
    ``name_parameter`` (``strength``) set to ``0.5``; ``"SyntheticLocal"`` takes the
    constructor's default. Every place that reads data-set names from a config resolves them
    here, so a name accepted in one place is accepted in all.

    Args:
        name: registry name, optionally followed by ``@value``.

    Returns:
        The registry name, its class and the options the suffix sets.

    Raises:
        ValueError: no data set of that name is registered (the message lists close names),
            the data set takes no ``@`` parameter, or the value does not parse.
    """
    base, at, value = name.partition("@")
    cls = DATASET_REGISTRY.get(base)
    if not at:
        return ParsedName(base, cls, {})
    if cls.name_parameter is None:
        takers = sorted(k for k, c in DATASET_REGISTRY.items() if c.name_parameter is not None)
        raise ValueError(
            f"Data set name '{name}': {base} takes no '@' parameter (names with one: "
            f"{', '.join(f'{k}@<{DATASET_REGISTRY[k].name_parameter}>' for k in takers)})"
        )
    try:
        parsed = cls.name_parameter_type(value)
    except (TypeError, ValueError):
        parsed = None
    if parsed is None:
        raise ValueError(
            f"Data set name '{name}': '{value}' is not a valid {cls.name_parameter} for {base} "
            f"(expected a {getattr(cls.name_parameter_type, '__name__', 'value')}, e.g. "
            f"'{base}@0.5')"
        )
    return ParsedName(base, cls, {cls.name_parameter: parsed})


def build_dataset(name: str, root: str | None = None, **kwargs: Any) -> ReIDDataset:
    """Build a registered data set by name.

    Args:
        name: registry name, e.g. ``"Market1501"``, ``"DukeMTMC"``, ``"MSMT17"``, ``"CUHK03"``,
            ``"GRID"``, ``"CustomDataset"``, ``"SyntheticA"``; a data set with a
            ``name_parameter`` also takes ``"Name@value"`` (``"SyntheticLocal@0.33"`` builds
            ``SyntheticLocal`` with ``strength=0.33``; see :func:`parse_dataset_name`).
        root: data root holding the data-set folders; ``None`` or ``""`` uses
            ``$REID_PBN_DATASETS`` when set, else ``datasets/`` relative to the working
            directory.
        **kwargs: data-set options (``verify_images``, ``strict`` for every data set, plus the
            data set's own, e.g. ``split_id`` for GRID or ``subset`` for CUHK03).

    Returns:
        The parsed data set.

    Raises:
        ValueError: no data set of that name is registered (the message lists close names), a
            bad ``@value`` suffix, or a suffix that contradicts an option in ``kwargs``.
        DatasetNotFoundError: the data set's files are not under the root.
    """
    _, cls, options = parse_dataset_name(name)
    for key, value in options.items():
        if key in kwargs and kwargs[key] != value:
            raise ValueError(
                f"Data set name '{name}' sets {key}={value!r} but the options say "
                f"{key}={kwargs[key]!r}; give it once"
            )
    return cls(root=root, **{**kwargs, **options})
