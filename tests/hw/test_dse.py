"""``ternary-accel dse``: the sweep on a local pool and on Dask, the cache, the table and
plot, the Pareto front, the throughput model and the CLI's errors.

The sweeps are synthesis only, on engines of a few MACs (seconds each)."""

import json
import shutil
import socket
from pathlib import Path

import pytest

from cli_runner import invoke

from ternary_accel.cli import dse as dse_cli
from ternary_accel.hw import dse
from ternary_accel.hw.params import EngineParams
from ternary_accel.hw.timing import unit_latency

pytestmark = pytest.mark.xdist_group("dse")

ROOT = Path(__file__).resolve().parents[2]
#: Two tiny engines (2 and 4 lanes, 1 row), today's port, synthesis only.
SWEEP = ["--lanes", "2,4", "--rows", "1", "--tokens", "1", "--port-bits", "beat",
         "--packing", "base3", "--device", "45f", "--synth-only"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_dse(*args):
    return invoke("dse", *args, cwd=ROOT)


def table_lines(outdir):
    return [line for line in (outdir / "dse.md").read_text().splitlines()
            if line.startswith("| engine")]


def stable(rows):
    """The rows without what depends on the run (time, cache hits)."""
    return [{k: v for k, v in row.items() if k not in ("seconds", "cached")} for row in rows]


def json_rows(outdir):
    return json.loads((outdir / "dse.json").read_text())["rows"]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("dse_local")
    result = run_dse(*SWEEP, "--jobs", "2", "--outdir", str(outdir))
    assert result.returncode == 0, result.stderr
    return outdir, result


@pytest.mark.synth
def test_local_pool_sweep(local_run):
    outdir, result = local_run
    assert "2 points (2 to build" in result.stderr
    assert "[1/2 " in result.stderr and "[2/2 " in result.stderr
    assert "2 ran, 0 from the cache, 0 failed" in result.stderr
    rows = json_rows(outdir)
    assert [(r["lanes"], r["rows"], r["status"]) for r in rows] == [(2, 1, "ok"), (4, 1, "ok")]
    for row in rows:
        assert row["lut4"] > 0 and row["lut4_equivalent"] >= row["lut4"]
        # synthesis only: no Fmax, so no throughput
        assert row["fmax_mhz"] == 0 and row["decode_tokens_per_s"] is None
    # the table is printed as written
    assert all(line in result.stdout for line in table_lines(outdir))


@pytest.mark.synth
def test_table_and_plot_written(local_run):
    outdir, _ = local_run
    markdown = (outdir / "dse.md").read_text()
    assert "projections of the BitLinear layers only" in markdown
    assert "attention and the LM head not counted" in markdown
    assert "Synth-only points have no Fmax and hence no throughput" in markdown
    assert "| design | device | lanes | rows | T | port bits | packing | LUT4 |" in markdown
    assert len(table_lines(outdir)) == 2
    assert all(line.endswith("| - | - | - | ok |") for line in table_lines(outdir))
    assert (outdir / "pareto.png").read_bytes()[:8] == PNG_MAGIC
    assert len(list((outdir / "cache").glob("*.json"))) == 2


@pytest.mark.synth
def test_dask_cluster_gives_identical_rows(local_run, tmp_path):
    import distributed     # a dependency of the project: missing is a failure, not a skip
    outdir, local = local_run
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        result = run_dse(*SWEEP, "--scheduler", cluster.scheduler_address,
                         "--outdir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert f"the Dask cluster at {cluster.scheduler_address}" in result.stderr
    assert "2 ran, 0 from the cache" in result.stderr
    assert table_lines(tmp_path) == table_lines(outdir)
    assert stable(json_rows(tmp_path)) == stable(json_rows(outdir))


@pytest.mark.synth
def test_cache_runs_only_what_changed(local_run, tmp_path):
    # a copy of the first run's folder: its cache holds both points
    outdir = tmp_path / "dse"
    shutil.copytree(local_run[0], outdir)
    before = table_lines(outdir)
    again = run_dse(*SWEEP, "--outdir", str(outdir))
    assert again.returncode == 0, again.stderr
    assert "0 ran, 2 from the cache" in again.stderr
    assert all(r["cached"] for r in json_rows(outdir))
    assert table_lines(outdir) == before
    # one parameter changed: lanes 4 -> 8 runs that point only
    changed = SWEEP.copy()
    changed[changed.index("2,4")] = "2,8"
    third = run_dse(*changed, "--outdir", str(outdir))
    assert third.returncode == 0, third.stderr
    assert "1 ran, 1 from the cache" in third.stderr
    assert [(r["lanes"], r["cached"]) for r in json_rows(outdir)] == [(2, True), (8, False)]
    # --no-cache runs everything again
    forced = run_dse("--lanes", "2", *SWEEP[2:], "--no-cache", "--outdir", str(outdir))
    assert forced.returncode == 0, forced.stderr
    assert "1 ran, 0 from the cache" in forced.stderr


def test_failed_point_is_a_row_and_exit_1(tmp_path):
    # 2560 outputs do not tile onto 3 rows: refused before any tool runs
    result = invoke("dse", "--lanes", "2", "--rows", "3", "--tokens", "1", "--port-bits",
                    "beat", "--packing", "base3", "--synth-only", "--outdir", tmp_path)
    assert result.returncode == 1
    out, err = result.stdout, result.stderr
    assert "failed: out_features 2560 is not a multiple of the engine's rows (3)" in out
    assert "0 ran, 0 from the cache, 1 failed" in err
    row, = json_rows(tmp_path)
    assert row["status"] == "failed" and row["lut4"] is None


@pytest.mark.verilator
def test_bad_engine_parameters_are_refused_by_name():
    with pytest.raises(TypeError, match="bogus"):
        dse.build_engine({"lanes": 2, "rows": 1, "bogus": 3})
    with pytest.raises(ValueError, match="tokens must be at most 256, not 300"):
        dse.mapping_params({"lanes": 2, "rows": 1, "tokens": 300})


def test_pareto_front_hand_made():
    points = [(1, 1), (2, 3), (3, 2), (4, 5), (2, 2), (5, 5), (4, 5)]
    # (3, 2) and (2, 2) lose to (2, 3), (5, 5) to (4, 5); equal points both stay
    assert dse.pareto_front(points) == [0, 1, 3, 6]
    assert dse.pareto_front([]) == []


def test_throughput_by_hand():
    # one 8 x 8 layer, 2 blocks, on 4 lanes x 2 rows: 4 row tiles x 2 beats = 8 beats a
    # token, 8 codes a beat = 2 bytes (5 per byte), so 16 weight bytes a pass
    params = EngineParams(lanes=4, rows=2, levels_per_stage=1, output_stage=True,
                          max_beats=2, tokens=1, weight_port_bits=None, packing="base3")
    latency = unit_latency(4, 1, True)
    fast = dse.bitlinear_throughput(params, 1.0, bandwidth_gbs=1.0, prompt=3,
                                    projections=[(8, 8)], layers=2)
    # compute-bound at 1 MHz: (8 + L) us a token, (24 + L) us for the prompt of 3
    assert fast["decode_tokens_per_s"] == pytest.approx(1 / (2 * (8 + latency) * 1e-6))
    assert fast["prefill_tokens_per_s"] == pytest.approx(3 / (2 * (24 + latency) * 1e-6))
    # memory-bound at 1000 B/s: 16 bytes a token, 48 for the prompt
    slow = dse.bitlinear_throughput(params, 1.0, bandwidth_gbs=1e-6, prompt=3,
                                    projections=[(8, 8)], layers=2)
    assert slow["decode_tokens_per_s"] == pytest.approx(1 / (2 * 16 / 1000))
    assert slow["prefill_tokens_per_s"] == pytest.approx(3 / (2 * 48 / 1000))


def test_throughput_with_weight_reuse_by_hand():
    # the same layer with T = 2 and a 16-bit base-3 port (10 codes a word: one word a
    # beat, 2 bytes); a prompt of 4 is 2 passes over the weights
    params = EngineParams(lanes=4, rows=2, levels_per_stage=1, output_stage=True,
                          max_beats=2, tokens=2, weight_port_bits=16, packing="base3")
    latency = unit_latency(4, 1, True)
    fast = dse.bitlinear_throughput(params, 1.0, bandwidth_gbs=1.0, prompt=4,
                                    projections=[(8, 8)], layers=2)
    # compute: one cycle for the first beat's word, then each beat on its tokens, one a
    # cycle: decode 8 beats x 1 token, prefill 2 passes x 8 beats x 2 tokens
    assert fast["decode_tokens_per_s"] == pytest.approx(1 / (2 * (1 + 8 + latency) * 1e-6))
    assert fast["prefill_tokens_per_s"] == pytest.approx(4 / (2 * (1 + 32 + latency) * 1e-6))
    # memory: 16 bytes a pass; decode 1 pass, prefill 2 (not 4: once per T tokens)
    slow = dse.bitlinear_throughput(params, 1.0, bandwidth_gbs=1e-6, prompt=4,
                                    projections=[(8, 8)], layers=2)
    assert slow["decode_tokens_per_s"] == pytest.approx(1 / (2 * 16 / 1000))
    assert slow["prefill_tokens_per_s"] == pytest.approx(4 / (2 * 32 / 1000))


def test_plot_and_fronts_on_hand_made_rows(tmp_path):
    def row(design, device, lut4, prefill, decode):
        return {"design": design, "device": device, "lanes": 8, "rows": 4, "tokens": 1,
                "port_bits": None, "packing": "base3", "lut4_equivalent": lut4,
                "prefill_tokens_per_s": prefill, "decode_tokens_per_s": decode}
    rows = [row("a", "45f", 100, 10, 1), row("b", "45f", 200, 30, 0.5),
            row("c", "85f", 150, 5, 2), row("d", "85f", 300, None, None)]
    assert dse.fronts(rows) == {"prefill_tokens_per_s": [0, 1],
                                "decode_tokens_per_s": [0, 2]}
    path = dse.write_plot(rows, tmp_path / "pareto.png", {"bandwidth_gbs": 3.2,
                                                          "prompt": 128})
    assert path.read_bytes()[:8] == PNG_MAGIC


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("flags, message", [
    (["--packing", "4bit"], "unknown packing '4bit' (one of base3, 3in5, 2bit)"),
    (["--lanes", "0"], "argument --lanes: must be a positive integer, not 0"),
    (["--rows", "x"], "argument --rows: not an integer: 'x'"),
    (["--tokens", "-4"], "argument --tokens: must be a positive integer, not -4"),
    (["--port-bits", "60"], "a port width must be a multiple of 8 bits, not 60"),
    (["--port-bits", "0"], "argument --port-bits: must be a positive integer, not 0"),
    (["--lanes", "4,,8"], "expected a comma list"),
    (["--device", "25f"], "unknown device '25f'"),
    (["--freq", "0"], "argument --freq: must be positive"),
    (["--bandwidth", "-1"], "argument --bandwidth: must be positive"),
    (["--prompt", "0"], "argument --prompt: must be a positive integer"),
    (["--jobs", "0"], "argument --jobs: must be a positive integer"),
    (["--seed", "-1"], "argument --seed: must be non-negative"),
    (["--jobs", "2", "--scheduler", "tcp://127.0.0.1:1"], "exclude each other"),
    (["--scheduler", None], "cannot reach the Dask scheduler"),
])
def test_cli_errors(flags, message, monkeypatch, tmp_path):
    monkeypatch.setattr(dse_cli, "SCHEDULER_TIMEOUT", 1)
    flags = [f"tcp://127.0.0.1:{closed_port()}" if f is None else f for f in flags]
    result = invoke("dse", *flags, "--outdir", tmp_path)
    assert result.returncode == 2
    err = result.stderr
    # one line: the command, "error:", the message naming the flag
    assert err.startswith("ternary-accel dse: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "dse.md").exists()
