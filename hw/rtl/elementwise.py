"""The element-wise operations of the vector unit, bit for bit
:func:`ternary_accel.model.hwnum.residual_add`, :func:`~ternary_accel.model.hwnum.relu2`
and :func:`~ternary_accel.model.hwnum.gate_product`: one element a cycle, fully
pipelined (a registered multiply, a registered round-and-saturate).

The input stream carries ``op``, two residual-format operands ``a`` and ``b`` and
``last``; the output stream the result and ``last``, two cycles later when it is not held
back. ``saturated`` pulses with every result that was clipped (the golden model's
count).

* ``ADD``: ``sat(a + b)``, the residual add;
* ``RELU2``: ``sat(round(max(a, 0)**2 / 2**F))`` (``b`` unused);
* ``GATE``: ``sat(round(a * b / 2**F))``, relu(gate)² times up.
"""

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ternary_accel.model.hwnum import DEFAULT, HwNumerics

__all__ = ["Elementwise", "ADD", "RELU2", "GATE", "ELEMENTWISE_LATENCY"]

#: Operations (``op`` of the input payload).
ADD, RELU2, GATE = 0, 1, 2
#: Cycles from an element's transfer in to its result's ``valid``, without backpressure.
ELEMENTWISE_LATENCY = 2


class Elementwise(wiring.Component):
    """Residual add, relu² and the gate product (module docstring).

    Parameters
    ----------
    numerics : model.hwnum.HwNumerics
        ``resid_bits`` and ``resid_frac``.
    """

    def __init__(self, numerics=DEFAULT):
        if not isinstance(numerics, HwNumerics):
            raise TypeError(f"numerics must be an HwNumerics, not {type(numerics).__name__}")
        self.numerics = numerics
        w = numerics.resid_bits
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "op": unsigned(2), "a": signed(w), "b": signed(w), "last": unsigned(1)}))),
            "o": Out(stream.Signature(data.StructLayout({
                "value": signed(w), "last": unsigned(1)}))),
            "saturated": Out(1),
        })

    def elaborate(self, platform):
        n = self.numerics
        w, f = n.resid_bits, n.resid_frac
        low, high = -(1 << (w - 1)), (1 << (w - 1)) - 1
        m = Module()
        # a two-stage pipeline that advances when its output is free
        advance = Signal()
        valid = [Signal(name=f"valid{k}") for k in (1, 2)]
        m.d.comb += [advance.eq(~valid[1] | self.o.ready), self.i.ready.eq(advance)]

        a, b = self.i.payload.a, self.i.payload.b
        operand = Mux(self.i.payload.op == RELU2, Mux(a < 0, 0, a), a)
        other = Mux(self.i.payload.op == RELU2, Mux(a < 0, 0, a), b)
        product = Signal(signed(2 * w))
        total = Signal(signed(w + 1))
        op = Signal(2)
        last = [Signal(name=f"last{k}") for k in (1, 2)]
        with m.If(advance):
            m.d.sync += [valid[0].eq(self.i.valid), product.eq(operand * other),
                         total.eq(a + b), op.eq(self.i.payload.op),
                         last[0].eq(self.i.payload.last)]

        wide = Signal(signed(2 * w + 1))
        m.d.comb += wide.eq(Mux(op == ADD, total,
                                (product + Const(1 << (f - 1) if f else 0, 2 * w)) >> f))
        value = Signal(signed(w))
        clipped = Signal()
        with m.If(advance):
            m.d.sync += [valid[1].eq(valid[0]), last[1].eq(last[0]),
                         value.eq(Mux(wide > high, high, Mux(wide < low, low, wide))),
                         clipped.eq(valid[0] & ((wide > high) | (wide < low)))]
        m.d.comb += [self.o.valid.eq(valid[1]), self.o.payload.value.eq(value),
                     self.o.payload.last.eq(last[1]),
                     self.saturated.eq(clipped & valid[1] & self.o.ready)]
        return m
