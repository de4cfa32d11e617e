"""Print the BNE domain weights of images: which source domain each image resembles.

For a model trained with Batch Normalization Embeddings (MODEL.BACKBONE.NORM DSBN and several
DATASETS.NAMES), every image gets one weight per source domain (they sum to 1): the normalized
inverse Wasserstein distance between its instance statistics and each domain's BN statistics.

Example:
    python tools/domain_weights.py --config-file configs/MultiSource/synthetic_bne.yml \\
        --weights logs/multisource/synthetic_bne/model_final.pth img1.jpg img2.jpg
    python tools/domain_weights.py --config-file ... --weights ... --folder some/images/
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

import torch

from reid_pbn import FeatureExtractor
from reid_pbn.data.datasets.bases import UnreadableImageError
from reid_pbn.engine import (
    ToolError,
    add_weights_arguments,
    default_argument_parser,
    default_setup,
    tool_main,
)

_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")


def build_parser() -> argparse.ArgumentParser:
    """The shared parser of reid_pbn tools plus this tool's flags (also used by ``--help``)."""
    parser = default_argument_parser(__doc__, training=False, config_required=True)
    add_weights_arguments(parser, required=True)
    parser.add_argument("--folder", help="Also take every image in this folder.")
    parser.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda[:N]'.")
    parser.add_argument("images", nargs="*", metavar="IMAGE",
                        help="Image files (trailing KEY VALUE overrides may follow).")
    return parser


def domain_weights_of(extractor: FeatureExtractor, paths: list[str]) -> torch.Tensor:
    """(N, D) BNE domain weights of the images at ``paths``.

    Args:
        extractor: a feature extractor whose model has BNE (several DSBN domains).
        paths: image files.

    Returns:
        The weights, one row per image.

    Raises:
        ToolError: the model has no BNE domain paths.
    """
    model = extractor.model
    if getattr(model, "num_domains", 1) < 2:
        raise ToolError("This model has no BNE domain paths (needs MODEL.BACKBONE.NORM DSBN "
                        "trained on several DATASETS.NAMES).")
    rows = []
    with torch.no_grad():
        for start in range(0, len(paths), extractor.batch_size):
            x = extractor.preprocess(paths[start:start + extractor.batch_size])
            model(x.to(extractor.device))
            rows.append(model.last_domain_weights.cpu())
    return torch.cat(rows)


def run(args: argparse.Namespace) -> None:
    """Print one row of domain weights per image, and their mean.

    Args:
        args: parsed arguments of :func:`build_parser`.
    """
    # Prints a table: nothing is written, least of all into the training run's OUTPUT_DIR.
    cfg = default_setup(args, write_files=False)
    paths = list(args.images)
    if args.folder:
        if not os.path.isdir(args.folder):
            raise ToolError(f"Image folder not found: {args.folder}")
        paths += sorted(p for p in glob.glob(os.path.join(args.folder, "*"))
                        if p.lower().endswith(_IMAGE_EXTS))
    if not paths:
        raise ToolError("No images: give image files or --folder DIR")
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise UnreadableImageError(f"{len(missing)} image file(s) not found: "
                                   + ", ".join(missing[:5]))
    fe = FeatureExtractor(cfg=cfg, weights=cfg.MODEL.WEIGHTS, device=args.device)
    weights = domain_weights_of(fe, paths)
    names = list(fe.cfg.DATASETS.NAMES)
    width = max(len(os.path.basename(p)) for p in paths)
    sys.stdout.write(f"{'image':<{width}}  " + "  ".join(f"{n:>12}" for n in names) + "\n")
    for p, w in zip(paths, weights.tolist()):
        sys.stdout.write(f"{os.path.basename(p):<{width}}  "
                         + "  ".join(f"{v:12.3f}" for v in w) + "\n")
    sys.stdout.write(f"{'mean':<{width}}  "
                     + "  ".join(f"{v:12.3f}" for v in weights.mean(0).tolist()) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Run the tool on ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    return tool_main(build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
