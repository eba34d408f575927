"""``ternary-accel ip`` (``make ip``): the accelerator's system top packaged for vendor
flows (:mod:`ternary_accel.hw.ip`): its Verilog, an IP-XACT ``component.xml``, a Vivado
packaging script ``package_ip.tcl`` and a FuseSoC core, under ``build/ip/NAME`` or
``-o DIR``. With ``--lint`` (``make ip-lint``), FuseSoC then runs the core's ``lint``
target (Verilator, lint only).

The tops:

- ``token``: :class:`~ternary_accel.hw.rtl.system.TokenSystem`, the token core for a
  model (``--checkpoint``, default the reference model) with its register file and DMA.
"""

import sys
from pathlib import Path

from ternary_accel.cli.argtypes import output_dir, positive_int

#: One line for ``ternary-accel --help``.
HELP = "the system top as vendor IP: Verilog, IP-XACT, a Vivado script, a FuseSoC core"
#: The token top's model unless told otherwise: the project's reference model.
DEFAULT_CHECKPOINT = "checkpoints/b1.58/packed"


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
    try:
        params = token_engine(args.lanes, args.rows, weight_port_bits=args.weight_port_bits,
                              packing=args.packing, hidden=config.hidden, ffn=config.ffn)
        program = make_program(decoder, params, positions=positions,
                               head_rows=args.head_rows)
        return TokenSystem(program, args.bus_bits, addr_width=args.addr_width)
    except (ValueError, ProgramError) as error:
        parser.error(str(error))


#: ``--top``: the builders of the system tops, and their Verilog module's default name.
TOPS = {"token": (_token_top, "token_system")}
DEFAULT_TOP = "token"


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
                                         for top, (_, name) in TOPS.items()) + ")")
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
    token = parser.add_argument_group("--top token")
    token.add_argument("--checkpoint", default=None, metavar="DIR",
                       help=f"the model (default: {DEFAULT_CHECKPOINT})")
    token.add_argument("--positions", type=positive_int, default=None, metavar="N",
                       help="positions of the KV region (default: the model's maximum)")
    token.add_argument("--lanes", type=positive_int, default=32,
                       help="the engine's lanes (default: %(default)s)")
    token.add_argument("--rows", type=positive_int, default=16,
                       help="the engine's rows (default: %(default)s)")
    token.add_argument("--weight-port-bits", type=positive_int, default=128, metavar="BITS",
                       help="the engine's weight port (default: %(default)s)")
    token.add_argument("--packing", default="3in5",
                       help="the weight port's packing (default: %(default)s)")
    token.add_argument("--head-rows", type=positive_int, default=2,
                       help="rows of the LM head unit (default: %(default)s)")
    token.add_argument("--head", choices=("int8", "grouped"), default="grouped",
                       help="the LM head's format (default: %(default)s)")


def _check(parser, args):
    import re
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
    build, default_name = TOPS[args.top]
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
