"""The accelerator in a system (:class:`hw.rtl.system.TokenSystem`: the token core, its
AXI4-Lite register file and its AXI4 DMA) under Verilator with cocotbext-axi: the host
driver (:mod:`hw.host`) over an ``AxiLiteMaster``, DRAM an ``AxiRam`` with random pauses
on every channel; tokens of the ``MICRO`` model (``tests/token_models.py``) from DRAM
bit-exact to the golden program, bus errors, start while busy, a soft reset
(``sim/tb/system.py``)."""

import json
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.verilator, pytest.mark.xdist_group("token-system")]

#: The bench's cocotb tests (``sim/tb/system.py``).
BENCH_TESTS = 4
BUS_BITS = 128
ADDR_WIDTH = 32
POSITIONS = 8


def _design():
    from token_models import micro_decoder
    from ternary_accel.hw import program as P
    from ternary_accel.hw.rtl.system import TokenSystem
    from ternary_accel.model import hwnum as H
    program = P.make_program(micro_decoder(H.GROUPED_HEAD),
                             P.token_engine(8, 4, hidden=32, ffn=64), positions=POSITIONS)
    return TokenSystem(program, BUS_BITS, addr_width=ADDR_WIDTH)


def test_tokens_from_dram_through_axi(tmp_path):
    from cocotb_tools.runner import get_results

    from ternary_accel.hw.paths import build_path
    from ternary_accel.sim.build import harness_make_args
    from ternary_accel.sim.harness import simulation_verilog
    from ternary_accel.sim.verilator import VERILATOR_WAIVERS, build_cached, retry_text_busy
    started = time.monotonic()
    build_dir = build_path("sim", "token_system").resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    top = build_dir / "token_system.v"
    text = simulation_verilog(_design(), "token_system")
    if not top.exists() or top.read_text() != text:      # keep the build cache warm
        top.write_text(text)
    runner, _ = build_cached(sources=[top], hdl_toplevel="token_system",
                             build_dir=build_dir, build_args=[*VERILATOR_WAIVERS, "-Wno-CASEINCOMPLETE"],
                             make_args=harness_make_args(),
                             log_file=build_dir / "build.log")
    built = time.monotonic() - started
    results, cycles = tmp_path / "results.xml", tmp_path / "cycles.json"
    settings = {"tests": str(Path(__file__).resolve().parents[1]), "bus_bits": BUS_BITS,
                "addr_width": ADDR_WIDTH, "positions": POSITIONS, "results": str(cycles)}
    try:
        retry_text_busy(lambda: runner.test(
            test_module="ternary_accel.sim.tb.system", hdl_toplevel="token_system",
            build_dir=build_dir, test_dir=tmp_path, results_xml=str(results),
            extra_env={"TB_SYSTEM": json.dumps(settings)}, log_file=tmp_path / "sim.log"))
    except SystemExit:
        pass
    log = (tmp_path / "sim.log").read_text() if (tmp_path / "sim.log").exists() else ""
    assert results.exists(), log[-3000:]
    tests, failed = get_results(results)
    assert (tests, failed) == (BENCH_TESTS, 0), log[-6000:]
    measured = json.loads(cycles.read_text())
    print(f"build {built:.1f} s, total {time.monotonic() - started:.1f} s")
    print("cycles without pauses:", [(c["total"], c["stall"]) for c in measured["cycles"]])
    print("counters of the first token without pauses:", measured["cycles"][0])
    print("cycles with pauses:", [(c["total"], c["stall"]) for c in measured["paused"]])
