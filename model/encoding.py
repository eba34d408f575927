"""Weight encodings: the datapath lane codes and the base-3 packed storage format.

Every encoding the hardware, the simulator and the host driver use is defined here
and nowhere else (see ``docs/arithmetic.md``).

Lane codes
----------
Ternary weights travel to the datapath as a 2-bit sign/magnitude code so that a lane
can select ``+x``, ``-x`` or ``0`` with no decoding:

===========  =======  ===========================================
code (bin)   weight   meaning
===========  =======  ===========================================
``0b00``     0        bit 0 ("nonzero") clear
``0b01``     +1       nonzero
``0b11``     -1       nonzero and negative
``0b10``     (none)   unused pattern ("negative zero"): invalid
===========  =======  ===========================================

The hardware treats the unused pattern as 0 and raises a sticky error flag; the
golden model mirrors that in :func:`decode_lane_codes` with ``strict=False``.

Binary weights (the original BitNet) need one bit: ``1`` is +1, ``0`` is -1.

Packed storage
--------------
Five trits per byte, ``byte = sum_i t_i * 3**i`` with ``t_i = w_i + 1`` in {0, 1, 2},
so valid bytes are 0..242 and 243..255 are invalid. 1.6 bits per weight.

Memory port words
-----------------
The weight memory port delivers words of ``port_bits`` bits (a multiple of 8), given as
``port_bits // 8`` bytes, bit ``i`` of the word being bit ``i % 8`` of byte ``i // 8``.
A word is a row of *groups*, group ``g`` at the bits ``[g * b, (g + 1) * b)``, each
holding ``k`` lane codes (code ``c`` of the group is code ``g * k + c`` of the word).
Three packings (:data:`PACKINGS`, compared by ``make bench-packing``):

=========  ====  ===  ===========================================  ==============
packing    b     k    group value                                  bits / weight
=========  ====  ===  ===========================================  ==============
``base3``  8     5    ``sum_i t_i * 3**i``, ``t_i = w_i + 1``      1.6
``3in5``   5     3    ``t_0 + 3 t_1 + 9 t_2``, ``t_i = w_i + 1``   5/3
``2bit``   2     1    the lane code itself                         2
=========  ====  ===  ===========================================  ==============

``base3`` is :func:`pack_trits` byte for byte; ``3in5`` keeps its digit order (trit 0
least significant). Invalid groups: base3 values 243..255 and 3in5 values 27..31
decode as zero weights and raise the word's invalid flag; a 2bit word passes
:data:`CODE_INVALID` through unchanged (the matmul unit flags it) and has no flag of its
own. The top ``port_bits % 5`` bits of a 3in5 word hold no group: :func:`pack_words`
writes them 0 and every decoder ignores them. A word is filled from code 0 up; the last
word of a vector is padded with zero weights.

int4 activations
----------------
BitNet a4.8's int4 activations (-8..7) travel two per byte: the even-indexed value in
the low nibble, the odd one in the high nibble, each a 4-bit two's complement
(:func:`pack_int4`). That is also the bit order of the hardware's activation beat
(``ArrayLayout(signed(4), lanes)``, lane 0 in the lowest bits).
"""

import numpy as np

from ternary_accel.model.quant import ACT_WIDTH, BINARY, HW_WEIGHT_MODES, INT4_MAX, INT4_MIN, INT8, TERNARY

__all__ = [
    "TERNARY_CODE_WIDTH", "BINARY_CODE_WIDTH",
    "CODE_ZERO", "CODE_POS", "CODE_NEG", "CODE_INVALID",
    "NONZERO_BIT", "NEGATIVE_BIT",
    "TRITS_PER_BYTE", "PACKED_BYTE_LIMIT",
    "check_ternary", "check_binary",
    "encode_lane_codes", "decode_lane_codes",
    "encode_binary_codes", "decode_binary_codes",
    "pack_trits", "unpack_trits", "packed_length", "code_width", "unpack_byte_mulshift",
    "UNPACK_MULTIPLIER", "UNPACK_OFFSET", "UNPACK_SHIFT",
    "HF_CODES_PER_BYTE", "pack_hf_2bit", "unpack_hf_2bit",
    "INT4_PER_BYTE", "int4_packed_length", "pack_int4",
    "unpack_int4",
    "BASE3", "TRITS3_IN5", "CODES2", "PACKINGS", "DEFAULT_PACKING",
    "check_packing", "check_port_bits", "group_bits", "codes_per_group",
    "codes_per_word", "bits_per_weight", "words_for",
    "pack_words", "decode_words", "unpack_words",
]

