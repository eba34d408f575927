"""BitNet a4.8 and Q-Sparse in the golden model: the quantizers and masks of
model.quant against hand-computed values, and the decoder's activation modes."""

from fractions import Fraction

import numpy as np
import pytest

from ternary_accel.hw.perf.accounting import Ledger, account
from ternary_accel.model.config import TINY
from ternary_accel.model.decoder import A48_INT4_INPUTS, Decoder, GoldenCore, generate
from ternary_accel.model.quant import (INT4_MAX, INT4_MIN, block_topk_mask, dequantize_kv,
                         quantize_activations, quantize_activations_int4, quantize_kv,
                         topk_count, topk_mask)
from ternary_accel.model.weights import MasterWeights, random_master_weights

PROMPT = [1, 5, 9, 200, 33]
SQRT7 = 2.6457513110645907


@pytest.fixture(scope="module")
def weights():
    return MasterWeights(TINY, random_master_weights(TINY, seed=3))


# -- INT4 absmean ------------------------------------------------------------------------

def test_int4_absmean_by_hand():
    q = quantize_activations_int4(np.array([[1.0, -2.0, 3.0, -4.0],
                                            [0.5, 0.5, 0.5, 0.5],
                                            [100.0, 1.0, 1.0, 1.0],
                                            [-100.0, 0.0, 0.0, 0.0]]))
    assert q.values.dtype == np.int8
    # beta = 2.5: x * sqrt(7) / 2.50001 = 1.058, -2.117, 3.175, -4.233
    # beta = 0.5: 0.5 * sqrt(7) / 0.50001 = 2.6457 -> 3
    # beta = 25.75: 100 * sqrt(7) / 25.75001 = 10.27 -> clip 7; 1 -> 0.103 -> 0
    # beta = 25: -100 * sqrt(7) / 25.00001 = -10.58 -> clip -8
    assert q.values.tolist() == [[1, -2, 3, -4], [3, 3, 3, 3], [7, 0, 0, 0], [-8, 0, 0, 0]]
    np.testing.assert_allclose(q.scale, [SQRT7 / 2.50001, SQRT7 / 0.50001,
                                         SQRT7 / 25.75001, SQRT7 / 25.00001], rtol=1e-15)
    assert (INT4_MIN, INT4_MAX) == (-8, 7)


# x0 is chosen so that x0 * sqrt(7) / (mean|row| + 1e-5) is exactly the tie t in float64
# (the row is [x0, 1, -1, 1]; asserted below with the formula written out).
TIES = [(0.5, 0.1487671545994848, 0), (-0.5, -0.1487671545994848, 0),
        (1.5, 0.49543734468772005, 2), (2.5, 0.9278850839949139, 2),
        (-2.5, -0.9278850839949139, -2), (3.5, 1.4824413702801704, 4),
        (6.5, 4.7759576178408825, 6), (-7.5, -7.2981711730472885, -8)]


@pytest.mark.parametrize("tie, x0, want", TIES)
def test_int4_ties_round_half_to_even(tie, x0, want):
    row = np.array([x0, 1.0, -1.0, 1.0])
    assert x0 * (np.sqrt(7) / (np.mean(np.abs(row)) + 1e-5)) == tie     # an exact tie
    assert quantize_activations_int4(row[None]).values[0, 0] == want


def test_int4_all_zero_token_and_gaussian_zeros():
    q = quantize_activations_int4(np.zeros((2, 8)))
    assert np.array_equal(q.values, np.zeros((2, 8))) and np.all(np.isfinite(q.scale))
    assert q.scale[0] == SQRT7 / 1e-5                       # beta + eps = 0 + 1e-5
    x = np.random.default_rng(0).normal(size=(64, 2560))
    zeros = np.mean(quantize_activations_int4(x).values == 0)
    # |x| < 0.5 * mean|x| / sqrt(7) = 0.151 sigma: P = 0.120 (the spec's "about 12 %")
    assert 0.11 < zeros < 0.13
    q = quantize_activations_int4(x)
    assert q.values.min() >= -8 and q.values.max() <= 7
    # X ~= values / scale wherever no clipping happened
    inside = np.abs(x * q.scale[:, None]) < 6.5
    err = np.abs(q.values / q.scale[:, None] - x)[inside]
    assert np.all(err <= 0.5 / np.repeat(q.scale[:, None], 2560, 1)[inside] + 1e-12)


