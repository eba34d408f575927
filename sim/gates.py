"""Gate-level simulation under Verilator: a mapped netlist (or the RTL it came from) run
cycle by cycle on a stimulus, its outputs read back and every net's toggles counted.

The testbench is generated from the top module's ports: a clock of :data:`PERIOD_NS`,
one stimulus word per cycle (every input port but the clock, concatenated in
:func:`input_ports` order) read with ``$readmemh`` and applied on the falling edge, and
every output port written once per cycle, just before the rising edge. With a VCD the
testbench dumps the top module's nets (``--trace-depth 2``: the nets of the netlist, not
the insides of the cells' models); :func:`toggle_counts` counts each net bit's changes
inside a window of cycles.

Verilator evaluates the cells' models with zero delay: a net changes at most once per
edge, so the counts are the settled transitions of each cycle and leave out glitches
(the hazards of an adder tree with real delays), which real silicon also pays for.
"""

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ternary_accel.sim.verilator import configure_environment

__all__ = ["PERIOD_NS", "MAX_CYCLES", "CLOCK", "Port", "top_ports", "input_ports",
           "output_ports", "testbench", "GateSim", "toggle_counts", "pack_words",
           "unit_stream", "unit_results"]

#: Clock period of the testbench (only its ratio to the window matters: the energy is
#: counted per cycle).
PERIOD_NS = 10
#: Stimulus words one run can hold (the testbench's memory depth).
MAX_CYCLES = 1 << 16
#: The clock port (Amaranth's ``sync`` domain).
CLOCK = "clk"

# Yosys' gate netlists and the cells' models are not lint-clean by Verilator's
# standards (implicit widths, specify blocks it does not model, unused cell internals):
# the simulation needs none of those warnings.
_WAIVERS = ("-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-MINTYPMAXDLY", "-Wno-SPECIFYIGN",
            "-Wno-TIMESCALEMOD")


@dataclass(frozen=True)
class Port:
    """A port of the top module."""

    name: str
    direction: str
    width: int


def top_ports(netlist_json, top="top"):
    """The ports of ``top`` in a Yosys JSON netlist, ``[Port, ...]`` in declaration
    order."""
    module = json.loads(Path(netlist_json).read_text())["modules"][top]
    return [Port(name, info["direction"], len(info["bits"]))
            for name, info in module["ports"].items()]


def input_ports(ports):
    """The stimulus ports: every input but the clock, sorted by name."""
    return sorted((p for p in ports if p.direction == "input" and p.name != CLOCK),
                  key=lambda p: p.name)


def output_ports(ports):
    """The observed ports: every output, sorted by name."""
    return sorted((p for p in ports if p.direction == "output"), key=lambda p: p.name)


def testbench(ports, top="top"):
    """SystemVerilog of the testbench around ``top`` (see the module docstring)."""
    inputs, outputs = input_ports(ports), output_ports(ports)
    in_width = max(1, sum(p.width for p in inputs))
    out_width = max(1, sum(p.width for p in outputs))
    half = PERIOD_NS / 2
    lines = [
        "`timescale 1ns/1ps",
        "module tb;",
        f"  logic {CLOCK} = 1'b0;",
        f"  logic [{in_width - 1}:0] stim [0:{MAX_CYCLES - 1}];",
        f"  logic [{in_width - 1}:0] word = '0;",
        f"  wire [{out_width - 1}:0] outs;",
    ]
    offset = 0
    for p in inputs:
        lines.append(f"  wire [{p.width - 1}:0] {p.name} = word[{offset + p.width - 1}:{offset}];")
        offset += p.width
    for p in outputs:
        lines.append(f"  wire [{p.width - 1}:0] {p.name};")
    if outputs:
        lines.append("  assign outs = {" + ", ".join(p.name for p in reversed(outputs)) + "};")
    else:
        lines.append("  assign outs = '0;")
    conns = [f".{CLOCK}({CLOCK})"] if any(p.name == CLOCK for p in ports) else []
    conns += [f".{p.name}({p.name})" for p in inputs + outputs]
    lines += [
        f"  {top} dut ({', '.join(conns)});",
        f"  always #{half} {CLOCK} = ~{CLOCK};",
        "  string stim_file, out_file, vcd_file;",
        "  int cycles, fd;",
        "  initial begin",
        '    if (!$value$plusargs("stim=%s", stim_file)) $fatal(1, "+stim=FILE missing");',
        '    if (!$value$plusargs("out=%s", out_file)) $fatal(1, "+out=FILE missing");',
        '    if (!$value$plusargs("cycles=%d", cycles)) $fatal(1, "+cycles=N missing");',
        "    $readmemh(stim_file, stim, 0, cycles - 1);",
        '    fd = $fopen(out_file, "w");',
        '    if ($value$plusargs("vcd=%s", vcd_file)) begin',
        "      $dumpfile(vcd_file);",
        "      $dumpvars(0, dut);",
        "    end",
        "    for (int i = 0; i < cycles; i++) begin",
        "      word = stim[i];",
        f"      #{half - 1};",
        '      $fwrite(fd, "%h\\n", outs);',
        f"      #{half + 1};",
        "    end",
        "    $fclose(fd);",
        "    $finish;",
        "  end",
        "endmodule",
    ]
    # The word changes at the falling edge (time 0 of a cycle is a falling edge: the
    # clock starts low and rises at PERIOD/2); the outputs are sampled 1 ns before the
    # rising edge, after the previous rising edge's values have settled.
    return "\n".join(lines) + "\n"


