"""The hardware-numerics primitives (model.hwnum) against their float counterparts, with
error bounds derived from the widths; exhaustively where the input space is small."""

import numpy as np
import pytest

from ternary_accel.model import hwnum as H
from ternary_accel.model.quant import quantize_activations, quantize_activations_int4

D = H.DEFAULT


def test_round_shift_is_round_half_up_exhaustive():
    v = np.arange(-4096, 4097)
    for n in range(0, 8):
        expected = np.array([(int(x) + ((1 << n) >> 1)) >> n for x in v])
        assert np.array_equal(H.round_shift(v, n), expected)
    assert np.array_equal(H.round_shift(v, -3), v * 8)          # negative: exact left shift
    # past 62 bits: +-2**62, never a wrapped value; shifted out entirely: 0
    assert list(H.round_shift([3, -3, 0], -62)) == [2 ** 62, -2 ** 62, 0]
    assert list(H.round_shift([2 ** 40, -2 ** 40], 70)) == [0, 0]


def test_bit_length_matches_python():
    rng = np.random.default_rng(0)
    values = np.concatenate([np.arange(0, 1030), rng.integers(0, 2 ** 62, 1000),
                             [2 ** 62, 2 ** 63 - 1]])
    assert [int(b) for b in H.bit_length(values)] == [int(v).bit_length() for v in values]
    with pytest.raises(H.NumericsError):
        H.bit_length([-1])


def test_normalize_range_and_exactness():
    v = np.arange(1, 1 << 12)
    mant, exp = H.normalize(v, 16)
    assert np.array_equal(mant * 2.0 ** exp, v)                 # exact when it fits
    big = np.array([2 ** 40 + 12345, 3 ** 30])
    mant, exp = H.normalize(big, 16)
    assert np.all((mant >= 1 << 15) & (mant <= 1 << 16))
    assert np.all(np.abs(mant * 2.0 ** exp / big - 1) <= 2.0 ** -16)
    assert H.normalize(np.array([0]), 16) == (0, 0)


@pytest.mark.parametrize("bits", [8, 16, 24])
def test_reciprocal_bound_exhaustive(bits):
    v = np.arange(1, 1 << 14)
    r, e = H.reciprocal(v, bits)
    # r = round(2**(2b-1) / m) with m the b-bit mantissa: relative error <= 2**-(b-1)
    # (the division's rounding) plus the mantissa's own rounding, 2**-b.
    error = np.abs(r * 2.0 ** e * v - 1)
    assert error.max() <= 2.0 ** -(bits - 1) + 2.0 ** -bits
    with pytest.raises(H.NumericsError):
        H.reciprocal([0], bits)
    with pytest.raises(H.NumericsError, match="62 bits"):
        H.reciprocal([2 ** 62], bits)
    with pytest.raises(H.NumericsError, match="62 bits"):
        H.rsqrt([2 ** 63 - 1], D)


@pytest.mark.parametrize("seed_bits,steps,bits", [(6, 1, 16), (8, 0, 16), (8, 1, 16),
                                                  (10, 2, 24)])
def test_rsqrt_bound_exhaustive(seed_bits, steps, bits):
    numerics = D.replace(rsqrt_seed_bits=seed_bits, newton_steps=steps, rsqrt_bits=bits)
    v = np.concatenate([np.arange(1, 1 << 15), (np.arange(1, 200) ** 5)])
    y, e = H.rsqrt(v, numerics)
    error = np.abs(y * 2.0 ** e * np.sqrt(v) - 1)
    lsb = 2.0 ** -(bits - 2)
    seed = 2.0 ** -seed_bits + lsb                # half an interval over u >= 1/4, rounded
    bound = seed
    for _ in range(steps):
        bound = 1.5 * bound ** 2 + 3 * lsb        # Newton squares it; three roundings
    assert error.max() <= bound + 2.0 ** -(bits - 1)     # the mantissa's rounding


def test_exp2_exhaustive():
    frac, eb = D.softmax_frac, D.exp_bits
    d = np.arange(0, (eb + 4) << frac)
    out = H.exp2_neg(d, D) * 2.0 ** -eb
    exact = np.exp2(-d / 2.0 ** frac)
    assert np.abs(out - exact).max() <= 2.0 ** -eb             # table + shift rounding
    assert out[0] == 1.0 and out[-1] == 0
    with pytest.raises(H.NumericsError):
        H.exp2_neg([-1], D)


