"""Weight encodings: the datapath lane codes and the base-3 packed storage format.

Every encoding the hardware, the simulator and the host driver use is defined here
and nowhere else (see ``shared/reference/bitlinear.md``).

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

int4 activations
----------------
BitNet a4.8's int4 activations (-8..7) travel two per byte: the even-indexed value in
the low nibble, the odd one in the high nibble, each a 4-bit two's complement
(:func:`pack_int4`). That is also the bit order of the hardware's activation beat
(``ArrayLayout(signed(4), lanes)``, lane 0 in the lowest bits).
"""

import numpy as np

from .quant import ACT_WIDTH, BINARY, HW_WEIGHT_MODES, INT4_MAX, INT4_MIN, INT8, TERNARY

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


# Hugging Face packed BitNet layout (``models.md``, "Checkpoint formats") ----------------
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
