"""The result buffer (``hw.rtl.buffer.ResultBuffer``) against a reference built on
``amaranth.lib.fifo.SyncFIFO`` (the buffer's earlier form): the same ``w.ready``,
``r.valid`` and ``r.payload`` every cycle under random writes and stalls."""

import numpy as np
import pytest
from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from ternary_accel.hw.rtl.buffer import ResultBuffer
from ternary_accel.hw.timing import RESULT_BUFFER_LATENCY


class ReferenceBuffer(wiring.Component):
    """The output register on ``~valid | ready`` after a ``SyncFIFO``."""

    def __init__(self, *, width, depth):
        self._width, self._depth = width, depth
        super().__init__({"w": In(stream.Signature(unsigned(width))),
                          "r": Out(stream.Signature(unsigned(width)))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.ram = ram = SyncFIFO(width=self._width, depth=self._depth)
        m.d.comb += [ram.w_data.eq(self.w.payload), ram.w_en.eq(self.w.valid),
                     self.w.ready.eq(ram.w_rdy)]
        load = Signal()
        m.d.comb += [load.eq(~self.r.valid | self.r.ready), ram.r_en.eq(load)]
        with m.If(load):
            m.d.sync += [self.r.valid.eq(ram.r_rdy), self.r.payload.eq(ram.r_data)]
        return m


class Pair(wiring.Component):
    """Both buffers on the same inputs."""

    def __init__(self, width, depth):
        self.dut = ResultBuffer(width=width, depth=depth)
        self.ref = ReferenceBuffer(width=width, depth=depth)
        super().__init__({"valid": In(1), "payload": In(width), "ready": In(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut, m.submodules.ref = self.dut, self.ref
        for buffer in (self.dut, self.ref):
            m.d.comb += [buffer.w.valid.eq(self.valid), buffer.w.payload.eq(self.payload),
                         buffer.r.ready.eq(self.ready)]
        return m


@pytest.mark.parametrize("depth", [1, 3, 10])
@pytest.mark.parametrize("write_rate, read_rate", [(0.9, 0.3), (0.3, 0.9), (0.7, 0.7)])
def test_result_buffer_equals_the_sync_fifo_reference(depth, write_rate, read_rate):
    rng = np.random.default_rng(depth * 100 + int(10 * write_rate))
    pair = Pair(12, depth)
    seen = []

    async def bench(ctx):
        for cycle in range(400):
            ctx.set(pair.valid, int(rng.random() < write_rate))
            ctx.set(pair.payload, int(rng.integers(0, 1 << 12)))
            ctx.set(pair.ready, int(rng.random() < read_rate))
            dut, ref = pair.dut, pair.ref
            state = [ctx.get(x) for x in (dut.w.ready, dut.r.valid)]
            assert state == [ctx.get(x) for x in (ref.w.ready, ref.r.valid)], cycle
            if state[1]:
                assert ctx.get(dut.r.payload) == ctx.get(ref.r.payload), cycle
                seen.append(ctx.get(pair.ready))
            await ctx.tick()

    sim = Simulator(pair)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert sum(seen) > 20


def test_result_buffer_latency():
    dut = ResultBuffer(width=8, depth=4)

    async def bench(ctx):
        ctx.set(dut.r.ready, 1)
        ctx.set(dut.w.payload, 0x5A)
        ctx.set(dut.w.valid, 1)
        await ctx.tick()
        ctx.set(dut.w.valid, 0)
        for _ in range(RESULT_BUFFER_LATENCY - 1):
            assert not ctx.get(dut.r.valid)
            await ctx.tick()
        assert ctx.get(dut.r.valid) and ctx.get(dut.r.payload) == 0x5A

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
