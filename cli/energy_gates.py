"""``ternary-accel energy gates``: energy per MAC of the matmul unit measured on gates.

Each design (the ternary unit, the int8-weight baseline of the same shape, the ternary
unit with int4 activations) is mapped by Yosys to the OSU 180 nm cells
(:mod:`ternary_accel.hw.fpga.gates`), its pins characterized by OpenSTA, and simulated at
gate level with the cells' Verilog models under Verilator (:mod:`ternary_accel.sim.gates`)
on each workload (:mod:`ternary_accel.energy.workloads`); every result vector is checked
bit for bit against the golden model, every net's toggles counted in the VCD, and the
energy per cycle and per MAC computed (:mod:`ternary_accel.energy.gates`). The table
gives 180 nm as measured, 45 nm and 7 nm scaled by the stated rule, beside the
per-operation model (:mod:`ternary_accel.energy.ops`).

Exit status 2 with one line naming the packages when the cell library or OpenSTA is not
installed.
"""

import sys
import time

import numpy as np

from ternary_accel.cli.argtypes import add_format, output_dir, output_file, positive_int
from ternary_accel.energy.gates import (MEASURED_NODE, NODE_SCALING, SCALING_RULE,
                                        gate_energy, op_reference_pj, scale_factor)
from ternary_accel.energy.report import render
from ternary_accel.energy.workloads import (SWEEP_ZEROS, WORKLOADS, make_workload,
                                            zero_fraction_workload)
from ternary_accel.hw.fpga.synth import ToolError
from ternary_accel.hw.paths import build_path
from ternary_accel.model.arith import matmul_int
from ternary_accel.model.quant import INT8, TERNARY

__all__ = ["DESIGNS", "add_parser", "cmd_gates", "measure"]

#: The designs compared: name -> (weight mode, activation width).
DESIGNS = {"ternary": (TERNARY, 8), "int8": (INT8, 8), "ternary-a4": (TERNARY, 4)}
#: Workloads the int4-activation design runs (the int4 vs int8 comparison).
A4_WORKLOADS = ("trained-qkv", "trained-down", "2b4t", "uniform")
#: Workloads drawn at random (their repeats take other seeds).
RANDOM_WORKLOADS = ("2b4t", "uniform", "zero-weights", "zero-acts")
#: Nodes of the scaled columns.
SCALED_NODES = ("45nm", "7nm")
#: The unit's dot products may run this many beats (sizes the accumulators alike for
#: every workload).
MAX_BEATS = 256
#: Cycles after the reset left out of the counts (the pipeline fills).
WARMUP = 16


def _say(message):
    print(message, file=sys.stderr, flush=True)


def _golden(weights, activations, mode, act_width):
    if mode == TERNARY:
        return matmul_int(weights, activations, act_width=act_width)
    return activations.astype(np.int64) @ weights.astype(np.int64).T


