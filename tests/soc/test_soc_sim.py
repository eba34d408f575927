"""The accelerator in the simulated LiteX SoC (``soc/sim.py``, ``soc/accelerator.py``,
``ternary-accel soc-sim``): the runner's pieces without the simulator (main RAM's
image, the firmware's report, the checksum, the verdict, the wrapper's port mapping,
the SoC's buses and interrupt before a build), and one run of the whole flow under
Verilator (the layer workload: the BIOS, the firmware, every output bit-exact)."""

import importlib.util
import re

import pytest

from cli_runner import invoke, usage_error
from ternary_accel.soc.sim import (END_MARKER, MAIN_RAM_BASE, Report, SocSimError,
                                   check_tools, fnv1a32, parse_report, ram_image,
                                   ram_words)

HAS_LITEX = all(importlib.util.find_spec(name) is not None
                for name in ("litex", "litedram", "migen"))
needs_litex = pytest.mark.skipif(not HAS_LITEX, reason="the soc extra is not installed")


def _fnv1a_bytes(data):
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) % 2**32
    return h


def test_checksum_is_fnv1a_of_the_words_little_endian_bytes():
    assert fnv1a32([]) == 0x811C9DC5
    words = [0, 1, 0xFFFF_FFFF, 0x1234_5678, 0x8000_0000]
    raw = b"".join(w.to_bytes(4, "little") for w in words)
    assert fnv1a32(words) == _fnv1a_bytes(raw)
    assert _fnv1a_bytes(b"a") == 0xE40C292C         # the published FNV-1a test vector


def test_ram_image_places_the_firmware_and_the_data():
    image = ram_image(b"\x01\x02", {MAIN_RAM_BASE + 8: b"\xAA\xBB", MAIN_RAM_BASE + 4: b"\x05"})
    assert image == b"\x01\x02\x00\x00\x05\x00\x00\x00\xAA\xBB"
    assert ram_words(image) == [0x0201, 0x05, 0xBBAA]


@pytest.mark.parametrize("placements, message", [
    ({MAIN_RAM_BASE - 4: b"x"}, "below main RAM"),
    ({MAIN_RAM_BASE + 1: b"x"}, "overlaps the firmware"),
    ({MAIN_RAM_BASE + 8: b"xxxx", MAIN_RAM_BASE + 10: b"y"}, "overlaps"),
])
def test_ram_image_refuses_overlaps(placements, message):
    with pytest.raises(ValueError, match=message):
        ram_image(b"\x00\x00", placements)


CONSOLE = """\
[clocker] sys_clk: freq_hz=1000000, phase_deg=0
out[0]: 0xdeadbeef   (a BIOS line that looks like a report)
--============= Liftoff! ===============--

ternary-accel soc-sim firmware
accel.id: 0xb1587e1a
polls: 14
cycles.total: 524
out[0]: 0x00000001
out[1]: 0xffffffff
checksum: 0x{checksum:08x}
status: 0
{end}
- sim.v:9912: Verilog $finish
"""


def test_parse_report_reads_the_firmwares_lines_only():
    report = parse_report(CONSOLE.format(checksum=fnv1a32([1, 0xFFFF_FFFF]),
                                         end=END_MARKER))
    assert report.ended
    assert report.outputs == [1, 0xFFFF_FFFF]
    assert report.checksum == fnv1a32([1, 0xFFFF_FFFF])
    assert report.number("accel.id") == 0xB1587E1A
    assert report.number("cycles.total") == 524
    assert report.number("missing") is None


def test_parse_report_without_the_end_marker_or_with_a_gap():
    assert not parse_report(CONSOLE.format(checksum=0, end="")).ended
    with pytest.raises(SocSimError, match="in order"):
        parse_report("ternary-accel soc-sim firmware\nout[0]: 0x1\nout[2]: 0x2\n")


