"""``ternary-accel regmap`` (``make regmap``): the accelerator's register map
(``hw/regmap.py``: the token system's, or with ``--map layer`` the layer system's) as a
C header, a Python constants module, the Markdown page (``docs/registers.md``,
``docs/registers-layer.md``) or JSON, on standard output or to ``-o FILE``."""

import sys

from ternary_accel.cli.argtypes import output_file

#: One line for ``ternary-accel --help``.
HELP = "the register map of the AXI4-Lite slave as a C header, Python, Markdown or JSON"


def add_arguments(parser):
    """Add this command's flags to ``parser``."""
    from ternary_accel.hw.regmap import REGMAPS
    from ternary_accel.hw.regmap_formats import FORMATS
    parser.add_argument("--map", choices=tuple(REGMAPS), default="token",
                        help="the token system's map or the layer system's (default: "
                             "%(default)s)")
    parser.add_argument("--format", choices=tuple(FORMATS), default="markdown",
                        help="what to write (default: %(default)s)")
    parser.add_argument("-o", "--output", type=output_file, default=None, metavar="FILE",
                        help="write to FILE (default: standard output)")


def run(parser, args):
    from ternary_accel.hw.regmap import REGMAPS
    from ternary_accel.hw.regmap_formats import render
    text = render(args.format, REGMAPS[args.map])
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f"{args.format}: {args.output}", file=sys.stderr)
    return 0
