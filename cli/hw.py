"""The matmul unit's and the layer engine's parameters as command-line flags, shared by
``ternary-accel verilog`` and ``synth``."""

import argparse

__all__ = ["add_unit_arguments", "add_engine_arguments", "unit_kwargs",
           "unit_from_args", "engine_from_args", "engine_suffix", "act_width_suffix",
           "variant_suffix"]


def add_unit_arguments(parser):
    """Add the :class:`hw.matmul.MatmulUnit` parameters as flags to ``parser``."""
    from ternary_accel.model.quant import HW_WEIGHT_MODES, TERNARY
    parser.add_argument("--lanes", "-k", type=int, default=16, metavar="K",
                        help="activations per beat (default: %(default)s)")
    parser.add_argument("--rows", "-m", type=int, default=8, metavar="M",
                        help="output rows (default: %(default)s)")
    parser.add_argument("--weight-mode", choices=HW_WEIGHT_MODES, default=TERNARY,
                        help="weight encoding (default: %(default)s; int8 is the "
                             "multiplier baseline)")
    parser.add_argument("--output-stage", action=argparse.BooleanOptionalAction,
                        default=False,
                        help="fixed-point rescale of the accumulators (default: off)")
    parser.add_argument("--max-beats", type=int, default=1024, metavar="N",
                        help="longest dot product in beats; sizes the accumulators "
                             "(default: %(default)s)")
    parser.add_argument("--levels-per-stage", type=int, default=1, metavar="L",
                        help="adder-tree levels per pipeline register (default: %(default)s)")
    from ternary_accel.hw.rtl.lanes import FABRICS, GENERIC
    parser.add_argument("--fabric", choices=FABRICS, default=GENERIC,
                        help="generic Verilog, or lane groups built from Lattice ECP5 "
                             "CCU2C carry cells (needs the Lattice cell library; "
                             "default: %(default)s)")
    from ternary_accel.model.quant import ACT_WIDTH, ACT_WIDTHS
    parser.add_argument("--act-width", type=int, choices=ACT_WIDTHS, default=ACT_WIDTH,
                        metavar="{" + ",".join(map(str, ACT_WIDTHS)) + "}",
                        help="bits of an activation: 8, or 4 for BitNet a4.8's int4 inputs "
                             "(two per byte; ternary and binary weights; "
                             "default: %(default)s)")
    parser.add_argument("--output-rows", type=int, default=None, metavar="R",
                        help="with the output stage: the pipelined stage (DSP multiply "
                             "with --fabric ecp5), R rows a cycle; below --rows one stage "
                             "is shared by the rows, a result vector every rows / R "
                             "cycles (default: the two-register stage)")
    from ternary_accel.hw.rtl.matmul import DEFAULT_ACT_COPIES
    parser.add_argument("--act-copies", type=_copies, default=DEFAULT_ACT_COPIES,
                        metavar="N",
                        help="register the beat once in front of the lane groups, the "
                             "activations in N copies (each feeding rows / N rows); 'none' "
                             "for no input register (default: %(default)s)")


def _copies(text):
    """``--act-copies`` value: a count, or ``none``."""
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count: {text!r} (an integer or 'none')")


def add_engine_arguments(parser):
    """Add the :class:`hw.engine.LayerEngine`-only parameters (with ``--engine``)."""
    from ternary_accel.hw.rtl.engine import ROWS_ORDER, WEIGHT_ORDERS
    parser.add_argument("--weight-order", choices=WEIGHT_ORDERS, default=ROWS_ORDER,
                        help="with --engine: weight beats packed row-major (the dense "
                             "dataflow) or as stored columns (the sparse dataflow of "
                             "model.sparse; default: %(default)s)")
    parser.add_argument("--acc-tiles", type=int, default=None, metavar="N",
                        help="with --engine: an accumulator bank of N row tiles (the "
                             "sparse dataflow's beat-major order; default: none)")
    from ternary_accel.hw.mapping import PACKINGS
    parser.add_argument("--tokens", type=int, default=1, metavar="T",
                        help="with --engine: weight reuse, each weight beat applied to "
                             "up to T tokens (default: %(default)s)")
    parser.add_argument("--weight-port-bits", type=int, default=None, metavar="BITS",
                        help="with --engine: width of the weight memory port, e.g. 64, "
                             "128, 256 (default: a whole beat per cycle)")
    parser.add_argument("--packing", choices=PACKINGS, default=None,
                        help="with --engine: packing of the weight port's words (default: "
                             "3in5 with --tokens > 1 or --weight-port-bits, else base3)")


