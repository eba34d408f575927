"""cocotb bench of the layer engine in a system (:class:`hw.rtl.layer_system.LayerSystem`)
under Verilator: the host is cocotbext-axi's ``AxiLiteMaster`` on ``s_axil_*`` driving
:class:`hw.layer_host.LayerHost` (through cocotb's bridge), DRAM an ``AxiRam`` on
``m_axi_*`` with random pauses on its five channels and the master's, every output word
checked against :func:`hw.layer_host.golden_layer`. ``tests/sim/test_layer_system.py``
builds the design and passes ``TB_LAYER`` (JSON: the engine's ``lanes``, ``rows``,
``tokens``, ``port_bits``, the ``bus_bits``, ``act_words``, ``max_beats``, and
``results``, a JSON file the cycles are written to; with ``"layers"``, a list of
``[out_features, in_features, tokens]``, the bench ``projection`` runs them and records
their cycles, for ``ternary-accel bench layer-system``).

Tests: layers of several shapes and token counts under backpressure (and the
interrupt); the cycles without pauses; refused starts (zero or too large shapes, an
unaligned base: ``ERROR.shape``/``align``, done at once, DRAM untouched); bus errors
(SLVERR on the weights, on the outputs, a base past the memory) ending the layer with
``done`` and ``ERROR_ADDR``; start while busy; a soft reset in mid-burst; each followed by
a correct layer.
"""

import json
import os

import cocotb
import numpy as np
from cocotb.task import bridge, resume
from cocotb.triggers import RisingEdge

from ternary_accel.hw.driver import Registers
from ternary_accel.hw.layer_host import LayerError, LayerHost, golden_layer, layer_images
from ternary_accel.hw.params import EngineParams
from ternary_accel.hw.regmap import LAYER_REGMAP
from ternary_accel.sim.tb.axi_lite import CocotbBackend
from ternary_accel.sim.tb.system import buses, soft_reset

#: A test's limit of simulated time.
TIMEOUT_US = 200_000
#: DRAM: the AxiRam's bytes, where the layouts start.
RAM_SIZE = 1 << 20
BASE = 0x1000


def settings():
    return json.loads(os.environ.get("TB_LAYER", "{}"))


def _record(name, value):
    path = settings().get("results")
    if path:
        data = json.loads(open(path).read()) if os.path.exists(path) else {}
        data[name] = value
        with open(path, "w") as f:
            json.dump(data, f)


def params():
    """The engine the design was built with."""
    s = settings()
    return EngineParams(lanes=s["lanes"], rows=s["rows"], tokens=s["tokens"],
                        weight_port_bits=s["port_bits"],
                        max_beats=s.get("max_beats", EngineParams.max_beats))


