"""``ternary-accel bench sparse`` (``make bench-sparse``): the down_proj of a BitNet
b1.58 2B4T block on the dense engine and on the sparse dataflow (:mod:`model.sparse`),
through the RTL under Verilator, every output compared with the dense golden model.

The down_proj inputs are made the way the decoder makes them: Gaussian hidden states
through RMSNorm, INT4 absmean (a4.8's gate/up input), ternary gate and up projections
(exact integer products, rescaled), ``relu(gate)^2 * up``, the FFN sub-norm and INT8
absmax. Random weights give gate outputs centred on zero, so half of them pass the
ReLU; a trained a4.8 model zeroes 67.5 % of them (the paper's 7B figure), which the
``a4.8 gate`` scenario reproduces by shifting each token's gate pre-activations by
their 67.5 % quantile (``--gate-zeros``). The scenarios:

* ``dense``: the dense engine, every weight beat (the baseline), on the ``a4.8`` inputs;
* ``relu2``: the sparse dataflow on the nonzero inputs, Gaussian gate;
* ``a4.8``: the same with the a4.8 gate statistics (67.5 % zero gate outputs);
* ``a4.8-down``: the gate shifted further, until the down_proj inputs are as sparse as
  the paper reports at 7B (84.2 % zeros, ``--down-zeros``);
* ``block``: Block Q-Sparse 16:32 on the FFN sub-norm's output (the static schedule:
  every token keeps half its columns, Gaussian gate).

Every sparse scenario runs in both loop orders of :mod:`model.sparse` on one engine
with an accumulator bank for the layer's row tiles: tile-major (each tile's beats) and
beat-major (each beat for every tile). Weight bytes are those fetched from memory per
token (:class:`hw.mapping.SparseTiling`, :class:`model.mapping.LayerTiling`), at
column granularity and at whole DRAM bursts of the order's layout
(:func:`hw.mapping.burst_bytes`); the gather of the kept columns is the driver's
(:mod:`sim.sparse`), the RTL proves the engine's part: the compacted beats, bit-exact,
in the modelled cycles.

With ``--trained`` (the shipped reference models, :mod:`model.reference`) or
``--activations-from DIR`` (any checkpoint trained here), the synthetic rows get
trained-model rows beside them: each model runs a few windows of its corpus' test split
under the numerics it was trained with (:func:`model.activations.checkpoint_activations`),
and the last ``--tokens`` down_proj inputs of every layer, quantized exactly as the
decoder quantized them, go through that layer's own down_proj (its trained ternary
weights, its shape, the decoder's rescale ``weight_scale / s`` on the output stage) on
the sparse dataflow, both orders, every output compared with the golden model. A
statistics table (markdown: before the bench table; csv and json: on stderr) gives
each layer's zero shares over every recorded token, the figures the synthetic
scenarios assume (67.5 % zero gate outputs, 84.2 % zero down inputs).
"""

import sys
import time
from pathlib import Path

import numpy as np

from ternary_accel.cli.results import render_records
from ternary_accel.cli.argtypes import (FlagErrors, add_format, non_negative_int, output_dir,
                                        refuse_unless)
from ternary_accel.cli.argtypes import positive_int as positive, probability as fraction
from ternary_accel.model.arith import OUT_WIDTH, matmul_int, round_fixed, scale_to_fixed
from ternary_accel.model.decoder import rms_norm
from ternary_accel.hw.mapping import LayerTiling
from ternary_accel.model.quant import block_topk_mask, quantize_activations, quantize_activations_int4
from ternary_accel.model.shapes import get_model
from ternary_accel.model.activations import DEFAULT_SAMPLE, DEFAULT_WINDOWS
from ternary_accel.model.sparse import MASK, NONZERO, ORDERS, kept_columns
from ternary_accel.hw.mapping import burst_bytes

from ternary_accel.hw.params import EngineParams
from ternary_accel.sim.config import HarnessConfig
from ternary_accel.sim.session import EngineSession
from ternary_accel.sim.sparse import run_sparse, sparse_config

