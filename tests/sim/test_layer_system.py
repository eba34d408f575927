"""The layer engine in a system (:class:`hw.rtl.layer_system.LayerSystem`: the engine,
its activation buffer, the AXI4-Lite register file and the AXI4 DMA) under Verilator
with cocotbext-axi: :class:`hw.layer_host.LayerHost` over an ``AxiLiteMaster``, DRAM an
``AxiRam`` with random pauses on every channel; layers of several shapes and token
counts bit-exact to the golden model, refused starts, bus errors, start while busy, a
soft reset (``sim/tb/layer_system.py``)."""

import json

import pytest

pytestmark = [pytest.mark.verilator, pytest.mark.xdist_group("layer-system")]

#: The bench's cocotb tests (``sim/tb/layer_system.py``).
BENCH_TESTS = 5
#: A small engine: 8 lanes, 8 rows (a result word is two 64-bit beats), T = 4.
DESIGN = {"lanes": 8, "rows": 8, "tokens": 4, "port_bits": 64, "bus_bits": 64,
          "act_words": 64, "max_beats": 16, "addr_width": 32}


def run_bench(tmp_path, design, *, layers=None, tests=None):
    """Build ``design`` (cached) and run the bench; ``(tests, failed, recorded)``."""
    from cocotb_tools.runner import get_results

    from ternary_accel.hw.params import EngineParams
    from ternary_accel.hw.paths import build_path
    from ternary_accel.hw.rtl.layer_system import LayerSystem
    from ternary_accel.sim.build import harness_make_args
    from ternary_accel.sim.harness import simulation_verilog
    from ternary_accel.sim.verilator import VERILATOR_WAIVERS, build_cached, retry_text_busy
    params = EngineParams(lanes=design["lanes"], rows=design["rows"],
                          tokens=design["tokens"], weight_port_bits=design["port_bits"],
                          max_beats=design["max_beats"])
    system = LayerSystem(params, design["act_words"], design["bus_bits"],
                         addr_width=design["addr_width"])
    name = "layer_system_" + "_".join(str(design[k]) for k in sorted(design))
    build_dir = build_path("sim", name).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    top = build_dir / "layer_system.v"
    text = simulation_verilog(system, "layer_system")
    if not top.exists() or top.read_text() != text:      # keep the build cache warm
        top.write_text(text)
    runner, _ = build_cached(sources=[top], hdl_toplevel="layer_system",
                             build_dir=build_dir,
                             build_args=[*VERILATOR_WAIVERS, "-Wno-CASEINCOMPLETE"],
                             make_args=harness_make_args(), log_file=build_dir / "build.log")
    results, recorded = tmp_path / "results.xml", tmp_path / "cycles.json"
    settings = {**design, "results": str(recorded)}
    if layers:
        settings["layers"] = layers
    env = {"TB_LAYER": json.dumps(settings)}
    if tests:
        env["COCOTB_TEST_FILTER"] = tests
    try:
        retry_text_busy(lambda: runner.test(
            test_module="ternary_accel.sim.tb.layer_system", hdl_toplevel="layer_system",
            build_dir=build_dir, test_dir=tmp_path, results_xml=str(results),
            extra_env=env, log_file=tmp_path / "sim.log"))
    except SystemExit:
        pass
    log = (tmp_path / "sim.log").read_text() if (tmp_path / "sim.log").exists() else ""
    assert results.exists(), log[-3000:]
    tests_run, failed = get_results(results)
    data = json.loads(recorded.read_text()) if recorded.exists() else {}
    return tests_run, failed, data, log


def test_layers_from_dram_through_axi(tmp_path):
    tests, failed, data, log = run_bench(tmp_path, DESIGN)
    assert (tests, failed) == (BENCH_TESTS, 0), log[-6000:]
    print("cycles without pauses:", data.get("cycles"))