#: Bits of one ternary lane code.
TERNARY_CODE_WIDTH = 2
#: Bits of one binary lane code.
BINARY_CODE_WIDTH = 1



def code_width(mode):
    """Bits of one lane code for weight ``mode`` ("ternary": 2, "binary": 1, and 8 for
    the two's complement weights of the "int8" baseline)."""
    widths = {TERNARY: TERNARY_CODE_WIDTH, BINARY: BINARY_CODE_WIDTH, INT8: ACT_WIDTH}
    if mode not in widths:
        raise ValueError(f"weight mode must be one of {HW_WEIGHT_MODES}, not {mode!r}")
    return widths[mode]


#: Bit position of the "nonzero" flag in a ternary lane code.
NONZERO_BIT = 0
#: Bit position of the "negative" flag in a ternary lane code.
NEGATIVE_BIT = 1

CODE_ZERO = 0b00
CODE_POS = 1 << NONZERO_BIT
CODE_NEG = (1 << NONZERO_BIT) | (1 << NEGATIVE_BIT)
#: The one unused 2-bit pattern: "negative" without "nonzero".
CODE_INVALID = 1 << NEGATIVE_BIT

#: Trits packed in one byte of the base-3 storage format.
TRITS_PER_BYTE = 5
#: First invalid packed byte value (3**5 = 243).
PACKED_BYTE_LIMIT = 3 ** TRITS_PER_BYTE


def _as_integer_array(values, name):
    array = np.asarray(values)
    if array.dtype == object:
        raise ValueError(f"{name} must be a numeric array, not an object array")
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} contains NaN or inf")
        if not np.all(array == np.round(array)):
            raise ValueError(f"{name} contains non-integer values")
        return array.astype(np.int64)
    if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        return array.astype(np.int64)
    raise ValueError(f"{name} must be an integer or float array, not dtype {array.dtype}")


def check_ternary(weights, name="weights"):
    """Return ``weights`` as an ``int8`` array after checking every entry is -1, 0 or +1.

    Raises
    ------
    ValueError
        If any entry is not in {-1, 0, +1}, or is NaN/inf, or the dtype is not numeric.
    """
    raw = np.asarray(weights)
    if np.issubdtype(raw.dtype, np.signedinteger) and raw.size and \
            -1 <= raw.min() and raw.max() <= 1:
        return raw.astype(np.int8, copy=False)   # the common case, without a copy to int64
    array = _as_integer_array(weights, name)
    bad = (array < -1) | (array > 1)
    if np.any(bad):
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} must be ternary (-1, 0, +1); found {array[index]} at index {index}")
    return array.astype(np.int8)


def check_binary(weights, name="weights"):
    """Return ``weights`` as an ``int8`` array after checking every entry is -1 or +1.

    Raises
    ------
    ValueError
        If any entry is not -1 or +1.
    """
    array = _as_integer_array(weights, name)
    bad = (array != -1) & (array != 1)
    if np.any(bad):
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} must be binary (-1, +1); found {array[index]} at index {index}")
    return array.astype(np.int8)


def encode_lane_codes(weights):
    """Encode ternary weights as 2-bit lane codes (``uint8`` array of the same shape)."""
    w = check_ternary(weights)
    nonzero = (w != 0).astype(np.uint8) << NONZERO_BIT
    negative = (w < 0).astype(np.uint8) << NEGATIVE_BIT
    return nonzero | negative


def decode_lane_codes(codes, *, strict=True):
    """Decode 2-bit lane codes to ternary weights.

    Parameters
    ----------
    codes : array_like of int
        Codes in 0..3.
    strict : bool
        If true, the unused pattern :data:`CODE_INVALID` raises. If false it decodes
        to 0, exactly as the hardware lane does.

    Returns
    -------
    numpy.ndarray of int8
        Weights in {-1, 0, +1}.

    Raises
    ------
    ValueError
        On a code outside 0..3, or on :data:`CODE_INVALID` when ``strict``.
    """
    c = _as_integer_array(codes, "codes")
    if np.any((c < 0) | (c > 3)):
        raise ValueError("lane codes must be in 0..3")
    if strict and np.any(c == CODE_INVALID):
        index = tuple(int(i) for i in np.argwhere(c == CODE_INVALID)[0])
        raise ValueError(f"invalid lane code 0b10 at index {index}")
    nonzero = (c >> NONZERO_BIT) & 1
    negative = (c >> NEGATIVE_BIT) & 1
    return (nonzero * (1 - 2 * negative)).astype(np.int8)


