"""The pipelined output stage (:mod:`hw.outstage`) and the unit's ``output_rows``: every
result against :func:`model.arith.round_fixed`, every result's exit cycle against the
timing contract (:func:`hw.matmul.result_cycles`, :func:`hw.matmul.throttled_result_cycles`),
under ``amaranth.sim``."""

import numpy as np
import pytest
from amaranth.hdl import ResetInserter, Signal
from amaranth.sim import Simulator

from streams import as_ints, stall_count, stream_put, stream_record

from ternary_accel.hw.rtl.matmul import MatmulUnit
from ternary_accel.hw.rtl.outstage import OutputStage, dsp_chunks, shift_windows
from ternary_accel.model.arith import SHIFT_MAX, matmul_int, round_fixed, signed_range
from ternary_accel.model.encoding import encode_lane_codes
from ternary_accel.hw.timing import OUTPUT_STAGE_LATENCY, output_interval, result_cycles, stream_arrivals, throttled_result_cycles, unit_latency

SCALE_MAX = (1 << 16) - 1


def stage_cases(acc_width, rng, count=1500):
    """(acc, scale, shift): every shift with the accumulator's extremes and scale 0, 1,
    max; random accumulators of every magnitude (rounding ties included), random
    scales and shifts."""
    lo, hi = signed_range(acc_width)
    cases = [(acc, scale, shift) for shift in range(SHIFT_MAX + 1)
             for acc in (lo, hi, lo + 1, hi - 1, 0, 1, -1)
             for scale in (0, 1, SCALE_MAX, 1 << 15)]
    for _ in range(count):
        bits = int(rng.integers(1, acc_width))
        acc = int(np.clip(rng.integers(-(1 << bits), 1 << bits), lo, hi))
        cases.append((acc, int(rng.integers(0, SCALE_MAX + 1)),
                      int(rng.integers(0, SHIFT_MAX + 1))))
    return cases


@pytest.mark.slow
@pytest.mark.parametrize("acc_width, slots", [(24, 1), (24, 3), (9, 2), (41, 1), (2, 1)])
def test_output_stage_is_round_fixed(acc_width, slots):
    """One set of slots per cycle, a new scale and shift every cycle."""
    rng = np.random.default_rng(acc_width * 10 + slots)
    cases = stage_cases(acc_width, rng)
    sets = []
    for start in range(0, len(cases), slots):
        group = cases[start:start + slots]
        _, scale, shift = group[0]
        accs = [acc for acc, _, _ in group] + [0] * (slots - len(group))
        sets.append((accs, scale, shift))
    dut = OutputStage(slots=slots, acc_width=acc_width, tag_width=5)
    got = []

    async def bench(ctx):
        for cycle in range(len(sets) + OUTPUT_STAGE_LATENCY):
            if cycle < len(sets):
                accs, scale, shift = sets[cycle]
                ctx.set(dut.valid, 1)
                ctx.set(dut.acc, accs)
                ctx.set(dut.scale, scale)
                ctx.set(dut.shift, shift)
                ctx.set(dut.tag, cycle % 32)
            else:
                ctx.set(dut.valid, 0)
            await ctx.tick()
            if cycle >= OUTPUT_STAGE_LATENCY - 1:
                assert ctx.get(dut.out_valid) == (cycle - OUTPUT_STAGE_LATENCY + 1 < len(sets))
            if ctx.get(dut.out_valid):
                assert ctx.get(dut.out_tag) == len(got) % 32
                got.append([int(v) for v in ctx.get(dut.out)])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    want = [[int(round_fixed(acc, scale, shift)) for acc in accs] for accs, scale, shift in sets]
    assert got == want


def test_dsp_chunks_and_shift_windows():
    assert dsp_chunks(24) == [(0, 17), (17, 7)]
    assert dsp_chunks(18) == [(0, 18)]
    assert dsp_chunks(36) == [(0, 17), (17, 17), (34, 2)]
    # q = 2 * acc * scale of a 24-bit accumulator: 41 bits; 17 kept in the end
    assert shift_windows(41) == [(32, 41), (16, 32), (8, 24), (4, 20), (2, 18), (1, 17)]


def test_result_cycles_closed_form():
    rng = np.random.default_rng(3)
    arrivals = np.cumsum(rng.integers(1, 9, size=200))
    for latency, interval in ((7, 1), (20, 4), (13, 16)):
        loop, last = [], None
        for a in arrivals:
            last = a + latency if last is None else max(a + latency, last + interval)
            loop.append(last)
        assert result_cycles(arrivals, latency, interval).tolist() == loop


