"""The integer model of the hardware: exact accumulation and the fixed-point output stage.

Everything the RTL computes is defined here, bit for bit:

* :func:`acc_width` sizes an accumulator for K terms of magnitude <= 128 (int8
  activations; 8 for the int4 activations of BitNet a4.8, ``act_width=4``) so that no
  input can overflow it. :data:`ACT_WIDTHS` are the activation widths the hardware
  is built for, checked by :func:`check_act_width`; :func:`act_range` gives each range.
* :func:`matmul_int` is the exact add-only product ``acc = x_q @ W_q.T``.
* :func:`round_fixed` is the output stage: ``acc * S`` shifted right by ``shift`` with
  round-half-up (ties toward +inf), then saturated to :data:`OUT_WIDTH` signed bits.
* :func:`scale_to_fixed` turns the float factor ``beta / s`` into the ``(S, shift)``
  pair handed to the hardware, and :func:`fixed_error_bound` is the documented bound
  between the fixed-point result and the float reference.
"""

import numpy as np

from ternary_accel.model.encoding import check_binary, check_ternary
from ternary_accel.model.quant import ACT_MIN, ACT_WIDTH, ACT_WIDTHS, BINARY, INT8, TERNARY, WEIGHT_MODES

__all__ = [
    "TERM_MAGNITUDE", "SCALE_WIDTH", "SHIFT_WIDTH", "SHIFT_MAX", "OUT_WIDTH",
    "ACT_WIDTHS", "check_act_width", "act_range",
    "acc_width", "term_magnitude", "signed_range", "wrap_signed",
    "check_activations", "check_weights", "matmul_int",
    "round_fixed", "scale_to_fixed", "fixed_error_bound",
]

#: Largest magnitude of one product term: ``|w * x|`` <= ``|-128|`` for w in {-1, 0, +1}.
TERM_MAGNITUDE = -ACT_MIN

def check_act_width(act_width):
    """Return ``act_width`` if it is one of :data:`model.quant.ACT_WIDTHS`: 4 (BitNet
    a4.8's int4 q/k/v/gate/up inputs, two per byte on the stream) or 8 (the default).

    Raises
    ------
    TypeError
        If it is not an integer (``bool`` is refused too).
    ValueError
        If it is not in :data:`ACT_WIDTHS`.
    """
    if isinstance(act_width, bool) or not isinstance(act_width, (int, np.integer)):
        raise TypeError(f"act_width must be an integer, not {act_width!r}")
    if act_width not in ACT_WIDTHS:
        raise ValueError(f"act_width must be one of {', '.join(map(str, ACT_WIDTHS))}, "
                         f"not {act_width!r}")
    return int(act_width)


def act_range(act_width=ACT_WIDTH):
    """``(min, max)`` of an activation of ``act_width`` bits: -128..127, or -8..7."""
    return signed_range(check_act_width(act_width))

#: Bits of the unsigned output-stage multiplier ``S``.
SCALE_WIDTH = 16
#: Bits of the output-stage right shift.
SHIFT_WIDTH = 6
SHIFT_MAX = (1 << SHIFT_WIDTH) - 1
#: Bits of the signed, saturated output-stage result.
OUT_WIDTH = 16


def term_magnitude(mode=TERNARY, act_width=ACT_WIDTH):
    """Largest ``|w * x|`` of one lane: ``2**(act_width - 1)`` for ternary/binary (128 for
    int8 activations, 8 for int4), times 128 for the int8 weights of the baseline."""
    return -act_range(act_width)[0] * (-ACT_MIN if mode == INT8 else 1)


def acc_width(terms, mode=TERNARY, act_width=ACT_WIDTH):
    """Signed width that holds any sum of ``terms`` products of ``mode``'s lanes.

    ``ceil(log2(terms * 2**(act_width - 1) + 1)) + 1`` for ternary and binary weights
    (``terms * 128`` for int8 activations, ``terms * 8`` for int4), computed exactly
    with integers (``128 * 2**(act_width - 1)`` per term for the int8 baseline).

    Raises
    ------
    ValueError
        If ``terms`` is not a positive integer or ``act_width`` not in
        :data:`ACT_WIDTHS`.
    """
    if isinstance(terms, bool) or not isinstance(terms, (int, np.integer)) or terms < 1:
        raise ValueError(f"terms must be a positive integer, not {terms!r}")
    return int(terms * term_magnitude(mode, act_width)).bit_length() + 1


