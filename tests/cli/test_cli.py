"""Command-line behaviour of ``ternary-accel``: verilog, sim and the bench flags."""

import json

import pytest

from cli_runner import invoke


def run(*args, cwd=None):
    return invoke(*args, cwd=cwd)


def test_verilog_written(tmp_path):
    out = tmp_path / "unit.v"
    result = run("verilog", "--lanes", "8", "--rows", "2", "--output-stage",
                 "-o", str(out))
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert "module matmul_unit(" in text
    assert "act__payload" in text and "res__payload" in text


def test_verilog_to_stdout_and_name():
    result = run("verilog", "--lanes", "4", "--rows", "1", "--name", "tern4")
    assert result.returncode == 0
    assert "module tern4(" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["verilog", "--lanes", "0"], "lanes must be at least 1"),
    (["verilog", "--lanes", "x"], "argument --lanes/-k: not an integer: 'x'"),
    (["verilog", "--weight-mode", "int4"], "invalid choice"),
    (["verilog", "--bogus"], "unrecognized arguments"),
    (["verilog", "--name", "1bad"], "Verilog identifier"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
    (["verilog", "--acc-tiles", "4"], "engine parameters: add --engine"),
    (["verilog", "--weight-order", "columns", "--axis"], "engine parameters"),
    (["synth", "--lane-group", "--acc-tiles", "4"], "engine parameters: add --engine"),
    (["verilog", "--engine", "--acc-tiles", "0"], "--acc-tiles must be at least 1, not 0"),
    (["verilog", "--engine", "--weight-order", "diagonal"], "invalid choice"),
    (["verilog", "--tokens", "4"], "engine parameters: add --engine"),
    (["synth", "--weight-port-bits", "128"], "engine parameters: add --engine"),
    (["verilog", "--packing", "2bit"], "engine parameters: add --engine"),
    (["verilog", "--engine", "--tokens", "0"], "tokens must be at least 1"),
    (["verilog", "--engine", "--tokens", "300"], "--tokens must be at most 256, not 300"),
    (["verilog", "--engine", "--output-rows", "1"], "parameter of the output stage "
                                                    "(--output-stage)"),
    (["verilog", "--engine", "--weight-port-bits", "100"], "multiple of 8"),
    (["verilog", "--engine", "--packing", "base4"], "invalid choice"),
    (["verilog", "--engine", "--packing", "2bit"], "needs assembled beats"),
    (["verilog", "--engine", "--tokens", "2", "--acc-tiles", "4"], "do not combine"),
    (["verilog", "--output-stage", "--rows", "8", "--output-rows", "3"], "--output-rows must divide --rows (8), not 3"),
    (["verilog", "--output-rows", "2"], "output stage"),
    (["verilog", "--output-stage", "--output-rows", "0"], "at least 1"),
    (["verilog", "--act-copies", "x"], "invalid count"),
    (["verilog", "--rows", "4", "--act-copies", "5"], "--act-copies must be at most --rows (4), not 5"),
    (["verilog", "--engine", "--weight-order", "columns", "--output-stage", "--rows", "8",
      "--output-rows", "2"], "parallel output stage"),
])
def test_hw_cli_errors(args, message):
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_sim_cli_errors():
    result = run("sim", "--config", "nonexistent")
    assert result.returncode == 2
    assert "unknown configuration" in result.stderr
    listed = run("sim", "--list")
    assert listed.returncode == 0 and "k16_m8_ternary_raw_b8_l1" in listed.stdout


