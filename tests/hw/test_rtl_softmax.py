"""The integer softmax (hw.rtl.softmax) under amaranth.sim: every weight word for word
against model.hwnum.softmax_weights, with idle cycles and backpressure; zero rows,
one-hot rows, all-equal rows, the score format's extremes; a row past the buffer."""

import numpy as np
import pytest

from streams import stall_count, stream_put, stream_record, simulate

from ternary_accel.hw.rtl.softmax import SCORE_BITS, Softmax
from ternary_accel.model import hwnum as H

N = H.DEFAULT


def _rows(rng):
    lo, hi = H.signed_limits(SCORE_BITS)
    return [rng.integers(-4 << N.softmax_frac, 4 << N.softmax_frac, 13),
            np.zeros(5, dtype=np.int64),                                 # all zero
            np.array([0, 0, 50 << N.softmax_frac, 0]),                   # one-hot
            np.full(7, 12345),                                           # all equal
            np.array([hi, lo, 0, hi]),                                   # the extremes
            np.array([-(1 << 20)]),                                      # a single score
            rng.integers(-(1 << 12), 1 << 12, 16)]


@pytest.mark.parametrize("idle,backpressure", [(0.0, 0.0), (0.3, 0.5)])
def test_softmax_is_the_golden_model(idle, backpressure):
    rng = np.random.default_rng(4)
    rows = _rows(rng)
    dut = Softmax(16, N)
    got = []
    total = sum(len(r) for r in rows)

    async def producer(ctx):
        for row in rows:
            for k, score in enumerate(row):
                await stream_put(ctx, dut.i, {"score": int(score), "last": int(k == len(row) - 1)},
                                 idle=stall_count(rng, idle))

    async def consumer(ctx):
        await stream_record(ctx, dut.o, got, lambda: len(got) == total,
                            convert=lambda p: (int(p.weight), int(p.last)),
                            ready=lambda: int(rng.random() >= backpressure))

    simulate(dut, producer, consumer, cycles=200 * total)
    expected, lasts = [], []
    for row in rows:
        expected += [int(w) for w in H.softmax_weights(row[None], N)[0]]
        lasts += [0] * (len(row) - 1) + [1]
    assert [w for w, _ in got] == expected
    assert [last for _, last in got] == lasts


def test_a_row_longer_than_the_buffer_is_refused():
    dut = Softmax(4, N)
    got, errors = [], []
    rows = [np.arange(6), np.array([3, 1, 2])]

    async def producer(ctx):
        ctx.set(dut.o.ready, 1)
        for row in rows:
            for k, score in enumerate(row):
                await stream_put(ctx, dut.i, {"score": int(score), "last": int(k == len(row) - 1)})

    async def watch(ctx):
        async for _, _, error, valid, weight in ctx.tick().sample(
                dut.error, dut.o.valid, dut.o.payload.weight):
            errors.append(int(error))
            if valid:
                got.append(int(weight))

    simulate(dut, producer, processes=[watch], cycles=100)
    assert sum(errors) == 1
    assert got == [int(w) for w in H.softmax_weights(rows[1][None], N)[0]]


@pytest.mark.parametrize("positions", [1, 2, 5, 17])
def test_cycle_model_equals_simulation(positions):
    from ternary_accel.hw.timing import softmax_cycles
    dut = Softmax(32, N)
    log = []

    async def producer(ctx):
        for j in range(positions):
            await stream_put(ctx, dut.i, {"score": j * 7, "last": int(j == positions - 1)})

    async def watch(ctx):
        ctx.set(dut.o.ready, 1)
        async for _, _, iv, ir, ov in ctx.tick().sample(dut.i.valid, dut.i.ready,
                                                        dut.o.valid):
            log.append((iv and ir, ov))

    simulate(dut, producer, processes=[watch], cycles=200)
    first = next(i for i, (taken, _) in enumerate(log) if taken)
    last = [i for i, (_, given) in enumerate(log) if given][-1]
    assert last - first + 1 == softmax_cycles(positions, N)
