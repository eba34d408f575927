"""LiteX SoCs of the ECP5 boards and their bitstream build with the YoWASP tools.

Each board's SoC is litex-boards' own target (its clock and reset generator, its memory
PHY and module) on the board's LFE5U-85F variant: a VexRiscv CPU with the LiteX BIOS,
LiteDRAM on the board's memory, a UART, and the accelerator on the bus with its DMA
master into LiteDRAM (:func:`ternary_accel.soc.accelerator.add_accelerator`). LiteX
writes the Verilog and the build scripts; :mod:`ternary_accel.soc.yowasp` runs them with
the YoWASP Yosys, nextpnr-ecp5 and ecppack.
"""

import contextlib
import datetime
import importlib
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ternary_accel.soc import yowasp

__all__ = ["Board", "BOARDS", "SYS_CLK_FREQ", "ENGINE", "DMA_BITS", "BitstreamResult",
           "layer_system", "make_soc", "generate", "build", "read_build",
           "report_markdown", "write_report"]

#: The system clock the bitstreams are built (and timing-closed) for, in Hz.
SYS_CLK_FREQ = 60e6

#: The layer engine of the bitstreams: 16 lanes, 32 rows (the "16 x 32 engine").
ENGINE = {"lanes": 16, "rows": 32}

#: The accelerator's DMA (AXI4 master) data width: a LiteDRAM port of 128 bits (LiteDRAM
#: converts to the memory's native width: 64 bits on the OrangeCrab, 16 on the ULX3S).
DMA_BITS = 128

#: Cells of the report: nextpnr's bel name -> what the docs call it.
CELLS = {"TRELLIS_COMB": "LUT4", "TRELLIS_FF": "FF", "DP16KD": "DP16KD (BRAM)",
         "MULT18X18D": "MULT18X18D"}


@dataclass(frozen=True)
class Board:
    """One board: the litex-boards target and how the SoC uses it.

    Attributes
    ----------
    name : str
        The name on the command line.
    title : str
        The board as its maker names it.
    target : str
        The litex-boards target module (``litex_boards.targets.NAME``).
    target_kwargs : dict
        Keyword arguments of the target's ``BaseSoC`` that choose the 85F variant and
        its memory.
    device : str
        The FPGA part (for the report; the platform spells it in full).
    memory : str
        The board's main memory behind LiteDRAM.
    uart : str
        Where the SoC's UART is.
    load : tuple of str
        What a board owner runs to load the bitstream (``{bit}`` is its path, ``{dfu}``
        a copy for the DFU bootloader).
    clocks : dict
        The target's clock domains: ``{name: (times the system clock, fixed MHz)}``,
        to name nextpnr's clock nets by their frequency in the report.
    """

    name: str
    title: str
    target: str
    target_kwargs: dict
    device: str
    memory: str
    uart: str
    load: tuple = ()
    clocks: dict = field(default_factory=dict)

    def clock_domains(self, sys_clk_mhz):
        """``{MHz: [domain, ...]}`` of the target's clocks at ``sys_clk_mhz``."""
        domains = {}
        for name, (times, fixed) in self.clocks.items():
            domains.setdefault(round(times * sys_clk_mhz + fixed, 2), []).append(name)
        return domains


BOARDS = {
    "orangecrab": Board(
        name="orangecrab", title="Good Stuff Department OrangeCrab r0.2, 85F",
        target="gsd_orangecrab",
        target_kwargs={"revision": "0.2", "device": "85F", "sdram_device": "MT41K256M16"},
        device="LFE5U-85F-8MG285C",
        memory="DDR3L, 512 MB (MT41K256M16), LiteDRAM ECP5DDRPHY at 1:2",
        uart="serial on the Feather header's TX/RX pins (3.3 V; a USB-UART adapter at "
             "115200 baud): litex-boards' default USB ACM needs ValentyUSB, not on PyPI",
        load=("cp {bit} {dfu}", "dfu-suffix -v 1209 -p 5af0 -a {dfu}",
              "dfu-util --alt 0 --download {dfu}", "openFPGALoader --board orangecrab {bit}"),
        clocks={"sys": (1, 0), "sys2x": (2, 0), "init": (0, 24), "usb_48": (0, 48),
                "usb_12": (0, 12), "por (clk48)": (0, 48)}),
    "ulx3s": Board(
        name="ulx3s", title="Radiona ULX3S v2.0, 85F",
        target="radiona_ulx3s",
        target_kwargs={"revision": "2.0", "device": "LFE5U-85F",
                       "sdram_module_cls": "MT48LC16M16", "sdram_rate": "1:1"},
        device="LFE5U-85F-6BG381C",
        memory="SDR SDRAM, 32 MB (MT48LC16M16), LiteDRAM GENSDRPHY at 1:1",
        uart="serial through the on-board FTDI FT231X (the USB port US1) at 115200 baud",
        load=("openFPGALoader --board ulx3s {bit}",
              "openFPGALoader --board ulx3s --write-flash {bit}"),
        clocks={"sys": (1, 0), "sys_ps": (1, 0), "clk25": (0, 25)}),
}


