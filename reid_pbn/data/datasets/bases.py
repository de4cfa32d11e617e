"""Base class, errors and the shared parsing helpers of the re-ID data sets."""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PIL import Image

__all__ = [
    "ENV_ROOT",
    "MARKET_NAME_PATTERN",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "EmptySplitError",
    "ReIDDataset",
    "UnreadableImageError",
    "check_image",
    "find_unreadable_images",
    "parse_market_style_dir",
    "resolve_root",
]

logger = logging.getLogger(__name__)

#: Environment variable naming the data root when none is given.
ENV_ROOT = "REID_PBN_DATASETS"

#: ``<pid>_c<cam>...``: Market-1501 (``0002_c1s1_000451_03.jpg``), DukeMTMC-reID
#: (``0005_c2_f0046985.jpg``), CUHK03-NP (``0001_c1_1.png``) and the synthetic domains. Market's
#: junk images have pid ``-1``, hence the minus sign.
MARKET_NAME_PATTERN = re.compile(r"^([-\d]+)_c(\d+)")

Item = tuple[str, int, int]


class DatasetNotFoundError(FileNotFoundError):
    """A data set (or one of its folders/files) is not where it is expected.

    The message shows the expected tree, where to get the data and how to point the toolkit at
    another data root.
    """


class DatasetFormatError(ValueError):
    """The files of a data set do not follow its format (names, list files, camera ids)."""


class EmptySplitError(DatasetFormatError):
    """A split that must hold images (train, query or gallery) holds none."""


class UnreadableImageError(OSError):
    """One or more images cannot be opened or decoded.

    Attributes:
        bad: ``(path, reason)`` pairs of the unreadable images.
    """

    def __init__(self, message: str, bad: Sequence[tuple[str, str]] = ()):
        super().__init__(message)
        self.bad = list(bad)


def resolve_root(root: str | os.PathLike | None) -> str:
    """Return the absolute data root.

    Args:
        root: explicit root; ``None`` or ``""`` falls back to ``$REID_PBN_DATASETS``, then to
            ``datasets`` relative to the current working directory.

    Returns:
        The absolute, user-expanded path (it need not exist).
    """
    if root is None or str(root) == "":
        root = os.environ.get(ENV_ROOT) or "datasets"
    return os.path.abspath(os.path.expanduser(os.fspath(root)))


# Verification results keyed by (path, size, mtime): building the train and the test loaders
# of one data set, or several jobs in one process, does not decode every file again.
_VERIFIED: dict[tuple[str, int, int], str | None] = {}
_VERIFIED_LOCK = threading.Lock()


def check_image(path: str) -> str | None:
    """Open and fully decode one image.

    Args:
        path: image file.

    Returns:
        ``None`` when the image decodes, else a short reason (missing, empty, truncated, not an
        image, ...).
    """
    try:
        st = os.stat(path)
    except OSError as e:
        return f"cannot stat file ({e.strerror or e})"
    if st.st_size == 0:
        return "empty file (0 bytes)"
    key = (path, st.st_size, st.st_mtime_ns)
    with _VERIFIED_LOCK:
        if key in _VERIFIED:
            return _VERIFIED[key]
    reason = None
    try:
        # verify() checks the container (e.g. PNG CRCs) without decoding; load() then decodes
        # the pixels, which is what finds truncated JPEGs.
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            im.load()
    except Exception as e:  # noqa: BLE001 - any decoder failure means "unreadable"
        reason = f"{type(e).__name__}: {e}"
    with _VERIFIED_LOCK:
        _VERIFIED[key] = reason
    return reason


