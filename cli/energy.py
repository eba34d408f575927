"""``ternary-accel energy``: the BitNet paper's arithmetic-energy model from the command line."""


from ternary_accel.hw.paths import build_path
from ternary_accel.cli.argtypes import FlagErrors, add_format, output_dir
from ternary_accel.model.shapes import FFN_KINDS, MODELS, TransformerShape, get_model

from ternary_accel.energy.count import BITNET, TRANSFORMER, CountOptions, count_ops, energy_joules
from ternary_accel.energy.ops import DTYPES, MEMORY_PJ_PER_64BIT, NODES, memory_pj_per_bit
from ternary_accel.hw.perf.energy import DEFAULT_DRAM
from ternary_accel.energy.report import (SEQ_LEN, STORAGE_BITS, SWEEP_MODELS, TABLE1_MODELS,
                     TRAFFIC_MEMORIES, b158_ratio, plot_sweep, render, sweep_rows,
                     sweep_table, table1_rows, table1_table, traffic_rows, traffic_table)

#: Precisions of the products the flags choose: every one but INT4, which has only an
#: add (BitNet a4.8's, charged by the whole-model accounting).
PRODUCT_DTYPES = tuple(d for d in DTYPES if d != "int4")


def _add_options(parser):
    group = parser.add_argument_group("what is counted (defaults reproduce the paper)")
    group.add_argument("--seq-len", type=int, default=SEQ_LEN, help="tokens (default: 512)")
    group.add_argument("--no-attention", dest="attention", action="store_false",
                       help="leave out the attention score and value products")
    group.add_argument("--lm-head", action="store_true", help="count the LM head")
    group.add_argument("--no-projections", dest="projections", action="store_false",
                       help="leave out the q/k/v/o projections")
    group.add_argument("--no-ffn", dest="count_ffn", action="store_false",
                       help="leave out the FFN")
    group.add_argument("--bitnet-attention", choices=PRODUCT_DTYPES, default="fp16",
                       help="precision of BitNet's attention products (default: fp16)")
    group.add_argument("--bitnet-rescale", choices=PRODUCT_DTYPES, default="fp16",
                       help="precision of BitNet's rescaling multiplies (default: fp16)")


def _add_model(parser, repeat=False):
    group = parser.add_argument_group("model: by name, or by its parameters")
    group.add_argument("--model", action="append" if repeat else "store", metavar="NAME",
                       help=f"a named model{' (repeatable)' if repeat else ''}: "
                            f"{', '.join(MODELS)}")
    for flag in ("hidden", "ffn", "layers", "heads", "kv-heads", "vocab"):
        group.add_argument(f"--{flag}", type=int)
    group.add_argument("--ffn-kind", choices=FFN_KINDS, default="gated")


def _options(parser, args):
    if args.seq_len < 1:
        parser.error(f"--seq-len must be positive, not {args.seq_len}")
    return CountOptions(projections=args.projections, ffn=args.count_ffn,
                        attention=args.attention,
                        lm_head=args.lm_head, bitnet_attention=args.bitnet_attention,
                        bitnet_rescale=args.bitnet_rescale)


def _shapes(parser, args, default):
    """Models named by --model, or one built from --hidden/--ffn/..., or ``default``."""
    parser = FlagErrors(parser)     # the shape's messages name the flags
    params = {k: getattr(args, k) for k in ("hidden", "ffn", "layers", "heads", "kv_heads",
                                            "vocab") if getattr(args, k) is not None}
    names = args.model if isinstance(args.model, list) else \
        ([args.model] if args.model else [])
    if names and params:
        parser.error("give a model either by --model or by its parameters, not both")
    try:
        if params:
            missing = [k for k in ("hidden", "ffn", "layers", "heads") if k not in params]
            if missing:
                parser.error("a model given by parameters needs --" +
                             ", --".join(m.replace("_", "-") for m in missing))
            return [TransformerShape("custom", ffn_kind=args.ffn_kind, **params)]
        return [get_model(name) for name in names] if names else list(default)
    except ValueError as error:
        parser.error(str(error))


