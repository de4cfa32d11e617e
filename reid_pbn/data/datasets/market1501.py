"""Market-1501 and the shared reader of every data set stored in Market-1501's layout."""

from __future__ import annotations

import os

from .bases import EmptySplitError, Item, ReIDDataset, parse_market_style_dir
from .registry import register_dataset

__all__ = ["Market1501", "MarketStyleDataset"]


class MarketStyleDataset(ReIDDataset):
    """A data set in Market-1501's layout: three folders of ``<pid>_c<cam>...`` images.

    Subclasses set ``folder_names``, ``num_cams`` and, where they differ, ``extensions`` and
    ``split_dirs``; the parsing itself is :func:`~.bases.parse_market_style_dir`, shared by
    Market-1501, DukeMTMC-reID, CUHK03-NP and the synthetic domains.

    Class attributes:
        num_cams: number of cameras (camera numbers in file names run 1..num_cams).
        extensions: image file extensions.
        split_dirs: sub-folder of each split.
    """

    num_cams: int = 6
    extensions: tuple[str, ...] = (".jpg",)
    split_dirs: dict[str, str] = {
        "train": "bounding_box_train",
        "query": "query",
        "gallery": "bounding_box_test",
    }

    def __init__(
        self, root: str | None = None, *, verify_images: bool = True, strict: bool = False
    ):
        """Parse the data set.

        Args:
            root: data root (``None``: ``$REID_PBN_DATASETS``, else ``datasets/``).
            verify_images: decode every image once and leave out unreadable ones (logged).
            strict: fail on unreadable images instead of leaving them out.

        Raises:
            DatasetNotFoundError: the folder or one of its split folders is missing.
            DatasetFormatError: a camera number is out of range.
            EmptySplitError: a split holds no image.
        """
        self.root, self.dataset_dir = self.locate(root)
        self._parse_and_init(self.dataset_dir, verify_images=verify_images, strict=strict)

    def _parse_and_init(self, base_dir: str, *, verify_images: bool, strict: bool) -> None:
        dirs = {split: os.path.join(base_dir, sub) for split, sub in self.split_dirs.items()}
        self.require(*dirs.values())
        parsed: dict[str, list[Item]] = {split: self._parse_split(split, d)
                                         for split, d in dirs.items()}
        super().__init__(
            parsed["train"], parsed["query"], parsed["gallery"],
            verify_images=verify_images, strict=strict,
        )

    def _parse_split(self, split: str, dir_path: str) -> list[Item]:
        try:
            return parse_market_style_dir(
                dir_path, num_cams=self.num_cams, dataset=self.name, extensions=self.extensions
            )
        except EmptySplitError:
            # A split the data set does not promise (``required_splits``) may be an empty
            # folder, e.g. the train folder of a target-only synthetic shift family.
            if split in self.required_splits:
                raise
            return []


@register_dataset
class Market1501(MarketStyleDataset):
    """Market-1501 (Zheng et al., ICCV 2015): 1,501 identities, 6 cameras.

    Train 751 ids / 12,936 images; query 750 ids / 3,368 images; gallery 19,732 images
    including distractors (pid 0, kept as negatives); junk boxes (pid -1) are dropped.
    """

    folder_names = (
        "Market-1501-v15.09.15",
        "Market-1501",
        "market1501/Market-1501-v15.09.15",
        "market1501",
    )
    num_cams = 6
    url = "http://www.liangzheng.org/Project/project_reid.html (Market-1501-v15.09.15.zip)"
    expected_tree = """
<root>/
  Market-1501-v15.09.15/        (or Market-1501/)
    bounding_box_train/         0002_c1s1_000451_03.jpg  (<pid>_c<cam>s<seq>_<frame>_<box>.jpg)
    query/                      0001_c1s1_001051_00.jpg
    bounding_box_test/          0000_c1s1_000151_01.jpg, -1_c1s1_000401_03.jpg, ...
"""