def _rows(rng):
    return [rng.integers(-2 ** 20, 2 ** 20, (4, 96)),
            np.zeros((1, 96), dtype=np.int64),                # all zeros
            np.full((1, 96), 12345),                          # all equal
            np.concatenate([[2 ** 22], np.ones(95, dtype=np.int64)])[None],   # outlier
            np.full((1, 96), -(2 ** 23)),                      # the format's extreme
            rng.integers(-3, 4, (3, 96))]                      # tiny values


def test_absmax_quantizer_against_float():
    rng = np.random.default_rng(1)
    for z in _rows(rng):
        q, m = H.quantize_absmax(z, 127, D.recip_bits)
        exact = 127 * z / np.maximum(np.abs(z).max(axis=1, keepdims=True), 1)
        # one rounding, plus r's relative error on values up to 127
        assert np.abs(q - exact).max() <= 0.5 + 127 * 2.0 ** -(D.recip_bits - 2)
        peak = np.abs(z).max(axis=1)
        assert np.all(np.abs(q).max(axis=1) == np.where(peak > 0, 127, 0))
    # the float quantizer on the same rows: equal except at rounding ties
    z = rng.integers(-2 ** 20, 2 ** 20, (64, 256))
    q, _ = H.quantize_absmax(z, 127, D.recip_bits)
    ref = quantize_activations(z.astype(np.float64)).values
    assert np.mean(q != ref) < 1e-3 and np.abs(q - ref).max() <= 1


def test_absmean_quantizer_against_float():
    rng = np.random.default_rng(2)
    z = rng.integers(-2 ** 20, 2 ** 20, (64, 256))
    q, a = H.quantize_absmean(z, D)
    ref = quantize_activations_int4(z.astype(np.float64)).values
    assert np.mean(q != ref) < 1e-3 and np.abs(q - ref).max() <= 1
    assert np.array_equal(a, np.abs(z).sum(axis=1))
    zero, _ = H.quantize_absmean(np.zeros((2, 8), dtype=np.int64), D)
    assert not zero.any()


def test_norm_quant_dequantizes_to_rmsnorm():
    rng = np.random.default_rng(3)
    f = D.resid_frac
    x = rng.normal(0, 2, (8, 128))
    x[0, 5] = 40.0                                           # an outlier
    xi = H.to_fixed(x, f)
    g = rng.uniform(0.5, 1.5, 128)
    gint, gfrac = H.to_fixed(g, D.gain_bits - 2), -(D.gain_bits - 2)
    eps = int(H.to_fixed(128 * 1e-5, 2 * f))
    nq = H.norm_quant(xi, (gint, gfrac), eps, D)
    h = nq.values * nq.mant[:, None] * 2.0 ** nq.exp[:, None]
    xr = xi / 2.0 ** f
    ref = g * xr / np.sqrt(np.mean(xr ** 2, axis=1, keepdims=True) + 1e-5)
    step = np.abs(ref).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(h - ref) <= 0.5 * step * 1.01 + np.abs(ref) * 2e-3)
    nq4 = H.norm_quant(xi, (gint, gfrac), eps, D, bits=4)
    assert nq4.values.min() >= -8 and nq4.values.max() <= 7