def find_unreadable_images(paths: Iterable[str], num_threads: int | None = None) -> dict[str, str]:
    """Check many images (in threads: Pillow releases the GIL while decoding).

    Args:
        paths: image files.
        num_threads: worker threads; ``None`` picks ``min(8, cpu count)``.

    Returns:
        ``{path: reason}`` for every image that cannot be decoded, in input order.
    """
    paths = list(dict.fromkeys(paths))
    if num_threads is None:
        num_threads = min(8, os.cpu_count() or 1)
    if len(paths) < 64 or num_threads <= 1:
        reasons = [check_image(p) for p in paths]
    else:
        with ThreadPoolExecutor(max_workers=num_threads) as ex:
            reasons = list(ex.map(check_image, paths, chunksize=32))
    return {p: r for p, r in zip(paths, reasons) if r is not None}


def parse_market_style_dir(
    dir_path: str,
    *,
    num_cams: int,
    dataset: str,
    extensions: Sequence[str] = (".jpg",),
) -> list[Item]:
    """Parse a folder of ``<pid>_c<cam>...`` images (Market-1501 naming).

    This one helper reads Market-1501, DukeMTMC-reID, CUHK03-NP and the synthetic domains.
    Images with pid ``-1`` (Market's junk boxes) are dropped; pid ``0`` (distractors) is kept.
    Camera numbers ``1..num_cams`` become ``0..num_cams-1``. Files with another extension
    (``Thumbs.db``, ``.txt``, ...) and hidden files (``._*`` from macOS) are ignored.

    Args:
        dir_path: the folder (not searched recursively).
        num_cams: number of cameras of the data set, for the range check.
        dataset: data-set name used in messages.
        extensions: accepted file extensions (lower case, with the dot).

    Returns:
        ``(img_path, pid, camid)`` tuples sorted by file name.

    Raises:
        DatasetNotFoundError: the folder does not exist.
        DatasetFormatError: a camera number lies outside ``1..num_cams``.
        EmptySplitError: no image in the folder follows the naming.
    """
    if not os.path.isdir(dir_path):
        raise DatasetNotFoundError(f"{dataset}: folder not found: {dir_path}")
    exts = tuple(e.lower() for e in extensions)
    items: list[Item] = []
    unmatched: list[str] = []
    ignored = 0
    for fname in sorted(os.listdir(dir_path)):
        if fname.startswith(".") or not fname.lower().endswith(exts):
            ignored += 1
            continue
        m = MARKET_NAME_PATTERN.match(fname)
        if m is None or not re.fullmatch(r"-1|\d+", m.group(1)):  # e.g. "holiday", "12-3"
            unmatched.append(fname)
            continue
        pid, cam = int(m.group(1)), int(m.group(2))
        if pid == -1:
            continue
        path = os.path.join(dir_path, fname)
        if not 1 <= cam <= num_cams:
            raise DatasetFormatError(
                f"{dataset}: camera c{cam} in '{path}' is outside c1..c{num_cams}. "
                f"{dataset} has {num_cams} cameras; check that this folder holds {dataset} and "
                "that file names follow <pid>_c<camera>..."
            )
        items.append((path, pid, cam - 1))
    if ignored:
        logger.debug("%s: ignored %d non-image files in %s", dataset, ignored, dir_path)
    if unmatched:
        logger.warning(
            "%s: skipped %d files in %s whose names do not follow <pid>_c<camera>_..., e.g. %s",
            dataset, len(unmatched), dir_path, ", ".join(unmatched[:3]),
        )
    if not items:
        raise EmptySplitError(
            f"{dataset}: no images named <pid>_c<camera>...{'/'.join(exts)} in {dir_path} "
            f"({ignored} other files ignored, {len(unmatched)} badly named)."
        )
    return items


