"""``ternary-accel ip`` (``make ip``): the accelerator's system top packaged for vendor
flows (:mod:`ternary_accel.hw.ip`): its Verilog, an IP-XACT ``component.xml``, a Vivado
packaging script ``package_ip.tcl`` and a FuseSoC core, under ``build/ip/NAME`` or
``-o DIR``. With ``--lint`` (``make ip-lint``), FuseSoC then runs the core's ``lint``
target (Verilator, lint only).

The tops (``--top``), each with the ports of a system top (``aclk``, ``aresetn``,
``s_axil_*``, ``m_axi_*``, ``irq``):

- ``layer`` (the default): :class:`~ternary_accel.hw.rtl.layer_system.LayerSystem`, the
  layer engine with its register file and DMA: a BitLinear layer at a time from DRAM
  (``--lanes``, ``--rows``, ``--tokens``, ``--act-words``, ...).
- ``token``: :class:`~ternary_accel.hw.rtl.system.TokenSystem`, the token core for a
  model (``--checkpoint``, default the reference model) with its register file and DMA.

Flags of one top are refused with the other.
"""

import sys
from pathlib import Path

from ternary_accel.cli.argtypes import output_dir, positive_int

#: One line for ``ternary-accel --help``.
HELP = "the system top as vendor IP: Verilog, IP-XACT, a Vivado script, a FuseSoC core"
#: The token top's model unless told otherwise: the project's reference model.
DEFAULT_CHECKPOINT = "checkpoints/b1.58/packed"


#: The engine flags' defaults by top: (lanes, rows, weight port bits, packing); a
#: weight port of None is the AXI bus's width (``--bus-bits``).
ENGINE_DEFAULTS = {"layer": (16, 32, None, None), "token": (32, 16, 128, "3in5")}


def _engine_flags(args):
    lanes, rows, port_bits, packing = ENGINE_DEFAULTS[args.top]
    return (args.lanes or lanes, args.rows or rows,
            args.weight_port_bits or port_bits or args.bus_bits, args.packing or packing)


def _layer_top(parser, args):
    """LayerSystem of the engine of ``--lanes`` x ``--rows``, T = ``--tokens``."""
    from ternary_accel.hw.params import EngineParams, ParamsError, flagged
    from ternary_accel.hw.rtl.layer_system import LayerSystem
    lanes, rows, port_bits, packing = _engine_flags(args)
    try:
        params = EngineParams(lanes=lanes, rows=rows, output_stage=True, tokens=args.tokens,
                              weight_port_bits=port_bits, packing=packing)
        return LayerSystem(params, act_words=args.act_words, bus_bits=args.bus_bits,
                           addr_width=args.addr_width)
    except ParamsError as error:
        parser.error(flagged(str(error), {"port_bits": "--weight-port-bits"}))
    except (TypeError, ValueError) as error:
        parser.error(flagged(str(error), {"port_bits": "--weight-port-bits"}))


def _token_top(parser, args):
    """TokenSystem of ``--checkpoint``'s model on the engine of ``--lanes`` x ``--rows``."""
    from ternary_accel.hw.program import ProgramError, make_program, token_engine
    from ternary_accel.hw.rtl.system import TokenSystem
    from ternary_accel.model.checkpoint import load_checkpoint
    from ternary_accel.model.hwdecoder import HwDecoder
    from ternary_accel.model.hwnum import DEFAULT, GROUPED_HEAD
    checkpoint = args.checkpoint or DEFAULT_CHECKPOINT
    if not Path(checkpoint).is_dir():
        parser.error(f"--checkpoint: no folder {checkpoint!r}")
    decoder = HwDecoder(load_checkpoint(checkpoint),
                        numerics=GROUPED_HEAD if args.head == "grouped" else DEFAULT)
    config = decoder.config
    positions = args.positions or config.max_position_embeddings
    if positions > config.max_position_embeddings:
        parser.error(f"--positions {positions}: the model holds at most "
                     f"{config.max_position_embeddings}")
    lanes, rows, port_bits, packing = _engine_flags(args)
    try:
        params = token_engine(lanes, rows, weight_port_bits=port_bits, packing=packing,
                              hidden=config.hidden, ffn=config.ffn)
        program = make_program(decoder, params, positions=positions,
                               head_rows=args.head_rows)
        return TokenSystem(program, args.bus_bits, addr_width=args.addr_width)
    except (ValueError, ProgramError) as error:
        parser.error(str(error))


#: ``--top``: the builders of the system tops, their Verilog module's default name, and
#: the flags that apply to that top alone.
TOPS = {"layer": (_layer_top, "layer_system", ("tokens", "act_words")),
        "token": (_token_top, "token_system",
                  ("checkpoint", "positions", "head_rows", "head"))}
DEFAULT_TOP = "layer"


