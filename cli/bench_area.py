"""``ternary-accel bench area`` (``make bench-area``): area and Fmax sweep on ECP5.

Lane groups alone (K = 8, 16, 32, 64) and whole units (M x K), ternary, built with the
ECP5 carry-cell lane groups (``fabric="ecp5"``); the portable generic design for two of
them; beside them the int8 baseline of the same unit with real multipliers (DSP blocks,
and LUTs only), through the same open flow; and the int4 activations of BitNet a4.8
(``act_width=4``, rows named ``..._a4``) for lane groups and a unit; the layer engines;
the LM head unit (``hw.rtl.head.HeadDot``, the grouped int4 head, products in DSP blocks
or LUTs only: ``head..._dsp``, ``head..._lut``); the whole-token accelerator
(``hw.rtl.token.TokenCore`` of the reference model, on the LFE5U-85F), its engine alone
and each of its units (``token_*``). Ends with the
ternary / baseline ratios, the int4 / int8 activation ratios and the LFE5U-85F
projection.
"""

import argparse
import datetime
import json
import shlex
from dataclasses import fields
import sys
import time
from pathlib import Path

from ternary_accel.cli.argtypes import non_negative_int, output_dir, positive_float, refuse_unless
from ternary_accel.hw.paths import build_path
from ternary_accel.model.quant import INT8

from ternary_accel.hw.rtl.engine import LayerEngine
from ternary_accel.hw.rtl.lanes import DotProduct
from ternary_accel.hw.rtl.matmul import MatmulUnit
from ternary_accel.hw.fpga.synth import SynthResult, ToolError, median_over_seeds, run_flow
from ternary_accel.hw.fpga.synth import _CELLS, TARGETS, RegisteredHarness
from ternary_accel.cli.synth import result_table, write_report
from ternary_accel.hw.fpga.synth import lut4_equivalent
from ternary_accel.hw.rtl.head import HeadDot
from ternary_accel.hw.rtl.unpack import DECODERS, TritUnpacker
from ternary_accel.model.hwnum import GROUPED_HEAD
from ternary_accel.hw.params import ECP5
from ternary_accel.hw.params import UnitParams

#: LFE5U-85F resources (Lattice ECP5 family data sheet): LUT4s and 18x18 multipliers.
ECP5_85F_LUT4 = 83640
ECP5_85F_MULT18 = 156
#: LFE5U-85F: DP16KD block RAMs.
ECP5_85F_BRAM = 208
#: LFE5U-45F: the device every row of the sweep is placed on.
ECP5_45F_MULT18 = 72

LANE_GROUPS = (8, 16, 32, 64)
UNITS = ((4, 16), (8, 32), (16, 32), (16, 64))
#: Baseline units: the DSP variant only where its multipliers fit the 45F's 72 blocks,
#: the LUT-only variant where it fits the 45F's LUTs.
BASELINE_DSP = ((4, 16),)
BASELINE_LUT = ((4, 16),)
#: Also built with the generic (portable) lane groups, for comparison.
GENERIC_LANE_GROUPS = (8,)
GENERIC_UNITS = ((16, 32),)
#: Layer engines: unpacker (ROM decoder) + unit with the output stage (its M rescale
#: multipliers may use DSP blocks).
ENGINES = ((16, 32),)
#: Dot products the swept engines' accumulators hold, in beats (the figures of the
#: area table were measured with 1024).
ENGINE_MAX_BEATS = 1024
#: The sparse dataflow's engine (column-order weight beats, an accumulator bank for the
#: beat-major order) deep enough for every 2B4T projection on 16 rows: 6912 / 16 tiles.
SPARSE_ENGINES = ((16, 32, 432),)
#: Engines with weight reuse (T tokens a beat), decoders sized to a 128-bit weight
#: port and the pipelined output stage shared by the rows (one a cycle), one per
#: packing; the 3-in-5 engine with the stage parallel (16 rows a cycle); and the 3-in-5
#: engine with its activation register in 4 copies (one per 4 rows): (rows, lanes,
#: LayerEngine parameters).
BATCHED_ENGINES = tuple(
    (16, 32, {"tokens": 16, "weight_port_bits": 128, "packing": packing,
              "output_rows": output_rows})
    for packing, output_rows in (("base3", 1), ("3in5", 1), ("2bit", 1), ("3in5", 16))
) + ((16, 32, {"tokens": 16, "weight_port_bits": 128, "packing": "3in5", "output_rows": 1,
               "act_copies": 4}),)
