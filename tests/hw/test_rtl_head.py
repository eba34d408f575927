"""The LM head's hardware path (hw.rtl.head, hw.rtl.rescale with row scales) under
amaranth.sim: row sums, logits and the argmax word for word against
model.hwnum.head_accumulators / head_logits / argmax, for every head format, with idle
cycles and backpressure on every stream; the cycle model without stalls."""

import numpy as np
import pytest

from streams import simulate, stall_count, stream_put, stream_record

from ternary_accel.hw.rtl.head import Argmax, HeadDot
from ternary_accel.hw.rtl.rescale import Rescale
from ternary_accel.hw.timing import head_cycles, head_load_cycles
from ternary_accel.model import hwnum as H

HIDDEN, VOCAB = 64, 24
FORMATS = {"grouped": H.GROUPED_HEAD.replace(head_group=32),
           "int8": H.DEFAULT, "trit5": H.DEFAULT.replace(head="trit5")}


def _head(numerics, seed=0):
    rng = np.random.default_rng(seed)
    e = rng.normal(0, 0.05, (VOCAB, HIDDEN))
    e[0] = 0
    e[1, :32] *= 40                                    # a loud group
    return H.quantize_head(e, numerics)


def _tokens(rng, count):
    codes = rng.integers(-127, 128, (count, HIDDEN))
    codes[0] = 127                                     # the extremes
    if count > 1:
        codes[1] = -128
    return codes


