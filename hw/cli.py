"""``python -m hw``: command-line entry point of the hardware package.

Each subcommand lives in its own module exposing ``add_parser(subparsers)``, which
registers an ``argparse`` sub-parser whose ``func(args)`` returns an exit status.
"""

import argparse
import importlib
import sys

__all__ = ["main", "add_unit_arguments", "unit_kwargs", "unit_from_args",
           "SUBCOMMAND_MODULES"]

#: Modules that contribute subcommands, in ``--help`` order.
SUBCOMMAND_MODULES = (
    "hw.verilog_cmd",
    "hw.synth_cmd",
    "hw.perf_cmd",
)


def add_unit_arguments(parser):
    """Add the :class:`hw.matmul.MatmulUnit` parameters as flags to ``parser``."""
    from model.quant import HW_WEIGHT_MODES, TERNARY
    parser.add_argument("--lanes", "-k", type=int, default=16, metavar="K",
                        help="activations per beat (default: %(default)s)")
    parser.add_argument("--rows", "-m", type=int, default=8, metavar="M",
                        help="output rows (default: %(default)s)")
    parser.add_argument("--weight-mode", choices=HW_WEIGHT_MODES, default=TERNARY,
                        help="weight encoding (default: %(default)s; int8 is the "
                             "multiplier baseline)")
    parser.add_argument("--output-stage", action=argparse.BooleanOptionalAction,
                        default=False,
                        help="fixed-point rescale of the accumulators (default: off)")
    parser.add_argument("--max-beats", type=int, default=1024, metavar="N",
                        help="longest dot product in beats; sizes the accumulators "
                             "(default: %(default)s)")
    parser.add_argument("--levels-per-stage", type=int, default=1, metavar="L",
                        help="adder-tree levels per pipeline register (default: %(default)s)")
    from .lanes import FABRICS, GENERIC
    parser.add_argument("--fabric", choices=FABRICS, default=GENERIC,
                        help="generic Verilog, or lane groups built from Lattice ECP5 "
                             "CCU2C carry cells (needs the Lattice cell library; "
                             "default: %(default)s)")


def unit_kwargs(args):
    """The :class:`hw.matmul.MatmulUnit` parameters given by ``args``."""
    return {"lanes": args.lanes, "rows": args.rows, "weight_mode": args.weight_mode,
            "output_stage": args.output_stage, "max_beats": args.max_beats,
            "levels_per_stage": args.levels_per_stage, "fabric": args.fabric}


def unit_from_args(parser, args, component=None):
    """Build ``component`` (default :class:`hw.matmul.MatmulUnit`) from ``args``;
    parameter errors become usage errors."""
    if component is None:
        from .matmul import MatmulUnit as component
    try:
        return component(**unit_kwargs(args))
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
