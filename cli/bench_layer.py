"""``ternary-accel bench layer`` (``make bench-sim``): the linear layers of BitNet b1.58
2B4T blocks through the layer engine under Verilator, every output bit-exact, with
simulated cycles, simulation speed and wall time.

By default one block (its seven projections, one token) on the memory-played harness
(``--bench memory``, :mod:`sim.tb_harness`); ``--layers 30`` runs a whole token's
linear layers, each layer with weights of its own; ``--bench cycle`` runs the per-cycle
cocotb bench instead, for comparison. ``--idle``/``--backpressure`` add random stalls.

Weight reuse (``--reuse T``, with ``--weight-port-bits`` and ``--packing``): the engine
applies each weight beat to T tokens, so a prompt of ``--tokens`` tokens reads the
weights ``ceil(tokens / T)`` times (``make bench-prefill``: 16 tokens, T = 16, a
128-bit port). The summary then says whether the block is compute-bound at the
memory bandwidth ``--bandwidth`` with the clock ``--fmax``: a projection from the
simulated cycles, labelled as one.
"""

import sys
import time

import numpy as np

from ternary_accel.cli.results import render_records
from ternary_accel.cli.argtypes import (FlagErrors, add_format, non_negative_int, output_dir,
                                        positive_float, probability)
from ternary_accel.cli.argtypes import positive_int as positive
from ternary_accel.model.arith import OUT_WIDTH, matmul_int
from ternary_accel.model.bitlinear import BitLinearResult, bitlinear_reference
from ternary_accel.model.quant import quantize_activations
from ternary_accel.model.shapes import get_model

from ternary_accel.hw.mapping import PACKINGS

from ternary_accel.sim.build import BENCHES, MEMORY_BENCH
from ternary_accel.sim.config import HarnessConfig
from ternary_accel.hw.params import EngineParams, ParamsError, flagged
from ternary_accel.sim.session import EngineSession
from ternary_accel.sim.workloads import run_layer
from ternary_accel.hw.rtl.engine import LayerEngine


def frac_bits_for(result):
    """Most fractional output bits that keep every output clear of saturation."""
    peak = float(np.max(np.abs(result.y))) + 1e-12
    return max(0, int(np.floor(np.log2((1 << (OUT_WIDTH - 2)) / peak))))


def gaussian_layer(rng, n_out, n_in, tokens):
    """Gaussian master weights through the absmean quantizer (31 % zeros)."""
    return bitlinear_reference(rng.normal(size=(n_out, n_in)),
                               rng.normal(size=(tokens, n_in)))


def ternary_layer(rng, n_out, n_in, tokens):
    """Ternary weights drawn directly, a third of each value (ten times faster to make
    than :func:`gaussian_layer`, for many layers); activations quantized as usual."""
    weights = rng.integers(-1, 2, size=(n_out, n_in), dtype=np.int8)
    qx = quantize_activations(rng.normal(size=(tokens, n_in)))
    acc = matmul_int(weights, qx.values)
    return BitLinearResult(weights, qx.values, 1.0, qx.scale, acc,
                           acc / qx.scale[:, None])


WEIGHTS = {"gaussian": gaussian_layer, "ternary": ternary_layer}


#: One line for ``ternary-accel --help``.
HELP = "BitNet projections through the engine's RTL, bit-exact, timed"


def add_arguments(parser):
    """Add this command's flags to ``parser``."""
    parser.add_argument("--lanes", type=positive, default=EngineParams.lanes)
    parser.add_argument("--rows", type=positive, default=EngineParams.rows)
    parser.add_argument("--model", default="b1.58-2b4t", help="shape source (model/shapes)")
    parser.add_argument("--tokens", type=positive, default=1, help="tokens per layer (batch)")
    parser.add_argument("--layers", type=positive, default=1,
                        help="blocks to run, each with its own weights (default: "
                             "%(default)s)")
    parser.add_argument("--only", action="append", metavar="PROJ",
                        help="run only this projection (repeatable)")
    parser.add_argument("--bench", choices=BENCHES, default=MEMORY_BENCH,
                        help="memory: streams played inside the simulator (default); "
                             "cycle: driven from Python every cycle")
    parser.add_argument("--weights", choices=sorted(WEIGHTS), default=None,
                        help="gaussian (absmean-quantized, the default for one layer) or "
                             "ternary (drawn directly, the default for several)")
    parser.add_argument("--idle", type=probability, default=0.0,
                        help="probability of an idle cycle on each input stream")
    parser.add_argument("--backpressure", type=probability, default=0.0,
                        help="probability of a not-ready cycle on the results")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--build-dir", type=output_dir, default=None,
                        help="where the engine is built (default build/sim)")
    parser.add_argument("--reuse", type=positive, default=1, metavar="T",
                        help="the engine's weight reuse: each weight beat applied to up "
                             "to T tokens (default 1)")
    parser.add_argument("--weight-port-bits", type=positive, default=None, metavar="BITS",
                        help="width of the engine's weight port (default: a whole beat)")
    parser.add_argument("--packing", choices=PACKINGS, default=None,
                        help="packing of the port's words (default: 3in5 on a port, "
                             "base3 for whole beats)")
    parser.add_argument("--output-rows", type=positive, default=None, metavar="R",
                        help="rows a cycle of the pipelined output stage (default: the "
                             "two-register stage)")
    parser.add_argument("--bandwidth", type=positive_float, default=3.2, metavar="GBPS",
                        help="DRAM bandwidth of the compute-bound check (default 3.2)")
    parser.add_argument("--fmax", type=positive_float, default=None, metavar="MHZ",
                        help="engine clock of the compute-bound check (default: the "
                             "ecp5-ddr3 preset's clock, hw.platforms)")
    add_format(parser)
    parser.add_argument("--waves", action="store_true",
                        help="record every signal of the engine to a VCD (a traced build of "
                             "its own; slower); the file's path is printed on stderr")


