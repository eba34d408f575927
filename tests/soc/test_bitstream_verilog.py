"""The accelerator's Verilog the bitstreams start from (``soc.boards.layer_system``: the
16 x 32 layer engine behind its register file and DMA) passes Verilator's lint with every
warning on (``sim.verilator.lint``, the project's waivers); the boards' SoCs themselves
go through Yosys in ``make bitstream`` (a bench)."""

import pytest

pytestmark = [pytest.mark.verilator, pytest.mark.slow]


def test_the_bitstreams_accelerator_lints_clean(tmp_path):
    from amaranth.back import verilog

    from ternary_accel.sim.verilator import lint
    from ternary_accel.soc.boards import ENGINE, layer_system
    system = layer_system()
    assert (system.params.lanes, system.params.rows) == (ENGINE["lanes"], ENGINE["rows"])
    path = tmp_path / "layer_system.v"
    path.write_text(verilog.convert(system, name="layer_system"))
    status, messages = lint(path, top="layer_system", extra_args=["-Wno-CASEINCOMPLETE"])
    assert status == 0, messages[-3000:]
    assert "%Warning" not in messages, messages[-3000:]