def make_layer(out_features, in_features, tokens, seed):
    """Random ternary weights, int8 activations over the full range (extremes
    included), scales and shifts that keep most outputs inside 16 bits (some
    saturate)."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-1, 2, size=(out_features, in_features))
    x = rng.integers(-128, 128, size=(tokens, in_features))
    x[0, :2] = [-128, 127]
    scale = rng.integers(1, 1 << 16, size=tokens)
    shift = rng.integers(8, 20, size=tokens)
    return w, x, scale, shift


async def setup(dut, pause=0.0, seed=1):
    """Clock, reset, the host's master and DRAM (paused with probability ``pause`` on
    every channel): ``(ram, host)`` (``host`` made in the bridge)."""
    axil, ram = await buses(dut, pause, seed, settings().get("ram_size", RAM_SIZE))

    @bridge
    def make():
        return LayerHost(Registers(CocotbBackend(axil), LAYER_REGMAP), ram)

    return ram, await make()


def _layer(shape, seed):
    p = params()
    w, x, scale, shift = make_layer(*shape, seed)
    images = layer_images(p, w, x, scale, shift, bus_bits=settings()["bus_bits"])
    return images, images.layout(BASE), golden_layer(w, x, scale, shift)


def _assert_equal(got, expected, what):
    bad = np.argwhere(got != expected)
    assert bad.size == 0, (f"{what}: {len(bad)} outputs differ, first at (token, output) "
                           f"{tuple(bad[0])}: {got[tuple(bad[0])]} != "
                           f"{expected[tuple(bad[0])]}")


def _shapes():
    p = params()
    k, m, t = p.lanes, p.rows, p.tokens
    return [(2 * m, 4 * k, 1), (3 * m, 2 * k, t), (m, 5 * k, max(1, t - 1)),
            (2 * m, k, t)]


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def layers_from_dram_under_backpressure(dut):
    """Layers of several shapes and token counts, pauses on every channel: every output
    word the golden model's; the interrupt rises at done; LOAD + RUN <= TOTAL."""
    _, host = await setup(dut, pause=0.3, seed=1)
    layers = [_layer(shape, seed) for seed, shape in enumerate(_shapes())]

    @bridge
    def run():
        host.regs.IRQ_ENABLE.done = 1
        host.regs.CONTROL.irq_enable = 1
        return [(host.run(images, layout), host.cycles(), int(dut.irq.value))
                for images, layout, _ in layers]

    for (got, cycles, irq), (_, _, expected), shape in zip(await run(), layers, _shapes()):
        _assert_equal(got, expected, f"layer {shape}")
        assert cycles["load"] + cycles["run"] <= cycles["total"], cycles
        assert irq == 1


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def cycles_without_pauses(dut):
    """The layers with DRAM answering at once, the host waiting on the interrupt line:
    outputs checked, cycles recorded (``layers`` of ``TB_LAYER``, or the small ones)."""
    _, host = await setup(dut)
    shapes = [tuple(s) for s in settings().get("layers", [])] or _shapes()

    async def interrupt():
        if not dut.irq.value:
            await RisingEdge(dut.irq)

    host.wait = lambda regs: resume(interrupt)()
    records = []
    for seed, shape in enumerate(shapes):
        images, layout, expected = _layer(shape, 100 + seed)

        @bridge
        def run():
            host.regs.IRQ_ENABLE.done = 1
            host.regs.CONTROL.irq_enable = 1
            return host.run(images, layout), host.cycles()

        got, cycles = await run()
        _assert_equal(got, expected, f"layer {shape}")
        records.append({"shape": list(shape), **cycles})
        dut._log.info("layer %s: %s", shape, cycles)
    _record("cycles", records)


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us",
             skip=bool(settings().get("layers")))
async def refused_starts(dut):
    """Zero beats, tiles or tokens, tokens above T, beats above max_beats, more words
    than the activation buffer, a base not aligned to the bus: each sets its flag,
    ends at once with done and IRQ_STATUS.error, and writes nothing; then a layer runs
    right."""
    ram, host = await setup(dut, pause=0.2, seed=2)
    p, s = params(), settings()
    images, layout, expected = _layer(_shapes()[0], 7)
    out_base, out = layout["OUT"]
    beats, tiles = images.beats, images.tiles
    too_many = s["act_words"] // p.tokens + 1
    cases = [("shape", (0, tiles, 1)), ("shape", (beats, 0, 1)), ("shape", (beats, tiles, 0)),
             ("shape", (beats, tiles, p.tokens + 1)),
             ("shape", (p.max_beats + 1, tiles, 1)),
             ("shape", (too_many, tiles, p.tokens))]

    @bridge
    def run():
        regs, seen = host.regs, []
        host.load(images, layout)
        ram.write(out_base, b"\xa5" * len(out))
        for flag, shape in cases:
            host.describe(*shape)
            host.start()
            seen.append((flag, shape, regs.STATUS.fields(), regs.errors(),
                         regs.IRQ_STATUS.fields()))
        host.describe(beats, tiles, images.tokens)
        regs.set_base("WGT", layout["WGT"][0] + 4)
        host.start()
        seen.append(("align", "WGT + 4", regs.STATUS.fields(), regs.errors(),
                     regs.IRQ_STATUS.fields()))
        untouched = ram.read(out_base, len(out)) == b"\xa5" * len(out)
        regs.set_base("WGT", layout["WGT"][0])
        host.start()
        host.finish()
        return seen, untouched, host.outputs(images)

    seen, untouched, got = await run()
    for flag, shape, status, errors, irq in seen:
        assert status == {"busy": 0, "done": 1}, (shape, status)
        assert errors == [flag], (shape, errors)
        assert irq["error"] == 1 and irq["done"] == 1, (shape, irq)
    assert untouched, "a refused start wrote to DRAM"
    _assert_equal(got, expected, "the layer after the refused starts")


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us",
             skip=bool(settings().get("layers")))