def _workload(outputs, expect=None):
    from ternary_accel.cli.soc import Workload
    return Workload("layer", None, "layer", {}, {}, outputs, expect or {}, "")


def test_compare_verdicts():
    from ternary_accel.cli.soc import compare
    good = Report(outputs=[1, 2, 3], checksum=fnv1a32([1, 2, 3]), ended=True)
    assert compare(good, _workload([1, 2, 3])) == (True, ["bit-exact: 3 outputs"])
    bad = Report(outputs=[1, 5, 7], checksum=fnv1a32([1, 5, 7]), ended=True)
    ok, lines = compare(bad, _workload([1, 2, 3]))
    assert not ok and lines == ["mismatch: output 1: got 0x00000005, expected 0x00000002 "
                                "(2 of 3 differ)"]
    assert len(compare(bad, _workload([1, 2, 3]), keep_going=True)[1]) == 2
    short = Report(outputs=[1, 2], checksum=fnv1a32([1, 2]), ended=True)
    assert compare(short, _workload([1, 2, 3]))[1] == ["mismatch: 2 outputs printed, 3 "
                                                       "expected"]
    wrong_sum = Report(outputs=[1, 2, 3], checksum=0, ended=True)
    assert "checksum" in compare(wrong_sum, _workload([1, 2, 3]))[1][0]
    token = Report(values={"token": "7"}, outputs=[1], checksum=fnv1a32([1]), ended=True)
    assert compare(token, _workload([1], {"token": 8}))[1] == ["mismatch: token 7, "
                                                               "expected 8"]


def _layer_system():
    from ternary_accel.hw.params import EngineParams
    from ternary_accel.hw.rtl.layer_system import LayerSystem
    params = EngineParams(lanes=8, rows=8, tokens=4, weight_port_bits=64, max_beats=16)
    return LayerSystem(params, 64, 64, addr_width=32)


def test_the_wrappers_view_of_a_system_component():
    from ternary_accel.soc.accelerator import channel_field, dma_widths, system_ports
    assert channel_field("awaddr") == ("aw", "addr")
    assert channel_field("wdata") == ("w", "data")
    assert channel_field("rlast") == ("r", "last")
    assert channel_field("arid") == ("ar", "id")
    with pytest.raises(ValueError, match="not an AXI port"):
        channel_field("irq")
    system = _layer_system()
    ports = system_ports(system)
    assert ports["s_axil_awaddr"] == (False, 12) and ports["s_axil_rdata"] == (True, 32)
    assert ports["irq"] == (True, 1)
    assert dma_widths(system) == (32, 64, system.dma.id_width)
    with pytest.raises(TypeError, match="wiring.Component"):
        system_ports(object())


@needs_litex
@pytest.mark.slow
def test_add_accelerator_on_a_litex_soc(tmp_path):
    from litex.build.generic_platform import Pins
    from litex.build.sim import SimPlatform
    from litex.soc.integration.soc_core import SoCCore
    from migen.genlib.io import CRG

    from ternary_accel.soc.accelerator import add_accelerator
    platform = SimPlatform("SIM", [("sys_clk", 0, Pins(1))])
    soc = SoCCore(platform, clk_freq=1_000_000, cpu_type="vexriscv", uart_name="stub",
                  integrated_rom_size=0x8000, integrated_main_ram_size=0x1_0000)
    soc.crg = CRG(platform.request("sys_clk"))
    with pytest.raises(ValueError, match="LiteDRAM"):
        add_accelerator(soc, _layer_system(), verilog_dir=tmp_path, dma="sdram")
    accel = add_accelerator(soc, _layer_system(), name="accel", base=0x9000_0000,
                            verilog_dir=tmp_path)
    assert accel.dma == "bus" and accel.axi.data_width == 64
    region = soc.bus.regions["accel"]
    assert (region.origin, region.size, region.cached) == (0x9000_0000, 0x1000, False)
    assert "accel" in soc.bus.slaves and "accel_dma" in soc.bus.masters
    assert "accel" in soc.irq.locs
    text = (tmp_path / "ternary_accel_accel.v").read_text()
    assert re.search(r"module ternary_accel_accel\s*\(", text)


