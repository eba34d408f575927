"""The absmax quantizer and one query head's attention (hw.rtl.attention.AbsmaxQuant,
AttentionHead) under amaranth.sim: codes, peaks and factors word for word against
model.hwnum.quantize_absmax / code_factor / score_factor, and every output of a head
against the golden functions composed as model.hwdecoder.HwDecoder.attention composes
them for one head and one query (the KV codes made as HwDecoder.kv_store makes them),
with idle cycles and backpressure on every stream; the refused rows and queries, the
saturations, a reset in mid-head, heads back to back; the cycle models."""

import numpy as np
import pytest
from amaranth.hdl import ResetInserter, Signal

from streams import sampler, simulate, stall_count, stream_put, stream_record

from ternary_accel.hw.rtl.attention import (KV_LAYOUT, AbsmaxQuant, AttentionHead,
                                            kv_beat_layout)
from ternary_accel.hw.timing import (absmax_cycles, attention_head_cycles,
                                     attention_head_interval, softmax_cycles)
from ternary_accel.model import hwnum as H

N = H.DEFAULT
D = 8                       # head_dim
DEPTH = 16
BIG = (1 << (N.resid_bits - 1)) - 1
QMAX = (1 << (N.qk_bits - 1)) - 1
#: The head's lanes: a key and a value over 8, 2 and 1 cycles.
LANES = [1, 4, D]


def lanes_fast(keep):
    """:data:`LANES` with all but ``keep`` marked slow: each test of a head keeps one
    lane count in the fast loop (between them 1, 4 and D), `make test` runs them all."""
    return [lanes if lanes == keep else pytest.param(lanes, marks=pytest.mark.slow)
            for lanes in LANES]


def _qmax(bits):
    return (1 << (bits - 1)) - 1


# -- the absmax quantizer -------------------------------------------------------------------

def _quant_golden(vectors, bits, score_dim=None):
    codes, factors = [], []
    for v, b in zip(vectors, bits):
        q, peak = H.quantize_absmax(np.asarray(v)[None], _qmax(b), N.recip_bits)
        codes += [(int(c), int(k == len(v) - 1)) for k, c in enumerate(q[0])]
        if score_dim is None:
            fm, fe = H.code_factor(peak, np.array([_qmax(b)]), N)
        else:
            fm, fe = H.score_factor(peak, _qmax(b), score_dim, N)
        factors.append((int(peak[0]), int(fm[0]), int(fe[0])))
    return codes, factors


def _run_quant(dut, vectors, bits, *, idle=0.0, backpressure=0.0, seed=0):
    rng = np.random.default_rng(seed)
    codes, factors, errors = [], [], []
    kept = [v for v in vectors if len(v) <= dut.width]

    async def producer(ctx):
        for v, b in zip(vectors, bits):
            if len(dut.allowed) > 1:
                ctx.set(dut.bits, b)
            for k, x in enumerate(v):
                await stream_put(ctx, dut.i, {"value": int(x), "last": int(k == len(v) - 1)},
                                 idle=stall_count(rng, idle))

    async def code_consumer(ctx):
        await stream_record(ctx, dut.codes, codes, lambda: len(codes) == sum(map(len, kept)),
                            convert=lambda p: (int(p.code), int(p.last)),
                            ready=lambda: int(rng.random() >= backpressure))

    async def factor_consumer(ctx):
        await stream_record(ctx, dut.factor, factors, lambda: len(factors) == len(kept),
                            convert=lambda p: (int(p.peak), int(p.mant), int(p.exp)),
                            ready=lambda: int(rng.random() >= backpressure))

    simulate(dut, producer, code_consumer, factor_consumer,
             processes=[sampler(dut.error, errors)], cycles=200 * len(vectors) + 50)
    return codes, factors, sum(errors)