#: The unit with its activation register replicated (act_copies), beside the plain one.
ACT_COPIES_UNITS = ((16, 32, 2), (16, 32, 4))
#: Packed bytes per beat of the trit unpackers compared (results are quoted per byte).
UNPACKER_BYTES = 8
#: The LM head unit (hw.rtl.head.HeadDot) of the grouped int4 head for 2B4T's hidden
#: size: (rows, lanes); with its int8 x int4 products in DSP blocks and in LUTs only.
HEAD_UNITS = ((2, 32),)
HEAD_HIDDEN = 2560
#: The whole-token accelerator (``token_*`` rows): TokenCore of the reference model
#: (checkpoints/b1.58/packed, grouped int4 head) on a 16 x 32 engine with a 128-bit
#: 3-in-5 weight port, its KV region for TOKEN_POSITIONS; placed on TOKEN_TARGET (it
#: does not fit the 45F), as is the same engine alone (LayerEngine(program.params)),
#: the reference for the units' share of the LUTs. The units, sized for the same
#: model, go on the 45F like the other rows.
TOKEN_MODEL = ("b1.58", "packed")
TOKEN_ENGINE = {"lanes": 32, "rows": 16, "weight_port_bits": 128, "packing": "3in5"}
TOKEN_POSITIONS = 256
TOKEN_TARGET = "ecp5-85k"
#: The issue's goals: the units add at most this share to the engine's LUT4 eq., and
#: the whole core runs at this clock on the LFE5U-85F.
TOKEN_UNITS_SHARE_GOAL = 0.30
TOKEN_FMAX_GOAL_MHZ = 150.0
QUICK_LANE_GROUPS = (8,)
QUICK_UNITS = ((4, 16),)
#: int4 activations (``act_width=4``), ECP5 fabric, beside the int8 rows of the same K.
INT4_WIDTH_SWEPT = 4
INT4_LANE_GROUPS = (8, 16, 32)
INT4_UNITS = ((16, 32),)
QUICK_INT4_LANE_GROUPS = (8,)


#: One line for ``ternary-accel --help``.
HELP = 'ECP5 area/Fmax sweep with the int8 baseline'


def add_arguments(parser):
    """Add this command's flags to ``parser``."""
    parser.add_argument("--quick", action="store_true",
                        help="one lane group and one unit only (a smoke run)")
    parser.add_argument("--seed", type=non_negative_int, default=None,
                        help="the placement seed (default: 1)")
    parser.add_argument("--seeds", type=seed_list, default=None, metavar="S1,S2,..",
                        help="place every design once per seed and report the median "
                             "Fmax (the per-seed values in an extra column)")
    parser.add_argument("--freq", type=positive_float, default=300.0, metavar="MHZ")
    parser.add_argument("--outdir", type=output_dir, default=None,
                        help="where the reports go (default: build/reports)")
    parser.add_argument("--reuse", action="store_true",
                        help="skip the tools for designs whose build/synth/NAME already "
                             "holds the same Verilog through the same commands")
    parser.add_argument("--only", action="append", metavar="PATTERN",
                        help="run only the designs whose name matches PATTERN (shell "
                             "wildcards; repeatable)")
    parser.add_argument("--single-seed", action="append", metavar="PATTERN",
                        help="with --seeds, place the designs whose name matches PATTERN "
                             "with the first seed only (designs too slow to place several "
                             "times, e.g. token_core; repeatable)")
    parser.add_argument("--from-json", type=Path, metavar="FILE",
                        help="re-render the report of an earlier run (its bench_area.json) "
                             "without running the tools")