class ReIDDataset:
    """Base of every registered data set: three lists of ``(img_path, pid, camid)``.

    A subclass finds its folder with :meth:`locate`, checks its sub-folders with
    :meth:`require`, parses its files and calls ``super().__init__(train, query, gallery,
    ...)``, which removes unreadable images, relabels the train pids to ``0..K-1``, checks that
    no required split is empty and logs a summary table.

    Class attributes a subclass sets:
        folder_names: folders under the data root that may hold the data set (first match wins).
        expected_tree: the expected layout, shown when the data set is missing.
        url: where to get the data set.
        required_splits: splits that must hold at least one image.
        name_parameter: the constructor option that a registry name's ``@value`` suffix sets
            (``"strength"`` for ``"SyntheticLocal@0.5"``), or ``None`` when the data set takes
            no such suffix; ``name_parameter_type`` converts the text after the ``@``.
        num_eval_splits: how many standard train/test splits the data set has (GRID: 10),
            over which results are reported as a mean; 1 for a single fixed split.
        eval_split_option: the constructor option that selects the split (``"split_id"``),
            or ``None`` when ``num_eval_splits`` is 1.

    Attributes:
        root: the data root.
        dataset_dir: the data set's own folder.
        train: ``(img_path, pid, camid)`` with pids ``0..num_train_pids-1``.
        query: ``(img_path, pid, camid)`` with the original pids.
        gallery: ``(img_path, pid, camid)`` with the original pids (0 for distractors).
        train_pid_map: original train pid -> relabelled pid.
        skipped: ``(path, reason)`` of the unreadable images that were left out.
    """

    folder_names: tuple[str, ...] = ()
    expected_tree: str = ""
    url: str = ""
    required_splits: tuple[str, ...] = ("train", "query", "gallery")
    name_parameter: str | None = None
    name_parameter_type: Callable[[str], Any] = float
    num_eval_splits: int = 1
    eval_split_option: str | None = None

    root: str
    dataset_dir: str

    def __init__(
        self,
        train: Sequence[Item],
        query: Sequence[Item],
        gallery: Sequence[Item],
        *,
        verify_images: bool = True,
        strict: bool = False,
        relabel: bool = True,
    ):
        """Finish building the data set from the parsed lists.

        Args:
            train: training items (pids as in the files).
            query: query items.
            gallery: gallery items.
            verify_images: decode every image once and leave out those that fail (logged
                with path and reason).
            strict: raise :class:`UnreadableImageError` naming every unreadable image instead
                of leaving them out.
            relabel: map the train pids to ``0..K-1`` in sorted order.

        Raises:
            UnreadableImageError: ``strict`` and some image cannot be decoded.
            EmptySplitError: a required split holds no (readable) image.
        """
        splits = {"train": list(train), "query": list(query), "gallery": list(gallery)}
        self.skipped: list[tuple[str, str]] = []
        if verify_images:
            splits = self._drop_unreadable(splits, strict)
        for split in self.required_splits:
            if not splits[split]:
                raise EmptySplitError(
                    f"{self.name}: the {split} split is empty"
                    + (" after leaving out unreadable images" if self.skipped else "")
                    + f" (data set folder: {getattr(self, 'dataset_dir', '?')})."
                )
        self.train_pid_map: dict[int, int] = {}
        if relabel:
            train_pids = sorted({it[1] for it in splits["train"]})
            self.train_pid_map = {p: i for i, p in enumerate(train_pids)}
            splits["train"] = [(p, self.train_pid_map[pid], c) for p, pid, c in splits["train"]]
        self.train: list[Item] = splits["train"]
        self.query: list[Item] = splits["query"]
        self.gallery: list[Item] = splits["gallery"]
        logger.info("\n%s", self.summary())

    @property
    def name(self) -> str:
        """The data set's registry name (its class name)."""
        return type(self).__name__

    # -- statistics --------------------------------------------------------------------------
    @staticmethod
    def _stats(items: Sequence[Item]) -> tuple[int, int, int]:
        return len({it[1] for it in items}), len(items), len({it[2] for it in items})

    @property
    def num_train_pids(self) -> int:
        """Number of training identities."""
        return self._stats(self.train)[0]

    @property
    def num_train_cams(self) -> int:
        """Number of cameras in the training split."""
        return self._stats(self.train)[2]

    @property
    def num_train_imgs(self) -> int:
        """Number of training images."""
        return len(self.train)

    @property
    def num_query_pids(self) -> int:
        """Number of query identities."""
        return self._stats(self.query)[0]

    @property
    def num_gallery_pids(self) -> int:
        """Number of gallery identities (distractor pid 0 counts as one)."""
        return self._stats(self.gallery)[0]

    def summary(self) -> str:
        """Return a table of identities, images and cameras per split."""
        lines = [
            f"=> {self.name} ({getattr(self, 'dataset_dir', '')})",
            "  subset   | # ids | # images | # cameras",
            "  ---------+-------+----------+----------",
        ]
        for split in ("train", "query", "gallery"):
            n_ids, n_imgs, n_cams = self._stats(getattr(self, split))
            lines.append(f"  {split:<8} | {n_ids:5d} | {n_imgs:8d} | {n_cams:9d}")
        if self.skipped:
            lines.append(f"  ({len(self.skipped)} unreadable images left out)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"{self.name}(train={len(self.train)} imgs/{self.num_train_pids} ids, "
            f"query={len(self.query)}, gallery={len(self.gallery)})"
        )

    # -- finding the files -------------------------------------------------------------------
    @classmethod
    def missing_message(cls, root: str, missing: Sequence[str]) -> str:
        """Build the message of a :class:`DatasetNotFoundError`.

        Args:
            root: the data root that was searched.
            missing: the paths that were looked for and not found.

        Returns:
            Text with the missing paths, the expected tree, where to get the data and how to
            set the root.
        """
        tree = cls.expected_tree.strip("\n")
        parts = [
            f"Data set '{cls.__name__}' not found under the data root {root}.",
            "Missing: " + ", ".join(missing),
            "Expected tree:",
            "\n".join("  " + line for line in tree.splitlines()) if tree else "  (see docs)",
        ]
        if cls.url:
            parts.append(f"Get it from: {cls.url}")
        parts.append(
            f"Put it under the data root, or point DATASETS.ROOT (or ${ENV_ROOT}) at the folder "
            "that holds it. See datasets/README.md."
        )
        return "\n".join(parts)

    @classmethod
    def locate(cls, root: str | None) -> tuple[str, str]:
        """Find the data set's folder under the data root.

        Args:
            root: the data root (``None`` for the default, see :func:`resolve_root`).

        Returns:
            ``(root, dataset_dir)``, both absolute.

        Raises:
            DatasetNotFoundError: none of ``folder_names`` exists under the root.
        """
        root = resolve_root(root)
        for folder in cls.folder_names:
            path = os.path.join(root, folder)
            if os.path.isdir(path):
                return root, path
        raise DatasetNotFoundError(
            cls.missing_message(root, [os.path.join(root, f) for f in cls.folder_names])
        )

    def require(self, *paths: str) -> None:
        """Check that files or folders exist.

        Args:
            *paths: paths that the data set needs.

        Raises:
            DatasetNotFoundError: some are missing (all of them are named).
        """
        missing = [p for p in paths if not os.path.exists(p)]
        if missing:
            raise DatasetNotFoundError(self.missing_message(self.root, missing))

    # -- unreadable images -------------------------------------------------------------------
    def _drop_unreadable(
        self, splits: dict[str, list[Item]], strict: bool
    ) -> dict[str, list[Item]]:
        bad = find_unreadable_images(it[0] for items in splits.values() for it in items)
        if not bad:
            return splits
        self.skipped = sorted(bad.items())
        listing = "\n".join(f"  {p}: {r}" for p, r in self.skipped)
        if strict:
            raise UnreadableImageError(
                f"{self.name}: {len(bad)} unreadable image(s) (strict mode, DATASETS.STRICT):\n"
                f"{listing}\nReplace or delete them, or set DATASETS.STRICT False to skip them.",
                self.skipped,
            )
        logger.warning(
            "%s: skipping %d unreadable image(s) (set DATASETS.STRICT True to fail instead):\n%s",
            self.name, len(bad), listing,
        )
        return {k: [it for it in v if it[0] not in bad] for k, v in splits.items()}