def _vectors(rng, width):
    return [rng.integers(-BIG - 1, BIG + 1, width),                  # random, full range
            np.zeros(width, dtype=np.int64),                          # all zero
            np.eye(width, dtype=np.int64)[2] * -5,                    # one-hot
            np.array([-BIG - 1] + [BIG] * (width - 1)),               # max magnitude
            np.full(width, BIG),
            rng.integers(-300, 300, 3),                               # short, small
            rng.integers(-(1 << 16), 1 << 16, width),                 # peak past recip_bits
            np.array([(1 << N.recip_bits + 1) - 1, 1, -3, 0])]        # mn rounds to 2**P


@pytest.mark.parametrize("idle,backpressure", [(0.0, 0.0), (0.3, 0.5)])
def test_absmax_is_quantize_absmax(idle, backpressure):
    rng = np.random.default_rng(11)
    vectors = _vectors(rng, D)
    bits = [8] * len(vectors)
    dut = AbsmaxQuant(D, 8, N)
    codes, factors, errors = _run_quant(dut, vectors, bits, idle=idle,
                                        backpressure=backpressure, seed=3)
    assert (codes, factors) == _quant_golden(vectors, bits)
    assert errors == 0


def test_absmax_bits_port_chooses_qmax():
    """The KV cache's widths: 3, 4 and 8 bits a code, chosen per vector."""
    rng = np.random.default_rng(12)
    vectors = _vectors(rng, D)
    bits = [3, 4, 8, 4, 3, 8, 3, 4]
    dut = AbsmaxQuant(D, (3, 4, 8), N)
    codes, factors, errors = _run_quant(dut, vectors, bits, idle=0.2, backpressure=0.3)
    assert (codes, factors) == _quant_golden(vectors, bits)
    assert errors == 0


def test_absmax_score_factor():
    rng = np.random.default_rng(13)
    vectors = _vectors(rng, D)
    bits = [N.qk_bits] * len(vectors)
    dut = AbsmaxQuant(D, N.qk_bits, N, score_dim=D)
    codes, factors, errors = _run_quant(dut, vectors, bits, idle=0.2, backpressure=0.3)
    assert (codes, factors) == _quant_golden(vectors, bits, score_dim=D)


def test_absmax_refuses_long_vectors_and_unknown_widths():
    rng = np.random.default_rng(14)
    vectors = [rng.integers(-1000, 1000, D + 3), rng.integers(-1000, 1000, D),
               rng.integers(-1000, 1000, D), rng.integers(-1000, 1000, 5)]
    bits = [8, 5, 4, 8]                                # 5 is not among the widths
    dut = AbsmaxQuant(D, (4, 8), N)
    codes, factors, errors = _run_quant(dut, vectors, bits, idle=0.2, backpressure=0.3)
    assert errors == 2
    kept = [2, 3]
    assert (codes, factors) == _quant_golden([vectors[k] for k in kept],
                                             [bits[k] for k in kept])


def test_absmax_bad_parameters():
    with pytest.raises(ValueError, match="width"):
        AbsmaxQuant(0)
    with pytest.raises(ValueError, match="qmax_bits"):
        AbsmaxQuant(4, 17)
    with pytest.raises(ValueError, match="qmax_bits"):
        AbsmaxQuant(4, (4, 4))
    with pytest.raises(TypeError, match="HwNumerics"):
        AbsmaxQuant(4, 8, "default")
    with pytest.raises(ValueError, match="score_dim"):
        AbsmaxQuant(4, 8, N, score_dim=0)
    assert "bits" not in AbsmaxQuant(4, 8).signature.members
    assert "bits" in AbsmaxQuant(4, (3, 8)).signature.members


# -- one head -------------------------------------------------------------------------------

def _cache(x, bits):
    """Cache words of residual-format vectors ``x`` (positions, D) as
    HwDecoder.kv_store and AbsmaxQuant make them: codes and ``code_factor``."""
    qmax = np.full(len(x), _qmax(bits))
    codes, peak = H.quantize_absmax(np.asarray(x), qmax[0], N.recip_bits)
    mant, exp = H.code_factor(peak, qmax, N)
    return codes, mant, exp


