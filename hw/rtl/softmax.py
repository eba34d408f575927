"""The integer softmax of one row of scores at a time, bit for bit
:func:`ternary_accel.model.hwnum.softmax_weights`: the attention unit's normalisation.

Three passes over a row buffer:

1. **in**: the log2-domain scores (``softmax_frac`` fractional bits, ``SCORE_BITS``
   signed) into the buffer, the row maximum kept;
2. **exp**: each ``2**(s - max)``: the exp2 table's entry of the difference's fraction
   (a ROM of ``2**softmax_frac`` entries made from the golden table) shifted right by
   its integer part, rounded half up; written back over the score and summed;
3. one reciprocal of the sum on the :class:`~ternary_accel.hw.rtl.scalar.ScalarUnit`,
   then **out**: each weight ``round(p * r)`` in ``prob_bits`` fractional bits, ``last``
   on the row's last.

A row longer than ``depth`` is refused on ``error`` (consumed, nothing produced).
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ternary_accel.hw.rtl.fixed import shift_round
from ternary_accel.hw.rtl.scalar import RECIPROCAL, ScalarUnit
from ternary_accel.model.hwnum import DEFAULT, SCORE_BITS, HwNumerics, exp2_table

__all__ = ["Softmax", "SCORE_BITS"]



class Softmax(wiring.Component):
    """One row's integer softmax (module docstring).

    Parameters
    ----------
    depth : int
        Scores a row holds at most (the causal prefix: the context).
    numerics : model.hwnum.HwNumerics
    """

    def __init__(self, depth, numerics=DEFAULT):
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive integer, not {depth!r}")
        if not isinstance(numerics, HwNumerics):
            raise TypeError(f"numerics must be an HwNumerics, not {type(numerics).__name__}")
        self.depth, self.numerics = depth, numerics
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"score": signed(SCORE_BITS),
                                                        "last": unsigned(1)}))),
            "o": Out(stream.Signature(data.StructLayout({
                "weight": unsigned(numerics.prob_bits + 1), "last": unsigned(1)}))),
            "error": Out(1),
        })

    def elaborate(self, platform):
        n = self.numerics
        frac, eb, pb = n.softmax_frac, n.exp_bits, n.prob_bits
        m = Module()
        m.submodules.scalar = scalar = ScalarUnit(n)
        table = Memory(shape=unsigned(eb + 1), depth=1 << frac,
                       init=[int(v) for v in exp2_table(frac, eb)])
        row = Memory(shape=signed(SCORE_BITS + 1), depth=self.depth, init=[])
        m.submodules.table, m.submodules.row = table, row
        entry = table.read_port(domain="comb")
        write, read = row.write_port(), row.read_port(domain="comb")

        count = Signal(range(self.depth + 2))
        index = Signal(range(self.depth + 1))
        peak = Signal(signed(SCORE_BITS))
        total = Signal(eb + 1 + self.depth.bit_length())
        r = Signal(scalar.mant_width)
        r_exp = Signal(signed(len(scalar.o.payload.exp)))

        # exp: 2**-(max - s) from the table and a shift
        diff = Signal(SCORE_BITS + 1)
        m.d.comb += [diff.eq(peak - read.data), read.addr.eq(index),
                     entry.addr.eq(diff[:frac])]
        whole = Signal(range(eb + 3))
        m.d.comb += whole.eq(Mux(diff[frac:] > eb + 2, eb + 2, diff[frac:]))
        p = Signal(eb + 1)
        m.d.comb += p.eq(shift_round(entry.data, whole))
        # out: round(p * r * 2**(e + pb))
        weight = Signal(len(p) + len(r) + 1)
        m.d.comb += weight.eq(shift_round(read.data.as_unsigned()[:eb + 1] * r, -(r_exp + pb)))
        m.d.comb += [self.o.payload.weight.eq(weight),
                     self.o.payload.last.eq(index == count - 1)]

        with m.FSM():
            with m.State("IN"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    with m.If(count < self.depth):
                        m.d.comb += [write.addr.eq(count), write.data.eq(self.i.payload.score),
                                     write.en.eq(1)]
                    m.d.sync += [count.eq(Mux(count > self.depth, count, count + 1)),
                                 peak.eq(Mux((count == 0) | (self.i.payload.score > peak),
                                             self.i.payload.score, peak))]
                    with m.If(self.i.payload.last):
                        m.d.sync += [index.eq(0), total.eq(0)]
                        m.next = "CHECK"
            with m.State("CHECK"):
                with m.If(count > self.depth):
                    m.d.comb += self.error.eq(1)
                    m.d.sync += count.eq(0)
                    m.next = "IN"
                with m.Else():
                    m.next = "EXP"
            with m.State("EXP"):
                m.d.comb += [write.addr.eq(index), write.data.eq(p), write.en.eq(1)]
                m.d.sync += [total.eq(total + p), index.eq(index + 1)]
                with m.If(index == count - 1):
                    m.next = "RECIPROCAL"
            with m.State("RECIPROCAL"):
                m.d.comb += [scalar.i.valid.eq(1), scalar.i.payload.op.eq(RECIPROCAL),
                             scalar.i.payload.value.eq(total)]
                with m.If(scalar.i.ready):
                    m.next = "WAIT"
            with m.State("WAIT"):
                m.d.comb += scalar.o.ready.eq(1)
                with m.If(scalar.o.valid):
                    m.d.sync += [r.eq(scalar.o.payload.mant), r_exp.eq(scalar.o.payload.exp),
                                 index.eq(0)]
                    m.next = "OUT"
            with m.State("OUT"):
                m.d.comb += self.o.valid.eq(1)
                with m.If(self.o.ready):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == count - 1):
                        m.d.sync += count.eq(0)
                        m.next = "IN"
        return m
