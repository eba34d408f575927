"""Building and running the cocotb regression under Verilator, one build per config."""

import json
import os
import time
from pathlib import Path
import xml.etree.ElementTree as ET

from amaranth.back import verilog

from ternary_accel.hw.paths import build_path
from ternary_accel.hw.rtl.ecp5 import SIM_MODEL_WAIVERS, cell_models

from ternary_accel.sim.config import TOPLEVEL
from ternary_accel.sim.verilator import VERILATOR_WAIVERS, build_cached, configure_environment, retry_text_busy
from ternary_accel.hw.params import ECP5
from ternary_accel.hw.rtl.matmul import MatmulUnit

__all__ = ["VERILATOR_WAIVERS", "write_verilog", "run_config", "RunResult"]

#: Root of every generated file of the simulations.

def write_verilog(config, directory):
    """Generate the Verilog of ``config`` into ``directory``; return its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{TOPLEVEL}.v"
    text = verilog.convert(MatmulUnit(config), name=TOPLEVEL, emit_src=False)
    if not path.exists() or path.read_text() != text:  # keep the build cache warm
        path.write_text(text)
    return path


class RunResult:
    """Outcome of one configuration's regression."""

    def __init__(self, config, tests, failed, stats, build_seconds, run_seconds):
        self.config = config
        self.tests = tests
        self.failed = failed
        self.stats = stats
        self.build_seconds = build_seconds
        self.run_seconds = run_seconds

    @property
    def passed(self):
        return self.tests > 0 and not self.failed

    @property
    def vectors(self):
        return sum(s["vectors"] for s in self.stats)

    @property
    def cycles(self):
        return sum(s["cycles"] for s in self.stats)


def _read_results(path):
    tests, failed = 0, []
    for case in ET.parse(path).getroot().iter("testcase"):
        tests += 1
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(case.get("name"))
    return tests, failed


def run_config(config, *, seed=1, testcase=None, waves=False, quiet=True):
    """Build ``config`` and run its cocotb tests under Verilator.

    Returns
    -------
    RunResult
    """
    configure_environment()
    build_dir = build_path("sim", config.name).resolve()
    source = write_verilog(config, build_dir)
    started = time.monotonic()
    log = build_dir / "build.log"
    sources, build_args = [source], list(VERILATOR_WAIVERS) + ["-O3"]
    if config.fabric == ECP5:  # vendor cells: add their behavioural models
        include, models = cell_models()
        sources += models
        build_args += [f"-I{include}", *SIM_MODEL_WAIVERS]
    runner, _ = build_cached(sources=sources, hdl_toplevel=TOPLEVEL, build_dir=build_dir,
                             build_args=build_args, waves=waves,
                             log_file=log if quiet else None)
    built = time.monotonic()
    stats_path = build_dir / "stats.jsonl"
    stats_path.unlink(missing_ok=True)
    results = build_dir / "results.xml"
    env = {"TB_CONFIG": config.to_json(), "TB_STATS": str(stats_path),
           "PYTHONPATH": os.pathsep.join(
               [str(Path(__file__).resolve().parent.parent)] +
               ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))}
    try:
        retry_text_busy(lambda: runner.test(
            test_module="ternary_accel.sim.tb.matmul", hdl_toplevel=TOPLEVEL, build_dir=build_dir,
            test_dir=build_dir, results_xml=str(results), seed=seed, testcase=testcase,
            extra_env=env, waves=waves, log_file=build_dir / "sim.log" if quiet else None))
    except SystemExit:
        pass  # failures are read from the results file below
    finished = time.monotonic()
    tests, failed = _read_results(results) if results.exists() else (0, ["<no results>"])
    stats = [json.loads(line) for line in stats_path.read_text().splitlines()] \
        if stats_path.exists() else []
    return RunResult(config, tests, failed, stats, built - started, finished - built)