def encode_binary_codes(weights):
    """Encode binary weights (-1/+1) as 1-bit codes (1 is +1, 0 is -1)."""
    return (check_binary(weights) > 0).astype(np.uint8)


def decode_binary_codes(codes):
    """Decode 1-bit codes to binary weights (-1/+1).

    Raises
    ------
    ValueError
        On a code other than 0 or 1.
    """
    c = _as_integer_array(codes, "codes")
    if np.any((c < 0) | (c > 1)):
        raise ValueError("binary codes must be 0 or 1")
    return (2 * c - 1).astype(np.int8)


def packed_length(count):
    """Number of bytes that hold ``count`` trits."""
    return -(-int(count) // TRITS_PER_BYTE)


_POWERS_OF_3 = 3 ** np.arange(TRITS_PER_BYTE, dtype=np.int64)


def pack_trits(weights):
    """Pack ternary weights, 5 per byte, base 3 (trit ``i`` of a byte has weight 3**i).

    The weights are taken in C order (flattened); a tail shorter than 5 is padded
    with zero weights (trit 1).

    Returns
    -------
    numpy.ndarray of uint8
        ``packed_length(weights.size)`` bytes, each in 0..242.
    """
    w = check_ternary(weights).reshape(-1)
    pad = packed_length(w.size) * TRITS_PER_BYTE - w.size
    trits = (np.concatenate([w, np.zeros(pad, dtype=np.int8)]) + 1).astype(np.uint8)
    trits = trits.reshape(-1, TRITS_PER_BYTE)
    packed = np.zeros(len(trits), dtype=np.uint8)   # at most 242: uint8 arithmetic
    for i in reversed(range(TRITS_PER_BYTE)):
        packed = packed * 3 + trits[:, i]
    return packed


def unpack_trits(packed, count=None):
    """Unpack base-3 bytes into ternary weights (inverse of :func:`pack_trits`).

    Parameters
    ----------
    packed : array_like of uint8
        Bytes in 0..242 (1-D).
    count : int, optional
        Number of weights to return (default: all ``5 * len(packed)``).

    Raises
    ------
    ValueError
        On a byte of 243..255 (or outside 0..255), a non 1-D input, or a ``count``
        that the bytes cannot hold.
    """
    b = _as_integer_array(packed, "packed")
    if b.ndim != 1:
        raise ValueError(f"packed must be 1-D, not shape {b.shape}")
    bad = (b < 0) | (b >= PACKED_BYTE_LIMIT)
    if np.any(bad):
        index = int(np.argwhere(bad)[0][0])
        raise ValueError(
            f"invalid base-3 byte {int(b[index])} at index {index} (valid: 0..242)")
    total = b.size * TRITS_PER_BYTE
    if count is None:
        count = total
    if not isinstance(count, (int, np.integer)) or not 0 <= count <= total:
        raise ValueError(f"count must be an integer in 0..{total}, not {count!r}")
    trits = (b[:, None] // _POWERS_OF_3[None, :]) % 3
    return (trits.reshape(-1)[:count] - 1).astype(np.int8)


# Divider-free decoding of a packed byte (the hardware unpacker's rule) -----------------
#
# As llama.cpp's TQ1_0 does, scale the byte to an 8-bit fraction q ~ byte / 243 * 256,
# q = ceil(byte * 256 / 243); the base-3 digit n from the top is then
# ((q * 3**n mod 256) * 3) >> 8. Here q itself comes from a multiply and a shift,
# exact for every valid byte (checked exhaustively by the tests), so nothing divides.

#: ``q = (byte * UNPACK_MULTIPLIER + UNPACK_OFFSET) >> UNPACK_SHIFT`` for bytes 0..242.
UNPACK_MULTIPLIER = 8631
UNPACK_OFFSET = 8043
UNPACK_SHIFT = 13


def unpack_byte_mulshift(packed):
    """Decode packed bytes with the hardware's multiply-and-shift rule.

    Parameters
    ----------
    packed : array_like of int
        Byte values 0..255 (any shape).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Ternary weights of shape ``packed.shape + (5,)`` (trit ``i`` of the byte at
        index ``i``), and a boolean mask of the valid bytes. Invalid bytes (243..255)
        decode to five zero weights, as the hardware unpacker does.
    """
    b = np.asarray(packed, dtype=np.int64)
    if np.any((b < 0) | (b > 255)):
        raise ValueError("packed bytes must be in 0..255")
    valid = b < PACKED_BYTE_LIMIT
    q = (b * UNPACK_MULTIPLIER + UNPACK_OFFSET) >> UNPACK_SHIFT
    # digit n from the top is trit 4 - n
    digits = [(((q * 3 ** n) & 0xFF) * 3) >> 8 for n in range(TRITS_PER_BYTE)]
    trits = np.stack(digits[::-1], axis=-1)
    weights = np.where(valid[..., None], trits - 1, 0)
    return weights.astype(np.int8), valid


# Hugging Face packed BitNet layout (``docs/models.md``, "Checkpoint formats") ----------------
#
# A packed checkpoint (microsoft/bitnet-b1.58-2B-4T) stores each projection as uint8 of
# shape [out/4, in]: bits 2i..2i+1 of byte P[j, c] hold the code w + 1 (0, 1, 2) of
# weight W[i * out/4 + j, c]. The four rows sharing a byte are out/4 apart, so byte row j
# is "row j of each quarter of W"; code 3 is invalid.

#: Weights (2-bit codes) in one byte of the Hugging Face packed layout.
HF_CODES_PER_BYTE = 4
_HF_SHIFTS = (2 * np.arange(HF_CODES_PER_BYTE, dtype=np.uint8))[:, None, None]


def pack_hf_2bit(weights):
    """Pack a ternary weight matrix in the Hugging Face BitNet layout.

    Parameters
    ----------
    weights : array_like of int, shape (out_features, in_features)
        Ternary weights; ``out_features`` must be a multiple of 4.

    Returns
    -------
    numpy.ndarray of uint8, shape (out_features // 4, in_features)
        ``P[j, c] = sum_i (W[i * out/4 + j, c] + 1) << 2i`` for i = 0..3.

    Raises
    ------
    ValueError
        If ``weights`` is not 2-D or not ternary, or ``out_features`` is not a
        multiple of 4.
    """
    w = check_ternary(weights)
    if w.ndim != 2:
        raise ValueError(f"weights must be 2-D (out_features, in_features), not shape "
                         f"{w.shape}")
    out_features, in_features = w.shape
    if out_features % HF_CODES_PER_BYTE:
        raise ValueError(f"out_features ({out_features}) must be a multiple of "
                         f"{HF_CODES_PER_BYTE} for the packed 2-bit layout")
    codes = (w + 1).astype(np.uint8).reshape(HF_CODES_PER_BYTE, -1, in_features)
    return np.bitwise_or.reduce(codes << _HF_SHIFTS, axis=0).astype(np.uint8)


def unpack_hf_2bit(packed, out_features=None, *, name="weights"):
    """Unpack the Hugging Face BitNet layout (inverse of :func:`pack_hf_2bit`).

    Parameters
    ----------
    packed : array_like of uint8, shape (out_features // 4, in_features)
    out_features : int, optional
        Expected output features; must be ``4 * packed.shape[0]`` (checked when given).
    name : str
        Names the tensor in error messages.

    Returns
    -------
    numpy.ndarray of int8, shape (out_features, in_features)
        ``W[i * out/4 + j, :] = ((P[j, :] >> 2i) & 3) - 1``.

    Raises
    ------
    ValueError
        If ``packed`` is not 2-D bytes, ``out_features`` does not match, or a code is 3;
        the message gives the row and column of the first invalid weight.
    """
    p = np.asarray(packed)
    if p.dtype != np.uint8:
        p = _as_integer_array(p, name)
        if np.any((p < 0) | (p > 255)):
            raise ValueError(f"{name}: packed bytes must be in 0..255")
        p = p.astype(np.uint8)
    if p.ndim != 2:
        raise ValueError(f"{name}: packed weights must be 2-D (out_features / 4, "
                         f"in_features), not shape {p.shape}")
    rows = HF_CODES_PER_BYTE * p.shape[0]
    if out_features is not None and out_features != rows:
        raise ValueError(f"{name}: {p.shape[0]} packed rows hold {rows} output "
                         f"features, not {out_features}")
    codes = ((p[None, :, :] >> _HF_SHIFTS) & 3).reshape(rows, p.shape[1])
    invalid = codes == 3
    if np.any(invalid):
        row, column = (int(i) for i in np.argwhere(invalid)[0])
        raise ValueError(f"{name}: packed code 3 at row {row}, column {column}")
    return codes.astype(np.int8) - 1


#: int4 activations per byte of the stream.
INT4_PER_BYTE = 2


def int4_packed_length(count):
    """Number of bytes that hold ``count`` int4 values."""
    return -(-int(count) // INT4_PER_BYTE)


def pack_int4(values):
    """Pack int4 values (-8..7) two per byte: value ``2i`` in the low nibble of byte
    ``i``, value ``2i + 1`` in its high nibble, two's complement nibbles.

    Parameters
    ----------
    values : array_like of int
        Any shape; packed in C order. An odd count leaves the last high nibble 0.

    Returns
    -------
    numpy.ndarray of uint8, shape (ceil(count / 2),)

    Raises
    ------
    ValueError
        On a non-integer value or one outside -8..7 (the message names the first).
    """
    v = _as_integer_array(values, "int4 values").reshape(-1)
    bad = (v < INT4_MIN) | (v > INT4_MAX)
    if np.any(bad):
        index = int(np.argmax(bad))
        raise ValueError(f"int4 values must be in {INT4_MIN}..{INT4_MAX}: value "
                         f"{int(v[index])} at index {index}")
    nibbles = (v & 0xF).astype(np.uint8)
    if nibbles.size % INT4_PER_BYTE:
        nibbles = np.append(nibbles, np.uint8(0))
    return nibbles[0::2] | (nibbles[1::2] << 4)


def unpack_int4(packed, count):
    """Unpack ``count`` int4 values from bytes (inverse of :func:`pack_int4`).

    Parameters
    ----------
    packed : array_like of int, shape (n,)
        Bytes 0..255; ``n`` must be ``ceil(count / 2)``.
    count : int
        Number of values.

    Returns
    -------
    numpy.ndarray of int8, shape (count,)

    Raises
    ------
    ValueError
        On a byte outside 0..255, a byte count that does not match ``count``, or (odd
        ``count``) a nonzero padding nibble.
    """
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count must be a non-negative integer, not {count!r}")
    p = _as_integer_array(packed, "packed int4 bytes").reshape(-1)
    if np.any((p < 0) | (p > 255)):
        raise ValueError("packed int4 bytes must be in 0..255")
    if p.size != int4_packed_length(count):
        raise ValueError(f"{count} int4 values take {int4_packed_length(count)} bytes, "
                         f"not {p.size}")
    nibbles = np.stack([p & 0xF, p >> 4], axis=1).reshape(-1)
    if nibbles.size > count and nibbles[-1] != 0:
        raise ValueError("the padding nibble of an odd count must be 0")
    values = nibbles[:count]
    return (values - ((values & 0x8) << 1)).astype(np.int8)


# Memory port words (the module docstring's "Memory port words") -------------------------

BASE3, TRITS3_IN5, CODES2 = "base3", "3in5", "2bit"
#: Every packing of a memory port word.
PACKINGS = (BASE3, TRITS3_IN5, CODES2)
#: The packing of an engine with a weight port (``make bench-packing``: on a 128-bit port
#: a 16 x 32 beat takes 7 words in base3 and in 3in5, 1.75 bits a weight, and 3in5's
#: decoder costs 4.96 LUT4 eq. a weight against base3's 22.5). An engine that takes
#: whole beats keeps base3, 1.61 bits a weight with no word padding.
DEFAULT_PACKING = TRITS3_IN5

#: (bits, lane codes) of one group of each packing.
_GROUPS = {BASE3: (8, TRITS_PER_BYTE), TRITS3_IN5: (5, 3), CODES2: (TERNARY_CODE_WIDTH, 1)}


def check_packing(packing):
    """Return ``packing`` if it is one of :data:`PACKINGS`.

    Raises
    ------
    ValueError
        Otherwise; the message lists the packings.
    """
    if not isinstance(packing, str) or packing not in PACKINGS:
        raise ValueError(f"packing must be one of {', '.join(PACKINGS)}, not {packing!r}")
    return packing


def check_port_bits(port_bits):
    """Return ``port_bits`` (as ``int``) if it is a positive multiple of 8.

    Every packing fits a port of 8 bits or more (a 3in5 byte holds one group).

    Raises
    ------
    TypeError
        If ``port_bits`` is not an integer (``bool`` is refused too).
    ValueError
        If it is not a positive multiple of 8.
    """
    if isinstance(port_bits, bool) or not isinstance(port_bits, (int, np.integer)):
        raise TypeError(f"port_bits must be a positive integer multiple of 8, not "
                        f"{port_bits!r}")
    if port_bits < 8 or port_bits % 8:
        raise ValueError(f"port_bits must be a positive multiple of 8, not {port_bits}")
    return int(port_bits)


def group_bits(packing):
    """Bits of one group of ``packing``: base3 8, 3in5 5, 2bit 2."""
    return _GROUPS[check_packing(packing)][0]


def codes_per_group(packing):
    """Lane codes (weights) in one group of ``packing``: base3 5, 3in5 3, 2bit 1."""
    return _GROUPS[check_packing(packing)][1]


def codes_per_word(packing, port_bits):
    """Lane codes in one ``port_bits``-bit word of ``packing``.

    base3 ``5 * (port_bits // 8)``, 3in5 ``3 * (port_bits // 5)`` (the top
    ``port_bits % 5`` bits unused), 2bit ``port_bits // 2``.

    Raises
    ------
    ValueError, TypeError
        As :func:`check_packing` and :func:`check_port_bits`.
    """
    return codes_per_group(packing) * (check_port_bits(port_bits) // group_bits(packing))


def bits_per_weight(packing):
    """Memory bits per weight of ``packing`` on an unbounded port (no unused bits, no
    padding): base3 1.6, 3in5 5/3, 2bit 2.0."""
    return group_bits(packing) / codes_per_group(packing)


def words_for(count, packing, port_bits):
    """Port words that hold ``count`` weights: ``ceil(count / codes_per_word)``.

    Raises
    ------
    ValueError
        If ``count`` is not a non-negative integer (or as :func:`codes_per_word`).
    """
    per_word = codes_per_word(packing, port_bits)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count must be a non-negative integer, not {count!r}")
    return -(-int(count) // per_word)


def pack_words(weights, packing, port_bits):
    """Pack ternary weights into memory port words.

    Parameters
    ----------
    weights : array_like of int, 1-D
        Weights in {-1, 0, +1}; weight ``n`` is code ``n % codes_per_word`` of word
        ``n // codes_per_word``.
    packing : str
        One of :data:`PACKINGS`.
    port_bits : int
        Word width, a positive multiple of 8.

    Returns
    -------
    numpy.ndarray of uint8, shape (words_for(len(weights)), port_bits // 8)
        The words, little-endian bytes. The last word is padded with zero weights; the
        bits no group covers (3in5's top ``port_bits % 5``) are 0.

    Raises
    ------
    ValueError
        If ``weights`` is not 1-D or not ternary, or on a bad ``packing``.
    TypeError
        On a ``port_bits`` that is not an integer.
    """
    per_word = codes_per_word(packing, port_bits)
    w = check_ternary(weights)
    if w.ndim != 1:
        raise ValueError(f"weights must be 1-D, not shape {w.shape}")
    bits, codes = _GROUPS[packing]
    words = words_for(w.size, packing, port_bits)
    w = np.concatenate([w, np.zeros(words * per_word - w.size, dtype=np.int8)])
    groups = w.reshape(words, per_word // codes, codes)
    if packing == CODES2:
        values = encode_lane_codes(groups[..., 0]).astype(np.int64)
    else:
        values = ((groups.astype(np.int64) + 1) * 3 ** np.arange(codes)).sum(axis=-1)
    used = values.shape[1] * bits
    word_bits = np.zeros((words, port_bits), dtype=np.uint8)
    word_bits[:, :used] = ((values[..., None] >> np.arange(bits)) & 1).reshape(words, used)
    return np.packbits(word_bits, axis=1, bitorder="little")


def _group_values(words, packing, port_bits):
    """(words, groups) int64: the value of every group of every word."""
    check_packing(packing)
    port_bits = check_port_bits(port_bits)
    b = _as_integer_array(words, "words")
    width = port_bits // 8
    if b.ndim != 2 or b.shape[1] != width:
        raise ValueError(f"words of a {port_bits}-bit port must have shape (words, {width}), "
                         f"not {b.shape}")
    if np.any((b < 0) | (b > 255)):
        raise ValueError("word bytes must be in 0..255")
    bits = np.unpackbits(b.astype(np.uint8), axis=1, bitorder="little")
    size = group_bits(packing)
    groups = port_bits // size
    fields = bits[:, :groups * size].reshape(len(b), groups, size).astype(np.int64)
    return (fields << np.arange(size)).sum(axis=-1)


def _decode_groups(values, packing):
    """Lane codes (..., codes per group) and invalid mask (...) of group values, invalid
    base-3 groups as zero codes, 2bit codes as stored."""
    if packing == CODES2:
        return values[..., None].astype(np.uint8), values == CODE_INVALID
    codes = codes_per_group(packing)
    invalid = values >= 3 ** codes
    trits = (values[..., None] // 3 ** np.arange(codes)) % 3
    return encode_lane_codes(np.where(invalid[..., None], 0, trits - 1)), invalid


def decode_words(words, packing, port_bits):
    """Lane codes and invalid flags of port words: what the RTL's word decoder emits
    (:class:`hw.unpack.WordDecoder`).

    Parameters
    ----------
    words : array_like of int, shape (words, port_bits // 8)
        Bytes 0..255.
    packing : str
        One of :data:`PACKINGS`.
    port_bits : int
        Word width, a positive multiple of 8.

    Returns
    -------
    codes : numpy.ndarray of uint8, shape (words, codes_per_word)
        Lane codes. base3 and 3in5: an invalid group gives :data:`CODE_ZERO` codes.
        2bit: the codes as stored, :data:`CODE_INVALID` included.
    invalid : numpy.ndarray of bool, shape (words,)
        base3 and 3in5: the word holds an invalid group. 2bit: always false (the matmul
        unit flags :data:`CODE_INVALID` itself).

    Raises
    ------
    ValueError
        On a bad shape, a byte outside 0..255 or a bad ``packing``.
    """
    values = _group_values(words, packing, port_bits)
    codes, invalid = _decode_groups(values, packing)
    flag = invalid.any(axis=1) if packing != CODES2 else np.zeros(len(values), dtype=bool)
    return codes.reshape(len(values), -1), flag


def _invalid_message(packing, value, word, group):
    bits, codes = _GROUPS[packing]
    span = f"bits {group * bits}..{(group + 1) * bits - 1}"
    if packing == CODES2:
        return f"invalid lane code 0b10 at word {word}, code {group} ({span})"
    name = "byte" if packing == BASE3 else "group"
    first = group * codes
    return (f"invalid {packing} {name} value {value} (valid: 0..{3 ** codes - 1}) at word "
            f"{word}, {name} {group} ({span}, codes {first}..{first + codes - 1})")


def unpack_words(words, packing, port_bits, count=None, *, strict=True):
    """Unpack port words into ternary weights (inverse of :func:`pack_words`).

    Parameters
    ----------
    words : array_like of int, shape (words, port_bits // 8)
        Bytes 0..255.
    packing : str
        One of :data:`PACKINGS`.
    port_bits : int
        Word width, a positive multiple of 8.
    count : int, optional
        Weights to return (default: every code of every word).
    strict : bool
        If true, an invalid code anywhere in ``words`` (padding included) raises. If
        false it decodes to zero weights, as the hardware does (a base3 or 3in5 invalid
        group gives zero weights for all its codes).

    Returns
    -------
    numpy.ndarray of int8, shape (count,)

    Raises
    ------
    ValueError
        On an invalid code when ``strict`` (the message names the first: its word, its
        group or code and bits), a ``count`` the words cannot hold, or as
        :func:`decode_words`.
    """
    values = _group_values(words, packing, port_bits)
    codes, invalid = _decode_groups(values, packing)
    total = codes.size
    if count is None:
        count = total
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or \
            not 0 <= count <= total:
        raise ValueError(f"count must be an integer in 0..{total}, not {count!r}")
    if strict and np.any(invalid):
        word, group = (int(i) for i in np.argwhere(invalid)[0])
        raise ValueError(_invalid_message(packing, int(values[word, group]), word, group))
    return decode_lane_codes(codes.reshape(-1)[:count], strict=False)
