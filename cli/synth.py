"""``ternary-accel synth``: synthesis and place-and-route of one configuration."""

import json
import sys
from pathlib import Path

from ternary_accel.cli.argtypes import non_negative_int, output_dir, positive_float, refuse_unless
from ternary_accel.hw.paths import build_path
from ternary_accel.hw.fpga.synth import (LUTRAM_LUT4, TARGETS, ToolError, lut4_equivalent,
                                         run_flow, tool_versions)

__all__ = ["add_parser", "result_table", "write_report"]

COLUMNS = ("design", "target", "LUT4", "CCU2C", "LUT RAM", "LUT4 eq./MAC", "FF", "FF/MAC",
           "DSP", "BRAM", "Fmax MHz", "GMAC/s")


def result_row(result):
    """One table row; the per-MAC columns are "-" for a design without MACs."""
    macs = result.macs
    def per_mac(value):
        return f"{value / macs:.1f}" if macs else "-"
    return (result.design, result.target + (" -nodsp" if result.nodsp else ""),
            str(result.lut4), str(result.carry), str(result.lutram),
            per_mac(lut4_equivalent(result)),
            str(result.ff), per_mac(result.ff), str(result.dsp), str(result.bram),
            f"{result.fmax_mhz:.1f}", f"{macs * result.fmax_mhz / 1000:.1f}" if macs else "-")


def result_table(results, columns=COLUMNS):
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(result_row(r)) + " |" for r in results]
    return "\n".join(lines)


def write_report(results, outdir, stem, extra=""):
    """Write ``stem.md`` and ``stem.json`` under ``outdir``; return the Markdown."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    versions = tool_versions()
    seeds = sorted({r.seed for r in results})
    devices = sorted({f"{r.device} {r.package}" for r in results})
    header = (f"Tools: {', '.join(f'{k} {v}' for k, v in versions.items())}. "
              f"Devices: {', '.join(devices)}; seed {', '.join(map(str, seeds))}; "
              "out-of-context P&R, every port registered (harness FFs subtracted). "
              f"LUT4 eq. = LUT4 + 2 per carry cell + {LUTRAM_LUT4} per LUT RAM block (16 x 4 bits).")
    markdown = f"{header}\n\n{result_table(results)}\n{extra}"
    (outdir / f"{stem}.md").write_text(markdown + "\n")
    (outdir / f"{stem}.json").write_text(json.dumps(
        {"tools": versions, "results": [dict(r.to_dict(), lut4_equivalent=lut4_equivalent(r))
                                        for r in results]}, indent=2) + "\n")
    return markdown


def add_parser(subparsers):
    from ternary_accel.cli.hw import add_design_arguments
    parser = subparsers.add_parser(
        "synth", help="synthesize and place-and-route a configuration (YoWASP tools)",
        description="Yosys synthesis and nextpnr place-and-route of one matmul unit (or "
                    "lane group) configuration; prints a Markdown table and writes it with "
                    "a JSON copy under --outdir.")
    add_design_arguments(parser)
    parser.add_argument("--target", choices=tuple(TARGETS), default="ecp5",
                        help="device: ecp5 = LFE5U-45F CABGA381, ecp5-85k = LFE5U-85F, "
                             "ice40 = iCE40 UP5K sg48 (default: %(default)s)")
    parser.add_argument("--lane-group", action="store_true",
                        help="the lane group (one DotProduct of --lanes) instead of the unit")
    parser.add_argument("--engine", action="store_true",
                        help="the layer engine (trit unpacker + unit; ternary) instead of "
                             "the unit")
    parser.add_argument("--nodsp", action="store_true", help="no DSP blocks (ECP5)")
    parser.add_argument("--seed", type=non_negative_int, default=1, help="P&R seed (default: 1)")
    parser.add_argument("--freq", type=positive_float, default=250.0, metavar="MHZ",
                        help="P&R target frequency (default: %(default)s)")
    parser.add_argument("--synth-only", action="store_true",
                        help="skip place and route (no Fmax)")
    parser.add_argument("--outdir", type=output_dir, default=None,
                        help="where the reports go (default: build/reports)")
    parser.set_defaults(func=lambda _main, args: run(parser, args))
    return parser


def run(parser, args):
    from ternary_accel.cli.argtypes import FlagErrors
    # the unit's and engine's messages name the flags (the mapping's port_bits too)
    parser = FlagErrors(parser, port_bits="--weight-port-bits")
    args.outdir = args.outdir or build_path("reports")
    from ternary_accel.cli.hw import ENGINE_FLAGS, params_from_args
    from ternary_accel.hw.params import EngineParams
    from ternary_accel.hw.rtl.engine import LayerEngine
    from ternary_accel.hw.rtl.matmul import MatmulUnit
    from ternary_accel.hw.rtl.lanes import DotProduct
    from ternary_accel.hw.params import GENERIC
    if args.freq <= 0:
        parser.error(f"--freq must be positive, not {args.freq}")
    if args.fabric != GENERIC and TARGETS[args.target].family != args.fabric:
        parser.error(f"--fabric {args.fabric} builds {args.fabric} cells; it cannot be "
                     f"synthesized for --target {args.target}")
    if args.lane_group and args.engine:
        parser.error("--lane-group and --engine exclude each other")
    if not args.engine and EngineParams.engine_only_given(args):
        parser.error(f"{ENGINE_FLAGS} are engine parameters: add --engine")
    # the lane group is one DotProduct: the unit's rows and pipeline are not its own
    refuse_unless(parser, args, not args.lane_group, "to a unit or an engine, not with "
                  "--lane-group", "rows", "output_stage", "max_beats", "output_rows",
                  "act_copies")
    if args.lane_group:
        try:
            design = DotProduct(lanes=args.lanes, weight_mode=args.weight_mode,
                                levels_per_stage=args.levels_per_stage, fabric=args.fabric,
                                act_width=args.act_width)
        except (TypeError, ValueError) as error:
            parser.error(str(error))
        name = f"lanes{args.lanes}_{args.weight_mode}"
        name += "" if args.act_width == 8 else f"_a{args.act_width}"
        macs, config = args.lanes, {"component": "DotProduct", "lanes": args.lanes,
                                    "weight_mode": args.weight_mode,
                                    "levels_per_stage": args.levels_per_stage,
                                    "fabric": args.fabric, "act_width": args.act_width}
    else:
        params = params_from_args(parser, args, engine=args.engine)
        design = (LayerEngine if args.engine else MatmulUnit)(params)
        name, macs = params.report_name, args.rows * args.lanes
        config = {"component": type(design).__name__, **params.to_dict()}
    name += "_nodsp" if args.nodsp else ""
    name += f"_{args.fabric}" if args.fabric != GENERIC else ""
    try:
        result = run_flow(design, design=name, workdir=build_path("synth", name),
                          target=args.target, seed=args.seed, freq_mhz=args.freq,
                          nodsp=args.nodsp, place=not args.synth_only, macs=macs,
                          config=config,
                          log=lambda message: print(message, file=sys.stderr, flush=True))
    except ToolError as error:
        print(f"ternary-accel synth: {error}", file=sys.stderr)
        return 1
    print(write_report([result], args.outdir, name))
    print(f"\nwrote {args.outdir / (name + '.md')} and .json", file=sys.stderr)
    return 0