def run(parser, args):
    """Run the command; return the exit status."""
    args.outdir = args.outdir or build_path("reports")
    if args.freq <= 0:
        parser.error(f"--freq must be positive, not {args.freq}")
    if args.seed is not None and args.seeds is not None:
        parser.error("--seed and --seeds exclude each other (one seed: --seeds N)")
    refuse_unless(parser, args, args.from_json is None, "without --from-json (which runs "
                  "no tool)", "quick", "seed", "seeds", "freq", "reuse", "only",
                  "single_seed")
    seeds = args.seeds or [1 if args.seed is None else args.seed]
    if args.from_json is not None:
        try:
            results = load_results(args.from_json)
        except (OSError, ValueError, KeyError, TypeError) as error:
            parser.error(f"cannot read results from {args.from_json}: {error}")
        print(write_seed_report(results, args.outdir, "bench_area", report_extra(results)))
        return 0

    quick = args.quick
    jobs = []
    # lane groups as the unit builds them: without the invalid-code OR, which the unit
    # does not use (it flags invalid codes from its weight stream)
    for lanes in (QUICK_LANE_GROUPS if quick else LANE_GROUPS):
        jobs.append((f"lanes{lanes}", lambda k=lanes: DotProduct(
            lanes=k, fabric=ECP5, invalid_flag=False), lanes, False))
    for lanes in (QUICK_INT4_LANE_GROUPS if quick else INT4_LANE_GROUPS):
        jobs.append((f"lanes{lanes}{UnitParams(act_width=INT4_WIDTH_SWEPT).act_width_suffix}",
                     lambda k=lanes: DotProduct(lanes=k, fabric=ECP5,
                                                act_width=INT4_WIDTH_SWEPT,
                                                invalid_flag=False),
                     lanes, False))
    for lanes in (() if quick else GENERIC_LANE_GROUPS):
        jobs.append((f"lanes{lanes}_generic",
                     lambda k=lanes: DotProduct(lanes=k, invalid_flag=False), lanes, False))

    def units(name, suffix, shapes, nodsp, **params):
        return [(f"{name}{rows}x{lanes}{suffix}",
                 lambda m=rows, k=lanes: MatmulUnit(lanes=k, rows=m, **params),
                 rows * lanes, nodsp) for rows, lanes in shapes]

    jobs += units("unit", "", QUICK_UNITS if quick else UNITS, False, fabric=ECP5)
    for rows, lanes, copies in (() if quick else ACT_COPIES_UNITS):
        jobs += units("unit", f"_ac{copies}", ((rows, lanes),), False, fabric=ECP5,
                      act_copies=copies)
    jobs += units("unit", UnitParams(act_width=INT4_WIDTH_SWEPT).act_width_suffix, () if quick else INT4_UNITS,
                  False, fabric=ECP5, act_width=INT4_WIDTH_SWEPT)
    jobs += units("unit", "_generic", () if quick else GENERIC_UNITS, False)
    jobs += units("int8_unit", "_dsp", () if quick else BASELINE_DSP, False,
                  weight_mode=INT8)
    jobs += units("int8_unit", "_lut", QUICK_UNITS if quick else BASELINE_LUT, True,
                  weight_mode=INT8)
    for rows, lanes in (() if quick else ENGINES):
        jobs.append((f"engine{rows}x{lanes}",
                     lambda m=rows, k=lanes: LayerEngine(lanes=k, rows=m, fabric=ECP5,
                                                         max_beats=ENGINE_MAX_BEATS),
                     rows * lanes, False))
    for rows, lanes, params in (() if quick else BATCHED_ENGINES):
        jobs.append((batched_engine_name(rows, lanes, params),
                     lambda m=rows, k=lanes, p=params: LayerEngine(lanes=k, rows=m,
                                                                   fabric=ECP5,
                                                                   max_beats=ENGINE_MAX_BEATS,
                                                                   **p),
                     rows * lanes, False))
    for rows, lanes, tiles in (() if quick else SPARSE_ENGINES):
        jobs.append((f"engine{rows}x{lanes}_sparse_t{tiles}",
                     lambda m=rows, k=lanes, t=tiles: LayerEngine(
                         lanes=k, rows=m, fabric=ECP5, weight_order="columns", acc_tiles=t,
                         max_beats=ENGINE_MAX_BEATS),
                     rows * lanes, False))
    unpackers = [(f"unpack_{decoder}",
                  lambda d=decoder: TritUnpacker(bytes_per_beat=UNPACKER_BYTES, decoder=d))
                 for decoder in DECODERS]
    # LUTs only: with DSP blocks allowed Yosys puts mulshift's constant multiplies in
    # MULT18X18Ds (nine per byte), which no real engine could afford.
    jobs += [(name, build, 0, True) for name, build in unpackers]
    for rows, lanes in (() if quick else HEAD_UNITS):
        for nodsp in (False, True):
            jobs.append((f"head{rows}x{lanes}_grouped{'_lut' if nodsp else '_dsp'}",
                         lambda m=rows, k=lanes: HeadDot(HEAD_HIDDEN, k, m, GROUPED_HEAD),
                         rows * lanes, nodsp))

    jobs += [] if quick else token_jobs()

    from fnmatch import fnmatch
    if args.only:
        jobs = [job for job in jobs if any(fnmatch(job[0], p) for p in args.only)]
        if not jobs:
            parser.error(f"no design matches --only {' '.join(args.only)}")
    results = []
    started = time.monotonic()
    for index, (name, build, macs, nodsp, *rest) in enumerate(jobs, 1):
        target = rest[0] if rest else "ecp5"
        runs = []
        single = any(fnmatch(name, p) for p in args.single_seed or ())
        for seed in seeds[:1] if single else seeds:
            print(f"[{index}/{len(jobs)}] {name}"
                  f"{f' seed {seed}' if len(seeds) > 1 else ''} "
                  f"({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
            # one folder per seed when there are several, so --reuse finds each run
            workdir = (build_path("synth", name) if len(seeds) == 1 else
                       build_path("synth", name, f"seed{seed}"))
            try:
                design = build()
                runs.append(run_flow(design, design=name, workdir=workdir, target=target,
                                     seed=seed, freq_mhz=args.freq, nodsp=nodsp, macs=macs,
                                     config=design_config(design), reuse=args.reuse))
            except ToolError as error:
                if not (name.startswith("token_") and does_not_fit(error)):
                    print(f"ternary-accel bench area: {name}: {error}", file=sys.stderr)
                    return 1
                # the design does not fit the device: its synthesis figures, no Fmax
                print(f"ternary-accel bench area: {name}: does not fit {TARGETS[target].device}"
                      f": {error}", file=sys.stderr)
                runs.append(unplaced_result(design, name, workdir, target, seed, nodsp, macs,
                                            design_config(design), error))
        results.append(median_over_seeds(runs))

    markdown = write_seed_report(results, args.outdir, "bench_area", report_extra(results))
    print(markdown)
    if getattr(args, "results", None) is not None:
        path = write_results_json(results, args.results, args.results_name)
        print(f"results: {path}", file=sys.stderr)
    print(f"\n({time.monotonic() - started:.0f} s; written to {args.outdir}/bench_area.md "
          "and .json)", file=sys.stderr)
    return 0


def token_program():
    """The :class:`~ternary_accel.hw.program.TokenProgram` of the ``token_*`` rows (the
    reference model on :data:`TOKEN_ENGINE`, :data:`TOKEN_POSITIONS` positions)."""
    global _TOKEN_PROGRAM
    if _TOKEN_PROGRAM is None:
        from ternary_accel.hw.program import make_program, token_engine
        from ternary_accel.model.checkpoint import load_checkpoint
        from ternary_accel.model.hwdecoder import HwDecoder
        from ternary_accel.model.reference import reference_checkpoint
        decoder = HwDecoder(load_checkpoint(reference_checkpoint(*TOKEN_MODEL)),
                            numerics=GROUPED_HEAD)
        c = decoder.config
        params = token_engine(TOKEN_ENGINE["lanes"], TOKEN_ENGINE["rows"],
                              weight_port_bits=TOKEN_ENGINE["weight_port_bits"],
                              packing=TOKEN_ENGINE["packing"], hidden=c.hidden, ffn=c.ffn)
        _TOKEN_PROGRAM = make_program(decoder, params, positions=TOKEN_POSITIONS)
    return _TOKEN_PROGRAM


_TOKEN_PROGRAM = None


def token_units(program):
    """``{name: build}`` of the token core's units (rows ``token_NAME``), each sized as
    the core sizes it for ``program`` (its configuration, numerics and engine)."""
    from ternary_accel.hw.rtl.attention import AbsmaxQuant, AttentionHead
    from ternary_accel.hw.rtl.elementwise import Elementwise
    from ternary_accel.hw.rtl.head import Argmax
    from ternary_accel.hw.rtl.normquant import NormQuant
    from ternary_accel.hw.rtl.rescale import Rescale
    from ternary_accel.hw.rtl.rope import Rope
    from ternary_accel.hw.rtl.scalar import ScalarUnit
    from ternary_accel.hw.rtl.softmax import Softmax
    c, n, p = program.config, program.numerics, program.params
    hd, depth = c.head_dim, program.positions
    code_bits = sorted({n.qk_bits, n.v_bits})
    kv_bits = code_bits[0] if len(code_bits) == 1 else tuple(code_bits)

    def head():
        return HeadDot(c.hidden, p.lanes, program.head_rows, n)

    def engine_acc_width():
        return len(LayerEngine(p).res.payload[0])

    return {
        "normquant": lambda: NormQuant(max(c.hidden, c.ffn, c.heads * hd), n),
        "absmax": lambda: AbsmaxQuant(hd, kv_bits, n),
        "attention": lambda: AttentionHead(hd, depth, n, lanes=program.attention_lanes),
        "softmax": lambda: Softmax(depth, n),
        "rope": lambda: Rope(hd, depth, c.rope_theta, n),
        "elementwise": lambda: Elementwise(n),
        "scalar": lambda: ScalarUnit(n),
        "rescale": lambda: Rescale(engine_acc_width(), n),
        "head_rescale": lambda: Rescale(head().acc_width, n, row_scales=True),
        "head": head,
        "argmax": lambda: Argmax(c.vocab, n),
    }


#: The units of the ``token_*`` rows, in order (:func:`token_units`).
TOKEN_UNITS = ("normquant", "absmax", "attention", "softmax", "rope", "elementwise",
               "scalar", "rescale", "head_rescale", "head", "argmax")
#: Row names of the whole core and of its engine alone.
TOKEN_CORE = "token_core"
TOKEN_ENGINE_ROW = f"token_engine{TOKEN_ENGINE['rows']}x{TOKEN_ENGINE['lanes']}"


def token_jobs():
    """The ``token_*`` jobs: the whole core and its engine on :data:`TOKEN_TARGET`, then
    the units on the 45F (the program is made only when a job is built)."""
    macs = TOKEN_ENGINE["rows"] * TOKEN_ENGINE["lanes"]

    def core():
        from ternary_accel.hw.rtl.token import TokenCore
        return TokenCore(token_program())

    jobs = [(TOKEN_CORE, core, macs, False, TOKEN_TARGET),
            (TOKEN_ENGINE_ROW, lambda: LayerEngine(token_program().params), macs, False,
             TOKEN_TARGET)]
    jobs += [(f"token_{unit}", lambda u=unit: token_units(token_program())[u](), 0, False)
             for unit in TOKEN_UNITS]
    return jobs


def does_not_fit(error):
    """Whether a :class:`ToolError` is nextpnr running out of a resource of the device."""
    return "nextpnr failed" in str(error) and "no BELs remaining" in str(error)


def unplaced_result(design, name, workdir, target, seed, nodsp, macs, config, error):
    """The :class:`SynthResult` of ``design`` that Yosys synthesized into ``workdir`` and
    nextpnr could not place (``error``): :func:`run_flow`'s counts from ``stat.json``,
    the logic cells nextpnr packed from its log, Fmax 0 and the error in
    ``config["unplaced"]``."""
    import re
    workdir = Path(workdir)
    tgt = TARGETS[target]
    stat = json.loads((workdir / "stat.json").read_text())
    cells = stat["design"]["num_cells_by_type"] if "design" in stat else \
        stat["modules"]["\\top"]["num_cells_by_type"]

    def count(kind):
        return sum(int(cells.get(c, 0)) for c in _CELLS[tgt.family][kind])

    log = workdir / "nextpnr.log"
    packed = re.search(r"(?:TRELLIS_COMB|ICESTORM_LC):\s+(\d+)/",
                       log.read_text() if log.exists() else "")
    return SynthResult(design=name, target=target, device=tgt.device, package=tgt.package,
                       seed=seed, nodsp=nodsp, lut4=count("lut4"),
                       ff=count("ff") - RegisteredHarness(design).harness_ffs,
                       carry=count("carry"), dsp=count("dsp"), bram=count("bram"),
                       fmax_mhz=0.0, macs=macs, lutram=count("lutram"),
                       logic_cells=int(packed.group(1)) if packed else 0,
                       config=dict(config, unplaced=str(error)), seeds=[seed],
                       fmax_mhz_seeds=[0.0])


def seed_list(text):
    """``--seeds``: distinct non-negative integers separated by commas (``1,2,3``)."""
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise argparse.ArgumentTypeError(f"not a comma list of seeds: {text!r}")
    seeds = [non_negative_int(item) for item in items]
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"a seed repeats: {text!r}")
    return seeds


