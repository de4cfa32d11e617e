"""Build GRID's 10 standard splits (splits.json) from features_and_partitions.mat.

GRID does this by itself on first use; run this script to check a download or to write the
splits where the data folder is read-only at training time.

Example:
    python datasets/prepare_grid.py --root datasets
"""

from __future__ import annotations

import argparse
import logging

from reid_pbn.data import build_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="", help="data root holding underground_reid/ "
                        "(default: $REID_PBN_DATASETS, else ./datasets)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for split_id in range(10):
        ds = build_dataset("GRID", root=args.root or None, split_id=split_id,
                           verify_images=split_id == 0)
        logging.info("split %d: %d train / %d query / %d gallery images", split_id,
                     len(ds.train), len(ds.query), len(ds.gallery))


if __name__ == "__main__":
    main()
