"""Verilog for FPGA flows: lint, the JSON sidecar, the synth CLI, a synthesis smoke test."""

import json
import re

import pytest

from cli_runner import invoke

from ternary_accel.sim.verilator import lint


def hw_cli(*args, cwd=None):
    return invoke(*args, cwd=cwd)


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
    ["--lanes", "8", "--rows", "2", "--output-stage", "--act-width", "4", "--axis"],
    ["--lanes", "8", "--rows", "2", "--act-width", "4", "--engine"],
]


@pytest.mark.verilator
@pytest.mark.parametrize("flags", CONFIGS, ids=["default", "k4_m1_binary_os", "k64_m4_axis",
                                                "k8_m2_a4_axis", "k8_m2_a4_engine"])
def test_verilog_lints_and_sidecar_matches(tmp_path, flags):
    out = tmp_path / "unit.v"
    result = hw_cli("verilog", *flags, "-o", str(out))
    assert result.returncode == 0, result.stderr
    top = "layer_engine" if "--engine" in flags else "matmul_unit"
    status, messages = lint(out, top)
    assert status == 0, messages
    side = json.loads(out.with_suffix(".json").read_text())
    declared = top_ports(out.read_text(), top)
    assert {p["name"]: (p["direction"], p["width"]) for p in side["ports"]} == declared
    assert side["latency_cycles"] > 0
    act_width = int(flags[flags.index("--act-width") + 1]) if "--act-width" in flags else 8
    assert side["act_width"] == side["config"]["act_width"] == act_width
    if "--axis" in flags:
        for name in ("s_axis_act_tdata", "s_axis_act_tlast", "s_axis_act_tuser",
                     "s_axis_wgt_tvalid", "m_axis_out_tready", "aclk", "aresetn"):
            assert name in declared
        assert declared["s_axis_act_tdata"][1] % 8 == 0
        assert declared["s_axis_act_tdata"][1] >= int(flags[1]) * act_width
    if "--engine" in flags:
        assert side["component"] == "LayerEngine" and "wgt__payload" in declared


@pytest.mark.parametrize("args, message", [
    (["synth", "--target", "virtex"], "invalid choice"),
    (["synth", "--freq", "0"], "argument --freq: must be positive"),
    (["synth", "--lanes", "0", "--synth-only"], "lanes must be at least 1"),
    (["synth", "--lane-group", "--levels-per-stage", "0"], "--levels-per-stage must be at least 1"),
    (["synth", "--target", "ice40", "--fabric", "ecp5"], "cannot be synthesized"),
    (["synth", "--act-width", "5"], "invalid choice: 5 (choose from 4, 8)"),
    (["synth", "--act-width", "four"], "argument --act-width: not an integer"),
    (["synth", "--act-width", "4", "--weight-mode", "int8"], "the int8 baseline multiplies"),
    (["synth", "--lane-group", "--engine"], "exclude each other"),
    (["synth", "--engine", "--weight-mode", "binary"], "--engine takes ternary weights"),
    (["verilog", "--act-width", "16"], "invalid choice"),
])
def test_synth_cli_errors(args, message):
    result = hw_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.synth
def test_int4_lane_group_synthesis_smoke(tmp_path):
    """An int4 lane group through Yosys: its report name carries the width, and it is
    narrower than the int8 one."""
    def synth(*flags):
        result = hw_cli("synth", "--lane-group", "--lanes", "4", "--synth-only",
                        "--fabric", "ecp5", "--outdir", str(tmp_path), *flags)
        assert result.returncode == 0, result.stderr
    synth("--act-width", "4")
    synth()
    int4 = json.loads((tmp_path / "lanes4_ternary_a4_ecp5.json").read_text())["results"][0]
    int8 = json.loads((tmp_path / "lanes4_ternary_ecp5.json").read_text())["results"][0]
    assert int4["config"]["act_width"] == 4 and int4["config"]["component"] == "DotProduct"
    assert 0 < int4["lut4"] < int8["lut4"] and 0 < int4["carry"] < int8["carry"]


