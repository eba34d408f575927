"""Hardware numerics: every operation of a token besides the BitLinears' integer core,
defined in integer and fixed-point arithmetic with explicit widths, rounding and
saturation (``docs/numerics.md``).

This module is the definition the RTL of the vector, attention and LM-head units is
checked against, word for word: every function here is pure NumPy on ``int64`` arrays,
vectorized, with no float in its integer path. Where a float makes a table (the rsqrt
seeds, the exp2 table, RoPE's cos/sin, a checkpoint's gains and scales), the table is
built once by code here and the integers it holds are what the hardware holds.

Conventions (one rule each, used everywhere):

* A **fixed-point** value with ``F`` fractional bits is the integer ``round(x * 2**F)``.
* **Rounding** is round-half-up by an arithmetic right shift (:func:`round_shift`):
  ``floor((v + 2**(n-1)) / 2**n)``, the output stage's rule (:func:`model.arith.round_fixed`).
* **Saturation** clips to a signed width (:func:`saturate`) and is counted per operation
  in a :class:`Saturations` tally; an evaluation reports the counts. A constant of a
  checkpoint that does not fit its format is an error (:class:`NumericsError`), never
  clipped.
* A positive quantity of unknown range (a maximum, a sum of squares, a per-token scale)
  is carried as a **mantissa and exponent** (:func:`normalize`): ``value ~= mant *
  2**exp`` with ``mant`` of a stated width; this is the block format of every scale.
"""

from dataclasses import asdict, dataclass, field, fields, replace
from numbers import Integral

import numpy as np

__all__ = ["NumericsError", "HwNumerics", "Saturations", "DEFAULT", "WIDE",
           "round_shift", "shift_left", "saturate", "signed_limits", "bit_length",
           "normalize", "to_fixed", "fixed_constant", "reciprocal", "rsqrt_table",
           "rsqrt", "exp2_table", "exp2_neg", "rope_table", "quantize_absmax",
           "quantize_absmean", "rescale", "output_factor", "NormQuant", "norm_quant", "norm_constant",
           "softmax_weights", "residual_add", "relu2", "gate_product", "rope_rotate",
           "SCORE_BITS", "code_factor", "score_factor", "attention_scores",
           "attention_values",
           "head_trits", "trits_value", "HEAD_FORMATS", "TRIT5_MAX", "operations",
           "kv_bytes_per_position", "kv_factor_bits", "FACTOR_EXP_BITS", "GROUPED_HEAD", "HeadMatrix", "quantize_head",
           "pack_head", "unpack_head", "head_row_bytes", "head_scale_bytes", "head_bytes",
           "head_accumulators", "head_logits", "argmax"]


class NumericsError(ValueError):
    """A width out of range, or a checkpoint constant that its format cannot hold."""


#: LM head formats: ``int8``: signed ``head_bits``-bit rows (absmax per row);
#: ``trit5``: five balanced trits per weight (-121..121; five passes of the add-only
#: engine), a base-3 byte each; ``grouped``: signed ``head_bits``-bit codes with an
#: unsigned ``head_group_bits``-bit multiplier per ``head_group`` inputs under the row
#: scale (two-level scales, :func:`quantize_head`).
HEAD_FORMATS = ("int8", "trit5", "grouped")
#: Largest magnitude of five balanced trits: 1 + 3 + 9 + 27 + 81.
TRIT5_MAX = 121

#: Values of the shifts and the per-token units stay below this (a rounding add on top
#: of them must not reach 2**63).
_LIMIT = 1 << 62