def run(parser, args):
    """Run the command; return the exit status."""
    # the engine's messages name its parameters: its tokens are this command's --reuse
    parser = FlagErrors(parser, tokens="--reuse", port_bits="--weight-port-bits")
    if args.bandwidth <= 0 or (args.fmax is not None and args.fmax <= 0):
        parser.error("--bandwidth and --fmax must be positive")
    try:
        shape = get_model(args.model)
    except ValueError as error:
        parser.error(str(error))
    from ternary_accel.cli.perf import check_context
    check_context(parser, args.model, args.tokens, "--tokens", tokens=0)
    make = WEIGHTS[args.weights or ("gaussian" if args.layers == 1 else "ternary")]
    projections = shape.projections()
    if args.only:
        unknown = set(args.only) - {p.name for p in projections}
        if unknown:
            parser.error(f"unknown projection {sorted(unknown)[0]!r}")
        projections = [p for p in projections if p.name in args.only]
    longest = max(p.in_features for p in projections)
    try:
        config = EngineParams(lanes=args.lanes, rows=args.rows,
                              max_beats=max(1, -(-longest // args.lanes)),
                              tokens=args.reuse, weight_port_bits=args.weight_port_bits,
                              packing=args.packing, output_rows=args.output_rows)
        LayerEngine(config)               # the engine's own checks, before a build
        for p in projections:
            config.mapping(p.out_features, p.in_features)
    except ParamsError as error:             # the engine's parameters, as this command's flags
        parser.error(flagged(str(error), {"tokens": "--reuse"}))
    except ValueError as error:
        parser.error(str(error))
    mappings = {p.name: config.mapping(p.out_features, p.in_features, args.tokens)
                for p in projections}
    # the memories hold the largest layer's streams (port words can outnumber beats)
    largest = max(mappings.values(), key=lambda m: m.weight_beats)
    words = largest.row_tiles * largest.col_beats * largest.port_words_per_beat
    defaults = HarnessConfig()
    harness = HarnessConfig(act_depth=max(defaults.act_depth,
                                          args.tokens * max(m.col_beats
                                                            for m in mappings.values())),
                            wgt_depth=max(defaults.wgt_depth, 1 << (words - 1).bit_length()),
                            res_depth=max(defaults.res_depth,
                                          max(m.result_words for m in mappings.values())))
    stalls = (f", idle {args.idle:.0%}, backpressure {args.backpressure:.0%}"
              if args.idle or args.backpressure else "")
    reuse = (f", weight reuse T={config.tokens}" if config.tokens > 1 else "") + \
        (f", {config.weight_port_bits}-bit weight port ({config.packing})"
         if config.weight_port_bits else "")
    # csv and json: the table alone on stdout, its description and summary on stderr
    notes = sys.stdout if args.format == "markdown" else sys.stderr
    print(f"engine K={config.lanes} M={config.rows} ({config.lanes * config.rows} MACs/cycle),"
          f" latency {config.latency}{reuse}; {shape.name}, {args.layers} block(s), "
          f"{args.tokens} token(s), {args.bench} bench{stalls}", file=notes, flush=True)
    started = time.monotonic()
    session = EngineSession(config, bench=args.bench, idle=args.idle,
                            backpressure=args.backpressure, seed=args.seed + 1,
                            build_root=args.build_dir,
                            harness=harness if args.bench == MEMORY_BENCH else None,
                            waves=args.waves)
    session.start()   # one simulator process serves every projection
    if args.waves:
        print(f"waveforms: {session.waves_file}", file=sys.stderr, flush=True)
    phases = session.build_phases
    print(f"build: {session.build_seconds:.1f} s (generate {phases['generate']:.1f} s, "
          f"Verilator and C++ {phases['compile']:.1f} s)", file=sys.stderr, flush=True)

    rng = np.random.default_rng(args.seed)
    totals = {p.name: dict(proj=p, runs=0, cycles=0, predicted=0, exact=True, load=0.0,
                           simulate=0.0, wall=0.0, mismatches=0) for p in projections}
    make_seconds = 0.0
    try:
        for layer in range(args.layers):
            layer_started = time.monotonic()
            for proj in projections:
                made = time.monotonic()
                result = make(rng, proj.out_features, proj.in_features, args.tokens)
                make_seconds += time.monotonic() - made
                run = run_layer(proj.name, result, config, frac_bits=frac_bits_for(result),
                                session=session)
                t = totals[proj.name]
                t["runs"] += 1
                t["cycles"] += run.cycles
                t["predicted"] += run.predicted
                t["exact"] &= run.exact
                t["mismatches"] += run.mismatches
                t["load"] += run.timing.get("load", 0.0)
                t["simulate"] += run.timing.get("simulate", 0.0)
                t["wall"] += run.wall_seconds
                if args.layers == 1:
                    print(f"  {proj.name}: {run.cycles} cycles, exact={run.exact}, "
                          f"{run.wall_seconds:.2f} s", file=sys.stderr, flush=True)
            if args.layers > 1:
                done = [t for t in totals.values() if t["runs"] == layer + 1]
                print(f"  layer {layer + 1}/{args.layers}: "
                      f"{'bit-exact' if all(t['exact'] for t in done) else 'MISMATCH'}, "
                      f"{time.monotonic() - layer_started:.1f} s", file=sys.stderr, flush=True)
    finally:
        session.close()

    def row(name, shape_text, t_list):
        cycles = sum(t["cycles"] for t in t_list)
        simulate = sum(t["simulate"] for t in t_list)
        exact = all(t["exact"] for t in t_list)
        mism = sum(t["mismatches"] for t in t_list)
        macs = sum(t["proj"].out_features * t["proj"].in_features * args.tokens * t["runs"]
                   for t in t_list)
        rate = f"{cycles / simulate:,.0f}" if simulate else "-"
        return (f"| {name} | {shape_text} | {sum(t['runs'] for t in t_list)} | "
                f"{macs / 1e6:,.1f} M | {cycles:,} | "
                f"{sum(t['predicted'] for t in t_list):,} | "
                f"{'yes' if exact else f'NO ({mism})'} | "
                f"{sum(t['load'] for t in t_list):.2f} | {simulate:.2f} | {rate} | "
                f"{sum(t['wall'] for t in t_list):.2f} |")

    def record(name, t_list):
        simulate = sum(t["simulate"] for t in t_list)
        cycles = sum(t["cycles"] for t in t_list)
        return {"projection": name,
                "out_features": t_list[0]["proj"].out_features if len(t_list) == 1 else None,
                "in_features": t_list[0]["proj"].in_features if len(t_list) == 1 else None,
                "runs": sum(t["runs"] for t in t_list),
                "macs": sum(t["proj"].out_features * t["proj"].in_features * args.tokens *
                            t["runs"] for t in t_list),
                "cycles": cycles, "predicted": sum(t["predicted"] for t in t_list),
                "bit_exact": all(t["exact"] for t in t_list),
                "mismatches": sum(t["mismatches"] for t in t_list),
                "load_s": round(sum(t["load"] for t in t_list), 2),
                "simulate_s": round(simulate, 2),
                "cycles_per_s": round(cycles / simulate) if simulate else None,
                "wall_s": round(sum(t["wall"] for t in t_list), 2)}

    label = "**block**" if args.layers == 1 else f"**{args.layers} blocks**"
    if args.format == "markdown":
        print()
        print("| projection | N_out x N_in | runs | MACs | cycles | predicted | bit-exact | "
              "load s | simulate s | cycles/s | wall s |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for t in totals.values():
            p = t["proj"]
            print(row(p.name, f"{p.out_features} x {p.in_features}", [t]))
        print(row(label, "", list(totals.values())))
    else:
        records = [record(t["proj"].name, [t]) for t in totals.values()]
        records.append(record(label.strip("*"), list(totals.values())))
        print(render_records(records, args.format))
    cycles = sum(t["cycles"] for t in totals.values())
    if cycles:
        from ternary_accel.hw.perf.platforms import get_platform
        fmax = args.fmax or get_platform("ecp5-ddr3").clock()[0]
        moved = args.layers * sum(m.weight_bytes for m in mappings.values())
        passes = {m.batches for m in mappings.values()}.pop()
        compute_s, memory_s = cycles / (fmax * 1e6), moved / (args.bandwidth * 1e9)
        print(f"\nweights read {passes} time(s) for {args.tokens} token(s): "
              f"{moved / 1e6:,.2f} MB ({moved / max(1, cycles):.2f} B/cycle); "
              f"projection at {fmax:g} MHz and {args.bandwidth:g} GB/s: compute "
              f"{compute_s * 1e3:.2f} ms, weight traffic {memory_s * 1e3:.2f} ms: "
              f"{'compute' if compute_s >= memory_s else 'memory'}-bound, "
              f"{args.tokens / max(compute_s, memory_s):,.1f} tokens/s for these layers",
              file=notes)
    total = time.monotonic() - started
    print(f"\nwall time {total:.1f} s: build {session.build_seconds:.1f} s, making the "
          f"layers {make_seconds:.1f} s, the rest planning, loading, simulating, checking",
          file=notes)
    ok = all(t["exact"] and t["cycles"] == t["predicted"] for t in totals.values()) \
        if not (args.idle or args.backpressure) else all(t["exact"] for t in totals.values())
    return 0 if ok else 1
