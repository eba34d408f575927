"""``ternary-accel bench token`` (``make bench-token``): whole tokens on the token core.

Every operation of every token in RTL: the token core (``hw.rtl.token``) runs the
program of a checkpoint in the hardware numerics (``hw.program``) with its memories in
the simulation harness (weights, embedding, gains, LM head, KV cache, the program), random
stalls on every channel with ``--idle``. Each token's logits and next token are compared
word for word with the golden run of the program (``hw.program.GoldenToken``, equal to
``model.hwdecoder.HwDecoder``), and the cycles of every operation (the core's counters)
with the cycle model (``hw.program.token_cycles``).

``--plan`` prints what the core holds and streams, and the cycle model, without
simulating (any model of ``ternary-accel perf``'s list with ``--model``).

``--model`` without ``--plan`` runs the model's configuration with random weights
(``model.weights.RandomMasterWeights`` of ``--seed``: ``random_master_weights``'s
tensors, drawn a layer at a time), so that BitNet b1.58 2B4T's token runs without a
checkpoint: ``--model b1.58-2b4t --prompt-ids 128000 --positions 4`` is one token of
2B4T, every operation in RTL (about 35 M cycles), the memories written to the
simulator's files in blocks (``sim.token_session``). The long steps report on stderr;
a Verilator run adds a table of its times, speed and memory.
"""

import json
import resource
import sys
import time

import numpy as np

from ternary_accel.cli.argtypes import (add_format, non_negative_int, positive_int,
                                        probability)
from ternary_accel.cli.results import render_records

#: One line for ``ternary-accel --help``.
HELP = "whole tokens on the token core: every operation in RTL, bit-exact, cycles by operation"
#: The checkpoint the bench runs unless told otherwise: the project's reference model.
DEFAULT_CHECKPOINT = "checkpoints/b1.58/packed"
SIMULATORS = ("verilator", "amaranth")