def cmd_table1(parser, args):
    shapes = _shapes(parser, args, [get_model(n) for n in TABLE1_MODELS])
    print(render(*table1_table(table1_rows(shapes, args.seq_len, _options(parser, args))),
                 args.format))
    return 0


def cmd_b158(parser, args):
    ratio = b158_ratio(args.node)
    print(f"BitNet b1.58 vs FP16, energy per MAC at {args.node}: FP16 add + multiply / "
          f"INT8 add = {ratio:.1f}x")
    return 0


def cmd_sweep(parser, args):
    shapes = _shapes(parser, args, [get_model(n) for n in SWEEP_MODELS])
    options = _options(parser, args)
    rows = sweep_rows(shapes, args.seq_len, args.node, options)
    print(render(*sweep_table(rows), args.format))
    if args.format == "markdown":
        print()
        print(_traffic_markdown(shapes, options))
    return 0


def cmd_model(parser, args):
    shapes = _shapes(parser, args, [])
    if not shapes:
        parser.error("name a model with --model or give --hidden/--ffn/--layers/--heads")
    options = _options(parser, args)
    header = ("Model", "Arch", "Node", "MUL (J)", "ADD (J)")
    body = []
    for shape in shapes:
        for arch, dtype in ((TRANSFORMER, "fp32"), (TRANSFORMER, "fp16"), (BITNET, "fp16")):
            label = "BitNet" if arch == BITNET else f"Transformer {dtype.upper()}"
            for node in NODES:
                e = energy_joules(count_ops(shape, args.seq_len, arch, dtype, options), node)
                body.append((shape.name, label, node, f"{e['mul']:.4f}", f"{e['add']:.4f}"))
    print(render(header, body, args.format))
    return 0


def _traffic_markdown(shapes, options):
    per_bit = ", ".join(f"{m}: {memory_pj_per_bit(m):.4g} pJ/bit" for m in TRAFFIC_MEMORIES)
    formats = ", ".join(f"{k} {v} bits" for k, v in STORAGE_BITS.items())
    return ("### Beyond the paper: weight traffic (not part of the arithmetic figures)\n\n"
            "Energy of reading every linear-layer weight once per forward pass, "
            f"Horowitz 45 nm, 64-bit access energy / 64 ({per_bit}); formats: {formats}.\n\n"
            + render(*traffic_table(traffic_rows(shapes, options)), "markdown"))


def cmd_report(parser, args):
    options = _options(parser, args)
    out = args.outdir or build_path("energy")
    out.mkdir(parents=True, exist_ok=True)
    table1 = render(*table1_table(table1_rows(TABLE1_MODELS, args.seq_len, options)),
                    "markdown")
    ratio = b158_ratio("7nm")
    (out / "table1.md").write_text(
        f"## Table 1: arithmetic energy, {args.seq_len} tokens\n\n{table1}\n")
    shapes = [get_model(n) for n in SWEEP_MODELS]
    rows = sweep_rows(shapes, args.seq_len, "7nm", options)
    sweep = render(*sweep_table(rows), "markdown")
    traffic = _traffic_markdown(shapes, options)
    (out / "sweep.md").write_text(
        f"## Model-size sweep at 7nm, {args.seq_len} tokens\n\n{sweep}\n\n{traffic}\n")
    plot_sweep(rows, out / "sweep.png", seq_len=args.seq_len)
    print(f"## Table 1 ({args.seq_len} tokens)\n\n{table1}\n")
    print(f"BitNet b1.58 per-MAC saving at 7nm: {ratio:.1f}x\n")
    print(f"## Sweep at 7nm\n\n{sweep}\n\n{traffic}\n")
    print(f"wrote {out / 'table1.md'}, {out / 'sweep.md'}, {out / 'sweep.png'}")
    return 0