def engine_suffix(args):
    """Report-name suffix of the engine-only flags: ``_columns``, ``_tN`` (bank),
    ``_TN`` (reuse), ``_pBITS`` (port), ``_PACKING``."""
    return (("" if args.weight_order == "rows" else f"_{args.weight_order}") +
            ("" if args.acc_tiles is None else f"_t{args.acc_tiles}") +
            ("" if args.tokens == 1 else f"_T{args.tokens}") +
            ("" if args.weight_port_bits is None else f"_p{args.weight_port_bits}") +
            ("" if args.packing is None else f"_{args.packing}"))


def engine_kwargs(args):
    """The :class:`hw.engine.LayerEngine`-only parameters given by ``args``."""
    return {"weight_order": args.weight_order, "acc_tiles": args.acc_tiles,
            "tokens": args.tokens, "weight_port_bits": args.weight_port_bits,
            "packing": args.packing}


def unit_kwargs(args):
    """The :class:`hw.matmul.MatmulUnit` parameters given by ``args``."""
    return {"lanes": args.lanes, "rows": args.rows, "weight_mode": args.weight_mode,
            "output_stage": args.output_stage, "max_beats": args.max_beats,
            "levels_per_stage": args.levels_per_stage, "fabric": args.fabric,
            "act_width": args.act_width, "output_rows": args.output_rows,
            "act_copies": args.act_copies}


def engine_only_given(args):
    """Whether ``args`` set any :class:`hw.engine.LayerEngine`-only parameter."""
    return (getattr(args, "weight_order", "rows") != "rows" or
            getattr(args, "acc_tiles", None) is not None or
            getattr(args, "tokens", 1) != 1 or
            getattr(args, "weight_port_bits", None) is not None or
            getattr(args, "packing", None) is not None)


def unit_from_args(parser, args, component=None):
    """Build ``component`` (default :class:`hw.matmul.MatmulUnit`) from ``args``;
    parameter errors become usage errors."""
    if engine_only_given(args):
        parser.error("--weight-order, --acc-tiles, --tokens, --weight-port-bits and "
                     "--packing are engine parameters: add --engine")
    if component is None:
        from ternary_accel.hw.rtl.matmul import MatmulUnit as component
    try:
        return component(**unit_kwargs(args))
    except (TypeError, ValueError) as error:
        parser.error(str(error))


def engine_from_args(parser, args, component=None):
    """Build the :class:`hw.engine.LayerEngine` of ``args`` (ternary weights only);
    parameter errors become usage errors."""
    from ternary_accel.model.quant import TERNARY
    if component is None:
        from ternary_accel.hw.rtl.engine import LayerEngine as component
    if args.weight_mode != TERNARY:
        parser.error(f"--engine takes ternary weights (base-3 packed), not "
                     f"--weight-mode {args.weight_mode}")
    kwargs = unit_kwargs(args)
    del kwargs["weight_mode"]
    try:
        return component(**kwargs, **engine_kwargs(args))
    except (TypeError, ValueError) as error:
        parser.error(str(error))


def act_width_suffix(act_width):
    """``""`` for int8 activations (the default), ``"_a4"`` for int4: keeps report and
    build names of the two widths apart."""
    from ternary_accel.model.quant import ACT_WIDTH
    return "" if act_width == ACT_WIDTH else f"_a{act_width}"


def variant_suffix(args):
    """Report-name suffix of the pipeline flags away from their defaults: ``_os`` (the
    output stage), ``_oR`` (its rows a cycle), ``_acN`` / ``_acnone`` (activation
    copies)."""
    from ternary_accel.hw.rtl.matmul import DEFAULT_ACT_COPIES
    suffix = "_os" if args.output_stage else ""
    if args.output_rows is not None:
        suffix += f"_o{args.output_rows}"
    if args.act_copies != DEFAULT_ACT_COPIES:
        suffix += f"_ac{'none' if args.act_copies is None else args.act_copies}"
    return suffix
