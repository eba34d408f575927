"""The matmul unit's result buffer: a FIFO whose output register loads on one LUT.

``amaranth.lib.fifo.SyncFIFOBuffered`` loads its output register on a function of the
inner FIFO's level, two LUT levels deep, and that enable fans out to every bit of an
M-result word (368 flip-flops at M = 16, K = 32): it was the unit's critical path on ECP5.
Here the output register loads on ``~valid | ready`` (one LUT of two flip-flops) and the
FIFO in LUT RAM in front of it (read combinationally) pops on the same condition. Its
"not empty" and "not full" are registers computed a cycle ahead beside the word count,
and the count itself selects its increment or decrement (no adder behind the
handshake): ``amaranth.lib.fifo.SyncFIFO``'s level update, an add and a subtract after
the output handshake, was the 16 x 32 unit's next critical path.
"""

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
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
        depth = self._depth
        m.submodules.ram = ram = Memory(shape=unsigned(self._width), depth=depth, init=[])
        write, read = ram.write_port(), ram.read_port(domain="comb")
        write_ptr = Signal(range(depth), name="write_ptr")
        read_ptr = Signal(range(depth), name="read_ptr")
        count = Signal(range(depth + 1), name="level")
        nonempty = Signal(name="nonempty")           # count != 0
        room = Signal(name="room", init=1)           # count != depth
        push = Signal()
        pop = Signal()
        load = Signal()
        m.d.comb += [
            load.eq(~self.r.valid | self.r.ready),
            push.eq(self.w.valid & room),
            pop.eq(load & nonempty),
            self.w.ready.eq(room),
            write.addr.eq(write_ptr), write.data.eq(self.w.payload), write.en.eq(push),
            read.addr.eq(read_ptr),
        ]

        def advance(pointer):
            return Mux(pointer == depth - 1, 0, pointer + 1)

        up, down = push & ~pop, pop & ~push
        m.d.sync += [
            count.eq(Mux(up, count + 1, Mux(down, count - 1, count))),
            nonempty.eq(push | Mux(pop, count != 1, count != 0)),
            room.eq(pop | Mux(push, count != depth - 1, count != depth)),
        ]
        with m.If(push):
            m.d.sync += write_ptr.eq(advance(write_ptr))
        with m.If(pop):
            m.d.sync += read_ptr.eq(advance(read_ptr))
        with m.If(load):
            m.d.sync += [self.r.valid.eq(nonempty), self.r.payload.eq(read.data)]
        return m
