"""The attention unit's products (hw.rtl.attention) under amaranth.sim: scores and
weighted value sums word for word against model.hwnum.attention_scores /
attention_values, factors made by model.hwnum.code_factor / score_factor, with idle
cycles and backpressure, a key (a value) lanes codes a cycle; the codes' extremes, the
score saturation, the weighted sums at the bounds their widths are sized for; the
cycle models."""

import numpy as np
import pytest

from streams import stall_count, stream_put, stream_record, sampler, simulate

from ternary_accel.hw.rtl.attention import Scores, Values, value_bounds
from ternary_accel.hw.timing import attention_product_cycles
from ternary_accel.model import hwnum as H

N = H.DEFAULT
D = 8
QMAX = (1 << (N.qk_bits - 1)) - 1
#: Lanes of the units: a key (a value) over 8, 4, 2 and 1 cycles.
LANES = [1, 2, 4, D]


def _rows(rng, count):
    """(query codes, query peak, [(key codes, key peak)])."""
    rows = []
    for k in range(count):
        q = rng.integers(-QMAX, QMAX + 1, D)
        keys = [(rng.integers(-QMAX, QMAX + 1, D), int(rng.integers(1, 1 << 20)))
                for _ in range(int(rng.integers(1, 9)))]
        if k == 0:                                       # the extremes: +-127 everywhere
            q = np.full(D, QMAX)
            keys = [(np.full(D, QMAX), (1 << 23) - 1), (np.full(D, -QMAX), 1)]
        rows.append((q, int(rng.integers(1, 1 << 20)) if k else (1 << 23) - 1, keys))
    return rows


