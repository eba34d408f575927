"""``ternary-accel verilog``: write the Verilog of a matmul unit configuration, a JSON
sidecar describing the configuration, the ports with their payload layouts, the handshake,
the timing contract, the error bits and the weight word format
(:func:`ternary_accel.hw.rtl.interface.describe`), and the same as a Markdown page."""

import json
import sys

from amaranth.back import verilog
from amaranth.hdl import Shape
from amaranth.lib import wiring
from ternary_accel.hw.params import GENERIC
from ternary_accel.hw.rtl.interface import describe, markdown
from ternary_accel.hw.rtl.engine import LayerEngine
from ternary_accel.hw.rtl.matmul import MatmulUnit

from ternary_accel.cli.argtypes import output_file

__all__ = ["add_parser", "generate", "DEFAULT_NAME", "DEFAULT_ENGINE_NAME", "ports_of", "sidecar"]

#: Module name of the generated top level: the matmul unit, and with ``--engine`` the
#: layer engine.
DEFAULT_NAME = "matmul_unit"
DEFAULT_ENGINE_NAME = "layer_engine"


def _engine_description(top):
    """The engine's own parameters and its weight port, for the sidecar (none for a
    unit)."""
    engine = getattr(top, "engine", top)
    if not hasattr(engine, "weight_order"):
        return {}
    return {"weight_order": engine.weight_order, "tokens": engine.tokens,
            "packing": engine.packing, "weight_port_bits": engine.weight_port_bits,
            "weight_word_bytes": engine.weight_beat_bytes,
            "port_words_per_beat": engine.port_words_per_beat,
            "assembled_beats": engine.assembled}


def generate(unit, name=DEFAULT_NAME):
    """Verilog text of ``unit`` with top-level module ``name``."""
    return verilog.convert(unit, name=name, emit_src=False)


def ports_of(top, *, axis):
    """``[{name, direction, width}]`` of the generated module's ports, in Verilog terms."""
    ports = []
    if not axis:  # the unit's sync domain becomes clk / rst ports
        ports += [{"name": "clk", "direction": "input", "width": 1},
                  {"name": "rst", "direction": "input", "width": 1}]
    for path, member, _ in top.signature.flatten(top):
        ports.append({"name": "__".join(str(p) for p in path),
                      "direction": "input" if member.flow == wiring.In else "output",
                      "width": Shape.cast(member.shape).width})
    return ports


def sidecar(top, unit, name, *, axis):
    """The JSON-able description written next to the Verilog: the configuration, and
    :func:`~ternary_accel.hw.rtl.interface.describe`'s ports (each with its payload's
    field layout), handshake, timing contract, error bits and weight word format."""
    interface = describe(top, name, axis=axis)
    return {
        "module": name,
        "axis": axis,
        "component": type(top).__name__,
        "config": getattr(getattr(top, "engine", top), "params", unit.params).to_dict(),
        **_engine_description(top),
        "act_width": unit.act_width,
        "acc_width": unit.acc_width,
        "result_width": unit.res_width,
        "latency_cycles": unit.latency,
        "macs_per_cycle": unit.lanes * unit.rows,
        "cell_library": None if unit.fabric == GENERIC else
                        "Lattice ECP5 (CCU2C); simulation models: Yosys share/ecp5",
        "clock": "aclk (rising), aresetn active low" if axis else
                 "clk (rising), rst active high, synchronous",
        **interface,
    }


def add_parser(subparsers):
    from ternary_accel.cli.hw import add_design_arguments
    parser = subparsers.add_parser(
        "verilog", help="write the Verilog of a matmul unit",
        description="Generate self-contained Verilog for one matmul unit configuration.")
    add_design_arguments(parser)
    parser.add_argument("--name", default=None,
                        help=f"top-level module name (default: {DEFAULT_NAME}, with --engine "
                             f"{DEFAULT_ENGINE_NAME})")
    parser.add_argument("--engine", action="store_true",
                        help="the layer engine (base-3 packed weights through the trit "
                             "unpacker, then the unit; ternary) instead of the unit")
    parser.add_argument("--axis", action="store_true",
                        help="AXI4-Stream port names (s_axis_act_*, s_axis_wgt_*, "
                             "m_axis_out_*, aclk, aresetn) for vendor block designs")
    parser.add_argument("-o", "--output", type=output_file, default=None, metavar="FILE",
                        help="output file (default: standard output); a JSON sidecar "
                             "FILE.json and a page FILE.md describe the configuration, the "
                             "ports and their bit layouts, the handshake, the timing "
                             "contract, the error bits and the weight word format")
    parser.set_defaults(func=lambda _main, args: run(parser, args))
    return parser


def run(parser, args):
    from ternary_accel.cli.argtypes import FlagErrors
    from ternary_accel.cli.hw import params_from_args
    # the unit's and engine's messages name the flags (the mapping's port_bits too)
    parser = FlagErrors(parser, port_bits="--weight-port-bits")
    if args.name is None:
        args.name = DEFAULT_ENGINE_NAME if args.engine else DEFAULT_NAME
    if not args.name.isidentifier():
        parser.error(f"--name must be a Verilog identifier, not {args.name!r}")
    if args.engine:
        params = params_from_args(parser, args, engine=True)
        if args.axis:
            from ternary_accel.hw.rtl.axis import AxisEngine
            top = AxisEngine(params)
        else:
            top = LayerEngine(params)
        unit = top.unit
    elif args.axis:
        from ternary_accel.hw.rtl.axis import AxisMatmul
        top = AxisMatmul(params_from_args(parser, args, engine=False))
        unit = top.unit
    else:
        top = unit = MatmulUnit(params_from_args(parser, args, engine=False))
    description = sidecar(top, unit, args.name, axis=args.axis)
    text = generate(top, args.name)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        args.output.with_suffix(".json").write_text(json.dumps(description, indent=2) + "\n")
        args.output.with_suffix(".md").write_text(markdown(description,
                                                           description["config"]))
    except OSError as error:
        print(f"ternary-accel verilog: cannot write {args.output}: {error.strerror}",
              file=sys.stderr)
        return 1
    print(f"wrote {args.output} (module {args.name}: K={unit.lanes} M={unit.rows} "
          f"{unit.weight_mode}, int{unit.act_width} activations, acc {unit.acc_width} bits, "
          f"latency {unit.latency}), its description {args.output.with_suffix('.json')} "
          f"and the integration page {args.output.with_suffix('.md')}",
          file=sys.stderr)
    return 0