def pack_words(ports, values):
    """Concatenate per-port values into stimulus words.

    Parameters
    ----------
    ports : list of Port
        :func:`input_ports` of the design.
    values : dict
        ``{port name: sequence of int}``, one value per cycle (a missing port is 0).

    Returns
    -------
    list of int
    """
    inputs = input_ports(ports)
    cycles = max(len(v) for v in values.values())
    words = [0] * cycles
    offset = 0
    for p in inputs:
        seq = values.get(p.name)
        if seq is not None:
            if len(seq) != cycles:
                raise ValueError(f"port {p.name}: {len(seq)} values, not {cycles}")
            mask = (1 << p.width) - 1
            for i, v in enumerate(seq):
                words[i] |= (int(v) & mask) << offset
        offset += p.width
    return words


class GateSim:
    """A Verilator build of ``top`` (a gate netlist with the cells' models, or RTL) in
    the generated testbench.

    Parameters
    ----------
    sources : list of path
        The design's Verilog: a netlist and the cells' models, or the RTL.
    ports : list of Port
        The top module's ports (:func:`top_ports`).
    build_dir : path
        Where the testbench, the model and the runs go; a build of the same sources
        and testbench is reused.
    top : str
        The top module.

    Raises
    ------
    RuntimeError
        If Verilator or the C++ compiler fails (the message names the log).
    """

    def __init__(self, sources, ports, build_dir, top="top"):
        self.ports = list(ports)
        self.build_dir = Path(build_dir).resolve()
        self.build_dir.mkdir(parents=True, exist_ok=True)
        tb = self.build_dir / "tb.sv"
        tb.write_text(testbench(self.ports, top))
        sources = [Path(s).resolve() for s in sources]
        found = configure_environment()
        # A run is a few thousand cycles: compile time dominates, so the C++ compiler
        # does not optimise (the optimisation flags of the other builds,
        # sim/verilator.py, are replaced). Verilator's own -O0 is not used: it keeps the
        # cells as classes and its trace code then names their specparams, which fails.
        env = dict(os.environ)
        env["MAKEFLAGS"] = " ".join(f for f in env.get("MAKEFLAGS", "").split()
                                    if not f.startswith(("OPT_FAST=", "OPT_SLOW=",
                                                         "OPT_GLOBAL=")))
        env["MAKEFLAGS"] += " OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0"
        key = json.dumps([str(found.executable), env["MAKEFLAGS"], tb.read_text()] +
                         [s.read_text() for s in sources])
        self.binary = self.build_dir / "obj" / "sim"
        stamp = self.build_dir / "build.key"
        if self.binary.exists() and stamp.exists() and stamp.read_text() == key:
            return
        stamp.unlink(missing_ok=True)
        cmd = [str(found.executable), "--binary", "--timing", "--build-jobs",
               str(min(2, os.cpu_count() or 1)), "-CFLAGS", "-std=c++20",
               *_WAIVERS, "--trace-vcd", "--trace-depth", "2", "--top-module", "tb",
               "-Mdir", str(self.build_dir / "obj"), "-o", "sim", str(tb),
               *map(str, sources)]
        log = self.build_dir / "build.log"
        with open(log, "w") as f:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT,
                                  cwd=self.build_dir, env=env)
        if proc.returncode != 0 or not self.binary.exists():
            raise RuntimeError(f"Verilator build of {top} failed (exit {proc.returncode}); "
                               f"see {log}")
        stamp.write_text(key)

    def run(self, words, *, name="run", vcd=False):
        """Simulate one stimulus.

        Parameters
        ----------
        words : list of int
            One stimulus word per cycle (:func:`pack_words`).
        name : str
            File stem of this run's stimulus, outputs and VCD in the build folder.
        vcd : bool
            Dump the nets' changes to ``NAME.vcd``.

        Returns
        -------
        (dict, Path or None)
            ``{output port: [value per cycle]}`` and the VCD file.
        """
        if not 0 < len(words) <= MAX_CYCLES:
            raise ValueError(f"a run takes 1..{MAX_CYCLES} cycles, not {len(words)}")
        inputs = input_ports(self.ports)
        digits = max(1, (sum(p.width for p in inputs) + 3) // 4)
        stim = self.build_dir / f"{name}.hex"
        stim.write_text("".join(f"{w:0{digits}x}\n" for w in words))
        out = self.build_dir / f"{name}.out"
        vcd_path = self.build_dir / f"{name}.vcd" if vcd else None
        args = [str(self.binary), f"+stim={stim}", f"+out={out}", f"+cycles={len(words)}"]
        if vcd_path:
            args.append(f"+vcd={vcd_path}")
        proc = subprocess.run(args, capture_output=True, text=True, cwd=self.build_dir)
        if proc.returncode != 0:
            raise RuntimeError(f"gate-level simulation failed (exit {proc.returncode}): "
                               f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
        outputs = output_ports(self.ports)
        values = {p.name: [] for p in outputs}
        for line in out.read_text().split():
            word = int(line, 16) if "x" not in line.lower() and "z" not in line.lower() \
                else -1
            offset = 0
            for p in outputs:
                values[p.name].append(-1 if word < 0 else
                                      (word >> offset) & ((1 << p.width) - 1))
                offset += p.width
        return values, vcd_path


def toggle_counts(vcd, *, start_cycle=0, end_cycle=None, scope="dut"):
    """Changes of each net bit of ``scope`` in a VCD, inside a window of cycles.

    Parameters
    ----------
    vcd : path
        A VCD of :meth:`GateSim.run` (time unit 1 ps, cycle ``n`` from
        ``n * PERIOD_NS`` ns).
    start_cycle, end_cycle : int
        The window: changes at times in ``[start, end)`` cycles are counted (the first
        values and the reset are left out by starting later).
    scope : str
        The scope whose nets are counted (the design under test).

    Returns
    -------
    dict
        ``{(net, bit): changes}`` for every bit of every net declared in ``scope``
        (bit 0 for a scalar net; vector bits by their declared index).
    """
    period_ps = PERIOD_NS * 1000
    start, end = start_cycle * period_ps, None if end_cycle is None else end_cycle * period_ps
    names = {}          # id -> [(net, lsb, msb)]
    widths = {}
    depth, in_scope = 0, False
    counts = {}
    last = {}
    time = 0
    unit_ps = 1
    with open(vcd) as f:
        for line in f:
            if line.startswith("$enddefinitions"):
                break
            tokens = line.split()
            if not tokens:
                continue
            if tokens[0] == "$timescale":
                text = "".join(tokens[1:]).replace("$end", "")
                number = "".join(c for c in text if c.isdigit()) or "1"
                unit_ps = int(number) * {"fs": 1e-3, "ps": 1, "ns": 1e3, "us": 1e6}[
                    text.lstrip("0123456789")]
                start = start / unit_ps
                end = None if end is None else end / unit_ps
            elif tokens[0] == "$scope":
                depth += 1
                if tokens[2] == scope and not in_scope:
                    in_scope, scope_depth = True, depth
            elif tokens[0] == "$upscope":
                if in_scope and depth == scope_depth:
                    in_scope = False
                depth -= 1
            elif tokens[0] == "$var" and in_scope and depth == scope_depth:
                width, ident, net = int(tokens[2]), tokens[3], tokens[4]
                lsb = 0
                if len(tokens) > 6 and tokens[5].startswith("["):
                    bounds = tokens[5].strip("[]").split(":")
                    lsb = min(int(b) for b in bounds)
                names.setdefault(ident, []).append((net, lsb))
                widths[ident] = width
                for bit in range(width):
                    counts[net, lsb + bit] = 0
        for line in f:
            c = line[0]
            if c == "#":
                time = int(line[1:])
                if end is not None and time >= end:
                    break
                continue
            if c in "01xzXZ":
                ident, value = line[1:].strip(), line[0]
                value = int(value) if value in "01" else 0
            elif c == "b":
                bits, ident = line[1:].split()
                value = int(bits.replace("x", "0").replace("z", "0"), 2)
            else:
                continue
            if ident not in names:
                continue
            previous = last.get(ident)
            last[ident] = value
            if previous is None or time < start:
                continue
            changed = previous ^ value
            if not changed:
                continue
            for net, lsb in names[ident]:
                bit = 0
                while changed:
                    if changed & 1:
                        counts[net, lsb + bit] += 1
                    changed >>= 1
                    bit += 1
    return counts


def unit_stream(params, weights, activations, *, cycles, reset_cycles=2, idle=False):
    """The stimulus of a matmul unit (in its registered harness) computing
    ``activations @ weights.T`` beat by beat, and the order of its dot products.

    The stream runs token by token, row tile by row tile (``rows`` outputs), beat by beat
    (``lanes`` inputs): one beat a cycle, both inputs always valid, the result always
    ready, ``last`` on a dot product's final beat. It wraps around to the first token
    when ``cycles`` asks for more beats than the tensors hold.

    Parameters
    ----------
    params : UnitParams
        The unit (lanes K, rows M, weight mode, activation width).
    weights : numpy.ndarray, shape (N, D)
        Weights in {-1, 0, 1} (ternary) or -128..127 (int8); N a multiple of M, D of K.
    activations : numpy.ndarray, shape (T, D)
        Activations in the unit's range.
    cycles : int
        Beats streamed after the reset.
    reset_cycles : int
        Cycles of reset first (inputs idle).
    idle : bool
        Hold every input constant after the reset (no valid beat): the idle design.

    Returns
    -------
    (dict, list)
        ``{port: [value per cycle]}`` for :func:`pack_words`, and the dot products in
        the order the unit finishes them, ``[(token, tile), ...]``.
    """
    import numpy as np

    from ternary_accel.hw.rtl.matmul import act_layout, wgt_layout
    from ternary_accel.model.encoding import code_width, encode_lane_codes
    from ternary_accel.model.quant import TERNARY

    lanes, rows = params.lanes, params.rows
    weights, activations = np.asarray(weights), np.asarray(activations)
    n, d = weights.shape
    if n % rows or d % lanes or activations.shape[1] != d:
        raise ValueError(f"weights {weights.shape} and activations {activations.shape} "
                         f"do not tile a {rows} x {lanes} unit")
    act = act_layout(lanes, params.output_stage, params.act_width)
    data_offset, last_offset = act["data"].offset, act["last"].offset
    width = params.act_width
    cw = code_width(params.weight_mode)
    codes = encode_lane_codes(weights) if params.weight_mode == TERNARY else \
        (weights.astype(np.int64) & 0xFF)
    beats, tiles = d // lanes, n // rows
    lane_shift = [data_offset + i * width for i in range(lanes)]
    code_shift = [i * cw for i in range(rows * lanes)]
    assert wgt_layout(lanes, rows, params.weight_mode).size == rows * lanes * cw
    ports = {"rst": [], "act__payload": [], "act__valid": [], "wgt__payload": [],
             "wgt__valid": [], "res__ready": []}
    order = []

    def put(rst, act_word, act_valid, wgt_word, wgt_valid):
        for name, value in (("rst", rst), ("act__payload", act_word),
                            ("act__valid", act_valid), ("wgt__payload", wgt_word),
                            ("wgt__valid", wgt_valid), ("res__ready", 1)):
            ports[name].append(value)

    for _ in range(reset_cycles):
        put(1, 0, 0, 0, 0)
    beat = 0
    mask = (1 << width) - 1
    for _ in range(cycles):
        if idle:
            put(0, 0, 0, 0, 0)
            continue
        step = beat % (activations.shape[0] * tiles * beats)
        token, rest = divmod(step, tiles * beats)
        tile, b = divmod(rest, beats)
        x = activations[token, b * lanes:(b + 1) * lanes]
        word = sum((int(v) & mask) << s for v, s in zip(x, lane_shift))
        last = b == beats - 1
        word |= int(last) << last_offset
        block = codes[tile * rows:(tile + 1) * rows, b * lanes:(b + 1) * lanes].reshape(-1)
        w_word = sum(int(c) << s for c, s in zip(block, code_shift))
        put(0, word, 1, w_word, 1)
        if last:
            order.append((token, tile))
        beat += 1
    return ports, order


def unit_results(params, outputs):
    """The result vectors a unit put on ``res`` (valid cycles), each a list of ``rows``
    signed integers, from :meth:`GateSim.run`'s outputs."""
    width = params.res_width
    results = []
    for valid, payload in zip(outputs["res__valid"], outputs["res__payload"]):
        if valid == 1 and payload >= 0:
            values = []
            for r in range(params.rows):
                v = (payload >> (r * width)) & ((1 << width) - 1)
                values.append(v - (1 << width) if v >> (width - 1) else v)
            results.append(values)
    return results
