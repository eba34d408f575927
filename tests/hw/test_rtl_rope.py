"""RoPE (hw.rtl.rope) under amaranth.sim: every output word for word against
model.hwnum.rope_rotate with the golden tables, at several positions, with idle cycles
and backpressure; the saturation count; the format's extremes."""

import numpy as np
import pytest

from streams import stall_count, stream_put, stream_record, sampler, simulate

from ternary_accel.hw.rtl.rope import Rope
from ternary_accel.model import hwnum as H

N = H.DEFAULT
HEAD_DIM, POSITIONS, THETA = 8, 12, 10000.0


@pytest.mark.parametrize("idle,backpressure", [(0.0, 0.0), (0.3, 0.5)])
def test_rope_is_the_golden_model(idle, backpressure):
    rng = np.random.default_rng(3)
    lo, hi = H.signed_limits(N.resid_bits)
    vectors = [(int(rng.integers(0, POSITIONS)), rng.integers(-2 ** 16, 2 ** 16, HEAD_DIM))
               for _ in range(10)]
    vectors += [(POSITIONS - 1, np.full(HEAD_DIM, hi)), (5, np.full(HEAD_DIM, lo)),
                (0, np.arange(HEAD_DIM)), (7, np.zeros(HEAD_DIM, dtype=np.int64))]
    dut = Rope(HEAD_DIM, POSITIONS, THETA, N)
    got, pulses = [], []

    async def producer(ctx):
        for k, (position, vector) in enumerate(vectors, 1):
            ctx.set(dut.position, position)
            for value in vector:
                await stream_put(ctx, dut.i, int(value), idle=stall_count(rng, idle))
            # the position holds until the vector's last result has left
            while len(got) < k * HEAD_DIM:
                await ctx.tick()

    async def consumer(ctx):
        await stream_record(ctx, dut.o, got, lambda: len(got) == HEAD_DIM * len(vectors),
                            convert=lambda p: (int(p.value), int(p.last)),
                            ready=lambda: int(rng.random() >= backpressure))


    simulate(dut, producer, consumer, processes=[sampler(dut.saturated, pulses)],
             cycles=40 * HEAD_DIM * len(vectors))
    cos, sin = H.rope_table(HEAD_DIM, THETA, POSITIONS, N.rope_bits)
    tally = H.Saturations()
    expected = []
    for position, vector in vectors:
        expected += [int(v) for v in H.rope_rotate(vector, cos[position], sin[position], N,
                                                   tally)]
    assert [v for v, _ in got] == expected
    assert [last for _, last in got] == ([0] * (HEAD_DIM - 1) + [1]) * len(vectors)
    assert sum(pulses) == tally.total > 0
