"""Golden model: encodings, quantizers, exact integer core, fixed-point output stage."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ternary_accel.model import arith, encoding, quant
from ternary_accel.model.bitlinear import bitlinear_fixed, bitlinear_reference


# Encodings ---------------------------------------------------------------------------

def test_lane_codes_table():
    w = np.array([0, 1, -1])
    codes = encoding.encode_lane_codes(w)
    assert codes.tolist() == [0b00, 0b01, 0b11]
    assert encoding.CODE_INVALID == 0b10
    assert encoding.decode_lane_codes(codes).tolist() == [0, 1, -1]


def test_invalid_lane_code():
    with pytest.raises(ValueError, match="invalid lane code"):
        encoding.decode_lane_codes([0, 2])
    assert encoding.decode_lane_codes([2, 3], strict=False).tolist() == [0, -1]
    with pytest.raises(ValueError, match="0..3"):
        encoding.decode_lane_codes([4])


def test_binary_codes():
    assert encoding.encode_binary_codes([1, -1, 1]).tolist() == [1, 0, 1]
    assert encoding.decode_binary_codes([0, 1]).tolist() == [-1, 1]
    with pytest.raises(ValueError, match="binary"):
        encoding.encode_binary_codes([0, 1])
    with pytest.raises(ValueError):
        encoding.decode_binary_codes([2])


@pytest.mark.parametrize("bad, message", [
    ([0, 2, 1], "ternary"),
    ([0.5, 1.0], "non-integer"),
    ([np.nan, 1.0], "NaN or inf"),
    ([np.inf], "NaN or inf"),
    (np.array(["a"]), "dtype"),
])
def test_non_ternary_weights_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        encoding.encode_lane_codes(bad)


def test_pack_known_bytes():
    # 5 trits per byte, t_i = w_i + 1, byte = sum t_i 3**i.
    assert encoding.pack_trits([-1] * 5).tolist() == [0]
    assert encoding.pack_trits([1] * 5).tolist() == [242]
    assert encoding.pack_trits([0] * 5).tolist() == [121]
    assert encoding.pack_trits([1, -1, -1, -1, -1]).tolist() == [2]
    assert encoding.pack_trits([-1, -1, -1, -1, 1]).tolist() == [2 * 81]
    # A tail is padded with zero weights.
    assert encoding.pack_trits([1]).tolist() == [2 + 3 + 9 + 27 + 81]


def test_unpack_every_valid_byte():
    every = np.arange(243, dtype=np.uint8)
    weights = encoding.unpack_trits(every)
    assert weights.shape == (243 * 5,)
    assert np.array_equal(encoding.pack_trits(weights), every)
    # every 5-trit combination appears exactly once
    assert len({tuple(row) for row in weights.reshape(-1, 5)}) == 243


@pytest.mark.parametrize("byte", range(243, 256))
def test_unpack_invalid_byte(byte):
    with pytest.raises(ValueError, match=f"invalid base-3 byte {byte}"):
        encoding.unpack_trits(np.array([0, byte], dtype=np.uint8))


def test_unpack_count_and_shape_errors():
    packed = encoding.pack_trits([1, 0, -1, 1, 0, -1, 1])
    assert encoding.unpack_trits(packed, 7).tolist() == [1, 0, -1, 1, 0, -1, 1]
    with pytest.raises(ValueError, match="count"):
        encoding.unpack_trits(packed, 11)
    with pytest.raises(ValueError, match="1-D"):
        encoding.unpack_trits(packed.reshape(1, -1))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from([-1, 0, 1]), min_size=0, max_size=64))
def test_pack_round_trip(weights):
    packed = encoding.pack_trits(np.array(weights, dtype=np.int64))
    assert len(packed) == encoding.packed_length(len(weights))
    assert encoding.unpack_trits(packed, len(weights)).tolist() == weights


# Quantizers --------------------------------------------------------------------------

def test_ternary_quantizer_by_hand():
    w = np.array([[0.9, -0.1, -2.0, 0.4]])
    q = quant.quantize_weights_ternary(w)
    assert q.beta == pytest.approx(0.85)
    # w / beta = 1.059, -0.118, -2.35, 0.47 -> 1, 0, -1, 0
    assert q.values.tolist() == [[1, 0, -1, 0]]


def test_ternary_quantizer_rounds_half_to_even():
    # beta = mean |w| = 1.0; 0.5 -> 0 and -0.5 -> 0 under round-half-to-even.
    w = np.array([[0.5, -0.5, 1.5, -1.5]])
    q = quant.quantize_weights_ternary(w)
    assert q.beta == 1.0
    assert q.values.tolist() == [[0, 0, 1, -1]]


def test_binary_quantizer_by_hand():
    w = np.array([[1.0, 2.0, 3.0, 6.0]])  # alpha = 3: sign(w - 3) with 0 -> -1
    q = quant.quantize_weights_binary(w)
    assert q.values.tolist() == [[-1, -1, -1, 1]]
    assert q.beta == pytest.approx(3.0)


def test_all_zero_inputs_do_not_divide_by_zero():
    q = quant.quantize_weights_ternary(np.zeros((2, 3)))
    assert q.beta == quant.EPS and not q.values.any()
    a = quant.quantize_activations(np.zeros((2, 3)))
    assert np.all(a.scale == 127 / quant.EPS) and not a.values.any()


def test_activation_quantizer_by_hand():
    x = np.array([[0.5, -1.0, 0.25], [2.0, 0.0, -0.01]])
    a = quant.quantize_activations(x)
    assert a.scale.tolist() == [127.0, 63.5]
    # 63.5 and 31.75 round half to even / to nearest; -0.635 -> -1
    assert a.values.tolist() == [[64, -127, 32], [127, 0, -1]]


@pytest.mark.parametrize("bad, message", [
    (np.ones(3), "2-D"),
    (np.zeros((0, 3)), "empty"),
    (np.array([[np.nan, 1.0]]), "NaN"),
])
def test_quantizer_input_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        quant.quantize_activations(bad)
    with pytest.raises(ValueError, match=message):
        quant.quantize_weights_ternary(bad)


def test_unknown_weight_mode():
    with pytest.raises(ValueError, match="weight mode"):
        quant.quantize_weights(np.ones((2, 2)), "quaternary")


# Integer core ------------------------------------------------------------------------

@pytest.mark.parametrize("terms, width", [(1, 9), (2, 10), (4, 11), (16, 13), (64, 15),
                                          (3, 10), (2560, 20), (6912, 21)])
def test_acc_width(terms, width):
    assert arith.acc_width(terms) == width
    lo, hi = arith.signed_range(width)
    assert lo <= -128 * terms and 128 * terms <= hi
    lo, hi = arith.signed_range(width - 1)
    assert not (lo <= -128 * terms and 128 * terms <= hi)  # and no wider than needed


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_acc_width_rejects(bad):
    with pytest.raises(ValueError):
        arith.acc_width(bad)


def test_matmul_int_extremes():
    k = 64
    x = np.full((1, k), -128)
    w = np.stack([np.full(k, -1), np.full(k, 1), np.zeros(k, int)])
    acc = arith.matmul_int(w, x)
    assert acc.tolist() == [[128 * k, -128 * k, 0]]


def test_matmul_int_matches_loops():
    rng = np.random.default_rng(0)
    w = rng.integers(-1, 2, size=(5, 7))
    x = rng.integers(-128, 128, size=(3, 7))
    expected = [[sum(int(w[m, k]) * int(x[t, k]) for k in range(7)) for m in range(5)]
                for t in range(3)]
    assert arith.matmul_int(w, x).tolist() == expected


def test_matmul_int_errors():
    with pytest.raises(ValueError, match="ternary"):
        arith.matmul_int([[2, 0]], [1, 1])
    with pytest.raises(ValueError, match="int8"):
        arith.matmul_int([[1, 0]], [128, 1])
    with pytest.raises(ValueError, match="features"):
        arith.matmul_int([[1, 0, 1]], [1, 1])
    with pytest.raises(ValueError, match="integer"):
        arith.matmul_int([[1, 0]], [0.5, 1.0])
    with pytest.raises(ValueError, match="binary"):
        arith.matmul_int([[1, 0]], [1, 1], quant.BINARY)


def test_wrap_signed():
    assert arith.wrap_signed([127, 128, -129, 256], 8).tolist() == [127, -128, 127, 0]


# Output stage ------------------------------------------------------------------------

def test_round_fixed_half_up_and_saturation():
    # shift 1: x / 2 rounded half toward +inf
    acc = np.array([3, -3, 1, -1, 2, -2])
    assert arith.round_fixed(acc, 1, 1).tolist() == [2, -1, 1, 0, 1, -1]
    assert arith.round_fixed([5, -5], 3, 0).tolist() == [15, -15]
    hi = (1 << (arith.OUT_WIDTH - 1)) - 1
    assert arith.round_fixed([1 << 20, -(1 << 20)], 1, 0).tolist() == [hi, -hi - 1]
    # large shifts: everything rounds to 0
    assert arith.round_fixed([-(1 << 20), 1 << 20], 65535, arith.SHIFT_MAX).tolist() == [0, 0]


def test_round_fixed_range_errors():
    with pytest.raises(ValueError, match="scale"):
        arith.round_fixed([1], 1 << arith.SCALE_WIDTH, 0)
    with pytest.raises(ValueError, match="shift"):
        arith.round_fixed([1], 1, arith.SHIFT_MAX + 1)


def test_scale_to_fixed_uses_full_precision():
    scale, shift = arith.scale_to_fixed(np.array([0.001, 0.37, 1.0]), 8)
    assert np.all(scale < (1 << arith.SCALE_WIDTH))
    assert np.all(scale >= (1 << (arith.SCALE_WIDTH - 1)))  # normalized
    approx = scale * np.exp2(-(8 + shift))
    assert np.allclose(approx, [0.001, 0.37, 1.0], rtol=2 ** -15)
    with pytest.raises(ValueError, match="too large"):
        arith.scale_to_fixed(1e6, 8)
    with pytest.raises(ValueError, match="positive"):
        arith.scale_to_fixed(0.0, 8)


@pytest.mark.parametrize("mode", quant.WEIGHT_MODES)
def test_bitlinear_fixed_within_bound(mode):
    rng = np.random.default_rng(3)
    result = bitlinear_reference(rng.normal(size=(32, 256)), rng.normal(size=(8, 256)), mode)
    # The integer core reproduces the float reference's accumulators exactly.
    assert np.array_equal(result.acc, arith.matmul_int(result.weights, result.activations,
                                                       mode))
    fixed = bitlinear_fixed(result, frac_bits=8)
    error = np.abs(fixed["y_fixed"] * 2.0 ** -8 - result.y)
    assert np.all(error <= fixed["bound"])
    assert np.max(error) > 0  # the bound is exercised, not vacuous


def test_bitlinear_shape_errors():
    with pytest.raises(ValueError, match="features"):
        bitlinear_reference(np.ones((2, 3)), np.ones((1, 4)))
