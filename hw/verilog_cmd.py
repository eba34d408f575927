"""``python -m hw verilog``: write the Verilog of a matmul unit configuration."""

import sys
from pathlib import Path

from amaranth.back import verilog

__all__ = ["add_parser", "generate", "DEFAULT_NAME"]

#: Module name of the generated top level.
DEFAULT_NAME = "matmul_unit"


def generate(unit, name=DEFAULT_NAME):
    """Verilog text of ``unit`` with top-level module ``name``."""
    return verilog.convert(unit, name=name, emit_src=False)


def add_parser(subparsers):
    from .cli import add_unit_arguments
    parser = subparsers.add_parser(
        "verilog", help="write the Verilog of a matmul unit",
        description="Generate self-contained Verilog for one matmul unit configuration.")
    add_unit_arguments(parser)
    parser.add_argument("--name", default=DEFAULT_NAME,
                        help="top-level module name (default: %(default)s)")
    parser.add_argument("-o", "--output", type=Path, default=None, metavar="FILE",
                        help="output file (default: standard output)")
    parser.set_defaults(func=lambda _main, args: run(parser, args))
    return parser


def run(parser, args):
    from .cli import unit_from_args
    if not args.name.isidentifier():
        parser.error(f"--name must be a Verilog identifier, not {args.name!r}")
    unit = unit_from_args(parser, args)
    text = generate(unit, args.name)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    except OSError as error:
        print(f"python -m hw verilog: cannot write {args.output}: {error.strerror}",
              file=sys.stderr)
        return 1
    print(f"wrote {args.output} (module {args.name}: K={unit.lanes} M={unit.rows} "
          f"{unit.weight_mode}, acc {unit.acc_width} bits, latency {unit.latency})",
          file=sys.stderr)
    return 0