def _head(rng, positions, *, kv_bits=8, q=None, k=None, v=None, scale=1 << 16):
    """A head: (query, keys cache, values cache)."""
    q = rng.integers(-scale, scale, D) if q is None else np.asarray(q)
    k = rng.integers(-scale, scale, (positions, D)) if k is None else np.asarray(k)
    v = rng.integers(-scale, scale, (positions, D)) if v is None else np.asarray(v)
    return q, _cache(k, kv_bits), _cache(v, kv_bits)


def _golden(head, tally):
    """One head of HwDecoder.attention for one query row (a short query padded with
    zeros)."""
    q, (kc, km, ke), (vc, vm, ve) = head
    q = np.pad(q, (0, D - len(q)))
    qc, qm = H.quantize_absmax(q[None], QMAX, N.recip_bits)
    rm, re_ = H.score_factor(qm, QMAX, D, N)
    dot = np.einsum("hd,hjd->hj", qc, kc[None])
    scores = H.attention_scores(dot, km[None], ke[None], rm[:, None], re_[:, None], N, tally)
    w = H.softmax_weights(scores, N)
    out = H.attention_values(w, vm[None], ve[None], vc[None], N)
    out = H.saturate(out, N.resid_bits, tally, "attention output")
    return [int(x) for x in out[0]]


def _beats(cache):
    codes, mant, exp = cache
    return [{"codes": [int(c) for c in codes[j]], "mant": int(mant[j]), "exp": int(exp[j]),
             "last": int(j == len(codes) - 1)} for j in range(len(codes))]


def _expected(heads):
    tally = H.Saturations()
    outputs = []
    for head in heads:
        if len(head[0]) <= D and len(head[1][0]) <= DEPTH:
            outputs.append(_golden(head, tally))
    return outputs, tally


