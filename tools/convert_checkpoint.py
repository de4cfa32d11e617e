"""Convert a torchreid or fast-reid checkpoint into this toolkit's model checkpoint.

The config describes the same architecture as the checkpoint (e.g. configs/DG/Base-osnet.yml for
torchreid's osnet_x1_0, configs/Market1501/bagtricks_R50.yml for fast-reid's BoT R50). The file
is read with weights_only loading; unknown key layouts are refused, naming the keys. The output
is {"model": state_dict}, usable as MODEL.WEIGHTS or --weights of tools/cross_eval.py.

Examples:
    python tools/convert_checkpoint.py --from torchreid --config-file configs/DG/Base-osnet.yml \\
        --input osnet_x1_0_market.pth.tar-60 --output logs/imported/osnet_market.pth
    python tools/convert_checkpoint.py --from fastreid \\
        --config-file configs/Market1501/bagtricks_R50.yml --input model_final.pth \\
        --output logs/imported/bot_r50.pth
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

logger = logging.getLogger("reid_pbn")


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (also used by ``--help``)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Trailing KEY VALUE pairs override config keys (e.g. MODEL.BACKBONE.NAME "
        "osnet_ain_x1_0); see reid_pbn/config/defaults.py.",
    )
    parser.add_argument("--from", dest="source", required=True, choices=("torchreid", "fastreid"),
                        help="The toolkit that wrote the checkpoint.")
    parser.add_argument("--config-file", required=True, metavar="FILE",
                        help="YAML config describing the checkpoint's architecture.")
    parser.add_argument("--input", required=True, metavar="CKPT",
                        help="The torchreid / fast-reid checkpoint file.")
    parser.add_argument("--output", required=True, metavar="OUT",
                        help="Where to write the converted checkpoint (.pth).")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="Config overrides as full-key/value pairs.")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from reid_pbn.config import ConfigError
    from reid_pbn.engine.checkpoint import CheckpointError, atomic_torch_save
    from reid_pbn.engine.defaults import setup_cfg, setup_logger
    from reid_pbn.modeling.convert import UnknownLayoutError, convert_checkpoint

    setup_logger(None)
    try:
        cfg = setup_cfg(args.config_file, list(args.opts))
        _, result = convert_checkpoint(cfg, args.source, args.input)
    except (ConfigError, CheckpointError, UnknownLayoutError) as e:
        sys.exit(f"{type(e).__name__}: {e}")
    for note in result.notes:
        logger.info("%s", note)
    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    atomic_torch_save({"model": result.state_dict}, args.output)
    print(f"Converted {args.source} checkpoint {args.input} ({len(result.state_dict)} tensors, "
          f"{result.num_classes} classes) -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
