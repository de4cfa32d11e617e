"""MSMT17 (V1 or V2), read from its list files."""

from __future__ import annotations

import os

from .bases import DatasetFormatError, Item, ReIDDataset
from .registry import register_dataset

__all__ = ["MSMT17"]

# Release folder -> (train image folder, test image folder); V2 has the faces blurred.
_VERSIONS = {
    "MSMT17_V1": ("train", "test"),
    "MSMT17_V2": ("mask_train_v2", "mask_test_v2"),
}


@register_dataset
class MSMT17(ReIDDataset):
    """MSMT17 (Wei et al., CVPR 2018): 4,101 identities, 15 cameras.

    Train 1,041 ids / 32,621 images (``list_train.txt``; ``list_val.txt`` holds a further
    2,000-odd of the same ids, added with ``combine_val``); query 3,060 ids / 11,659 images;
    gallery 82,161 images. Each list line is ``<relative path> <pid>``; the camera is the third
    ``_`` field of the file name (``0000_000_01_0303morning_0015_0.jpg`` -> camera 1).
    """

    folder_names = (
        "MSMT17_V1", "MSMT17_V2", "msmt17/MSMT17_V1", "msmt17/MSMT17_V2", "MSMT17/MSMT17_V1",
        "MSMT17/MSMT17_V2",
    )
    num_cams = 15
    url = "http://www.pkuvmc.com/publications/msmt17.html (request it from the authors)"
    expected_tree = """
<root>/
  MSMT17_V1/                    (or MSMT17_V2/ with mask_train_v2/ and mask_test_v2/)
    train/0000/0000_000_01_0303morning_0015_0.jpg
    test/0000/0000_000_01_0303morning_0008_0.jpg
    list_train.txt              0000/0000_000_01_0303morning_0015_0.jpg 0
    list_val.txt
    list_query.txt
    list_gallery.txt
"""

    def __init__(
        self,
        root: str | None = None,
        *,
        combine_val: bool = False,
        verify_images: bool = True,
        strict: bool = False,
    ):
        """Parse MSMT17 from its list files.

        Args:
            root: data root (``None``: ``$REID_PBN_DATASETS``, else ``datasets/``).
            combine_val: add ``list_val.txt`` to the training split (published results on
                MSMT17 usually leave it out).
            verify_images: decode every image once and leave out unreadable ones (logged).
            strict: fail on unreadable images instead of leaving them out.

        Raises:
            DatasetNotFoundError: folders or list files are missing.
            DatasetFormatError: a list line is malformed or a camera is out of range.
        """
        self.root, self.dataset_dir = self.locate(root)
        train_sub, test_sub = _VERSIONS[os.path.basename(self.dataset_dir)]
        train_dir = os.path.join(self.dataset_dir, train_sub)
        test_dir = os.path.join(self.dataset_dir, test_sub)
        lists = {
            s: os.path.join(self.dataset_dir, f"list_{s}.txt")
            for s in ("train", "val", "query", "gallery")
        }
        needed = [train_dir, test_dir, lists["train"], lists["query"], lists["gallery"]]
        if combine_val:
            needed.append(lists["val"])
        self.require(*needed)
        train = self._read_list(lists["train"], train_dir)
        if combine_val:
            train += self._read_list(lists["val"], train_dir)
        query = self._read_list(lists["query"], test_dir)
        gallery = self._read_list(lists["gallery"], test_dir)
        super().__init__(train, query, gallery, verify_images=verify_images, strict=strict)

    def _read_list(self, list_path: str, img_dir: str) -> list[Item]:
        items: list[Item] = []
        with open(list_path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                fields = line.split()
                try:
                    rel, pid = fields[0], int(fields[1])
                    cam = int(os.path.basename(rel).split("_")[2])
                except (IndexError, ValueError) as e:
                    raise DatasetFormatError(
                        f"MSMT17: {list_path}:{lineno}: expected '<pid>/<pid>_<idx>_<cam>_... "
                        f"<pid>', got {line!r}"
                    ) from e
                if not 1 <= cam <= self.num_cams:
                    raise DatasetFormatError(
                        f"MSMT17: {list_path}:{lineno}: camera {cam} outside 1..{self.num_cams}"
                    )
                items.append((os.path.join(img_dir, rel), pid, cam - 1))
        return items
