"""The fused RMSNorm + int8 quantizer (hw.rtl.normquant) under amaranth.sim: every code
and every token factor word for word against model.hwnum.norm_quant, with idle cycles
and backpressure; zeros, one outlier, all equal and the format's extremes."""

import numpy as np
import pytest

from streams import stall_count, stream_put, stream_record, simulate

from ternary_accel.hw.rtl.normquant import NormQuant
from ternary_accel.model import hwnum as H

N = H.DEFAULT


def _tokens(rng, width):
    lo, hi = H.signed_limits(N.resid_bits)
    rows = [rng.integers(-2 ** 14, 2 ** 14, width),
            np.zeros(width, dtype=np.int64),                        # all-zero token
            np.full(width, 4096),                                   # all equal
            np.concatenate([[hi], rng.integers(-3, 4, width - 1)]),   # one outlier
            np.full(width, lo),                                     # the extreme
            rng.integers(lo, hi, width)]
    return [np.asarray(r, dtype=np.int64) for r in rows]


def _run(width, depth, tokens, gains, gexp, rng, idle=0.0, backpressure=0.0, bits=8):
    dut = NormQuant(depth, N)
    eps = int(H.to_fixed(width * 1e-5, 2 * N.resid_frac))
    c_m, c_e = H.norm_constant(width, bits, N)
    a_m, a_e = H.fixed_constant(np.sqrt(7.0) * width, N.recip_bits, "sqrt(7) D")
    factors, codes = [], []

    async def producer(ctx):
        ctx.set(dut.gain_exp, gexp)
        ctx.set(dut.eps_term, eps)
        ctx.set(dut.const_mant, int(c_m))
        ctx.set(dut.const_exp, int(c_e))
        ctx.set(dut.int4, int(bits == 4))
        ctx.set(dut.absmean_mant, int(a_m))
        ctx.set(dut.absmean_exp, int(a_e))
        for token in tokens:
            for i, (x, g) in enumerate(zip(token, gains)):
                await stream_put(ctx, dut.i, {"x": int(x), "g": int(g),
                                              "last": int(i == len(token) - 1)},
                                 idle=stall_count(rng, idle))

    async def factor_consumer(ctx):
        await stream_record(ctx, dut.factor, factors, lambda: len(factors) == len(tokens),
                            convert=lambda p: (int(p.mant), int(p.exp)),
                            ready=lambda: int(rng.random() >= backpressure))

    async def code_consumer(ctx):
        await stream_record(ctx, dut.codes, codes,
                            lambda: len(codes) == width * len(tokens),
                            convert=lambda p: (int(p.code), int(p.last)),
                            ready=lambda: int(rng.random() >= backpressure))

    simulate(dut, producer, factor_consumer, code_consumer)
    expected = H.norm_quant(np.stack(tokens), (gains, gexp), eps, N, bits=bits)
    return factors, codes, expected, eps


@pytest.mark.parametrize("width,idle,backpressure,bits", [(16, 0.0, 0.0, 8), (24, 0.3, 0.4, 8),
                                                          (16, 0.0, 0.0, 4), (24, 0.3, 0.4, 4)])
def test_norm_quant_is_the_golden_model(width, idle, backpressure, bits):
    rng = np.random.default_rng(width)
    tokens = _tokens(rng, width)
    gains = H.to_fixed(rng.uniform(0.5, 1.6, width), N.gain_bits - 2)
    gains[3] = -gains[3]                                             # a negative gain
    factors, codes, expected, _ = _run(width, 32, tokens, gains, -(N.gain_bits - 2), rng,
                                       idle, backpressure, bits)
    assert [c for c, _ in codes] == [int(v) for v in expected.values.ravel()]
    assert [last for _, last in codes] == [int(i % width == width - 1)
                                           for i in range(width * len(tokens))]
    assert factors == list(zip(map(int, expected.mant), map(int, expected.exp)))


def test_cycles_are_the_cycle_model():
    """No stalls: from the first element's edge to the last code's edge."""
    from ternary_accel.hw.timing import norm_quant_cycles
    width = 20
    rng = np.random.default_rng(1)
    token = rng.integers(-2 ** 14, 2 ** 14, width)
    gains = H.to_fixed(rng.uniform(0.5, 1.6, width), N.gain_bits - 2)
    dut = NormQuant(32, N)
    c_m, c_e = H.norm_constant(width, 8, N)
    edges = {}

    async def bench(ctx):
        ctx.set(dut.const_mant, int(c_m))
        ctx.set(dut.const_exp, int(c_e))
        ctx.set(dut.factor.ready, 1)
        ctx.set(dut.codes.ready, 1)
        cycle = 0
        sent = 0
        while "last" not in edges:
            if sent < width:
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"x": int(token[sent]), "g": int(gains[sent]),
                                        "last": int(sent == width - 1)})
            else:
                ctx.set(dut.i.valid, 0)
            accepted = sent < width and ctx.get(dut.i.ready)
            done = ctx.get(dut.codes.valid) and ctx.get(dut.codes.payload.last)
            await ctx.tick()
            cycle += 1
            if accepted:
                edges.setdefault("first", cycle)
                sent += 1
            if done:
                edges["last"] = cycle

    simulate(dut, bench)
    assert edges["last"] - edges["first"] + 1 == norm_quant_cycles(width, N)


def test_a_token_longer_than_the_buffer_is_refused():
    """Consumed, flagged on ``error``, nothing produced; the next token is right."""
    width, depth = 8, 8
    rng = np.random.default_rng(2)
    long_token = rng.integers(-2 ** 14, 2 ** 14, depth + 3)
    token = rng.integers(-2 ** 14, 2 ** 14, width)
    gains = H.to_fixed(rng.uniform(0.5, 1.6, depth + 3), N.gain_bits - 2)
    dut = NormQuant(depth, N)
    c_m, c_e = H.norm_constant(width, 8, N)
    factors, codes, errors = [], [], []

    async def producer(ctx):
        ctx.set(dut.const_mant, int(c_m))
        ctx.set(dut.const_exp, int(c_e))
        ctx.set(dut.factor.ready, 1)
        ctx.set(dut.gain_exp, -(N.gain_bits - 2))
        for t in (long_token, token):
            for i, x in enumerate(t):
                await stream_put(ctx, dut.i, {"x": int(x), "g": int(gains[i]),
                                              "last": int(i == len(t) - 1)})

    async def consumer(ctx):
        await stream_record(ctx, dut.codes, codes, lambda: len(codes) == width,
                            convert=lambda p: int(p.code))

    async def watch(ctx):
        async for _, _, error, fvalid, fmant, fexp in ctx.tick().sample(
                dut.error, dut.factor.valid, dut.factor.payload.mant, dut.factor.payload.exp):
            errors.append(int(error))
            if fvalid:
                factors.append((int(fmant), int(fexp)))
            if len(codes) == width:
                break

    simulate(dut, producer, consumer, processes=[watch], cycles=1000)   # a hang fails below
    assert sum(errors) == 1
    expected = H.norm_quant(token[None], (gains[:width], -(N.gain_bits - 2)), 0, N)
    assert codes == [int(v) for v in expected.values[0]]
    assert set(factors) == {(int(expected.mant[0]), int(expected.exp[0]))}
