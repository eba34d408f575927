"""RoPE of one head vector at a time, bit for bit
:func:`ternary_accel.model.hwnum.rope_rotate` with the tables of
:func:`~ternary_accel.model.hwnum.rope_table`.

Non-interleaved RoPE rotates the pairs ``(x[i], x[i + h])`` (``h = head_dim / 2``) by
the angle of frequency ``i`` at the vector's position::

    out[i]     = round(x[i] cos - x[i + h] sin)
    out[i + h] = round(x[i + h] cos + x[i] sin)

The unit takes the vector one element a beat (``position`` held still during it): the
first half goes into a buffer; each element of the second half completes a pair, whose
first result leaves at once and whose second waits in a second buffer until the first
half's results have left. The cos/sin table (``max_positions x h`` entries of
``rope_bits`` bits each, a ROM made from the golden model's table) is read once a pair,
synchronously (a block RAM), its address the pair of the next cycle.
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ternary_accel.model.hwnum import DEFAULT, HwNumerics, rope_table

__all__ = ["Rope"]


class Rope(wiring.Component):
    """RoPE of head vectors (module docstring).

    Parameters
    ----------
    head_dim : int
        Elements of a vector (even).
    max_positions : int
        Positions the table holds.
    theta : float
        RoPE's base.
    numerics : model.hwnum.HwNumerics
        ``resid_bits``, ``rope_bits``.
    """

    def __init__(self, head_dim, max_positions, theta, numerics=DEFAULT):
        for name, value in (("head_dim", head_dim), ("max_positions", max_positions)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if head_dim % 2:
            raise ValueError(f"head_dim must be even, not {head_dim}")
        if not isinstance(numerics, HwNumerics):
            raise TypeError(f"numerics must be an HwNumerics, not {type(numerics).__name__}")
        self.head_dim, self.max_positions, self.theta = head_dim, max_positions, theta
        self.numerics = numerics
        w = numerics.resid_bits
        super().__init__({
            "i": In(stream.Signature(signed(w))),
            "position": In(range(max_positions)),
            "o": Out(stream.Signature(data.StructLayout({"value": signed(w),
                                                         "last": unsigned(1)}))),
            "saturated": Out(1),
        })

    def elaborate(self, platform):
        n = self.numerics
        h = self.head_dim // 2
        w, rb = n.resid_bits, n.rope_bits
        low, high = -(1 << (w - 1)), (1 << (w - 1)) - 1
        m = Module()
        cos, sin = rope_table(self.head_dim, self.theta, self.max_positions, rb)
        pairs = data.StructLayout({"cos": signed(rb), "sin": signed(rb)})
        table = Memory(shape=pairs, depth=self.max_positions * h,
                       init=[{"cos": int(cos[p, i]), "sin": int(sin[p, i])}
                             for p in range(self.max_positions) for i in range(h)])
        m.submodules.table = table
        # Read synchronously (a block RAM): the address is the pair the next cycle needs,
        # so each cycle's entry is the current pair's, with no cycle lost.
        entry = table.read_port()
        first = Memory(shape=signed(w), depth=h, init=[])
        second = Memory(shape=signed(w), depth=h, init=[])
        m.submodules.first, m.submodules.second = first, second
        first_w, first_r = first.write_port(), first.read_port(domain="comb")
        second_w, second_r = second.write_port(), second.read_port(domain="comb")

        index = Signal(range(h + 1))
        following = Signal(range(h + 1))        # index after this cycle's transfer
        step = Signal()                          # a transfer moves the index this cycle
        kept_saturated = Signal(h)              # which kept second-half results clipped
        m.d.comb += [following.eq(Mux(step, Mux(index == h - 1, 0, index + 1), index)),
                     entry.addr.eq(self.position * h + following), first_r.addr.eq(index),
                     second_r.addr.eq(index)]
        m.d.sync += index.eq(following)

        def rounded(value):
            out = (value + (1 << (rb - 3))) >> (rb - 2)
            return Mux(out > high, high, Mux(out < low, low, out)), (out > high) | (out < low)

        x_low, x_high = first_r.data, self.i.payload
        lo, lo_sat = rounded(x_low * entry.data.cos - x_high * entry.data.sin)
        hi, hi_sat = rounded(x_high * entry.data.cos + x_low * entry.data.sin)
        with m.FSM():
            with m.State("FIRST"):                  # the first half into the buffer
                m.d.comb += [self.i.ready.eq(1), first_w.addr.eq(index),
                             first_w.data.eq(self.i.payload), first_w.en.eq(self.i.valid)]
                with m.If(self.i.valid):
                    m.d.comb += step.eq(1)
                    with m.If(index == h - 1):
                        m.next = "PAIRS"
            with m.State("PAIRS"):                  # a pair a beat: out[i] now, out[i+h] kept
                m.d.comb += [self.o.valid.eq(self.i.valid), self.o.payload.value.eq(lo),
                             self.o.payload.last.eq(0), self.i.ready.eq(self.o.ready),
                             second_w.addr.eq(index), second_w.data.eq(hi),
                             second_w.en.eq(self.i.valid & self.o.ready),
                             self.saturated.eq(self.i.valid & self.o.ready & lo_sat)]
                with m.If(self.i.valid & self.o.ready):
                    m.d.comb += step.eq(1)
                    m.d.sync += kept_saturated.bit_select(index, 1).eq(hi_sat)
                    with m.If(index == h - 1):
                        m.next = "SECOND"
            with m.State("SECOND"):                 # the kept second half out
                m.d.comb += [self.o.valid.eq(1), self.o.payload.value.eq(second_r.data),
                             self.o.payload.last.eq(index == h - 1),
                             self.saturated.eq(self.o.ready
                                               & kept_saturated.bit_select(index, 1))]
                with m.If(self.o.ready):
                    m.d.comb += step.eq(1)
                    with m.If(index == h - 1):
                        m.next = "FIRST"
        return m

