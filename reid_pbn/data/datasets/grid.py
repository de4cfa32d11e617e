"""GRID (QMUL underground re-ID) with the 10 standard random splits."""

from __future__ import annotations

import json
import logging
import os
import tempfile

from .bases import DatasetFormatError, Item, ReIDDataset
from .registry import register_dataset

__all__ = ["GRID", "prepare_grid_splits"]

logger = logging.getLogger(__name__)

_NUM_SPLITS = 10
_NUM_CAMS = 8


def _parse_grid_dir(dir_path: str) -> list[tuple[str, int, int]]:
    """``(path, pid, 0-based camera)`` of a GRID folder (``0001_1_25004_....jpeg``), by name."""
    out = []
    for fname in sorted(os.listdir(dir_path)):
        if fname.startswith(".") or not fname.lower().endswith((".jpeg", ".jpg")):
            continue
        fields = fname.split("_")
        try:
            pid, cam = int(fields[0]), int(fields[1])
        except (IndexError, ValueError):
            logger.warning("GRID: skipping %s (name is not <pid>_<cam>_...)", fname)
            continue
        if not 1 <= cam <= _NUM_CAMS:
            raise DatasetFormatError(
                f"GRID: camera {cam} in '{os.path.join(dir_path, fname)}' is outside "
                f"1..{_NUM_CAMS}"
            )
        out.append((os.path.join(dir_path, fname), pid, cam - 1))
    return out


def prepare_grid_splits(data_dir: str) -> list[dict]:
    """Build the 10 standard GRID splits from ``features_and_partitions.mat``.

    Follows torchreid's protocol: split ``i`` trains on the 125 identities listed in
    ``trainIdxAll[i]`` (probe and gallery images of those ids, relabelled in list order); the
    other 125 identities' probe images are the query, and their gallery images together with
    the 775 distractors (pid 0) form the gallery.

    Args:
        data_dir: the ``underground_reid`` folder (``probe/``, ``gallery/``,
            ``features_and_partitions.mat``).

    Returns:
        10 dicts with ``train``, ``query``, ``gallery`` lists of ``[relative path, pid, camid]``
        (paths relative to ``data_dir``) and ``train_ids`` (the original pids of training).

    Raises:
        DatasetFormatError: the ``.mat`` file does not hold the expected partitions.
    """
    from scipy.io import loadmat  # scipy comes with scikit-learn; only GRID needs it

    mat_path = os.path.join(data_dir, "features_and_partitions.mat")
    try:
        parts = loadmat(mat_path)["trainIdxAll"][0]
        train_ids_all = [
            [int(i) for i in parts[s][0][0][2][0].tolist()] for s in range(_NUM_SPLITS)
        ]
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise DatasetFormatError(
            f"GRID: {mat_path} does not hold the 10 partitions 'trainIdxAll' "
            f"({type(e).__name__}: {e}); download underground_reid.zip again."
        ) from e
    probe = _parse_grid_dir(os.path.join(data_dir, "probe"))
    gallery = _parse_grid_dir(os.path.join(data_dir, "gallery"))
    splits = []
    for train_ids in train_ids_all:
        label = {pid: i for i, pid in enumerate(train_ids)}
        split: dict[str, list] = {"train": [], "query": [], "gallery": []}
        for items, test_split in ((probe, "query"), (gallery, "gallery")):
            for path, pid, cam in items:
                rel = os.path.relpath(path, data_dir)
                if pid in label:
                    split["train"].append([rel, label[pid], cam])
                else:
                    split[test_split].append([rel, pid, cam])
        split["train_ids"] = train_ids
        splits.append(split)
    return splits


@register_dataset
class GRID(ReIDDataset):
    """GRID (Loy et al., CVPR 2009): 250 paired identities + 775 distractors, 8 cameras.

    Each of the 10 splits trains on 125 ids (250 images) and tests on the other 125 (125
    query images, 900 gallery images including the distractors, pid 0). Results are usually
    averaged over the 10 splits. The splits are read from ``features_and_partitions.mat`` and
    cached in ``splits.json`` (paths relative to the data folder) next to it.
    """

    # The literature reports the mean over the 10 splits; inference evaluates them all when
    # GRID is only a target (see reid_pbn.data.build.eval_split_ids).
    num_eval_splits = _NUM_SPLITS
    eval_split_option = "split_id"
    folder_names = ("underground_reid", "grid/underground_reid", "GRID/underground_reid")
    url = (
        "http://personal.ie.cuhk.edu.hk/~ccloy/downloads_qmul_underground_reid.html "
        "(underground_reid.zip)"
    )
    expected_tree = """
<root>/
  underground_reid/             (or grid/underground_reid/)
    probe/                      0001_1_25004_107_32_130.jpeg  (<pid>_<cam>_...)
    gallery/                    0001_5_...jpeg, 0000_...jpeg (distractors)
    features_and_partitions.mat (the 10 train/test partitions)
"""

    def __init__(
        self,
        root: str | None = None,
        *,
        split_id: int = 0,
        verify_images: bool = True,
        strict: bool = False,
    ):
        """Read one of the 10 splits.

        Args:
            root: data root (``None``: ``$REID_PBN_DATASETS``, else ``datasets/``).
            split_id: which split, 0..9.
            verify_images: decode every image once and leave out unreadable ones (logged).
            strict: fail on unreadable images instead of leaving them out.

        Raises:
            ValueError: ``split_id`` outside 0..9.
            DatasetNotFoundError: folders or the ``.mat`` file are missing.
        """
        if not 0 <= int(split_id) < _NUM_SPLITS:
            raise ValueError(f"GRID: split_id must be in 0..{_NUM_SPLITS - 1}, got {split_id}")
        self.split_id = int(split_id)
        self.root, self.dataset_dir = self.locate(root)
        d = self.dataset_dir
        self.require(
            os.path.join(d, "probe"), os.path.join(d, "gallery"),
            os.path.join(d, "features_and_partitions.mat"),
        )
        split = self._load_splits()[self.split_id]

        def absolute(items: list) -> list[Item]:
            return [(os.path.join(d, p), int(pid), int(cam)) for p, pid, cam in items]

        super().__init__(
            absolute(split["train"]), absolute(split["query"]), absolute(split["gallery"]),
            verify_images=verify_images, strict=strict,
        )

    def _load_splits(self) -> list[dict]:
        path = os.path.join(self.dataset_dir, "splits.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                splits = json.load(f)
            if isinstance(splits, list) and len(splits) == _NUM_SPLITS:
                return splits
            logger.warning("GRID: %s is not a list of %d splits; rebuilding it", path, _NUM_SPLITS)
        splits = prepare_grid_splits(self.dataset_dir)
        try:
            # Write-then-rename so a crash or a second process never leaves half a file.
            fd, tmp = tempfile.mkstemp(dir=self.dataset_dir, suffix=".json.tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(splits, f)
            os.replace(tmp, path)
            logger.info("GRID: wrote the %d splits to %s", _NUM_SPLITS, path)
        except OSError as e:
            logger.info("GRID: could not cache splits in %s (%s); using them in memory", path, e)
        return splits