def test_usage_errors_are_one_line():
    usage_error(invoke("soc-sim", "--jobs", "0"), "--jobs")
    usage_error(invoke("soc-sim", "--workload", "nope"), "--workload")
    usage_error(invoke("soc-sim", "--tokens", "9"), "--tokens", "at most 4")
    usage_error(invoke("soc-sim", "--workload", "token", "--token", "48"), "--token")
    usage_error(invoke("soc-sim", "--bogus"), "--bogus")


@pytest.mark.verilator
@pytest.mark.xdist_group("soc-sim")
@pytest.mark.skipif(not HAS_LITEX or bool(check_tools()),
                    reason="the soc extra or the Debian tools (make soc-tools) are missing")
def test_layer_through_the_soc_bit_exact():
    # the build folder of make soc-sim: a warm cache makes this a run of seconds
    result = invoke("soc-sim", "--workload", "layer")
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout
    lines = result.stdout.splitlines()
    assert lines[-1] == "bit-exact: 128 outputs", result.stdout
    assert "accel.id: 0xb1587e1a" in lines
    assert "irq.line: 1" in lines and "irq.cpu_pending: 1" in lines
    cycles = {k: int(v) for k, v in (line.split(": ") for line in lines
                                      if line.startswith("cycles."))}
    assert cycles["cycles.total"] >= cycles["cycles.load"] + cycles["cycles.run"] > 0
    print(result.stderr[-1500:])


def _fake_model(tmp_path, script):
    from ternary_accel.soc.sim import SocSimulation
    sim = SocSimulation(None, firmware="layer", build_dir=tmp_path, headers={}, name="fake")
    model = sim.gateware_dir / "obj_dir" / "Vsim"
    model.parent.mkdir(parents=True)
    model.write_text("#!/bin/sh\n" + script)
    model.chmod(0o755)
    return sim


def test_run_stops_a_simulator_that_does_not_end_after_the_marker(tmp_path):
    sim = _fake_model(tmp_path, f"echo 'ternary-accel soc-sim firmware'\necho 'out[0]: 0x5'\n"
                                f"printf '{END_MARKER}\\nlast'\nsleep 60\n")
    seen = []
    run = sim.run(timeout_s=30, echo=seen.append, grace_s=0.3)
    assert run.ended and run.seconds < 10 and run.returncode != 0
    assert seen[-2:] == [END_MARKER, "last"] and run.console.endswith("last")
    assert parse_report(run.console).outputs == [5]
    assert (tmp_path / "fake" / "console.log").read_text().startswith("ternary-accel")


def test_run_times_out_without_the_marker(tmp_path):
    sim = _fake_model(tmp_path, "echo 'booting'\nsleep 60\n")
    run = sim.run(timeout_s=0.5)
    assert not run.ended and run.console == "booting" and run.seconds < 10


@needs_litex
@pytest.mark.slow
def test_the_simulated_socs_accelerator_is_on_a_litedram_port(tmp_path):
    from ternary_accel.soc.sim import SocSimulation
    sim = SocSimulation(_layer_system(), firmware="layer", build_dir=tmp_path, headers={})
    soc = sim._make_soc([0])
    assert soc.accel.dma == "sdram"
    # a crossbar port at the DMA's width (64 bits, over the 32-bit SDRAM's controller)
    assert soc.accel.port.data_width == soc.accel.axi.data_width == 64
    assert soc.bus.regions["main_ram"].origin == MAIN_RAM_BASE
    assert soc.bus.regions["accel"].size == 0x1000 and not soc.bus.regions["accel"].cached
    assert "accel" in soc.irq.locs and hasattr(soc, "sim_finish")
