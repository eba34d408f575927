"""``python -m hw perf``: cycles per token and tokens per second of a model on the layer
engine, compute-bound or weight-bandwidth-bound (the batch-1 decoding roofline)."""

import json
from pathlib import Path

from model.shapes import MODELS, get_model

from .engine import DEFAULT_LANES, DEFAULT_ROWS, LayerMapping

__all__ = ["add_parser", "projection_rows", "DEFAULT_BANDWIDTH_GBS",
           "FALLBACK_CLOCK_MHZ"]

#: DDR3-1600 on a 16-bit bus (1600 MT/s x 2 bytes), the memory of typical ECP5 boards.
DEFAULT_BANDWIDTH_GBS = 3.2
#: Clock used when no FPGA report of the configuration exists yet (see --clock-mhz).
FALLBACK_CLOCK_MHZ = 100.0
REPORTS = Path("build/reports")


def reported_fmax(lanes, rows, reports=REPORTS):
    """Fmax (MHz) of the layer engine ``engine{rows}x{lanes}`` from ``make bench-area``,
    else of the ternary ``unit{rows}x{lanes}`` (bench-area's ECP5-fabric build, or
    ``hw synth`` reports), or None."""
    found = {}
    for path in sorted(reports.glob("*.json")) if reports.exists() else ():
        try:
            results = json.loads(path.read_text())["results"]
        except (ValueError, KeyError, OSError):
            continue
        for result in results:
            if result.get("fmax_mhz"):
                found.setdefault(result.get("design", ""), float(result["fmax_mhz"]))
    for name in (f"engine{rows}x{lanes}", f"unit{rows}x{lanes}",
                 f"unit{rows}x{lanes}_ternary_ecp5",
                 f"unit{rows}x{lanes}_ternary"):
        if name in found:
            return found[name]
    return None


def projection_rows(shape, *, lanes, rows, clock_mhz, bandwidth_gbs, tokens=1):
    """Per projection of one block: cycles, weight bytes, and the bound."""
    out = []
    for proj in shape.projections():
        mapping = LayerMapping(proj.out_features, proj.in_features, tokens, lanes, rows)
        cycles = mapping.cycles
        weight_bytes = mapping.weight_bytes  # the engine streams the weights per token
        compute_s = cycles / (clock_mhz * 1e6)
        memory_s = weight_bytes / (bandwidth_gbs * 1e9)
        out.append({"name": proj.name, "shape": f"{proj.out_features} x {proj.in_features}",
                    "cycles": cycles, "bytes": weight_bytes, "compute_s": compute_s,
                    "memory_s": memory_s, "seconds": max(compute_s, memory_s),
                    "bound": "compute" if compute_s >= memory_s else "memory"})
    return out


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "perf", help="cycles per token and tokens/s of a model on the layer engine",
        description="Throughput projection for batch-1 decoding: per projection and for "
                    "the whole model, cycles per token on the layer engine and the time "
                    "at a clock, against the time to read the packed weights (1.6 bits "
                    "per weight) at a memory bandwidth.")
    parser.add_argument("--model", default="b1.58-2b4t",
                        help=f"model shape ({', '.join(MODELS)}; default: %(default)s)")
    parser.add_argument("--lanes", "-k", type=int, default=DEFAULT_LANES)
    parser.add_argument("--rows", "-m", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--clock-mhz", type=float, default=None,
                        help="clock (default: the Fmax of the configuration in "
                             f"build/reports, else {FALLBACK_CLOCK_MHZ:g} MHz)")
    parser.add_argument("--bandwidth-gbs", type=float, default=DEFAULT_BANDWIDTH_GBS,
                        help="weight bandwidth in GB/s (default: %(default)s = DDR3-1600 "
                             "x16; LPDDR4-3200 x32 is 12.8)")
    parser.set_defaults(func=lambda _main, args: run(parser, args))
    return parser


def run(parser, args):
    try:
        shape = get_model(args.model)
    except ValueError as error:
        parser.error(str(error))
    for flag in ("lanes", "rows"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be positive")
    if args.bandwidth_gbs <= 0 or (args.clock_mhz is not None and args.clock_mhz <= 0):
        parser.error("--clock-mhz and --bandwidth-gbs must be positive")
    clock, source = args.clock_mhz, "given"
    if clock is None:
        clock = reported_fmax(args.lanes, args.rows)
        source = "Fmax from build/reports" if clock else \
            f"no FPGA report for unit{args.rows}x{args.lanes}: fallback"
        clock = clock or FALLBACK_CLOCK_MHZ
    try:
        rows = projection_rows(shape, lanes=args.lanes, rows=args.rows, clock_mhz=clock,
                               bandwidth_gbs=args.bandwidth_gbs)
    except ValueError as error:
        parser.error(f"{shape.name} does not tile onto K={args.lanes} M={args.rows}: {error}")
    print(f"{shape.name} on the layer engine K={args.lanes} x M={args.rows} "
          f"({args.lanes * args.rows} MACs/cycle) at {clock:.1f} MHz ({source}), weights "
          f"packed 5 per byte at {args.bandwidth_gbs:g} GB/s, batch 1\n")
    print("| projection | N_out x N_in | cycles/token | weight MB | compute us | memory us "
          "| bound |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['shape']} | {r['cycles']} | {r['bytes'] / 1e6:.2f} | "
              f"{r['compute_s'] * 1e6:.1f} | {r['memory_s'] * 1e6:.1f} | {r['bound']} |")
    block_s = sum(r["seconds"] for r in rows)
    block_cycles = sum(r["cycles"] for r in rows)
    block_bytes = sum(r["bytes"] for r in rows)
    model_s = block_s * shape.layers
    print(f"| **block** | | {block_cycles} | {block_bytes / 1e6:.2f} | "
          f"{sum(r['compute_s'] for r in rows) * 1e6:.1f} | "
          f"{sum(r['memory_s'] for r in rows) * 1e6:.1f} | |")
    compute_tps = 1 / (sum(r["compute_s"] for r in rows) * shape.layers)
    memory_tps = 1 / (sum(r["memory_s"] for r in rows) * shape.layers)
    print(f"\n{shape.layers} layers: {block_cycles * shape.layers:,} cycles per token; "
          f"{1 / model_s:.1f} tokens/s (compute alone {compute_tps:.1f}, weight "
          f"bandwidth alone {memory_tps:.1f}): "
          f"{'memory' if memory_tps < compute_tps else 'compute'}-bound. Linear layers "
          f"only (no attention, norms or LM head); weights read once per token.")
    return 0
