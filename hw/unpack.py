"""Trit unpacker: base-3 packed weight bytes (5 trits per byte) to 2-bit lane codes, with
no divider: the multiply-and-shift rule of :func:`model.encoding.unpack_byte_mulshift`,
or a 256-entry lookup table (:data:`DECODERS`)."""

import numpy as np

from amaranth.hdl import Cat, Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from model.encoding import (CODE_NEG, CODE_POS, CODE_ZERO, PACKED_BYTE_LIMIT,
                            TERNARY_CODE_WIDTH, TRITS_PER_BYTE, UNPACK_MULTIPLIER,
                            UNPACK_OFFSET, UNPACK_SHIFT, encode_lane_codes, unpack_trits)

from .params import check_positive_int

__all__ = ["decode_byte", "decode_byte_rom", "rom_table", "TritUnpacker", "DECODERS"]

_TRIT_TO_CODE = (CODE_NEG, CODE_ZERO, CODE_POS)  # trit t = w + 1

#: Byte decoders: shift-and-add arithmetic, or a lookup table in LUTs.
MULSHIFT, ROM = "mulshift", "rom"
DECODERS = (MULSHIFT, ROM)


def rom_table():
    """The lookup table of the ROM decoder: for each byte 0..255 the lane codes of its
    five trits (trit ``i`` at bits ``2i``) and, at bit 10, the invalid flag; invalid bytes
    hold five zero codes. Computed from :func:`model.encoding.unpack_trits`."""
    weights = unpack_trits(np.arange(PACKED_BYTE_LIMIT)).reshape(-1, TRITS_PER_BYTE)
    codes = encode_lane_codes(weights).astype(np.int64)
    entries = [sum(int(c) << (TERNARY_CODE_WIDTH * i) for i, c in enumerate(row))
               for row in codes]
    invalid = 1 << (TERNARY_CODE_WIDTH * TRITS_PER_BYTE)
    return entries + [CODE_ZERO | invalid] * (256 - PACKED_BYTE_LIMIT)


def decode_byte_rom(m, byte, name, table):
    """As :func:`decode_byte`, by a 256-way case on the byte (``table``: :func:`rom_table`)."""
    word = Signal(TERNARY_CODE_WIDTH * TRITS_PER_BYTE + 1, name=f"{name}_rom")
    with m.Switch(byte):
        for value, entry in enumerate(table):
            with m.Case(value):
                m.d.comb += word.eq(entry)
    codes = [word[TERNARY_CODE_WIDTH * i:TERNARY_CODE_WIDTH * (i + 1)]
             for i in range(TRITS_PER_BYTE)]
    return codes, word[-1]


def decode_byte(m, byte, name):
    """Lane codes (trit 0 first) and an invalid flag of one packed ``byte``.

    ``q = (byte * 8631 + 8043) >> 13`` scales the byte to an 8-bit fraction of 243; the
    base-3 digit n from the top is ``((q * 3**n mod 256) * 3) >> 8``. Constant
    multiplies only: shifts and adds. Bytes 243..255 give zero weights.
    """
    q = Signal(8, name=f"{name}_q")
    m.d.comb += q.eq((byte * UNPACK_MULTIPLIER + UNPACK_OFFSET) >> UNPACK_SHIFT)
    invalid = Signal(name=f"{name}_invalid")
    m.d.comb += invalid.eq(byte >= PACKED_BYTE_LIMIT)
    codes = []
    for n in range(TRITS_PER_BYTE):
        digit = Signal(2, name=f"{name}_digit{n}")
        m.d.comb += digit.eq(((q * 3 ** n)[:8] * 3) >> 8)
        code = Signal(TERNARY_CODE_WIDTH, name=f"{name}_code{n}")
        with m.Switch(Cat(digit, invalid)):
            for trit, value in enumerate(_TRIT_TO_CODE):
                with m.Case(trit):
                    m.d.comb += code.eq(value)
            with m.Default():
                m.d.comb += code.eq(CODE_ZERO)
        codes.append(code)
    return codes[::-1], invalid  # digit 0 is the top trit (trit 4)


class TritUnpacker(wiring.Component):
    """A stream of packed bytes in, a stream of lane codes out (combinational, no
    latency: ``o.valid = i.valid``, ``i.ready = o.ready``).

    Parameters
    ----------
    bytes_per_beat : int
        Packed bytes per beat; the output carries ``5 * bytes_per_beat`` codes, trit
        ``i`` of byte ``j`` at index ``5 * j + i`` (the order of
        :func:`model.encoding.pack_trits`).
    decoder : str
        ``"mulshift"`` (the default: constant multiplies, :func:`decode_byte`) or
        ``"rom"`` (a 256-entry table in LUTs); same behaviour, compared by
        ``make bench-area``.

    Attributes
    ----------
    i : stream, in
        Payload ``ArrayLayout(unsigned(8), bytes_per_beat)``.
    o : stream, out
        Payload ``ArrayLayout(unsigned(2), 5 * bytes_per_beat)``.
    invalid : Signal, out
        Sticky (until reset): a transferred beat held a byte of 243..255, which was
        decoded as five zero weights.
    """

    def __init__(self, *, bytes_per_beat, decoder=MULSHIFT):
        self._bytes = check_positive_int("bytes_per_beat", bytes_per_beat)
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, not {decoder!r}")
        self._decoder = decoder
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(unsigned(8), bytes_per_beat))),
            "o": Out(stream.Signature(data.ArrayLayout(unsigned(TERNARY_CODE_WIDTH),
                                                       TRITS_PER_BYTE * bytes_per_beat))),
            "invalid": Out(1),
        })

    @property
    def bytes_per_beat(self):
        return self._bytes

    @property
    def decoder(self):
        return self._decoder

    def elaborate(self, platform):
        m = Module()
        bad = []
        table = rom_table() if self._decoder == ROM else None
        for j in range(self._bytes):
            if table is None:
                codes, invalid = decode_byte(m, self.i.payload[j], f"byte{j}")
            else:
                codes, invalid = decode_byte_rom(m, self.i.payload[j], f"byte{j}", table)
            bad.append(invalid)
            for i, code in enumerate(codes):
                m.d.comb += self.o.payload[TRITS_PER_BYTE * j + i].eq(code)
        m.d.comb += [self.o.valid.eq(self.i.valid), self.i.ready.eq(self.o.ready)]
        with m.If(self.i.valid & self.i.ready & Cat(*bad).any()):
            m.d.sync += self.invalid.eq(1)
        return m