@dataclass(frozen=True)
class HwNumerics:
    """The widths and table sizes of the hardware numerics; every one a parameter.

    The defaults are those chosen by measurement on the reference model
    (``docs/numerics.md``, ``ternary-accel bench numerics``); :data:`WIDE` is the same
    arithmetic at widths where each operation's error is negligible, the baseline of
    the per-operation measurements.

    Attributes
    ----------
    resid_bits, resid_frac : int
        The residual stream and every vector passed between units (BitLinear outputs,
        RoPE'd q/k, attention outputs, the FFN product): signed fixed point of
        ``resid_bits`` bits with ``resid_frac`` fractional bits. Adds saturate.
    gain_bits : int
        Signed width of the RMSNorm gains; each gain vector gets its own exponent.
    rsqrt_bits, rsqrt_seed_bits, newton_steps : int
        RMSNorm's reciprocal square root: a table of ``2**rsqrt_seed_bits`` seeds,
        then Newton steps, in ``rsqrt_bits``-bit unsigned fixed point.
    recip_bits : int
        Mantissa bits of the per-token reciprocal of the activation quantizers (and of
        the attention's per-head quantizers and the softmax's row sum).
    scale_bits : int
        Mantissa bits of every scale: the BitLinear output stage's per-token factor,
        the projections' weight scales, the LM head's row scales.
    rope_bits : int
        Signed width of the cos/sin tables (``rope_bits - 2`` fractional bits).
    qk_bits : int
        Q and K quantized per head and token (absmax) for the integer scores; K as the
        cache stores it.
    softmax_frac : int
        Fractional bits of the scores in log2 units; the exp2 table has
        ``2**softmax_frac`` entries.
    exp_bits : int
        Fractional bits of the exp2 table's entries (1.0 = ``2**exp_bits``).
    prob_bits : int
        Fractional bits of the softmax weights.
    v_bits : int
        V in the cache, absmax per head and position (``kv_bits`` of the decoder, a4.8's
        3 or 4, overrides both K and V).
    head : str
        LM head format, :data:`HEAD_FORMATS`.
    head_bits : int
        Width of an ``int8`` head's weights (8; wider only for measurements).
    head_act_bits : int
        Width of the head's input (the final norm's absmax quantizer; 8).
    head_group, head_group_bits : int
        A ``grouped`` head: inputs per group multiplier (a divisor of the hidden size)
        and the multipliers' unsigned width.
    """

    resid_bits: int = 24
    resid_frac: int = 12
    gain_bits: int = 12
    rsqrt_bits: int = 16
    rsqrt_seed_bits: int = 6
    newton_steps: int = 1
    recip_bits: int = 16
    scale_bits: int = 16
    rope_bits: int = 16
    qk_bits: int = 8
    softmax_frac: int = 8
    exp_bits: int = 16
    prob_bits: int = 16
    v_bits: int = 8
    head: str = "int8"
    head_bits: int = 8
    head_act_bits: int = 8
    head_group: int = 32
    head_group_bits: int = 6

    _RANGES = {
        "resid_bits": (8, 24), "resid_frac": (0, 22), "gain_bits": (4, 24),
        "rsqrt_bits": (8, 24), "rsqrt_seed_bits": (2, 12), "newton_steps": (0, 3),
        "recip_bits": (8, 24), "scale_bits": (8, 24), "rope_bits": (4, 24),
        "qk_bits": (3, 16), "softmax_frac": (2, 14), "exp_bits": (8, 24),
        "prob_bits": (8, 20), "v_bits": (3, 16), "head_bits": (4, 16),
        "head_act_bits": (4, 16), "head_group": (2, 4096), "head_group_bits": (2, 8),
    }

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "head":
                if value not in HEAD_FORMATS:
                    raise NumericsError(f"head must be one of {HEAD_FORMATS}, not {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, Integral):
                raise NumericsError(f"{f.name} must be an integer, not {value!r}")
            low, high = self._RANGES[f.name]
            if not low <= value <= high:
                raise NumericsError(f"{f.name} = {value} is outside {low}..{high}")
        if self.resid_frac > self.resid_bits - 2:
            raise NumericsError(f"resid_frac = {self.resid_frac} leaves no integer bits in "
                                f"{self.resid_bits}-bit residuals (at most "
                                f"{self.resid_bits - 2})")
        if self.rsqrt_seed_bits > self.rsqrt_bits - 2:
            raise NumericsError(f"rsqrt_seed_bits = {self.rsqrt_seed_bits} exceeds "
                                f"rsqrt_bits - 2 = {self.rsqrt_bits - 2}")

    def to_dict(self):
        return {k: v for k, v in asdict(self).items()}

    def replace(self, **changes):
        """A copy with ``changes`` (checked)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise NumericsError(f"unknown numerics parameter(s): {', '.join(sorted(unknown))}")
        return replace(self, **changes)

    @property
    def one(self):
        """1.0 in the residual format."""
        return 1 << self.resid_frac


#: The defaults (chosen by measurement, ``docs/numerics.md``).
DEFAULT = HwNumerics()
#: Each operation at a width where its error is negligible: the baseline against which
#: one operation at a time is narrowed to its default (``bench numerics``).
WIDE = HwNumerics(resid_bits=24, resid_frac=14, gain_bits=20, rsqrt_bits=24,
                  rsqrt_seed_bits=10, newton_steps=2, recip_bits=24, scale_bits=24,
                  rope_bits=24, qk_bits=16, softmax_frac=14, exp_bits=24, prob_bits=20,
                  v_bits=16, head="int8", head_bits=16,
                  head_act_bits=16)


#: The LM head of the bandwidth-bound presets (``hw perf``, ``docs/performance.md``):
#: 4-bit codes with a 6-bit multiplier per 32 inputs, 4.2 bits a weight against the
#: int8 head's 8; of the 4-bit candidates the closest to the float-numerics model
#: (``make bench-head``, ``docs/results/bench-head.md``).
GROUPED_HEAD = DEFAULT.replace(head="grouped", head_bits=4)


@dataclass
class Saturations:
    """Saturations counted per operation (values clipped to their format)."""

    counts: dict = field(default_factory=dict)

    def add(self, op, n):
        n = int(n)
        if n:
            self.counts[op] = self.counts.get(op, 0) + n

    @property
    def total(self):
        return sum(self.counts.values())

    def __str__(self):
        if not self.counts:
            return "none"
        return ", ".join(f"{op} {n:,}" for op, n in sorted(self.counts.items()))


# -- integer primitives -------------------------------------------------------------------

def _int(a):
    return np.asarray(a, dtype=np.int64)


def round_shift(value, shift):
    """``value / 2**shift`` rounded half up (ties toward +inf), by an arithmetic shift.

    ``shift`` (scalar or broadcast array) may be 0 or negative: a left shift, exact; a
    left shift past 62 bits gives +-2**62 (beyond every format: the caller's saturation
    catches it), never a wrapped value.
    """
    v = _int(value)
    s = _int(shift)
    right = np.minimum(np.maximum(s, 0), 62)
    half = np.where(right > 0, np.left_shift(np.int64(1), np.maximum(right - 1, 0)), 0)
    down = np.where(s > 62, 0, np.right_shift(v + half, right))
    left = np.maximum(-s, 0)
    if not np.any(left):
        return down
    over = bit_length(np.abs(v)) + left > 62
    up = np.left_shift(v, np.minimum(left, 62))
    up = np.where(over, np.sign(v) * (np.int64(1) << 62), up)
    return np.where(s < 0, up, down)


def shift_left(value, shift):
    """``value * 2**shift`` for ``shift`` >= 0, ``round_shift`` for negative shifts."""
    return round_shift(value, -_int(shift))


def signed_limits(bits):
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def saturate(value, bits, tally=None, op=None):
    """Clip to the signed range of ``bits`` bits; count the clipped values in ``tally``."""
    v = _int(value)
    low, high = signed_limits(bits)
    if tally is not None:
        tally.add(op, np.count_nonzero((v < low) | (v > high)))
    return np.clip(v, low, high)


def bit_length(value):
    """Bits of each non-negative integer (0 for 0): a leading-one detector."""
    v = _int(value)
    if np.any(v < 0):
        raise NumericsError("bit_length of a negative value")
    n = np.zeros(v.shape, dtype=np.int64)
    for b in (32, 16, 8, 4, 2, 1):
        big = np.right_shift(v, n + b) > 0            # a one at or above bit n + b
        n = np.where(big, n + b, n)
    return np.where(v > 0, n + 1, 0)


def normalize(value, bits):
    """Mantissa and exponent of non-negative integers: ``value ~= mant * 2**exp`` with
    ``mant`` from ``2**(bits-1)`` to ``2**bits`` (rounded half up, so ``2**bits`` itself
    occurs), exact when ``value`` has at most ``bits`` bits. ``value = 0`` gives
    ``(0, 0)``."""
    v = _int(value)
    exp = bit_length(v) - bits
    mant = round_shift(v, exp)
    return np.where(v > 0, mant, 0), np.where(v > 0, exp, 0)


def to_fixed(values, frac):
    """Float constants to fixed point: ``round_half_up(x * 2**frac)`` (table making only;
    exact for float64 inputs whose scaled value is below 2**52)."""
    x = np.asarray(values, dtype=np.float64) * np.exp2(frac)
    return np.floor(x + 0.5).astype(np.int64)


def fixed_constant(values, bits, what):
    """Positive float constants (scales) as mantissa/exponent pairs: ``x ~= mant *
    2**exp``, ``mant`` from ``2**(bits-1)`` to ``2**bits - 1``. Raises on non-positive or
    non-finite values (naming ``what``)."""
    x = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(x)) or np.any(x <= 0):
        raise NumericsError(f"{what}: scales must be positive and finite")
    exp = np.floor(np.log2(x)).astype(np.int64) - (bits - 1)
    mant = np.floor(x * np.exp2(-exp.astype(np.float64)) + 0.5).astype(np.int64)
    over = mant >= (1 << bits)
    exp = np.where(over, exp + 1, exp)
    mant = np.where(over, mant >> 1, mant)
    return mant, exp


def reciprocal(value, bits):
    """``1 / value`` of positive integers as ``(r, exp)``: ``1/value ~= r * 2**exp``.

    ``value`` is normalized to a ``bits``-bit mantissa ``m`` (:func:`normalize`), then
    ``r = round(2**(2*bits - 1) / m)`` by an integer division (one per token: a
    ``bits``-cycle divider), so ``r`` is in ``2**(bits-1) .. 2**bits``. Zero is refused
    (callers substitute 1 for an all-zero row).
    """
    v = _int(value)
    if np.any(v <= 0):
        raise NumericsError("reciprocal of a non-positive value")
    if np.any(v >= _LIMIT):
        raise NumericsError("reciprocal of a value of more than 62 bits")
    m, e = normalize(v, bits)
    r = ((np.int64(1) << (2 * bits)) // m + 1) >> 1
    return r, -(2 * bits - 1) - e


def rsqrt_table(seed_bits, bits):
    """Seeds of ``1/sqrt(u)`` for ``u`` in [1/4, 1): entry ``i`` (``i`` from
    ``2**(seed_bits-2)`` to ``2**seed_bits - 1``, the top ``seed_bits`` bits of ``u``)
    holds ``1/sqrt`` of the interval's midpoint in ``bits - 2`` fractional bits. The
    table has ``2**seed_bits`` entries (the first quarter unused: ``u >= 1/4``)."""
    i = np.arange(1 << seed_bits, dtype=np.float64)
    mid = (i + 0.5) / (1 << seed_bits)
    table = to_fixed(1.0 / np.sqrt(np.maximum(mid, 0.25)), bits - 2)
    table[: 1 << (seed_bits - 2)] = 0
    return table


def rsqrt(value, numerics, table=None):
    """``1/sqrt(value)`` of positive integers as ``(y, exp)``: ``~= y * 2**exp``.

    ``value = u * 2**(2k)`` with ``u`` in [1/4, 1) as a ``rsqrt_bits``-bit mantissa
    (even exponent); the seed is the table entry of ``u``'s top ``rsqrt_seed_bits``
    bits; each Newton step is ``y <- y * (3 - u * y**2) / 2`` with every product
    rounded to ``rsqrt_bits - 2`` fractional bits. ``y`` is in (1, 2] then.
    """
    p = numerics.rsqrt_bits
    frac = p - 2
    if table is None:
        table = rsqrt_table(numerics.rsqrt_seed_bits, p)
    v = _int(value)
    if np.any(v <= 0):
        raise NumericsError("rsqrt of a non-positive value")
    if np.any(v >= _LIMIT):
        raise NumericsError("rsqrt of a value of more than 62 bits")
    e = bit_length(v) - p
    e = e + (e & 1)                          # even: u = v / 2**(e + p) in [1/4, 1)
    u = round_shift(v, e)                    # p fractional bits
    u = np.minimum(u, (np.int64(1) << p) - 1)
    y = table[np.right_shift(u, p - numerics.rsqrt_seed_bits)]
    three = np.int64(3) << frac
    for _ in range(numerics.newton_steps):
        y2 = round_shift(y * y, frac)                    # frac bits
        uy2 = round_shift(u * y2, p)                     # frac bits
        y = round_shift(y * (three - uy2), frac + 1)
    # 1/sqrt(v) = 1/sqrt(u) * 2**(-(e + p)/2); y holds 1/sqrt(u) with frac bits.
    return y, -frac - (e + p) // 2


def exp2_table(softmax_frac, exp_bits):
    """``2**(-i / 2**softmax_frac)`` for ``i`` from 0 to ``2**softmax_frac - 1``, in
    ``exp_bits`` fractional bits (entry 0 is 1.0 = ``2**exp_bits``)."""
    i = np.arange(1 << softmax_frac, dtype=np.float64)
    return to_fixed(np.exp2(-i / (1 << softmax_frac)), exp_bits)


def exp2_neg(d, numerics, table=None):
    """``2**(-d)`` for non-negative fixed-point ``d`` (``softmax_frac`` fractional bits),
    in ``exp_bits`` fractional bits: the table entry of the fraction, shifted right by
    the integer part (rounded; 0 beyond ``exp_bits + 1``)."""
    frac = numerics.softmax_frac
    if table is None:
        table = exp2_table(frac, numerics.exp_bits)
    d = _int(d)
    if np.any(d < 0):
        raise NumericsError("exp2_neg of a positive exponent")
    whole = np.minimum(np.right_shift(d, frac), numerics.exp_bits + 2)
    return round_shift(table[d & ((1 << frac) - 1)], whole)


def rope_table(head_dim, theta, positions, bits):
    """RoPE's cos and sin, (positions, head_dim) int64 in ``bits - 2`` fractional bits,
    non-interleaved (column ``i`` and ``i + head_dim/2`` share a frequency); angles in
    float64 (``position * theta**(-2i/head_dim)``)."""
    i = np.arange(0, head_dim, 2, dtype=np.float64)
    inv_freq = 1.0 / (float(theta) ** (i / head_dim))
    angles = np.arange(positions, dtype=np.float64)[:, None] * inv_freq[None, :]
    angles = np.concatenate([angles, angles], axis=1)
    return to_fixed(np.cos(angles), bits - 2), to_fixed(np.sin(angles), bits - 2)


# -- quantizers -----------------------------------------------------------------------------

def quantize_absmax(z, qmax, bits, tally=None, op=None):
    """Absmax quantizer of integer rows (last axis): ``q = round(qmax * z / max|z|)``.

    ``m = max|z|`` (1 for an all-zero row) and ``z`` are brought to a ``bits``-bit
    mantissa by the same shift, ``r = reciprocal(m)`` once per row, ``q =
    round_shift(z * qmax * r)``; clipped to ``-qmax .. qmax`` (never reached: the row's
    maximum maps to exactly ``qmax``; counted if it were). Returns ``(q, m)``: ``z ~=
    q * m / qmax``.
    """
    z = _int(z)
    m = np.maximum(np.max(np.abs(z), axis=-1), 1)
    shift = np.maximum(bit_length(m) - bits, 0)[..., None]
    zn = round_shift(z, shift)
    mn = round_shift(m[..., None], shift)
    r, e = reciprocal(mn, bits)               # mn is already <= bits bits: e exact
    q = round_shift(zn * qmax * r, -e)
    if tally is not None:
        tally.add(op, np.count_nonzero(np.abs(q) > qmax))
    return np.clip(q, -qmax, qmax), m


def quantize_absmean(z, numerics):
    """BitNet a4.8's INT4 absmean quantizer of integer rows: ``q = clip(round(sqrt(7) *
    z / mean|z|), -8, 7)``.

    ``A = sum|z|`` (wide) and ``z`` are brought to ``recip_bits`` bits by the shift
    that brings the row's maximum there, ``r = reciprocal(A)`` once per row, the
    constant ``sqrt(7) * D`` as a ``recip_bits``-bit mantissa times ``r`` once per row,
    then one product per value. An all-zero row gives zeros. The eps of the float
    quantizer is left out (it only matters for an all-zero row). Returns ``(q, A)``:
    ``z ~= q * A / (sqrt(7) * D)``.
    """
    bits = numerics.recip_bits
    z = _int(z)
    width = z.shape[-1]
    a = np.sum(np.abs(z), axis=-1)
    zero = a == 0
    a = np.where(zero, 1, a)
    m = np.maximum(np.max(np.abs(z), axis=-1), 1)
    shift = np.maximum(bit_length(m) - bits, 0)
    zn = round_shift(z, shift[..., None])
    an = np.maximum(round_shift(a, shift), 1)          # same scale as zn
    c_m, c_e = fixed_constant(np.sqrt(7.0) * width, bits, "sqrt(7) D")
    r, e = reciprocal(an, bits)
    cr_m, cr_e = normalize(int(c_m) * r, bits)
    q = round_shift(zn * cr_m[..., None], -(int(c_e) + e + cr_e)[..., None])
    q = np.where(zero[..., None], 0, np.clip(q, -8, 7))
    return q, a


def rescale(acc, mant, exp, out_frac, out_bits, tally=None, op=None):
    """The output stage: ``acc * mant * 2**exp`` in fixed point with ``out_frac``
    fractional bits, rounded half up, saturated to ``out_bits``.

    ``mant``/``exp`` broadcast against ``acc`` (per token, per output row, or both).
    """
    prod = _int(acc) * _int(mant)
    out = round_shift(prod, -(_int(exp) + out_frac))
    return saturate(out, out_bits, tally, op)


def output_factor(token_mant, token_exp, scale_mant, scale_exp, numerics):
    """The output stage's multiplier: a token's factor (:class:`NormQuant`) times a
    weight or row scale, both mantissa and exponent, renormalised to ``scale_bits``:
    ``(mant, exp)`` with ``acc * mant * 2**exp`` the output (broadcasting)."""
    mant, exp = normalize(_int(token_mant) * _int(scale_mant), numerics.scale_bits)
    return mant, exp + _int(token_exp) + _int(scale_exp)


@dataclass(frozen=True)
class NormQuant:
    """A BitLinear input from the fused RMSNorm + quantizer (:func:`norm_quant`).

    ``values`` are the integers the core receives (int8 -127..127, or INT4 -8..7);
    ``mant`` / ``exp`` (per token) the factor that turns one unit of ``values`` into
    the float quantity ``RMSNorm(x)`` it stands for: ``h ~= values * mant * 2**exp``.
    """

    values: np.ndarray
    mant: np.ndarray
    exp: np.ndarray


def norm_constant(width, bits, numerics):
    """The constant of the fused norm's token factor for ``width`` elements: ``sqrt(D) /
    qmax`` (absmax, ``bits`` != 4) or ``1 / sqrt(7 D)`` (INT4 absmean), as a
    ``scale_bits`` mantissa and exponent (a table value of the unit)."""
    if bits != 4:
        qmax = (1 << (bits - 1)) - 1
        return fixed_constant(np.sqrt(width) / qmax, numerics.scale_bits, "sqrt(D)/qmax")
    return fixed_constant(1 / np.sqrt(7.0 * width), numerics.scale_bits, "1/sqrt(7 D)")


def norm_quant(x, gain, eps_term, numerics, *, bits=8, mask=None, tally=None, op=None,
               table=None):
    """RMSNorm fused with the per-token activation quantizer (absmax int8, or INT4
    absmean for ``bits=4``), on residual-format rows ``x`` (T, D).

    The norm's scale cancels in the quantizer (``q`` of ``g * x * inv`` is ``q`` of ``g *
    x``), so the unit computes ``z = x * g`` (exact), the Top-K ``mask`` on ``|z|``,
    the quantizer on ``z``, and, once per token, ``inv = rsqrt(sum(x**2) + eps_term)``
    (the wide sum of squares; ``eps_term = round(D * eps * 2**(2F))``). The float
    quantity one code stands for is then ``sqrt(D) * max|z| * inv / qmax`` times the
    gain's and the residual's scales (int8), or ``sqrt(D) * sum|z| * inv / c``
    (INT4): that is what the output stage multiplies the accumulators by.

    Parameters
    ----------
    x : numpy.ndarray of int64, (T, D)
    gain : (numpy.ndarray of int64, int)
        The gain vector's integers and exponent (``g ~= gint * 2**gexp``).
    eps_term : int
    bits : int
        4 (absmean), else absmax to ``-(2**(bits-1) - 1) .. 2**(bits-1) - 1`` (8: the
        BitLinears' int8).
    mask : numpy.ndarray of bool, optional
        Entries kept (Top-K); the others are zeroed in ``z`` before the quantizer.
    """
    gint, gexp = gain
    x = _int(x)
    width = x.shape[-1]
    z = x * _int(gint)[None, :]
    if mask is not None:
        z = np.where(mask, z, 0)
    sumsq = np.sum(x * x, axis=-1) + eps_term
    y, ye = rsqrt(sumsq, numerics, table)
    s = numerics.scale_bits
    # h = g x / rms(x) with g x = z 2**(gexp - F) and 1/rms = sqrt(D) 2**F y 2**ye:
    # int8:  h ~= q * max|z| * y * sqrt(D)/127 * 2**(gexp + ye)
    # INT4:  h ~= q * sum|z| * y * sqrt(D)/(sqrt(7) D) * 2**(gexp + ye)
    if bits != 4:
        qmax = (1 << (bits - 1)) - 1
        q, m = quantize_absmax(z, qmax, numerics.recip_bits, tally, op)
    else:
        q, m = quantize_absmean(z, numerics)
    c_m, c_e = norm_constant(width, bits, numerics)
    mm, me = normalize(m, s)
    t_m, t_e = normalize(mm * y, s)
    f_m, f_e = normalize(t_m * int(c_m), s)
    return NormQuant(q, f_m, f_e + t_e + me + ye + int(c_e) + int(gexp))


def residual_add(x, y, numerics, tally=None, op="residual"):
    """The residual add: ``x + y`` saturated to ``resid_bits`` (counted)."""
    return saturate(_int(x) + _int(y), numerics.resid_bits, tally, op)


def relu2(gate, numerics, tally=None, op="relu2"):
    """``relu(gate)**2`` in the residual format: the square rounded back to
    ``resid_frac`` fractional bits, saturated."""
    g = np.maximum(_int(gate), 0)
    return saturate(round_shift(g * g, numerics.resid_frac), numerics.resid_bits, tally, op)


def gate_product(squared, up, numerics, tally=None, op="gate product"):
    """``relu(gate)**2 * up`` in the residual format, rounded and saturated."""
    return saturate(round_shift(_int(squared) * _int(up), numerics.resid_frac),
                    numerics.resid_bits, tally, op)


def rope_rotate(x, cos, sin, numerics, tally=None, op="rope"):
    """RoPE of residual-format rows ``x`` (..., head_dim) with table rows ``cos`` and
    ``sin`` (``rope_bits - 2`` fractional bits, broadcast against ``x``):
    ``x cos + rotate_half(x) sin``, one rounding, saturated."""
    x = _int(x)
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    out = round_shift(x * _int(cos) + rotated * _int(sin), numerics.rope_bits - 2)
    return saturate(out, numerics.resid_bits, tally, op)


def softmax_weights(scores, numerics, table=None):
    """Integer softmax of rows of log2-domain scores (``softmax_frac`` fractional bits):
    subtract the row maximum, ``2**(s - max)`` by :func:`exp2_neg`, the row sum (wide),
    one reciprocal per row (``recip_bits``), and the weights in ``prob_bits``
    fractional bits (rounded half up; a row sums to 1 within one LSB a weight)."""
    s = _int(scores)
    d = np.max(s, axis=-1, keepdims=True) - s
    p = exp2_neg(d, numerics, table)
    total = np.sum(p, axis=-1, keepdims=True)
    r, e = reciprocal(total, numerics.recip_bits)
    return round_shift(p * r, -(e + numerics.prob_bits))


# -- attention -----------------------------------------------------------------------------

#: Signed bits of a log2-domain score (saturated there, counted).
SCORE_BITS = 32


def code_factor(peak, qmax, numerics):
    """``max / qmax`` of absmax codes as a ``scale_bits`` mantissa and exponent (one
    division per cached position or query head, done when the codes are made)."""
    s = numerics.scale_bits
    m, e = normalize(peak, s)
    r, re = reciprocal(qmax, s)
    m, e2 = normalize(m * r, s)
    return m, e + re + e2


def score_factor(query_peak, qmax, head_dim, numerics):
    """A query row's factor into log2-domain scores: ``max/qmax * log2(e)/sqrt(d)`` with
    the residual format's two ``2**-F`` and the scores' ``2**softmax_frac``, renormalised
    (the constant is a table value)."""
    s = numerics.scale_bits
    cm, ce = fixed_constant(np.log2(np.e) / np.sqrt(head_dim)
                            * 2.0 ** (numerics.softmax_frac - 2 * numerics.resid_frac),
                            s, "score scale")
    m, e = normalize(_int(query_peak) * int(cm), s)         # the peak times the constant,
    r, re = reciprocal(np.full(np.shape(query_peak), qmax), s)   # then / qmax
    m, e2 = normalize(m * r, s)
    return m, e + int(ce) + re + e2


def attention_scores(dots, key_mant, key_exp, row_mant, row_exp, numerics, tally=None,
                     op="attention scores"):
    """Log2-domain scores from the exact code products ``dots``: times each key's
    factor (rounded to ``scale_bits``), times the row's factor, rounded half up,
    saturated to :data:`SCORE_BITS`."""
    s = numerics.scale_bits
    p1 = round_shift(_int(dots) * _int(key_mant), s)
    scores = round_shift(p1 * _int(row_mant), -(_int(key_exp) + s + _int(row_exp)))
    return saturate(scores, SCORE_BITS, tally, op)


def attention_values(weights, value_mant, value_exp, value_codes, numerics):
    """The softmax ``weights`` (..., positions) over the value codes (..., positions,
    head_dim): each weight times its position's ``max/qmax`` factor (``prob_bits +
    resid_frac`` fractional bits), the exact weighted sum of the codes, one shift to the
    residual format (not saturated here)."""
    wv = round_shift(_int(weights) * _int(value_mant), -_int(value_exp))
    acc = np.einsum("...j,...jd->...d", wv, _int(value_codes))
    return round_shift(acc, numerics.prob_bits)


# -- the LM head in balanced ternary ---------------------------------------------------------

def head_trits(values):
    """Five balanced trits of each integer in -121..121: ``v = sum_k d_k 3**k``, ``d_k``
    in {-1, 0, 1}; returns (5, ...) int8, least significant digit first."""
    v = _int(values)
    if np.any(np.abs(v) > TRIT5_MAX):
        raise NumericsError(f"five trits hold -{TRIT5_MAX}..{TRIT5_MAX}")
    digits = []
    for _ in range(5):
        r = ((v + 1) % 3) - 1                 # -1, 0, 1
        digits.append(r)
        v = (v - r) // 3
    return np.stack(digits).astype(np.int8)


def trits_value(digits):
    """Inverse of :func:`head_trits`."""
    d = _int(digits)
    return sum(d[k] * 3 ** k for k in range(d.shape[0]))


# -- the LM head's formats: quantization and bytes ------------------------------------------

@dataclass(frozen=True)
class HeadMatrix:
    """The LM head as the hardware stores it (:func:`quantize_head`).

    Attributes
    ----------
    codes : numpy.ndarray, (vocab, hidden)
        Signed integers: ``head_bits``-bit codes (``int8``, ``grouped``) or -121..121
        (``trit5``).
    groups : numpy.ndarray of int64, (vocab, hidden / head_group), or None
        A ``grouped`` head's multipliers, 1 .. ``2**head_group_bits - 1``.
    mant, exp : numpy.ndarray of int64, (vocab,)
        Row scales, ``scale_bits`` mantissas: ``E[j] ~= rows[j] * mant[j] * 2**exp[j]``.
    """

    codes: np.ndarray
    groups: np.ndarray
    mant: np.ndarray
    exp: np.ndarray

    @property
    def rows(self):
        """The integer rows the head's products use: the codes times their group's
        multiplier (``grouped``: the sum of each group's product times its multiplier
        is the same integer), else the codes."""
        if self.groups is None:
            return self.codes
        group = self.codes.shape[1] // self.groups.shape[1]
        return (_int(self.codes) * np.repeat(self.groups, group, axis=1)).astype(np.int32)


def _head_qmax(numerics):
    return TRIT5_MAX if numerics.head == "trit5" else (1 << (numerics.head_bits - 1)) - 1


def _check_group(hidden, numerics):
    if numerics.head == "grouped" and hidden % numerics.head_group:
        raise NumericsError(f"head_group = {numerics.head_group} does not divide the "
                            f"hidden size {hidden}")


#: Elements of the embedding :func:`quantize_head` takes at once (a block of rows).
HEAD_BLOCK = 1 << 22


def quantize_head(embedding, numerics):
    """The tied embedding ``(vocab, hidden)`` in the LM head's format (:data:`HEAD_FORMATS`).

    Each row's peak ``P`` (absmax; 1 for an all-zero row) sets its scale. ``int8`` and
    ``trit5``: ``codes = clip(round(E * qmax / P), -qmax, qmax)``, scale ``P / qmax``.
    ``grouped``: a group of ``head_group`` inputs with peak ``p`` gets the multiplier
    ``s = clip(ceil(p / P * smax), 1, smax)`` (``smax = 2**head_group_bits - 1``), its
    codes ``clip(round(E / (step * s)), -qmax, qmax)`` with the row step ``step = P /
    (qmax * smax)``, the row scale. Rounding is half up (``floor(x + 0.5)``); the
    scales are :func:`fixed_constant` mantissas of ``scale_bits``.
    """
    if np.ndim(embedding) != 2:
        raise NumericsError(f"the LM head must be a (vocab, hidden) matrix, not shape "
                            f"{np.shape(embedding)}")
    _check_group(np.shape(embedding)[1], numerics)
    # row by row (each row's codes and scale are its own): in blocks of rows, so that a
    # large vocabulary (2B4T's 128256 x 2560) needs no float64 copy of the whole table
    step = max(1, HEAD_BLOCK // max(1, np.shape(embedding)[1]))
    parts = [_quantize_head_rows(np.asarray(embedding[a:a + step], dtype=np.float64),
                                 numerics) for a in range(0, len(embedding), step)]
    if not parts:
        parts = [_quantize_head_rows(np.asarray(embedding, dtype=np.float64), numerics)]
    join = (lambda k: np.concatenate([p[k] for p in parts])) if len(parts) > 1 \
        else (lambda k: parts[0][k])
    groups = None if parts[0][1] is None else join(1)
    return HeadMatrix(join(0), groups, join(2), join(3))


def _quantize_head_rows(e, numerics):
    """:func:`quantize_head` of a block of rows ``e`` (float64): ``(codes, groups, mant,
    exp)``."""
    qmax = _head_qmax(numerics)
    peak = np.max(np.abs(e), axis=1)
    peak = np.where(peak > 0, peak, 1.0)
    groups = None
    if numerics.head == "grouped":
        smax = (1 << numerics.head_group_bits) - 1
        g = numerics.head_group
        group_peak = np.max(np.abs(e.reshape(e.shape[0], -1, g)), axis=2)
        groups = np.clip(np.ceil(group_peak / peak[:, None] * smax), 1, smax).astype(np.int64)
        step = peak / (qmax * smax)
        divisor = step[:, None] * np.repeat(groups, g, axis=1)
    else:
        step = peak / qmax
        divisor = step[:, None]
    codes = np.clip(np.floor(e / divisor + 0.5), -qmax, qmax).astype(np.int64)
    mant, exp = fixed_constant(step, numerics.scale_bits, "LM head row scales")
    if np.any(exp < -128) or np.any(exp > 127):
        raise NumericsError("LM head row scales: an exponent outside a signed byte (a row "
                            "of magnitudes below about 1e-30 or above 1e30)")
    dtype = np.int8 if qmax <= 127 else np.int16
    return codes.astype(dtype), groups, mant, exp


def head_accumulators(values, head, lanes=None):
    """The head's exact sums of a token's codes ``values`` (T, hidden) against every
    row: ``sum_g s_g * dot(values_g, codes_g)`` for a ``grouped`` head, else
    ``dot(values, codes)``; (T, vocab) int64. ``lanes`` (a divisor of the group) computes it as the
    hardware does, a beat of ``lanes`` inputs at a time times the beat's multiplier;
    the integers are the same."""
    v = _int(values)
    codes = _int(head.codes)
    if head.groups is None:
        return v @ codes.T
    group = codes.shape[1] // head.groups.shape[1]
    step = group if lanes is None else lanes
    if group % step:
        raise NumericsError(f"lanes = {lanes} does not divide the head's group {group}")
    beats = codes.shape[1] // step
    mult = np.repeat(_int(head.groups), group // step, axis=1)          # (vocab, beats)
    partial = np.einsum("tbk,vbk->tvb", v.reshape(v.shape[0], beats, step),
                        codes.reshape(codes.shape[0], beats, step))
    return (partial * mult[None]).sum(axis=2)


def head_logits(acc, token_mant, token_exp, head, numerics, tally=None):
    """The head's logits in the residual format: each accumulator times its token's
    factor and its row's scale (:func:`output_factor`, renormalised per row), rounded
    half up, saturated (the ``logits`` tally)."""
    km, ke = output_factor(_int(token_mant)[:, None], _int(token_exp)[:, None],
                           _int(head.mant)[None, :], _int(head.exp)[None, :], numerics)
    return rescale(acc, km, ke, numerics.resid_frac, numerics.resid_bits, tally, "logits")


def argmax(logits):
    """The index of each row's largest logit, the lowest index among equals (the argmax
    unit's rule, NumPy's)."""
    return np.argmax(_int(logits), axis=-1)


def head_row_bytes(hidden, numerics):
    """Bytes of one row of the head as stored (and fetched as an embedding row): the
    codes at ``head_bits`` (``trit5``: a base-3 byte a weight) and a ``grouped`` row's
    multipliers at ``head_group_bits``, packed little-endian, the row padded to a byte."""
    _check_group(hidden, numerics)
    bits = hidden * (8 if numerics.head == "trit5" else numerics.head_bits)
    if numerics.head == "grouped":
        bits += hidden // numerics.head_group * numerics.head_group_bits
    return -(-bits // 8)


def head_scale_bytes(numerics):
    """Bytes of a row's scale: the ``scale_bits`` mantissa and a signed exponent byte."""
    return _bytes(numerics.scale_bits) + 1