def test_softmax_weights_against_float():
    rng = np.random.default_rng(4)
    frac = D.softmax_frac
    for s in [rng.normal(0, 4, (16, 37)), np.zeros((1, 9)), np.array([[0.0, -100.0, -3.0]]),
              np.array([[50.0] + [0.0] * 20])]:
        si = H.to_fixed(s, frac)
        w = H.softmax_weights(si, D) * 2.0 ** -D.prob_bits
        p = np.exp2(si / 2.0 ** frac - (si / 2.0 ** frac).max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        # each exp2 is within one table LSB; the reciprocal and the final rounding add
        assert np.abs(w - p).max() <= 2.0 ** -D.exp_bits * s.shape[1] + 2.0 ** -(D.prob_bits - 1) \
            + p.max() * 2.0 ** -(D.recip_bits - 2)
        assert np.all(np.abs(w.sum(axis=1) - 1) <= s.shape[1] * 2.0 ** -D.prob_bits + 2e-4)


def test_rope_table_is_cos_sin_rounded():
    cos, sin = H.rope_table(16, 10000.0, 64, D.rope_bits)
    lsb = 2.0 ** -(D.rope_bits - 2)
    i = np.arange(0, 16, 2) / 16
    ang = np.arange(64)[:, None] * np.concatenate([10000.0 ** -i] * 2)[None]
    assert np.abs(cos * lsb - np.cos(ang)).max() <= lsb / 2
    assert np.abs(sin * lsb - np.sin(ang)).max() <= lsb / 2


def test_trits_exhaustive():
    v = np.arange(-121, 122)
    digits = H.head_trits(v)
    assert set(np.unique(digits)) <= {-1, 0, 1}
    assert np.array_equal(H.trits_value(digits), v)
    with pytest.raises(H.NumericsError):
        H.head_trits([122])


def test_saturate_counts():
    tally = H.Saturations()
    out = H.saturate([-200, -128, 0, 127, 300], 8, tally, "x")
    assert list(out) == [-128, -128, 0, 127, 127] and tally.counts == {"x": 2}


@pytest.mark.parametrize("change,match", [({"resid_bits": 40}, "resid_bits"),
                                          ({"resid_frac": 23}, "resid_frac"),
                                          ({"head": "int4"}, "head"),
                                          ({"qk_bits": True}, "qk_bits"),
                                          ({"rsqrt_seed_bits": 15}, "rsqrt_seed_bits"),
                                          ({"widths": 3}, "unknown")])
def test_bad_widths(change, match):
    with pytest.raises(H.NumericsError, match=match):
        H.DEFAULT.replace(**change)


def test_fixed_constant_refuses_bad_scales():
    with pytest.raises(H.NumericsError, match="weight scale"):
        H.fixed_constant([0.0], 16, "weight scale")
    m, e = H.fixed_constant([0.04, 3e5], 16, "s")
    assert np.all(np.abs(m * 2.0 ** e / [0.04, 3e5] - 1) <= 2.0 ** -16)


def test_rescale_rounds_once_and_saturates():
    acc = np.arange(-2 ** 12, 2 ** 12, 7)
    mant, exp = H.fixed_constant(0.0123, D.scale_bits, "s")
    out = H.rescale(acc, mant, exp, D.resid_frac, D.resid_bits)
    exact = acc * float(mant) * 2.0 ** (int(exp) + D.resid_frac)
    assert np.abs(out - exact).max() <= 0.5                   # one rounding, half up
    tally = H.Saturations()
    big = H.rescale([2 ** 40, -2 ** 40], 1 << 15, 0, D.resid_frac, D.resid_bits, tally, "o")
    assert list(big) == list(H.signed_limits(D.resid_bits))[::-1] and tally.total == 2


def test_rope_rotation_against_float():
    """RoPE by the integer tables on residual-format inputs: within the table's and the
    final rounding's bound of the exact rotation."""
    from ternary_accel.model.config import TINY
    from ternary_accel.model.hwdecoder import HwDecoder
    from ternary_accel.model.weights import MasterWeights, random_master_weights
    decoder = HwDecoder(MasterWeights(TINY, random_master_weights(TINY, seed=1)))
    rng = np.random.default_rng(5)
    x = rng.integers(-2 ** 16, 2 ** 16, (2, 8, TINY.head_dim))
    x[0, 0] = 0                                                   # zeros stay zero
    out = decoder.rope(x, start=3)
    d = TINY.head_dim
    i = np.arange(0, d, 2) / d
    ang = np.arange(3, 11)[:, None] * np.concatenate([TINY.rope_theta ** -i] * 2)[None]
    rot = np.concatenate([-x[..., d // 2:], x[..., :d // 2]], axis=-1)
    exact = x * np.cos(ang) + rot * np.sin(ang)
    lsb = 2.0 ** -(D.rope_bits - 2)
    assert np.all(np.abs(out - exact) <= 0.5 + (np.abs(x) + np.abs(rot)) * lsb / 2)
    assert not out[0, 0].any()
