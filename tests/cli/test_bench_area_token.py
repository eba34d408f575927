"""``ternary-accel bench area --only 'token_*'``: the whole-token accelerator's rows (the
core and its engine on the LFE5U-85F, the units on the 45F), without the tools
(``run_flow`` is replaced by a stand-in)."""

import json

import pytest

from cli_runner import invoke

from ternary_accel.cli import bench_area
from ternary_accel.hw.fpga.synth import SynthResult

UNITS = ["token_normquant", "token_absmax", "token_attention", "token_softmax",
         "token_rope", "token_elementwise", "token_scalar", "token_rescale",
         "token_head_rescale", "token_head", "token_argmax"]


@pytest.fixture
def fake_flow(monkeypatch, tmp_path):
    """``run_flow`` replaced; returns the list of ``(design, target, component)`` it ran.
    The core has 3000 LUT4 and the engine 2000 (the units add 50 %)."""
    calls = []
    lut4 = {"token_core": 3000, "token_engine16x32": 2000}

    def run_flow(component, *, design, workdir, target="ecp5", seed=1, macs=0,
                 config=None, **_):
        calls.append((design, target, type(component).__name__))
        return SynthResult(design=design, target=target, device="LFE5U-85F",
                           package="CABGA381", seed=seed, nodsp=False,
                           lut4=lut4.get(design, 100), ff=200, carry=0, dsp=0, bram=0,
                           fmax_mhz=120.0, macs=macs, config=config or {}, seeds=[seed],
                           fmax_mhz_seeds=[120.0])

    monkeypatch.setattr(bench_area, "run_flow", run_flow)
    monkeypatch.setattr("ternary_accel.cli.synth.tool_versions", lambda: {})
    monkeypatch.setenv("TERNARY_ACCEL_BUILD", str(tmp_path / "build"))
    return calls


def test_the_token_rows(fake_flow, tmp_path):
    result = invoke("bench", "area", "--only", "token_*", "--outdir", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert [d for d, _, _ in fake_flow] == ["token_core", "token_engine16x32", *UNITS]
    targets = {d: t for d, t, _ in fake_flow}
    assert targets["token_core"] == targets["token_engine16x32"] == "ecp5-85k"
    assert {targets[u] for u in UNITS} == {"ecp5"}
    kinds = {d: k for d, _, k in fake_flow}
    assert (kinds["token_core"], kinds["token_engine16x32"], kinds["token_attention"],
            kinds["token_head"]) == ("TokenCore", "LayerEngine", "AttentionHead", "HeadDot")
    records = {r["design"]: r for r in json.loads(
        (tmp_path / "out" / "bench_area.json").read_text())["results"]}
    core = records["token_core"]["config"]
    assert core["component"] == "TokenCore" and core["positions"] == 256
    assert (core["hidden"], core["ffn"], core["vocab"]) == (256, 640, 4096)
    assert core["engine"]["packing"] == "3in5" and core["engine"]["weight_port_bits"] == 128
    assert core["numerics"]["head"] == "grouped"
    assert records["token_engine16x32"]["config"]["rows"] == 16
    assert records["token_normquant"]["config"]["depth"] == 640
    assert records["token_attention"]["config"]["depth"] == 256
    assert records["token_rope"]["config"]["max_positions"] == 256
    # the units' share of the engine's LUTs and the goals
    assert "add 1000 LUT4 (50% of the engine's)" in result.stdout
    assert "goal at most 30%: not met" in result.stdout
    assert "goal 150 MHz: not met" in result.stdout


def test_the_token_rows_are_not_in_the_quick_sweep(fake_flow, tmp_path):
    result = invoke("bench", "area", "--quick", "--outdir", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert not any(d.startswith("token_") for d, _, _ in fake_flow)
    assert {t for _, t, _ in fake_flow} == {"ecp5"}


def test_single_seed_places_the_matching_rows_once(fake_flow, tmp_path):
    result = invoke("bench", "area", "--only", "token_core", "--only", "token_scalar",
                    "--seeds", "2,3", "--single-seed", "token_core",
                    "--outdir", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert [d for d, _, _ in fake_flow] == ["token_core", "token_scalar", "token_scalar"]
    records = {r["design"]: r for r in json.loads(
        (tmp_path / "out" / "bench_area.json").read_text())["results"]}
    assert records["token_core"]["seeds"] == [2]
    assert records["token_scalar"]["seeds"] == [2, 3]
    row = [line for line in result.stdout.splitlines() if line.startswith("| token_core |")]
    assert row[0].endswith("| 2: 120.0 |")


def test_a_core_that_does_not_fit_keeps_its_synthesis_figures(fake_flow, monkeypatch,
                                                                tmp_path):
    """nextpnr out of a resource: the row has Yosys's counts (harness FFs subtracted),
    the packed logic cells from nextpnr's log, Fmax 0 and the error; the sweep goes on."""
    fake = bench_area.run_flow

    def run_flow(component, *, design, workdir, **kwargs):
        if design != "token_core":
            return fake(component, design=design, workdir=workdir, **kwargs)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "stat.json").write_text(json.dumps({"design": {"num_cells_by_type": {
            "LUT4": 114186, "CCU2C": 12421, "TRELLIS_FF": 49483, "MULT18X18D": 1036,
            "DP16KD": 8, "TRELLIS_DPR16X4": 840}}}))
        (workdir / "nextpnr.log").write_text("Info: \t        TRELLIS_COMB:  147920/  83640"
                                             "   176%\n")
        raise bench_area.ToolError(
            "nextpnr failed (exit 125): ERROR: Unable to place cell 'x', no BELs remaining "
            "to implement cell type 'MULT18X18D' (log: nextpnr.log)")

    monkeypatch.setattr(bench_area, "run_flow", run_flow)
    result = invoke("bench", "area", "--only", "token_core", "--only", "token_engine*",
                    "--outdir", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "token_core: does not fit LFE5U-85F" in result.stderr
    records = {r["design"]: r for r in json.loads(
        (tmp_path / "out" / "bench_area.json").read_text())["results"]}
    core = records["token_core"]
    assert (core["lut4"], core["carry"], core["dsp"], core["bram"], core["lutram"]) == (
        114186, 12421, 1036, 8, 840)
    assert 0 < core["ff"] < 49483 and core["logic_cells"] == 147920
    assert core["fmax_mhz"] == 0.0 and "MULT18X18D" in core["config"]["unplaced"]
    assert "It does not fit the LFE5U-85F" in result.stdout
    assert "1036 of 156 MULT18X18D" in result.stdout


def test_other_rows_still_stop_at_a_tool_error(fake_flow, monkeypatch, tmp_path):
    def run_flow(component, **_):
        raise bench_area.ToolError("nextpnr failed (exit 125): ERROR: Unable to place cell "
                                   "'x', no BELs remaining to implement cell type 'DP16KD'")

    monkeypatch.setattr(bench_area, "run_flow", run_flow)
    result = invoke("bench", "area", "--only", "lanes8", "--outdir", tmp_path / "out")
    assert result.returncode == 1 and "no BELs remaining" in result.stderr