def several_seeds(results):
    """Whether a result of ``results`` summarises more than one seed."""
    return any(len(r.fmax_mhz_seeds) > 1 for r in results)


def write_seed_report(results, outdir, stem, extra=""):
    """:func:`cli.synth.write_report`; with results over several seeds the table's Fmax
    is their median and a last column lists each seed's."""
    markdown = write_report(results, outdir, stem, extra)
    if not several_seeds(results):
        return markdown
    table = result_table(results)
    lines = table.splitlines()
    lines[0] += " Fmax MHz per seed |"
    lines[1] += "---|"
    for i, r in enumerate(results, 2):
        lines[i] += " " + ", ".join(f"{seed}: {fmax:.1f}" for seed, fmax in
                                    zip(r.seeds, r.fmax_mhz_seeds)) + " |"
    seeds = sorted({s for r in results for s in r.seeds})
    note = (f"Fmax MHz: the median over seeds {', '.join(map(str, seeds))} (per seed in "
            "the last column); the resource counts are the same for every seed.")
    markdown = markdown.replace(table, "\n".join(lines) + "\n\n" + note, 1)
    first = ", ".join(map(str, sorted({r.seed for r in results})))
    markdown = markdown.replace(f"; seed {first}; ",
                                f"; seeds {', '.join(map(str, seeds))} (Fmax: median); ", 1)
    (Path(outdir) / f"{stem}.md").write_text(markdown + "\n")
    return markdown