def _board(name):
    if name not in BOARDS:
        raise ValueError(f"board must be one of {', '.join(BOARDS)}, not {name!r}")
    return BOARDS[name]


def _add_orangecrab_uart(soc):
    """The OrangeCrab's UART on its Feather header (litex-boards forces USB ACM)."""
    from litex_boards.platforms.gsd_orangecrab import feather_serial
    soc.platform.add_extension(feather_serial)
    soc.add_uart(name="uart", uart_name="serial", baudrate=115200)


def layer_system(engine=None):
    """The accelerator of the bitstreams: the layer engine (:data:`ENGINE` by default)
    behind its register file and DMA, a 128-bit AXI4 master with 32-bit addresses (the
    SoC's).

    Returns
    -------
    ternary_accel.hw.rtl.layer_system.LayerSystem
    """
    from ternary_accel.hw.params import EngineParams
    from ternary_accel.hw.rtl.layer_system import LayerSystem
    params = dict(ENGINE if engine is None else engine)
    return LayerSystem(EngineParams(weight_port_bits=DMA_BITS, **params),
                       bus_bits=DMA_BITS, addr_width=32)


def make_soc(board, *, sys_clk_freq=SYS_CLK_FREQ, accelerator=True, engine=None,
             build_dir=None):
    """The board's LiteX SoC.

    Parameters
    ----------
    board : str
        A name of :data:`BOARDS`.
    sys_clk_freq : float
        System clock in Hz.
    accelerator : bool
        Add the accelerator (:mod:`ternary_accel.soc.accelerator`); without it the SoC is
        the stock one (CPU, LiteDRAM, UART).
    engine : dict, optional
        The engine's parameters (default :data:`ENGINE`).
    build_dir : path, optional
        Where the accelerator's Verilog goes.

    Returns
    -------
    litex.soc.integration.soc_core.SoCCore

    Raises
    ------
    ValueError
        If the board is unknown or the clock is not positive.
    """
    spec = _board(board)
    if not sys_clk_freq > 0:
        raise ValueError(f"sys_clk_freq must be positive, not {sys_clk_freq!r}")
    target = importlib.import_module(f"litex_boards.targets.{spec.target}")
    kwargs = dict(spec.target_kwargs, sys_clk_freq=sys_clk_freq, toolchain="trellis",
                  cpu_type="vexriscv", cpu_variant="standard",
                  # LiteX shrinks the ROM to the BIOS it holds (Builder's auto_size)
                  integrated_rom_size=0x20000, integrated_sram_size=0x2000)
    if board == "orangecrab":
        # its target forces uart_name="usb_acm"; the UART is added after it
        kwargs["with_uart"] = False
    else:
        kwargs["uart_name"] = "serial"
        kwargs["uart_baudrate"] = 115200
    soc = target.BaseSoC(**kwargs)
    # Amaranth's alias wires ("x.field[0]") trip an assertion of Yosys 0.70 when ABC9's
    # netlist is reintegrated (as in hw/fpga/synth.py): flattened and purged first
    soc.platform.toolchain._yosys_cmds += ["hierarchy -top {build_name}", "proc",
                                           "flatten", "opt_clean -purge"]
    if board == "orangecrab":
        _add_orangecrab_uart(soc)
    if accelerator:
        from ternary_accel.soc.accelerator import add_accelerator
        if build_dir is None:
            raise ValueError("the accelerator's Verilog needs a build_dir")
        # register slices: the placed 85F SoC missed 60 MHz (41 MHz) on a combinational
        # path from LiteDRAM's AXI bridge through the DMA into the engine without them
        add_accelerator(soc, layer_system(engine), name="accel", verilog_dir=build_dir,
                        register_slices=True)
    return soc


