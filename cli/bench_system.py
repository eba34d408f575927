"""``ternary-accel bench system`` (``make bench-system``): BitLinear layers from DRAM
through the layer system's AXI4 master.

The layer system (``hw.rtl.layer_system.LayerSystem``: the layer engine behind an
AXI4-Lite register file and one AXI4 master) runs under Verilator with cocotbext-axi's
``AxiRam`` as DRAM (answering at once: the bus's bandwidth, a beat a cycle) and its
``AxiLiteMaster`` driving the host driver (``hw.layer_host.LayerHost``). Each layer's
weights, activations and scales are laid out in DRAM, the layer runs from a start to
its interrupt, and every output word is compared with the golden model
(``hw.layer_host.golden_layer``). The table sets the cycles the counters read
(``CYCLES_LOAD``, ``_RUN``, ``_TOTAL``, ``_STALL``) beside the engine's cycle model of
the layer (``EngineParams.mapping(...).cycles``, the engine fed a word a cycle).

By default: BitNet b1.58 2B4T's q_proj (2560 x 2560) at T = 1 and T = 16 on the
16 x 32 engine with a 128-bit weight port and a 128-bit bus (about 15 minutes; each
``--only`` projection adds its own: gate_proj, 2.7 times the cycles).
"""

import sys
import tempfile
import time
from pathlib import Path

from ternary_accel.cli.argtypes import positive_int
from ternary_accel.cli.results import render_records

#: One line for ``ternary-accel --help``.
HELP = "BitLinear layers from DRAM through the AXI master of the layer system, bit-exact, cycles vs model"
#: 2B4T's projections by name: (out_features, in_features).
PROJECTIONS = {"q_proj": (2560, 2560), "gate_proj": (6912, 2560), "k_proj": (640, 2560),
               "o_proj": (2560, 2560), "up_proj": (6912, 2560)}


def add_arguments(parser):
    """Add this command's flags to ``parser``."""
    parser.add_argument("--lanes", type=positive_int, default=16)
    parser.add_argument("--rows", type=positive_int, default=32)
    parser.add_argument("--max-tokens", type=positive_int, default=16, metavar="T",
                        help="the engine's weight reuse T (default: %(default)s)")
    parser.add_argument("--bus-bits", type=positive_int, default=128, metavar="BITS",
                        help="the AXI data width and the weight port (default: %(default)s)")
    parser.add_argument("--tokens", default="1,16", metavar="T,T",
                        help="tokens of each run (default: %(default)s)")
    parser.add_argument("--only", action="append", metavar="PROJ",
                        choices=tuple(PROJECTIONS),
                        help="projections to run (default: q_proj)")


def _tokens(parser, text, most):
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        parser.error(f"--tokens takes comma-separated integers, not {text!r}")
    bad = [v for v in values if not 1 <= v <= most]
    if bad:
        parser.error(f"--tokens must be in 1..{most} (--max-tokens), not {bad[0]}")
    return values


def run(parser, args):
    from ternary_accel.hw.regmap import stride_bytes
    from ternary_accel.sim.layer_system import run_layer_system, system_params
    tokens = _tokens(parser, args.tokens, args.max_tokens)
    names = args.only or ["q_proj"]
    shapes = [(*PROJECTIONS[n], t) for n in names for t in tokens]
    in_max = max(s[1] for s in shapes)
    design = {"lanes": args.lanes, "rows": args.rows, "tokens": args.max_tokens,
              "port_bits": args.bus_bits, "bus_bits": args.bus_bits, "addr_width": 32,
              "max_beats": max(256, -(-in_max // args.lanes)),
              "act_words": args.max_tokens * -(-in_max // args.lanes)}
    params = system_params(design)
    try:
        mappings = [params.mapping(o, i, t) for o, i, t in shapes]
    except ValueError as error:
        parser.error(str(error))
    ram = max(sum(m.weight_bytes for m in mappings), 1) * 2 + (1 << 22)
    design["ram_size"] = 1 << (ram - 1).bit_length()
    print(f"bench system: {len(shapes)} layers on the {args.lanes} x {args.rows} engine, "
          f"T = {args.max_tokens}, {args.bus_bits}-bit bus; building and simulating "
          f"(a few minutes)", file=sys.stderr, flush=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-system-") as tmp:
        tests, failed, data, log = run_layer_system(design, Path(tmp), layers=shapes,
                                                    tests="cycles_without_pauses")
    if tests != 1 or failed or "cycles" not in data:
        tail = "\n".join(line for line in log.splitlines()
                         if "Error" in line or "assert" in line.lower())[-2000:]
        print(f"ternary-accel bench system: error: the simulation failed:\n{tail}",
              file=sys.stderr)
        return 1
    records = []
    for name_shape, mapping, measured in zip(
            [(n, t) for n in names for t in tokens], mappings, data["cycles"]):
        model = mapping.cycles
        records.append({
            "layer": f"{name_shape[0]} {mapping.out_features} x {mapping.in_features}",
            "T": name_shape[1], "bit-exact": "yes",
            "weight words": mapping.row_tiles * mapping.col_beats *
            mapping.port_words_per_beat,
            "load": measured["load"], "run": measured["run"], "total": measured["total"],
            "stall": measured["stall"], "model": model,
            "run vs model": f"{100 * (measured['run'] / model - 1):+.2f}%",
            "total vs model": f"{100 * (measured['total'] / model - 1):+.2f}%"})
    print(render_records(records, "markdown"))
    word = stride_bytes(args.bus_bits, args.bus_bits)
    print(f"\nDRAM: cocotbext-axi AxiRam answering at once (a {word}-byte beat a cycle); "
          f"every output word equal to the golden model's; {time.monotonic() - started:.0f} s "
          f"wall. model: the engine's cycle model of the layer "
          f"(EngineParams.mapping(...).cycles: a weight word a cycle, max(W, T) cycles a "
          f"beat); run: the counters from the last activation on chip to the last result "
          f"handed to the DMA; total: start to done (the load of the activations and the "
          f"last writes' responses included).")
    return 0