def head_bytes(vocab, hidden, numerics):
    """Bytes of the whole head: rows (:func:`head_row_bytes`) and row scales."""
    return vocab * (head_row_bytes(hidden, numerics) + head_scale_bytes(numerics))


def _field_bits(values, bits):
    """Rows of unsigned ``bits``-bit fields as their bits, least significant first:
    (rows, n * bits) uint8."""
    v = _int(values)
    return ((v[..., None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(v.shape[0], -1)


def _field_values(bits, count, width):
    """Inverse of :func:`_field_bits` for ``count`` fields of ``width`` bits."""
    weights = (1 << np.arange(width)).astype(np.int64)
    return bits[:, :count * width].reshape(bits.shape[0], count, width).astype(np.int64) @ weights


def pack_head(head, numerics):
    """``(rows, scales)``: the head's bytes as DRAM holds them, uint8 arrays of a row
    each: :func:`head_row_bytes` and :func:`head_scale_bytes` bytes a row.

    A row is its codes (two's complement at ``head_bits``; ``trit5``: ``v + 121``, the
    base-3 number of its trits plus one) then a ``grouped`` row's multipliers, packed
    little-endian; a scale is the mantissa little-endian then the exponent as a signed
    byte.
    """
    vocab, hidden = head.codes.shape
    codes = _int(head.codes)
    rows = np.empty((vocab, head_row_bytes(hidden, numerics)), dtype=np.uint8)
    for lo in range(0, vocab, 4096):            # bounded memory for a large vocabulary
        block = codes[lo:lo + 4096]
        if numerics.head == "trit5":
            rows[lo:lo + 4096] = (block + TRIT5_MAX).astype(np.uint8)
            continue
        bits = [_field_bits(block & ((1 << numerics.head_bits) - 1), numerics.head_bits)]
        if numerics.head == "grouped":
            bits.append(_field_bits(head.groups[lo:lo + 4096], numerics.head_group_bits))
        rows[lo:lo + 4096] = np.packbits(np.concatenate(bits, axis=1), axis=1,
                                         bitorder="little")
    exp = _int(head.exp)
    nb = _bytes(numerics.scale_bits)
    scales = np.concatenate([(_int(head.mant)[:, None] >> (8 * np.arange(nb))) & 0xFF,
                             (exp & 0xFF)[:, None]], axis=1).astype(np.uint8)
    return rows, scales


def unpack_head(rows, scales, hidden, numerics):
    """The :class:`HeadMatrix` of :func:`pack_head`'s bytes (exact inverse). Raises
    :class:`NumericsError` on bytes of the wrong shape or codes outside the format."""
    rows = np.asarray(rows, dtype=np.uint8)
    scales = np.asarray(scales, dtype=np.uint8)
    if rows.ndim != 2 or rows.shape[1] != head_row_bytes(hidden, numerics):
        raise NumericsError(f"head rows must be (vocab, {head_row_bytes(hidden, numerics)}) "
                            f"bytes, not shape {rows.shape}")
    if scales.shape != (rows.shape[0], head_scale_bytes(numerics)):
        raise NumericsError(f"head scales must be ({rows.shape[0]}, "
                            f"{head_scale_bytes(numerics)}) bytes, not shape {scales.shape}")
    qmax = _head_qmax(numerics)
    groups = None
    if numerics.head == "trit5":
        codes = rows.astype(np.int64) - TRIT5_MAX
    else:
        b = numerics.head_bits
        bits = np.unpackbits(rows, axis=1, bitorder="little")
        codes = _field_values(bits, hidden, b)
        codes = np.where(codes >= 1 << (b - 1), codes - (1 << b), codes)
        if numerics.head == "grouped":
            groups = _field_values(bits[:, hidden * b:], hidden // numerics.head_group,
                                   numerics.head_group_bits)
            if np.any(groups == 0):
                raise NumericsError("a grouped head's multiplier is zero")
    if np.any(np.abs(codes) > qmax):
        raise NumericsError(f"head codes outside -{qmax}..{qmax}")
    nb = _bytes(numerics.scale_bits)
    mant = scales[:, :nb].astype(np.int64) @ (1 << (8 * np.arange(nb))).astype(np.int64)
    exp = scales[:, nb].astype(np.int8).astype(np.int64)
    dtype = np.int8 if qmax <= 127 else np.int16
    return HeadMatrix(codes.astype(dtype), groups, mant, exp)


# -- what each operation holds: formats, tables, cache ---------------------------------------

def _bytes(bits):
    return -(-int(bits) // 8)


def operations(numerics, config):
    """The operations of a token in hardware numerics, as rows for the docs and the
    accounting: ``op``, ``format`` (what is computed at which widths), ``parameters``
    (the :class:`HwNumerics` fields it reads) and ``table_bytes`` (constant tables the
    unit holds; per layer where a layer has its own)."""
    n = numerics
    f = n.resid_frac
    qk_max = (1 << (n.qk_bits - 1)) - 1
    head_levels = (f"five balanced trits (-{TRIT5_MAX}..{TRIT5_MAX}, five add-only passes)"
                   if n.head == "trit5" else f"int{n.head_bits} rows, absmax per row")
    rope_entries = config.max_position_embeddings * config.head_dim // 2 * 2
    return [
        dict(op="embedding", parameters="resid_bits, resid_frac",
             format=f"bf16 row rounded to Q{n.resid_bits - f}.{f} (s{n.resid_bits})",
             table_bytes=0),
        dict(op="residual add", parameters="resid_bits, resid_frac",
             format=f"s{n.resid_bits} add, saturating (counted)", table_bytes=0),
        dict(op="RMSNorm", parameters="gain_bits, rsqrt_bits, rsqrt_seed_bits, newton_steps",
             format=(f"sum of x^2 in 64 bits (+ eps term); rsqrt: {1 << n.rsqrt_seed_bits}-entry "
                     f"seed table, {n.newton_steps} Newton step(s), u{n.rsqrt_bits}; gains "
                     f"s{n.gain_bits} with one exponent a vector"),
             table_bytes=(1 << n.rsqrt_seed_bits) * _bytes(n.rsqrt_bits)),
        dict(op="activation quantizer", parameters="recip_bits",
             format=(f"fused with the norm: z = x g, max|z| (int8) or sum|z| (INT4), one "
                     f"u{n.recip_bits} reciprocal a token (a divider), a product a value, "
                     "round half up"),
             table_bytes=0),
        dict(op="BitLinear output stage", parameters="scale_bits",
             format=(f"acc x (weight scale x token factor, u{n.scale_bits} mantissa + "
                     f"exponent), round half up, saturate to s{n.resid_bits}"),
             table_bytes=0),
        dict(op="RoPE", parameters="rope_bits",
             format=(f"cos/sin tables s{n.rope_bits} ({n.rope_bits - 2} fractional bits), "
                     "two products and an add a pair, round half up"),
             table_bytes=rope_entries * _bytes(n.rope_bits)),
        dict(op="Q and K codes", parameters="qk_bits",
             format=f"absmax per head and token, -{qk_max}..{qk_max}; integer dot products",
             table_bytes=0),
        dict(op="softmax", parameters="softmax_frac, exp_bits, prob_bits",
             format=(f"scores in log2 units, {n.softmax_frac} fractional bits; max "
                     f"subtracted; exp2 by a {1 << n.softmax_frac}-entry table "
                     f"(u{n.exp_bits + 1}) and a shift; one u{n.recip_bits} reciprocal a "
                     f"row; weights u{n.prob_bits}"),
             table_bytes=(1 << n.softmax_frac) * _bytes(n.exp_bits + 1)),
        dict(op="attention values", parameters="v_bits",
             format=(f"V codes absmax per head and position (s{n.v_bits}), weighted sum "
                     "of the codes, the position's max folded into its weight"),
             table_bytes=0),
        dict(op="relu2 and gate product", parameters="resid_bits, resid_frac",
             format=f"relu(gate)^2 and x up, each rounded to Q.{f}, saturating",
             table_bytes=0),
        dict(op="LM head", parameters="head, head_bits, head_act_bits",
             format=(f"{head_levels}, scale u{n.scale_bits} a row; input "
                     f"int{n.head_act_bits} from the final norm; logits Q.{f}; argmax"),
             table_bytes=0),
    ]


#: Signed bits of a stored factor's exponent: the KV cache keeps each entry's ``max /
#: qmax`` as :func:`code_factor` makes it, a ``scale_bits + 1`` mantissa and this
#: exponent (the attention unit reads it without a division).
FACTOR_EXP_BITS = 12


def kv_factor_bits(numerics):
    """Bits of the factor stored with each cached key or value vector."""
    return numerics.scale_bits + 1 + FACTOR_EXP_BITS


def kv_bytes_per_position(numerics, config, kv_bits=None):
    """Bytes of KV cache a position takes in every layer: K and V codes of every KV head
    and their two factors (:func:`kv_factor_bits`) a head."""
    k_bits = kv_bits or numerics.qk_bits
    v_bits = kv_bits or numerics.v_bits
    per_head = (config.head_dim * (k_bits + v_bits) + 2 * kv_factor_bits(numerics)) / 8
    return per_head * config.kv_heads * config.layers