def result_records(results):
    """The JSON records of ``results``, as in ``bench_area.json``."""
    return [dict(r.to_dict(), lut4_equivalent=lut4_equivalent(r)) for r in results]


def write_results_json(results, directory, name, argv=None):
    """``directory/name.json``: the command, the date and one record per design
    (:func:`result_records`: ``fmax_mhz`` the median, ``seeds``, ``fmax_mhz_seeds``),
    beside the ``name.md`` that ``--results`` writes. Returns its path."""
    argv = sys.argv[1:] if argv is None else list(argv)
    path = Path(directory) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"command": shlex.join(["ternary-accel", *argv]),
                                "date": datetime.date.today().isoformat(),
                                "results": result_records(results)}, indent=2) + "\n")
    return path


def batched_engine_name(rows, lanes, params):
    """``engine16x32_T16_p128_base3``: the shape, T, the port width, the packing (and
    ``_oR`` for an output stage of R rows a cycle)."""
    name = (f"engine{rows}x{lanes}_T{params['tokens']}_p{params['weight_port_bits']}"
            f"_{params['packing']}")
    if params.get("output_rows"):
        name += f"_o{params['output_rows']}"
    if params.get("act_copies"):
        name += f"_ac{params['act_copies']}"
    return name


def report_extra(results):
    """What follows the sweep table: ratios, projection, unpacker comparison."""
    return (ratios(results) + act_width_ratios(results) + projection(results) +
            unpacker_table(results) + token_table(results))


