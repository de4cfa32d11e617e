"""Export a trained re-ID model to ONNX or TorchScript, and check the file against the model.

The exported model takes ``images``: float32 NCHW with a dynamic batch axis, RGB, resized to
INPUT.SIZE_TEST and normalized as (pixel / 255 - INPUT.PIXEL_MEAN) / INPUT.PIXEL_STD, which is
what FeatureExtractor.preprocess returns. It outputs ``features`` (N, D), L2-normalized unless
--no-normalize. The contract and the model's provenance (config, weights SHA-256) are stored in
the file (ONNX metadata_props / TorchScript extra file, key "reid_pbn").

After writing, the file is run (ONNX Runtime on the CPU, or the TorchScript module) at batch
sizes 1 and 3 on the same random images as the eager model; if any feature differs by more than
--tolerance in cosine distance the command says so and exits with code 1.

PBN (plain BN at inference), IBN and BNE models export. BNE exports its combined inference path
(every domain path, Wasserstein domain weights, weighted sum) through the TorchScript-based ONNX
exporter, since torch.export cannot capture its data-dependent domain routing.

Examples:
    python tools/export.py --config-file configs/Demo/synthetic_cross_domain.yml \\
        --weights logs/demo/synthetic_A_to_B/model_final.pth --format onnx --output model.onnx
    python tools/export.py --config-file configs/MultiSource/synthetic_bne.yml \\
        --weights logs/multisource/synthetic_bne/model_final.pth --format torchscript \\
        --output bne.pt
"""

from __future__ import annotations

import sys

from reid_pbn.serving.cli import (
    ToolError,
    build_model_for_tool,
    load_config,
    run_tool,
    tool_parser,
)
from reid_pbn.serving.export import FORMATS, PARITY_TOLERANCE, export_model, feature_dim
from reid_pbn.serving.provenance import model_provenance


def build_parser():
    """The command-line parser (also used by ``--help``)."""
    parser = tool_parser(__doc__)
    parser.add_argument("--weights", default=None, metavar="CKPT",
                        help="Checkpoint or state_dict file (default: MODEL.WEIGHTS).")
    parser.add_argument("--format", required=True, choices=FORMATS, help="Output format.")
    parser.add_argument("--output", required=True, metavar="FILE", help="File to write.")
    parser.add_argument("--no-normalize", action="store_true",
                        help="Output raw features instead of L2-normalized ones.")
    parser.add_argument("--exporter", default="auto", choices=("auto", "dynamo", "torchscript"),
                        help="ONNX only: the torch.export-based exporter (dynamo), the "
                        "TorchScript-based one, or auto (dynamo, else TorchScript-based).")
    parser.add_argument("--tolerance", type=float, default=PARITY_TOLERANCE,
                        help=f"Largest accepted 1 - cos to the eager model (default "
                        f"{PARITY_TOLERANCE:g}).")
    parser.add_argument("--no-check", action="store_true", help="Skip the parity check.")
    return parser


def main(args) -> int:
    if not args.config_file:
        raise ToolError("--config-file is required (the model's YAML config)")
    cfg = load_config(args.config_file, args.opts)
    model, weights = build_model_for_tool(cfg, args.weights)
    if not weights:
        raise ToolError("no weights: pass --weights CKPT (or set MODEL.WEIGHTS)")
    normalize = not args.no_normalize
    provenance = model_provenance(cfg, config_file=args.config_file, weights=weights,
                                  feature_dim=feature_dim(model, cfg), normalize=normalize)
    report = export_model(model, cfg, args.format, args.output, normalize=normalize,
                          provenance=provenance, exporter=args.exporter,
                          check=not args.no_check, tolerance=args.tolerance)
    how = report.exporter + (f" ({report.fallback_reason})" if report.fallback_reason else "")
    print(f"Exported {report.path} ({report.format}, exporter: {how}) in {report.seconds:.1f} s")
    if report.max_cosine_distance is not None:
        sizes = ", ".join(map(str, report.batch_sizes))
        print(f"Parity with the eager model: worst 1 - cos = {report.max_cosine_distance:.2g} "
              f"at batch sizes {sizes} (tolerance {args.tolerance:g})")
    h, w = cfg.INPUT.SIZE_TEST
    print(f"Input 'images': float32 (N, 3, {h}, {w}) RGB, (pixel / 255 - "
          f"{list(cfg.INPUT.PIXEL_MEAN)}) / {list(cfg.INPUT.PIXEL_STD)}; output 'features': "
          f"(N, {provenance['feature_dim']}){', L2-normalized' if normalize else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool("export", build_parser(), main))
