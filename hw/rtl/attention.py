"""The attention unit's two products, bit for bit
:func:`ternary_accel.model.hwnum.attention_scores` and
:func:`~ternary_accel.model.hwnum.attention_values`; with
:class:`~ternary_accel.hw.rtl.softmax.Softmax` between them they make one head's
attention over the cached positions.

* :class:`Scores`: a query head's codes and row factor (``query``, held until the row's
  last key), then one cached key a beat (its ``head_dim`` codes side by side and its
  ``max/qmax`` factor): the exact dot product of the codes (an adder tree), times the
  key's factor (rounded to ``scale_bits``), times the row's factor, rounded half up,
  saturated to ``SCORE_BITS``; one score a beat, a cycle after its key.
* :class:`Values`: one softmax weight and one cached value (codes and factor) a beat:
  the weight times the position's factor, rounded, times each code, summed over the
  row; at the row's last beat the ``head_dim`` sums, shifted to the residual format,
  leave as one vector.
"""

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ternary_accel.hw.rtl.fixed import shift_round
from ternary_accel.hw.rtl.scalar import EXP_WIDTH
from ternary_accel.model.hwnum import DEFAULT, SCORE_BITS

__all__ = ["Scores", "Values"]


class Scores(wiring.Component):
    """Log2-domain scores of one query head against cached keys (module docstring).

    Parameters
    ----------
    head_dim : int
    numerics : model.hwnum.HwNumerics
        ``qk_bits`` (the codes), ``scale_bits`` (the factors).
    """

    def __init__(self, head_dim, numerics=DEFAULT):
        if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 1:
            raise ValueError(f"head_dim must be a positive integer, not {head_dim!r}")
        self.head_dim, self.numerics = head_dim, numerics
        c, s = numerics.qk_bits, numerics.scale_bits
        codes = data.ArrayLayout(signed(c), head_dim)
        factor = {"mant": unsigned(s + 1), "exp": signed(EXP_WIDTH + 2)}
        super().__init__({
            "query": In(data.StructLayout({"codes": codes, **factor})),
            "keys": In(stream.Signature(data.StructLayout({"codes": codes, **factor,
                                                           "last": unsigned(1)}))),
            "o": Out(stream.Signature(data.StructLayout({"score": signed(SCORE_BITS),
                                                         "last": unsigned(1)}))),
            "saturated": Out(1),
        })

    def elaborate(self, platform):
        n = self.numerics
        s = n.scale_bits
        m = Module()
        key = self.keys.payload
        dot = Signal(signed(2 * n.qk_bits + self.head_dim.bit_length()))
        m.d.comb += dot.eq(sum(self.query.codes[d] * key.codes[d]
                               for d in range(self.head_dim)))
        p1 = shift_round(dot * key.mant.as_signed(), Const(s, signed(8)))
        shift = Signal(signed(EXP_WIDTH + 4))
        m.d.comb += shift.eq(-(key.exp + s + self.query.exp))
        score = shift_round(p1 * self.query.mant.as_signed(), shift)
        low, high = -(1 << (SCORE_BITS - 1)), (1 << (SCORE_BITS - 1)) - 1
        clipped = Signal()
        valid = Signal()
        advance = ~valid | self.o.ready                   # one output register
        m.d.comb += [self.keys.ready.eq(advance), self.o.valid.eq(valid),
                     self.saturated.eq(valid & self.o.ready & clipped)]
        with m.If(advance):
            m.d.sync += [valid.eq(self.keys.valid),
                         self.o.payload.score.eq(Mux(score > high, high,
                                                     Mux(score < low, low, score))),
                         self.o.payload.last.eq(key.last),
                         clipped.eq((score > high) | (score < low))]
        return m


class Values(wiring.Component):
    """The softmax-weighted sum of one head's cached value codes (module docstring).

    Parameters
    ----------
    head_dim : int
    depth : int
        Positions a row holds at most (sizes the sums).
    numerics : model.hwnum.HwNumerics
        ``v_bits``, ``prob_bits``, ``scale_bits``, ``resid_bits``.
    """

    def __init__(self, head_dim, depth, numerics=DEFAULT):
        for name, value in (("head_dim", head_dim), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        self.head_dim, self.depth, self.numerics = head_dim, depth, numerics
        n = numerics
        s = n.scale_bits
        self.weighted_width = n.prob_bits + 2 + s + 2 + n.resid_bits
        self.sum_width = self.weighted_width + n.v_bits + depth.bit_length() + 1
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "weight": unsigned(n.prob_bits + 1),
                "codes": data.ArrayLayout(signed(n.v_bits), head_dim),
                "mant": unsigned(s + 1), "exp": signed(EXP_WIDTH + 2),
                "last": unsigned(1)}))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(self.sum_width), head_dim))),
        })

    def elaborate(self, platform):
        n = self.numerics
        m = Module()
        beat = self.i.payload
        weighted = shift_round(beat.weight * beat.mant, -beat.exp)
        sums = [Signal(signed(self.sum_width), name=f"sum{d}") for d in range(self.head_dim)]
        result = Signal(data.ArrayLayout(signed(self.sum_width), self.head_dim))
        full = Signal()
        m.d.comb += [self.o.valid.eq(full), self.o.payload.eq(result),
                     self.i.ready.eq(~full)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += full.eq(0)
        with m.If(self.i.valid & self.i.ready):
            for d in range(self.head_dim):
                total = sums[d] + weighted * beat.codes[d]
                with m.If(beat.last):
                    m.d.sync += [sums[d].eq(0),
                                 result[d].eq((total + (1 << (n.prob_bits - 1)))
                                              >> n.prob_bits)]
                with m.Else():
                    m.d.sync += sums[d].eq(total)
            with m.If(beat.last):
                m.d.sync += full.eq(1)
        return m
