"""``ternary-accel soc-sim`` (``make soc-sim``): the accelerator in a simulated LiteX SoC
under Verilator, checked against the golden model.

The SoC (:mod:`ternary_accel.soc.sim`): a VexRiscv running LiteX's BIOS, main RAM in
LiteDRAM with its SDRAM model, the console on the UART, and the accelerator's system
component on the buses (registers on the SoC's bus, DMA on a LiteDRAM port, its
interrupt at the CPU). This command computes the golden result, lays the data out in
main RAM (the SDRAM model starts with it), builds the SoC, its firmware
(``soc/firmware``) and Verilator's model (cached), runs it, reads what the firmware
printed on the console and compares every output word with the golden model:
``bit-exact: N outputs``, or the first mismatch and exit status 1.

Workloads (``--workload``):

- ``layer`` (the default): one BitLinear layer (32 x 64, 4 tokens, random ternary
  weights, int8 activations, per-token scale and shift of ``--seed``) on a
  ``LayerSystem`` (an 8 x 8 engine, a 64-bit weight port and DMA): activations, scales
  and weights in DRAM, the outputs written back; the outputs are the 128 results
  (token-major, each 16-bit result sign-extended), against
  :func:`ternary_accel.hw.layer_host.golden_layer`.
  With ``--checkpoint DIR``: a trained checkpoint's BitLinear instead
  (``--projection LAYER.NAME``, default ``0.q``: the packed ternary weights) on its real
  activations (the embedding rows of ``--prompt-ids``, quantized per token) with the
  output stage's scale and shift from the weight and activation scales
  (:func:`ternary_accel.hw.layer_host.checkpoint_layer`), on the same engine with a
  buffer and ``max_beats`` sized to the layer; the float BitLinear's error is printed.
- ``token``: one token of a small decoder (one layer, hidden 32, vocabulary 48, random
  weights of ``--seed``) on a ``TokenSystem`` (an 8 x 4 engine): the program, the
  embedding, the weights and the LM head in DRAM, the KV cache and the logits written
  back; the outputs are the 48 logits, and TOKEN their argmax.
"""

import importlib
import sys
import time

from ternary_accel.cli.argtypes import (non_negative_int, output_dir, positive_float,
                                        positive_int)

#: One line for ``ternary-accel --help``.
HELP = "the accelerator in a simulated LiteX SoC (VexRiscv, LiteDRAM) running a firmware"

#: The workloads, in ``--help`` order.
WORKLOADS = ("layer", "token")
#: The layer workload's engine (``LayerSystem``: lanes, rows, tokens T, weight port
#: bits, DMA bits, activation buffer words, max beats) and layer (out, in, tokens).
LAYER_DESIGN = {"lanes": 8, "rows": 8, "tokens": 4, "port_bits": 64, "bus_bits": 64,
                "act_words": 64, "max_beats": 16}
LAYER_SHAPE = (32, 64, 4)
#: The demo decoder of the token workload: (hidden, ffn, layers, heads, kv_heads, vocab).
TOKEN_SHAPE = (32, 64, 1, 2, 1, 48)
#: The token workload's engine (lanes, rows), bus bits, KV positions.
TOKEN_ENGINE, TOKEN_BUS_BITS, TOKEN_POSITIONS = (8, 4), 128, 8


def add_arguments(parser):
    """Add this command's flags to ``parser``."""
    parser.add_argument("--workload", choices=WORKLOADS, default=WORKLOADS[0],
                        help="what the firmware runs (default: %(default)s)")
    parser.add_argument("--seed", type=non_negative_int, default=5,
                        help="random weights' seed (default: %(default)s)")
    parser.add_argument("--tokens", type=positive_int, default=LAYER_SHAPE[2],
                        help="layer workload: tokens of the layer, 1 to "
                             f"{LAYER_DESIGN['tokens']} (default: %(default)s)")
    parser.add_argument("--token", type=non_negative_int, default=17,
                        help="token workload: the token id (default: %(default)s)")
    parser.add_argument("--checkpoint", metavar="DIR", default=None,
                        help="layer workload: a checkpoint's BitLinear on its embedding "
                             "rows (e.g. checkpoints/b1.58/packed)")
    parser.add_argument("--projection", default="0.q", metavar="LAYER.NAME",
                        help="with --checkpoint: the decoder layer and projection (q, k, "
                             "v, gate or up; default: %(default)s)")
    parser.add_argument("--prompt-ids", default="1 17 40 3", metavar='"ID ID .."',
                        help="with --checkpoint: the tokens whose embedding rows are the "
                             "activations, at most the engine's T (default: %(default)s)")
    parser.add_argument("--build-dir", type=output_dir, default=None, metavar="DIR",
                        help="the build folder, shared by the workloads (default: "
                             "build/soc-sim)")
    parser.add_argument("--jobs", type=positive_int, default=2,
                        help="parallel jobs of the C++ compile (default: %(default)s)")
    parser.add_argument("--timeout", type=positive_float, default=600.0, metavar="S",
                        help="seconds the simulation may run (default: %(default)s)")
    parser.add_argument("--keep-going", action="store_true",
                        help="list every mismatching output, not only the first")
    parser.add_argument("--console", action="store_true",
                        help="echo the simulation's console (the BIOS and the firmware) "
                             "on stderr")


