"""The attention unit's products (hw.rtl.attention) under amaranth.sim: scores and
weighted value sums word for word against model.hwnum.attention_scores /
attention_values, factors made by model.hwnum.code_factor / score_factor, with idle
cycles and backpressure; the codes' extremes and the score saturation."""

import numpy as np
import pytest

from streams import stall_count, stream_put, stream_record, sampler, simulate

from ternary_accel.hw.rtl.attention import Scores, Values
from ternary_accel.model import hwnum as H

N = H.DEFAULT
D = 8
QMAX = (1 << (N.qk_bits - 1)) - 1


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


@pytest.mark.parametrize("idle,backpressure", [(0.0, 0.0), (0.3, 0.5)])
def test_scores_are_the_golden_model(idle, backpressure):
    rng = np.random.default_rng(7)
    rows = _rows(rng, 8)
    dut = Scores(D, N)
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


    simulate(dut, producer, consumer, processes=[sampler(dut.saturated, pulses)], cycles=40 * total)
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


@pytest.mark.parametrize("idle,backpressure", [(0.0, 0.0), (0.3, 0.5)])
def test_values_are_the_golden_model(idle, backpressure):
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
    dut = Values(D, 16, N)
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

    simulate(dut, producer, consumer, cycles=400 * len(rows))
    expected = []
    for weights, codes, peaks in rows:
        vm, ve = H.code_factor(peaks, np.full(len(peaks), vmax), N)
        expected.append([int(v) for v in H.attention_values(weights, vm, ve, codes, N)])
    assert got == expected
