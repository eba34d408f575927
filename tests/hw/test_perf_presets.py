"""The board presets model engines that the project's flow placed (or a value the docs
cite with its command), and the perf command's batched decode and TTFT rows."""

import json
import re
from pathlib import Path

import pytest

from ternary_accel.hw.perf.accounting import Precisions
from ternary_accel.hw.perf.platforms import (PLATFORMS, RESULTS_DIR, measured_engine,
                                             preset_engine)
from ternary_accel.hw.perf.throughput import batch_sweep
from ternary_accel.model.hwnum import GROUPED_HEAD

ROOT = Path(__file__).resolve().parents[2]


def _record(engine, fmax, seeds=(1, 2, 3), design="engine-x", lut4=1000):
    return {"design": design, "device": "45k", "fmax_mhz": fmax, "lut4": lut4, "lutram": 10,
            "carry": 100,
            "macs": engine.lanes * engine.rows, "seeds": list(seeds),
            "fmax_mhz_seeds": [fmax - 5, fmax, fmax + 9],
            "config": {"component": "LayerEngine", **engine.to_dict(), "decoder": None}}


@pytest.mark.parametrize("name", [n for n, p in PLATFORMS.items() if p.reports_family])
def test_a_flow_preset_has_its_engine_measured_or_cited(name, tmp_path):
    """A preset on a board with the open flow names an engine that a committed report
    holds, or whose clock the docs cite with the command and the engine's figures."""
    preset = PLATFORMS[name]
    found = measured_engine(preset.engine, results=RESULTS_DIR, reports=tmp_path)
    if found is not None:
        mhz, source = preset.clock(reports=tmp_path)
        assert mhz == found.fmax_mhz and found.source in source
        return
    cited = re.search(r"(docs/[\w./-]+\.md)", preset.clock_source)
    assert cited, f"{name}: no report holds its engine and its clock cites no page"
    text = (ROOT / cited.group(1)).read_text()
    assert "bench area" in preset.clock_source
    design = (f"engine{preset.rows}x{preset.lanes}_T{preset.engine.tokens}"
              f"_p{preset.engine.weight_port_bits}_{preset.engine.packing}"
              f"_o{preset.engine.output_rows}")
    assert design in text and design in preset.clock_source
    assert f"| {preset.fallback_clock_mhz} |" in text


def test_presets_without_a_flow_say_their_clock_is_assumed():
    for p in PLATFORMS.values():
        if not p.reports_family:
            assert "assumed" in p.clock_source
            assert p.measured() is None


def test_measured_engine_matches_every_parameter(tmp_path):
    engine = preset_engine(32, 16)
    other = preset_engine(32, 16, port_bits=256)
    (tmp_path / "a.json").write_text(json.dumps({"results": [
        _record(other, 300.0, design="wrong-port"), _record(engine, 171.5)]}))
    (tmp_path / "broken.json").write_text("{not json")
    found = measured_engine(engine, results=tmp_path, reports=tmp_path / "none")
    assert found.fmax_mhz == 171.5 and found.design == "engine-x"
    assert found.lut4_per_mac == pytest.approx((1000 + 2 * 100 + 60) / 512)
    assert found.seeds == (1, 2, 3) and "median of seeds 1, 2, 3" in found.describe()
    assert measured_engine(preset_engine(64, 32), results=tmp_path,
                           reports=tmp_path / "none") is None
    preset = PLATFORMS["ecp5-ddr3"]
    mhz, source = preset.clock(reports=tmp_path / "none", results=tmp_path)
    assert mhz == 171.5 and "a.json" in source


def test_batched_decode_reads_the_weights_once_per_step():
    kv260 = PLATFORMS["kv260"]
    rows = batch_sweep("b1.58-2b4t", kv260, [1, 2, 16, 32],
                       precisions=Precisions.hardware(GROUPED_HEAD))
    one, two, sixteen, thirty_two = rows
    # B <= T: the same weight bytes shared by B tokens
    weights_and_head = one["dram_bytes_per_token"] - 2 * (one["dram_bytes_per_token"]
                                                          - two["dram_bytes_per_token"])
    assert weights_and_head < one["dram_bytes_per_token"]
    assert two["tokens_per_s"] > one["tokens_per_s"]
    assert sixteen["dram_bytes_per_token"] < thirty_two["dram_bytes_per_token"] * 1.2
    assert [r["bound"] for r in rows][-1] == "compute"
    assert all(r["tokens_per_s"] == pytest.approx(r["batch"] * r["tokens_per_s_per_sequence"])
               for r in rows)


def test_perf_prints_the_batch_sweep_and_the_ttft_engine(cli, tmp_path):
    png = tmp_path / "b.png"
    out = cli("perf", "--platform", "kv260", "--numerics", "hw", "--batch-sweep", "1,4",
              "--batch-plot", str(png))
    assert out.returncode == 0, out.stderr
    assert "### Batched decode at context 128" in out.stdout
    assert "smallest engine with a 128-token prefill within 0.96 s" in out.stdout
    assert "LM head int8 MACs on 4-bit codes with a 6-bit multiplier a 32-group" in out.stdout
    assert png.stat().st_size > 0
    bad = cli("perf", "--batch-sweep", "4,2")
    assert bad.returncode == 2 and "increasing" in bad.stderr
    bad = cli("perf", "--batch-plot", str(png))
    assert bad.returncode == 2 and "--batch-plot needs --batch-sweep" in bad.stderr
    bad = cli("perf", "--head", "trit5")
    assert bad.returncode == 2 and "--numerics hw" in bad.stderr


def test_recosting_on_another_engine_equals_a_new_account():
    from ternary_accel.hw.perf.accounting import account
    from ternary_accel.model.config import TINY
    port = {"weight_reuse": 4, "port_bits": 64, "packing": "3in5"}
    direct = account(TINY, tokens=6, context=0, lanes=8, rows=4, **port)
    recost = account(TINY, tokens=6, context=0, lanes=16, rows=8).on_engine(8, 4, **port)
    assert recost.bytes() == direct.bytes()
    assert [c.beats for c in recost.costs] == [c.beats for c in direct.costs]
    with pytest.raises(ValueError):
        direct.on_engine(7, 4)
