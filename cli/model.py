"""``ternary-accel model``: BitNet b1.58 checkpoints: inspect them, make a tiny one, and
generate tokens with the golden model or with every BitLinear on the RTL (``--rtl``).

``--rtl`` wires the golden model's decoder to the Verilator simulation of the layer
engine (:class:`ternary_accel.sim.workloads.EngineCore`); it is imported only when asked
for.
"""

import argparse
import csv
import io
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

from ternary_accel.cli.argtypes import (FlagErrors, add_format, flag_names, name_flags,
                                        sparsity_ratio,
                                        non_negative_int, output_dir, output_file)
from ternary_accel.cli.argtypes import positive_int as _positive_int
from ternary_accel.model.decoder import A8, A_FLOAT, ACTIVATION_MODES, Decoder, generate
from ternary_accel.model.hwdecoder import FLOAT_NUMERICS, HW_NUMERICS, NUMERICS, make_decoder
from ternary_accel.model.quant import ACT_QUANT_PATHS, FLOAT64, KV_BITS


def _token_ids(text):
    try:
        ids = [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"token ids must be integers separated by spaces, not {text!r}") from None
    if not ids:
        raise argparse.ArgumentTypeError("no token ids given")
    return ids



def _n_of_m(text):
    parts = text.split(":")
    try:
        n, m = (int(part) for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be N:M with integers N and M (e.g. 16:32), "
                                         f"not {text!r}") from None
    if not 0 < n <= m:
        raise argparse.ArgumentTypeError(f"N:M needs 0 < N <= M, not {text}")
    return n, m


def _add_checkpoint(p):
    p.add_argument("checkpoint", type=Path, nargs="?", default=None,
                   help="checkpoint directory (config.json + *.safetensors); default: "
                        "the shipped reference model (b1.58, packed)")


def _checkpoint_dir(args):
    """The CHECKPOINT argument, or the shipped reference model."""
    if args.checkpoint is None:
        from ternary_accel.model.reference import reference_checkpoint
        try:
            args.checkpoint = reference_checkpoint()
        except FileNotFoundError as error:
            raise ValueError(str(error)) from None
    return args.checkpoint


def _hw_width(text):
    """``NAME=VALUE`` of :class:`ternary_accel.model.hwnum.HwNumerics`."""
    from ternary_accel.model.hwnum import HwNumerics
    names = [f.name for f in fields(HwNumerics) if not f.name.startswith("_")]
    name, sep, value = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or name not in names:
        raise argparse.ArgumentTypeError(f"must be NAME=VALUE with NAME one of "
                                         f"{', '.join(names)}, not {text!r}")
    if name == "head":
        return name, value.strip()
    try:
        return name, int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} must be an integer, not {value!r}") from None


def _add_numerics(p):
    """The decoder's numerics flags (generate and eval)."""
    p.add_argument("--act-quant", choices=ACT_QUANT_PATHS, default=FLOAT64,
                   help="how the int8 activation quantizer is evaluated: the project's "
                        "float64 (default) or as PyTorch / bitnet.cpp evaluate it in float32")
    hw = p.add_argument_group(
        "hardware numerics", "Every operation of a token in integer and fixed-point "
                             "arithmetic (model.hwnum, docs/numerics.md).")
    hw.add_argument("--numerics", choices=NUMERICS, default=FLOAT_NUMERICS,
                    help="float: norms, RoPE, attention, softmax and the LM head in "
                         "float32 around the integer BitLinears (default); hw: all of it "
                         "in the hardware's integer arithmetic")
    hw.add_argument("--hw", type=_hw_width, action="append", default=[],
                    metavar="NAME=VALUE",
                    help="with --numerics hw: one width or table size (repeatable), e.g. "
                         "--hw resid_frac=14 --hw head=trit5; the names and defaults are "
                         "model.hwnum.HwNumerics's")
    sparse = p.add_argument_group(
        "activations", "BitNet a4.8 and Q-Sparse activations (model.decoder's docstring "
                       "says what each option quantizes how).")
    sparse.add_argument("--activations", choices=ACTIVATION_MODES, default=A8,
                        help="a8: every BitLinear input int8 absmax (BitNet b1.58, the "
                             "default); a4.8: q/k/v and gate/up inputs INT4 absmean, o "
                             "input Top-K 50%% then int8, down input int8; float: no "
                             "quantizer, every BitLinear in float32")
    mask = sparse.add_mutually_exclusive_group()
    mask.add_argument("--topk", type=sparsity_ratio, metavar="RATIO",
                      help="Q-Sparse: every BitLinear input keeps its int((1 - RATIO) D) "
                           "largest |x| per token (0 <= RATIO < 1)")
    mask.add_argument("--block-topk", type=_n_of_m, metavar="N:M",
                      help="Block Q-Sparse: every BitLinear input keeps N of every M "
                           "consecutive channels (e.g. 16:32)")
    sparse.add_argument("--kv-bits", type=int, choices=KV_BITS,
                        help="KV cache quantized to 3 or 4 bits (3: position 0 stays at "
                             "4 bits); default float32")


