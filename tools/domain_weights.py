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
from reid_pbn.engine.defaults import setup_logger

_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")


def domain_weights_of(extractor: FeatureExtractor, paths: list[str]) -> torch.Tensor:
    """(N, D) BNE domain weights of the images at ``paths``.

    Args:
        extractor: a feature extractor whose model has BNE (several DSBN domains).
        paths: image files.

    Returns:
        The weights, one row per image.
    """
    model = extractor.model
    if getattr(model, "num_domains", 1) < 2:
        raise SystemExit("This model has no BNE domain paths (needs MODEL.BACKBONE.NORM DSBN "
                         "trained on several DATASETS.NAMES).")
    rows = []
    with torch.no_grad():
        for start in range(0, len(paths), extractor.batch_size):
            x = extractor.preprocess(paths[start:start + extractor.batch_size])
            model(x.to(extractor.device))
            rows.append(model.last_domain_weights.cpu())
    return torch.cat(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="config the model was trained with")
    parser.add_argument("--weights", required=True, help="checkpoint (e.g. model_final.pth)")
    parser.add_argument("--folder", help="also take every image in this folder")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("images", nargs="*", help="image files")
    args = parser.parse_args()
    setup_logger()
    paths = list(args.images)
    if args.folder:
        paths += sorted(p for p in glob.glob(os.path.join(args.folder, "*"))
                        if p.lower().endswith(_IMAGE_EXTS))
    if not paths:
        parser.error("give image files or --folder")
    fe = FeatureExtractor(args.config_file, weights=args.weights, device=args.device)
    weights = domain_weights_of(fe, paths)
    names = list(fe.cfg.DATASETS.NAMES)
    width = max(len(os.path.basename(p)) for p in paths)
    sys.stdout.write(f"{'image':<{width}}  " + "  ".join(f"{n:>12}" for n in names) + "\n")
    for p, w in zip(paths, weights.tolist()):
        sys.stdout.write(f"{os.path.basename(p):<{width}}  "
                         + "  ".join(f"{v:12.3f}" for v in w) + "\n")
    sys.stdout.write(f"{'mean':<{width}}  "
                     + "  ".join(f"{v:12.3f}" for v in weights.mean(0).tolist()) + "\n")


if __name__ == "__main__":
    main()
