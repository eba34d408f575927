"""``ternary-accel bitstream`` (``make bitstream BOARD=...``): a board's LiteX SoC with
the accelerator, built into an ECP5 bitstream with the YoWASP Yosys, nextpnr-ecp5 and
ecppack.

The SoC is litex-boards' target of the board's LFE5U-85F variant (VexRiscv, LiteDRAM on
the board's memory, a UART) with the 16 x 32 layer engine on the bus and its DMA into
LiteDRAM. Prints progress on standard error, then the report (utilization against the
device, nextpnr's maximum frequency of each clock against its constraint, the tools, the
bitstream's path and size, the build time) as Markdown on standard output; with
``--results DIR`` writes it to ``DIR/bitstream-BOARD.md`` as well (and a JSON copy).
One place-and-route of an 85F SoC takes tens of minutes on two cores.
"""

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from ternary_accel.cli.argtypes import non_negative_int, output_dir, positive_float

#: One line for ``ternary-accel --help``.
HELP = "a board's LiteX SoC with the accelerator as an ECP5 bitstream (YoWASP tools)"

#: The boards (``ternary_accel.soc.boards.BOARDS``), named here so that ``--help`` and
#: the flag check need no LiteX; a test checks the two agree.
BOARD_NAMES = ("orangecrab", "ulx3s")

#: The system clocks accepted, in MHz: the ECP5's fabric, not the 1e6-times-larger Hz.
MAX_SYS_CLK_MHZ = 400.0


def sys_clk_mhz(text):
    """A system clock in MHz (60), refusing a value given in Hz (60e6)."""
    value = positive_float(text)
    if value > MAX_SYS_CLK_MHZ:
        raise argparse.ArgumentTypeError(
            f"is in MHz (at most {MAX_SYS_CLK_MHZ:g}), not {text}")
    return value


def add_arguments(parser):
    """Add this command's flags to ``parser``."""
    parser.add_argument("--board", choices=BOARD_NAMES, required=True,
                        help="the board (its LFE5U-85F variant)")
    parser.add_argument("--sys-clk-freq", type=sys_clk_mhz, default=60.0, metavar="MHZ",
                        help="system clock in MHz (default: %(default)g)")
    parser.add_argument("--seed", type=non_negative_int, default=1,
                        help="nextpnr's placement seed (default: %(default)s)")
    parser.add_argument("--build-dir", type=output_dir, default=None, metavar="DIR",
                        help="where LiteX and the tools write (default: "
                             "build/bitstream/BOARD)")
    parser.add_argument("--no-accelerator", action="store_true",
                        help="the stock SoC (CPU, LiteDRAM, UART) without the accelerator")
    parser.add_argument("--generate-only", action="store_true",
                        help="write the Verilog, BIOS and build scripts; run no FPGA tool")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: the report of the finished build in --build-dir")
    parser.add_argument("--results", dest="results_dir", type=output_dir, default=None,
                        metavar="DIR",
                        help="also write the report to DIR/bitstream-BOARD.md and .json "
                             "(the Makefile passes docs/results)")


def _say(text):
    print(f"bitstream: {text}", file=sys.stderr, flush=True)


def _argv(args):
    """The command's arguments as a user would type them (for the results' header)."""
    argv = ["bitstream", "--board", args.board]
    if args.sys_clk_freq != 60.0:
        argv += ["--sys-clk-freq", f"{args.sys_clk_freq:g}"]
    if args.seed != 1:
        argv += ["--seed", str(args.seed)]
    if args.build_dir is not None:
        argv += ["--build-dir", str(args.build_dir)]
    if args.no_accelerator:
        argv.append("--no-accelerator")
    if args.report_only:
        argv.append("--report-only")
    if args.results_dir is not None:
        argv += ["--results", str(args.results_dir)]
    return argv


def run(parser, args):
    from ternary_accel.hw.paths import build_path
    from ternary_accel.soc import boards
    from ternary_accel.soc.yowasp import ToolError
    build_dir = args.build_dir or build_path("bitstream", args.board)
    kwargs = dict(build_dir=build_dir, sys_clk_freq=args.sys_clk_freq * 1e6,
                  seed=args.seed, accelerator=not args.no_accelerator, log=_say)
    try:
        if args.report_only:
            result = boards.read_build(build_dir)
            if result.board != args.board:
                parser.error(f"--board {args.board}: the build in {build_dir} is of "
                             f"{result.board}")
        elif args.generate_only:
            gateware, name = boards.generate(args.board, **kwargs)
            _say(f"build files: {gateware} (run build_{name}.sh's steps with the YoWASP "
                 "tools: drop --generate-only)")
            return 0
        else:
            result = boards.build(args.board, **kwargs)
    except ToolError as error:
        print(f"ternary-accel bitstream: error: {error}", file=sys.stderr)
        return 1
    argv = _argv(args)
    print(boards.report_markdown(result))
    if args.results_dir is not None:
        from ternary_accel.cli.results import write_results
        name = f"bitstream-{args.board}"
        # write_results's header carries the title, the command, the date, the versions
        path = write_results(args.results_dir, name,
                             f"Bitstream: {boards.BOARDS[args.board].title}",
                             boards.report_markdown(result, title=False), argv=argv)
        Path(args.results_dir, f"{name}.json").write_text(
            json.dumps(asdict(result), indent=2) + "\n")
        _say(f"results: {path}")
    if not result.timing_met:
        _say("timing NOT met at the constraint (see the table)")
    return 0