def add_arguments(parser):
    """Add this command's flags to ``parser``."""
    from ternary_accel.hw.ip import DEFAULT_PART, LIBRARY, VENDOR
    parser.add_argument("--top", choices=tuple(TOPS), default=DEFAULT_TOP,
                        help="the system top (default: %(default)s)")
    parser.add_argument("-o", "--outdir", type=output_dir, default=None, metavar="DIR",
                        help="where to write (default: build/ip/NAME)")
    parser.add_argument("--name", default=None,
                        help="the Verilog top module and the IP's name (default: "
                             + ", ".join(f"{name} with --top {top}"
                                         for top, (_, name, _) in TOPS.items()) + ")")
    parser.add_argument("--bus-bits", type=positive_int, default=128, metavar="N",
                        help="data bits of the AXI4 master m_axi (a power of two in "
                             "32..1024; default: %(default)s)")
    parser.add_argument("--addr-width", type=positive_int, default=64, metavar="N",
                        help="address bits of m_axi (default: %(default)s)")
    parser.add_argument("--vendor", default=VENDOR, help="the IP's vendor (default: "
                                                         "%(default)s)")
    parser.add_argument("--library", default=LIBRARY, help="the IP's library (default: "
                                                           "%(default)s)")
    parser.add_argument("--ip-version", default=None, metavar="X.Y.Z",
                        help="the IP's version (default: the project's)")
    parser.add_argument("--part", default=DEFAULT_PART,
                        help="the FPGA part of the Vivado script and the core's synth target "
                             "(default: %(default)s, the Kria KV260)")
    parser.add_argument("--lint", action="store_true",
                        help="then run the FuseSoC core's lint target (Verilator)")
    engine = parser.add_argument_group(
        "the engine", "defaults: --top layer 16 lanes x 32 rows, the weight port as wide as "
                      "--bus-bits; --top token 32 x 16, 128 bits, 3in5")
    engine.add_argument("--lanes", type=positive_int, default=None, help="the engine's lanes")
    engine.add_argument("--rows", type=positive_int, default=None, help="the engine's rows")
    engine.add_argument("--weight-port-bits", type=positive_int, default=None, metavar="BITS",
                        help="the engine's weight port")
    engine.add_argument("--packing", default=None, help="the weight port's packing")
    layer = parser.add_argument_group("--top layer")
    layer.add_argument("--tokens", type=positive_int, default=1, metavar="T",
                       help="tokens a run takes at most, each weight beat applied to all "
                            "(default: %(default)s)")
    layer.add_argument("--act-words", type=positive_int, default=4096, metavar="N",
                       help="words of the activation buffer (a word: a token's lanes "
                            "codes; default: %(default)s)")
    token = parser.add_argument_group("--top token")
    token.add_argument("--checkpoint", default=None, metavar="DIR",
                       help=f"the model (default: {DEFAULT_CHECKPOINT})")
    token.add_argument("--positions", type=positive_int, default=None, metavar="N",
                       help="positions of the KV region (default: the model's maximum)")
    token.add_argument("--head-rows", type=positive_int, default=2,
                       help="rows of the LM head unit (default: %(default)s)")
    token.add_argument("--head", choices=("int8", "grouped"), default="grouped",
                       help="the LM head's format (default: %(default)s)")


def _check(parser, args):
    import re
    from ternary_accel.cli.argtypes import refuse_unless
    for top, (_, _, own) in TOPS.items():
        refuse_unless(parser, args, args.top == top, f"with --top {top}", *own)
    bus = args.bus_bits
    if bus < 32 or bus > 1024 or bus & (bus - 1):
        parser.error(f"--bus-bits must be a power of two in 32..1024, not {bus}")
    if not 12 <= args.addr_width <= 64:
        parser.error(f"--addr-width must be in 12..64, not {args.addr_width}")
    if args.name is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", args.name):
        parser.error(f"--name must be a Verilog identifier, not {args.name!r}")
    if args.ip_version is not None and not re.fullmatch(r"\d+(\.\d+)*", args.ip_version):
        parser.error(f"--ip-version must be numbers with dots (0.1.0), not "
                     f"{args.ip_version!r}")
    for flag in ("vendor", "library"):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", getattr(args, flag)):
            parser.error(f"--{flag} must be letters, digits, '_', '.' or '-', not "
                         f"{getattr(args, flag)!r}")


def run(parser, args):
    from ternary_accel.hw.ip import IpError, write_ip
    from ternary_accel.sim.fusesoc import LINT_OPTIONS
    _check(parser, args)
    build, default_name, _ = TOPS[args.top]
    name = args.name or default_name
    top = build(parser, args)
    try:
        package = write_ip(top, args.outdir, name=name, vendor=args.vendor,
                           library=args.library, version=args.ip_version, part=args.part,
                           lint_options=LINT_OPTIONS)
    except IpError as error:
        print(f"ternary-accel ip: error: {error}", file=sys.stderr)
        return 1
    ports = package.ports
    print(f"{type(top).__name__} as IP {package.core} in {package.directory}: "
          f"{len(ports.ports)} ports, s_axil {ports.slave_addr_bits}-bit addresses, "
          f"m_axi {ports.master_data_bits} data bits, {ports.master_addr_bits}-bit addresses",
          file=sys.stderr)
    for path in (package.verilog, package.component, package.tcl, package.core_file):
        print(path)
    if args.lint:
        return _lint(package)
    return 0


def _lint(package):
    from ternary_accel.sim.fusesoc import fusesoc_command, run_target
    build_root = package.directory / "fusesoc"
    command = fusesoc_command(package.directory, package.core, build_root=build_root)
    print("lint: fusesoc " + " ".join(command[3:]), file=sys.stderr)
    status, output = run_target(package.directory, package.core, build_root=build_root)
    sys.stderr.write(output)
    print(f"lint: {'passed' if status == 0 else 'FAILED'} (fusesoc exit status {status})",
          file=sys.stderr)
    return 0 if status == 0 else 1
