"""RMSNorm fused with the per-token activation quantizer (int8 absmax, or BitNet a4.8's
INT4 absmean with ``int4`` high), bit for bit :func:`ternary_accel.model.hwnum.norm_quant`
(``bits=8`` or ``4``, no Top-K mask): the vector
unit's first operation, which turns a residual-format token into the engine's
activation stream and the output stage's per-token factor.

One token at a time, in three phases:

1. **in** (one beat an element, ``x`` and its gain ``g``, ``last`` on the token's last):
   ``z = x * g`` into the token buffer, ``sum(x**2)`` (wide) and ``max|z|``;
2. **per token**: the :class:`~ternary_accel.hw.rtl.scalar.ScalarUnit` computes
   ``rsqrt(sum x**2 + eps_term)`` and ``1 / mn`` (``mn``: ``max|z|`` brought to
   ``recip_bits`` bits by the shift that the elements take too); three normalising
   multiplies form the factor ``mant * 2**exp`` = ``max|z| * rsqrt * c``, with ``c``
   the norm's constant (:func:`~ternary_accel.model.hwnum.norm_constant`), and the gain's
   exponent added;
3. **out**: the factor on ``factor``, then one int8 code an element on ``codes``,
   ``round_half_up(zn * 127 * r)`` (never past 127: the maximum maps to it exactly), or
   for INT4 ``round_half_up(zn * cr)`` clipped to -8..7 (``cr``: the constant ``sqrt(7)
   D``, ports ``absmean_mant`` / ``absmean_exp``, times ``1 / sum|z|``, one more cycle a
   token; an all-zero token gives zeros), ``last`` on the token's last.

``gain_exp``, ``eps_term`` and the constant (``const_mant``, ``const_exp``) are ports that
hold still during a token (the sequencer sets them per norm). Tokens longer than
``depth`` elements are refused by ``error`` (the token is consumed and nothing is
produced for it).
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ternary_accel.hw.rtl.fixed import bit_length, normalise, shift_round
from ternary_accel.hw.rtl.scalar import EXP_WIDTH, RECIPROCAL, RSQRT, VALUE_WIDTH, ScalarUnit
from ternary_accel.model.hwnum import DEFAULT, HwNumerics

__all__ = ["NormQuant"]


class NormQuant(wiring.Component):
    """The fused RMSNorm + int8 absmax quantizer (module docstring).

    Parameters
    ----------
    depth : int
        Elements a token holds at most (the token buffer).
    numerics : model.hwnum.HwNumerics
    """

    def __init__(self, depth, numerics=DEFAULT):
        if not isinstance(numerics, HwNumerics):
            raise TypeError(f"numerics must be an HwNumerics, not {type(numerics).__name__}")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive integer, not {depth!r}")
        self.depth = depth
        self.numerics = numerics
        n = numerics
        self.z_width = n.resid_bits + n.gain_bits
        s = n.scale_bits
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "x": signed(n.resid_bits), "g": signed(n.gain_bits), "last": unsigned(1)}))),
            "gain_exp": In(signed(8)),
            "eps_term": In(unsigned(VALUE_WIDTH - 2)),
            "const_mant": In(unsigned(s + 1)),
            "const_exp": In(signed(8)),
            "int4": In(1),
            "absmean_mant": In(unsigned(n.recip_bits + 1)),
            "absmean_exp": In(signed(8)),
            "factor": Out(stream.Signature(data.StructLayout({
                "mant": unsigned(s + 1), "exp": signed(EXP_WIDTH)}))),
            "codes": Out(stream.Signature(data.StructLayout({
                "code": signed(8), "last": unsigned(1)}))),
            "error": Out(1),
        })

    def elaborate(self, platform):
        n = self.numerics
        s, rb = n.scale_bits, n.recip_bits
        m = Module()
        m.submodules.scalar = scalar = ScalarUnit(n)
        buffer = Memory(shape=signed(self.z_width), depth=self.depth, init=[])
        m.submodules.buffer = buffer
        write = buffer.write_port()
        read = buffer.read_port(domain="comb")

        count = Signal(range(self.depth + 1))
        index = Signal(range(self.depth + 1))
        sumsq = Signal(VALUE_WIDTH)
        peak = Signal(self.z_width)
        overflow = Signal()
        total = Signal(self.z_width + self.depth.bit_length())     # sum|z| (INT4)
        zero_row = Signal()
        cr = Signal(rb + 1)                   # sqrt(7) D * r, INT4's per-token multiplier
        cr_exp = Signal(signed(EXP_WIDTH + 4))
        z = Signal(signed(self.z_width))
        m.d.comb += z.eq(self.i.payload.x * self.i.payload.g)
        magnitude = Signal(self.z_width)
        m.d.comb += magnitude.eq(Mux(z < 0, -z, z))

        y = Signal(scalar.mant_width)
        y_exp = Signal(signed(EXP_WIDTH))
        r = Signal(scalar.mant_width)
        r_exp = Signal(signed(EXP_WIDTH))
        shift = Signal(range(self.z_width + 1))       # brings max|z| to recip_bits bits
        # the factor: normalise(m), then (m * y), then (t * c)
        stage = Signal(max(self.z_width, 2 * s + 2 + scalar.mant_width))
        stage_exp = Signal(signed(EXP_WIDTH + 2))
        mant, exp = normalise(m, stage, s, "factor")
        absmean = Signal(rb + 1 + scalar.mant_width)
        m.d.comb += absmean.eq(self.absmean_mant * r)
        absmean_mant, absmean_exp = normalise(m, absmean, rb, "absmean")
        factor_mant = Signal(s + 1)
        factor_exp = Signal(signed(EXP_WIDTH))
        m.d.comb += [self.factor.payload.mant.eq(factor_mant),
                     self.factor.payload.exp.eq(factor_exp)]

        peak_length = bit_length(m, peak, "peak_length")

        # out: the element's code
        zn = Signal(signed(self.z_width + 1))
        m.d.comb += [read.addr.eq(index), zn.eq(shift_round(read.data, shift))]
        product = Signal(signed(rb + 2 + 8 + scalar.mant_width + 1))
        m.d.comb += product.eq(zn * 127 * r.as_signed())
        rounded = Signal(signed(len(product)))
        m.d.comb += rounded.eq(shift_round(product, -r_exp))
        # INT4 absmean: round_shift(zn * cr, -cr_exp), clipped to -8..7; 0 for a zero row
        product4 = Signal(signed(self.z_width + rb + 3))
        m.d.comb += product4.eq(zn * cr.as_signed())
        rounded4 = Signal(signed(len(product4) + 32))
        m.d.comb += rounded4.eq(shift_round(product4, -cr_exp))
        code4 = Mux(zero_row, 0, Mux(rounded4 > 7, 7, Mux(rounded4 < -8, -8, rounded4)))
        code = Signal(signed(8))
        m.d.comb += code.eq(Mux(self.int4, code4,
                                Mux(rounded > 127, 127, Mux(rounded < -127, -127, rounded))))
        m.d.comb += [self.codes.payload.code.eq(code),
                     self.codes.payload.last.eq(index == count - 1)]

        with m.FSM():
            with m.State("IN"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    with m.If(count < self.depth):
                        m.d.comb += [write.addr.eq(count), write.data.eq(z),
                                     write.en.eq(1)]
                    with m.Else():
                        m.d.sync += overflow.eq(1)
                    m.d.sync += [count.eq(count + 1),
                                 total.eq(total + magnitude),
                                 sumsq.eq(sumsq + self.i.payload.x * self.i.payload.x),
                                 peak.eq(Mux(magnitude > peak, magnitude, peak))]
                    with m.If(self.i.payload.last):
                        m.next = "RSQRT"
            with m.State("RSQRT"):
                with m.If(overflow | (count > self.depth)):
                    m.d.comb += self.error.eq(1)
                    m.d.sync += [count.eq(0), sumsq.eq(0), peak.eq(0), overflow.eq(0),
                                 total.eq(0)]
                    m.next = "IN"
                with m.Else():
                    m.d.comb += [scalar.i.valid.eq(1), scalar.i.payload.op.eq(RSQRT),
                                 scalar.i.payload.value.eq(sumsq + self.eps_term)]
                    m.d.sync += [peak.eq(Mux(peak == 0, 1, peak)),
                                 zero_row.eq(total == 0), total.eq(Mux(total == 0, 1, total)),
                                 shift.eq(Mux(peak_length > rb, peak_length - rb, 0))]
                    with m.If(scalar.i.ready):
                        m.next = "RSQRT_WAIT"
            with m.State("RSQRT_WAIT"):
                m.d.comb += scalar.o.ready.eq(1)
                with m.If(scalar.o.valid):
                    m.d.sync += [y.eq(scalar.o.payload.mant), y_exp.eq(scalar.o.payload.exp)]
                    m.next = "RECIPROCAL"
            with m.State("RECIPROCAL"):
                mean = shift_round(total, shift)
                m.d.comb += [scalar.i.valid.eq(1), scalar.i.payload.op.eq(RECIPROCAL),
                             scalar.i.payload.value.eq(Mux(self.int4, Mux(mean == 0, 1, mean),
                                                           shift_round(peak, shift)))]
                with m.If(scalar.i.ready):
                    m.next = "RECIPROCAL_WAIT"
            with m.State("RECIPROCAL_WAIT"):
                m.d.comb += scalar.o.ready.eq(1)
                with m.If(scalar.o.valid):
                    m.d.sync += [r.eq(scalar.o.payload.mant), r_exp.eq(scalar.o.payload.exp),
                                 stage.eq(Mux(self.int4, total, peak)), stage_exp.eq(0)]
                    m.next = "ABSMEAN"
            with m.State("ABSMEAN"):                # INT4: sqrt(7) D * r, renormalised
                m.d.sync += [cr.eq(absmean_mant), cr_exp.eq(self.absmean_exp + r_exp
                                                            + absmean_exp)]
                m.next = "FACTOR_PEAK"
            with m.State("FACTOR_PEAK"):            # normalise(max|z|) * y
                m.d.sync += [stage.eq(mant[:s + 1] * y),
                             stage_exp.eq(stage_exp + exp + y_exp)]
                m.next = "FACTOR_Y"
            with m.State("FACTOR_Y"):               # normalise(.) * c
                m.d.sync += [stage.eq(mant[:s + 1] * self.const_mant),
                             stage_exp.eq(stage_exp + exp + self.const_exp)]
                m.next = "FACTOR_C"
            with m.State("FACTOR_C"):               # normalise(.), the gain's exponent
                m.d.sync += [factor_mant.eq(mant), factor_exp.eq(stage_exp + exp
                                                                 + self.gain_exp),
                             index.eq(0)]
                m.next = "FACTOR"
            with m.State("FACTOR"):
                m.d.comb += self.factor.valid.eq(1)
                with m.If(self.factor.ready):
                    m.next = "OUT"
            with m.State("OUT"):
                m.d.comb += self.codes.valid.eq(1)
                with m.If(self.codes.ready):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == count - 1):
                        m.d.sync += [count.eq(0), sumsq.eq(0), peak.eq(0), total.eq(0)]
                        m.next = "IN"
        return m
