"""A user's own data: a folder of images plus CSV list files of ``path,pid,camid[,split]``."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence

from .bases import (
    DatasetFormatError,
    DatasetNotFoundError,
    EmptySplitError,
    Item,
    ReIDDataset,
    resolve_root,
)
from .registry import register_dataset

__all__ = ["CustomDataset"]

logger = logging.getLogger(__name__)

_SPLITS = ("train", "query", "gallery")
_EXTRA = "\0extra"  # csv.DictReader's key for values beyond the header's columns


@register_dataset
class CustomDataset(ReIDDataset):
    """Your own data: a folder of images and CSV files saying who is who.

    Two ways to list the images, both CSV files with a header row:

    * one file, ``list.csv``, with columns ``path,pid,camid,split`` where ``split`` is
      ``train``, ``query`` or ``gallery``;
    * or one file per split, ``train.csv``, ``query.csv``, ``gallery.csv``, with columns
      ``path,pid,camid`` (missing files mean empty splits).

    The files may start with a UTF-8 byte-order mark (spreadsheet exports). Images listed
    outside the data set's folder (absolute paths, ``..``) are read as listed, with a warning;
    an image listed as both query and gallery is kept, with a warning.

    ``path`` is relative to the folder of the CSV file (or absolute); ``pid`` is an integer
    identity (``-1`` marks junk images, which are dropped; ``0`` may be used for distractors);
    ``camid`` is a 0-based integer camera id (evaluation ignores gallery images of the query's
    identity seen by the query's camera, so give each camera its own id). Blank lines and lines
    starting with ``#`` are ignored. Training pids are relabelled to ``0..K-1``; query and
    gallery keep theirs. A data set may hold only a train split (train on it, test elsewhere)
    or only query and gallery (evaluate on it).
    """

    folder_names = ("custom",)
    expected_tree = """
<root>/
  custom/                       (or the folder given as dataset_dir=...)
    list.csv                    path,pid,camid,split
                                images/alice_01.jpg,1,0,train
                                images/bob_07.jpg,2,1,query
    images/...
  -- or, instead of list.csv --
    train.csv, query.csv, gallery.csv   path,pid,camid
"""

    def __init__(
        self,
        root: str | None = None,
        *,
        dataset_dir: str = "custom",
        list_file: str = "list.csv",
        num_cams: int | None = None,
        verify_images: bool = True,
        strict: bool = False,
    ):
        """Read the list files.

        Args:
            root: data root (``None``: ``$REID_PBN_DATASETS``, else ``datasets/``).
            dataset_dir: the data set's folder, relative to the root or absolute.
            list_file: name of the single list file (with a ``split`` column); when it does not
                exist, ``train.csv``/``query.csv``/``gallery.csv`` are read.
            num_cams: when given, camera ids must lie in ``0..num_cams-1``.
            verify_images: decode every image once and leave out unreadable ones (logged).
            strict: fail on unreadable images instead of leaving them out.

        Raises:
            DatasetNotFoundError: the folder or every list file is missing.
            DatasetFormatError: a row is malformed (the message names file and line).
            EmptySplitError: no split holds any image.
        """
        self.root = resolve_root(root)
        self.dataset_dir = os.path.join(self.root, os.path.expanduser(dataset_dir))
        self.num_cams = num_cams
        single = os.path.join(self.dataset_dir, list_file)
        per_split = {s: os.path.join(self.dataset_dir, f"{s}.csv") for s in _SPLITS}
        splits: dict[str, list[Item]] = {s: [] for s in _SPLITS}
        if os.path.isfile(single):
            for split, item in self._read_csv(single, with_split=True):
                splits[split].append(item)
        elif any(os.path.isfile(p) for p in per_split.values()):
            for s, p in per_split.items():
                if os.path.isfile(p):
                    splits[s] = [item for _, item in self._read_csv(p, with_split=False)]
        else:
            raise DatasetNotFoundError(
                self.missing_message(self.root, [single, *per_split.values()])
            )
        if not any(splits.values()):
            raise EmptySplitError(
                f"CustomDataset: the list files in {self.dataset_dir} list no image."
            )
        self._warn_overlaps(splits)
        # Which splits are needed depends on the job (train here, evaluate elsewhere, or the
        # reverse); the loaders check the split they use.
        self.required_splits = ()
        super().__init__(
            splits["train"], splits["query"], splits["gallery"],
            verify_images=verify_images, strict=strict,
        )

    def _warn_overlaps(self, splits: dict[str, list[Item]]) -> None:
        """Warn about lists that are legal but usually mistakes (they are kept as given)."""
        both = {it[0] for it in splits["query"]} & {it[0] for it in splits["gallery"]}
        if both:
            logger.warning(
                "CustomDataset: %d image(s) are both query and gallery (e.g. %s); each such "
                "query finds itself at distance 0 unless its gallery copy has the same camera "
                "id, which the protocol then ignores", len(both), sorted(both)[0])
        root = os.path.realpath(self.dataset_dir)
        outside = [it[0] for items in splits.values() for it in items
                   if os.path.commonpath([root, os.path.realpath(it[0])]) != root]
        if outside:
            logger.warning(
                "CustomDataset: %d listed image(s) lie outside %s (e.g. %s); they are read as "
                "listed. Check the list if it comes from someone else.", len(outside),
                self.dataset_dir, outside[0])

    def _read_csv(self, path: str, *, with_split: bool) -> list[tuple[str, Item]]:
        needed: Sequence[str] = ("path", "pid", "camid", "split") if with_split else (
            "path", "pid", "camid")
        base = os.path.dirname(path)
        out: list[tuple[str, Item]] = []
        # utf-8-sig: spreadsheet programs start their CSV exports with a byte-order mark.
        with open(path, encoding="utf-8-sig", newline="") as f:
            lines = (ln for ln in f if ln.strip() and not ln.lstrip().startswith("#"))
            reader = csv.DictReader(lines, restkey=_EXTRA)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in needed if c not in header]
            if missing:
                raise DatasetFormatError(
                    f"CustomDataset: {path} needs a header row with columns {','.join(needed)}; "
                    f"missing {', '.join(missing)} (found {header})."
                )
            for row in reader:
                where = f"{path}:{reader.line_num}"
                if _EXTRA in row:
                    raise DatasetFormatError(
                        f"CustomDataset: {where}: {len(header) + len(row[_EXTRA])} values but "
                        f"the header names {len(header)} columns ({','.join(header)}); quote "
                        "paths that contain commas")
                row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
                try:
                    pid, cam = int(row["pid"]), int(row["camid"])
                except ValueError as e:
                    raise DatasetFormatError(
                        f"CustomDataset: {where}: pid and camid must be integers, got "
                        f"pid={row['pid']!r} camid={row['camid']!r}"
                    ) from e
                split = row["split"].lower() if with_split else ""
                if with_split and split not in _SPLITS:
                    raise DatasetFormatError(
                        f"CustomDataset: {where}: split must be train, query or gallery, got "
                        f"{row['split']!r}"
                    )
                if cam < 0 or (self.num_cams is not None and cam >= self.num_cams):
                    limit = f"0..{self.num_cams - 1}" if self.num_cams is not None else ">= 0"
                    raise DatasetFormatError(
                        f"CustomDataset: {where}: camid {cam} out of range ({limit}); camera "
                        "ids are 0-based integers."
                    )
                if pid == -1:
                    continue
                if pid < -1:
                    raise DatasetFormatError(
                        f"CustomDataset: {where}: pid {pid} is negative (only -1, junk, is allowed)"
                    )
                img = os.path.join(base, os.path.expanduser(row["path"]))
                out.append((split, (os.path.normpath(img), pid, cam)))
        return out
