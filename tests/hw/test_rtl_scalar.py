"""The scalar unit (hw.rtl.scalar) under amaranth.sim: every result word for word against
model.hwnum.reciprocal / rsqrt, with idle cycles and backpressure, and its latency
against hw.timing.scalar_latency."""

import numpy as np
import pytest

from streams import stall_count, stream_put, stream_record, simulate

from ternary_accel.hw.rtl.scalar import RECIPROCAL, RSQRT, VALUE_WIDTH, ScalarUnit
from ternary_accel.hw.timing import scalar_latency
from ternary_accel.model import hwnum as H


def _cases(rng, count):
    edges = [1, 2, 3, 4, 5, 127, 128, 255, 256, (1 << 16) - 1, 1 << 16, (1 << 16) + 1,
             (1 << 17) - 1, (1 << 32) + 12345, (1 << VALUE_WIDTH) - 1, 1 << (VALUE_WIDTH - 1)]
    values = edges + [int(rng.integers(1, 1 << int(rng.integers(1, VALUE_WIDTH))))
                      for _ in range(count)]
    return [(op, v) for v in values for op in (RECIPROCAL, RSQRT)]


def _expected(op, value, numerics):
    value = max(value, 1)                                # 0 is taken as 1
    if op == RECIPROCAL:
        mant, exp = H.reciprocal(np.array([value]), numerics.recip_bits)
    else:
        mant, exp = H.rsqrt(np.array([value]), numerics)
    return int(mant[0]), int(exp[0])


def _run(numerics, cases, rng, idle=0.0, backpressure=0.0):
    dut = ScalarUnit(numerics)
    got = []

    async def producer(ctx):
        for op, value in cases:
            await stream_put(ctx, dut.i, {"op": op, "value": value},
                             idle=stall_count(rng, idle))

    async def consumer(ctx):
        await stream_record(ctx, dut.o, got, lambda: len(got) == len(cases),
                            convert=lambda p: (int(p.mant), int(p.exp)),
                            ready=lambda: int(rng.random() >= backpressure))

    simulate(dut, producer, consumer)
    return got


@pytest.mark.parametrize("numerics", [H.DEFAULT,
                                      H.DEFAULT.replace(recip_bits=8, rsqrt_bits=10,
                                                        rsqrt_seed_bits=4, newton_steps=2),
                                      H.WIDE.replace(newton_steps=0)])
def test_scalar_unit_is_the_golden_model(numerics):
    rng = np.random.default_rng(numerics.recip_bits)
    cases = _cases(rng, 60) + [(RECIPROCAL, 0), (RSQRT, 0)]
    got = _run(numerics, cases, rng, idle=0.3, backpressure=0.4)
    assert got == [_expected(op, v, numerics) for op, v in cases]


@pytest.mark.parametrize("op,name", [(RECIPROCAL, "reciprocal"), (RSQRT, "rsqrt")])
def test_scalar_latency_is_the_cycle_model(op, name):
    numerics = H.DEFAULT
    dut = ScalarUnit(numerics)
    seen = {}

    async def bench(ctx):
        ctx.set(dut.i.payload, {"op": op, "value": 1000003})
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.o.ready, 0)
        await ctx.tick().until(dut.i.ready)              # the accepting edge
        ctx.set(dut.i.valid, 0)
        cycles = 0
        while not ctx.get(dut.o.valid):
            await ctx.tick()
            cycles += 1
        seen["latency"] = cycles

    simulate(dut, bench)
    assert seen["latency"] == scalar_latency(name, numerics)
