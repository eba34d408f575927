"""``ternary-accel sim``: the cocotb regression under Verilator, with a summary table."""

import csv
import json
import sys
import time

from ternary_accel.cli.argtypes import add_format, non_negative_int, refuse_unless
from ternary_accel.hw.paths import build_path
from ternary_accel.sim.config import REGRESSION_CONFIGS
from ternary_accel.sim.runner import run_config
from ternary_accel.sim.verilator import VerilatorNotFound, find_verilator


#: One line for ``ternary-accel --help``.
HELP = 'the cocotb regression of the matmul unit under Verilator'


def add_arguments(parser):
    """Add this command's flags to ``parser``."""
    parser.add_argument("--config", action="append", metavar="NAME",
                        help="run only this configuration (repeatable); names as listed "
                             "by --list")
    parser.add_argument("--list", action="store_true", help="list configurations and exit")
    parser.add_argument("--seed", type=non_negative_int, default=1,
                        help="cocotb seed (default: 1)")
    add_format(parser)
    parser.add_argument("--waves", action="store_true",
                        help="record waveforms (dump.vcd in each configuration's build "
                             "folder; the path is printed on stderr)")


def run(parser, args):
    """Run the command; return the exit status."""
    names = {config.name: config for config in REGRESSION_CONFIGS}
    refuse_unless(parser, args, not args.list, "without --list", "config", "seed", "waves",
                  "format")
    if args.list:
        print("\n".join(names))
        return 0
    configs = REGRESSION_CONFIGS
    if args.config:
        unknown = [name for name in args.config if name not in names]
        if unknown:
            parser.error(f"unknown configuration {unknown[0]!r}; see --list")
        configs = [names[name] for name in args.config]
    try:
        verilator = find_verilator()
    except VerilatorNotFound as error:
        print(f"ternary-accel sim: {error}", file=sys.stderr)
        return 1
    # csv and json: only the table on stdout, the rest beside the progress
    notes = sys.stdout if args.format == "markdown" else sys.stderr
    print(f"Verilator {'.'.join(map(str, verilator.version))} ({verilator.source}: "
          f"{verilator.executable})", file=notes)

    width = max(len("configuration"), *(len(config.name) for config in configs))
    header = (f"| {'configuration':<{width}} | {'result':<6} | {'tests':>5} | {'vectors':>7} | "
              f"{'cycles':>7} | {'build s':>7} | {'run s':>6} |")
    rows, records = [], []
    started = time.monotonic()
    for config in configs:
        print(f"running {config.name} ...", file=sys.stderr, flush=True)
        result = run_config(config, seed=args.seed, waves=args.waves)
        status = "PASS" if result.passed else "FAIL"
        rows.append(f"| {config.name:<{width}} | {status:<6} | {result.tests:>5} | "
                    f"{result.vectors:>7} | {result.cycles:>7} | "
                    f"{result.build_seconds:>7.1f} | {result.run_seconds:>6.1f} |")
        records.append({"configuration": config.name, "result": status,
                        "tests": result.tests, "vectors": result.vectors,
                        "cycles": result.cycles,
                        "build_seconds": round(result.build_seconds, 1),
                        "run_seconds": round(result.run_seconds, 1),
                        "failed": list(result.failed)})
        if not result.passed:
            print(f"  failed: {', '.join(result.failed)} "
                  f"(log: {build_path('sim', config.name, 'sim.log')})", file=notes)
        if args.waves:
            print(f"waveforms: {build_path('sim', config.name, 'dump.vcd')}", file=sys.stderr,
                  flush=True)
    if args.format == "json":
        print(json.dumps(records, indent=2))
    elif args.format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=list(records[0]),
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows({**r, "failed": " ".join(r["failed"])} for r in records)
    else:
        print()
        print(header)
        print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
        print("\n".join(rows))
    failed = sum("FAIL" in row for row in rows)
    print(f"\n{len(rows) - failed} passed, {failed} failed "
          f"({time.monotonic() - started:.0f} s)", file=notes)
    return 1 if failed else 0