@pytest.mark.parametrize("bad, message", [(np.zeros(4), "2-D"), (np.zeros((1, 0)), "empty"),
                                          ([[1.0, np.nan]], "NaN")])
def test_int4_bad_input(bad, message):
    with pytest.raises(ValueError, match=message):
        quantize_activations_int4(bad)


# -- Top-K -------------------------------------------------------------------------------

def test_topk_mask_by_hand_with_ties():
    x = np.array([[3.0, -1.0, 2.0, -3.0, 1.0],
                  [1.0, 1.0, 1.0, 1.0, 1.0]])
    # |x| = 3 1 2 3 1: the two 3s, then 2, then of the two 1s the lower index (1)
    want = {0: [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
            1: [[1, 0, 0, 0, 0], [1, 0, 0, 0, 0]],
            2: [[1, 0, 0, 1, 0], [1, 1, 0, 0, 0]],
            3: [[1, 0, 1, 1, 0], [1, 1, 1, 0, 0]],
            4: [[1, 1, 1, 1, 0], [1, 1, 1, 1, 0]],
            5: [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]}
    for k, mask in want.items():
        got = topk_mask(x, k)
        assert got.dtype == bool and got.astype(int).tolist() == mask, k


@pytest.mark.parametrize("k", [-1, 6, 2.0, True, None])
def test_topk_mask_bad_k(k):
    with pytest.raises(ValueError, match="k must be an integer in 0..5"):
        topk_mask(np.ones((1, 5)), k)


def test_topk_count_exact():
    for width in (2560, 6912, 64, 128):
        assert topk_count(width, 0.5) == width // 2
        assert topk_count(width, 0) == width
    # float: (1 - 0.6125) * 2560 = 991.9999999999999 and (1 - 0.9) * 2560 = 255.99..;
    # exact: 0.3875 * 2560 = 992, 0.1 * 2560 = 256
    assert topk_count(2560, 0.6125) == 992 and topk_count(2560, 0.9) == 256
    assert topk_count(10, 0.9) == 1
    assert topk_count(6912, 0.25) == 5184                 # 0.75 * 6912
    assert topk_count(100, 0.555) == 44                   # floor(44.5)
    assert topk_count(3, Fraction(1, 3)) == 2
    assert topk_count(4, 0.99) == 0                       # floor(0.04)
    for ratio in (1, 1.0, -0.1, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match="sparsity ratio"):
            topk_count(64, ratio)
    with pytest.raises(ValueError, match="width"):
        topk_count(0, 0.5)


def test_block_topk_by_hand_with_ties():
    x = np.array([[1.0, -2.0, 2.0, 0.0, 5.0, 5.0, -5.0, 1.0]])
    # 2:4 -- block 0 |x| = 1 2 2 0: indices 1, 2; block 1: 5 5 5 1: the lower two, 4, 5
    assert block_topk_mask(x, 2, 4).astype(int).tolist() == [[0, 1, 1, 0, 1, 1, 0, 0]]
    # 1:2 -- pairs (1, 2) (2, 0) (5, 5) (5, 1): the larger, ties to the lower index
    assert block_topk_mask(x, 1, 2).astype(int).tolist() == [[0, 1, 1, 0, 1, 0, 1, 0]]
    assert block_topk_mask(x, 4, 4).all()                 # N = M keeps everything
    assert block_topk_mask(x, 8, 8).all()
    gaussian = np.random.default_rng(1).normal(size=(3, 2560))
    mask = block_topk_mask(gaussian, 16, 32)
    assert np.all(mask.reshape(3, 80, 32).sum(axis=2) == 16)


@pytest.mark.parametrize("shape, n, m, message", [
    ((1, 6), 2, 4, "multiple of the block size"),
    ((1, 8), 0, 4, "n of N:M must be an integer in 1..4"),
    ((1, 8), 5, 4, "n of N:M must be an integer in 1..4"),
    ((1, 8), 1, 0, "block size m"),
    ((8,), 1, 2, "2-D"),
])
def test_block_topk_bad(shape, n, m, message):
    with pytest.raises(ValueError, match=message):
        block_topk_mask(np.ones(shape), n, m)


def test_int8_mask_then_quantize_equals_quantize_then_mask():
    x = np.random.default_rng(2).normal(size=(16, 256)).astype(np.float32)
    for mask in (topk_mask(x, 128), topk_mask(x, 1), block_topk_mask(x, 16, 32)):
        before = quantize_activations(np.where(mask, x, 0))
        after = quantize_activations(x)
        assert np.array_equal(before.scale, after.scale)      # max|x| survives the mask
        assert np.array_equal(before.values, np.where(mask, after.values, 0))


# -- KV cache ----------------------------------------------------------------------------

def test_kv_quantizer_by_hand():
    # 3 bits: z = 4, qmax = 3, s = 0.75 / 3 = 0.25; x / s = 3 -1.5 2.5 -0.5 0 1.2
    # -> rint 3 -2 2 0 0 1 -> codes 7 2 6 4 4 5
    q = quantize_kv(np.array([[0.75, -0.375, 0.625, -0.125, 0.0, 0.3]]), 3)
    assert q.codes.dtype == np.uint8 and q.zero_point == 4
    assert q.codes.tolist() == [[7, 2, 6, 4, 4, 5]] and q.scale.tolist() == [0.25]
    assert dequantize_kv(q).tolist() == [[0.75, -0.5, 0.5, 0.0, 0.0, 0.25]]
    # 4 bits: z = 8, qmax = 7, s = 1.75 / 7 = 0.25; x / s = 7 -3.5 1.5 -7 0.5
    # -> rint 7 -4 2 -7 0 -> codes 15 4 10 1 8
    q = quantize_kv(np.array([1.75, -0.875, 0.375, -1.75, 0.125]), 4)
    assert q.codes.tolist() == [15, 4, 10, 1, 8] and q.zero_point == 8
    assert dequantize_kv(q).dtype == np.float32
    assert dequantize_kv(q).tolist() == [1.75, -1.0, 0.5, -1.75, 0.0]
    # an all-zero vector: every code is the zero point, dequantized exactly 0
    q = quantize_kv(np.zeros((2, 3, 4)), 3)
    assert q.scale.shape == (2, 3) and np.all(q.codes == 4)
    assert np.array_equal(dequantize_kv(q), np.zeros((2, 3, 4)))


@pytest.mark.parametrize("bits", [3, 4])
def test_kv_round_trip_bounds(bits):
    x = np.random.default_rng(bits).normal(scale=3.0, size=(2, 7, 128))
    q = quantize_kv(x, bits)
    assert q.codes.shape == x.shape and q.scale.shape == (2, 7)
    assert q.codes.min() >= 1 and q.codes.max() <= 2 ** bits - 1     # symmetric grid
    # the extremes of every vector land on the outer codes
    assert set(np.unique(q.codes[np.abs(x) == np.abs(x).max(-1, keepdims=True)])) <= \
        {1, 2 ** bits - 1}
    err = np.abs(dequantize_kv(q) - x)
    assert np.all(err <= q.scale[..., None] * 0.5 * (1 + 1e-6))
    np.testing.assert_allclose(q.scale, np.abs(x).max(-1) / (2 ** (bits - 1) - 1),
                               rtol=1e-7)


@pytest.mark.parametrize("bits, data, message", [
    (2, np.ones(4), "KV bits must be one of"), (8, np.ones(4), "KV bits must be one of"),
    (True, np.ones(4), "KV bits must be one of"), (4, np.float64(1.0), "last axis"),
    (4, np.array([1.0, np.inf]), "NaN or inf"),
])
def test_kv_bad(bits, data, message):
    with pytest.raises(ValueError, match=message):
        quantize_kv(data, bits)


# -- the decoder -------------------------------------------------------------------------

def ledger_run(weights, prompt=PROMPT, **options):
    ledger = Ledger()
    logits = Decoder(weights, ledger=ledger, count_nonzero=True, **options).forward(prompt)
    bitlinears = {(layer, name): sizes for kind, layer, name, sizes in ledger.records
                  if kind == "bitlinear"}
    return logits, bitlinears


def test_a8_is_bit_identical_to_the_default(weights):
    default_ledger, a8_ledger = Ledger(), Ledger()
    default = Decoder(weights, ledger=default_ledger).forward(PROMPT)
    a8 = Decoder(weights, activations="a8", ledger=a8_ledger).forward(PROMPT)
    assert np.array_equal(default, a8) and default_ledger.records == a8_ledger.records
    # Top-K at ratio 0 keeps everything: also bit-identical
    assert np.array_equal(Decoder(weights, topk=0.0).forward(PROMPT), default)
    # the ledger's bitlinear records carry the activation width
    assert {s["act_bits"] for k, _, _, s in default_ledger.records if k == "bitlinear"} == {8}
    assert all("nonzero" not in s for _, _, _, s in default_ledger.records)


def test_a48_quantizes_each_projection_as_the_paper(weights):
    seen = {}

    def core(w, x, *, layer, name):
        seen.setdefault(name, []).append(x.copy())
        return GoldenCore()(w, x)

    run = generate(Decoder(weights, activations="a4.8", core=core), PROMPT, 3)
    assert np.all(np.isfinite(run.logits))
    for name, inputs in seen.items():
        x = np.concatenate(inputs)
        assert x.dtype == np.int8
        if name in A48_INT4_INPUTS:
            assert x.min() >= -8 and x.max() <= 7
        else:
            assert x.min() >= -127 and x.max() <= 127 and np.abs(x).max() > 7
    # o: at most D // 2 = 32 nonzeros per token (Top-K 50 %)
    assert np.count_nonzero(np.concatenate(seen["o"]), axis=1).max() <= TINY.hidden // 2
    _, counts = ledger_run(weights, activations="a4.8")
    for (layer, name), sizes in counts.items():
        assert sizes["act_bits"] == (4 if name in A48_INT4_INPUTS else 8)
        if name == "o":
            assert sizes["nonzero"] <= len(PROMPT) * TINY.hidden // 2


def test_a48_o_input_is_quantize_then_mask(weights):
    decoder = Decoder(weights, activations="a4.8")
    x = np.random.default_rng(5).normal(size=(4, TINY.hidden)).astype(np.float32)
    x[0, 3] = x[0, 7] = 9.0                       # a tie at the maximum
    dense = quantize_activations(x)
    mask = topk_mask(x, TINY.hidden // 2)
    got = decoder.quantize_input(x, "o")
    assert np.array_equal(got.values, np.where(mask, dense.values, 0))
    assert np.array_equal(got.scale, dense.scale)
    # q/k/v, gate/up: INT4 absmean of the dense input; down: int8 of the dense input
    assert np.array_equal(decoder.quantize_input(x, "k").values,
                          quantize_activations_int4(x).values)
    assert np.array_equal(decoder.quantize_input(x, "down").values, dense.values)


def test_gate_first_equals_computing_up_fully(weights):
    gate_first, counts = ledger_run(weights, activations="a4.8")
    full = Decoder(weights, activations="a4.8", gate_first=False).forward(PROMPT)
    assert np.array_equal(gate_first, full)
    for layer in range(TINY.layers):
        needed = counts[(layer, "up")]["needed_outputs"]
        assert 0 < needed < len(PROMPT) * TINY.ffn
        assert "needed_outputs" not in counts[(layer, "gate")]
    # the needed outputs are exactly the positive gates
    decoder = Decoder(weights, activations="a4.8")
    h = np.random.default_rng(6).normal(size=(3, TINY.hidden)).astype(np.float32)
    w = decoder.layer_weights(0).projections
    gate = decoder.bit_linear(h, w["gate"], layer=0, name="gate")
    needed = gate > 0
    up = decoder.bit_linear(h, w["up"], layer=0, name="up", needed=needed)
    up_full = decoder.bit_linear(h, w["up"], layer=0, name="up")
    assert np.array_equal(up, np.where(needed, up_full, 0))
    relu2 = np.square(np.maximum(gate, 0))
    assert np.array_equal(relu2 * up, relu2 * up_full)


def test_a48_decode_equals_recomputation(weights):
    decoder = Decoder(weights, activations="a4.8", topk=0.3, kv_bits=3)
    run = generate(decoder, PROMPT, 4)
    assert np.array_equal(decoder.forward(PROMPT + run.generated_ids), run.logits)


def test_topk_and_block_topk_nonzero_counts(weights):
    t, d = len(PROMPT), TINY.hidden
    _, dense = ledger_run(weights)
    _, half = ledger_run(weights, topk=0.5)
    _, quarter = ledger_run(weights, topk=0.75)
    _, blocks = ledger_run(weights, block_topk=(16, 32))
    _, a48_quarter = ledger_run(weights, activations="a4.8", topk=0.75)
    for layer in range(TINY.layers):
        assert dense[(layer, "q")]["nonzero"] > t * d // 2
        # the kept q inputs are the largest: none quantizes to 0 in int8
        assert half[(layer, "q")]["nonzero"] == t * d // 2
        assert blocks[(layer, "q")]["nonzero"] == t * d // 2
        assert quarter[(layer, "q")]["nonzero"] == t * d // 4
        assert quarter[(layer, "o")]["nonzero"] == t * d // 4
        assert quarter[(layer, "down")]["nonzero"] <= t * TINY.ffn // 4
        assert half[(layer, "down")]["nonzero"] <= t * TINY.ffn // 2
        # a4.8 o with Top-K 75 %: the stronger of the two masks (16 of 64)
        assert a48_quarter[(layer, "o")]["nonzero"] <= t * d // 4
        for name in ("q", "k", "v", "o", "gate", "up", "down"):
            assert half[(layer, name)]["nonzero"] <= dense[(layer, name)]["nonzero"]


def test_kv_bits_and_the_bos_rule(weights):
    plain = Decoder(weights)
    cache = plain.new_cache()
    plain.forward(PROMPT, cache)
    keys, values = cache.keys[0], cache.values[0]     # layer 0: before any KV effect

    def stored(**options):
        decoder = Decoder(weights, **options)
        c = decoder.new_cache()
        decoder.forward(PROMPT, c)
        return decoder, c

    _, c4 = stored(kv_bits=4)
    assert np.array_equal(c4.keys[0], dequantize_kv(quantize_kv(keys, 4)))
    assert np.array_equal(c4.values[0], dequantize_kv(quantize_kv(values, 4)))
    decoder, c3 = stored(kv_bits=3)
    assert np.array_equal(c3.keys[0][:, :1], dequantize_kv(quantize_kv(keys[:, :1], 4)))
    assert np.array_equal(c3.keys[0][:, 1:], dequantize_kv(quantize_kv(keys[:, 1:], 3)))
    assert np.array_equal(c3.values[0][:, :1], dequantize_kv(quantize_kv(values[:, :1], 4)))
    # at most 7 distinct 3-bit levels in a vector after position 0
    assert max(len(np.unique(c3.keys[0][h, p])) for h in range(TINY.kv_heads)
               for p in range(1, len(PROMPT))) <= 7
    # a decode step is not position 0: 3 bits
    decoder.forward([7], c3)
    plain.forward([7], cache)
    assert np.array_equal(c3.keys[0][:, -1:], dequantize_kv(quantize_kv(cache.keys[0][:, -1:],
                                                                        3)))
    _, off = stored(kv_bits=3, kv_bos_4bit=False)
    assert np.array_equal(off.keys[0], dequantize_kv(quantize_kv(keys, 3)))


@pytest.mark.parametrize("options, message", [
    (dict(activations="a4"), "activations must be one of"),
    (dict(topk=1.0), "sparsity ratio"), (dict(topk=-0.1), "sparsity ratio"),
    (dict(topk="0.5"), "sparsity ratio"),
    (dict(topk=0.5, block_topk=(16, 32)), "mutually exclusive"),
    (dict(block_topk=(0, 32)), "0 < N <= M"), (dict(block_topk=(33, 32)), "0 < N <= M"),
    (dict(block_topk=(16, 48)), "must divide the hidden width"),
    (dict(block_topk=(1, 256)), "must divide the hidden width"),
    (dict(block_topk="16:32"), "pair"), (dict(block_topk=(16.0, 32)), "integers"),
    (dict(kv_bits=8), "kv_bits must be one of"), (dict(kv_bits=True), "kv_bits"),
])
def test_bad_decoder_options(weights, options, message):
    with pytest.raises(ValueError, match=message):
        Decoder(weights, **options)


def test_accounting_still_runs_on_the_decoder():
    a = account(TINY, tokens=2, context=3, lanes=16, rows=8)
    records = [c.sizes for c in a.costs if c.kind == "bitlinear"]
    assert len(records) == 7 * TINY.layers and {r["act_bits"] for r in records} == {8}
