"""Extract re-ID features for a folder of images or a data set split.

Writes into the output folder:
    features.npy    float32 array (N, D), L2-normalized unless --no-normalize
    metadata.json   {"count", "dim", "paths", "pids", "camids", "source", "config_file",
                     "weights", "weights_sha256", "flip", "normalize", "skipped"};
                    pids/camids are -1 for a plain folder
    log.txt, config.yaml  the run's log and full config

Examples:
    python tools/extract_features.py --config-file configs/Market1501/pbn_R50-ibn.yml \\
        --weights model_final.pth --images /data/crops --output feats/crops
    python tools/extract_features.py --config-file configs/Demo/synthetic_cross_domain.yml \\
        --weights logs/demo/synthetic_A_to_B/model_final.pth --dataset SyntheticB \\
        --split gallery --output feats/synB_gallery --flip
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from reid_pbn import FeatureExtractor
from reid_pbn.data import build_dataset, dataset_kwargs_from_cfg, read_image
from reid_pbn.data.datasets.bases import UnreadableImageError
from reid_pbn.engine import (
    ToolError,
    add_weights_arguments,
    default_argument_parser,
    default_setup,
    file_sha256,
    tool_main,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SPLITS = ("query", "gallery", "test", "train")

logger = logging.getLogger("reid_pbn")


def build_parser() -> argparse.ArgumentParser:
    """The shared parser of reid_pbn tools plus this tool's flags (also used by ``--help``)."""
    parser = default_argument_parser(__doc__, training=False)
    add_weights_arguments(parser)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", metavar="DIR",
                     help="Folder of images, searched recursively "
                     f"({', '.join(IMAGE_EXTENSIONS)}).")
    src.add_argument("--dataset", metavar="NAME",
                     help="Registry name of a data set (Market1501, DukeMTMC, SyntheticB, ...).")
    parser.add_argument("--split", choices=SPLITS, default="gallery",
                        help="Split of --dataset: query, gallery, test (query then gallery) or "
                        "train (default: gallery).")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="Folder for features.npy, metadata.json and the log.")
    parser.add_argument("--batch-size", type=int, default=64, help="Images per forward pass.")
    parser.add_argument("--flip", action="store_true",
                        help="Average the features of each image and its horizontal flip.")
    parser.add_argument("--no-normalize", action="store_true",
                        help="Keep raw features instead of L2-normalizing them.")
    parser.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda[:N]'.")
    parser.add_argument("--strict", action="store_true",
                        help="Stop at the first unreadable image (default: skip it, name it "
                        "in the log and in metadata.json's 'skipped').")
    parser.add_argument("--num-workers", type=int, default=4, metavar="N",
                        help="Processes that decode images ahead of the model, so that the "
                        "GPU does not wait for JPEG decoding (0: decode in this process).")
    return parser


def _folder_items(folder: str) -> list[tuple[str, int, int]]:
    root = Path(folder)
    if not root.is_dir():
        raise ToolError(f"Image folder not found: {folder}")
    paths = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise ToolError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) under {folder}")
    return [(p, -1, -1) for p in paths]


def _dataset_items(cfg, name: str, split: str) -> list[tuple]:
    ds = build_dataset(name, cfg.DATASETS.ROOT or None, **dataset_kwargs_from_cfg(cfg, name))
    items = list(ds.query) + list(ds.gallery) if split == "test" else list(getattr(ds, split))
    if not items:
        raise ToolError(f"{name} has no {split} images")
    return items


class _DecodedImages:
    """Images as HWC uint8 arrays, decoded in DataLoader workers (a map-style data set)."""

    def __init__(self, paths: list[str]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        """``(i, HWC uint8 array)``, or ``(i, reason)`` when the file cannot be decoded."""
        try:
            return i, np.asarray(read_image(self.paths[i]).convert("RGB"))
        except (OSError, UnreadableImageError) as e:
            return i, f"{type(e).__name__}: {e}"


def run(args: argparse.Namespace) -> None:
    """Extract the features and write features.npy and metadata.json.

    Args:
        args: parsed arguments of :func:`build_parser`.
    """
    cfg = default_setup(args, output_dir=args.output)
    items = _folder_items(args.images) if args.images else _dataset_items(
        cfg, args.dataset, args.split)
    weights = cfg.MODEL.WEIGHTS or None
    extractor = FeatureExtractor(cfg=cfg, weights=weights, device=args.device,
                                 batch_size=args.batch_size, flip=args.flip,
                                 normalize=not args.no_normalize)
    paths = [str(it[0]) for it in items]
    loader = torch.utils.data.DataLoader(
        _DecodedImages(paths), batch_size=args.batch_size, num_workers=max(args.num_workers, 0),
        collate_fn=list)
    feats, kept, skipped = [], [], []
    for batch in tqdm(loader, desc="extracting features", unit="batch", dynamic_ncols=True):
        good = [(i, im) for i, im in batch if not isinstance(im, str)]
        for i, reason in ((i, im) for i, im in batch if isinstance(im, str)):
            if args.strict:
                raise UnreadableImageError(f"{paths[i]} ({reason}); without --strict it would "
                                           "be skipped")
            logger.warning("Skipping unreadable image %s (%s)", paths[i], reason)
            skipped.append({"path": paths[i], "reason": reason})
        if good:
            feats.append(extractor([im for _, im in good]))
            kept.extend(i for i, _ in good)
    if not kept:
        raise ToolError(f"None of the {len(paths)} images could be read")
    features = torch.cat(feats).numpy().astype(np.float32)
    items, paths = [items[i] for i in kept], [paths[i] for i in kept]
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "features.npy", features)
    meta = {
        "count": int(features.shape[0]),
        "dim": int(features.shape[1]),
        "paths": paths,
        "pids": [int(it[1]) for it in items],
        "camids": [int(it[2]) for it in items],
        "source": args.images or f"{args.dataset}:{args.split}",
        "config_file": args.config_file,
        "weights": weights,
        "weights_sha256": file_sha256(weights) if weights else None,
        "flip": bool(args.flip),
        "normalize": not args.no_normalize,
        "skipped": skipped,
    }
    (out / "metadata.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    print(f"Wrote {features.shape[0]} x {features.shape[1]} features to {out / 'features.npy'} "
          f"and {out / 'metadata.json'}"
          + (f" ({len(skipped)} unreadable image(s) skipped, listed there)" if skipped else ""))


def main(argv: list[str] | None = None) -> int:
    """Run the tool on ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    return tool_main(build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