@pytest.mark.synth
@pytest.mark.parametrize("fabric", ["generic", "ecp5"])
def test_synthesis_smoke(tmp_path, fabric):
    """A small unit through Yosys (no P&R): it maps to LUTs and carry chains, no DSP."""
    result = hw_cli("synth", "--lanes", "4", "--rows", "2", "--synth-only",
                    "--fabric", fabric, "--outdir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    name = "unit2x4_ternary" + ("_ecp5" if fabric == "ecp5" else "")
    report = json.loads((tmp_path / f"{name}.json").read_text())["results"][0]
    assert report["config"]["fabric"] == fabric
    assert report["lut4"] > 0 and report["carry"] > 0 and report["dsp"] == 0
    assert report["ff"] > 0 and report["macs"] == 8


# ECP5 fabric: the CCU2C lane groups against the generic ones, proved by SAT over every
# input sequence a few cycles past the latency (hw.fpga.equiv), and a mutant that must fail.
EQUIV_CASES = [
    dict(lanes=5),                                     # odd lane out, final stage
    dict(lanes=4, carry_out=True),                     # as inside the unit
    dict(lanes=6, weight_mode="binary", levels_per_stage=2),
    dict(lanes=1),
    dict(lanes=5, act_width=4),                        # int4: nodes 4 bits narrower
    dict(lanes=4, carry_out=True, act_width=4),
    dict(lanes=3, weight_mode="binary", act_width=4),
]


@pytest.mark.synth
@pytest.mark.parametrize("params", EQUIV_CASES, ids=lambda p: "_".join(
    f"{k}{v}" for k, v in p.items()))
def test_ecp5_lane_group_equivalent(tmp_path, params):
    from ternary_accel.hw.fpga.equiv import prove_equivalent
    from ternary_accel.hw.rtl.lanes import DotProduct
    generic = DotProduct(**params)
    prove_equivalent(generic, DotProduct(**params, fabric="ecp5"),
                     cycles=generic.latency + 2, workdir=tmp_path)


def test_ecp5_equivalence_catches_a_wrong_cell(tmp_path, monkeypatch):
    """A fold LUT with one INIT bit flipped is found out."""
    from ternary_accel.hw.rtl import ecp5
    from ternary_accel.hw.fpga.equiv import prove_equivalent
    from ternary_accel.hw.rtl.lanes import DotProduct
    from ternary_accel.model.quant import TERNARY
    monkeypatch.setitem(ecp5._FOLD, TERNARY, ecp5._FOLD[TERNARY] ^ 0x0100)
    with pytest.raises(AssertionError, match="not equivalent"):
        prove_equivalent(DotProduct(lanes=2), DotProduct(lanes=2, fabric="ecp5"),
                         cycles=4, workdir=tmp_path)


def test_fabric_flag():
    result = hw_cli("verilog", "--fabric", "xilinx")
    assert result.returncode == 2 and "invalid choice" in result.stderr


@pytest.mark.verilator
def test_ecp5_fabric_verilog_lints_with_cell_models(tmp_path):
    from ternary_accel.hw.rtl.ecp5 import SIM_MODEL_WAIVERS, cell_models
    out = tmp_path / "unit.v"
    result = hw_cli("verilog", "--lanes", "8", "--rows", "2", "--fabric", "ecp5",
                    "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "CCU2C" in out.read_text()
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["config"]["fabric"] == "ecp5" and "ECP5" in side["cell_library"]
    include, models = cell_models()
    # SIM_MODEL_WAIVERS cover the cell models' own warnings (specify blocks, pins).
    status, messages = lint(out, "matmul_unit",
                            [f"-I{include}", *models, *SIM_MODEL_WAIVERS])
    assert status == 0, messages


def bench_area(*args):
    return invoke("bench", "area", *args)


@pytest.mark.parametrize("args, message", [
    (["--freq", "-1"], "argument --freq: must be positive"),
    (["--seed", "-3"], "argument --seed: must be non-negative"),
    (["--from-json", "missing.json"], "cannot read results from missing.json"),
    (["--sweep"], "unrecognized arguments"),
])
def test_bench_area_cli_errors(args, message):
    result = bench_area(*args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_bench_area_report_from_json(tmp_path):
    """The report's ratios and projection, computed from given results (no tools)."""
    from ternary_accel.hw.fpga.synth import SynthResult

    def row(design, lut4, carry, fmax, macs, dsp=0, nodsp=False):
        return SynthResult(design=design, target="ecp5", device="LFE5U-45F",
                           package="CABGA381", seed=1, nodsp=nodsp, lut4=lut4, ff=macs,
                           carry=carry, dsp=dsp, bram=0, fmax_mhz=fmax, macs=macs).to_dict()

    results = [row("unit4x16", 640, 320, 220.0, 64),        # 20 LUT4 eq./MAC
               row("unit16x32", 5120, 2560, 150.0, 512),     # 20 LUT4 eq./MAC
               row("int8_unit4x16_dsp", 640, 0, 180.0, 64, dsp=64),
               row("int8_unit4x16_lut", 10240, 0, 100.0, 64, nodsp=True),  # 160 / MAC
               row("lanes32", 160, 160, 230.0, 32),          # 15 LUT4 eq./MAC
               row("lanes32_a4", 96, 96, 240.0, 32)]         # 9 LUT4 eq./MAC
    source = tmp_path / "in.json"
    source.write_text(json.dumps({"results": results}))
    result = bench_area("--from-json", str(source), "--outdir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "| 4 x 16 | 20.0 | 160.0 | 8.0x fewer | 64, 10.0 | 2.20 |" in text
    # 85 % of 83640 LUT4s at 20 per MAC: 3554 MACs; 4x16 copies at 1280 each: 55
    assert "about 3554 ternary MACs" in text and "(below 200 MHz)" in text
    assert "55 x unit4x16 (3520 MACs) at 220 MHz: 774 GMAC/s" in text
    assert "156 MULT18X18D blocks" in text and "28 GMAC/s" in text
    assert "| lanes32 | 15.0, 230.0 | 9.0, 240.0 | 0.60 |" in text
    assert (tmp_path / "out" / "bench_area.md").read_text().startswith("Tools:")


@pytest.mark.synth
def test_flow_reuse(tmp_path):
    """reuse=True skips the tools only for the same Verilog through the same commands."""
    from ternary_accel.hw.rtl.lanes import DotProduct
    from ternary_accel.hw.fpga.synth import run_flow
    first = run_flow(DotProduct(lanes=2), design="g", workdir=tmp_path, place=False)
    log = tmp_path / "yosys.log"
    stamp = log.stat().st_mtime_ns
    again = run_flow(DotProduct(lanes=2), design="g", workdir=tmp_path, place=False,
                     reuse=True)
    assert log.stat().st_mtime_ns == stamp and again.lut4 == first.lut4
    other = run_flow(DotProduct(lanes=3), design="g", workdir=tmp_path, place=False,
                     reuse=True)
    assert log.stat().st_mtime_ns != stamp and other.lut4 != first.lut4