def load_results(path):
    """The :class:`SynthResult` list of a ``bench_area.json``."""
    names = {f.name for f in fields(SynthResult)}
    rows = json.loads(Path(path).read_text())["results"]
    return [SynthResult(**{k: v for k, v in row.items() if k in names}) for row in rows]


def design_config(design):
    """The exact constructor parameters of a swept design, for the report."""
    token = token_config(design)
    if token is not None:
        return token
    if isinstance(design, LayerEngine):
        return {"component": "LayerEngine", **design.params.to_dict(),
                "decoder": getattr(design.unpacker, "decoder", None)}
    if isinstance(design, TritUnpacker):
        return {"component": "TritUnpacker", "bytes_per_beat": design.bytes_per_beat,
                "decoder": design.decoder}
    if isinstance(design, HeadDot):
        return {"component": "HeadDot", "hidden": design.hidden, "lanes": design.lanes,
                "rows": design.rows, **{k: v for k, v in design.numerics.to_dict().items()
                                        if k.startswith("head")}}
    if isinstance(design, DotProduct):
        return {"component": "DotProduct", "lanes": design.lanes,
                "weight_mode": design.weight_mode, "carry_out": design.carry_out,
                "levels_per_stage": design.levels_per_stage, "fabric": design.fabric,
                "act_width": design.act_width, "invalid_flag": design.invalid_flag}
    return {"component": "MatmulUnit", **design.params.to_dict()}


#: Components :func:`token_config` describes (by class name: their modules are imported
#: only when a ``token_*`` row is built).
_TOKEN_COMPONENTS = ("TokenCore", "NormQuant", "AbsmaxQuant", "AttentionHead", "Softmax",
                     "Rope", "Elementwise", "ScalarUnit", "Rescale", "Argmax")


def token_config(design):
    """:func:`design_config` of the token core and its units (None for another design)."""
    kind = type(design).__name__
    if kind not in _TOKEN_COMPONENTS:
        return None
    numerics = design.numerics.to_dict() if hasattr(design, "numerics") else {}
    if kind == "TokenCore":
        prog = design.program
        c = prog.config
        return {"component": kind, "model": "/".join(TOKEN_MODEL), "hidden": c.hidden,
                "ffn": c.ffn, "layers": c.layers, "heads": c.heads, "kv_heads": c.kv_heads,
                "head_dim": c.head_dim, "vocab": c.vocab, "positions": prog.positions,
                "scratch_words": prog.scratch.words, "code_words": prog.code_words,
                "head_rows": prog.head_rows, "attention_lanes": prog.attention_lanes,
                "engine": prog.params.to_dict(), "numerics": prog.numerics.to_dict()}
    sizes = {name: getattr(design, name) for name in
             ("depth", "width", "head_dim", "max_positions", "theta", "acc_width",
              "row_scales", "vocab", "allowed", "lanes") if hasattr(design, name)}
    return {"component": kind, **sizes, "numerics": numerics}


def _by_name(results):
    return {r.design: r for r in results}