def add_parser(subparsers):
    """Register ``ternary-accel model`` and its subcommands."""
    parser = subparsers.add_parser(
        "model", help="checkpoints: inspect, make-tiny, generate (golden model or --rtl)",
        description="BitNet b1.58 checkpoints: inspect them, make a tiny one, and generate "
                    "tokens with the golden model or with every BitLinear on the RTL "
                    "(--rtl).")
    sub = parser.add_subparsers(dest="model_command", required=True, metavar="COMMAND")

    p = sub.add_parser("inspect", help="configuration, tensor bytes by kind, zero weights",
                       description="Print a checkpoint's configuration, its tensor count "
                                   "and bytes by kind, and the fraction of zero weights "
                                   "per projection (reads every projection once).")
    _add_checkpoint(p)
    p.set_defaults(func=_guarded(lambda parser, args: cmd_inspect(args)))

    p = sub.add_parser("make-tiny", help="write a tiny random checkpoint",
                       description="Write a tiny BitNet b1.58 checkpoint (hidden 64, 4 "
                                   "heads, 2 KV heads, FFN 128, 2 layers, vocabulary 256) "
                                   "with random Gaussian master weights, in the Hugging "
                                   "Face layout.")
    p.add_argument("directory", type=output_dir)
    p.add_argument("--layout", choices=("packed", "master"), default="packed",
                   help="packed uint8 ternary weights with weight_scale (offline "
                        "quantization), or bf16 master weights (online); default "
                        "%(default)s")
    p.add_argument("--shards", type=_positive_int, default=1,
                   help="split the tensors over N files with an index (default 1)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--overwrite", action="store_true",
                   help="replace the files of an existing checkpoint in DIRECTORY")
    p.set_defaults(func=_guarded(cmd_make_tiny))

    p = sub.add_parser(
        "generate", help="greedy generation",
        description="Greedy generation: prefill the prompt, then decode one token at a "
                    "time with the KV cache. The last line printed is 'generated: ID ...'.")
    _add_checkpoint(p)
    prompt = p.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt-ids", type=_token_ids, metavar='"ID ID ..."',
                        help="the prompt as token ids")
    prompt.add_argument("--prompt", metavar="TEXT",
                        help="the prompt as text (needs tokenizer.json in the checkpoint "
                             "directory and the tokenizers package)")
    p.add_argument("--max-new-tokens", type=_positive_int, default=16, metavar="N")
    p.add_argument("--no-token-healing", dest="token_healing", action="store_false",
                   help="with --prompt: keep the prompt's last token (by default it is "
                        "taken off and the first generated token must start with its "
                        "text, so 'def ' continues with ' name' as in the training text, "
                        "not after a lone space token)")
    p.add_argument("--stop-at-eos", action="store_true",
                   help="stop after the configuration's eos_token_id")
    p.add_argument("--logits-out", type=output_file, metavar="FILE.npz",
                   help="write prompt_ids, generated_ids and logits (float32, one row per "
                        "processed position) to an .npz file")
    _add_numerics(p)
    rtl = p.add_argument_group(
        "RTL", "--rtl runs every BitLinear on the layer engine under Verilator (the rest "
               "in the golden model), the int8 engine in every activation mode (INT4 "
               "values are int8 values). Tiny models only: the simulation runs about "
               "100,000 engine cycles per second, about 40 s for the 4 M cycles of one "
               "2B4T token's linear layers. With --numerics hw, --rtl runs every "
               "operation of every token on the token core (hw.rtl.token) under "
               "Verilator, its memories loaded once; the host starts each token and "
               "reads the next; tokens and logits are checked against the golden "
               "hardware-numerics run.")
    rtl.add_argument("--rtl", action="store_true",
                     help="every BitLinear on the layer engine's RTL, bit-exact check")
    rtl.add_argument("--lanes", type=_positive_int, default=None,
                     help=f"with --rtl: engine lanes K (default {RTL_LANES})")
    rtl.add_argument("--rows", type=_positive_int, default=None,
                     help=f"with --rtl: engine rows M (default {RTL_ROWS})")
    rtl.add_argument("--build-dir", type=output_dir, default=None,
                     help="with --rtl: where the engine is built (default: build/sim)")
    rtl.add_argument("--waves", action="store_true",
                     help="with --rtl: record the engine's waveforms (a VCD; its path is "
                          "printed)")
    rtl.add_argument("--head-rows", type=_positive_int, default=None,
                     help=f"with --rtl --numerics hw: rows of the LM head unit (default "
                          f"{RTL_HEAD_ROWS})")
    p.set_defaults(func=_guarded(cmd_generate))

    p = sub.add_parser(
        "eval", help="test perplexity, bits per byte, agreement with the float run",
        description="Evaluate a checkpoint made by 'ternary-accel train' on the test split "
                    "of its corpus (this Python's standard library): perplexity, bits per "
                    "byte, and top-1 / top-5 agreement and logit cosine against the same "
                    "weights computed in float (--activations float, no Top-K, float KV "
                    "cache). The numerics flags select what is evaluated.")
    _add_checkpoint(p)
    p.add_argument("--tokens", type=_positive_int, default=None, metavar="N",
                   help="tokens predicted, in whole windows of CONTEXT - 1 (default "
                        "4080: 16 windows of 256)")
    p.add_argument("--context", type=_positive_int, default=None, metavar="N",
                   help="tokens per window (default: the model's max_position_embeddings)")
    p.add_argument("--split", choices=("test", "validation"), default="test")
    p.add_argument("--full-precision", action="store_true",
                   help="the master weights as they are, not ternarized (a master "
                        "checkpoint; implies --activations float): a float model's own "
                        "forward pass")
    p.add_argument("--no-reference", dest="reference", action="store_false",
                   help="skip the reference run (perplexity only, half the time)")
    p.add_argument("--against", choices=("float", "float-numerics"), default="float",
                   help="the reference run: float (float activations, no Top-K, float KV "
                        "cache; default) or float-numerics (with --numerics hw: the same "
                        "activations, masks and KV bits with float numerics, so only the "
                        "hardware numerics differ)")
    add_format(p)
    _add_numerics(p)
    p.set_defaults(func=_guarded(cmd_eval))
    return parser