@pytest.mark.parametrize("module, args, message", [
    (("bench", "layer"), ["--idle", "1.5"], "must be in [0, 1)"),
    (("bench", "layer"), ["--backpressure", "-0.1"], "must be in [0, 1)"),
    (("bench", "layer"), ["--layers", "0"], "must be a positive integer"),
    (("bench", "layer"), ["--only", "nope"], "unknown projection 'nope'"),
    (("bench", "layer"), ["--bench", "fast"], "invalid choice: 'fast'"),
    (("bench", "layer"), ["--lanes", "7"], "not a multiple of the engine's --lanes (7)"),
    (("bench", "layer"), ["--reuse", "1000"], "--reuse must be at most 256, not 1000"),
    (("bench", "layer"), ["--seed", "-1"], "argument --seed: must be non-negative"),
    (("bench", "layer"), ["--bandwidth", "nan"], "argument --bandwidth: must be a finite"),
    (("bench", "block"), ["--bench", "fast"], "invalid choice: 'fast'"),
    (("bench", "sparse"), ["--gate-zeros", "1"], "must be in [0, 1)"),
    (("bench", "sparse"), ["--down-zeros", "x"], "not a number: 'x'"),
    (("bench", "sparse"), ["--tokens", "0"], "must be a positive integer"),
    (("bench", "sparse"), ["--only", "sparse"], "invalid choice: 'sparse'"),
    (("bench", "sparse"), ["--rows", "7"], "not a multiple of the engine's --rows (7)"),
])
def test_bench_flags_are_checked_before_anything_is_built(module, args, message):
    result = run(*module, *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_sparse_engine_verilog_and_sidecar(tmp_path):
    """The sparse dataflow's engine from the CLI: column-order beats, a bank, the tiles
    port in the sidecar."""
    out = tmp_path / "sparse.v"
    result = run("verilog", "--engine", "--lanes", "8", "--rows", "4",
                 "--weight-order", "columns", "--acc-tiles", "16", "-o", str(out))
    assert result.returncode == 0, result.stderr
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["component"] == "LayerEngine"
    assert sidecar["weight_order"] == "columns" and sidecar["config"]["acc_tiles"] == 16
    ports = {p["name"]: p for p in sidecar["ports"]}
    assert ports["tiles"]["width"] == 5 and ports["tiles"]["direction"] == "input"
    assert ports["wgt__payload"]["width"] == 8 * 8        # 8 columns of one byte


def test_batched_engine_verilog_sidecar_and_axis(tmp_path):
    """The engine with weight reuse and a 64-bit port from the CLI: the sidecar names
    its port and batch input; ``--axis`` gives the AXI4-Stream names around it."""
    out = tmp_path / "reuse.v"
    result = run("verilog", "--engine", "--lanes", "8", "--rows", "4",
                 "--tokens", "4", "--weight-port-bits", "64", "-o", str(out))
    assert result.returncode == 0, result.stderr
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert (sidecar["tokens"], sidecar["weight_port_bits"], sidecar["packing"]) == \
        (4, 64, "3in5")                   # the default packing of a port
    assert sidecar["port_words_per_beat"] == 1 and sidecar["assembled_beats"]
    ports = {p["name"]: p for p in sidecar["ports"]}
    assert ports["wgt__payload"]["width"] == 64
    assert ports["batch"]["width"] == 3 and ports["batch"]["direction"] == "input"
    axis = tmp_path / "reuse_axis.v"
    result = run("verilog", "--engine", "--axis", "--lanes", "8", "--rows",
                 "4", "--tokens", "4", "--weight-port-bits", "64", "-o", str(axis))
    assert result.returncode == 0, result.stderr
    sidecar = json.loads(axis.with_suffix(".json").read_text())
    ports = {p["name"]: p for p in sidecar["ports"]}
    assert ports["s_axis_wgt_tdata"]["width"] == 64 and "batch" in ports
    assert sidecar["component"] == "AxisEngine"
    assert "module layer_engine(" in axis.read_text()


def test_pipelined_output_stage_from_the_cli(tmp_path):
    """--output-rows and --act-copies reach the unit; the sidecar's latency is the
    timing contract's L (hw.matmul.unit_latency) and its config names both."""
    from ternary_accel.hw.timing import unit_latency
    out = tmp_path / "stage.v"
    result = run("verilog", "--engine", "--lanes", "8", "--rows", "4",
                 "--tokens", "4", "--weight-port-bits", "64", "--output-stage",
                 "--output-rows", "1", "--act-copies", "2", "-o", str(out))
    assert result.returncode == 0, result.stderr
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["config"]["output_rows"] == 1 and sidecar["config"]["act_copies"] == 2
    assert sidecar["latency_cycles"] == unit_latency(8, 1, True, 1, 4, act_copies=2)
