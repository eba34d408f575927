"""``ternary-accel bench block`` (``make bench-block``): one decoder layer through the RTL.

A prompt of a few tokens, then decode steps with the KV cache, through one BitNet b1.58
decoder layer: all seven BitLinears of every step on the layer engine under Verilator
(built without the output stage, so it returns the exact accumulators), the rest
(norms, RoPE, attention, squared ReLU, residuals) in the golden model. Every step's
output hidden states are compared with the golden model's, bit for bit, and every
projection's simulated cycles with the cycle model.

The layer is 2B4T-shaped with random Gaussian master weights ternarized per projection
(``--model`` for another shape), or layer N of a checkpoint (``--checkpoint DIR --layer
N``, fed the golden model's hidden states of layers 0..N-1 on random token ids).
"""

import json
import sys
import time
from collections import defaultdict
from dataclasses import replace

import numpy as np

from ternary_accel.cli.results import render_records
from ternary_accel.cli.argtypes import (FlagErrors, add_format, non_negative_int, output_dir,
                                        positive_int, refuse_unless)
from ternary_accel.model.config import BITNET_2B4T, ModelConfig
from ternary_accel.model.decoder import Decoder
from ternary_accel.model.shapes import MODELS, get_model
from ternary_accel.model.weights import MasterWeights, PROJECTIONS, random_master_weights

from ternary_accel.sim.build import BENCHES, MEMORY_BENCH
from ternary_accel.hw.params import EngineParams
from ternary_accel.sim.session import EngineSession
from ternary_accel.sim.workloads import EngineCore


def layer_config(shape):
    """A one-layer configuration of 2B4T's numerics with ``shape``'s sizes (a small
    vocabulary: the embedding is not used)."""
    return ModelConfig(replace(shape, name=f"{shape.name}-layer", layers=1, vocab=256),
                       rope_theta=BITNET_2B4T.rope_theta,
                       rms_norm_eps=BITNET_2B4T.rms_norm_eps,
                       max_position_embeddings=BITNET_2B4T.max_position_embeddings)


#: One line for ``ternary-accel --help``.
HELP = 'one decoder layer (prompt + decode steps) through the RTL'


def add_arguments(parser):
    """Add this command's flags to ``parser``."""
    parser.add_argument("--model", default="b1.58-2b4t",
                        help=f"layer shape ({', '.join(MODELS)}; default: %(default)s)")
    parser.add_argument("--checkpoint", metavar="DIR", help="run a layer of this checkpoint")
    parser.add_argument("--layer", type=non_negative_int, default=0, help="layer of --checkpoint")
    parser.add_argument("--prompt-tokens", type=positive_int, default=3, metavar="T")
    parser.add_argument("--decode-steps", type=non_negative_int, default=2, metavar="N")
    parser.add_argument("--lanes", type=positive_int, default=EngineParams.lanes)
    parser.add_argument("--rows", type=positive_int, default=EngineParams.rows)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--bench", choices=BENCHES, default=MEMORY_BENCH,
                        help="memory: streams played inside the simulator (default); "
                             "cycle: driven from Python every cycle")
    parser.add_argument("--build-dir", type=output_dir, default=None,
                        help="where the engine is built (default build/sim)")
    add_format(parser)
    parser.add_argument("--waves", action="store_true",
                        help="record every signal of the engine to a VCD (a traced build of "
                             "its own; slower); the file's path is printed on stderr")