class Design:
    """One unit mapped, characterized and built for simulation."""

    def __init__(self, name, params, workdir):
        from ternary_accel.hw.fpga.gates import characterize, map_to_cells
        from ternary_accel.hw.rtl.matmul import MatmulUnit
        from ternary_accel.sim.gates import GateSim, top_ports
        self.name, self.params = name, params
        started = time.monotonic()
        self.netlist = map_to_cells(MatmulUnit(params), workdir=workdir,
                                    log=lambda m: _say(f"{name}: {m}"))
        _say(f"{name}: {self.netlist.cell_count} cells ({self.netlist.cells.get('DFFPOSX1', 0)}"
             f" flip-flops), {self.netlist.area_um2 / 1e6:.3f} mm2")
        self.characterization = characterize(self.netlist, log=lambda m: _say(f"{name}: {m}"))
        self.pins, self.types = self.netlist.connections()
        self.ports = top_ports(self.netlist.json)
        _say(f"{name}: building the gate-level simulation (verilator)")
        self.sim = GateSim([self.netlist.verilog, self.netlist.library.models], self.ports,
                           workdir / "gates")
        _say(f"{name}: ready ({time.monotonic() - started:.0f} s)")

    def measure(self, workload, cycles, *, idle=False):
        """Energy breakdown of ``workload`` over ``cycles`` beats (results checked)."""
        from ternary_accel.hw.fpga.gates import SEQUENTIAL_CELLS
        from ternary_accel.sim.gates import pack_words, toggle_counts, unit_results, unit_stream
        mode, act_width = self.params.weight_mode, self.params.act_width
        tiles = workload.tiled(self.params.lanes, self.params.rows)
        weights = tiles.ternary if mode == TERNARY else tiles.int8
        acts = tiles.act8 if act_width == 8 else tiles.act4
        reset = 2
        values, order = unit_stream(self.params, weights, acts, cycles=cycles + WARMUP,
                                    reset_cycles=reset, idle=idle)
        # idle cycles at the end let the last results out (the result stays ready)
        drain = self.params.latency + 4
        for name, seq in values.items():
            seq.extend([1 if name == "res__ready" else 0] * drain)
        outputs, vcd = self.sim.run(pack_words(self.ports, values), name=workload.name,
                                    vcd=True)
        results = unit_results(self.params, outputs)
        rows = self.params.rows
        expected = [list(_golden(weights[t * rows:(t + 1) * rows], acts[k], mode, act_width))
                    for k, t in order]
        if results != expected:
            bad = next(i for i, (a, b) in enumerate(zip(results, expected)) if a != b) \
                if len(results) == len(expected) else min(len(results), len(expected))
            raise RuntimeError(f"{self.name} on {workload.name}: result {bad} differs from "
                               f"the golden model ({len(results)} results, "
                               f"{len(expected)} expected)")
        start = reset + WARMUP
        toggles = toggle_counts(vcd, start_cycle=start, end_cycle=start + cycles)
        vcd.unlink()
        return gate_energy(self.characterization.pin_energy,
                           self.characterization.leakage_w, self.pins, self.types, toggles,
                           cycles=cycles, period_ns=self.characterization.period_ns,
                           sequential=SEQUENTIAL_CELLS, macs_per_cycle=self.params.macs), \
            len(results)


