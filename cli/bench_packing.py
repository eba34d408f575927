"""``ternary-accel bench packing`` (``make bench-packing``): the weight packings of the
memory port, measured on ECP5.

For each packing of :data:`model.encoding.PACKINGS` (base3, 3in5, 2bit) the word decoder
of a 128-bit port (:class:`hw.unpack.WordDecoder`, default decoder, LUTs only) goes
through Yosys and out-of-context nextpnr on LFE5U-45F in the registered harness, as the
``unpack_*`` rows of ``make bench-area`` do. Beside its LUT4s and Fmax the table gives
the memory bits per weight: asymptotic, and for one 16 x 32 weight beat (512 codes, each
beat starting on a word boundary) on 64-, 128- and 256-bit ports.
"""

import json
import sys
import time

from ternary_accel.cli.argtypes import non_negative_int, output_dir, positive_float
from ternary_accel.hw.paths import build_path
from ternary_accel.model.encoding import PACKINGS, bits_per_weight, codes_per_word, words_for

from ternary_accel.hw.fpga.synth import ToolError, run_flow
from ternary_accel.cli.synth import write_report
from ternary_accel.hw.fpga.synth import lut4_equivalent
from ternary_accel.hw.rtl.unpack import WordDecoder

#: Port width of the decoders placed.
PORT_BITS = 128
#: Codes of one weight beat of the 16 x 32 unit.
BEAT_CODES = 16 * 32
#: Port widths the beat's memory cost is given for.
BEAT_PORTS = (64, 128, 256)
STEM = "bench_packing"


def design_name(packing, port_bits=PORT_BITS):
    return f"word{port_bits}_{packing}"


def beat_bits_per_weight(packing, port_bits, codes=BEAT_CODES):
    """Memory bits per weight of one beat of ``codes`` weights that starts a word:
    ``words_for(codes) * port_bits / codes``."""
    return words_for(codes, packing, port_bits) * port_bits / codes


def packing_rows(results):
    """One dict per packing: its memory cost and its decoder's (``results`` by name)."""
    named = {r.design: r for r in results}
    rows = []
    for packing in PACKINGS:
        result = named[design_name(packing)]
        per_word = codes_per_word(packing, PORT_BITS)
        rows.append({
            "packing": packing, "port_bits": PORT_BITS, "codes_per_word": per_word,
            "bits_per_weight": bits_per_weight(packing),
            "beat_codes": BEAT_CODES,
            "beat_bits_per_weight": {str(p): beat_bits_per_weight(packing, p)
                                     for p in BEAT_PORTS},
            "lut4_equivalent": lut4_equivalent(result),
            "lut4_per_weight": lut4_equivalent(result) / per_word,
            "fmax_mhz": result.fmax_mhz if result.fmax_mhz else None,
        })
    return rows


def packing_table(rows):
    """The comparison as Markdown."""
    beat = " | ".join(f"bits/weight, {BEAT_CODES}-code beat, {p}-bit port"
                      for p in BEAT_PORTS)
    lines = ["", f"| packing | codes per {PORT_BITS}-bit word | bits/weight in memory "
             f"(asymptotic) | {beat} | decoder LUT4 eq. | decoder LUT4 eq. per weight | "
             "Fmax MHz |", "|" + "---|" * (6 + len(BEAT_PORTS))]
    for row in rows:
        cells = [row["packing"], str(row["codes_per_word"]), f"{row['bits_per_weight']:.3f}"]
        cells += [f"{row['beat_bits_per_weight'][str(p)]:.3f}" for p in BEAT_PORTS]
        fmax = row["fmax_mhz"]
        cells += [str(row["lut4_equivalent"]), f"{row['lut4_per_weight']:.2f}",
                  f"{fmax:.1f}" if fmax else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"A beat's bits/weight = words per beat x port bits / {BEAT_CODES} (each "
              "beat starts a word; the last word is padded with zero weights). LUT4 eq. per "
              f"weight = the {PORT_BITS}-bit decoder's LUT4 eq. / its codes per word. "
              f"3in5 leaves the top {PORT_BITS % 5} bits of a {PORT_BITS}-bit word unused. "
              "2bit has no decoder: its Fmax is one harness register to the next over "
              "wires, no limit of the packing. A negative FF count is harness registers Yosys "
              "removed: those of input bits the decoder ignores (3in5's top bits) or of a "
              "constant output (2bit's invalid flag)."]
    return "\n".join(lines) + "\n"


#: One line for ``ternary-accel --help``.
HELP = "the memory port's word packings: bits/weight, decoder LUT4s, Fmax"


def add_arguments(parser):
    """Add this command's flags to ``parser``."""
    parser.add_argument("--synth-only", action="store_true",
                        help="skip place and route (no Fmax)")
    parser.add_argument("--seed", type=non_negative_int, default=1)
    parser.add_argument("--freq", type=positive_float, default=300.0, metavar="MHZ")
    parser.add_argument("--outdir", type=output_dir, default=None,
                        help="where the reports go (default: build/reports)")
    parser.add_argument("--reuse", action="store_true",
                        help="skip the tools for designs whose build/synth/NAME already "
                             "holds the same Verilog through the same commands")


def run(parser, args):
    """Run the command; return the exit status."""
    args.outdir = args.outdir or build_path("reports")
    if args.freq <= 0:
        parser.error(f"--freq must be positive, not {args.freq}")
    if args.seed < 0:
        parser.error(f"--seed must be non-negative, not {args.seed}")

    results = []
    started = time.monotonic()
    for index, packing in enumerate(PACKINGS, 1):
        name = design_name(packing)
        print(f"[{index}/{len(PACKINGS)}] {name} ({time.monotonic() - started:.0f} s)",
              file=sys.stderr, flush=True)
        design = WordDecoder(packing=packing, port_bits=PORT_BITS)
        try:
            # LUTs only, as bench-area's unpacker rows
            results.append(run_flow(
                design, design=name, workdir=build_path("synth", name), seed=args.seed,
                freq_mhz=args.freq, nodsp=True, place=not args.synth_only,
                config={"component": "WordDecoder", "packing": design.packing,
                        "port_bits": design.port_bits, "decoder": design.decoder},
                reuse=args.reuse))
        except ToolError as error:
            print(f"ternary-accel bench packing: {name}: {error}", file=sys.stderr)
            return 1

    rows = packing_rows(results)
    markdown = write_report(results, args.outdir, STEM, packing_table(rows))
    report = args.outdir / f"{STEM}.json"
    report.write_text(json.dumps(dict(json.loads(report.read_text()), packings=rows),
                                 indent=2) + "\n")
    print(markdown)
    print(f"\n({time.monotonic() - started:.0f} s; written to {args.outdir}/{STEM}.md "
          "and .json)", file=sys.stderr)
    return 0
