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
import sys

from reid_pbn.engine import default_argument_parser, default_setup, tool_main
from reid_pbn.engine.checkpoint import atomic_torch_save
from reid_pbn.modeling.convert import convert_checkpoint

logger = logging.getLogger("reid_pbn")


def build_parser() -> argparse.ArgumentParser:
    """The shared parser of reid_pbn tools plus this tool's flags (also used by ``--help``)."""
    parser = default_argument_parser(__doc__, training=False, config_required=True)
    parser.add_argument("--from", dest="source", required=True, choices=("torchreid", "fastreid"),
                        help="The toolkit that wrote the checkpoint.")
    parser.add_argument("--input", required=True, metavar="CKPT",
                        help="The torchreid / fast-reid checkpoint file.")
    parser.add_argument("--output", required=True, metavar="OUT",
                        help="Where to write the converted checkpoint (.pth).")
    return parser


def run(args: argparse.Namespace) -> None:
    """Convert ``--input`` and write ``{"model": state_dict}`` to ``--output``.

    Args:
        args: parsed arguments of :func:`build_parser`.
    """
    # The output is one file, possibly inside a training run's folder: no log or config.yaml
    # is written beside it (the run's own would be overwritten).
    cfg = default_setup(args, write_files=False)
    _, result = convert_checkpoint(cfg, args.source, args.input)
    for note in result.notes:
        logger.info("%s", note)
    atomic_torch_save({"model": result.state_dict}, args.output)
    print(f"Converted {args.source} checkpoint {args.input} ({len(result.state_dict)} tensors, "
          f"{result.num_classes} classes) -> {args.output}")


def main(argv: list[str] | None = None) -> int:
    """Run the tool on ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    return tool_main(build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