SCENARIOS = ("dense", "relu2", "a4.8", "a4.8-down", "block")
#: The ``--only`` name of the trained-model rows.
TRAINED = "trained"
#: The reference models ``--trained`` runs (model.reference), each under its training
#: numerics.
TRAINED_MODELS = ("b1.58", "a4.8", "q-sparse")
#: a4.8's reported share of zero gate outputs at 7B, and of zero down_proj inputs
#: (``docs/a48-qsparse.md``).
A48_GATE_ZEROS = 0.675
A48_DOWN_ZEROS = 0.842
#: DRAM burst of the burst-granular byte count (DDR3/DDR4 x16, BL8: 16 bytes; x64 DIMM
#: 64 bytes).
BURST = 64
#: Largest ``--burst``: a DRAM page (a burst never spans more).
MAX_BURST = 4096
#: Block Q-Sparse: keep 16 of every 32 consecutive channels.
BLOCK_N, BLOCK_M = 16, 32


def ternary(rng, n_out, n_in):
    return rng.integers(-1, 2, size=(n_out, n_in), dtype=np.int8)


def gate_up(rng, hidden, ffn, tokens):
    """Gate and up outputs (tokens, ffn) float32 of Gaussian hidden states through
    RMSNorm, INT4 absmean and random ternary projections."""
    h = rms_norm(rng.normal(size=(tokens, hidden)).astype(np.float32), 1.0, 1e-5)
    q = quantize_activations_int4(h)
    gate_w, up_w = ternary(rng, ffn, hidden), ternary(rng, ffn, hidden)
    gate = (matmul_int(gate_w, q.values) / q.scale[:, None]).astype(np.float32)
    up = (matmul_int(up_w, q.values) / q.scale[:, None]).astype(np.float32)
    return gate, up


def ffn_inputs(gate, up, gate_zeros):
    """The FFN sub-norm's output ``rms_norm(relu(gate)^2 * up)``; ``gate_zeros`` > 0
    first shifts each token's gate by its ``gate_zeros`` quantile, so that share of the
    gate outputs is at most 0."""
    if gate_zeros:
        gate = gate - np.quantile(gate, gate_zeros, axis=1, keepdims=True).astype(np.float32)
    f = np.square(np.maximum(gate, np.float32(0))) * up
    return rms_norm(f, 1.0, 1e-5)


def zero_share(x):
    return float(np.mean(quantize_activations(x).values == 0))


def calibrated_gate_zeros(gate, up, target):
    """The gate shift (as a quantile) whose down_proj inputs have ``target`` zeros or
    just more, by bisection."""
    low, high = 0.0, 0.999
    for _ in range(30):
        middle = (low + high) / 2
        low, high = (middle, high) if zero_share(ffn_inputs(gate, up, middle)) < target \
            else (low, middle)
    return high


def _checkpoint_folder(text):
    import argparse
    path = Path(text)
    if not (path / "config.json").is_file():
        raise argparse.ArgumentTypeError(f"{text}: not a checkpoint folder (no config.json)")
    return path


def trained_sources(args):
    """The checkpoint folders of the trained rows (``--trained``: the shipped reference
    models; raises FileNotFoundError if one is not shipped)."""
    if args.activations_from:
        return list(args.activations_from)
    if args.trained:
        from ternary_accel.model.reference import reference_checkpoint
        return [reference_checkpoint(name) for name in TRAINED_MODELS]
    return []


def record_trained(folders, tokens, windows):
    """Each folder's checkpoint and :class:`model.activations.ActivationRecord` (at
    least ``tokens`` rows sampled per layer)."""
    from ternary_accel.model.activations import checkpoint_activations
    from ternary_accel.model.checkpoint import load_checkpoint
    out = []
    for folder in folders:
        started = time.monotonic()
        record = checkpoint_activations(folder, windows=windows,
                                        sample=max(DEFAULT_SAMPLE, tokens))
        out.append((load_checkpoint(folder), record))
        print(f"recorded {record.label}: {record.windows} window(s) of {record.context} "
              f"tokens, {_numerics(record)} ({time.monotonic() - started:.1f} s)",
              file=sys.stderr, flush=True)
    return out


def _numerics(record):
    """``"a8"``, ``"a4.8"``, ``"a8 + top-k 0.6125"``: the numerics of a record's run."""
    topk = record.numerics.get("topk")
    return record.numerics["activations"] + (f" + top-k {topk:g}" if topk else "")


