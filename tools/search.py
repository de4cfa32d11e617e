"""Search a gallery (made by tools/build_index.py) with query images or features, and write the
ranked results as JSON plus an HTML contact sheet of thumbnails.

Query images are embedded with the gallery's model: --config-file/--weights, by default the
config and weight files recorded in the gallery's provenance. A model whose weights, feature
dimension or preprocessing differ from the gallery's is refused (--allow-model-mismatch to
search anyway). Query person ids come from Market-1501-style file names (0002_c1s1_...: person
2); results of the same person are marked true matches.

Writes into --output: results.json ({"gallery", "k", "queries": [{"query", "pid", "camid",
"results": [{"rank", "id", "name", "distance", "pid", "camid", "metadata", "true_match"}]}]})
and contact_sheet.html (self-contained: thumbnails are inlined).

Examples:
    python tools/search.py --index galleries/synB --queries datasets/SyntheticB/query \\
        --k 10 --output results/synB
    python tools/search.py --index galleries/crops --query-features feats/queries \\
        --output results/crops
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from reid_pbn import FeatureExtractor
from reid_pbn.serving import Gallery
from reid_pbn.serving.cli import (
    ToolError,
    build_model_for_tool,
    checked_provenance,
    load_config,
    run_tool,
    tool_parser,
)
from reid_pbn.serving.contact_sheet import render_contact_sheet
from reid_pbn.serving.export import feature_dim
from reid_pbn.serving.sources import embed_images, list_images, read_feature_dir


def build_parser():
    """The command-line parser (also used by ``--help``)."""
    parser = tool_parser(__doc__)
    parser.add_argument("--index", required=True, metavar="DIR",
                        help="Gallery folder made by tools/build_index.py.")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--queries", nargs="+", metavar="PATH",
                     help="Query images or folders of images.")
    src.add_argument("--query-features", metavar="DIR",
                     help="Output folder of tools/extract_features.py for the queries.")
    parser.add_argument("--weights", default=None, metavar="CKPT",
                        help="Checkpoint of the model (default: the gallery's recorded weights).")
    parser.add_argument("--k", "-k", type=int, default=10, help="Results per query.")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="Folder for results.json and contact_sheet.html.")
    parser.add_argument("--allow-model-mismatch", action="store_true",
                        help="Search even when the model is not the gallery's.")
    parser.add_argument("--batch-size", type=int, default=64, help="Images per forward pass.")
    parser.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda[:N]'.")
    return parser


def _gallery_config(args, recorded: dict):
    """The query model's config: --config-file, else the gallery's recorded file or text."""
    path = args.config_file or recorded.get("config_file")
    if path and os.path.isfile(path):
        return load_config(path, args.opts), path
    if args.config_file:
        raise ToolError(f"config file not found: {args.config_file}")
    text = recorded.get("config")
    if not text:
        raise ToolError("the gallery records no config; pass --config-file")
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        f.write(text)
    try:
        return load_config(f.name, args.opts), None
    finally:
        os.unlink(f.name)


def _image_queries(args, gallery: Gallery):
    recorded = gallery.info.get("provenance", {})
    cfg, config_file = _gallery_config(args, recorded)
    weights = args.weights or recorded.get("weights")
    if weights and not os.path.isfile(weights) and not args.weights:
        raise ToolError(f"the gallery's weights {weights} are gone; pass --weights")
    model, weights = build_model_for_tool(cfg, weights)
    checked_provenance(gallery.info, cfg, config_file=config_file, weights=weights,
                       feature_dim=feature_dim(model, cfg), flip=bool(recorded.get("flip")),
                       allow_mismatch=args.allow_model_mismatch)
    extractor = FeatureExtractor(cfg=cfg, model=model, device=args.device,
                                 batch_size=args.batch_size, flip=bool(recorded.get("flip")))
    paths = [p for location in args.queries for p in list_images(location)]
    images = embed_images(lambda ims: extractor(ims).numpy(), paths,
                          batch_size=args.batch_size, reduce_to=extractor.size)
    for bad in images.skipped:
        print(f"skipped unreadable query {bad['path']}: {bad['reason']}")
    return images.features, images.paths, images.pids, images.camids, images.thumbnails


def _feature_queries(args, gallery: Gallery):
    try:
        feats, meta = read_feature_dir(args.query_features)
    except ValueError as e:
        raise ToolError(str(e)) from None
    if feats.shape[1] != gallery.dim:
        raise ToolError(f"the query features are {feats.shape[1]}-d, the gallery's "
                        f"{gallery.dim}-d: they come from another model")
    n = len(feats)
    return (feats, [str(p) for p in meta["paths"]], [int(v) for v in meta["pids"]],
            [int(v) for v in meta["camids"]], [None] * n)


def main(args) -> int:
    if args.k < 1:
        raise ToolError(f"--k must be at least 1, got {args.k}")
    gallery = Gallery.open(args.index, writable=False)
    feats, paths, pids, camids, thumbs = (_image_queries(args, gallery) if args.queries
                                          else _feature_queries(args, gallery))
    hits = gallery.search(np.asarray(feats), args.k)
    queries = []
    for path, pid, camid, row in zip(paths, pids, camids, hits):
        results = []
        for hit in row:
            item = hit.item
            known = pid >= 0 and item["pid"] >= 0
            results.append({"rank": hit.rank, "id": item["id"], "name": item["name"],
                            "distance": hit.distance, "pid": item["pid"],
                            "camid": item["camid"], "metadata": item["metadata"],
                            "true_match": item["pid"] == pid if known else None})
        queries.append({"query": path, "pid": pid, "camid": camid, "results": results})
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"gallery": os.path.abspath(args.index), "k": args.k, "gallery_size": len(gallery),
           "index_type": gallery.index_type, "queries": queries}
    (out / "results.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    result_thumbs = {}
    for q in queries:
        for r in q["results"]:
            if r["id"] not in result_thumbs:
                path = gallery.thumbnail_path(r["id"])
                result_thumbs[r["id"]] = path.read_bytes() if path else None
    page = render_contact_sheet(queries, thumbs, result_thumbs, f"{args.index}: top {args.k}")
    (out / "contact_sheet.html").write_text(page, encoding="utf-8")
    found = sum(1 for q in queries if q["results"] and q["results"][0]["true_match"])
    known = sum(1 for q in queries if q["results"] and q["results"][0]["true_match"] is not None)
    print(f"Searched {len(queries)} queries in {len(gallery)} items: {out / 'results.json'}, "
          f"{out / 'contact_sheet.html'}"
          + (f" (top-1 true match for {found} of {known} queries with known ids)" if known
             else ""))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool("search", build_parser(), main))
