"""Write the synthetic domains in Market-1501's layout (they are also written on first use).

Example:
    python datasets/prepare_synthetic.py --num-ids 240 --domains SyntheticA SyntheticB
"""

from __future__ import annotations

import argparse
import logging
import time

from reid_pbn.data.datasets.bases import resolve_root
from reid_pbn.data.synthetic import DOMAIN_STYLES, generate_domain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="", help="data root (default: $REID_PBN_DATASETS, "
                        "else ./datasets)")
    parser.add_argument("--domains", nargs="+", default=list(DOMAIN_STYLES),
                        choices=list(DOMAIN_STYLES), help="domains to write")
    parser.add_argument("--num-ids", type=int, default=120, help="identities per domain")
    parser.add_argument("--num-cams", type=int, default=4, help="cameras per domain (2..9)")
    parser.add_argument("--imgs-per-cam", type=int, default=3,
                        help="images per identity and camera")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 64), metavar=("H", "W"),
                        help="image height and width")
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    parser.add_argument("--force", action="store_true", help="rewrite even if up to date")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = resolve_root(args.root)
    for name in args.domains:
        t0 = time.perf_counter()
        path = generate_domain(root, name, num_ids=args.num_ids, num_cams=args.num_cams,
                               imgs_per_cam=args.imgs_per_cam, size=tuple(args.size),
                               seed=args.seed, force=args.force)
        logging.info("%s ready in %s (%.1f s)", name, path, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