#: The engine of ``generate --rtl`` unless --lanes/--rows say otherwise.
RTL_LANES, RTL_ROWS = 32, 16
#: The token core's LM head unit rows (``generate --rtl --numerics hw``).
RTL_HEAD_ROWS = 2
#: Flags of ``generate`` that only apply with ``--rtl``.
RTL_ONLY = ("lanes", "rows", "build_dir", "waves", "head_rows")


def _guarded(command):
    """``command(parser, args)`` with the checkpoint's and the model's errors (a
    :class:`~ternary_accel.model.checkpoint.CheckpointError` is a ``ValueError``) as one
    line naming the flags (exit status 1). The checkpoint module, and with it the
    optional safetensors, is imported by the commands that read or write one."""
    def run(parser, args):
        try:
            return command(FlagErrors(parser), args)
        except ValueError as error:
            print(f"{parser.prog}: error: {name_flags(str(error), flag_names(parser))}",
                  file=sys.stderr)
            return 1
    return run


def cmd_inspect(args):
    from ternary_accel.model.checkpoint import format_inspect, inspect_checkpoint, \
        load_checkpoint
    checkpoint = load_checkpoint(_checkpoint_dir(args))
    print(format_inspect(inspect_checkpoint(checkpoint)))
    return 0


def cmd_make_tiny(parser, args):
    if args.directory.is_file():
        parser.error(f"{args.directory}: is a file, not a folder")
    if args.directory.is_dir() and any(args.directory.iterdir()) and not args.overwrite:
        parser.error(f"{args.directory}: not empty; add --overwrite to replace the "
                     "checkpoint in it")
    from ternary_accel.model.checkpoint import make_tiny
    path = make_tiny(args.directory, seed=args.seed, layout=args.layout, shards=args.shards,
                     overwrite=args.overwrite)
    print(f"wrote a tiny {args.layout} checkpoint to {path}")
    return 0