def trained_statistics(records, fmt):
    """The zero shares of every layer's inputs over every recorded token."""
    records_out = []
    for record in records:
        for layer in range(record.layers):
            records_out.append({
                "activations": record.layer_label(layer),
                "numerics": _numerics(record),
                "tokens": record.tokens,
                "qkv_zeros": record.share("qkv", layer=layer),
                "o_zeros": record.share("o", layer=layer),
                "gate_up_zeros": record.share("gate_up", layer=layer),
                "gate_outputs_zero": record.share("gate_up", "gate_zeros", layer),
                "down_zeros": record.share("down", layer=layer),
                "down_exact_zeros": record.share("down", "exact_zeros", layer)})
    if fmt != "markdown":
        return render_records(records_out, fmt)
    lines = ["| activations | numerics | tokens | q/k/v zeros | o zeros | gate/up zeros | "
             "gate outputs zero (relu²) | down zeros | down exactly 0 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in records_out:
        lines.append(f"| {r['activations']} | {r['numerics']} | {r['tokens']:,} | "
                     f"{r['qkv_zeros']:.1%} | {r['o_zeros']:.1%} | {r['gate_up_zeros']:.1%} | "
                     f"{r['gate_outputs_zero']:.1%} | {r['down_zeros']:.1%} | "
                     f"{r['down_exact_zeros']:.1%} |")
    return "\n".join(lines)


def frac_bits_for(y):
    peak = float(np.max(np.abs(y))) + 1e-12
    return max(0, int(np.floor(np.log2((1 << (OUT_WIDTH - 2)) / peak))))


#: One line for ``ternary-accel --help``.
HELP = 'dense engine vs the sparse dataflow on down_proj, RTL'


def add_arguments(parser):
    """Add this command's flags to ``parser``."""
    parser.add_argument("--lanes", type=positive, default=EngineParams.lanes)
    parser.add_argument("--rows", type=positive, default=EngineParams.rows)
    parser.add_argument("--model", default="b1.58-2b4t", help="shape source (model/shapes)")
    parser.add_argument("--tokens", type=positive, default=4,
                        help="tokens (each a decode step's down_proj; default %(default)s)")
    parser.add_argument("--gate-zeros", type=fraction, default=A48_GATE_ZEROS,
                        help="share of zero gate outputs of the a4.8 scenario "
                             "(default %(default)s, the paper's 7B figure)")
    parser.add_argument("--down-zeros", type=fraction, default=A48_DOWN_ZEROS,
                        help="share of zero down_proj inputs of the a4.8-down scenario "
                             "(default %(default)s, the paper's 7B figure)")
    parser.add_argument("--only", action="append", choices=SCENARIOS + (TRAINED,),
                        metavar="SCENARIO",
                        help=f"run only this scenario (repeatable; {', '.join(SCENARIOS)}; "
                             f"{TRAINED}: the trained-model rows alone)")
    trained = parser.add_argument_group(
        "trained-model activations", "rows of a trained model's own down_proj inputs "
        "and weights beside the synthetic ones (model.activations)")
    source = trained.add_mutually_exclusive_group()
    source.add_argument("--trained", action="store_true",
                        help="the shipped reference models (" + ", ".join(TRAINED_MODELS) +
                             "), each under the numerics it was trained with")
    source.add_argument("--activations-from", action="append", type=_checkpoint_folder,
                        metavar="CHECKPOINT",
                        help="a checkpoint trained here (with corpus.json and "
                             "tokenizer.json) instead, under its training numerics "
                             "(repeatable)")
    trained.add_argument("--trained-windows", type=positive, default=DEFAULT_WINDOWS,
                         metavar="N", help="windows of the test split each model runs "
                                           "(default %(default)s)")
    parser.add_argument("--burst", type=positive, default=BURST, metavar="BYTES",
                        help="DRAM burst of the burst-granular byte count "
                             "(default %(default)s)")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--build-dir", type=output_dir, default=None,
                        help="where the engines are built (default build/sim)")
    add_format(parser)
    parser.add_argument("--waves", action="store_true",
                        help="record every signal of the engine to a VCD (a traced build of "
                             "its own; slower); the file's path is printed on stderr")