def signed_range(width):
    """``(min, max)`` of a two's complement integer of ``width`` bits."""
    return -(1 << (width - 1)), (1 << (width - 1)) - 1


def wrap_signed(values, width):
    """Reduce integers modulo ``2**width`` into the signed range (two's complement wrap)."""
    v = np.asarray(values, dtype=np.int64)
    half = 1 << (width - 1)
    return ((v + half) & ((1 << width) - 1)) - half


def check_activations(activations, name="activations", act_width=ACT_WIDTH):
    """Return integer activations as ``int64`` after checking they are in the range of
    ``act_width`` bits (int8: -128..127; int4: -8..7).

    Raises
    ------
    ValueError
        On a non-integer dtype, a value out of range, or a bad ``act_width``.
    """
    lo, hi = act_range(act_width)
    a = np.asarray(activations)
    if not (np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{name} must be an integer array, not dtype {a.dtype}")
    a = a.astype(np.int64)
    if np.any((a < lo) | (a > hi)):
        raise ValueError(f"{name} must be int{act_width} ({lo}..{hi})")
    return a


def check_weights(weights, mode=TERNARY, name="weights"):
    """Check integer weights for ``mode`` and return them as ``int8``."""
    if mode == TERNARY:
        return check_ternary(weights, name)
    if mode == BINARY:
        return check_binary(weights, name)
    raise ValueError(f"weight mode must be one of {WEIGHT_MODES}, not {mode!r}")


def matmul_int(weights, activations, mode=TERNARY, act_width=ACT_WIDTH):
    """Exact integer BitLinear core: ``acc[t, m] = sum_k W[m, k] * x[t, k]``.

    Parameters
    ----------
    weights : array_like of int, shape (M, K)
        Ternary (or binary, with ``mode=BINARY``) weights.
    activations : array_like of int, shape (T, K) or (K,)
        int8 (or, with ``act_width=4``, int4) activations, one row per token.
    mode : str
        :data:`TERNARY` or :data:`BINARY`.
    act_width : int
        Bits of an activation, one of :data:`ACT_WIDTHS`; the activations are checked
        against its range.

    Returns
    -------
    numpy.ndarray of int64, shape (T, M) or (M,)
        The accumulators. They always fit in ``acc_width(K, mode, act_width)`` signed
        bits.

    Raises
    ------
    ValueError
        On non-ternary/binary weights, out-of-range activations or mismatched shapes.
    """
    w = check_weights(weights, mode)
    x = check_activations(activations, act_width=act_width)
    if w.ndim != 2:
        raise ValueError(f"weights must be 2-D (M, K), not shape {w.shape}")
    if x.ndim not in (1, 2):
        raise ValueError(f"activations must be 1-D (K,) or 2-D (T, K), not shape {x.shape}")
    if x.shape[-1] != w.shape[1]:
        raise ValueError(
            f"activations have {x.shape[-1]} features but weights have {w.shape[1]} columns")
    # float64 BLAS is exact here: every product and partial sum is an integer of
    # magnitude <= 128 * K, far below 2**53 for any real K (and much faster than int64).
    if w.shape[1] * TERM_MAGNITUDE >= 1 << 53:
        return x @ w.astype(np.int64).T
    return (x.astype(np.float64) @ w.astype(np.float64).T).astype(np.int64)


def round_fixed(acc, scale, shift, out_width=OUT_WIDTH):
    """The hardware output stage: ``sat(floor((acc * scale + (2**shift >> 1)) / 2**shift))``.

    Rounding is round-half-up (ties toward +inf): add half an output LSB, then an
    arithmetic right shift. With ``shift = 0`` the product passes unchanged. The result
    saturates to the signed range of ``out_width`` bits.

    Parameters
    ----------
    acc : array_like of int
        Accumulators.
    scale : int or array_like of int
        Unsigned multiplier ``S`` (``SCALE_WIDTH`` bits), broadcast against ``acc``.
    shift : int or array_like of int
        Right shift in 0..``SHIFT_MAX``, broadcast against ``acc``.
    out_width : int
        Bits of the signed result.

    Returns
    -------
    numpy.ndarray of int64
    """
    a = np.asarray(acc, dtype=np.int64)
    s = np.asarray(scale, dtype=np.int64)
    n = np.asarray(shift, dtype=np.int64)
    if np.any((s < 0) | (s >= (1 << SCALE_WIDTH))):
        raise ValueError(f"scale must be in 0..{(1 << SCALE_WIDTH) - 1}")
    if np.any((n < 0) | (n > SHIFT_MAX)):
        raise ValueError(f"shift must be in 0..{SHIFT_MAX}")
    # Python ints: acc * S can exceed 63 bits only for absurd K, but stay exact anyway.
    product = a.astype(object) * s.astype(object)
    rounded = (product + ((1 << n.astype(object)) >> 1)) >> n.astype(object)
    lo, hi = signed_range(out_width)
    return np.clip(rounded, lo, hi).astype(np.int64)


def scale_to_fixed(factor, frac_bits):
    """Convert float rescale factors ``beta / s`` to hardware ``(S, shift)`` pairs.

    ``S * 2**-(frac_bits + shift) ~= factor``, with the largest ``shift`` (at most
    :data:`SHIFT_MAX`) that keeps ``S`` within :data:`SCALE_WIDTH` bits, so the result
    ``round_fixed(acc, S, shift)`` carries ``frac_bits`` fractional bits.

    Parameters
    ----------
    factor : float or array_like of float
        Positive, finite rescale factors (one per token).
    frac_bits : int
        Fractional bits of the output-stage result.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``S`` and ``shift`` as ``int64`` arrays of the shape of ``factor``.

    Raises
    ------
    ValueError
        If a factor is not positive and finite, or too large to represent even with
        ``shift = 0``.
    """
    f = np.asarray(factor, dtype=np.float64)
    if not np.all(np.isfinite(f)) or np.any(f <= 0):
        raise ValueError("rescale factors must be positive and finite")
    if not isinstance(frac_bits, (int, np.integer)) or frac_bits < 0:
        raise ValueError(f"frac_bits must be a non-negative integer, not {frac_bits!r}")
    limit = (1 << SCALE_WIDTH) - 1
    # Largest shift with rint(f * 2**(frac_bits + shift)) <= limit.
    exponent = np.floor(np.log2(limit / f)).astype(np.int64) - frac_bits
    shift = np.clip(exponent, 0, SHIFT_MAX)
    scale = np.rint(f * np.exp2((frac_bits + shift).astype(np.float64))).astype(np.int64)
    over = scale > limit
    shift = np.where(over, shift - 1, shift)  # rint may round up past the limit
    scale = np.rint(f * np.exp2((frac_bits + shift).astype(np.float64))).astype(np.int64)
    if np.any(shift < 0) or np.any(scale > limit):
        raise ValueError(
            f"rescale factor too large for {SCALE_WIDTH}-bit S with {frac_bits} fractional "
            "output bits; use fewer fractional bits")
    return scale, shift


def fixed_error_bound(acc, shift, frac_bits):
    """Bound on ``|round_fixed(acc, S, shift) * 2**-frac_bits - acc * factor|``.

    ``S`` is within half an LSB of ``factor * 2**(frac_bits + shift)``, so the
    product is off by at most ``|acc| / 2`` LSBs of ``2**-(frac_bits + shift)``; the
    final rounding adds half an output LSB. Valid when the result does not saturate.

    Returns
    -------
    numpy.ndarray of float64
        ``2**-frac_bits * (0.5 + |acc| * 2**-(shift + 1))``, per element.
    """
    a = np.abs(np.asarray(acc, dtype=np.float64))
    n = np.asarray(shift, dtype=np.float64)
    return np.exp2(-float(frac_bits)) * (0.5 + a * np.exp2(-(n + 1)))
