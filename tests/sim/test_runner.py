"""The cocotb regression under Verilator, one pytest case per design configuration.

Each case builds the configuration's Verilog, compiles it with Verilator and runs every
test of ``sim/tb_matmul.py``; every output word is compared with ``model/``.
"""

import pytest

from ternary_accel.sim.config import REGRESSION_CONFIGS, REGRESSION_MAX_BEATS
from ternary_accel.hw.params import UnitParams
from ternary_accel.sim.runner import run_config
from ternary_accel.sim.verilator import configure_environment, find_verilator


@pytest.mark.verilator
@pytest.mark.parametrize("config", REGRESSION_CONFIGS, ids=lambda c: c.name)
def test_cocotb_regression(config):
    result = run_config(config)
    assert result.tests == 6, f"expected 6 cocotb tests, ran {result.tests}"
    assert result.passed, (f"{config.name}: failed {result.failed}; "
                           f"see build/sim/{config.name}/sim.log")
    assert result.vectors > 300


@pytest.mark.verilator
def test_deeper_tree_pipeline():
    """levels_per_stage > 1 changes the latency; the throughput test checks it exactly."""
    result = run_config(UnitParams(lanes=16, rows=2, levels_per_stage=2, output_stage=True,
                                   max_beats=REGRESSION_MAX_BEATS))
    assert result.passed, result.failed


@pytest.mark.verilator
def test_verilator_is_found_and_recent():
    found = find_verilator()
    assert found.version >= (5, 36)


def test_configure_environment_strips_time_context():
    env = {"PATH": "/usr/bin", "CXXFLAGS": "-O2 -DVL_TIME_CONTEXT"}
    found = configure_environment(env)
    assert "VL_TIME_CONTEXT" not in env["CXXFLAGS"]
    assert env["PATH"].split(":")[0] == str(found.executable.parent)
    if found.root is not None:
        assert env["VERILATOR_ROOT"] == str(found.root)


def test_retry_text_busy():
    """ETXTBSY is retried; any other error, or a lasting ETXTBSY, is raised."""
    import errno
    from ternary_accel.sim.verilator import retry_text_busy
    calls = []

    def busy_twice():
        calls.append(1)
        if len(calls) < 3:
            raise OSError(errno.ETXTBSY, "Text file busy")
        return "ran"

    assert retry_text_busy(busy_twice, delay_s=0) == "ran" and len(calls) == 3
    with pytest.raises(OSError, match="busy"):
        retry_text_busy(lambda: (_ for _ in ()).throw(OSError(errno.ETXTBSY, "busy")),
                        attempts=2, delay_s=0)
    with pytest.raises(FileNotFoundError):
        retry_text_busy(lambda: open("/nonexistent/x"), delay_s=0)


@pytest.mark.verilator
def test_build_is_reused_rebuilt_on_change_and_fails_with_its_log(tmp_path):
    from ternary_accel.sim.verilator import BuildFailed, build_cached
    source = tmp_path / "counter.v"
    design = ("module counter(input clk, output reg [3:0] q);\n"
              "  always @(posedge clk) q <= q + 4'd{step};\nendmodule\n")
    source.write_text(design.format(step=1))
    args = dict(sources=[source], hdl_toplevel="counter", build_dir=tmp_path / "build",
                log_file=tmp_path / "build.log")
    assert build_cached(**args)[1] is True
    binary = tmp_path / "build" / "counter"
    linked = binary.stat().st_mtime_ns
    assert build_cached(**args)[1] is False
    assert binary.stat().st_mtime_ns == linked          # not relinked
    source.write_text(design.format(step=2))
    assert build_cached(**args)[1] is True
    source.write_text("module counter(input clk);\n  wire w = ;\nendmodule\n")
    with pytest.raises(BuildFailed, match="counter.v"):
        build_cached(**args)
