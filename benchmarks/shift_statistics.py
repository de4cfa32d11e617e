"""How far each synthetic shift family moves whole-image vs. patch statistics, per strength.

Generates SyntheticA and the shift families (SyntheticGlobal, SyntheticLocal) at each
strength with the same sizes and seed, pairs every shifted query/gallery image with
SyntheticA's file of the same name (the same rendering, unshifted) and prints, averaged over
images, the mean absolute change of (see ``reid_pbn.data.datasets.shift_statistics``):

* the whole-image per-channel mean and standard deviation ("image");
* the per-channel means and standard deviations of a 4 x 4 grid of patches ("patch");
* the patch statistics after the shifted image's whole-image mean and standard deviation
  have been matched to the reference's ("local": what a whole-image normalization leaves);

and the ratio local / image (sum of mean and std changes), with each tree's generation time.

Usage:
    python benchmarks/shift_statistics.py [--num-ids 200] [--size 128 64]
        [--strengths 0.33 0.67 1.0] [--figure docs/img/shift_families.png]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from PIL import Image

from reid_pbn.data.datasets import generate_domain, generate_shifted, shift_statistics
from reid_pbn.data.synthetic import SHIFT_FAMILIES, SOURCE

SPLITS = ("query", "bounding_box_test")
KEYS = ("global_mean", "global_std", "patch_mean", "patch_std", "local_mean", "local_std")


def _files(tree: str) -> dict[str, str]:
    return {f"{split}/{f}": os.path.join(tree, split, f)
            for split in SPLITS for f in sorted(os.listdir(os.path.join(tree, split)))}


def _load(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="", help="data root (default: a temporary folder)")
    parser.add_argument("--num-ids", type=int, default=200, help="identities of SyntheticA")
    parser.add_argument("--num-cams", type=int, default=4, help="cameras")
    parser.add_argument("--imgs-per-cam", type=int, default=3, help="images per id and camera")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 64), metavar=("H", "W"))
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    parser.add_argument("--grid", type=int, default=4, help="patches per side")
    parser.add_argument("--strengths", type=float, nargs="+", default=(0.33, 0.67, 1.0))
    parser.add_argument("--figure", default="",
                        help="also write a PNG of a few query images at strength 0 and each "
                        "strength, per family")
    args = parser.parse_args()
    root = args.root or tempfile.mkdtemp(prefix="shift_statistics-")
    kw = {"num_ids": args.num_ids, "num_cams": args.num_cams,
          "imgs_per_cam": args.imgs_per_cam, "size": tuple(args.size), "seed": args.seed}
    t0 = time.perf_counter()
    reference = _files(generate_domain(root, SOURCE, **kw))
    print(f"{SOURCE}: {len(reference)} query + gallery images, generated (whole domain) in "
          f"{time.perf_counter() - t0:.1f} s; data root {root}\n")
    ref_pixels = {k: _load(p) for k, p in reference.items()}
    head = ("| family | strength | image mean | image std | patch mean | patch std "
            "| local mean | local std | local / image | seconds |")
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    trees = {}
    for family in SHIFT_FAMILIES:
        for strength in args.strengths:
            t0 = time.perf_counter()
            tree = generate_shifted(root, family, strength, **kw)
            seconds = time.perf_counter() - t0
            trees[family, strength] = tree
            shifted = _files(tree)
            if shifted.keys() != reference.keys():
                raise SystemExit(f"{tree} does not hold {SOURCE}'s query/gallery file names")
            stats = [shift_statistics(ref_pixels[k], _load(p), args.grid)
                     for k, p in shifted.items()]
            m = {key: float(np.mean([s[key] for s in stats])) for key in KEYS}
            ratio = (m["local_mean"] + m["local_std"]) / max(m["global_mean"] + m["global_std"],
                                                             1e-9)
            cells = " | ".join(f"{m[key]:5.1f}" for key in KEYS)
            print(f"| {family} | {strength:.2f} | {cells} | {ratio:5.2f} | {seconds:4.1f} |")
    print("\nMean absolute change in grey levels (0..255), per channel, averaged over images "
          f"(and over the {args.grid} x {args.grid} patches).")
    if args.figure:
        _figure(args.figure, reference, trees, args.strengths)
        print(f"Figure: {args.figure}")


def _figure(path: str, reference: dict[str, str], trees: dict, strengths) -> None:
    from matplotlib.figure import Figure

    # A few query images of different identities, the same for every family and strength.
    names = sorted(k for k in reference if k.startswith("query/"))
    picks = names[:: max(len(names) // 3, 1)][:3]
    families = list(SHIFT_FAMILIES)
    cols = 1 + len(strengths)
    fig = Figure(figsize=(1.1 * cols * len(families) + 0.4, 2.3 * len(picks) + 0.5))
    grid = fig.add_gridspec(len(picks), cols * len(families), wspace=0.06, hspace=0.08)
    for f, family in enumerate(families):
        for r, name in enumerate(picks):
            paths = [reference[name]] + [os.path.join(trees[family, s], name) for s in strengths]
            for c, p in enumerate(paths):
                ax = fig.add_subplot(grid[r, f * cols + c])
                ax.imshow(_load(p))
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    label = "0" if c == 0 else f"{strengths[c - 1]:g}"
                    ax.set_title(f"{family}\n@{label}" if c == 0 else f"@{label}", fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    main()