def ratios(results):
    """Ternary / baseline ratios for every unit measured both ways."""
    named = _by_name(results)
    lines = ["", "| unit M x K | ternary LUT4 eq./MAC | int8 LUT-only LUT4 eq./MAC | "
             "LUT ratio | int8 DSP: DSP blocks, LUT4 eq./MAC | ternary / int8 GMAC/s |",
             "|---|---|---|---|---|---|"]
    for rows, lanes in UNITS:
        ternary = named.get(f"unit{rows}x{lanes}")
        lut = named.get(f"int8_unit{rows}x{lanes}_lut")
        dsp = named.get(f"int8_unit{rows}x{lanes}_dsp")
        if ternary is None or (lut is None and dsp is None):
            continue
        t = lut4_equivalent(ternary) / ternary.macs
        lut_cell = f"{lut4_equivalent(lut) / lut.macs:.1f}" if lut else "n/a"
        ratio = f"{lut4_equivalent(lut) / lut.macs / t:.1f}x fewer" if lut else "n/a"
        dsp_cell = (f"{dsp.dsp}, {lut4_equivalent(dsp) / dsp.macs:.1f}" if dsp else
                    f"does not fit {ECP5_45F_MULT18} DSPs")
        base = lut or dsp
        speed = f"{ternary.gmacs / base.gmacs:.2f}" if base.gmacs else "n/a"
        lines.append(f"| {rows} x {lanes} | {t:.1f} | {lut_cell} | {ratio} | {dsp_cell} | "
                     f"{speed} |")
    return "\n".join(lines) + "\n"


def act_width_ratios(results):
    """int4 / int8 activations for every design measured both ways (``X`` and ``X_a4``)."""
    named = _by_name(results)
    suffix = UnitParams(act_width=INT4_WIDTH_SWEPT).act_width_suffix
    lines = ["", "| design (ternary, ECP5 fabric) | int8 activations: LUT4 eq./MAC, MHz | "
             "int4 activations: LUT4 eq./MAC, MHz | int4 / int8 LUT4 eq. |", "|---|---|---|---|"]
    for r4 in results:
        r8 = named.get(r4.design[:-len(suffix)]) if r4.design.endswith(suffix) else None
        if r8 is None or not r4.macs:
            continue
        e8, e4 = lut4_equivalent(r8) / r8.macs, lut4_equivalent(r4) / r4.macs
        lines.append(f"| {r8.design} | {e8:.1f}, {r8.fmax_mhz:.1f} | {e4:.1f}, "
                     f"{r4.fmax_mhz:.1f} | {e4 / e8:.2f} |")
    return "\n".join(lines) + "\n" if len(lines) > 3 else ""


