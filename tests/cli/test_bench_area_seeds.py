"""``ternary-accel bench area --seeds``: the median over placement seeds, without the tools
(``run_flow`` is replaced by a stand-in whose Fmax depends on the seed)."""

import json
import sys

import pytest

from cli_runner import invoke

from ternary_accel.cli import bench_area
from ternary_accel.hw.fpga.synth import SynthResult, median_over_seeds

#: Fmax of the stand-in flow per seed: the median of seeds 1, 2, 3 is 180.0.
FMAX = {1: 180.0, 2: 150.0, 3: 201.5, 4: 170.0}


@pytest.fixture
def fake_flow(monkeypatch, tmp_path):
    """``run_flow`` replaced; returns the list of ``(design, seed, workdir)`` it ran."""
    calls = []

    def run_flow(component, *, design, workdir, seed=1, macs=0, config=None, **_):
        calls.append((design, seed, workdir))
        return SynthResult(design=design, target="ecp5", device="LFE5U-45F",
                           package="CABGA381", seed=seed, nodsp=False, lut4=100,
                           ff=200, carry=50, dsp=0, bram=0, fmax_mhz=FMAX[seed],
                           macs=macs, logic_cells=200 + seed, config=config or {},
                           seeds=[seed], fmax_mhz_seeds=[FMAX[seed]])

    monkeypatch.setattr(bench_area, "run_flow", run_flow)
    monkeypatch.setattr("ternary_accel.cli.synth.tool_versions", lambda: {})
    monkeypatch.setenv("TERNARY_ACCEL_BUILD", str(tmp_path / "build"))
    return calls


def test_median_over_seeds_and_the_per_seed_column(fake_flow, tmp_path):
    result = invoke("bench", "area", "--only", "lanes8", "--seeds", "1,2,3",
                    "--outdir", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert [(d, s) for d, s, _ in fake_flow] == [("lanes8", 1), ("lanes8", 2), ("lanes8", 3)]
    # one folder per seed
    assert len({str(w) for _, _, w in fake_flow}) == 3
    row = [line for line in result.stdout.splitlines() if line.startswith("| lanes8 |")]
    assert len(row) == 1
    assert "| 180.0 |" in row[0] and row[0].endswith("| 1: 180.0, 2: 150.0, 3: 201.5 |")
    assert "seeds 1, 2, 3 (Fmax: median)" in result.stdout
    record, = json.loads((tmp_path / "out" / "bench_area.json").read_text())["results"]
    assert record["fmax_mhz"] == 180.0 and record["seeds"] == [1, 2, 3]
    assert record["fmax_mhz_seeds"] == [180.0, 150.0, 201.5]
    assert record["logic_cells"] == 202 and record["lut4"] == 100


def test_results_json(fake_flow, tmp_path, monkeypatch):
    argv = ["bench", "area", "--only", "lanes8", "--seeds", "2,4",
            "--outdir", str(tmp_path / "out"), "--results", str(tmp_path / "res"),
            "--results-name", "closure"]
    monkeypatch.setattr(sys, "argv", ["ternary-accel", *argv])
    result = invoke(*argv)
    assert result.returncode == 0, result.stderr
    page = json.loads((tmp_path / "res" / "closure.json").read_text())
    assert page["command"].startswith("ternary-accel bench area --only lanes8 --seeds 2,4")
    assert len(page["date"]) == 10 and page["date"][4] == "-"
    record, = page["results"]
    assert record["design"] == "lanes8" and record["fmax_mhz"] == 160.0  # (150 + 170) / 2
    assert record["config"]["component"] == "DotProduct" and record["config"]["lanes"] == 8
    assert record["fmax_mhz_seeds"] == [150.0, 170.0] and record["seeds"] == [2, 4]
    assert "lut4_equivalent" in record
    assert (tmp_path / "res" / "closure.md").exists()


def test_one_seed_keeps_the_plain_table(fake_flow, tmp_path):
    result = invoke("bench", "area", "--only", "lanes8", "--seed", "3",
                    "--outdir", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert [(d, s) for d, s, _ in fake_flow] == [("lanes8", 3)]
    assert fake_flow[0][2].name == "lanes8"
    assert "per seed" not in result.stdout and "| 201.5 |" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--seeds", "1,,2"], "argument --seeds: not a comma list of seeds"),
    (["--seeds", ""], "argument --seeds: not a comma list of seeds"),
    (["--seeds", "1,x"], "argument --seeds: not an integer: 'x'"),
    (["--seeds", "1,-2"], "argument --seeds: must be non-negative"),
    (["--seeds", "1,2,1"], "argument --seeds: a seed repeats"),
    (["--seed", "1", "--seeds", "1,2"], "--seed and --seeds exclude each other"),
    (["--from-json", "x.json", "--seeds", "1,2"], "--seeds applies only without --from-json"),
])
def test_bad_seed_lists_are_refused(fake_flow, args, message):
    result = invoke("bench", "area", *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not fake_flow


def test_median_over_seeds_refuses_mixed_runs():
    def run(design, seed):
        return SynthResult(design=design, target="ecp5", device="d", package="p", seed=seed,
                           nodsp=False, lut4=1, ff=1, carry=1, dsp=0, bram=0, fmax_mhz=1.0)
    with pytest.raises(ValueError, match="more than one design"):
        median_over_seeds([run("a", 1), run("b", 2)])
    with pytest.raises(ValueError, match="a seed repeats"):
        median_over_seeds([run("a", 1), run("a", 1)])
    with pytest.raises(ValueError, match="no results"):
        median_over_seeds([])


def test_the_head_unit_rows(fake_flow, tmp_path):
    """The LM head unit is swept with its products in DSP blocks and in LUTs, its
    configuration recorded."""
    result = invoke("bench", "area", "--only", "head*", "--outdir", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert [d for d, _, _ in fake_flow] == ["head2x32_grouped_dsp", "head2x32_grouped_lut"]
    records = json.loads((tmp_path / "out" / "bench_area.json").read_text())["results"]
    config = records[0]["config"]
    assert config["component"] == "HeadDot" and config["head"] == "grouped"
    assert (config["hidden"], config["lanes"], config["rows"]) == (2560, 32, 2)
    assert records[0]["macs"] == 64