def run(parser, args):
    """Run the command; return the exit status."""
    parser = FlagErrors(parser)     # library messages name the flags
    try:
        shape = get_model(args.model)
    except ValueError as error:
        parser.error(str(error))
    from ternary_accel.cli.perf import check_context
    check_context(parser, args.model, args.tokens, "--tokens", tokens=0)
    if args.burst > MAX_BURST:
        parser.error(f"--burst {args.burst}: a DRAM burst is at most {MAX_BURST} bytes here")
    with_trained = bool(args.trained or args.activations_from)
    refuse_unless(parser, args, with_trained, "with --trained or --activations-from",
                  "trained_windows")
    if args.only and TRAINED in args.only and not with_trained:
        parser.error(f"--only {TRAINED} needs --trained or --activations-from")
    down = next(p for p in shape.projections() if p.name == "down")
    n_out, n_in = down.out_features, down.in_features
    scenarios = [name for name in (args.only or SCENARIOS) if name != TRAINED]
    scenarios = list(dict.fromkeys(scenarios))
    synthetic = bool(scenarios)
    shapes = [(n_out, n_in)] if synthetic else []
    refuse_unless(parser, args, {"dense", "a4.8"} & set(scenarios),
                  "with the dense or a4.8 scenario", "gate_zeros")
    refuse_unless(parser, args, "a4.8-down" in scenarios, "with the a4.8-down scenario",
                  "down_zeros")
    if synthetic:
        beats = -(-n_in // args.lanes)
        try:
            EngineParams(lanes=args.lanes, rows=args.rows,
                         max_beats=max(1, beats)).mapping(n_out, n_in)
        except ValueError as error:
            parser.error(f"down_proj: {error}")
    # csv and json: the table alone on stdout, its description and notes on stderr
    notes = sys.stdout if args.format == "markdown" else sys.stderr

    # Trained models: record, then each layer's down_proj (weights, inputs) is a job.
    trained = []
    if with_trained and (args.only is None or TRAINED in args.only):
        try:
            sources = record_trained(trained_sources(args), args.tokens,
                                     args.trained_windows)
        except (ValueError, FileNotFoundError) as error:
            print(f"{parser.prog}: error: {error}", file=sys.stderr)
            return 1
        for checkpoint, record in sources:
            for layer in range(record.layers):
                projection = checkpoint.layer(layer).projections["down"]
                stats = record[layer, "down"]
                values, scales = stats.values[-args.tokens:], stats.scales[-args.tokens:]
                trained.append(dict(record=record, layer=layer, weights=projection.values,
                                    factor=projection.scale / scales, values=values))
                shapes.append(projection.shape)
        for job in trained:
            try:
                EngineParams(lanes=args.lanes, rows=args.rows,
                             max_beats=max(1, -(-job["weights"].shape[1] // args.lanes))
                             ).mapping(*job["weights"].shape)
            except ValueError as error:
                parser.error(f"{job['record'].label} down_proj: {error}")
        if args.format == "markdown":
            print("Trained-model activations (zero shares over every recorded token; the "
                  "synthetic scenarios assume a4.8's 67.5 % zero gate outputs and 84.2 % "
                  "zero down inputs):\n", file=notes)
        print(trained_statistics([r for _, r in sources], args.format), file=notes)
        if args.format == "markdown":
            print(file=notes)
    # one engine for every shape: the widest dot product, the most row tiles
    common = dict(lanes=args.lanes, rows=args.rows,
                  max_beats=max(max(1, -(-k // args.lanes)) for _, k in shapes))
    acc_tiles = max(m // args.rows for m, _ in shapes)

    rng = np.random.default_rng(args.seed)
    if synthetic:
        weights = ternary(rng, n_out, n_in)
        gate, up = gate_up(rng, n_out, n_in, args.tokens)
        inputs = {"relu2": ffn_inputs(gate, up, 0.0),
                  "a4.8": ffn_inputs(gate, up, args.gate_zeros)}
        if "a4.8-down" in scenarios:
            shift = calibrated_gate_zeros(gate, up, args.down_zeros)
            inputs["a4.8-down"] = ffn_inputs(gate, up, shift)
            print(f"a4.8-down: gate shifted by its {shift:.1%} quantile for "
                  f"{args.down_zeros:.1%} zero down_proj inputs", file=notes, flush=True)
        block_mask = block_topk_mask(inputs["relu2"], BLOCK_N, BLOCK_M)
        inputs["block"] = np.where(block_mask, inputs["relu2"], np.float32(0))
        inputs["dense"] = inputs["a4.8"]
        print(f"{shape.name} down_proj {n_out} x {n_in}, {args.tokens} token(s), engine "
              f"K={args.lanes} M={args.rows}", file=notes, flush=True)
    for job in trained:
        m, k = job["weights"].shape
        print(f"{job['record'].layer_label(job['layer'])}: down_proj {m} x {k}, "
              f"{job['values'].shape[0]} token(s)", file=notes, flush=True)

    # the harness's memories hold the layers' dense streams (the sparse ones are fewer;
    # the defaults when they hold them already, as on the default engine)
    defaults = HarnessConfig()
    act_depth, wgt_depth, res_depth = defaults.act_depth, defaults.wgt_depth, \
        defaults.res_depth
    for m, k in shapes:
        dense = EngineParams(**common).mapping(m, k, args.tokens)
        words = dense.row_tiles * dense.col_beats * dense.port_words_per_beat
        act_depth = max(act_depth, args.tokens * dense.col_beats)
        wgt_depth = max(wgt_depth, 1 << (words - 1).bit_length())
        res_depth = max(res_depth, dense.result_words)
    harness = HarnessConfig(act_depth=act_depth, wgt_depth=wgt_depth, res_depth=res_depth)
    sessions = {}
    rows = []

    def session_for(sparse):
        if sparse not in sessions:
            config = sparse_config(**common, acc_tiles=acc_tiles) if sparse \
                else EngineParams(**common)
            sessions[sparse] = EngineSession(config, build_root=args.build_dir,
                                             harness=harness, waves=args.waves)
            sessions[sparse].start()
            if args.waves:
                print(f"waveforms: {sessions[sparse].waves_file}", file=sys.stderr,
                      flush=True)
            phases = sessions[sparse].build_phases
            print(f"build ({'sparse' if sparse else 'dense'} engine): "
                  f"{sessions[sparse].build_seconds:.1f} s (generate "
                  f"{phases['generate']:.1f} s, Verilator and C++ "
                  f"{phases['compile']:.1f} s)", file=sys.stderr, flush=True)
        return sessions[sparse]

    def measure(name, sparse, w, values, scale, shift, golden, mask, activations):
        """Run one layer in every order of its scenario; append the rows."""
        session = session_for(sparse)
        m, k = w.shape
        tokens = values.shape[0]
        zeros = float(np.mean(values == 0))
        schedule = MASK if mask is not None else NONZERO
        dense_tiling = LayerTiling(m, k, tokens, args.lanes, args.rows)
        for order in (ORDERS if sparse else ("tiles",)):
            started = time.monotonic()
            burst = None
            if sparse:
                result = run_sparse(session, w, values, scale, shift,
                                    schedule=schedule, mask=mask, order=order)
                tiling = result.mapping
                token_beats = sum(tiling.token_beats) / tokens
                kept = kept_columns(values, schedule, mask)
                burst = sum(burst_bytes(c, k, args.rows, args.burst, order=order,
                                        row_tiles=m // args.rows)
                            for c in kept) / tokens
            else:
                result = session.run(w, values, scale, shift)
                tiling = dense_tiling
                token_beats = dense_tiling.col_beats
            wall = time.monotonic() - started
            exact = bool(np.array_equal(result.outputs, golden)) and result.error == 0
            rows.append(dict(name=name, order=order if sparse else "dense", zeros=zeros,
                             beats=token_beats, cycles=result.cycles,
                             predicted=result.predicted, tokens=tokens,
                             bytes=tiling.weight_bytes / tokens, exact=exact,
                             burst=burst, activations=activations, shape=f"{m} x {k}",
                             dense_cycles=LayerTiling(m, k, 1, args.lanes, args.rows).beats,
                             dense_bytes=dense_tiling.weight_bytes_per_token,
                             simulate=result.timing.get("simulate", 0.0), wall=wall))
            label = name if activations is None or not trained else \
                f"{name}, {activations}"
            print(f"  {label} ({rows[-1]['order']}): {result.cycles:,} cycles, "
                  f"exact={exact}, {wall:.1f} s", file=sys.stderr, flush=True)

    synthetic_label = f"synthetic (Gaussian, random {shape.name} weights)"
    try:
        for name in scenarios:
            q = quantize_activations(inputs[name])
            acc = matmul_int(weights, q.values)
            scale, shift = scale_to_fixed(1.0 / q.scale, frac_bits_for(acc / q.scale[:, None]))
            golden = round_fixed(acc, scale[:, None], shift[:, None])
            measure(name, name != "dense", weights, q.values, scale, shift, golden,
                    block_mask if name == "block" else None, synthetic_label)
        for job in trained:
            # the decoder's own int8 values, and its rescale on the output stage
            acc = matmul_int(job["weights"], job["values"])
            factor = job["factor"]
            scale, shift = scale_to_fixed(factor, frac_bits_for(acc * factor[:, None]))
            golden = round_fixed(acc, scale[:, None], shift[:, None])
            measure(f"{TRAINED} {_numerics(job['record'])}", True, job["weights"],
                    job["values"], scale, shift, golden, None,
                    job["record"].layer_label(job["layer"]))
    finally:
        for session in sessions.values():
            session.close()

    extra = bool(trained)           # the activations and shape columns
    if args.format == "markdown":
        print()
        print(f"| scenario | {'activations | down_proj | ' if extra else ''}order | "
              f"zero inputs | beats per tile | cycles (sim) | "
              f"cycles (model) | weight bytes per token | fewer cycles | fewer weight bytes | "
              f"bytes at {args.burst} B bursts | fewer (bursts) | bit-exact | simulate s |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|" +
              ("---|---|" if extra else ""))
        for r in rows:
            per_token = r["cycles"] / r["tokens"]
            burst = r["dense_bytes"] if r["burst"] is None else r["burst"]
            columns = f"{r['activations']} | {r['shape']} | " if extra else ""
            print(f"| {r['name']} | {columns}{r['order']} | {r['zeros']:.1%} | "
                  f"{r['beats']:.1f} | "
                  f"{r['cycles']:,} | {r['predicted']:,} | {r['bytes']:,.0f} | "
                  f"{r['dense_cycles'] / per_token:.2f}x | "
                  f"{r['dense_bytes'] / r['bytes']:.2f}x | "
                  f"{burst:,.0f} | {r['dense_bytes'] / burst:.2f}x | "
                  f"{'yes' if r['exact'] else 'NO'} | {r['simulate']:.2f} |")
    else:
        records = []
        for r in rows:
            burst = r["dense_bytes"] if r["burst"] is None else r["burst"]
            record = {"scenario": r["name"]}
            if extra:
                record.update(activations=r["activations"], down_proj=r["shape"],
                              tokens=r["tokens"])
            record.update({
                "order": r["order"], "zero_inputs": r["zeros"],
                "beats_per_tile": r["beats"], "cycles": r["cycles"],
                "predicted": r["predicted"], "weight_bytes_per_token": r["bytes"],
                "fewer_cycles": r["dense_cycles"] / (r["cycles"] / r["tokens"]),
                "fewer_weight_bytes": r["dense_bytes"] / r["bytes"],
                "burst_bytes_per_token": burst, "fewer_burst_bytes": r["dense_bytes"] / burst,
                "bit_exact": r["exact"], "simulate_s": round(r["simulate"], 2)})
            records.append(record)
        print(render_records(records, args.format))
    if synthetic:
        dense_cycles = LayerTiling(n_out, n_in, 1, args.lanes, args.rows).beats
        dense_bytes = LayerTiling(n_out, n_in, args.tokens, args.lanes,
                                  args.rows).weight_bytes_per_token
        print(f"\nfewer cycles: the dense beats of one token ({dense_cycles:,}) over the "
              f"scenario's simulated cycles per token (each sparse token pays the unit's "
              f"latency once). Weight bytes: fetched per token at column granularity "
              f"({args.rows} trits, {-(-args.rows // 5)} bytes a column of a tile; dense "
              f"{dense_bytes:,}), and at whole {args.burst}-byte bursts: tile-major stores "
              f"each tile's columns together (a burst holds several columns of one tile), "
              f"beat-major each layer column's tiles together (a kept column is whole "
              f"bursts).", file=notes)
    if trained:
        print(f"\n{TRAINED}: a trained model's own down_proj (its ternary weights and "
              f"shape) on the last {args.tokens} down_proj inputs recorded on its test "
              f"split, quantized as its decoder quantized them (its training numerics), "
              f"the output stage applying its rescale; the ratios are against the dense "
              f"figures of that layer's shape (each sparse token still pays the unit's "
              f"latency once, a larger share of a small layer).", file=notes)
    ok = all(r["exact"] and r["cycles"] == r["predicted"] for r in rows)
    return 0 if ok else 1
