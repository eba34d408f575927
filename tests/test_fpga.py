"""Verilog for FPGA flows: lint, the JSON sidecar, the synth CLI, a synthesis smoke test."""

import json
import re
import subprocess
import sys

import pytest

from sim.verilator import lint


def hw_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "hw", *args], capture_output=True,
                          text=True, cwd=cwd)


def top_ports(verilog, module):
    """{name: (direction, width)} of ``module``'s port declarations."""
    body = verilog.split(f"module {module}(", 1)[1].split("endmodule", 1)[0]
    ports = {}
    for direction, msb, name in re.findall(r"^\s*(input|output)\s+(?:\[(\d+):0\]\s+)?(\w+);",
                                           body, flags=re.M):
        ports[name] = (direction, int(msb) + 1 if msb else 1)
    return ports


CONFIGS = [
    [],                                                         # the default 16 x 8 unit
    ["--lanes", "4", "--rows", "1", "--weight-mode", "binary", "--output-stage"],
    ["--lanes", "64", "--rows", "4", "--output-stage", "--axis"],
]


@pytest.mark.parametrize("flags", CONFIGS, ids=["default", "k4_m1_binary_os", "k64_m4_axis"])
def test_verilog_lints_and_sidecar_matches(tmp_path, flags):
    out = tmp_path / "unit.v"
    result = hw_cli("verilog", *flags, "-o", str(out))
    assert result.returncode == 0, result.stderr
    status, messages = lint(out, "matmul_unit")
    assert status == 0, messages
    side = json.loads(out.with_suffix(".json").read_text())
    declared = top_ports(out.read_text(), "matmul_unit")
    assert {p["name"]: (p["direction"], p["width"]) for p in side["ports"]} == declared
    assert side["latency_cycles"] > 0
    if "--axis" in flags:
        for name in ("s_axis_act_tdata", "s_axis_act_tlast", "s_axis_act_tuser",
                     "s_axis_wgt_tvalid", "m_axis_out_tready", "aclk", "aresetn"):
            assert name in declared
        assert declared["s_axis_act_tdata"][1] % 8 == 0


@pytest.mark.parametrize("args, message", [
    (["synth", "--target", "virtex"], "invalid choice"),
    (["synth", "--freq", "0"], "--freq must be positive"),
    (["synth", "--lanes", "0", "--synth-only"], "lanes must be at least 1"),
    (["synth", "--lane-group", "--levels-per-stage", "0"], "levels_per_stage"),
])
def test_synth_cli_errors(args, message):
    result = hw_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_synthesis_smoke(tmp_path):
    """A small unit through Yosys (no P&R): it maps to LUTs and carry chains, no DSP."""
    result = hw_cli("synth", "--lanes", "4", "--rows", "2", "--synth-only",
                    "--outdir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "unit2x4_ternary.json").read_text())["results"][0]
    assert report["lut4"] > 0 and report["carry"] > 0 and report["dsp"] == 0
    assert report["ff"] > 0 and report["macs"] == 8