def test_latency_functions():
    # today's unit: tree stages, accumulate, multiply and round, the result FIFO
    assert unit_latency(32, 1, True) == 5 + 1 + 2 + 2
    assert unit_latency(32, 1, True, 16, 16) == 5 + 1 + OUTPUT_STAGE_LATENCY + 2
    # shared: + the queue and the R - 1 cycles of the other slices
    assert unit_latency(32, 1, True, 1, 16) == 5 + 1 + 3 + OUTPUT_STAGE_LATENCY + 15 + 2
    assert output_interval(16, 2) == 8 and output_interval(16) == 1
    for output_rows in (None, 1, 2, 4):
        unit = MatmulUnit(lanes=4, rows=4, output_stage=True, output_rows=output_rows)
        assert unit.latency == unit_latency(4, 1, True, output_rows, 4)
        assert unit.output_interval == output_interval(4, output_rows)
    with pytest.raises(ValueError, match="divide"):
        output_interval(16, 3)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"output_rows": 3}, ValueError, "divide rows"),
    ({"output_rows": 0}, ValueError, "at least 1"),
    ({"output_rows": 2.0}, TypeError, "positive integer"),
    ({"output_rows": True}, TypeError, "positive integer"),
    ({"output_rows": 2, "output_stage": False}, ValueError, "output stage"),
])
def test_output_rows_errors(kwargs, error, message):
    params = {"lanes": 4, "rows": 4, "output_stage": True, **kwargs}
    with pytest.raises(error, match=message):
        MatmulUnit(**params)


LANES, ROWS, MAX_BEATS = 4, 4, 32


def dot_products(rng, beats):
    """Dot products of ``beats[n]`` beats (random int8, corner rows): the beats and the
    expected result vectors."""
    stream, want = [], []
    for n, count in enumerate(beats):
        acts = rng.integers(-128, 128, size=(count, LANES))
        weights = rng.integers(-1, 2, size=(count, ROWS, LANES))
        if n % 5 == 0:  # accumulator extremes
            acts[:] = -128
            weights[:, 0], weights[:, 1], weights[:, 2] = 1, -1, 0
        scale = int(rng.choice([0, SCALE_MAX, int(rng.integers(0, SCALE_MAX + 1))]))
        shift = int(rng.integers(0, SHIFT_MAX + 1)) if n % 3 else int(rng.integers(4, 14))
        for b in range(count):
            stream.append(({"data": [int(a) for a in acts[b]], "last": int(b == count - 1),
                            "scale": scale, "shift": shift},
                           encode_lane_codes(weights[b]).tolist()))
        acc = sum(matmul_int(weights[b], acts[b]) for b in range(count))
        want.append(round_fixed(acc, scale, shift).tolist())
    return stream, want


def run_timed(unit, stream, count):
    """Inputs always valid, ``res`` always ready: each result, the cycle it is on ``res``
    and the cycle each ``last`` beat transferred (cycle 0: the first beat offered)."""
    got, exits, lasts = [], [], []

    async def bench(ctx):
        ctx.set(unit.res.ready, 1)
        cycle, index = 0, 0
        while len(got) < count:
            offered = index < len(stream)
            if offered:
                act, wgt = stream[index]
                ctx.set(unit.act.payload, act)
                ctx.set(unit.wgt.payload, wgt)
            ctx.set(unit.act.valid, offered)
            ctx.set(unit.wgt.valid, offered)
            moved = offered and ctx.get(unit.act.ready)
            if moved and stream[index][0]["last"]:
                lasts.append(cycle)
            if ctx.get(unit.res.valid):
                got.append([int(v) for v in ctx.get(unit.res.payload)])
                exits.append(cycle)
            await ctx.tick()
            cycle += 1
            index += moved
            assert cycle < 100_000

    sim = Simulator(unit)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got, exits, lasts


# Streams: long dot products (the stage idle), short ones (the stage saturated: the
# queue fills and last beats are throttled), and mixes of both.
STREAMS = {
    "long": [9, 12, 8, 8, 30],
    "short": [1] * 40,
    "mixed": [1, 2, 1, 9, 1, 1, 3, 12, 2, 1, 1, 1, 7],
    "burst_then_long": [1] * 30 + [20, 3, 25],
}


@pytest.mark.slow
@pytest.mark.parametrize("output_rows", [1, 2, ROWS, None])
@pytest.mark.parametrize("name", list(STREAMS))
def test_exit_cycles_follow_the_contract(output_rows, name):
    """Every result exact and on ``res`` at exactly the cycle the timing contract says:
    ``C_n = max(a_n + L, C_(n-1) + R)`` with the last beats' real transfer cycles
    ``a_n``, which are the unthrottled stream's until the queue fills
    (:func:`throttled_result_cycles` predicts both)."""
    beats = STREAMS[name]
    rng = np.random.default_rng(len(beats) + (output_rows or 0))
    stream, want = dot_products(rng, beats)
    unit = MatmulUnit(lanes=LANES, rows=ROWS, output_stage=True, max_beats=MAX_BEATS,
                      output_rows=output_rows)
    got, exits, lasts = run_timed(unit, stream, len(want))
    assert got == want
    latency, interval = unit.latency, unit.output_interval
    assert exits == result_cycles(lasts, latency, interval).tolist()
    unthrottled = stream_arrivals(beats)
    if unit.shared_output_stage:
        model_lasts, model_exits = throttled_result_cycles(
            beats, latency, interval, queue_depth=unit.queue_depth,
            start_delay=unit.start_delay)
        assert lasts == model_lasts.tolist() and exits == model_exits.tolist()
    if name == "long" or interval == 1:  # the queue never fills: nothing throttled
        assert lasts == unthrottled.tolist()
    if name in ("long", "short") or interval == 1:
        # the unthrottled stream's A_n: the stage idle, or saturated throughout
        assert exits == result_cycles(unthrottled, latency, interval).tolist()


