"""``ternary-accel perf``: the whole-model report, the memory bound, formats and errors."""

import csv
import io
import json

import pytest

from ternary_accel.hw.perf.accounting import Precisions

from cli_runner import invoke

from ternary_accel.hw.perf.throughput import model_report
from ternary_accel.hw.perf.platforms import PLATFORMS, Platform, get_platform, preset_engine
from ternary_accel.model.config import model_config
from ternary_accel.hw.mapping import check_layer_shape
from ternary_accel.model.shapes import MODELS


def runnable(platform):
    """Named models the decoder runs and whose projections tile onto the platform."""
    names = []
    for name in MODELS:
        try:
            config = model_config(name)
            for p in config.shape.projections():
                check_layer_shape(p.out_features, p.in_features, lanes=platform.lanes,
                                  rows=platform.rows)
        except ValueError:
            continue
        names.append(name)
    return names


@pytest.mark.slow
@pytest.mark.parametrize("platform", PLATFORMS.values(), ids=lambda p: p.name)
def test_no_preset_beats_its_memory_bound(platform):
    names = runnable(platform)
    assert "b1.58-2b4t" in names and len(names) >= 5
    for name in names:
        for batch in (1, 4):
            r = model_report(name, platform, prompt=8, batch=batch, clock_mhz=1e4)
            bandwidth = platform.bandwidth_gbs * 1e9
            assert r["bytes_per_token"] == r["decode"]["dram_bytes"] / batch
            assert r["decode_tokens_per_s"] <= bandwidth / r["bytes_per_token"] * (1 + 1e-12)
            assert r["prefill_tokens_per_s"] <= \
                bandwidth / r["prefill"]["dram_bytes_per_token"] * (1 + 1e-12)


def test_models_that_cannot_run_are_refused_by_name():
    ecp5 = get_platform("ecp5-ddr3")
    with pytest.raises(ValueError, match="gated FFN"):
        model_report("bitnet-6.7b", ecp5)
    with pytest.raises(ValueError, match="b1.58-1.3b on ecp5-ddr3.*5460"):
        model_report("b1.58-1.3b", ecp5)


def test_2b4t_report_is_consistent():
    r = model_report("b1.58-2b4t", get_platform("kv260"), prompt=16, context=64)
    dec = r["decode"]
    assert r["decode_tokens_per_s"] == pytest.approx(1 / dec["seconds"])
    assert r["ttft_s"] == pytest.approx(r["prefill"]["seconds"])
    assert sum(k["dram_bytes"] for k in dec["kernels"]) == dec["dram_bytes"]
    kinds = {k["kind"]: k for k in dec["kernels"]}
    assert {"lm_head", "attn_scores", "softmax", "kv_read", "bitlinear q",
            "bitlinear down", "rms_norm"} <= set(kinds)
    assert all(k["rtl"] for k in dec["kernels"])           # no assumed unit left
    from ternary_accel.hw.timing import head_cycles, head_load_cycles
    assert kinds["lm_head"]["cycles"] == (head_load_cycles(2560, lanes=32)    # kv260
                                          + head_cycles(128256, 2560, lanes=32, rows=8) + 3)
    assert kinds["lm_head"]["dram_bytes"] == 128256 * 2560 * 2
    for k in dec["kernels"]:
        assert k["seconds"] == pytest.approx(max(k["compute_s"], k["memory_s"]))
    assert {p["system"] for p in r["peers"] if p["like_for_like"]} == {
        "bitnet.cpp", "TeLLMe v2", "2B4T report estimate"}
    tellme = next(p for p in r["peers"] if p["system"] == "TeLLMe v2")
    assert tellme["advantage"] == pytest.approx(r["decode_tokens_per_s"] / 25.0)


@pytest.mark.parametrize("preset", ["ecp5-ddr3", "kv260"])
def test_decode_cycles_are_the_token_cores_cycle_model(preset):
    """A decode step's cycles in the report are the token core's program on the
    preset's engine (hw.program.token_cycles, equal to the RTL's counters), operation
    by operation summed."""
    from ternary_accel.hw.perf.throughput import token_engine_params
    from ternary_accel.hw.program import token_cycles
    from ternary_accel.model.config import model_config
    platform = get_platform(preset)
    r = model_report("b1.58-2b4t", platform, prompt=16, context=64,
                     precisions=Precisions.hardware(platform.numerics))
    model = token_cycles(model_config("b1.58-2b4t"), token_engine_params(platform),
                         platform.numerics, 64, head_rows=platform.head_rows)
    if platform.head_lanes == platform.lanes:
        assert r["decode"]["cycles"] == sum(model.values())
    kinds = {k["kind"]: k["cycles"] for k in r["decode"]["kernels"]}
    assert kinds["attn_scores"] == model["ATTEND"]
    assert kinds["rms_norm"] == model["NORM"]
    assert kinds["sequencer"] == model["sequencer"]
    assert sum(v for k, v in kinds.items() if k.startswith("bitlinear")) == model["MATMUL"]


def test_platform_checks():
    with pytest.raises(ValueError, match="unknown platform 'zx81'.*ecp5-ddr3"):
        get_platform("zx81")
    with pytest.raises(ValueError, match="bandwidth_gbs must be positive"):
        Platform("x", "x", 0, 1, "", engine=preset_engine(32, 16), fallback_clock_mhz=100,
                 clock_source="")
    with pytest.raises(ValueError, match="engine must be an EngineParams"):
        Platform("x", "x", 1, 1, "", engine=(32, 16), fallback_clock_mhz=100,
                 clock_source="")


def run(*args):
    return invoke("perf", *args)


def test_json_csv_markdown_and_roofline(tmp_path):
    png = tmp_path / "roof.png"
    result = run("--platform", "hbm2", "--prompt", "4", "--format", "json",
                 "--roofline", str(png))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for key in ("decode_tokens_per_s", "prefill_tokens_per_s", "ttft_s", "bytes_per_token",
                "joules_per_token"):
        assert key in report
    assert report["joules_per_token"]["7nm"]["total"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(io.StringIO(run("--prompt", "4", "--format", "csv").stdout)))
    assert {r["phase"] for r in rows} == {"decode", "prefill"}
    md = run("--prompt", "4").stdout
    assert "### Beside the peers" in md and "Projection, not a measurement" in md


@pytest.mark.parametrize("args, message", [
    (["--platform", "zx81"], "unknown platform"),
    (["--model", "gpt-5"], "unknown model"),
    (["--model", "bitnet-6.7b"], "gated FFN"),
    (["--prompt", "0"], "--prompt"),
    (["--context", "-1"], "--context"),
    (["--batch", "0"], "--batch"),
    (["--clock-mhz", "0"], "--clock-mhz"),
    (["--format", "xml"], "invalid choice"),
    (["--prompt", "5000"], "max_position_embeddings"),
])
def test_bad_flags_exit_2(args, message):
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr
