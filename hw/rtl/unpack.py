"""Trit unpacker: base-3 packed weight bytes (5 trits per byte) to 2-bit lane codes, with
no divider: the multiply-and-shift rule of :func:`model.encoding.unpack_byte_mulshift`,
or a 256-entry lookup table (:data:`DECODERS`).

Word decoder: one memory port word of any packing of :data:`model.encoding.PACKINGS`
(base3, 3in5, 2bit) to its lane codes (:class:`WordDecoder`)."""

import numpy as np

from amaranth.hdl import Cat, Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ternary_accel.model.encoding import (BASE3, CODE_NEG, CODE_POS, CODE_ZERO, CODES2, PACKED_BYTE_LIMIT,
                            TERNARY_CODE_WIDTH, TRITS_PER_BYTE, UNPACK_MULTIPLIER,
                            UNPACK_OFFSET, UNPACK_SHIFT, check_packing, check_port_bits,
                            codes_per_group, codes_per_word, decode_words, encode_lane_codes,
                            group_bits, unpack_trits)

from ternary_accel.hw.params import check_positive_int

__all__ = ["decode_byte", "decode_byte_rom", "rom_table", "TritUnpacker", "DECODERS",
           "group_table", "decode_group_rom", "WordDecoder"]

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


def group_table(packing):
    """The lookup table of one group of ``packing`` (base3 or 3in5): for each group value
    (0..255, 0..31) the lane codes of its trits (trit ``i`` at bits ``2i``) and, above
    them, the invalid flag; invalid values hold zero codes. Computed from
    :func:`model.encoding.decode_words` (one group per 8-bit word). For base3 it equals
    :func:`rom_table`."""
    if check_packing(packing) == CODES2:
        raise ValueError("the 2bit packing has no table: its codes are stored as they are")
    codes = codes_per_group(packing)
    lanes, invalid = decode_words(np.arange(1 << group_bits(packing))[:, None], packing, 8)
    return [sum(int(c) << (TERNARY_CODE_WIDTH * i) for i, c in enumerate(row)) |
            int(bad) << (TERNARY_CODE_WIDTH * codes)
            for row, bad in zip(lanes[:, :codes], invalid)]


def decode_group_rom(m, value, name, table, codes):
    """Lane codes (trit 0 first) and the invalid flag of one group ``value``, by a case
    per table entry (``table``: :func:`group_table`, ``codes`` trits per group)."""
    word = Signal(TERNARY_CODE_WIDTH * codes + 1, name=f"{name}_rom")
    with m.Switch(value):
        for index, entry in enumerate(table):
            with m.Case(index):
                m.d.comb += word.eq(entry)
    return ([word[TERNARY_CODE_WIDTH * i:TERNARY_CODE_WIDTH * (i + 1)] for i in range(codes)],
            word[-1])


def decode_byte_rom(m, byte, name, table):
    """As :func:`decode_byte`, by a 256-way case on the byte (``table``: :func:`rom_table`)."""
    return decode_group_rom(m, byte, name, table, TRITS_PER_BYTE)


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


class WordDecoder(wiring.Component):
    """One memory port word in, its lane codes out (combinational, no latency:
    ``o.valid = i.valid``, ``i.ready = o.ready``), for any packing of
    :data:`model.encoding.PACKINGS`; bit for bit :func:`model.encoding.decode_words`.

    - ``"base3"``: one byte decoder per byte (:func:`decode_byte_rom` or
      :func:`decode_byte`), codes ``5j .. 5j + 4`` from byte ``j``.
    - ``"3in5"``: a 32-entry table per 5-bit group (:func:`group_table`), each output bit
      a 5-input function; the top ``port_bits % 5`` bits of the word are ignored.
    - ``"2bit"``: wiring; :data:`model.encoding.CODE_INVALID` passes through to the matmul
      unit, which flags it, so ``invalid`` stays 0.

    Parameters
    ----------
    packing : str
        One of :data:`model.encoding.PACKINGS`.
    port_bits : int
        Word width, a positive multiple of 8.
    decoder : str
        base3's byte decoder: ``"rom"`` (the default, a 256-entry table) or
        ``"mulshift"``. 3in5 (a table) and 2bit (wiring) have one decoder each and take
        only the default.

    Attributes
    ----------
    i : stream, in
        Payload ``ArrayLayout(unsigned(8), port_bits // 8)``, byte ``j`` holding bits
        ``8j .. 8j + 7`` of the word.
    o : stream, out
        Payload ``ArrayLayout(unsigned(2), codes_per_word)``, code ``n`` of the word at
        index ``n``.
    invalid : Signal, out
        Combinational, not sticky, whatever ``i.valid``: ``i.payload`` holds an invalid
        group (base3 byte 243..255, 3in5 value 27..31), decoded as zero codes. 0 for 2bit.

    Raises
    ------
    ValueError
        On an unknown ``packing`` or ``decoder``, ``"mulshift"`` for a packing other than
        base3, or a ``port_bits`` that is not a positive multiple of 8.
    TypeError
        On a ``port_bits`` that is not an integer.
    """

    def __init__(self, *, packing, port_bits, decoder=ROM):
        self._packing = check_packing(packing)
        self._port_bits = check_port_bits(port_bits)
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, not {decoder!r}")
        if decoder != ROM and packing != BASE3:
            raise ValueError(f"decoder {decoder!r} decodes base3 bytes; {packing} has one "
                             f"decoder, {ROM!r}")
        self._decoder = decoder
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(unsigned(8), self._port_bits // 8))),
            "o": Out(stream.Signature(data.ArrayLayout(
                unsigned(TERNARY_CODE_WIDTH), codes_per_word(packing, self._port_bits)))),
            "invalid": Out(1),
        })

    @property
    def packing(self):
        return self._packing

    @property
    def port_bits(self):
        return self._port_bits

    @property
    def decoder(self):
        return self._decoder

    @property
    def codes_per_word(self):
        return codes_per_word(self._packing, self._port_bits)

    def elaborate(self, platform):
        m = Module()
        word = self.i.payload.as_value()
        bad = []
        if self._packing == CODES2:
            m.d.comb += self.o.payload.eq(word)
        else:
            size, codes = group_bits(self._packing), codes_per_group(self._packing)
            table = (None if self._decoder != ROM else
                     rom_table() if self._packing == BASE3 else group_table(self._packing))
            for g in range(self._port_bits // size):
                value = word[size * g:size * (g + 1)]
                if table is None:
                    lanes, invalid = decode_byte(m, value, f"byte{g}")
                else:
                    name = f"byte{g}" if self._packing == BASE3 else f"group{g}"
                    lanes, invalid = decode_group_rom(m, value, name, table, codes)
                bad.append(invalid)
                for c, code in enumerate(lanes):
                    m.d.comb += self.o.payload[codes * g + c].eq(code)
        m.d.comb += [self.invalid.eq(Cat(*bad).any() if bad else 0),
                     self.o.valid.eq(self.i.valid), self.i.ready.eq(self.o.ready)]
        return m