def _tokenizer(directory):
    path = directory / "tokenizer.json"
    if not path.exists():
        from ternary_accel.model.checkpoint import CheckpointError
        raise CheckpointError(f"{directory}: --prompt needs tokenizer.json in the "
                              "checkpoint directory (or give --prompt-ids)")
    from tokenizers import Tokenizer
    return Tokenizer.from_file(str(path))


def _heal(tokenizer, prompt, vocab):
    """Token healing: the prompt without its last token, that token's text, and the
    tokens whose text starts with it (the first generated token must be one of them)."""
    healed = tokenizer.decode(prompt[-1:])
    allowed = np.array([tokenizer.decode([i]).startswith(healed) for i in range(vocab)])
    return prompt[:-1], healed, allowed


def _decoder_options(parser, args, activations):
    """The decoder's keyword arguments from the numerics flags (checked)."""
    options = dict(activations=activations, topk=args.topk, block_topk=args.block_topk,
                   kv_bits=args.kv_bits, numerics=args.numerics)
    if args.numerics == HW_NUMERICS:
        if args.act_quant != FLOAT64:
            parser.error("--act-quant applies to --numerics float only (the hardware "
                         "quantizer is integer)")
        if activations == A_FLOAT:
            parser.error("--numerics hw quantizes every BitLinear input: --activations "
                         "must be a8 or a4.8")
        from ternary_accel.model.hwnum import DEFAULT, NumericsError
        try:
            options["hw"] = DEFAULT.replace(**dict(args.hw))
        except NumericsError as error:
            parser.error(f"--hw: {error}")
    else:
        if args.hw:
            parser.error("--hw applies only with --numerics hw")
        options["act_quant"] = args.act_quant
    return options


def _saturations(decoder):
    counts = getattr(decoder, "saturations", None)
    if counts is not None:
        print(f"saturations: {counts}", file=sys.stderr)