def token_rows(names, context, nodes=NODES, dram=None):
    """Per-token energy of one decode step at ``context``: the FP16 reference and BitNet
    b1.58 on this accelerator (``energy.system``), per model and node."""
    from ternary_accel.hw.perf.accounting import account
    from ternary_accel.model.config import model_config

    from ternary_accel.hw.perf.energy import fp16_reference, pass_energy
    dram_pj = memory_pj_per_bit(dram or DEFAULT_DRAM)
    rows = []
    for name in names:
        accounting = account(model_config(name), tokens=1, context=context)
        for label, a in (("FP16 reference", fp16_reference(accounting)),
                         ("BitNet b1.58, this accelerator", accounting)):
            for node in nodes:
                e = pass_energy(a, node=node, dram_pj_per_bit=dram_pj).per_token()
                rows.append((name, label, node, f"{e['arithmetic'] * 1e3:.3f}",
                             f"{e['dram'] * 1e3:.1f}", f"{e['sram'] * 1e3:.2f}",
                             f"{e['total']:.4f}"))
    return ("Model", "Design", "Node", "Arithmetic (mJ)", "DRAM (mJ)", "SRAM (mJ)",
            "Total (J/token)"), rows


def cmd_token(parser, args):
    names = args.model or ["b1.58-2b4t"]
    if args.context < 0:
        parser.error(f"--context must be zero or more, not {args.context}")
    from ternary_accel.cli.perf import check_context
    for name in names:
        if name in MODELS:
            check_context(parser, name, args.context)
    try:
        header, rows = token_rows(names, args.context, dram=args.dram)
    except ValueError as error:
        parser.error(str(error))
    print(render(header, rows, args.format))
    return 0


def add_parser(subparsers):
    """Register ``ternary-accel energy`` and its subcommands."""
    parser = subparsers.add_parser(
        "energy", help="MUL/ADD energy: the BitNet paper's Table 1, sweeps, J/token",
        description="Arithmetic energy of matrix multiplications: FP Transformers vs BitNet "
                    "(the BitNet paper's model), and weight traffic beyond it.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("table1", help="the paper's Table 1 (6.7B, 13B, 30B at 512 tokens)")
    _add_model(p, repeat=True)
    _add_options(p)
    add_format(p)
    p.set_defaults(func=cmd_table1)

    p = sub.add_parser("b158", help="BitNet b1.58's per-MAC energy saving (71.4x at 7nm)")
    p.add_argument("--node", choices=NODES, default="7nm")
    p.set_defaults(func=cmd_b158)

    p = sub.add_parser("sweep", help="FP16 vs b1.58 energy across model sizes")
    _add_model(p, repeat=True)
    _add_options(p)
    p.add_argument("--node", choices=NODES, default="7nm")
    add_format(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("model", help="energy of one model, by name or by parameters")
    _add_model(p, repeat=True)
    _add_options(p)
    add_format(p)
    p.set_defaults(func=cmd_model)

    p = sub.add_parser("token", help="joules per generated token on this accelerator "
                                     "(everything the decoder does, DRAM and SRAM included)")
    p.add_argument("--model", action="append", metavar="NAME",
                   help=f"a named model (repeatable; default b1.58-2b4t): {', '.join(MODELS)}")
    p.add_argument("--context", type=int, default=128,
                   help="cached positions of the decode step (default: 128)")
    p.add_argument("--dram", choices=[m for m in MEMORY_PJ_PER_64BIT if m.startswith("dram")],
                   default=None, help=f"DRAM energy (default: {DEFAULT_DRAM})")
    add_format(p)
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("report", help="write table1.md, sweep.md and sweep.png")
    _add_options(p)
    p.add_argument("--outdir", type=output_dir, default=None,
                   help="where the files go (default: build/energy)")
    p.set_defaults(func=cmd_report)

    from ternary_accel.cli import energy_gates
    energy_gates.add_parser(sub)
    return parser