def add_arguments(parser):
    """Add this command's flags to ``parser``."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", metavar="DIR", default=None,
                        help=f"the model (default: {DEFAULT_CHECKPOINT})")
    source.add_argument("--model", default=None,
                        help="a model by name (e.g. b1.58-2b4t): with --plan its plan, "
                             "else its configuration with random weights (--seed)")
    parser.add_argument("--prompt-ids", default="1 17 40", metavar='"ID ID .."',
                        help="tokens fed at positions 0, 1, .. (default: %(default)s)")
    parser.add_argument("--positions", type=positive_int, default=None, metavar="N",
                        help="positions the KV region holds (default: the tokens given, "
                             "or with --plan the model's maximum)")
    parser.add_argument("--lanes", type=positive_int, default=32)
    parser.add_argument("--rows", type=positive_int, default=16)
    parser.add_argument("--head-rows", type=positive_int, default=2,
                        help="rows of the LM head unit (default: %(default)s)")
    parser.add_argument("--weight-port-bits", type=positive_int, default=128, metavar="BITS",
                        help="the engine's weight port (default: %(default)s)")
    parser.add_argument("--packing", default="3in5", help="the port's packing")
    parser.add_argument("--head", choices=("int8", "grouped"), default="grouped",
                        help="the LM head's format (default: %(default)s)")
    parser.add_argument("--simulator", choices=SIMULATORS, default="verilator")
    parser.add_argument("--idle", type=probability, default=0.0, metavar="P",
                        help="probability of an idle cycle on every memory channel")
    parser.add_argument("--seed", type=non_negative_int, default=1,
                        help="seed of the stalls and, with --model, of the random weights "
                             "(default: %(default)s)")
    parser.add_argument("--plan", action="store_true",
                        help="print the buffers, memories and cycle model only")
    add_format(parser)


def _numerics(head):
    from ternary_accel.model.hwnum import DEFAULT, GROUPED_HEAD
    return GROUPED_HEAD if head == "grouped" else DEFAULT


def _ids(parser, text, vocab):
    try:
        ids = [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        parser.error(f"--prompt-ids: token ids must be integers, not {text!r}")
    if not ids:
        parser.error("--prompt-ids: no token ids given")
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        parser.error(f"--prompt-ids: token id {bad[0]} is outside the vocabulary "
                     f"(0..{vocab - 1})")
    return ids


def _engine(parser, args, config):
    from ternary_accel.hw.program import token_engine
    try:
        return token_engine(args.lanes, args.rows, weight_port_bits=args.weight_port_bits,
                            packing=args.packing, hidden=config.hidden, ffn=config.ffn)
    except ValueError as error:
        parser.error(str(error))


def plan_tables(config, params, numerics, positions, position, head_rows):
    """The plan's records: on-chip buffers, memory images, cycle model by operation."""
    from ternary_accel.hw.program import (OPS, ScratchLayout, instruction_bits,
                                          projection_words, token_cycles, token_operations)
    from ternary_accel.model.hwnum import kv_bytes_per_position, head_bytes
    c = config
    scratch = ScratchLayout(c.hidden, c.ffn, c.heads * c.head_dim, c.kv_heads * c.head_dim)
    widest = max(c.hidden, c.ffn, c.heads * c.head_dim)
    half = c.head_dim // 2
    buffers = [
        {"buffer": "scratchpad", "words": scratch.words, "bits": numerics.resid_bits},
        {"buffer": "code buffer", "words": widest // params.lanes, "bits": 8 * params.lanes},
        {"buffer": "norm buffer (NormQuant)", "words": widest,
         "bits": numerics.resid_bits + numerics.gain_bits},
        {"buffer": "softmax row", "words": positions, "bits": 33},
        {"buffer": "RoPE table", "words": positions * half, "bits": 2 * numerics.rope_bits},
        {"buffer": "exp2 table", "words": 1 << numerics.softmax_frac,
         "bits": numerics.exp_bits + 1},
        {"buffer": "head codes (HeadDot)", "words": c.hidden // params.lanes,
         "bits": numerics.head_act_bits * params.lanes},
    ]
    for b in buffers:
        b["kbit"] = round(b["words"] * b["bits"] / 1024, 1)
    ops = token_operations(c, params, numerics, positions)
    weights = sum(projection_words(*shape, params) for shape in (
        (f["reps"], f["n"]) for op, f, _ in ops if OPS[op][0] == "MATMUL"))
    kv_position = kv_bytes_per_position(numerics, c)
    memories = [
        {"memory": "prog", "words": len(ops), "bits": instruction_bits()},
        {"memory": "vec (embedding, gains)", "words": c.vocab * c.hidden + sum(
            f["n"] for op, f, _ in ops if OPS[op][0] == "NORM"), "bits": 32},
        {"memory": "wgt", "words": weights, "bits": params.mapping(c.hidden, c.hidden)
         .port_bits_used},
        {"memory": "kv (a position, all layers)", "words": 2 * c.layers * c.kv_heads,
         "bits": round(8 * kv_position / (2 * c.layers * c.kv_heads))},
        {"memory": "head", "words": -(-c.vocab // head_rows) * (c.hidden // params.lanes),
         "bits": None},
    ]
    for mem in memories:
        mem["MB"] = (round(mem["words"] * mem["bits"] / 8e6, 3) if mem["bits"]
                     else round(head_bytes(c.vocab, c.hidden, numerics) / 1e6, 3))
    memories.append({"memory": f"kv at {positions} positions", "words": None, "bits": None,
                     "MB": round(kv_position * positions / 1e6, 3)})
    model = token_cycles(c, params, numerics, position, positions=positions,
                         head_rows=head_rows)
    return buffers, memories, model, len(ops)


def _say(text):
    print(text, file=sys.stderr, flush=True)


def _peak_mb():
    """This process's peak resident memory (MB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def run(parser, args):
    from ternary_accel.hw.program import COUNTERS, ProgramError, make_program, token_cycles
    numerics = _numerics(args.head)
    decoder = None
    if args.model is not None:
        from ternary_accel.model.config import model_config
        try:
            config = model_config(args.model)
        except ValueError as error:
            parser.error(f"--model: {error}")
        if not args.plan:
            from ternary_accel.model.hwdecoder import HwDecoder
            from ternary_accel.model.weights import RandomMasterWeights
            # a layer's weights drawn when the program asks for them, kept while it does
            def drawn(what):
                _say(f"  random weights: {'layer ' if isinstance(what, int) else ''}{what}")
            decoder = HwDecoder(RandomMasterWeights(config, seed=args.seed, progress=drawn),
                                numerics=numerics, cache_layers=False)
    else:
        from ternary_accel.model.checkpoint import load_checkpoint
        from ternary_accel.model.hwdecoder import HwDecoder
        checkpoint = load_checkpoint(args.checkpoint or DEFAULT_CHECKPOINT)
        decoder = HwDecoder(checkpoint, numerics=numerics)
        config = decoder.config
    ids = _ids(parser, args.prompt_ids, config.vocab)
    positions = args.positions or (config.max_position_embeddings if args.plan else len(ids))
    if len(ids) > positions:
        parser.error(f"--prompt-ids: {len(ids)} tokens do not fit --positions {positions}")
    if positions > config.max_position_embeddings:
        parser.error(f"--positions {positions}: the model holds at most "
                     f"{config.max_position_embeddings}")
    params = _engine(parser, args, config)
    try:
        buffers, memories, model, instructions = plan_tables(
            config, params, numerics, positions, len(ids) - 1, args.head_rows)
    except (ValueError, ProgramError) as error:
        parser.error(str(error))
    names = list(COUNTERS)
    if args.plan:
        rows = [{"operation": name, "cycles": model[name]} for name in names]
        rows.append({"operation": "token", "cycles": sum(model.values())})
        _print(args, {"buffers": buffers, "memories": memories, "cycle model": rows},
               f"{config.shape.name}: {instructions} instructions a token; the cycle "
               f"model at position {len(ids) - 1} (no stalls)")
        return 0
    times = {}
    started = time.monotonic()
    _say(f"{config.shape.name}: the weights, the program and its images...")
    try:
        program = make_program(decoder, params, positions=positions, head_rows=args.head_rows)
    except (ValueError, ProgramError) as error:
        parser.error(str(error))
    decoder = None                  # the float embedding and its copies go with it
    times["program (weights, images)"] = time.monotonic() - started
    _say(f"program: {len(program.image.prog)} instructions, images in "
         f"{times['program (weights, images)']:.0f} s")
    from ternary_accel.hw.program import GoldenToken
    # the golden run first: it needs the program only, and a large one takes minutes
    started = time.monotonic()
    _say("the golden run (hw.program.GoldenToken)...")
    golden = GoldenToken(program)
    expected = [golden.run(token, position) for position, token in enumerate(ids)]
    times["golden run"] = time.monotonic() - started
    _say(f"golden run: {times['golden run']:.0f} s")
    started = time.monotonic()
    _say(f"{config.shape.name}: {len(ids)} tokens on the token core "
         f"({args.simulator}, idle {args.idle:g})...")
    session = None
    if args.simulator == "amaranth":
        from ternary_accel.sim.token import TokenBench
        bench = TokenBench(program, idle=args.idle, seed=args.seed)
        tokens, logits = bench.run(ids)
        cycles, op_cycles, errors = bench.cycles, bench.op_cycles, bench.errors
    else:
        from ternary_accel.sim.token_session import TokenSession
        with TokenSession(program, idle=args.idle, seed=args.seed, progress=_say) as session:
            _say(f"simulating {len(ids)} token(s)...")
            # a token may take the model's cycles several times over with stalls
            limit = 4 * sum(model.values()) + 1_000_000
            tokens, logits, cycles, op_cycles, errors = session.run(ids, 0, cycles=limit)
            _say(f"simulated {session.simulated['cycles']} cycles in "
                 f"{session.simulated['seconds']:.0f} s")
    wall = time.monotonic() - started
    steps, exact = [], True
    by_op = {name: [0, 0] for name in names}
    for position, token in enumerate(ids):
        expected_token, expected_logits = expected[position]
        same = bool(np.array_equal(expected_logits, logits[position])
                    and expected_token == tokens[position])
        exact &= same
        model = token_cycles(config, params, numerics, position, positions=positions,
                             head_rows=args.head_rows)
        for name, simulated in zip(names, op_cycles[position]):
            by_op[name][0] += simulated
            by_op[name][1] += model[name]
        steps.append({"position": position, "token": token,
                      "next token": tokens[position], "bit-exact": "yes" if same else "NO",
                      "cycles": cycles[position], "cycle model": sum(model.values()),
                      "error flags": errors[position]})
    rows = [{"operation": name, "cycles": sim, "cycle model": mod, "difference": sim - mod}
            for name, (sim, mod) in by_op.items()]
    rows.append({"operation": "all", "cycles": sum(v[0] for v in by_op.values()),
                 "cycle model": sum(v[1] for v in by_op.values()),
                 "difference": sum(v[0] - v[1] for v in by_op.values())})
    tables = {"tokens": steps, "cycles by operation": rows, "buffers": buffers,
              "memories": memories}
    if session is not None:
        simulated = session.simulated
        run = [("program (weights, images)", times["program (weights, images)"], None, None),
               ("golden run (GoldenToken)", times["golden run"], None, None),
               ("build (Verilator; ~0 when cached)", session.build_seconds, None, None),
               ("memory files (host)", session.write_seconds, None, None),
               ("memory load (simulator)", session.load_seconds, None, None),
               ("simulation", simulated["seconds"],
                round(simulated["cycles"] / max(simulated["seconds"], 1e-9)), None),
               ("logits read back", simulated["read_seconds"], None, None),
               ("peak RSS: this process", None, None, _peak_mb()),
               ("peak RSS: the simulator", None, None, simulated["peak_mb"])]
        tables["run"] = [{"step": step, "seconds": None if sec is None else round(sec, 1),
                          "cycles/s": speed, "MB": mb} for step, sec, speed, mb in run]
    _print(args, tables,
           f"{config.shape.name} on the token core (K={params.lanes} x M={params.rows}, "
           f"{args.weight_port_bits}-bit port, head {args.head_rows} rows), {len(ids)} "
           f"tokens, idle {args.idle:g}: {'all bit-exact' if exact else 'MISMATCH'}; "
           f"wall {wall:.1f} s")
    return 0 if exact and not any(errors) else 1


def _print(args, tables, title):
    if args.format == "json":
        print(json.dumps({"title": title, **tables}, indent=2))
        return
    print(f"{title}\n")
    for name, records in tables.items():
        print(f"### {name}\n")
        print(render_records(records, args.format))
        print()