@contextlib.contextmanager
def _output_to(path):
    """Send this process's standard output and error (LiteX's log, the BIOS's make) to
    ``path`` at the file-descriptor level; a failure's last lines are kept in the
    exception's note."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "w") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        try:
            yield
        except Exception as error:
            sys.stdout.flush()
            sys.stderr.flush()
            error.add_note(f"(LiteX's log: {path})")
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def generate(board, *, build_dir, sys_clk_freq=SYS_CLK_FREQ, seed=1, accelerator=True,
             engine=None, bios=True, log=print):
    """Write the SoC's Verilog, the BIOS and LiteX's build scripts; run no FPGA tool.

    Parameters
    ----------
    bios : bool
        Compile the BIOS into the ROM (riscv64-unknown-elf-gcc, meson); without it the
        ROM is left empty (a check of the build files, not a bitstream to load).

    Returns
    -------
    (Path, str)
        The gateware directory and the build name.
    """
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    litex_log = build_dir / "litex.log"
    log(f"{board}: LiteX SoC at {sys_clk_freq / 1e6:g} MHz "
        f"({'with' if accelerator else 'without'} the accelerator), Verilog"
        f"{', BIOS' if bios else ''} and build scripts -> {build_dir} (log: {litex_log})")
    with _output_to(litex_log):
        soc = make_soc(board, sys_clk_freq=sys_clk_freq, accelerator=accelerator,
                       engine=engine, build_dir=build_dir / "gateware")
        from litex.soc.integration.builder import Builder
        builder = Builder(soc, output_dir=str(build_dir), compile_software=bios,
                          compile_gateware=False)
        # the BIOS's Makefile runs LiteX's helpers with $(PYTHON): this Python, with LiteX
        saved = os.environ.get("PYTHON")
        os.environ["PYTHON"] = sys.executable
        try:
            builder.build(run=False, seed=seed)
        finally:
            if saved is None:
                os.environ.pop("PYTHON")
            else:
                os.environ["PYTHON"] = saved
    return Path(builder.gateware_dir), soc.build_name


@dataclass
class BitstreamResult:
    """What a bitstream build gives: where, how big, how long, utilization, timing."""

    board: str
    device: str
    sys_clk_mhz: float
    seed: int
    accelerator: bool
    engine: dict
    bitstream: str
    bitstream_bytes: int
    seconds: float
    step_seconds: dict
    utilization: dict
    timing: list
    tools: dict
    date: str = ""
    yosys_cells: dict = field(default_factory=dict)
    critical_paths: dict = field(default_factory=dict)

    @property
    def timing_met(self):
        return all(t["achieved_mhz"] >= t["constraint_mhz"] for t in self.timing)


def _yosys_cells(report):
    """Cell counts of the last ``stat`` in Yosys's log (``NAME.rpt``)."""
    counts = {}
    if not Path(report).exists():
        return counts
    text = Path(report).read_text()
    start = text.rfind("Printing statistics")
    for match in re.finditer(r"^\s+(\d+)\s+(?:[\d.]+\s+)?([A-Z][A-Z0-9_]+)\s*$|"
                             r"^\s+([A-Z][A-Z0-9_]+)\s+(\d+)\s*$",
                             text[start:], re.MULTILINE):
        if match.group(1):
            counts[match.group(2)] = int(match.group(1))
        else:
            counts[match.group(3)] = int(match.group(4))
    return counts


#: What a finished build records beside its outputs (``gateware/flow.json``).
FLOW_RECORD = "flow.json"


