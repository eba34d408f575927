"""Fixed-point building blocks shared by the hardware-numerics units: the golden model's
round-half-up shift (:func:`ternary_accel.model.hwnum.round_shift`), a leading-one
detector and the mantissa/exponent normaliser (:func:`~ternary_accel.model.hwnum.normalize`)."""

from amaranth.hdl import Const, Mux, Signal, signed

__all__ = ["shift_round", "bit_length", "normalise"]


def shift_round(value, shift):
    """``round_half_up(value / 2**shift)``: an arithmetic right shift after adding half
    the dropped weight for ``shift > 0``, an exact left shift otherwise (``shift`` a
    signed or unsigned value; right shifts up to 127, left shifts up to 63)."""
    right = shift.as_unsigned()[:7]
    left = (-shift).as_unsigned()[:6]
    half = Const(1, len(value) + 1) << (right - 1).as_unsigned()[:7]
    return Mux(shift > 0, (value + half) >> right, value << left)


def bit_length(m, value, name):
    """A combinational leading-one detector: the bit length of unsigned ``value`` (0 for
    0) on a new signal."""
    length = Signal(range(len(value) + 1), name=name)
    for bit in range(len(value)):
        with m.If(value[bit]):
            m.d.comb += length.eq(bit + 1)
    return length


def normalise(m, value, bits, name):
    """Combinational mantissa and exponent of unsigned ``value`` to ``bits`` bits,
    rounded half up (0 and 0 for 0). Returns the two signals."""
    width = len(value)
    length = bit_length(m, value, f"{name}_length")
    exp = Signal(signed(8), name=f"{name}_exp")
    mant = Signal(max(width, bits) + 1, name=f"{name}_mant")
    m.d.comb += [exp.eq(Mux(value == 0, 0, length - bits)),
                 mant.eq(shift_round(value, exp))]
    return mant, exp
