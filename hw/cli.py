"""``python -m hw``: command-line entry point of the hardware package.

Each subcommand lives in its own module exposing ``add_parser(subparsers)``, which
registers an ``argparse`` sub-parser whose ``func(args)`` returns an exit status.
"""

import argparse
import importlib
import sys

__all__ = ["main", "add_unit_arguments", "unit_from_args", "SUBCOMMAND_MODULES"]

#: Modules that contribute subcommands, in ``--help`` order.
SUBCOMMAND_MODULES = (
    "hw.verilog_cmd",
)


def add_unit_arguments(parser):
    """Add the :class:`hw.matmul.MatmulUnit` parameters as flags to ``parser``."""
    from model.quant import TERNARY, WEIGHT_MODES
    parser.add_argument("--lanes", "-k", type=int, default=16, metavar="K",
                        help="activations per beat (default: %(default)s)")
    parser.add_argument("--rows", "-m", type=int, default=8, metavar="M",
                        help="output rows (default: %(default)s)")
    parser.add_argument("--weight-mode", choices=WEIGHT_MODES, default=TERNARY,
                        help="weight encoding (default: %(default)s)")
    parser.add_argument("--output-stage", action=argparse.BooleanOptionalAction,
                        default=False,
                        help="fixed-point rescale of the accumulators (default: off)")
    parser.add_argument("--max-beats", type=int, default=1024, metavar="N",
                        help="longest dot product in beats; sizes the accumulators "
                             "(default: %(default)s)")
    parser.add_argument("--levels-per-stage", type=int, default=1, metavar="L",
                        help="adder-tree levels per pipeline register (default: %(default)s)")


def unit_from_args(parser, args):
    """Build the unit described by ``args``; parameter errors become usage errors."""
    from .matmul import MatmulUnit
    try:
        return MatmulUnit(lanes=args.lanes, rows=args.rows, weight_mode=args.weight_mode,
                          output_stage=args.output_stage, max_beats=args.max_beats,
                          levels_per_stage=args.levels_per_stage)
    except (TypeError, ValueError) as error:
        parser.error(str(error))


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m hw",
        description="Ternary (BitNet b1.58) matmul accelerator: Verilog generation and "
                    "hardware reports.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(parser, args)


if __name__ == "__main__":
    sys.exit(main())