def _weight_beats(head, numerics, lanes, rows):
    beats = []
    for tile in range(VOCAB // rows):
        r0 = tile * rows
        for b in range(HIDDEN // lanes):
            k0 = b * lanes
            beat = {"codes": [[int(c) for c in head.codes[r0 + r, k0:k0 + lanes]]
                              for r in range(rows)],
                    "scale": [{"mant": int(head.mant[r0 + r]), "exp": int(head.exp[r0 + r])}
                              for r in range(rows)],
                    "last": int(b == HIDDEN // lanes - 1),
                    "end": int(b == HIDDEN // lanes - 1 and tile == VOCAB // rows - 1)}
            if numerics.head == "grouped":
                group = k0 // numerics.head_group
                beat["mult"] = [int(head.groups[r0 + r, group]) for r in range(rows)]
            beats.append(beat)
    return beats


async def _send_token(ctx, dut, codes, beats, lanes, rng, idle):
    for b in range(HIDDEN // lanes):
        await stream_put(ctx, dut.act, {"codes": [int(c) for c in codes[b * lanes:(b + 1) * lanes]],
                                        "last": int(b == HIDDEN // lanes - 1)},
                         idle=stall_count(rng, idle))
    for beat in beats:
        await stream_put(ctx, dut.weights, beat, idle=stall_count(rng, idle))


@pytest.mark.parametrize("fmt,lanes,rows,idle,backpressure", [
    ("grouped", 16, 4, 0.0, 0.0),
    pytest.param("grouped", 16, 4, 0.3, 0.5, marks=pytest.mark.slow),
    pytest.param("grouped", 8, 12, 0.2, 0.3, marks=pytest.mark.slow),
    ("int8", 16, 4, 0.3, 0.5), ("trit5", 8, 12, 0.2, 0.3)])
def test_row_sums_are_the_golden_model(fmt, lanes, rows, idle, backpressure):
    numerics = FORMATS[fmt]
    rng = np.random.default_rng(lanes + rows)
    head = _head(numerics)
    tokens = _tokens(rng, 3)
    dut = HeadDot(HIDDEN, lanes, rows, numerics)
    beats = _weight_beats(head, numerics, lanes, rows)
    got = []

    async def producer(ctx):
        for codes in tokens:
            await _send_token(ctx, dut, codes, beats, lanes, rng, idle)

    async def consumer(ctx):
        await stream_record(ctx, dut.o, got, lambda: len(got) == len(tokens) * VOCAB,
                            convert=lambda p: (int(p.value), int(p.mant), int(p.exp),
                                               int(p.last)),
                            ready=lambda: int(rng.random() >= backpressure))

    simulate(dut, producer, consumer, cycles=200 * len(beats) * len(tokens))
    acc = H.head_accumulators(tokens, head, lanes=lanes)
    assert [v for v, _, _, _ in got] == [int(v) for v in acc.reshape(-1)]
    assert [(m, e) for _, m, e, _ in got] == [(int(head.mant[j]), int(head.exp[j]))
                                              for _ in tokens for j in range(VOCAB)]
    assert [last for *_, last in got] == ([0] * (VOCAB - 1) + [1]) * len(tokens)


@pytest.mark.parametrize("lanes,rows", [(16, 4), (8, 12), (32, 2)])
def test_cycle_model_equals_simulation(lanes, rows):
    numerics = FORMATS["grouped"]
    head = _head(numerics)
    dut = HeadDot(HIDDEN, lanes, rows, numerics)
    beats = _weight_beats(head, numerics, lanes, rows)
    edges = {}

    async def producer(ctx):
        rng = np.random.default_rng(0)
        await _send_token(ctx, dut, _tokens(rng, 1)[0], [], lanes, rng, 0.0)
        ctx.set(dut.weights.valid, 1)
        cycle = 0
        for beat in beats:
            ctx.set(dut.weights.payload, beat)
            await ctx.tick().until(dut.weights.ready)
            edges.setdefault("first", cycle)
            cycle += 1
        ctx.set(dut.weights.valid, 0)

    async def consumer(ctx):
        ctx.set(dut.o.ready, 1)
        cycle = -1
        seen = 0
        async for _, _, valid in ctx.tick().sample(dut.o.valid):
            cycle += 1
            seen += valid
            if seen == VOCAB:
                return

    # count cycles from the first weight beat's edge to the last row's edge
    log = []

    async def clock(ctx):
        async for _, _, wv, wr, ov in ctx.tick().sample(dut.weights.valid, dut.weights.ready,
                                                        dut.o.valid):
            log.append((wv and wr, ov))

    simulate(dut, producer, consumer, processes=[clock], cycles=2000)
    first = next(i for i, (w, _) in enumerate(log) if w)
    last = [i for i, (_, o) in enumerate(log) if o][VOCAB - 1]
    assert last - first + 1 == head_cycles(VOCAB, HIDDEN, lanes=lanes, rows=rows)
    assert head_load_cycles(HIDDEN, lanes=lanes) == HIDDEN // lanes


def test_logits_and_argmax_are_the_golden_model():
    """HeadDot -> Rescale(row_scales) -> Argmax on tokens from the golden model's norm
    quantizer factors."""
    numerics = FORMATS["grouped"]
    rng = np.random.default_rng(5)
    head = _head(numerics)
    tokens = _tokens(rng, 4)
    token_mant = rng.integers(1 << (numerics.scale_bits - 1), 1 << numerics.scale_bits, 4)
    token_exp = rng.integers(-30, -10, 4)
    token_exp[0] = 6                                     # logits past int24: saturation
    acc = H.head_accumulators(tokens, head)
    tally = H.Saturations()
    logits = H.head_logits(acc, token_mant, token_exp, head, numerics, tally)
    assert tally.total > 0
    dot = HeadDot(HIDDEN, 16, 4, numerics)
    rescale = Rescale(dot.acc_width, numerics, row_scales=True)
    argmax = Argmax(VOCAB, numerics)
    got_logits, got_max = [], []

    from amaranth.hdl import Module
    from amaranth.lib import wiring
    m = Module()
    m.submodules.dot, m.submodules.rescale, m.submodules.argmax = dot, rescale, argmax
    beats = _weight_beats(head, numerics, 16, 4)

    async def producer(ctx):
        for codes in tokens:
            await _send_token(ctx, dot, codes, beats, 16, rng, 0.2)

    async def factors(ctx):
        for mant, exp in zip(token_mant, token_exp):
            await stream_put(ctx, rescale.factor, {"mant": int(mant), "exp": int(exp)},
                             idle=stall_count(rng, 0.3))

    # the three units joined with wires (the sequencer's job), the logits tapped
    m.d.comb += [rescale.acc.valid.eq(dot.o.valid), dot.o.ready.eq(rescale.acc.ready),
                 rescale.acc.payload.value.eq(dot.o.payload.value),
                 rescale.acc.payload.mant.eq(dot.o.payload.mant),
                 rescale.acc.payload.exp.eq(dot.o.payload.exp),
                 rescale.acc.payload.last.eq(dot.o.payload.last)]
    wiring.connect(m, rescale.o, argmax.i)

    async def taps(ctx):
        ctx.set(argmax.o.ready, 1)
        async for _, _, lv, lr, lp, mv, mr, mp in ctx.tick().sample(
                rescale.o.valid, rescale.o.ready, rescale.o.payload, argmax.o.valid,
                argmax.o.ready, argmax.o.payload):
            if lv and lr:
                got_logits.append(int(lp.value))
            if mv and mr:
                got_max.append((int(mp.index), int(mp.value)))
            ctx.set(argmax.o.ready, int(rng.random() >= 0.4))
            if len(got_max) == len(tokens):
                return

    from amaranth.sim import Simulator
    sim = Simulator(m)
    sim.add_clock(1e-8)
    for bench in (producer, factors, taps):
        sim.add_testbench(bench)
    sim.run_until(1e-8 * 5000)
    assert got_logits == [int(v) for v in logits.reshape(-1)]
    best = H.argmax(logits)
    assert got_max == [(int(best[t]), int(logits[t, best[t]])) for t in range(len(tokens))]


def test_argmax_takes_the_lowest_index_among_equals():
    dut = Argmax(6)
    rows = [[5, 9, 9, 1, 9, 0], [-3, -3, -3, -3, -3, -3], [0, 0, 0, 0, 0, 7],
            [(1 << 23) - 1, -(1 << 23), 0, 0, 0, (1 << 23) - 1]]
    got = []

    async def producer(ctx):
        for row in rows:
            for j, v in enumerate(row):
                await stream_put(ctx, dut.i, {"value": v, "last": int(j == len(row) - 1)})

    async def consumer(ctx):
        await stream_record(ctx, dut.o, got, lambda: len(got) == len(rows),
                            convert=lambda p: (int(p.index), int(p.value)))

    simulate(dut, producer, consumer, cycles=200)
    assert got == [(int(np.argmax(r)), max(r)) for r in rows]


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="does not divide hidden"):
        HeadDot(60, 16, 4)
    with pytest.raises(ValueError, match="does not divide the head's group 32"):
        HeadDot(64, 64, 4, FORMATS["grouped"])
    with pytest.raises(ValueError, match="rows must be a positive integer"):
        HeadDot(64, 16, 0)
    with pytest.raises(ValueError, match="does not tile"):
        head_cycles(25, 64, lanes=16, rows=4)


@pytest.mark.parametrize("stop", ["codes", "rows", "output"])
def test_reset_in_mid_token_leaves_nothing_behind(stop):
    """A reset while a token's codes load, while its rows stream, or while its sums
    leave: the next token's sums are the golden model's."""
    from amaranth.hdl import ResetInserter, Signal
    numerics = FORMATS["grouped"]
    rng = np.random.default_rng(11)
    head = _head(numerics)
    first, second = _tokens(rng, 3)[1:]
    unit = HeadDot(HIDDEN, 16, 4, numerics)
    rst = Signal()
    dut = ResetInserter({"sync": rst})(unit)
    beats = _weight_beats(head, numerics, 16, 4)
    got, seen = [], []

    async def pulse(ctx):
        ctx.set(unit.act.valid, 0)
        ctx.set(unit.weights.valid, 0)
        ctx.set(rst, 1)
        await ctx.tick().repeat(2)
        ctx.set(rst, 0)

    async def producer(ctx):
        acts = [{"codes": [int(c) for c in first[b * 16:(b + 1) * 16]], "last": int(b == 3)}
                for b in range(4)]
        if stop == "codes":
            for beat in acts[:2]:
                await stream_put(ctx, unit.act, beat)
        else:
            for beat in acts:
                await stream_put(ctx, unit.act, beat)
            for beat in beats[:9 if stop == "rows" else len(beats)]:
                await stream_put(ctx, unit.weights, beat)
            if stop == "output":
                while len(seen) < 6:                   # some of the sums have left
                    await ctx.tick()
        await pulse(ctx)
        got.clear()
        await _send_token(ctx, unit, second, beats, 16, rng, 0.2)

    async def consumer(ctx):
        async for _, _, valid, ready, payload in ctx.tick().sample(
                unit.o.valid, unit.o.ready, unit.o.payload):
            if valid and ready:
                seen.append(1)
                got.append(int(payload.value))
            ctx.set(unit.o.ready, int(rng.random() >= 0.5 or stop != "output"))
            if len(got) == VOCAB:
                return

    from amaranth.sim import Simulator
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer, background=True)
    sim.add_testbench(consumer)
    sim.run_until(1e-8 * 3000)
    expected = H.head_accumulators(second[None], head, lanes=16)[0]
    assert got == [int(v) for v in expected]


def test_a_malformed_token_does_not_hang_and_the_next_is_exact():
    """Too many code beats before ``last`` and a tile with too many beats: the counters
    wrap, the unit answers, and a well-formed token after them is exact."""
    numerics = FORMATS["grouped"]
    rng = np.random.default_rng(13)
    head = _head(numerics)
    bad, good = _tokens(rng, 3)[1:]
    dut = HeadDot(HIDDEN, 16, 4, numerics)
    beats = _weight_beats(head, numerics, 16, 4)
    got = []

    async def producer(ctx):
        for b in range(7):                              # 7 code beats for 4 places
            await stream_put(ctx, dut.act, {"codes": [int(c) for c in bad[:16]],
                                            "last": int(b == 6)})
        long_tile = [dict(beats[0], last=0, end=0)] * 6 + beats[:4]
        for beat in long_tile + beats[4:]:
            await stream_put(ctx, dut.weights, beat)
        await _send_token(ctx, dut, good, beats, 16, rng, 0.0)

    async def consumer(ctx):
        await stream_record(ctx, dut.o, got, lambda: len(got) == 2 * VOCAB,
                            convert=lambda p: int(p.value))

    simulate(dut, producer, consumer, cycles=3000)
    assert len(got) == 2 * VOCAB                      # the malformed token answered
    expected = H.head_accumulators(good[None], head, lanes=16)[0]
    assert got[VOCAB:] == [int(v) for v in expected]
