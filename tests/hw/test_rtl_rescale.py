"""The output stage of the hardware numerics (hw.rtl.rescale) under amaranth.sim: every
result word for word against model.hwnum.output_factor + rescale, with idle cycles and
backpressure; the accumulators' extremes and the saturation count."""

import numpy as np
import pytest

from streams import stall_count, stream_put, stream_record, sampler, simulate

from ternary_accel.hw.rtl.rescale import Rescale
from ternary_accel.model import hwnum as H

N = H.DEFAULT
ACC = 24


@pytest.mark.parametrize("idle,backpressure", [(0.0, 0.0), (0.3, 0.5)])
def test_rescale_is_the_golden_model(idle, backpressure):
    rng = np.random.default_rng(6)
    lo, hi = H.signed_limits(ACC)
    tokens = []
    for scale in (3e-4, 2e-2, 1.0, 40.0):                         # small to saturating
        fm, fe = H.fixed_constant(scale, N.scale_bits, "token")
        accs = np.concatenate([[lo, hi, 0, 1, -1], rng.integers(-2 ** 20, 2 ** 20, 11)])
        tokens.append((int(fm), int(fe), accs))
    pm, pe = H.fixed_constant(0.0417, N.scale_bits, "weight scale")
    dut = Rescale(ACC, N)
    got, pulses = [], []

    async def factors(ctx):
        ctx.set(dut.scale_mant, int(pm))
        ctx.set(dut.scale_exp, int(pe))
        for fm, fe, _ in tokens:
            await stream_put(ctx, dut.factor, {"mant": fm, "exp": fe},
                             idle=stall_count(rng, idle))

    async def accumulators(ctx):
        for _, _, accs in tokens:
            for k, a in enumerate(accs):
                await stream_put(ctx, dut.acc, {"value": int(a), "last": int(k == len(accs) - 1)},
                                 idle=stall_count(rng, idle))

    async def consumer(ctx):
        await stream_record(ctx, dut.o, got, lambda: len(got) == 16 * len(tokens),
                            convert=lambda p: (int(p.value), int(p.last)),
                            ready=lambda: int(rng.random() >= backpressure))


    simulate(dut, factors, accumulators, consumer,
             processes=[sampler(dut.saturated, pulses)], cycles=50 * 16 * len(tokens))
    tally = H.Saturations()
    expected = []
    for fm, fe, accs in tokens:
        km, ke = H.output_factor(fm, fe, pm, pe, N)
        expected += [int(v) for v in H.rescale(accs, km, ke, N.resid_frac, N.resid_bits,
                                               tally, "o")]
    assert [v for v, _ in got] == expected
    assert [last for _, last in got] == ([0] * 15 + [1]) * len(tokens)
    assert sum(pulses) == tally.total > 0
