"""The LM head's formats (model.hwnum.quantize_head / pack_head / unpack_head): exact
round trips, the bytes the accounting charges, the decoder's products."""

import numpy as np
import pytest

from ternary_accel.hw.perf.accounting import Precisions, account
from ternary_accel.hw.mapping import LayerTiling
from ternary_accel.model.config import TINY
from ternary_accel.model.hwdecoder import HwDecoder
from ternary_accel.model.hwnum import (DEFAULT, GROUPED_HEAD, NumericsError, head_bytes,
                                       head_row_bytes, head_scale_bytes, norm_quant,
                                       output_factor, pack_head, quantize_head, rescale,
                                       unpack_head)
from ternary_accel.model.weights import MasterWeights, random_master_weights

FORMATS = [DEFAULT, DEFAULT.replace(head="trit5"), DEFAULT.replace(head_bits=5),
           GROUPED_HEAD, GROUPED_HEAD.replace(head_group=32, head_group_bits=3),
           GROUPED_HEAD.replace(head_bits=8, head_group=128, head_group_bits=8)]


def table(seed=0, vocab=40, hidden=256):
    rng = np.random.default_rng(seed)
    e = rng.normal(0, 0.02, (vocab, hidden))
    e[0] = 0                                    # an all-zero row
    e[1, 5] = 3.0                               # one outlier in a row
    e[2, :64] = 0                               # an all-zero group
    e[3] = -1e-20                               # tiny values
    return e


@pytest.mark.parametrize("numerics", FORMATS, ids=lambda n: f"{n.head}{n.head_bits}")
def test_round_trip_is_exact(numerics):
    e = table()
    head = quantize_head(e, numerics)
    rows, scales = pack_head(head, numerics)
    assert rows.dtype == np.uint8 and rows.shape == (40, head_row_bytes(256, numerics))
    assert scales.shape == (40, head_scale_bytes(numerics))
    back = unpack_head(rows, scales, 256, numerics)
    assert np.array_equal(back.codes, head.codes)
    assert np.array_equal(back.mant, head.mant) and np.array_equal(back.exp, head.exp)
    if numerics.head == "grouped":
        assert np.array_equal(back.groups, head.groups)
        assert head.groups.min() >= 1 and head.groups.max() <= (1 << numerics.head_group_bits) - 1
    else:
        assert head.groups is None and back.groups is None
    qmax = 121 if numerics.head == "trit5" else (1 << (numerics.head_bits - 1)) - 1
    assert np.abs(head.codes).max() == qmax          # each row's peak reaches qmax
    assert not head.codes[0].any()


def test_grouped_codes_follow_the_definition():
    n = GROUPED_HEAD
    e = table()
    head = quantize_head(e, n)
    peak = np.abs(e).max(axis=1)
    peak[peak == 0] = 1
    smax = 63
    gp = np.abs(e.reshape(40, -1, 32)).max(axis=2)
    s = np.clip(np.ceil(gp / peak[:, None] * smax), 1, smax)
    assert np.array_equal(head.groups, s)
    step = peak / (7 * smax)
    codes = np.clip(np.floor(e / (step[:, None] * np.repeat(s, 32, axis=1)) + 0.5), -7, 7)
    assert np.array_equal(head.codes, codes)
    approx = head.rows * (head.mant * np.exp2(head.exp.astype(float)))[:, None]
    assert np.max(np.abs(approx - e)) <= np.max(step[:, None] * np.repeat(s, 32, axis=1)) / 2 * 1.001


def test_bytes_by_hand():
    assert head_row_bytes(256, DEFAULT) == 256
    assert head_row_bytes(256, DEFAULT.replace(head="trit5")) == 256
    assert head_row_bytes(256, GROUPED_HEAD) == 128 + 8 * 6 // 8          # 134
    assert head_row_bytes(2560, GROUPED_HEAD) == 1280 + 80 * 6 // 8        # 1340
    assert head_scale_bytes(DEFAULT) == 3                                   # u16 + exponent
    assert head_bytes(128256, 2560, GROUPED_HEAD) == 128256 * 1343


def test_bad_bytes_and_groups_are_refused():
    n = GROUPED_HEAD
    rows, scales = pack_head(quantize_head(table(), n), n)
    with pytest.raises(NumericsError, match="head rows must be"):
        unpack_head(rows[:, :-1], scales, 256, n)
    with pytest.raises(NumericsError, match="head scales must be"):
        unpack_head(rows, scales[:-1], 256, n)
    zero = rows.copy()
    zero[:, -6:] = 0                             # the last group multipliers
    with pytest.raises(NumericsError, match="multiplier is zero"):
        unpack_head(zero, scales, 256, n)
    t5 = DEFAULT.replace(head="trit5")
    rows, scales = pack_head(quantize_head(table(), t5), t5)
    rows[0, 0] = 250
    with pytest.raises(NumericsError, match="outside -121..121"):
        unpack_head(rows, scales, 256, t5)
    with pytest.raises(NumericsError, match="does not divide the hidden size 100"):
        quantize_head(np.ones((2, 100)), n)
    with pytest.raises(NumericsError, match="head_group_bits = 9"):
        n.replace(head_group_bits=9)
    with pytest.raises(NumericsError, match="exponent outside a signed byte"):
        quantize_head(np.full((2, 128), 1e-35), n)
    with pytest.raises(NumericsError, match=r"\(vocab, hidden\) matrix"):
        quantize_head(np.ones(4), n)