def run(parser, args):
    """Run the command; return the exit status."""
    parser = FlagErrors(parser)     # library messages name the flags

    refuse_unless(parser, args, args.checkpoint, "with --checkpoint", "layer")
    refuse_unless(parser, args, not args.checkpoint, "without --checkpoint (the "
                  "checkpoint gives the shape)", "model")
    rng = np.random.default_rng(args.seed)
    if args.checkpoint:
        from ternary_accel.model.checkpoint import CheckpointError, load_checkpoint
        try:
            source = load_checkpoint(args.checkpoint)
        except CheckpointError as error:
            parser.exit(1, f"{parser.prog}: error: {error}\n")
        if not 0 <= args.layer < source.config.layers:
            parser.error(f"--layer must be in 0..{source.config.layers - 1}")
        layer, config = args.layer, source.config
    else:
        try:
            shape = get_model(args.model)
        except ValueError as error:
            parser.error(str(error))
        try:
            config = layer_config(shape)
        except ValueError as error:
            parser.error(f"{shape.name} is not a BitNet b1.58 decoder: {error}")
        layer = 0
    limit = config.max_position_embeddings
    if args.prompt_tokens > limit:
        parser.error(f"--prompt-tokens {args.prompt_tokens}: the model holds at most "
                     f"{limit} positions (max_position_embeddings)")
    if args.prompt_tokens + args.decode_steps > limit:
        parser.error(f"--decode-steps {args.decode_steps}: with --prompt-tokens "
                     f"{args.prompt_tokens} the model holds at most "
                     f"{limit - args.prompt_tokens} (max_position_embeddings {limit})")
    widest = max(p.in_features for p in config.shape.projections())
    engine = EngineParams(lanes=args.lanes, rows=args.rows,
                          max_beats=-(-widest // args.lanes), output_stage=False)
    try:
        for p in config.shape.projections():
            engine.mapping(p.out_features, p.in_features)
    except ValueError as error:
        parser.error(f"the layer does not tile onto K={args.lanes} M={args.rows}: {error}")

    if not args.checkpoint:     # the sizes are checked first: the weights take seconds
        source = MasterWeights(config, random_master_weights(config, args.seed))
    golden = Decoder(source)
    steps = [args.prompt_tokens] + [1] * args.decode_steps
    # Layer inputs: Gaussian hidden states, or a checkpoint's hidden states at `layer`.
    if args.checkpoint:
        ids = rng.integers(0, config.vocab, size=sum(steps))
        inputs, cache = golden.embed(ids), golden.new_cache()
        for index in range(layer):    # causal: one pass gives every position's input
            inputs = golden.layer_forward(index, inputs, cache)
    else:
        inputs = rng.normal(size=(sum(steps), config.hidden)).astype(np.float32)
    # csv and json: the tables alone on stdout, their description and verdict on stderr
    notes = sys.stdout if args.format == "markdown" else sys.stderr
    print(f"{config.shape.name} layer {layer}: prompt of {args.prompt_tokens} tokens, "
          f"{args.decode_steps} decode steps; engine K={engine.lanes} M={engine.rows} "
          f"({engine.lanes * engine.rows} MACs/cycle, raw accumulators)", file=notes,
          flush=True)
    started = time.monotonic()
    session = EngineSession(engine, build_root=args.build_dir, bench=args.bench,
                            waves=args.waves)
    session.start()
    if args.waves:
        print(f"waveforms: {session.waves_file}", file=sys.stderr, flush=True)
    print(f"build ({args.bench} bench): {session.build_seconds:.1f} s", file=sys.stderr,
          flush=True)
    core = EngineCore(session)
    rtl = Decoder(source, core=core)
    cache_g, cache_r = golden.new_cache(), rtl.new_cache()
    # layer_forward leaves the position count to the caller (Decoder.forward does it).
    step_rows, offset = [], 0
    try:
        for number, tokens in enumerate(steps):
            x = inputs[offset:offset + tokens]
            offset += tokens
            first = len(core.calls)
            t0 = time.monotonic()
            want = golden.layer_forward(layer, x, cache_g)
            got = rtl.layer_forward(layer, x, cache_r)
            cache_g.length += tokens
            cache_r.length += tokens
            calls = core.calls[first:]
            exact = np.array_equal(got, want)
            kind = "prefill" if number == 0 else f"decode {number}"
            step_rows.append((kind, tokens, cache_r.length, sum(c["cycles"] for c in calls),
                              sum(c["predicted"] for c in calls), exact,
                              time.monotonic() - t0))
            print(f"  {kind}: {tokens} token(s), bit-exact={exact}, "
                  f"{step_rows[-1][3]:,} cycles, {step_rows[-1][6]:.1f} s", file=sys.stderr,
                  flush=True)
    finally:
        session.close()

    per = defaultdict(lambda: {"calls": 0, "tokens": 0, "cycles": 0, "predicted": 0,
                               "wall": 0.0, "simulate": 0.0})
    for c in core.calls:
        p = per[c["name"]]
        p["calls"] += 1
        p["tokens"] += c["tokens"]
        p["cycles"] += c["cycles"]
        p["predicted"] += c["predicted"]
        p["wall"] += c["wall_seconds"]
        p["simulate"] += c["simulate_seconds"]
    shapes = {p.name: p for p in config.shape.projections()}
    def rate(cycles, seconds):
        return f"{cycles / seconds:,.0f}" if seconds else "-"

    if args.format == "markdown":
        print("\n| projection | N_out x N_in | calls | tokens | cycles | cycle model | wall s | "
              "simulate s | cycles/s |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name in PROJECTIONS:
            p, s = per[name], shapes[name]
            print(f"| {name} | {s.out_features} x {s.in_features} | {p['calls']} | "
                  f"{p['tokens']} | {p['cycles']:,} | {p['predicted']:,} | {p['wall']:.2f} | "
                  f"{p['simulate']:.2f} | {rate(p['cycles'], p['simulate'])} |")
        cycles = sum(p["cycles"] for p in per.values())
        predicted = sum(p["predicted"] for p in per.values())
        wall = sum(p["wall"] for p in per.values())
        simulate = sum(p["simulate"] for p in per.values())
        print(f"| **layer** | | {len(core.calls)} | {sum(steps)} | {cycles:,} | "
              f"{predicted:,} | {wall:.2f} | {simulate:.2f} | {rate(cycles, simulate)} |")
        print("\n| step | tokens | context | cycles | cycle model | hidden states bit-exact | "
              "wall s |")
        print("|---|---|---|---|---|---|---|")
        for kind, tokens, context, cyc, pred, exact, secs in step_rows:
            print(f"| {kind} | {tokens} | {context} | {cyc:,} | {pred:,} | "
                  f"{'yes' if exact else 'NO'} | {secs:.2f} |")
    else:
        cycles = sum(p["cycles"] for p in per.values())
        predicted = sum(p["predicted"] for p in per.values())
        projections = [{"projection": name, "out_features": shapes[name].out_features,
                        "in_features": shapes[name].in_features,
                        "calls": per[name]["calls"], "tokens": per[name]["tokens"],
                        "cycles": per[name]["cycles"], "predicted": per[name]["predicted"],
                        "wall_s": round(per[name]["wall"], 2),
                        "simulate_s": round(per[name]["simulate"], 2)}
                       for name in PROJECTIONS]
        step_table = [{"step": kind, "tokens": tokens, "context": context, "cycles": cyc,
                       "predicted": pred, "bit_exact": exact, "wall_s": round(secs, 2)}
                      for kind, tokens, context, cyc, pred, exact, secs in step_rows]
        if args.format == "json":
            print(json.dumps({"projections": projections, "steps": step_table}, indent=2))
        else:           # two CSV tables, a blank line between them
            print(render_records(projections, "csv") + "\n\n" +
                  render_records(step_table, "csv"))
    ok = all(r[5] for r in step_rows) and cycles == predicted
    print(f"\n{'all steps bit-exact' if ok else 'MISMATCH'}; total wall time "
          f"{time.monotonic() - started:.1f} s (build {session.build_seconds:.1f} s)",
          file=notes)
    return 0 if ok else 1
