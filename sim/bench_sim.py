"""``python -m sim.bench_sim`` (``make bench-sim``): a BitNet b1.58 2B4T block through
the layer engine under Verilator, bit-exact, with simulated cycles and wall time."""

import argparse
import sys
import time

import numpy as np

from model.arith import OUT_WIDTH
from model.bitlinear import bitlinear_reference
from model.shapes import get_model

from .layer import EngineConfig, EngineSession, run_layer


def frac_bits_for(result):
    """Most fractional output bits that keep every output clear of saturation."""
    peak = float(np.max(np.abs(result.y))) + 1e-12
    return max(0, int(np.floor(np.log2((1 << (OUT_WIDTH - 2)) / peak))))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sim.bench_sim", description=__doc__)
    parser.add_argument("--lanes", type=int, default=EngineConfig.lanes)
    parser.add_argument("--rows", type=int, default=EngineConfig.rows)
    parser.add_argument("--model", default="b1.58-2b4t", help="shape source (model/shapes)")
    parser.add_argument("--tokens", type=int, default=1, help="tokens per layer (batch)")
    parser.add_argument("--only", action="append", metavar="PROJ",
                        help="run only this projection (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        shape = get_model(args.model)
    except ValueError as error:
        parser.error(str(error))
    if args.tokens < 1:
        parser.error("--tokens must be positive")
    projections = shape.projections()
    if args.only:
        unknown = set(args.only) - {p.name for p in projections}
        if unknown:
            parser.error(f"unknown projection {sorted(unknown)[0]!r}")
        projections = [p for p in projections if p.name in args.only]
    longest = max(p.in_features for p in projections)
    config = EngineConfig(lanes=args.lanes, rows=args.rows,
                          max_beats=max(1, -(-longest // args.lanes)))
    print(f"engine K={config.lanes} M={config.rows} ({config.lanes * config.rows} MACs/cycle),"
          f" latency {config.latency}; {shape.name} block, {args.tokens} token(s)",
          flush=True)
    started = time.monotonic()
    session = EngineSession(config)   # one simulator process serves every projection
    session.start()
    print(f"Verilator build: {session.build_seconds:.0f} s", flush=True)

    rng = np.random.default_rng(args.seed)
    header = ("| projection | N_out x N_in | MACs | cycles | predicted | bit-exact | wall s | "
              "cycles/s |")
    rows, runs = [], []
    try:
        for proj in projections:
            weights = rng.normal(size=(proj.out_features, proj.in_features))
            activations = rng.normal(size=(args.tokens, proj.in_features))
            result = bitlinear_reference(weights, activations)
            run = run_layer(proj.name, result, config, frac_bits=frac_bits_for(result),
                            session=session)
            runs.append(run)
            zeros = float(np.mean(result.weights == 0))
            rows.append(f"| {proj.name} | {proj.out_features} x {proj.in_features} | "
                        f"{run.macs / 1e6:.1f} M | {run.cycles} | {run.predicted} | "
                        f"{'yes' if run.exact else f'NO ({run.mismatches})'} | "
                        f"{run.wall_seconds:.1f} | {run.cycles_per_second:,.0f} |")
            print(f"  {proj.name}: {run.cycles} cycles, exact={run.exact}, "
                  f"{run.wall_seconds:.1f} s, {zeros:.0%} zero weights", flush=True)
    finally:
        session.close()
    cycles = sum(r.cycles for r in runs)
    wall = sum(r.wall_seconds for r in runs)
    rows.append(f"| **block** | | {sum(r.macs for r in runs) / 1e6:.1f} M | {cycles} | "
                f"{sum(r.predicted for r in runs)} | "
                f"{'yes' if all(r.exact for r in runs) else 'NO'} | {wall:.1f} | "
                f"{cycles / wall:,.0f} |")
    print()
    print(header)
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\ntotal wall time {time.monotonic() - started:.0f} s (build included)")
    return 0 if all(r.exact and r.cycles == r.predicted for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