def _run_head(heads, *, idle=0.0, backpressure=0.0, seed=0, reset_head=None, lanes=None,
              value_bits=None):
    """Stream ``heads`` on three independent producers; ``reset_head``: that head's
    query and half its keys are sent, then a reset, then the other heads (sent one
    after the other). Returns the outputs (a list a head) and the pulses' counts."""
    unit = AttentionHead(D, DEPTH, N, lanes=lanes, value_bits=value_bits)
    rst = Signal()
    dut = ResetInserter({"sync": rst})(unit)
    rng = np.random.default_rng(seed)
    got, flat = [], []
    pulses = {name: [] for name in ("error", "q_error", "saturated", "score_saturated")}
    kept = [h for k, h in enumerate(heads) if k != reset_head]
    expected, tally = _expected(kept)
    total = sum(map(len, expected))

    async def put_all(ctx, stream, beats):
        for beat in beats:
            await stream_put(ctx, stream, beat, idle=stall_count(rng, idle))

    def q_beats(q):
        return [{"value": int(x), "last": int(k == len(q) - 1)} for k, x in enumerate(q)]

    async def queries(ctx):
        for q, _, _ in heads:
            await put_all(ctx, unit.q, q_beats(q))

    async def keys(ctx):
        for _, k, _ in heads:
            await put_all(ctx, unit.keys, _beats(k))

    async def values(ctx):
        for _, _, v in heads:
            await put_all(ctx, unit.values, _beats(v))

    async def sequential(ctx):
        q, k, _ = heads[reset_head]
        await put_all(ctx, unit.q, q_beats(q))
        await put_all(ctx, unit.keys, _beats(k)[:len(k[0]) // 2])
        ctx.set(rst, 1)
        await ctx.tick().repeat(2)
        ctx.set(rst, 0)
        for q, k, v in kept:
            await put_all(ctx, unit.q, q_beats(q))
            await put_all(ctx, unit.keys, _beats(k))
            await put_all(ctx, unit.values, _beats(v))

    async def consumer(ctx):
        await stream_record(ctx, unit.o, flat, lambda: len(flat) == total,
                            convert=lambda p: (int(p.value), int(p.last)),
                            ready=lambda: int(rng.random() >= backpressure))
        await ctx.tick().repeat(300)                  # nothing more, no late pulse

    producers = [queries, keys, values] if reset_head is None else [sequential]
    beats = D // unit.lanes
    cycles = (60 + 6 * beats) * sum(len(h[1][0]) + len(h[0]) for h in heads) \
        + 400 * len(heads) + 2000
    simulate(dut, *producers, consumer,
             processes=[sampler(getattr(unit, name), pulses[name]) for name in pulses],
             cycles=cycles)
    assert [last for _, last in flat] == ([0] * (D - 1) + [1]) * len(expected)
    for k in range(0, len(flat), D):
        got.append([value for value, _ in flat[k:k + D]])
    return got, expected, tally, {name: sum(p) for name, p in pulses.items()}


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("idle,backpressure", [
    (0.0, 0.0), pytest.param(0.3, 0.5, marks=pytest.mark.slow)])
def test_heads_are_the_golden_model(idle, backpressure, lanes):
    """n = 1 and n = depth, random heads, all back to back."""
    rng = np.random.default_rng(21)
    heads = [_head(rng, 1), _head(rng, DEPTH), _head(rng, 5),
             _head(rng, 3, scale=1 << 22), _head(rng, DEPTH, kv_bits=4)]
    got, expected, tally, pulses = _run_head(heads, idle=idle, backpressure=backpressure,
                                             seed=5, lanes=lanes, value_bits=4)
    assert got == expected
    assert pulses == {"error": 0, "q_error": 0, "saturated": 0, "score_saturated": 0}
    assert tally.total == 0


@pytest.mark.parametrize("lanes", lanes_fast(1))
def test_zero_query_zero_keys_and_extremes(lanes):
    rng = np.random.default_rng(22)
    zero = np.zeros(D, dtype=np.int64)
    heads = [
        _head(rng, 4, q=zero),                                       # all-zero query
        _head(rng, 6, k=np.zeros((6, D), dtype=np.int64)),           # all-zero keys
        # extremes: every score saturates (equal), the uniform weights of six positions
        # sum past 1 and the output, at the residual format's bottom, saturates
        _head(rng, 6, q=np.full(D, BIG), k=np.full((6, D), BIG),
              v=np.full((6, D), -BIG - 1)),
        _head(rng, 6, q=np.full(D, -BIG - 1), k=np.full((6, D), BIG),
              v=np.full((6, D), BIG)),                                # and at the top
        _head(rng, 2, q=np.full(D, -BIG - 1), k=np.array([[BIG] * D, [-BIG - 1] * D]),
              v=np.array([[BIG] * D, [-BIG - 1] * D])),
        _head(rng, 5, q=rng.integers(-1000, 1000, 5)),               # short: zero-padded
        _head(rng, 3),
        # the weighted sums' extremes: the largest peak, on the narrowest codes, and a
        # one-hot row (weight 2**prob_bits on the largest factor)
        _head(rng, DEPTH, q=np.zeros(D, dtype=np.int64), v=np.full((DEPTH, D), -BIG - 1),
              kv_bits=3),
        _head(rng, 2, q=np.full(D, BIG), k=np.array([[BIG] * D, [-BIG - 1] * D]),
              v=np.array([[-BIG - 1] * D, [BIG] * D]), kv_bits=3),
    ]
    got, expected, tally, pulses = _run_head(heads, idle=0.2, backpressure=0.3, seed=6,
                                             lanes=lanes, value_bits=3)
    assert got == expected
    assert tally.counts.get("attention scores", 0) > 0
    assert tally.counts.get("attention output", 0) > 0
    assert pulses["score_saturated"] == tally.counts["attention scores"]
    assert pulses["saturated"] == tally.counts["attention output"]
    assert min(got[2]) == -BIG - 1 and max(got[3]) == BIG
    assert min(got[7]) == -BIG - 1 and min(got[8]) == -BIG - 1
    assert pulses["error"] == pulses["q_error"] == 0


@pytest.mark.parametrize("lanes", lanes_fast(D))
def test_refused_rows_and_queries_are_dropped(lanes):
    """A row longer than depth (error) and a query longer than head_dim (q_error): their
    heads give nothing, their streams are consumed, the heads around them are right."""
    rng = np.random.default_rng(23)
    long_query = (rng.integers(-1000, 1000, D + 3),) + _head(rng, 3)[1:]
    heads = [_head(rng, 2), _head(rng, DEPTH + 3), _head(rng, 4), long_query,
             _head(rng, DEPTH), long_query, _head(rng, 1)]
    got, expected, tally, pulses = _run_head(heads, idle=0.2, backpressure=0.3, seed=7,
                                             lanes=lanes)
    assert len(expected) == 4
    assert got == expected
    assert pulses["error"] == 1 and pulses["q_error"] == 2


@pytest.mark.parametrize("lanes", lanes_fast(4))
def test_reset_mid_head_then_the_next_heads_are_right(lanes):
    rng = np.random.default_rng(24)
    heads = [_head(rng, 3), _head(rng, 10), _head(rng, 5)]
    got, expected, _, pulses = _run_head(heads, idle=0.2, backpressure=0.3, seed=8,
                                         reset_head=1, lanes=lanes)
    assert got == expected and len(got) == 2


@pytest.mark.slow
@pytest.mark.parametrize("lanes", [1, 2, D])
def test_many_random_heads_back_to_back(lanes):
    rng = np.random.default_rng(25)
    heads = [_head(rng, int(rng.integers(1, DEPTH + 1)), kv_bits=int(rng.choice([3, 4, 8])),
                   scale=1 << int(rng.integers(4, 24))) for _ in range(20)]
    got, expected, _, _ = _run_head(heads, idle=0.3, backpressure=0.4, seed=9, lanes=lanes,
                                    value_bits=3)
    assert got == expected


def test_narrow_caches_need_value_bits():
    """Sized for v_bits codes, the weighted sums of a 3-bit cache at the largest peak
    (factors 42 times larger) would wrap: value_bits widens them."""
    from ternary_accel.hw.rtl.attention import Values
    assert Values(D, DEPTH, N, value_bits=3).weighted_width \
        > Values(D, DEPTH, N).weighted_width
    rng = np.random.default_rng(26)
    heads = [_head(rng, 2, q=np.zeros(D, dtype=np.int64), v=np.full((2, D), BIG), kv_bits=3)]
    got, expected, _, _ = _run_head(heads)
    assert got != expected
    got, expected, _, _ = _run_head(heads, value_bits=3)
    assert got == expected


def test_layouts_and_parameters():
    layout = KV_LAYOUT(D, N)
    assert layout.size == D * max(N.qk_bits, N.v_bits) + N.scale_bits + 1 + 12
    beat = kv_beat_layout(D, N)
    assert beat.size == layout.size + 1
    assert all(beat.members[name] == shape for name, shape in layout.members.items())
    with pytest.raises(ValueError, match="head_dim"):
        AttentionHead(0, 4)
    with pytest.raises(ValueError, match="depth"):
        AttentionHead(4, 0)
    with pytest.raises(TypeError, match="HwNumerics"):
        AttentionHead(4, 4, None)
    with pytest.raises(ValueError, match="lanes"):
        AttentionHead(8, 4, lanes=3)
    with pytest.raises(ValueError, match="lanes"):
        AttentionHead(8, 4, lanes=0)
    with pytest.raises(ValueError, match="value_bits"):
        AttentionHead(8, 4, value_bits=N.v_bits + 1)
    assert AttentionHead(64, 4).lanes == 8 and AttentionHead(12, 4).lanes == 6
    assert AttentionHead(4, 4).lanes == 4 and AttentionHead(64, 4, lanes=64).lanes == 64


# -- cycles ---------------------------------------------------------------------------------

def _measure(dut, producers, i, outputs, cycles=1000):
    """Edges from the first beat taken on ``i`` to the last beat given on ``outputs[0]``
    (every output always ready)."""
    log = []

    async def watch(ctx):
        for o in outputs:
            ctx.set(o.ready, 1)
        async for _, _, iv, ir, ov in ctx.tick().sample(i.valid, i.ready, outputs[0].valid):
            log.append((iv and ir, ov))

    simulate(dut, *producers, processes=[watch], cycles=cycles)
    first = next(k for k, (taken, _) in enumerate(log) if taken)
    last = [k for k, (_, given) in enumerate(log) if given][-1]
    return last - first + 1


@pytest.mark.parametrize("width", [1, 5, 16])
def test_absmax_cycle_model(width):
    dut = AbsmaxQuant(16, 8, N)

    async def producer(ctx):
        for k in range(width):
            await stream_put(ctx, dut.i, {"value": 1000 * k - 3000, "last": int(k == width - 1)})

    assert _measure(dut, [producer], dut.i, [dut.codes, dut.factor]) == \
        absmax_cycles(width, N)


def _heads_cycles(head_dim, positions, heads, lanes, depth=16):
    """Cycles of ``heads`` query heads back to back (every stream always valid, the
    output always ready), from the first query element taken to the last output."""
    dut = AttentionHead(head_dim, depth, N, lanes=lanes)
    word = {"codes": [3] * head_dim, "mant": 1 << N.scale_bits, "exp": -30}

    def stream_of(stream, beats):
        async def producer(ctx):
            for beat in beats:
                await stream_put(ctx, stream, beat)
        return producer

    kv = [{**word, "last": int(j == positions - 1)} for j in range(positions)] * heads
    q = [{"value": 1000 * k - 3000, "last": int(k == head_dim - 1)}
         for k in range(head_dim)] * heads
    producers = [stream_of(dut.q, q), stream_of(dut.keys, kv), stream_of(dut.values, kv)]
    budget = heads * (2 * positions * head_dim + 4 * positions + 3 * head_dim + 150) + 300
    return _measure(dut, producers, dut.q, [dut.o], cycles=budget)


@pytest.mark.parametrize("head_dim,positions,lanes", [
    (2, 1, None), (8, 1, None), (8, 5, None), (4, 16, None), (8, 5, 1), (8, 16, 2),
    (12, 3, 3), (16, 1, 4)])
def test_head_cycle_model(head_dim, positions, lanes):
    assert _heads_cycles(head_dim, positions, 1, lanes) == \
        attention_head_cycles(positions, head_dim, N, lanes)


@pytest.mark.parametrize("lanes", [1, pytest.param(4, marks=pytest.mark.slow), 8,
                                   pytest.param(16, marks=pytest.mark.slow)])
@pytest.mark.parametrize("positions", [1, pytest.param(3, marks=pytest.mark.slow), 5,
                                       pytest.param(6, marks=pytest.mark.slow), 16])
def test_heads_back_to_back_cycle_model(positions, lanes):
    """One and three heads of head_dim 16 back to back: ``(heads - 1) * interval +
    attention_head_cycles``, bound by the query's quantizer (few positions), by the
    query slot (one lane: its codes and keys) or by the softmax's row (the scores made
    ahead of it counted)."""
    for heads in (1, 3):
        assert _heads_cycles(16, positions, heads, lanes) == \
            (heads - 1) * attention_head_interval(positions, 16, N, lanes) \
            + attention_head_cycles(positions, 16, N, lanes)


@pytest.mark.slow
@pytest.mark.parametrize("lanes,positions", [(4, 1), (4, 5), (4, 40), (8, 1), (8, 5),
                                             (8, 10), (8, 40), (64, 1), (64, 40), (1, 2),
                                             (1, 6)])
def test_heads_back_to_back_cycle_model_head_dim_64(positions, lanes):
    assert _heads_cycles(64, positions, 3, lanes, depth=64) == \
        2 * attention_head_interval(positions, 64, N, lanes) \
        + attention_head_cycles(positions, 64, N, lanes)


def test_cycle_models_refuse_bad_sizes():
    with pytest.raises(ValueError, match="width"):
        absmax_cycles(0, N)
    with pytest.raises(ValueError, match="positions"):
        attention_head_cycles(0, 8, N)
    with pytest.raises(ValueError, match="positions"):
        attention_head_interval(0, 8, N)
    with pytest.raises(ValueError, match="lanes"):
        attention_head_cycles(4, 8, N, lanes=3)
    # lanes = head_dim: a key and a value a cycle
    assert attention_head_interval(20, 8, N, 8) == max(absmax_cycles(8, N),
                                                        softmax_cycles(20, N))
