"""The stream helper of the tests (tests/streams.py) through a FIFO: nothing lost,
duplicated or reordered under idle cycles and backpressure, and the producer keeps
``valid`` and the payload until the beat transfers."""

import numpy as np
import pytest
from amaranth.lib.fifo import SyncFIFO
from amaranth.sim import Simulator

from streams import as_ints, stall_count, stream_get, stream_put, stream_record


def run(testbenches, dut):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for bench, background in testbenches:
        sim.add_testbench(bench, background=background)
    sim.run()


@pytest.mark.parametrize("idle, backpressure", [(0, 0), (0.5, 0), (0, 0.7), (0.4, 0.6)])
def test_put_and_get_through_a_fifo(idle, backpressure):
    fifo = SyncFIFO(width=8, depth=2)
    rng = np.random.default_rng(3)
    sent = [int(v) for v in rng.integers(0, 256, 40)]
    got, offered, stalls = [], [], []

    async def producer(ctx):
        for value in sent:
            await stream_put(ctx, fifo.w_stream, value, idle=stall_count(rng, idle),
                             idle_payload=value ^ 0xFF)

    async def consumer(ctx):
        for _ in sent:
            got.append(await stream_get(ctx, fifo.r_stream,
                                        backpressure=stall_count(rng, backpressure)))

    async def rules(ctx):
        """An offered beat stays offered, unchanged, until the edge that takes it."""
        async for _, _, valid, ready, payload in ctx.tick().sample(
                fifo.w_stream.valid, fifo.w_stream.ready, fifo.w_stream.payload):
            if offered:
                assert valid and payload == offered.pop()
            if valid and not ready:
                offered.append(payload)
                stalls.append(payload)

    run([(producer, False), (consumer, False), (rules, True)], fifo)
    assert got == sent
    assert bool(stalls) == (backpressure > 0)          # the FIFO filled up, or never did


def test_record_under_a_ready_pattern():
    fifo = SyncFIFO(width=8, depth=4)
    sent = list(range(1, 30))
    ready = iter([0, 1, 1, 0, 0, 1] * 40)
    got = []

    async def producer(ctx):
        for value in sent:
            await stream_put(ctx, fifo.w_stream, value)

    async def consumer(ctx):
        await stream_record(ctx, fifo.r_stream, got, lambda: len(got) == len(sent),
                            ready=lambda: next(ready), convert=int)

    run([(producer, True), (consumer, False)], fifo)
    assert got == sent


def test_streams_and_payloads_pair_up():
    fifo = SyncFIFO(width=8, depth=2)

    async def producer(ctx):
        await stream_put(ctx, (fifo.w_stream, fifo.w_stream), (1,))

    with pytest.raises(ValueError, match="2 streams need as many payloads"):
        run([(producer, False)], fifo)


def test_helpers():
    assert stall_count(np.random.default_rng(0), 0) == 0
    counts = [stall_count(np.random.default_rng(s), 0.5) for s in range(400)]
    assert 0.8 < np.mean(counts) < 1.2                  # mean p / (1 - p) = 1
    assert as_ints(np.array([1, -2])) == [1, -2]
