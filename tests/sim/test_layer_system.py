"""The layer engine in a system (:class:`hw.rtl.layer_system.LayerSystem`: the engine,
its activation buffer, the AXI4-Lite register file and the AXI4 DMA) under Verilator
with cocotbext-axi: :class:`hw.layer_host.LayerHost` over an ``AxiLiteMaster``, DRAM an
``AxiRam`` with random pauses on every channel; layers of several shapes and token
counts bit-exact to the golden model, refused starts, bus errors, start while busy, a
soft reset (``sim/tb/layer_system.py``)."""

import pytest

pytestmark = [pytest.mark.verilator, pytest.mark.xdist_group("layer-system")]

#: The bench's cocotb tests (``sim/tb/layer_system.py``).
BENCH_TESTS = 5
#: A small engine: 8 lanes, 8 rows (a result word is two 64-bit beats), T = 4.
DESIGN = {"lanes": 8, "rows": 8, "tokens": 4, "port_bits": 64, "bus_bits": 64,
          "act_words": 64, "max_beats": 16, "addr_width": 32}


def test_layers_from_dram_through_axi(tmp_path):
    from ternary_accel.sim.layer_system import run_layer_system
    tests, failed, data, log = run_layer_system(DESIGN, tmp_path)
    assert (tests, failed) == (BENCH_TESTS, 0), log[-6000:]
    cycles = data["cycles"]
    assert len(cycles) == 4 and all(c["total"] >= c["load"] + c["run"] for c in cycles)
    print("cycles without pauses:", cycles)