def measure(args):
    """Every (design, workload) pair of the command: ``[row dict, ...]``."""
    from ternary_accel.hw.params import UnitParams
    designs = {}
    for name in args.designs:
        mode, act_width = DESIGNS[name]
        params = UnitParams(lanes=args.lanes, rows=args.rows, weight_mode=mode,
                            act_width=act_width, max_beats=MAX_BEATS)
        designs[name] = Design(name, params, args.workdir / params.name)
    jobs = []
    for workload in args.workloads:
        for name in args.designs:
            if name == "ternary-a4" and workload not in A4_WORKLOADS:
                continue
            jobs.append((name, workload))
    if args.sweep and "ternary" in designs:
        jobs += [("ternary", f"zeros-{p:g}") for p in args.sweep]
    rows = []
    for index, (name, workload_name) in enumerate(jobs, 1):
        design = designs[name]
        repeats = args.repeats if (workload_name in RANDOM_WORKLOADS or
                                   workload_name.startswith("zeros-")) else 1
        breakdowns, workload = [], None
        started = time.monotonic()
        for seed in range(repeats):
            if workload_name.startswith("zeros-"):
                workload = zero_fraction_workload(float(workload_name[6:]), seed=seed)
            else:
                workload = make_workload(workload_name, seed=seed)
            breakdown, checked = design.measure(workload, args.cycles)
            breakdowns.append(breakdown)
        median = sorted(breakdowns, key=lambda b: b.total())[len(breakdowns) // 2]
        _say(f"[{index}/{len(jobs)}] {name} on {workload_name}: "
             f"{median.per_mac_pj():.3f} pJ/MAC ({checked} results bit-exact, "
             f"{repeats} run{'s' if repeats > 1 else ''}, "
             f"{time.monotonic() - started:.0f} s)")
        weights = workload.ternary if design.params.weight_mode == TERNARY else workload.int8
        acts = workload.act8 if design.params.act_width == 8 else workload.act4
        rows.append(dict(design=name, workload=workload_name,
                         zero_weights=float(np.mean(weights == 0)),
                         zero_acts=float(np.mean(acts == 0)),
                         breakdown=median,
                         spread=(min(b.per_mac_pj() for b in breakdowns),
                                 max(b.per_mac_pj() for b in breakdowns)),
                         repeats=repeats, cells=design.netlist.cell_count,
                         params=design.params))
    return rows, designs


def _table(rows):
    header = ("Design", "Workload", "Zero w", "Zero x", "pJ/MAC", "seq", "comb", "internal",
              "switching", "leakage", *(f"{n} scaled" for n in SCALED_NODES),
              *(f"ops {n}" for n in SCALED_NODES))
    body = []
    for r in rows:
        b = r["breakdown"]
        body.append((r["design"], r["workload"], f"{r['zero_weights']:.0%}",
                     f"{r['zero_acts']:.0%}", f"{b.per_mac_pj():.3f}",
                     f"{b.per_mac_pj(group='sequential'):.3f}",
                     f"{b.per_mac_pj(group='combinational'):.3f}",
                     f"{b.per_mac_pj('internal'):.3f}", f"{b.per_mac_pj('switching'):.3f}",
                     f"{b.per_mac_pj('leakage'):.5f}",
                     *(f"{b.per_mac_pj(dynamic=True) * scale_factor(n):.4f}"
                       for n in SCALED_NODES),
                     *(f"{op_reference_pj(n, r['params'].weight_mode, r['params'].act_width):.4f}"
                       for n in SCALED_NODES)))
    return header, body


def _ratios(rows):
    """ternary vs int8 and int4 vs int8 activations, per workload."""
    by = {(r["design"], r["workload"]): r["breakdown"].per_mac_pj() for r in rows}
    comb = {(r["design"], r["workload"]): r["breakdown"].per_mac_pj(group="combinational")
            for r in rows}
    header = ("Workload", "int8 / ternary (x)", "combinational only (x)",
              "ternary a8 / a4 (x)")
    body = []
    for workload in dict.fromkeys(r["workload"] for r in rows):
        t, i, a4 = (by.get((d, workload)) for d in ("ternary", "int8", "ternary-a4"))
        if t is None or (i is None and a4 is None):
            continue
        ct, ci = comb.get(("ternary", workload)), comb.get(("int8", workload))
        body.append((workload, f"{i / t:.2f}" if i else "",
                     f"{ci / ct:.2f}" if ci and ct else "", f"{t / a4:.2f}" if a4 else ""))
    return header, body


def _notes(args, rows, designs):
    from ternary_accel.hw.fpga.gates import tool_versions as gate_tool_versions
    lines = [f"Unit {args.rows} x {args.lanes} (rows x lanes, {args.rows * args.lanes} MACs a "
             f"cycle) in a registered harness, mapped to the OSU 180 nm cells "
             f"(qflow-tech-osu018, {NODE_SCALING['180nm']['volt']} V); "
             + ", ".join(f"{n}: {d.netlist.cell_count} cells, "
                         f"{d.netlist.area_um2 / 1e6:.3f} mm2" for n, d in designs.items())
             + f". Tools: {', '.join(f'{k} {v}' for k, v in gate_tool_versions().items())}"
             f". {args.cycles} cycles a run, one beat a cycle, counted after "
             f"{WARMUP} cycles of warm-up; every result vector bit-exact against the golden "
             f"model. Energies in pJ per MAC, measured at {MEASURED_NODE} (total, then by "
             "cell group and by kind); leakage at a 10 ns clock. Random workloads: the "
             f"median of {args.repeats} seed(s).",
             "",
             f"Scaled columns: the dynamic energy (leakage left out) x the node factor "
             f"({', '.join(f'{n}: {scale_factor(n):.4g}' for n in SCALED_NODES)}), by "
             f"{SCALING_RULE}. The ops columns are the per-operation model "
             "(energy/ops.py: a ternary MAC is one INT8 add, INT4 for int4 activations; an "
             "int8 MAC is an INT8 multiply plus an INT8 add), Horowitz at 45 nm and the "
             "BitNet paper's 7 nm figures.",
             "",
             "Not covered: wires (no placement or routing), the clock tree (ideal clock; the "
             "flip-flops' clock pins are counted), memories (operands arrive on the ports), "
             "glitches (zero-delay simulation)."]
    return "\n".join(lines)


def plot(rows, path):
    """Bars of pJ/MAC (180 nm, measured) by workload, one bar per design."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    designs = list(dict.fromkeys(r["design"] for r in rows))
    by = {(r["design"], r["workload"]): r["breakdown"].per_mac_pj() for r in rows}
    fig, ax = plt.subplots(figsize=(max(8, len(workloads) * 1.1), 5))
    width = 0.8 / len(designs)
    for k, design in enumerate(designs):
        xs = [i + (k - (len(designs) - 1) / 2) * width for i, w in enumerate(workloads)
              if (design, w) in by]
        ys = [by[design, w] for w in workloads if (design, w) in by]
        ax.bar(xs, ys, width, label=design)
    ax.set_xticks(range(len(workloads)), workloads, rotation=30, ha="right")
    ax.set_ylabel(f"energy per MAC at {MEASURED_NODE} (pJ, measured on gates)")
    ax.set_title("Matmul unit energy per MAC by design and workload (OSU 180 nm cells)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def cmd_gates(parser, args):
    from ternary_accel.hw.fpga.gates import cell_library, sta_path
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload {unknown[0]!r}; known: {', '.join(WORKLOADS)}")
    bad = [d for d in args.designs if d not in DESIGNS]
    if bad:
        parser.error(f"unknown design {bad[0]!r}; known: {', '.join(DESIGNS)}")
    try:
        cell_library()
        sta_path()
    except ToolError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    args.workdir = args.workdir or build_path("energy-gates")
    try:
        rows, designs = measure(args)
    except ToolError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    except (RuntimeError, FileNotFoundError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    if args.format != "markdown":
        # csv and json: the table alone on stdout
        print(render(*_table(rows), args.format))
    else:
        print(_notes(args, rows, designs))
        print()
        print(render(*_table(rows), "markdown"))
        ratio = _ratios(rows)
        if ratio[1]:
            print()
            print("Ratios of energy per MAC (180 nm, measured):")
            print()
            print(render(*ratio, "markdown"))
    if not args.no_plot:
        try:
            path = plot(rows, args.plot or args.workdir / "energy-per-mac.png")
            _say(f"plot: {path}")
        except ModuleNotFoundError:
            _say("no plot: install the [plots] extra (matplotlib)")
    return 0


def _fractions(text):
    import argparse
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a list of numbers") from None
    if any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: zero fractions are 0..1")
    return values


def _names(text):
    import argparse
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("an empty list")
    return items


def add_parser(subparsers):
    """Register ``ternary-accel energy gates``."""
    p = subparsers.add_parser(
        "gates", help="energy per MAC measured on 180 nm gates (Yosys, Verilator, OpenSTA)",
        description="Map the matmul unit to the OSU 180 nm cells, simulate it at gate level "
                    "on real and synthetic workloads, and turn every net's toggles into "
                    "energy per MAC (needs Debian's qflow-tech-osu018 and opensta).")
        # 8 x 2: the int8 baseline's netlist (12 k cells) builds in minutes; 16 x 4 (43 k
    # cells) takes Verilator and the C++ compiler most of an hour
    p.add_argument("--lanes", type=positive_int, default=8, help="K (default: 8)")
    p.add_argument("--rows", type=positive_int, default=2, help="M (default: 2)")
    p.add_argument("--designs", type=_names, default=list(DESIGNS),
                   help=f"comma-separated: {', '.join(DESIGNS)} (default: all)")
    p.add_argument("--workloads", type=_names, default=list(WORKLOADS),
                   help=f"comma-separated: {', '.join(WORKLOADS)} (default: all)")
    p.add_argument("--sweep", type=_fractions, default=list(SWEEP_ZEROS),
                   help="zero-weight fractions of the ternary sweep, comma-separated "
                        "(default: 0,0.25,0.5,0.75,1)")
    p.add_argument("--no-sweep", dest="sweep", action="store_const", const=[],
                   help="leave out the zero-weight sweep")
    p.add_argument("--cycles", type=positive_int, default=512,
                   help="cycles counted per run (default: 512)")
    p.add_argument("--repeats", type=positive_int, default=3,
                   help="seeds per random workload, the median reported (default: 3)")
    p.add_argument("--workdir", type=output_dir, default=None,
                   help="build folder (default: build/energy-gates)")
    p.add_argument("--plot", type=output_file, default=None,
                   help="the figure (default: WORKDIR/energy-per-mac.png)")
    p.add_argument("--no-plot", action="store_true", help="no figure")
    add_format(p)
    p.set_defaults(func=cmd_gates)
    return p