def projection(results, goal_mhz=200.0, utilisation=0.85):
    """LFE5U-85F projection from the measured units (not placed on the 85F): the largest
    single unit it holds at the cost per MAC of the largest unit swept, and the best
    array of identical copies of a unit that meets ``goal_mhz``; beside them the int8
    baseline's DSP-bound ceiling on the same part. ``utilisation`` of the LUT4s leaves
    room to route."""
    named = _by_name(results)
    units = [named[f"unit{m}x{k}"] for m, k in UNITS if f"unit{m}x{k}" in named]
    if not units:
        return ""
    budget = ECP5_85F_LUT4 * utilisation
    largest = max(units, key=lambda r: r.macs)
    per_mac = lut4_equivalent(largest) / largest.macs
    fit_macs = int(budget / per_mac)
    text = (f"\nLFE5U-85F projection (not placed; {utilisation:.0%} of its {ECP5_85F_LUT4} "
            f"LUT4s): at {per_mac:.1f} LUT4 eq./MAC (measured on {largest.design}) it holds "
            f"about {fit_macs} ternary MACs, {fit_macs * largest.fmax_mhz / 1000:.0f} GMAC/s "
            f"at that unit's {largest.fmax_mhz:.0f} MHz"
            f"{'' if largest.fmax_mhz >= goal_mhz else f' (below {goal_mhz:.0f} MHz)'}. ")
    fast = [r for r in units if r.fmax_mhz >= goal_mhz]
    if fast:
        def array_gmacs(r):
            return int(budget // lut4_equivalent(r)) * r.gmacs
        best = max(fast, key=array_gmacs)
        copies = int(budget // lut4_equivalent(best))
        text += (f"The largest unit measured at {goal_mhz:.0f} MHz or more is "
                 f"{max(fast, key=lambda r: r.macs).design}; the best array of copies is "
                 f"{copies} x {best.design} ({copies * best.macs} MACs) at "
                 f"{best.fmax_mhz:.0f} MHz: {array_gmacs(best):.0f} GMAC/s, if the copies "
                 "keep their Fmax side by side. ")
    else:
        text += f"No unit swept reaches {goal_mhz:.0f} MHz. "
    dsp = [r for r in results if r.design.endswith("_dsp") and r.fmax_mhz]
    if dsp:
        base = dsp[0]
        text += (f"The int8 baseline is DSP-bound: {ECP5_85F_MULT18} MULT18X18D blocks, one "
                 f"int8 multiply each, at its measured {base.fmax_mhz:.0f} MHz give "
                 f"{ECP5_85F_MULT18 * base.fmax_mhz / 1000:.0f} GMAC/s.")
    return text + "\n"


def unpacker_table(results):
    """LUT4s per packed byte of each trit decoder (the unpacker rows of the sweep)."""
    rows = [r for r in results if r.design.startswith("unpack_")]
    if not rows:
        return ""
    lines = ["", f"Trit unpacker ({UNPACKER_BYTES} bytes per beat), per packed byte "
             "(5 weights):", "", "| decoder | LUT4 eq. per byte | Fmax MHz |", "|---|---|---|"]
    lines += [f"| {r.design[len('unpack_'):]} | {lut4_equivalent(r) / UNPACKER_BYTES:.1f} | "
              f"{r.fmax_mhz:.1f} |" for r in rows]
    return "\n".join(lines) + "\n"


def token_table(results):
    """The ``token_*`` rows against the token core's engine alone: each row's LUT4 eq.
    as a share of the engine's, the core's units (core less engine) against
    :data:`TOKEN_UNITS_SHARE_GOAL`, its Fmax against :data:`TOKEN_FMAX_GOAL_MHZ` and its
    resources against the LFE5U-85F's."""
    named = _by_name(results)
    rows = [r for r in results if r.design.startswith("token_")]
    engine = named.get(TOKEN_ENGINE_ROW)
    if not rows or engine is None:
        return ""
    base, base_lut = lut4_equivalent(engine), engine.lut4
    lines = ["", f"Token core units against its engine alone ({engine.design}: "
             f"{base_lut} LUT4, {base} LUT4 eq.); units placed alone (AttentionHead holds "
             "an AbsmaxQuant, a Softmax and its ScalarUnit; NormQuant and Softmax a "
             "ScalarUnit each):", "",
             "| design | LUT4 | LUT4 eq. | FF | DSP | BRAM | LUT RAM | LUT4 / engine's | "
             "LUT4 eq. / engine's | Fmax MHz |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.design} | {r.lut4} | {lut4_equivalent(r)} | {r.ff} | {r.dsp} | "
                     f"{r.bram} | {r.lutram} | {r.lut4 / base_lut:.1%} | "
                     f"{lut4_equivalent(r) / base:.1%} | {r.fmax_mhz:.1f} |")
    unplaced = [r.design for r in rows if r.config.get("unplaced")]
    if unplaced:
        lines += ["", f"Not placed (they do not fit their device; synthesis figures, Fmax "
                  f"0.0 in the tables): {', '.join(unplaced)}."]
    core = named.get(TOKEN_CORE)
    if core is None:
        return "\n".join(lines) + "\n"
    extra_lut, extra_eq = core.lut4 - base_lut, lut4_equivalent(core) - base
    goal = TOKEN_UNITS_SHARE_GOAL
    unplaced = core.config.get("unplaced")
    if unplaced:
        clock = (f"It does not fit the {core.device} (synthesis figures; not placed, no "
                 f"Fmax; nextpnr: {unplaced.split(': ', 1)[-1]}).")
    else:
        clock = (f"Fmax {core.fmax_mhz:.1f} MHz on the {core.device}; goal "
                 f"{TOKEN_FMAX_GOAL_MHZ:.0f} MHz: "
                 f"{'met' if core.fmax_mhz >= TOKEN_FMAX_GOAL_MHZ else 'not met'}.")
    cells = (f", {core.logic_cells} logic cells after packing "
             f"({core.logic_cells / ECP5_85F_LUT4:.0%})" if core.logic_cells else "")
    lines += ["", f"Whole core: the units, sequencer and on-chip memories (core less engine) "
              f"add {extra_lut} LUT4 ({extra_lut / base_lut:.0%} of the engine's) and "
              f"{extra_eq} LUT4 eq. ({extra_eq / base:.0%}); goal at most {goal:.0%}: "
              f"{'met' if extra_eq <= goal * base else 'not met'}. {clock} "
              f"Resources against the LFE5U-85F's: {core.lut4} of {ECP5_85F_LUT4} LUT4 "
              f"({core.lut4 / ECP5_85F_LUT4:.0%}; {lut4_equivalent(core)} LUT4 eq.{cells}), "
              f"{core.dsp} of {ECP5_85F_MULT18} MULT18X18D ({core.dsp / ECP5_85F_MULT18:.0%}), "
              f"{core.bram} of {ECP5_85F_BRAM} DP16KD, {core.ff} FF."]
    return "\n".join(lines) + "\n"