def _progress(text):
    print(f"soc-sim: {text}", file=sys.stderr, flush=True)


class Workload:
    """What the SoC runs and what it must print: the system component, the firmware,
    its register map's C header, main RAM's placements (``{address: bytes}``), the
    expected output words and other expected report values."""

    def __init__(self, name, system, firmware, headers, placements, outputs, expect,
                 summary):
        self.name, self.system, self.firmware, self.headers = name, system, firmware, headers
        self.placements, self.outputs, self.expect = placements, outputs, expect
        self.summary = summary


def token_workload(args):
    """One token on a ``TokenSystem`` (module docstring)."""
    from ternary_accel.hw import program as P
    from ternary_accel.hw.host import CHANNEL_ORDER, dram_layout
    from ternary_accel.hw.regmap_formats import render
    from ternary_accel.hw.rtl.system import TokenSystem
    from ternary_accel.model import hwnum as H
    from ternary_accel.model.config import ModelConfig
    from ternary_accel.model.hwdecoder import HwDecoder
    from ternary_accel.model.shapes import TransformerShape
    from ternary_accel.model.weights import MasterWeights, random_master_weights
    from ternary_accel.sim.dram import channel_images
    from ternary_accel.soc.sim import DATA_OFFSET, JOB_OFFSET, MAIN_RAM_BASE

    hidden, ffn, layers, heads, kv_heads, vocab = TOKEN_SHAPE
    config = ModelConfig(TransformerShape("soc-demo", hidden, ffn, layers, heads,
                                          kv_heads=kv_heads, vocab=vocab),
                         rope_theta=10000.0, rms_norm_eps=1e-5, max_position_embeddings=16,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    decoder = HwDecoder(MasterWeights(config, random_master_weights(config, seed=args.seed)),
                        numerics=H.GROUPED_HEAD)
    program = P.make_program(decoder, P.token_engine(*TOKEN_ENGINE, hidden=hidden, ffn=ffn),
                             positions=TOKEN_POSITIONS)
    system = TokenSystem(program, TOKEN_BUS_BITS, addr_width=32)
    layout = dram_layout(channel_images(program, bus_bits=TOKEN_BUS_BITS),
                         base=MAIN_RAM_BASE + DATA_OFFSET)
    token, logits = P.GoldenToken(program).run(args.token, 0)
    job = [0x314B4F54, args.token, 0] + [layout[name][0] for name in CHANNEL_ORDER]
    placements = {MAIN_RAM_BASE + JOB_OFFSET: _job_bytes(job)}
    placements.update({base: image for base, image in layout.values() if image})
    outputs = [int(v) & 0xFFFF_FFFF for v in logits]
    summary = (f"one token ({args.token} at position 0) of a {layers}-layer decoder "
               f"(hidden {hidden}, vocabulary {vocab}) on a TokenSystem "
               f"({TOKEN_ENGINE[0]} x {TOKEN_ENGINE[1]} engine, {TOKEN_BUS_BITS}-bit DMA)")
    return Workload("token", system, "token", {"ternary_accel_regs.h": render("c")},
                    placements, outputs, {"token": int(token)}, summary)


def _job_bytes(words):
    return b"".join(int(w).to_bytes(4, "little") for w in words)


def layer_workload(args):
    """One BitLinear layer on a ``LayerSystem`` (module docstring)."""
    import numpy as np

    from ternary_accel.hw.layer_host import (LAYER_ORDER, checkpoint_layer, golden_layer,
                                             layer_images)
    from ternary_accel.hw.params import EngineParams
    from ternary_accel.hw.regmap import LAYER_REGMAP
    from ternary_accel.hw.regmap_formats import render
    from ternary_accel.hw.rtl.layer_system import LayerSystem
    from ternary_accel.soc.sim import DATA_OFFSET, JOB_OFFSET, MAIN_RAM_BASE

    d = dict(LAYER_DESIGN)
    note = ""
    if args.checkpoint:
        from ternary_accel.model.checkpoint import load_checkpoint
        layer, name = args.layer
        data = checkpoint_layer(load_checkpoint(args.checkpoint), layer, name, args.ids)
        weights, activations = data["weights"], data["activations"]
        scale, shift = data["scale"], data["shift"]
        out_features, in_features = weights.shape
        tokens = activations.shape[0]
        beats = -(-in_features // d["lanes"])
        d.update(max_beats=max(d["max_beats"], beats), act_words=d["tokens"] * beats)
        golden = golden_layer(weights, activations, scale, shift)
        err = np.abs(golden * 2.0 ** -data["frac_bits"] - data["float"])
        note = (f"; {args.checkpoint} layer {layer} {name}, tokens {list(args.ids)}: "
                f"against the float BitLinear max |error| {err.max():.3g} (bound "
                f"{data['bound'].max():.3g}, {data['frac_bits']} fractional bits)")
    else:
        out_features, in_features, _ = LAYER_SHAPE
        tokens = args.tokens
        rng = np.random.default_rng(args.seed)
        weights = rng.integers(-1, 2, size=(out_features, in_features))
        activations = rng.integers(-128, 128, size=(tokens, in_features))
        activations[0, :2] = [-128, 127]               # the int8 range's ends
        scale = rng.integers(1, 1 << 16, size=tokens)
        shift = rng.integers(8, 20, size=tokens)
    params = EngineParams(lanes=d["lanes"], rows=d["rows"], tokens=d["tokens"],
                          weight_port_bits=d["port_bits"], max_beats=d["max_beats"])
    system = LayerSystem(params, d["act_words"], d["bus_bits"], addr_width=32)
    images = layer_images(params, weights, activations, scale, shift,
                          bus_bits=d["bus_bits"])
    layout = images.layout(MAIN_RAM_BASE + DATA_OFFSET)
    golden = golden_layer(weights, activations, scale, shift)
    job = [0x3159414C, images.beats, images.tiles, images.tokens] + \
          [layout[name][0] for name in LAYER_ORDER]
    placements = {MAIN_RAM_BASE + JOB_OFFSET: _job_bytes(job)}
    placements.update({base: image for base, image in layout.values() if image})
    outputs = [int(v) & 0xFFFF_FFFF for v in np.asarray(golden).reshape(-1)]
    summary = (f"one BitLinear layer ({out_features} x {in_features}, {tokens} tokens) on "
               f"a LayerSystem ({d['lanes']} x {d['rows']} engine, {d['port_bits']}-bit "
               f"weight port, {d['bus_bits']}-bit DMA){note}")
    return Workload("layer", system, "layer",
                    {"ternary_accel_layer_regs.h": render("c", LAYER_REGMAP)},
                    placements, outputs, {}, summary)


WORKLOAD_BUILDERS = {"layer": layer_workload, "token": token_workload}


def compare(report, workload, *, keep_going=False):
    """``(ok, lines)``: the verdict of the firmware's ``report`` against ``workload``:
    every output word, the count, the checksum and the other expected values."""
    from ternary_accel.soc.sim import fnv1a32
    lines, expected, got = [], workload.outputs, report.outputs
    mismatches = [i for i, (a, b) in enumerate(zip(got, expected)) if a != b]
    if mismatches:
        shown = mismatches if keep_going else mismatches[:1]
        for i in shown:
            lines.append(f"mismatch: output {i}: got {got[i]:#010x}, expected "
                         f"{expected[i]:#010x} ({len(mismatches)} of {len(expected)} differ)")
        return False, lines
    if len(got) != len(expected):
        return False, [f"mismatch: {len(got)} outputs printed, {len(expected)} expected"]
    if report.checksum != fnv1a32(expected):
        printed = "none" if report.checksum is None else f"{report.checksum:#010x}"
        return False, [f"mismatch: checksum {printed}, expected {fnv1a32(expected):#010x}"]
    for key, value in workload.expect.items():
        if report.number(key) != value:
            return False, [f"mismatch: {key} {report.values.get(key)}, expected {value}"]
    return True, [f"bit-exact: {len(expected)} outputs"]


def run(parser, args):
    """Run the command; return the exit status."""
    from ternary_accel.hw.paths import build_path
    from ternary_accel.sim.verilator import VerilatorNotFound, configure_environment
    from ternary_accel.soc.sim import (SocSimError, SocSimulation, check_tools, parse_report,
                                       ram_image)

    if args.workload == "layer" and args.tokens > LAYER_DESIGN["tokens"]:
        parser.error(f"argument --tokens: at most {LAYER_DESIGN['tokens']} (the engine's "
                     f"T), not {args.tokens}")
    if args.checkpoint:
        if args.workload != "layer":
            parser.error("argument --checkpoint: only with --workload layer")
        layer, _, name = args.projection.partition(".")
        if not layer.isdigit() or name not in ("q", "k", "v", "gate", "up"):
            parser.error(f"argument --projection: LAYER.NAME with NAME one of q, k, v, "
                         f"gate, up, not {args.projection!r}")
        args.layer = (int(layer), name)
        try:
            args.ids = [int(v) for v in args.prompt_ids.split()]
        except ValueError:
            parser.error(f"argument --prompt-ids: integers, not {args.prompt_ids!r}")
        if not 1 <= len(args.ids) <= LAYER_DESIGN["tokens"]:
            parser.error(f"argument --prompt-ids: 1 to {LAYER_DESIGN['tokens']} tokens "
                         f"(the engine's T), not {len(args.ids)}")
    if args.workload == "token" and args.token >= TOKEN_SHAPE[-1]:
        parser.error(f"argument --token: below the vocabulary ({TOKEN_SHAPE[-1]}), not "
                     f"{args.token}")
    for name in ("litex", "litedram", "migen"):     # the soc extra (main names it)
        importlib.import_module(name)
    missing = check_tools()
    if missing:
        print(f"ternary-accel soc-sim: error: missing Debian packages: {' '.join(missing)} "
              "(make soc-tools)", file=sys.stderr)
        return 1
    try:
        configure_environment()
    except VerilatorNotFound as error:
        print(f"ternary-accel soc-sim: error: {error}", file=sys.stderr)
        return 1
    started = time.monotonic()
    try:
        workload = WORKLOAD_BUILDERS[args.workload](args)
    except (ValueError, OSError) as error:       # a checkpoint missing, broken or unfit
        print(f"ternary-accel soc-sim: error: {error}", file=sys.stderr)
        return 1
    _progress(f"workload: {workload.summary}")
    build_dir = args.build_dir or build_path("soc-sim")
    sim = SocSimulation(workload.system, firmware=workload.firmware, build_dir=build_dir,
                        name=workload.name, headers=workload.headers, jobs=args.jobs,
                        progress=_progress)
    echo = (lambda line: print(f"console| {line}", file=sys.stderr, flush=True)) \
        if args.console else None
    try:
        sim.build_software()
        firmware = sim.build_firmware()
        image = ram_image(firmware, workload.placements)
        sim.build_gateware(image)
        for name, origin, size in sim.memory_map():
            _progress(f"map: {name:<9} {origin:#010x} {size:#x} bytes")
        result = sim.run(timeout_s=args.timeout, echo=echo)
        report = parse_report(result.console)
    except SocSimError as error:
        print(f"ternary-accel soc-sim: error: {error}", file=sys.stderr)
        return 1
    times = sim.times
    _progress(f"times: software {times.get('software', 0):.1f} s (make's CPU "
              f"{times.get('software_cpu', 0):.1f} s), firmware "
              f"{times.get('firmware', 0):.1f} s, Verilog {times.get('verilog', 0):.1f} s, "
              f"Verilator {times.get('compile', 0):.1f} s (CPU "
              f"{times.get('compile_cpu', 0):.1f} s), run {times.get('run', 0):.1f} s, "
              f"total {time.monotonic() - started:.1f} s")
    if not report.ended:
        why = "timed out" if result.returncode is None else f"exited ({result.returncode})"
        print(f"ternary-accel soc-sim: error: the firmware did not finish: the simulation "
              f"{why} (console: {result.log})", file=sys.stderr)
        return 1
    if report.number("status") != 0:
        print(f"ternary-accel soc-sim: error: the firmware ended with status "
              f"{report.values.get('status')} (error_flags "
              f"{report.values.get('error_flags')}; console: {result.log})", file=sys.stderr)
        return 1
    for key in ("accel.id", "accel.version", "polls", "irq.line", "irq.cpu_pending"):
        if key in report.values:
            print(f"{key}: {report.values[key]}")
    for key, value in report.values.items():
        if key.startswith("cycles."):
            print(f"{key}: {value}")
    for key in workload.expect:
        print(f"{key}: {report.values.get(key)}")
    if report.checksum is not None:
        print(f"checksum: {report.checksum:#010x}")
    ok, lines = compare(report, workload, keep_going=args.keep_going)
    for line in lines:
        print(line)
    sim.write_summary(sim.work_dir / "summary.json", verdict=lines[0],
                      cycles={k: v for k, v in report.values.items() if k.startswith("cycles.")})
    return 0 if ok else 1
