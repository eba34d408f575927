"""The element-wise unit (hw.rtl.elementwise) under amaranth.sim: every result word for
word against model.hwnum.residual_add / relu2 / gate_product, the saturation count
against the golden tally, with idle cycles and backpressure; the format's extremes."""

import numpy as np
import pytest

from streams import stall_count, stream_put, stream_record, sampler, simulate

from ternary_accel.hw.rtl.elementwise import ADD, GATE, RELU2, Elementwise
from ternary_accel.model import hwnum as H

N = H.DEFAULT


def _golden(op, a, b, tally):
    if op == ADD:
        return int(H.residual_add(a, b, N, tally))
    if op == RELU2:
        return int(H.relu2(a, N, tally))
    return int(H.gate_product(a, b, N, tally))


def _cases(rng, count):
    lo, hi = H.signed_limits(N.resid_bits)
    extremes = [lo, hi, 0, 1, -1, hi // 2, lo // 2, 1 << N.resid_frac, -(1 << N.resid_frac)]
    cases = [(op, a, b) for op in (ADD, RELU2, GATE) for a in extremes for b in extremes]
    for _ in range(count):
        bits = int(rng.integers(1, N.resid_bits))
        a, b = (int(v) for v in rng.integers(-(1 << bits), 1 << bits, 2))
        cases.append((int(rng.integers(0, 3)), a, b))
    return cases


@pytest.mark.parametrize("idle,backpressure", [(0.0, 0.0), (0.3, 0.5)])
def test_elementwise_is_the_golden_model(idle, backpressure):
    rng = np.random.default_rng(int(idle * 10))
    cases = _cases(rng, 400)
    dut = Elementwise(N)
    got, saturated = [], []

    async def producer(ctx):
        for k, (op, a, b) in enumerate(cases):
            await stream_put(ctx, dut.i, {"op": op, "a": a, "b": b,
                                          "last": int(k == len(cases) - 1)},
                             idle=stall_count(rng, idle))

    async def consumer(ctx):
        await stream_record(ctx, dut.o, got, lambda: len(got) == len(cases),
                            convert=lambda p: (int(p.value), int(p.last)),
                            ready=lambda: int(rng.random() >= backpressure))

    simulate(dut, producer, consumer, processes=[sampler(dut.saturated, saturated)],
             cycles=20 * len(cases))
    tally = H.Saturations()
    expected = [_golden(op, a, b, tally) for op, a, b in cases]
    assert [v for v, _ in got] == expected
    assert [last for _, last in got] == [0] * (len(cases) - 1) + [1]
    assert sum(saturated) == tally.total > 0


def test_latency():
    from ternary_accel.hw.rtl.elementwise import ELEMENTWISE_LATENCY
    dut = Elementwise(N)
    seen = {}

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.payload, {"op": ADD, "a": 5, "b": 7, "last": 1})
        ctx.set(dut.i.valid, 1)
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        cycles = 0
        while not ctx.get(dut.o.valid):
            await ctx.tick()
            cycles += 1
        seen["latency"] = cycles + 1
        seen["value"] = ctx.get(dut.o.payload.value)

    simulate(dut, bench)
    assert seen == {"latency": ELEMENTWISE_LATENCY, "value": 12}
