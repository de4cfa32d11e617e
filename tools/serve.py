"""Serve a gallery over HTTP: search by image or feature vector, add and delete items, and a page
for people (open http://HOST:PORT/ in a browser).

Endpoints: GET / (the page), GET /health, GET /stats, POST /search (multipart image in the field
'file' and k, or JSON {"feature": [...], "k": 10}), POST /gallery (multipart images in 'file'
with optional pid, camid and metadata, or JSON {"features": [[...]], ...}), GET and DELETE
/gallery/{id}, GET /thumbs/{id}. Errors are JSON: {"error": message, "status": code}. See
docs/serving.md for the API with curl examples.

Additions are on disk (the index folder is replaced atomically) before they are answered, so
they survive a restart, and a killed server loses no item added earlier. Images arriving
together share forward passes (--max-batch, --batch-wait-ms).

The service binds to 127.0.0.1 by default and has no authentication: put it behind a proxy
that authenticates before binding another address.

Examples:
    python tools/serve.py --index galleries/synB \\
        --config-file configs/Demo/synthetic_cross_domain.yml \\
        --weights logs/demo/synthetic_A_to_B/model_final.pth
    python tools/serve.py --index galleries/new --create --config-file C --weights W --port 8080
"""

from __future__ import annotations

import logging
import os
import sys

import torch

from reid_pbn import FeatureExtractor
from reid_pbn.serving import Gallery, model_provenance
from reid_pbn.serving.cli import (
    ToolError,
    build_model_for_tool,
    checked_provenance,
    load_config,
    run_tool,
    tool_parser,
)
from reid_pbn.serving.export import feature_dim
from reid_pbn.serving.images import MAX_PIXELS

logger = logging.getLogger("reid_pbn")


def build_parser():
    """The command-line parser (also used by ``--help``)."""
    parser = tool_parser(__doc__)
    parser.add_argument("--index", required=True, metavar="DIR",
                        help="Gallery folder made by tools/build_index.py.")
    parser.add_argument("--weights", default=None, metavar="CKPT",
                        help="Checkpoint of the gallery's model (default: MODEL.WEIGHTS).")
    parser.add_argument("--host", default="127.0.0.1",
                        help="Address to bind (default 127.0.0.1: this machine only).")
    parser.add_argument("--port", type=int, default=8000, help="Port (default 8000).")
    parser.add_argument("--create", action="store_true",
                        help="Make an empty gallery at --index for this model if there is none.")
    parser.add_argument("--allow-model-mismatch", action="store_true",
                        help="Serve even when the model is not the one that built the gallery.")
    parser.add_argument("--max-upload-mb", type=float, default=10.0,
                        help="Largest request body in MiB (default 10).")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                        help=f"Largest image, width x height (default {MAX_PIXELS}); larger "
                        "ones are refused before decoding.")
    parser.add_argument("--max-k", type=int, default=100, help="Largest k of a search.")
    parser.add_argument("--max-batch", type=int, default=16,
                        help="Most images per forward pass (default 16).")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0,
                        help="How long an image waits for others to share its forward pass.")
    parser.add_argument("--threads", type=int, default=0,
                        help="Torch CPU threads (0: PyTorch's default).")
    parser.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda[:N]'.")
    return parser


def _open_gallery(args, cfg, weights, dim):
    if (os.path.isdir(args.index) and os.listdir(args.index)) or not args.create:
        return Gallery.open(args.index)
    prov = model_provenance(cfg, config_file=args.config_file, weights=weights, feature_dim=dim)
    gallery, _ = Gallery.build(args.index, torch.zeros(0, dim).numpy(), provenance=prov)
    print(f"Created an empty gallery at {args.index}")
    return gallery


def main(args) -> int:
    try:  # the service's packages are an optional extra; --help works without them
        import uvicorn

        from reid_pbn.serving.app import ServiceConfig, create_app
    except ImportError as e:
        raise ToolError(f"{e}: install the service's packages with pip install "
                        "'reid_pbn[serve]'") from None

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    for name, value in (("--max-k", args.max_k), ("--max-batch", args.max_batch),
                        ("--max-pixels", args.max_pixels)):
        if value < 1:
            raise ToolError(f"{name} must be at least 1, got {value}")
    if args.max_upload_mb <= 0:
        raise ToolError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    cfg = load_config(args.config_file, args.opts)
    model, weights = build_model_for_tool(cfg, args.weights)
    dim = feature_dim(model, cfg)
    gallery = _open_gallery(args, cfg, weights, dim)
    current = checked_provenance(gallery.info, cfg, config_file=args.config_file,
                                 weights=weights, feature_dim=dim,
                                 flip=bool(gallery.info["provenance"].get("flip")),
                                 allow_mismatch=args.allow_model_mismatch)
    extractor = FeatureExtractor(cfg=cfg, model=model, device=args.device,
                                 flip=bool(gallery.info["provenance"].get("flip")))
    config = ServiceConfig(max_upload_bytes=int(args.max_upload_mb * 2**20),
                           max_pixels=args.max_pixels, max_k=args.max_k,
                           max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms,
                           input_size=tuple(extractor.size))
    info = {k: current[k] for k in ("config_file", "weights", "weights_sha256", "feature_dim",
                                    "model")}
    app = create_app(gallery, lambda ims: extractor(ims).numpy(), config=config,
                     model_info=info)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("binding %s: the service has no authentication; anyone who reaches "
                       "this address can search, add and delete", args.host)
    print(f"Serving {args.index} ({len(gallery)} items, {gallery.index_type}) on "
          f"http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    gallery.close()
    return 0


if __name__ == "__main__":
    sys.exit(run_tool("serve", build_parser(), main))