def test_decoder_logits_sum_each_group_times_its_multiplier():
    n = GROUPED_HEAD.replace(head_group=16)
    weights = MasterWeights(TINY, random_master_weights(TINY, seed=3))
    decoder = HwDecoder(weights, numerics=n)
    x = np.random.default_rng(4).integers(-(1 << 14), 1 << 14, (3, TINY.hidden))
    got = decoder.logits_int(x)
    head = quantize_head(weights.lm_head(), n)
    gain, eps = decoder._hw_final
    nq = norm_quant(x, gain, eps, n, bits=n.head_act_bits, table=decoder._rsqrt)
    v = nq.values.astype(np.int64)
    g = TINY.hidden // 16
    codes = head.codes.astype(np.int64).reshape(TINY.vocab, g, 16)
    partial = np.einsum("tgk,vgk->tvg", v.reshape(3, g, 16), codes)
    acc = (partial * head.groups[None]).sum(axis=2)
    km, ke = output_factor(nq.mant[:, None], nq.exp[:, None], head.mant[None, :],
                           head.exp[None, :], n)
    assert np.array_equal(got, rescale(acc, km, ke, n.resid_frac, n.resid_bits))


def test_accounted_bytes_are_the_formats_bytes_by_hand():
    n = GROUPED_HEAD.replace(head_group=32)
    context = 5
    a = account(TINY, tokens=1, context=context, precisions=Precisions.hardware(n))
    moved = a.bytes()
    row = -(-(64 * 4 + 2 * 6) // 8) + 3                        # 34 bytes and the scale
    assert row == 37 and moved["head_weights"] == TINY.vocab * row
    assert moved["embedding"] == 1 * 37                       # one row, its format
    ternary = TINY.layers * sum(LayerTiling(p.out_features, p.in_features, 1).weight_bytes
                                for p in TINY.shape.projections())
    assert moved["ternary_weights"] == ternary
    kv = TINY.layers * context * 2 * TINY.kv_heads * TINY.head_dim   # 8-bit codes, read
    kv += TINY.layers * 1 * 2 * TINY.kv_heads * TINY.head_dim        # and written
    assert moved["kv_cache"] == kv
    norms = TINY.layers * (3 * TINY.hidden + TINY.ffn) * n.gain_bits // 8 + \
        TINY.hidden * n.gain_bits // 8
    assert moved["norm_weights"] == norms
    assert a.dram_bytes == sum(moved[k] for k in ("head_weights", "embedding",
                                                  "ternary_weights", "kv_cache",
                                                  "norm_weights"))


@pytest.mark.parametrize("numerics", [GROUPED_HEAD, DEFAULT.replace(head="trit5")],
                         ids=["grouped", "trit5"])
def test_decoder_logits_from_the_packed_head_are_the_same(numerics):
    """The head as DRAM holds it, unpacked, gives the decoder the same logits."""
    weights = MasterWeights(TINY, random_master_weights(TINY, seed=5))
    decoder = HwDecoder(weights, numerics=numerics)
    ids = np.array([1, 7, 42, 200])
    before = decoder.forward(ids)
    rows, scales = pack_head(quantize_head(weights.lm_head(), numerics), numerics)
    back = unpack_head(rows, scales, TINY.hidden, numerics)
    again = HwDecoder(weights, numerics=numerics)
    _ = again.hw_head                              # the final norm's constants
    again._hw_head = back
    assert np.array_equal(again.forward(ids), before)


@pytest.mark.parametrize("numerics", FORMATS, ids=lambda n: f"{n.head}{n.head_bits}")
def test_head_accumulators_beat_by_beat_equal_the_rows_product(numerics):
    from ternary_accel.model.hwnum import head_accumulators
    head = quantize_head(table(), numerics)
    v = np.random.default_rng(9).integers(-127, 128, (3, 256))
    whole = v @ head.rows.astype(np.int64).T
    assert np.array_equal(head_accumulators(v, head), whole)
    if numerics.head == "grouped":
        assert np.array_equal(head_accumulators(v, head, lanes=8), whole)
        with pytest.raises(NumericsError, match="does not divide"):
            head_accumulators(v, head, lanes=7)
