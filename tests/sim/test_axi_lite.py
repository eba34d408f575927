"""The AXI4-Lite register file under Verilator, driven by cocotbext-axi's
``AxiLiteMaster`` (``sim/tb/axi_lite.py``): reset values, RW read-back through byte
strobes, RO registers, W1C flags, pulses, SLVERR on unmapped addresses, random
backpressure on every channel under concurrent traffic, and the driver's register layer
over the bus. The design carries the identification constants of a token core built for
the micro model (``tests/token_models.py``)."""

import json
import time

import pytest

pytestmark = [pytest.mark.verilator, pytest.mark.xdist_group("axi-lite")]

#: The bench's cocotb tests (``sim/tb/axi_lite.py``).
BENCH_TESTS = 8


def _constants():
    from token_models import micro_decoder
    from ternary_accel.hw.program import make_program, token_engine
    from ternary_accel.hw.regmap import build_constants
    from ternary_accel.hw.rtl.token import TokenCore
    from ternary_accel.model.hwnum import DEFAULT
    program = make_program(micro_decoder(DEFAULT), token_engine(8, 4, hidden=32, ffn=64),
                           positions=8, head_rows=2)
    return build_constants(program, TokenCore(program).word_bits)


def test_axi_lite_register_file_under_cocotbext_axi(tmp_path):
    from amaranth.back import verilog
    from cocotb_tools.runner import get_results

    from ternary_accel.hw.paths import build_path
    from ternary_accel.hw.rtl.axi_lite import RegisterFile
    from ternary_accel.sim.verilator import VERILATOR_WAIVERS, build_cached, retry_text_busy
    started = time.monotonic()
    constants = _constants()
    build_dir = build_path("sim", "axi_lite").resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    top = build_dir / "register_file.v"
    text = verilog.convert(RegisterFile(constants=constants), name="register_file",
                           emit_src=False)
    if not top.exists() or top.read_text() != text:      # keep the build cache warm
        top.write_text(text)
    runner, _ = build_cached(sources=[top], hdl_toplevel="register_file",
                             build_dir=build_dir, build_args=list(VERILATOR_WAIVERS),
                             log_file=build_dir / "build.log")
    built = time.monotonic() - started
    results = tmp_path / "results.xml"
    try:
        retry_text_busy(lambda: runner.test(
            test_module="ternary_accel.sim.tb.axi_lite", hdl_toplevel="register_file",
            build_dir=build_dir, test_dir=tmp_path, results_xml=str(results),
            extra_env={"TB_AXI_LITE": json.dumps({"constants": constants})},
            log_file=tmp_path / "sim.log"))
    except SystemExit:
        pass
    log = (tmp_path / "sim.log").read_text() if (tmp_path / "sim.log").exists() else ""
    assert results.exists(), log[-3000:]
    tests, failed = get_results(results)
    assert (tests, failed) == (BENCH_TESTS, 0), log[-4000:]
    print(f"build {built:.1f} s, total {time.monotonic() - started:.1f} s")
