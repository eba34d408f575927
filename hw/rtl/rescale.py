"""The output stage of the hardware numerics, bit for bit
:func:`ternary_accel.model.hwnum.output_factor` and
:func:`~ternary_accel.model.hwnum.rescale`: a BitLinear's accumulators of one token into
the residual format.

Per token, the factor from the fused norm (:class:`~ternary_accel.hw.rtl.normquant.NormQuant`
``factor``) times the projection's weight scale (ports ``scale_mant`` / ``scale_exp``,
held still during a projection) is renormalised once (one cycle); then each accumulator
of the token, as it arrives, is multiplied, shifted with round-half-up and saturated to
``resid_bits`` (combinational from input to output: one result a cycle, the consumer's
``ready`` passed back). ``saturated`` pulses with each clipped result.
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ternary_accel.hw.rtl.fixed import normalise, shift_round
from ternary_accel.hw.rtl.scalar import EXP_WIDTH
from ternary_accel.model.hwnum import DEFAULT, HwNumerics

__all__ = ["Rescale"]


class Rescale(wiring.Component):
    """Accumulators of a token into the residual format (module docstring).

    Parameters
    ----------
    acc_width : int
        Signed bits of an accumulator.
    numerics : model.hwnum.HwNumerics
    row_scales : bool
        Each accumulator brings its own scale (``mant``, ``exp`` in the ``acc`` beat: the
        LM head's row scales), renormalised with the token's factor per accumulator
        (:func:`model.hwnum.head_logits`); the ``scale_mant`` / ``scale_exp`` ports are
        then unused.
    """

    def __init__(self, acc_width, numerics=DEFAULT, *, row_scales=False):
        if isinstance(acc_width, bool) or not isinstance(acc_width, int) or acc_width < 2:
            raise ValueError(f"acc_width must be an integer >= 2, not {acc_width!r}")
        if not isinstance(numerics, HwNumerics):
            raise TypeError(f"numerics must be an HwNumerics, not {type(numerics).__name__}")
        self.acc_width, self.numerics, self.row_scales = acc_width, numerics, row_scales
        s, w = numerics.scale_bits, numerics.resid_bits
        acc = {"value": signed(acc_width), "last": unsigned(1)}
        if row_scales:
            acc.update(mant=unsigned(s), exp=signed(8))
        super().__init__({
            "factor": In(stream.Signature(data.StructLayout({
                "mant": unsigned(s + 1), "exp": signed(EXP_WIDTH)}))),
            "scale_mant": In(unsigned(s + 1)),
            "scale_exp": In(signed(8)),
            "acc": In(stream.Signature(data.StructLayout(acc))),
            "o": Out(stream.Signature(data.StructLayout({
                "value": signed(w), "last": unsigned(1)}))),
            "saturated": Out(1),
        })

    def elaborate(self, platform):
        n = self.numerics
        s, w, f = n.scale_bits, n.resid_bits, n.resid_frac
        low, high = -(1 << (w - 1)), (1 << (w - 1)) - 1
        m = Module()
        product = Signal(2 * s + 2)
        k = Signal(s + 1)
        k_exp = Signal(signed(EXP_WIDTH + 2))
        shift = Signal(signed(EXP_WIDTH + 3))
        if self.row_scales:
            # the token's factor held (FACTOR), each row's scale renormalised with it
            token = Signal(s + 1)
            token_exp = Signal(signed(EXP_WIDTH))
            m.d.comb += product.eq(token * self.acc.payload.mant)
            mant, exp = normalise(m, product, s, "scale")
            m.d.comb += [k.eq(mant[:s + 1]),
                         k_exp.eq(exp + token_exp + self.acc.payload.exp)]
        else:
            m.d.comb += product.eq(self.factor.payload.mant * self.scale_mant)
            mant, exp = normalise(m, product, s, "scale")
        m.d.comb += shift.eq(-(k_exp + f))
        scaled = Signal(signed(self.acc_width + s + 2))
        m.d.comb += scaled.eq(self.acc.payload.value * k.as_signed())
        out = Signal(signed(len(scaled) + 64))
        m.d.comb += out.eq(shift_round(scaled, shift))
        clipped = (out > high) | (out < low)
        m.d.comb += [self.o.payload.value.eq(Mux(out > high, high, Mux(out < low, low, out))),
                     self.o.payload.last.eq(self.acc.payload.last)]
        with m.FSM():
            with m.State("FACTOR"):
                m.d.comb += self.factor.ready.eq(1)
                with m.If(self.factor.valid):
                    if self.row_scales:
                        m.d.sync += [token.eq(self.factor.payload.mant),
                                     token_exp.eq(self.factor.payload.exp)]
                    else:
                        m.d.sync += [k.eq(mant[:s + 1]),
                                     k_exp.eq(exp + self.factor.payload.exp + self.scale_exp)]
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [self.o.valid.eq(self.acc.valid), self.acc.ready.eq(self.o.ready),
                             self.saturated.eq(self.acc.valid & self.o.ready & clipped)]
                with m.If(self.acc.valid & self.o.ready & self.acc.payload.last):
                    m.next = "FACTOR"
        return m