async def bus_errors_end_the_layer(dut):
    """SLVERR on part of the weights, on the outputs, and a base past the memory: the
    layer ends with done, the error flag and ERROR_ADDR in the range (never a hang);
    each time the next layer is the golden model's."""
    ram, host = await setup(dut, pause=0.2, seed=3)
    images, layout, expected = _layer(_shapes()[1], 8)
    wgt_base, wgt = layout["WGT"]
    out_base, _ = layout["OUT"]
    bad_read = (wgt_base + len(wgt) // 2, wgt_base + len(wgt) // 2 + 16)
    bad_write = (out_base, out_base + 16)
    past = settings().get("ram_size", RAM_SIZE) + 0x10000

    def attempt(out, key):
        host.start()
        try:
            host.finish(timeout_s=600)
            out[key] = None
        except LayerError as error:
            out[key] = str(error)
        regs = host.regs
        out[key + "_state"] = (regs.STATUS.fields(), regs.errors(),
                               regs.read("ERROR_ADDR_LO") | regs.read("ERROR_ADDR_HI") << 32)

    @bridge
    def run():
        out = {}
        host.load(images, layout)
        ram.read_faults.append(bad_read)
        attempt(out, "read")
        ram.read_faults.remove(bad_read)
        out["after_read"] = host.run(images, layout)
        ram.write_faults.append(bad_write)
        attempt(out, "write")
        ram.write_faults.remove(bad_write)
        out["after_write"] = host.run(images, layout)
        host.regs.set_base("ACT", past)
        attempt(out, "past")
        out["after_past"] = host.run(images, layout)
        return out

    out = await run()
    for key, flag, (lo, hi) in (("read", "read_error", bad_read),
                                ("write", "write_error", bad_write),
                                ("past", "read_error", (past, past + len(images.images["ACT"])))):
        assert out[key] and flag in out[key], (key, out[key])
        status, errors, addr = out[key + "_state"]
        assert status == {"busy": 0, "done": 1}, (key, status)
        assert flag in errors, (key, errors)
        assert lo <= addr < hi, (key, hex(addr))
        _assert_equal(out["after_" + key], expected, f"the layer after the {key} error")


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us",
             skip=bool(settings().get("layers")))
async def start_while_busy_and_soft_reset(dut):
    """A start while busy sets ERROR.start_busy and leaves the layer alone; a soft reset
    in mid-run (bursts in flight) stops it (not busy, no done) and the next layer is
    right."""
    _, host = await setup(dut, pause=0.2, seed=4)
    images, layout, expected = _layer(_shapes()[2], 9)

    @bridge
    def run():
        regs, out = host.regs, {}
        host.load(images, layout)
        host.start()
        out["busy"] = regs.STATUS.busy
        regs.CONTROL.start = 1                    # refused
        out["flags"] = regs.errors()
        regs.ERROR.start_busy = 1
        host.finish()
        out["first"] = host.outputs(images)
        host.start()
        out["busy_before_reset"] = regs.STATUS.busy
        out["after_reset"] = soft_reset(regs)
        out["second"] = host.run(images, layout)
        return out

    out = await run()
    assert out["busy"] == 1 and out["flags"] == ["start_busy"], out
    _assert_equal(out["first"], expected, "the layer started while busy")
    assert out["busy_before_reset"] == 1
    status, errors, polls = out["after_reset"]
    assert status == {"busy": 0, "done": 0} and errors == [] and polls < 1000, out
    _assert_equal(out["second"], expected, "the layer after the soft reset")
