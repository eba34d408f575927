"""The scalar unit of the hardware numerics: one reciprocal or one reciprocal square root
at a time, bit for bit :func:`ternary_accel.model.hwnum.reciprocal` and
:func:`ternary_accel.model.hwnum.rsqrt`.

These are the per-token (per-row) operations of the vector and attention units: the
absmax quantizer's ``1/max|z|``, the softmax's ``1/sum``, RMSNorm's ``1/sqrt(sum x^2 +
eps)``. They are rare (one a token or a row) and so are computed sequentially by one
small unit:

1. accept ``(op, value)`` (``value`` unsigned, below ``2**VALUE_WIDTH``; 0 is taken as 1,
   whose result it is: the callers substitute 1 for an all-zero row);
2. one cycle: a leading-one detector and a rounding barrel shift normalise ``value`` to
   a mantissa of ``recip_bits`` (reciprocal) or ``rsqrt_bits`` bits with an even
   exponent (rsqrt);
3. reciprocal: a restoring divider, one quotient bit a cycle, ``2**(2P) / m`` over
   ``2P + 1`` cycles, then ``r = (q + 1) >> 1``; rsqrt: the seed table's entry of the
   mantissa's top ``rsqrt_seed_bits`` bits, then each Newton step in three cycles (one
   multiply each: ``y*y``, ``u*y2``, ``y*(3 - u*y2)``, each rounded as the golden model
   rounds);
4. offer ``(mant, exp)`` until taken.

The latency from the accepting edge to the result's ``valid`` is
:func:`ternary_accel.hw.timing.scalar_latency`.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ternary_accel.hw.rtl.fixed import bit_length, shift_round
from ternary_accel.model.hwnum import DEFAULT, HwNumerics, rsqrt_table

__all__ = ["ScalarUnit", "RECIPROCAL", "RSQRT", "VALUE_WIDTH", "EXP_WIDTH"]

#: Operations: ``op`` of the input payload.
RECIPROCAL, RSQRT = 0, 1
#: Bits of an input value (a sum of squares of 24-bit values over 8192 elements is
#: below 2**60; the golden model's shifts hold values below 2**62).
VALUE_WIDTH = 62
#: Signed bits of a result's exponent.
EXP_WIDTH = 10


class ScalarUnit(wiring.Component):
    """One reciprocal or reciprocal square root at a time (module docstring).

    Parameters
    ----------
    numerics : model.hwnum.HwNumerics
        ``recip_bits``, ``rsqrt_bits``, ``rsqrt_seed_bits`` and ``newton_steps``.

    Attributes
    ----------
    i : stream of ``{op, value}``
    o : stream of ``{mant, exp}``: the result is ``mant * 2**exp``.
    """

    def __init__(self, numerics=DEFAULT):
        if not isinstance(numerics, HwNumerics):
            raise TypeError(f"numerics must be an HwNumerics, not {type(numerics).__name__}")
        self.numerics = numerics
        self.mant_width = max(numerics.recip_bits, numerics.rsqrt_bits) + 2
        self.in_layout = data.StructLayout({"op": unsigned(1), "value": unsigned(VALUE_WIDTH)})
        self.out_layout = data.StructLayout({"mant": unsigned(self.mant_width),
                                             "exp": signed(EXP_WIDTH)})
        super().__init__({"i": In(stream.Signature(self.in_layout)),
                          "o": Out(stream.Signature(self.out_layout))})

    def elaborate(self, platform):
        n = self.numerics
        m = Module()
        pr, ps = n.recip_bits, n.rsqrt_bits
        frac = ps - 2
        op = Signal()
        value = Signal(VALUE_WIDTH)
        length = bit_length(m, value, "length")          # of the value held
        shift = Signal(signed(9))
        with m.If(op == RECIPROCAL):
            m.d.comb += shift.eq(length - pr)
        with m.Else():
            m.d.comb += shift.eq((length - ps) + (length - ps)[0])     # even
        wide = max(VALUE_WIDTH, 2 * ps) + 2
        normal = Signal(wide)
        m.d.comb += normal.eq(shift_round(value, shift))
        exp_in = Signal(signed(9))                  # the normalising shift, kept

        # reciprocal: restoring division of 2**(2 pr) by the mantissa
        divisor = Signal(pr + 1)
        remainder = Signal(pr + 3)
        quotient = Signal(2 * pr + 2)
        bit = Signal(range(2 * pr + 2))
        trial = Signal(pr + 3)
        m.d.comb += trial.eq(Cat(bit == 2 * pr, remainder))        # 2 R + the next bit of 2**(2 pr)

        # rsqrt: seed table and Newton steps
        table = Array(Const(int(v), ps) for v in rsqrt_table(n.rsqrt_seed_bits, ps))
        u = Signal(ps)
        y = Signal(ps + 1)
        y2 = Signal(ps + 3)
        uy2 = Signal(ps + 3)
        step = Signal(range(max(n.newton_steps, 1) + 1))
        three = 3 << frac

        result = Signal(self.out_layout)
        m.d.comb += self.o.payload.eq(result)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [op.eq(self.i.payload.op),
                                 value.eq(Mux(self.i.payload.value == 0, 1,
                                              self.i.payload.value))]
                    m.next = "NORMALISE"
            with m.State("NORMALISE"):
                m.d.sync += exp_in.eq(shift)
                with m.If(op == RECIPROCAL):
                    m.d.sync += [divisor.eq(normal), remainder.eq(0), quotient.eq(0),
                                 bit.eq(2 * pr)]
                    m.next = "DIVIDE"
                with m.Else():
                    top = Mux(normal >= (1 << ps), (1 << ps) - 1, normal)[:ps]
                    m.d.sync += [u.eq(top), y.eq(table[top[ps - n.rsqrt_seed_bits:]]),
                                 step.eq(0)]
                    m.next = "SQUARE" if n.newton_steps else "RSQRT_DONE"
            with m.State("DIVIDE"):
                with m.If(trial >= divisor):
                    m.d.sync += [remainder.eq(trial - divisor),
                                 quotient.eq(quotient | (Const(1, 2 * pr + 2) << bit))]
                with m.Else():
                    m.d.sync += remainder.eq(trial)
                m.d.sync += bit.eq(bit - 1)
                with m.If(bit == 0):
                    m.next = "RECIPROCAL_DONE"
            with m.State("RECIPROCAL_DONE"):
                m.d.sync += [result.mant.eq((quotient + 1) >> 1),
                             result.exp.eq(-(2 * pr - 1) - exp_in)]
                m.next = "OFFER"
            with m.State("SQUARE"):
                m.d.sync += y2.eq((y * y + (1 << (frac - 1))) >> frac)
                m.next = "TIMES_U"
            with m.State("TIMES_U"):
                m.d.sync += uy2.eq((u * y2 + (1 << (ps - 1))) >> ps)
                m.next = "UPDATE"
            with m.State("UPDATE"):
                t = Signal(signed(ps + 4))
                p = Signal(signed(2 * ps + 6))
                m.d.comb += [t.eq(three - uy2), p.eq(y.as_signed() * t)]
                m.d.sync += [y.eq((p + (1 << frac)) >> (frac + 1)), step.eq(step + 1)]
                with m.If(step == n.newton_steps - 1):
                    m.next = "RSQRT_DONE"
                with m.Else():
                    m.next = "SQUARE"
            with m.State("RSQRT_DONE"):
                m.d.sync += [result.mant.eq(y),
                             result.exp.eq(-frac - ((exp_in + ps) >> 1))]
                m.next = "OFFER"
            with m.State("OFFER"):
                m.d.comb += self.o.valid.eq(1)
                with m.If(self.o.ready):
                    m.next = "IDLE"
        return m