def build(board, *, build_dir, sys_clk_freq=SYS_CLK_FREQ, seed=1, accelerator=True,
          engine=None, log=print):
    """Build the board's bitstream: LiteX, then Yosys, nextpnr-ecp5 and ecppack.

    Returns
    -------
    BitstreamResult

    Raises
    ------
    ternary_accel.soc.yowasp.ToolError
        If a tool fails.
    """
    _board(board)
    started = time.monotonic()
    gateware, name = generate(board, build_dir=build_dir, sys_clk_freq=sys_clk_freq,
                              seed=seed, accelerator=accelerator, engine=engine, log=log)
    steps = {"litex": round(time.monotonic() - started, 1)}
    # builds of several boards started together place and route one at a time
    steps.update(yowasp.run_flow(gateware, name, log=log,
                                 pnr_lock=Path(build_dir).resolve().parent /
                                 ".place-and-route.lock"))
    record = {"board": board, "build_name": name, "sys_clk_freq": sys_clk_freq,
              "seed": seed, "accelerator": accelerator,
              "engine": dict(ENGINE if engine is None else engine) if accelerator else {},
              "step_seconds": steps, "date": datetime.date.today().isoformat()}
    (gateware / FLOW_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return read_build(build_dir)


def _display_path(path):
    """``path`` relative to the current directory when it is inside it."""
    path = Path(path).resolve()
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def read_build(build_dir):
    """The :class:`BitstreamResult` of a finished build in ``build_dir``: its record
    (``gateware/flow.json``), nextpnr's report, Yosys's log and the bitstream.

    Raises
    ------
    FileNotFoundError
        If the build has not finished there.
    """
    gateware = Path(build_dir) / "gateware"
    path = gateware / FLOW_RECORD
    if not path.exists():
        raise FileNotFoundError(2, "no finished bitstream build here (its record "
                                f"{FLOW_RECORD} is missing)", str(path))
    record = json.loads(path.read_text())
    name = record["build_name"]
    bit = gateware / f"{name}.bit"
    utilization, timing = yowasp.read_report(gateware / "report.json")
    steps = record["step_seconds"]
    return BitstreamResult(
        board=record["board"], device=_board(record["board"]).device,
        sys_clk_mhz=record["sys_clk_freq"] / 1e6, seed=record["seed"],
        accelerator=record["accelerator"], engine=record["engine"],
        bitstream=_display_path(bit), bitstream_bytes=bit.stat().st_size,
        seconds=round(sum(steps.values()), 1), step_seconds=steps,
        utilization={cell: asdict(utilization[cell]) for cell in CELLS
                     if cell in utilization},
        timing=[asdict(t) for t in timing], tools=yowasp.tool_versions(),
        date=record["date"], yosys_cells=_yosys_cells(gateware / f"{name}.rpt"),
        critical_paths={clock: list(path) for clock, path in
                        yowasp.critical_paths(gateware / "nextpnr-ecp5.log").items()})


def report_markdown(result, *, title=True):
    """The build's report as Markdown tables: utilization against the device, nextpnr's
    maximum frequency of each clock against its constraint, the bitstream, the build
    time and the tools."""
    board = BOARDS[result.board]
    lines = [f"# Bitstream: {board.title}", ""] if title else []
    accel = (f"the accelerator ({result.engine['lanes']} lanes x {result.engine['rows']} "
             "rows)" if result.accelerator else "no accelerator (the stock SoC)")
    lines += [f"Device {result.device}; system clock {result.sys_clk_mhz:g} MHz; SoC: "
              f"VexRiscv, LiteDRAM ({board.memory}), UART, {accel}. nextpnr seed "
              f"{result.seed} (one seed, no median); built {result.date}.", ""]
    lines += ["| resource | used | available | % |", "|---|---:|---:|---:|"]
    for cell, label in CELLS.items():
        if cell in result.utilization:
            u = result.utilization[cell]
            share = 100.0 * u["used"] / u["available"] if u["available"] else 0.0
            lines.append(f"| {label} | {u['used']} | {u['available']} | {share:.1f} |")
    if result.yosys_cells:
        lines += ["", "LUT4 counts nextpnr's TRELLIS_COMB cells (LUT4s, carry halves and "
                  f"LUT RAM); Yosys mapped {result.yosys_cells.get('LUT4', 0)} LUT4 and "
                  f"{result.yosys_cells.get('CCU2C', 0)} CCU2C (carry) cells."]
    lines += ["", "| clock (nextpnr's net) | domain | max frequency (MHz) | constraint (MHz) "
              "| met |", "|---|---|---:|---:|---|"]
    domains = board.clock_domains(result.sys_clk_mhz)
    for t in result.timing:
        met = "yes" if t["achieved_mhz"] >= t["constraint_mhz"] else "**no**"
        domain = " or ".join(domains.get(round(t["constraint_mhz"], 2), ["?"]))
        lines.append(f"| `{t['clock']}` | {domain} | {t['achieved_mhz']:.1f} | "
                     f"{t['constraint_mhz']:.1f} | {met} |")
    for clock, (start, end, logic, routing) in result.critical_paths.items():
        lines += ["", f"Critical path of `{clock}`: from `{start}` to `{end}`, "
                  f"{logic + routing:.2f} ns ({logic:.2f} ns logic, {routing:.2f} ns "
                  "routing; nextpnr's names)."]
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in result.step_seconds.items())
    lines += ["", "| | |", "|---|---|",
              f"| bitstream | `{result.bitstream}` |",
              f"| size | {result.bitstream_bytes} bytes ({result.bitstream_bytes / 2**20:.2f} "
              "MiB, compressed) |",
              f"| build time | {result.seconds / 60:.1f} min ({steps}) |"]
    lines += [f"| {tool} | {version} |" for tool, version in result.tools.items()]
    return "\n".join(lines)


def write_report(result, results_dir):
    """Write ``bitstream-BOARD.md`` and ``.json`` under ``results_dir``; return the
    Markdown."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    markdown = report_markdown(result)
    (results_dir / f"bitstream-{result.board}.md").write_text(markdown + "\n")
    (results_dir / f"bitstream-{result.board}.json").write_text(
        json.dumps(asdict(result), indent=2) + "\n")
    return markdown
