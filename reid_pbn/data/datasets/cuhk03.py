"""CUHK03 under the new protocol (CUHK03-NP, Zhong et al. CVPR 2017)."""

from __future__ import annotations

import os

from .market1501 import MarketStyleDataset
from .registry import register_dataset

__all__ = ["CUHK03"]


@register_dataset
class CUHK03(MarketStyleDataset):
    """CUHK03-NP: 767 train / 700 test identities, 2 cameras, ``labeled`` or ``detected`` boxes.

    The release stores each subset in Market-1501's layout with ``<pid>_c<cam>_<idx>.png``
    names. Detected: 7,365 train / 1,400 query / 5,332 gallery images; labeled: 7,368 / 1,400
    / 5,328.
    """

    folder_names = ("cuhk03-np", "CUHK03-NP", "cuhk03/cuhk03-np")
    num_cams = 2
    extensions = (".png", ".jpg")
    url = "https://github.com/zhunzhong07/person-re-ranking/tree/master/CUHK03-NP"
    expected_tree = """
<root>/
  cuhk03-np/
    detected/
      bounding_box_train/       0001_c1_1.png  (<pid>_c<cam>_<idx>.png)
      query/
      bounding_box_test/
    labeled/
      bounding_box_train/
      query/
      bounding_box_test/
"""

    def __init__(
        self,
        root: str | None = None,
        *,
        subset: str = "detected",
        verify_images: bool = True,
        strict: bool = False,
    ):
        """Parse one subset of CUHK03-NP.

        Args:
            root: data root (``None``: ``$REID_PBN_DATASETS``, else ``datasets/``).
            subset: ``"detected"`` (DPM boxes, the usual default) or ``"labeled"`` (hand-drawn
                boxes).
            verify_images: decode every image once and leave out unreadable ones (logged).
            strict: fail on unreadable images instead of leaving them out.

        Raises:
            ValueError: unknown subset.
            DatasetNotFoundError: the folders are missing.
        """
        if subset not in ("detected", "labeled"):
            raise ValueError(f"CUHK03: subset must be 'detected' or 'labeled', got {subset!r}")
        self.subset = subset
        self.root, self.dataset_dir = self.locate(root)
        self._parse_and_init(
            os.path.join(self.dataset_dir, subset), verify_images=verify_images, strict=strict
        )