def _head_dim(row):
    """The scale's head_dim: 1 for the extreme row (its scores saturate), else 128."""
    return 1 if row == 0 else 128


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("idle,backpressure", [(0.0, 0.0), (0.3, 0.5)])
def test_scores_are_the_golden_model(idle, backpressure, lanes):
    rng = np.random.default_rng(7)
    rows = _rows(rng, 8)
    dut = Scores(D, N, lanes=lanes)
    got, pulses = [], []
    total = sum(len(keys) for _, _, keys in rows)

    async def producer(ctx):
        for k, (q, qpeak, keys) in enumerate(rows, 1):
            rm, re = H.score_factor(np.array([qpeak]), QMAX, _head_dim(k - 1), N)
            ctx.set(dut.query, {"codes": [int(v) for v in q], "mant": int(rm[0]),
                                "exp": int(re[0])})
            for j, (codes, kpeak) in enumerate(keys):
                km, ke = H.code_factor(np.array([kpeak]), np.array([QMAX]), N)
                await stream_put(ctx, dut.keys, {"codes": [int(v) for v in codes],
                                                 "mant": int(km[0]), "exp": int(ke[0]),
                                                 "last": int(j == len(keys) - 1)},
                                 idle=stall_count(rng, idle))
            while len(got) < sum(len(r[2]) for r in rows[:k]):
                await ctx.tick()                        # the query holds for its row

    async def consumer(ctx):
        await stream_record(ctx, dut.o, got, lambda: len(got) == total,
                            convert=lambda p: (int(p.score), int(p.last)),
                            ready=lambda: int(rng.random() >= backpressure))


    simulate(dut, producer, consumer, processes=[sampler(dut.saturated, pulses)],
             cycles=(40 + 4 * D // lanes) * total)
    tally = H.Saturations()
    expected, lasts = [], []
    for k, (q, qpeak, keys) in enumerate(rows):
        rm, re = H.score_factor(np.array([qpeak]), QMAX, _head_dim(k), N)
        codes = np.stack([c for c, _ in keys])
        km, ke = H.code_factor(np.array([p for _, p in keys]), np.full(len(keys), QMAX), N)
        expected += [int(v) for v in H.attention_scores(codes @ q, km, ke, rm, re, N, tally)]
        lasts += [0] * (len(keys) - 1) + [1]
    assert [v for v, _ in got] == expected
    assert [last for _, last in got] == lasts
    assert sum(pulses) == tally.total > 0


def _run_values(dut, rows, *, idle=0.0, backpressure=0.0, seed=0, qmax=None):
    """Rows of (weights, codes, peaks) through ``dut``; returns (got, expected)."""
    rng = np.random.default_rng(seed)
    vmax = (1 << (N.v_bits - 1)) - 1 if qmax is None else qmax
    got = []

    async def producer(ctx):
        for weights, codes, peaks in rows:
            vm, ve = H.code_factor(peaks, np.full(len(peaks), vmax), N)
            for j in range(len(weights)):
                await stream_put(ctx, dut.i, {"weight": int(weights[j]),
                                              "codes": [int(v) for v in codes[j]],
                                              "mant": int(vm[j]), "exp": int(ve[j]),
                                              "last": int(j == len(weights) - 1)},
                                 idle=stall_count(rng, idle))

    async def consumer(ctx):
        await stream_record(ctx, dut.o, got, lambda: len(got) == len(rows),
                            convert=lambda p: [int(v) for v in p],
                            ready=lambda: int(rng.random() >= backpressure))

    beats = sum(len(w) for w, _, _ in rows)
    simulate(dut, producer, consumer, cycles=(40 + 4 * dut.beats) * beats + 100 * len(rows))
    expected = []
    for weights, codes, peaks in rows:
        vm, ve = H.code_factor(peaks, np.full(len(peaks), vmax), N)
        expected.append([int(v) for v in H.attention_values(weights, vm, ve, codes, N)])
    return got, expected


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("idle,backpressure", [(0.0, 0.0), (0.3, 0.5)])
def test_values_are_the_golden_model(idle, backpressure, lanes):
    rng = np.random.default_rng(8)
    vmax = (1 << (N.v_bits - 1)) - 1
    rows = []
    for k in range(6):
        n = int(rng.integers(1, 10))
        weights = rng.integers(0, 1 << N.prob_bits, n)
        if k == 0:
            weights = np.array([1 << N.prob_bits])                 # one-hot
        codes = rng.integers(-vmax, vmax + 1, (len(weights), D))
        peaks = rng.integers(1, 1 << 23, len(weights))
        rows.append((weights, codes, peaks))
    dut = Values(D, 16, N, lanes=lanes)
    got, expected = _run_values(dut, rows, idle=idle, backpressure=backpressure, seed=lanes)
    assert got == expected


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("bits", [N.v_bits, 3])
def test_values_at_their_bounds(bits, lanes):
    """The widths' extremes: every weight at the softmax's largest (``weight_max``), the
    largest peak 2**(resid_bits - 1) on codes of +-qmax, for a whole row of ``depth``
    positions (the sums at ``sum_max``, both signs) and for one; the bound is reached
    and every output fits ``out_width``."""
    depth, qmax = 16, (1 << (bits - 1)) - 1
    dut = Values(D, depth, N, lanes=lanes, value_bits=bits)
    weight_max, weighted_max, _, sum_max = value_bounds(N, depth, bits)
    assert weight_max >= 1 << N.prob_bits and weight_max < 1 << (N.prob_bits + 1)
    peak = 1 << (N.resid_bits - 1)
    signs = np.where(np.arange(D) % 2, -1, 1)
    rows = [(np.full(depth, weight_max), np.tile(signs * qmax, (depth, 1)),
             np.full(depth, peak)),
            (np.array([1 << N.prob_bits]), (-signs * qmax)[None], np.array([peak])),
            (np.full(depth, weight_max), np.tile(-signs * qmax, (depth, 1)),
             np.full(depth, peak)),
            (np.array([0, weight_max]), np.tile(signs, (2, 1)), np.array([1, 1]))]
    vm, ve = H.code_factor(np.array([peak]), np.array([qmax]), N)
    weighted = int(H.round_shift(weight_max * vm, -ve)[0])
    assert weighted == weighted_max < 1 << dut.weighted_width     # the narrowest codes'
    reach = depth * weighted * qmax
    assert reach <= sum_max < 1 << (dut.sum_width - 1)
    if bits == N.v_bits:
        assert reach == sum_max                                   # the bound reached
    got, expected = _run_values(dut, rows, idle=0.2, backpressure=0.3, qmax=qmax)
    assert got == expected
    top = (reach + (1 << (N.prob_bits - 1))) >> N.prob_bits
    assert max(map(max, got)) == top and min(map(min, got)) == -top
    assert (sum_max >> N.prob_bits) + 1 < 1 << (dut.out_width - 1)


def test_values_widths_fit_the_numerics():
    """The default numerics at head_dim 64, 256 positions: a 33-bit weighted factor (two
    18 x 18 blocks a code product, against the 60 bits of a factor unbounded), 49-bit
    sums; the widest numerics and a 2-bit cache still sized from the bounds."""
    dut = Values(64, 256, N)
    assert (dut.weighted_width, dut.sum_width, dut.out_width) == (33, 49, 33)
    for numerics, bits in ((H.WIDE, None), (H.WIDE, 2), (N, 2)):
        weight_max, weighted_max, _, sum_max = value_bounds(numerics, 256, bits)
        assert sum_max < 1 << 62
    with pytest.raises(ValueError, match="value_bits"):
        Values(8, 16, N, value_bits=1)
    with pytest.raises(ValueError, match="lanes"):
        Values(8, 16, N, lanes=3)
    with pytest.raises(ValueError, match="lanes"):
        Scores(8, N, lanes=16)


def _measure(dut, beats, i, o):
    """Edges from the first beat taken on ``i`` to the last beat given on ``o``."""
    log = []

    async def producer(ctx):
        for beat in beats:
            await stream_put(ctx, i, beat)

    async def watch(ctx):
        ctx.set(o.ready, 1)
        async for _, _, iv, ir, ov in ctx.tick().sample(i.valid, i.ready, o.valid):
            log.append((iv and ir, ov))

    simulate(dut, producer, processes=[watch], cycles=(20 + dut.beats) * len(beats) + 50)
    first = next(k for k, (taken, _) in enumerate(log) if taken)
    last = [k for k, (_, given) in enumerate(log) if given][-1]
    return last - first + 1


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("positions", [1, 3, 9])
def test_product_cycle_models(positions, lanes):
    codes = [1, -2, 3, 4, -5, 6, 7, -8]
    scores = Scores(D, N, lanes=lanes)
    keys = [{"codes": codes, "mant": 1 << N.scale_bits, "exp": -20,
             "last": int(j == positions - 1)} for j in range(positions)]
    values = Values(D, 16, N, lanes=lanes)
    beats = [{**key, "weight": 1 << (N.prob_bits - 2)} for key in keys]
    model = attention_product_cycles(positions, D, lanes)
    assert _measure(scores, keys, scores.keys, scores.o) == model
    assert _measure(values, beats, values.i, values.o) == model