def test_throttle_never_starves_the_stage():
    """Short dot products, R = 4: the queue fills and last beats wait, yet a result
    leaves every R cycles from the first on, as in the unthrottled stream."""
    beats = [1] * 60
    rng = np.random.default_rng(11)
    stream, want = dot_products(rng, beats)
    unit = MatmulUnit(lanes=LANES, rows=ROWS, output_stage=True, max_beats=MAX_BEATS,
                      output_rows=1)
    got, exits, lasts = run_timed(unit, stream, len(want))
    assert got == want
    assert lasts != stream_arrivals(beats).tolist()  # throttled
    assert exits == result_cycles(stream_arrivals(beats), unit.latency, 4).tolist()
    assert np.all(np.diff(exits) == 4)


def test_a_throttle_delays_a_later_idle_stage_result():
    """The limit of the unthrottled contract: once the queue has filled, the held last
    beats delay the whole stream, so a long dot product after the burst (the stage
    idle again) leaves later than the unthrottled stream's A_n + L; the throttled model
    has the real cycles."""
    beats = [1] * 30 + [100, 1, 1]
    rng = np.random.default_rng(5)
    stream, want = dot_products(rng, beats)
    unit = MatmulUnit(lanes=LANES, rows=ROWS, output_stage=True, max_beats=128,
                      output_rows=1)
    got, exits, lasts = run_timed(unit, stream, len(want))
    assert got == want
    unthrottled = result_cycles(stream_arrivals(beats), unit.latency, 4)
    assert exits[:30] == unthrottled[:30].tolist()  # the saturated burst: as promised
    # the held beats' delay (here 28 cycles) is never made up
    assert np.all(np.array(exits[30:]) > unthrottled[30:])
    assert exits == throttled_result_cycles(beats, unit.latency, 4,
                                            queue_depth=unit.queue_depth,
                                            start_delay=unit.start_delay)[1].tolist()


def simulate_stalls(unit, stream, want, *, stall, seed, reset_at=None):
    """Random input idles and ``res`` backpressure; ``reset_at`` = beat index: pulse the
    reset before that beat, after which only the dot products that start after it are
    expected (the stream goes on from the next dot product's first beat)."""
    rst = Signal()
    dut = ResetInserter({"sync": rst})(unit)
    rng = np.random.default_rng(seed)
    starts = [0] + [i + 1 for i, (act, _) in enumerate(stream) if act["last"]][:-1]
    resume = None if reset_at is None else min(s for s in starts if s >= reset_at)
    expected = want if reset_at is None else want[starts.index(resume):]
    got, done_reset = [], [reset_at is None]

    async def producer(ctx):
        index = 0
        while index < len(stream):
            if index == reset_at and not done_reset[0]:
                ctx.set(rst, 1)
                await ctx.tick().repeat(2)
                ctx.set(rst, 0)
                index = resume
                got.clear()
                done_reset[0] = True
                continue
            await stream_put(ctx, (unit.act, unit.wgt), stream[index],
                             idle=stall_count(rng, stall))
            index += 1

    async def consumer(ctx):
        await stream_record(ctx, unit.res, got,
                            lambda: done_reset[0] and len(got) == len(expected),
                            ready=lambda: int(rng.random() >= stall), convert=as_ints)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer, background=True)
    sim.add_testbench(consumer)
    sim.run()
    return got, expected


@pytest.mark.parametrize("output_rows", [1, pytest.param(2, marks=pytest.mark.slow),
                                         pytest.param(ROWS, marks=pytest.mark.slow)])
@pytest.mark.parametrize("stall", [0.3, 0.7])
def test_backpressure_keeps_results_exact(output_rows, stall):
    beats = STREAMS["mixed"] + STREAMS["short"][:20]
    rng = np.random.default_rng(int(stall * 10) + output_rows)
    stream, want = dot_products(rng, beats)
    unit = MatmulUnit(lanes=LANES, rows=ROWS, output_stage=True, max_beats=MAX_BEATS,
                      output_rows=output_rows)
    got, expected = simulate_stalls(unit, stream, want, stall=stall, seed=output_rows)
    assert got == expected


@pytest.mark.parametrize("output_rows", [1, 2])
def test_reset_mid_stream(output_rows):
    """A reset with vectors queued, in the stage and half collected: what follows is
    exact and nothing stale comes out."""
    beats = [1] * 12 + [3, 1, 2, 5, 1]
    rng = np.random.default_rng(17)
    stream, want = dot_products(rng, beats)
    unit = MatmulUnit(lanes=LANES, rows=ROWS, output_stage=True, max_beats=MAX_BEATS,
                      output_rows=output_rows)
    got, expected = simulate_stalls(unit, stream, want, stall=0.2, seed=3, reset_at=11)
    assert got == expected
