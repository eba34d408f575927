"""The matmul unit's result buffer: a FIFO whose output register loads on one LUT.

``amaranth.lib.fifo.SyncFIFOBuffered`` loads its output register on a function of the
inner FIFO's level, two LUT levels deep, and that enable fans out to every bit of an
M-result word (368 flip-flops at M = 16, K = 32): it was the unit's critical path on ECP5.
Here the output register loads on ``~valid | ready`` (one LUT of two flip-flops) and the
inner :class:`~amaranth.lib.fifo.SyncFIFO` (read combinationally from LUT RAM) pops on the
same condition, so its level logic stays off the wide enable.
"""

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from ternary_accel.hw.params import check_positive_int

__all__ = ["ResultBuffer"]




class ResultBuffer(wiring.Component):
    """A ``depth + 1`` word FIFO: ``depth`` words of LUT RAM and an output register.

    Parameters
    ----------
    width : int
        Bits per word.
    depth : int
        Words in the RAM (the output register holds one more).

    Attributes
    ----------
    w : stream, in
        Words in; ``w.ready`` is low while the RAM is full.
    r : stream, out
        Words out, ``RESULT_BUFFER_LATENCY`` cycles after they were written (empty buffer).
    """

    def __init__(self, *, width, depth):
        self._width = check_positive_int("width", width)
        self._depth = check_positive_int("depth", depth)
        super().__init__({
            "w": In(stream.Signature(unsigned(width))),
            "r": Out(stream.Signature(unsigned(width))),
        })

    @property
    def width(self):
        return self._width

    @property
    def depth(self):
        return self._depth

    def elaborate(self, platform):
        m = Module()
        m.submodules.ram = ram = SyncFIFO(width=self._width, depth=self._depth)
        m.d.comb += [
            ram.w_data.eq(self.w.payload),
            ram.w_en.eq(self.w.valid),
            self.w.ready.eq(ram.w_rdy),
        ]
        load = Signal()
        m.d.comb += [load.eq(~self.r.valid | self.r.ready), ram.r_en.eq(load)]
        with m.If(load):
            m.d.sync += [self.r.valid.eq(ram.r_rdy), self.r.payload.eq(ram.r_data)]
        return m