def cmd_generate(parser, args):
    if not args.rtl:
        given = [name for name in RTL_ONLY if getattr(args, name) not in (None, False)]
        if given:
            parser.error(f"--{given[0].replace('_', '-')} applies only with --rtl")
    lanes = RTL_LANES if args.lanes is None else args.lanes
    rows = RTL_ROWS if args.rows is None else args.rows
    from ternary_accel.model.checkpoint import load_checkpoint
    checkpoint = load_checkpoint(_checkpoint_dir(args))
    config = checkpoint.config
    tokenizer = None
    healed, first_allowed = "", None
    if args.prompt is not None:
        tokenizer = _tokenizer(args.checkpoint)
        prompt = tokenizer.encode(args.prompt).ids
        if args.token_healing and len(prompt) > 1:
            prompt, healed, first_allowed = _heal(tokenizer, prompt, config.vocab)
    else:
        prompt = args.prompt_ids
        if (args.checkpoint / "tokenizer.json").exists():
            tokenizer = _tokenizer(args.checkpoint)
    bad = [i for i in prompt if not 0 <= i < config.vocab]
    if bad:
        flag = "--prompt-ids" if args.prompt is None else "--prompt"
        parser.error(f"{flag}: token id {bad[0]} is outside the vocabulary "
                     f"(0..{config.vocab - 1})")
    if len(prompt) + args.max_new_tokens > config.max_position_embeddings:
        parser.error(f"prompt ({len(prompt)}) + --max-new-tokens ({args.max_new_tokens}) "
                     f"exceed max_position_embeddings ({config.max_position_embeddings})")
    options = _decoder_options(parser, args, args.activations)
    try:
        make_decoder(checkpoint, **options)       # the options' errors before a build
    except ValueError as error:
        parser.error(str(error))
    if args.rtl and args.numerics == HW_NUMERICS:
        return _generate_on_token_core(parser, args, checkpoint, prompt, options, lanes, rows,
                                       first_allowed, tokenizer, healed)
    if args.head_rows is not None:
        parser.error("--head-rows sizes the token core's LM head: it applies only with --rtl "
                     "and the hardware numerics")
    session = core = None
    if args.rtl:
        from ternary_accel.hw.params import EngineParams
        from ternary_accel.sim.session import EngineSession
        from ternary_accel.sim.workloads import EngineCore
        widest = max(p.in_features for p in config.shape.projections())
        engine = EngineParams(lanes=lanes, rows=rows,
                              max_beats=-(-widest // lanes), output_stage=False)
        for proj in config.shape.projections():
            try:
                engine.mapping(proj.out_features, proj.in_features)
            except ValueError as error:
                parser.error(f"--rtl: projection {proj.name} does not tile onto the engine "
                             f"(--lanes {lanes} --rows {rows}): {error}")
        print(f"building the layer engine K={lanes} M={rows} (raw accumulators) "
              "under Verilator...", file=sys.stderr, flush=True)
        session = EngineSession(engine, build_root=args.build_dir, waves=args.waves)
        session.start()
        print(f"built in {session.build_seconds:.0f} s", file=sys.stderr, flush=True)
        if args.waves:
            print(f"waveforms: {session.waves_file}", file=sys.stderr, flush=True)
        core = EngineCore(session)
    started = time.monotonic()
    try:
        decoder = make_decoder(checkpoint, core=core, **options)
        print(f"prompt: {' '.join(map(str, prompt))}", flush=True)
        run = generate(decoder, prompt, args.max_new_tokens, stop_at_eos=args.stop_at_eos,
                       on_token=lambda t: print(f"token {t}", file=sys.stderr, flush=True),
                       first_allowed=first_allowed)
    finally:
        if session is not None:
            session.close()
    elapsed = time.monotonic() - started
    if core is not None:
        cycles = sum(c["cycles"] for c in core.calls)
        predicted = sum(c["predicted"] for c in core.calls)
        print(f"rtl: {len(core.calls)} BitLinears on the engine, {cycles:,} cycles "
              f"(cycle model {predicted:,}), {elapsed:.1f} s")
    else:
        print(f"golden model: {elapsed:.1f} s")
    _saturations(decoder)
    if args.logits_out is not None:
        args.logits_out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.logits_out, prompt_ids=np.array(run.prompt_ids, dtype=np.int64),
                 generated_ids=np.array(run.generated_ids, dtype=np.int64),
                 logits=run.logits)
        print(f"logits: {args.logits_out} ({run.logits.shape[0]} rows)")
    if tokenizer is not None:
        print(f"text: {tokenizer.decode(run.generated_ids)[len(healed):]!r}")
    print("generated: " + " ".join(map(str, run.generated_ids)))
    return 0


def _generate_on_token_core(parser, args, checkpoint, prompt, options, lanes, rows,
                            first_allowed, tokenizer, healed):
    """``generate --rtl --numerics hw``: greedy generation with every operation of every
    token on the token core under Verilator (:class:`sim.token_session.TokenSession`),
    checked token for token and logit for logit against the golden run of the same
    program (:class:`hw.program.GoldenToken`, equal to ``HwDecoder``)."""
    from ternary_accel.hw.program import GoldenToken, ProgramError, make_program, token_engine
    from ternary_accel.sim.token_session import TokenSession
    if args.waves:
        parser.error("--waves applies to the layer engine's --rtl (--numerics float)")
    config = checkpoint.config
    decoder = make_decoder(checkpoint, **options)
    positions = len(prompt) + args.max_new_tokens
    head_rows = RTL_HEAD_ROWS if args.head_rows is None else args.head_rows
    try:
        params = token_engine(lanes, rows, hidden=config.hidden, ffn=config.ffn)
        program = make_program(decoder, params, positions=positions, head_rows=head_rows)
    except (ValueError, ProgramError) as error:
        parser.error(f"--rtl --numerics hw: {error}")
    golden = GoldenToken(program)
    one = decoder.numerics.one
    print(f"building the token core K={lanes} M={rows}, head {head_rows} rows, "
          f"{positions} positions under Verilator...", file=sys.stderr, flush=True)
    started = time.monotonic()
    rows_out, generated, cycles, mismatches = [], [], 0, []
    with TokenSession(program, build_root=args.build_dir) as session:
        print(f"built in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        started = time.monotonic()
        print(f"prompt: {' '.join(map(str, prompt))}", flush=True)

        def step(token, position):
            nonlocal cycles
            tokens, logits, token_cycles, _, errors = session.run([token], position)
            expected_token, expected = golden.run(token, position)
            if errors[0]:
                raise ValueError(f"the token core raised error flags {errors[0]:#x} at "
                                 f"position {position}")
            if tokens[0] != expected_token or not np.array_equal(logits[0], expected):
                mismatches.append(position)
            cycles += token_cycles[0]
            rows_out.append(logits[0])
            return tokens[0], logits[0]

        for position, token in enumerate(prompt):
            following, logits = step(token, position)
        while len(generated) < args.max_new_tokens:
            if first_allowed is not None and not generated:   # token healing: the host
                following = int(np.argmax(np.where(first_allowed, logits, np.iinfo(
                    np.int64).min)))                           # masks the logits read back
            generated.append(following)
            print(f"token {following}", file=sys.stderr, flush=True)
            following, logits = step(following, len(prompt) + len(generated) - 1)
            if args.stop_at_eos and generated[-1] == config.eos_token_id:
                break
    elapsed = time.monotonic() - started
    print(f"rtl: {len(rows_out)} tokens on the token core, every operation in RTL, "
          f"{cycles:,} cycles, {elapsed:.1f} s; tokens and logits "
          f"{'identical to the golden hardware-numerics run' if not mismatches else 'DIFFER from the golden run at positions ' + ', '.join(map(str, mismatches))}")
    logits = np.asarray(rows_out, dtype=np.float64) / one
    if args.logits_out is not None:
        args.logits_out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.logits_out, prompt_ids=np.array(prompt, dtype=np.int64),
                 generated_ids=np.array(generated, dtype=np.int64),
                 logits=logits.astype(np.float32))
        print(f"logits: {args.logits_out} ({logits.shape[0]} rows)")
    if tokenizer is not None:
        print(f"text: {tokenizer.decode(generated)[len(healed):]!r}")
    print("generated: " + " ".join(map(str, generated)))
    return 1 if mismatches else 0


def cmd_eval(parser, args):
    from ternary_accel.model.checkpoint import load_checkpoint
    from ternary_accel.model.corpus import CorpusError
    from ternary_accel.model.evaluate import DEFAULT_TOKENS, evaluate, load_eval_text
    checkpoint = load_checkpoint(_checkpoint_dir(args))
    config = checkpoint.config
    context = config.max_position_embeddings if args.context is None else args.context
    if context > config.max_position_embeddings:
        parser.error(f"--context {context} is longer than the model's "
                     f"max_position_embeddings ({config.max_position_embeddings})")
    if args.full_precision and args.activations not in (A_FLOAT, A8):
        parser.error("--full-precision computes in float: --activations must be float")
    activations = A_FLOAT if args.full_precision else args.activations
    weights = checkpoint.full_precision() if args.full_precision else checkpoint
    if args.full_precision and args.numerics == HW_NUMERICS:
        parser.error("--full-precision computes in float: it does not take --numerics hw")
    options = _decoder_options(parser, args, activations)
    if args.against == "float-numerics" and args.numerics != HW_NUMERICS:
        parser.error("--against float-numerics compares --numerics hw with float; give "
                     "--numerics hw")
    decoder = make_decoder(weights, **options)
    reference = None
    if args.reference:
        if args.against == "float-numerics":
            same = {k: v for k, v in options.items() if k not in ("numerics", "hw")}
            reference = Decoder(weights, **same)
        else:
            reference = Decoder(weights, activations=A_FLOAT)
    try:
        text = load_eval_text(args.checkpoint, args.split)
    except CorpusError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    tokens = DEFAULT_TOKENS if args.tokens is None else args.tokens
    started = time.monotonic()

    def progress(done, total):
        print(f"\rwindow {done}/{total}, {time.monotonic() - started:.0f} s",
              end="" if done < total else "\n", file=sys.stderr, flush=True)

    quality = evaluate(decoder, text, reference=reference, context=context,
                       tokens=tokens, progress=progress)
    _saturations(decoder)
    numerics = _numerics_name(args, activations)
    row = {"checkpoint": str(args.checkpoint), "numerics": numerics, **quality.to_dict()}
    if args.numerics == HW_NUMERICS:
        row["saturations"] = decoder.saturations.total
    print(format_quality([row], args.format))
    return 0


def _numerics_name(args, activations):
    parts = ["full-precision weights" if args.full_precision else activations]
    if args.numerics == HW_NUMERICS:
        parts.append("hw numerics" + "".join(f", {k}={v}" for k, v in args.hw))
    if args.topk is not None:
        parts.append(f"top-k {args.topk:g}")
    if args.block_topk is not None:
        parts.append(f"block top-k {args.block_topk[0]}:{args.block_topk[1]}")
    if args.kv_bits is not None:
        parts.append(f"KV {args.kv_bits}-bit")
    return ", ".join(parts)


#: Columns of an evaluation table: (key, header, format).
QUALITY_COLUMNS = (("checkpoint", "checkpoint", "{}"), ("numerics", "numerics", "{}"),
                   ("tokens", "tokens", "{}"), ("perplexity", "test PPL", "{:.3f}"),
                   ("bits_per_byte", "bits/byte", "{:.4f}"),
                   ("top1", "top-1 agree", "{:.2%}"), ("top5", "top-5 agree", "{:.2%}"),
                   ("cosine", "logit cosine", "{:.5f}"),
                   ("max_error", "max abs logit error", "{:.4f}"))
#: Added when a row has it (hardware numerics).
SATURATION_COLUMN = ("saturations", "saturations", "{:,}")


def format_quality(rows, fmt):
    """Evaluation rows as a Markdown, CSV or JSON table."""
    if fmt == "json":
        return json.dumps(rows, indent=2)
    columns = QUALITY_COLUMNS
    if any("saturations" in row for row in rows):
        columns = columns + (SATURATION_COLUMN,)
    cells = [[("-" if row.get(key) is None else spec.format(row[key]))
              for key, _, spec in columns] for row in rows]
    headers = [header for _, header, _ in columns]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows([[("" if row.get(key) is None else row[key])
                           for key, _, _ in columns] for row in rows])
        return out.getvalue().rstrip("\n")
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    return "\n".join(lines)
