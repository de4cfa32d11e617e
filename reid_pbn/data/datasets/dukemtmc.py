"""DukeMTMC-reID."""

from __future__ import annotations

from .market1501 import MarketStyleDataset
from .registry import register_dataset

__all__ = ["DukeMTMC"]


@register_dataset
class DukeMTMC(MarketStyleDataset):
    """DukeMTMC-reID (Zheng et al., ICCV 2017): 1,404 identities plus distractors, 8 cameras.

    Train 702 ids / 16,522 images; query 702 ids / 2,228 images; gallery 17,661 images. File
    names are ``<pid>_c<cam>_f<frame>.jpg``. The data set was withdrawn by its creators in
    2019; use it only where your copy's terms allow.
    """

    folder_names = ("DukeMTMC-reID", "dukemtmcreid/DukeMTMC-reID", "dukemtmc-reid/DukeMTMC-reID")
    num_cams = 8
    url = (
        "https://github.com/layumi/DukeMTMC-reID_evaluation (withdrawn by its creators; "
        "DukeMTMC-reID.zip from an existing copy)"
    )
    expected_tree = """
<root>/
  DukeMTMC-reID/
    bounding_box_train/         0001_c2_f0046182.jpg  (<pid>_c<cam>_f<frame>.jpg)
    query/                      0005_c2_f0046985.jpg
    bounding_box_test/          0002_c1_f0044158.jpg
"""
