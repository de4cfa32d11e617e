"""Build a searchable gallery (a ReIDIndex with provenance, records and thumbnails) from an image
folder or from the output of tools/extract_features.py.

The output folder holds gallery.json (provenance: model config, weights SHA-256, feature
dimension, normalization, creation time; the index type asked for and chosen), index/ (a
ReIDIndex folder: ReIDIndex.load(OUT / "index") reads it), items/ (features and records) and
thumbs/. tools/search.py and tools/serve.py use it.

IVF and PQ parameters are sized to the gallery: nlist at most N / 39 and PQ codebooks of at
most N / 39 centroids, so FAISS never trains on too few points. When the gallery is too small
for the asked --type, the tool says what it uses instead (IVFPQ -> IVFFlat -> Flat).

Person and camera ids come from Market-1501-style file names (0002_c1s1_000451_03.jpg: person
2, camera 1) or from the features' metadata.json.

Examples:
    python tools/build_index.py --config-file configs/Demo/synthetic_cross_domain.yml \\
        --weights logs/demo/synthetic_A_to_B/model_final.pth \\
        --images datasets/SyntheticB/bounding_box_test --output galleries/synB --type IVFFlat
    python tools/build_index.py --features feats/crops --output galleries/crops --type IVFPQ
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import sys
from pathlib import Path

import numpy as np

from reid_pbn import FeatureExtractor
from reid_pbn.data import read_image
from reid_pbn.serving import Gallery, model_provenance
from reid_pbn.serving.cli import (
    ToolError,
    build_model_for_tool,
    load_config,
    run_tool,
    tool_parser,
)
from reid_pbn.serving.gallery import GALLERY_FILE
from reid_pbn.serving.images import make_thumbnail
from reid_pbn.serving.index_params import INDEX_TYPES
from reid_pbn.serving.sources import embed_images, list_images, read_feature_dir

logger = logging.getLogger("reid_pbn")


def build_parser():
    """The command-line parser (also used by ``--help``)."""
    parser = tool_parser(__doc__, {"overwrite": "Replace an existing gallery folder (built "
                                   "beside it, then moved into place)."})
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", metavar="DIR", help="Folder of gallery images (recursive).")
    src.add_argument("--features", metavar="DIR",
                     help="Output folder of tools/extract_features.py (features.npy, "
                     "metadata.json); its config and weights are recorded as provenance.")
    parser.add_argument("--weights", default=None, metavar="CKPT",
                        help="Checkpoint of the model (default: MODEL.WEIGHTS; with --features, "
                        "the weights named in its metadata.json).")
    parser.add_argument("--output", required=True, metavar="DIR", help="Gallery folder to make.")
    parser.add_argument("--type", default="Flat", choices=INDEX_TYPES, help="FAISS index type.")
    parser.add_argument("--nlist", type=int, default=0,
                        help="IVF lists (0: 4 * sqrt(N), at most N / 39).")
    parser.add_argument("--nprobe", type=int, default=32, help="IVF lists visited per query.")
    parser.add_argument("--pq-m", type=int, default=0,
                        help="PQ sub-quantizers (0: largest divisor of the dimension up to 64).")
    parser.add_argument("--pq-nbits", type=int, default=0,
                        help="Bits per PQ code (0: 8, lowered for small galleries).")
    parser.add_argument("--hnsw-m", type=int, default=32, help="Neighbours per HNSW node.")
    parser.add_argument("--no-thumbnails", action="store_true",
                        help="Store no thumbnails (the page then shows placeholders).")
    parser.add_argument("--batch-size", type=int, default=64, help="Images per forward pass.")
    parser.add_argument("--flip", action="store_true",
                        help="Average the features of each image and its mirror.")
    parser.add_argument("--strict", action="store_true",
                        help="Stop at the first unreadable image (default: skip and name it).")
    parser.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda[:N]'.")
    return parser


def _from_images(args):
    cfg = load_config(args.config_file, args.opts)
    model, weights = build_model_for_tool(cfg, args.weights, device="cpu")
    extractor = FeatureExtractor(cfg=cfg, model=model, device=args.device,
                                 batch_size=args.batch_size, flip=args.flip)
    paths = list_images(args.images)
    print(f"Embedding {len(paths)} images from {args.images}")
    images = embed_images(lambda ims: extractor(ims).numpy(), paths, root=args.images,
                          batch_size=args.batch_size, strict=args.strict,
                          thumbnail_height=None if args.no_thumbnails else 128,
                          reduce_to=extractor.size)
    for bad in images.skipped:
        print(f"skipped unreadable image {bad['path']}: {bad['reason']}")
    provenance = model_provenance(cfg, config_file=args.config_file, weights=weights,
                                  feature_dim=images.features.shape[1], flip=args.flip)
    provenance["source"] = {"images": os.path.abspath(args.images)}
    return (images.features, images.names, images.pids, images.camids, images.thumbnails,
            [{"path": os.path.abspath(p)} for p in images.paths], provenance)


def _from_features(args):
    try:
        feats, meta = read_feature_dir(args.features)
    except ValueError as e:
        raise ToolError(str(e)) from None
    config_file = args.config_file or meta.get("config_file") or ""
    weights = args.weights or meta.get("weights") or None
    if config_file and not os.path.isfile(config_file):
        raise ToolError(f"config file {config_file} (from {args.features}/metadata.json) not "
                        "found; pass --config-file")
    if weights and not os.path.isfile(weights):
        raise ToolError(f"weights {weights} (from {args.features}/metadata.json) not found; "
                        "pass --weights, which is hashed into the gallery's provenance")
    cfg = load_config(config_file, args.opts)
    provenance = model_provenance(cfg, config_file=config_file or None, weights=weights,
                                  feature_dim=feats.shape[1],
                                  normalize=bool(meta.get("normalize", True)),
                                  flip=bool(meta.get("flip", False)))
    provenance["source"] = {"features": os.path.abspath(args.features)}
    paths = [str(p) for p in meta["paths"]]
    thumbs = [None] * len(paths)
    if not args.no_thumbnails:
        thumbs = [_thumbnail(p) for p in paths]
    return (feats, [os.path.basename(p) for p in paths], [int(v) for v in meta["pids"]],
            [int(v) for v in meta["camids"]], thumbs, [{"path": p} for p in paths], provenance)


def _thumbnail(path: str) -> bytes | None:
    try:
        return make_thumbnail(np.asarray(read_image(path, reduce_to=(128, 64))))
    except OSError:  # moved or unreadable since extraction: the item simply has no thumbnail
        return None


def _check_output(output: Path, overwrite: bool) -> None:
    if not output.exists() or (output.is_dir() and not any(output.iterdir())):
        return
    if not (output / GALLERY_FILE).is_file():
        raise ToolError(f"{output} exists and is not a gallery folder; choose a new folder")
    if not overwrite:
        raise ToolError(f"{output} already holds a gallery; pass --overwrite to replace it")
    if Gallery.in_use(output):
        raise ToolError(f"{output} is open in a running service; stop it first")


def main(args) -> int:
    output = Path(args.output)
    _check_output(output, args.overwrite)
    feats, names, pids, camids, thumbs, metadata, provenance = (
        _from_images(args) if args.images else _from_features(args))
    options = {"nlist": args.nlist, "nprobe": args.nprobe, "pq_m": args.pq_m,
               "pq_nbits": args.pq_nbits, "hnsw_m": args.hnsw_m}
    # Built beside the output and moved into place: an interrupted build leaves no half gallery.
    staging = output.parent / f".{output.name}.building-{secrets.token_hex(4)}"
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        gallery, choice = Gallery.build(
            staging, feats, provenance=provenance, index_type=args.type, index_options=options,
            names=names, pids=pids, camids=camids, metadata=metadata, thumbnails=thumbs)
        gallery.close()
        _move_into_place(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for note in choice.notes:
        print(f"note: {note}")
    params = ", ".join(f"{k} {v}" for k, v in choice.params.items())
    print(f"Built gallery {output}: {len(feats)} items, {feats.shape[1]}-d features, "
          f"{choice.index_type} index{f' ({params})' if params else ''}"
          + (f", {sum(t is not None for t in thumbs)} thumbnails" if thumbs else ""))
    return 0


def _move_into_place(staging: Path, output: Path) -> None:
    if output.exists():
        old = output.parent / f".{output.name}.old-{secrets.token_hex(4)}"
        os.rename(output, old)
        os.rename(staging, output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staging, output)


if __name__ == "__main__":
    sys.exit(run_tool("build_index", build_parser(), main))
