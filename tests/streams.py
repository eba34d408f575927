"""Stream testbenches for ``amaranth.sim``: a producer (:func:`stream_put`), a consumer
(:func:`stream_get`) and a recorder (:func:`stream_record`) of :mod:`amaranth.lib.stream`
interfaces, honouring its transfer rules.

A beat transfers at the clock edge where ``valid`` and ``ready`` are both high. The
producer raises ``valid`` with the payload set, without waiting for ``ready``, and keeps
both unchanged until the beat transfers; the consumer may raise or drop ``ready`` at any
cycle. Idle cycles (the producer's ``valid`` low) and backpressure (the consumer's
``ready`` low) are the patterns a test chooses: fixed counts, or random ones drawn with
:func:`stall_count`.

Use them inside ``async def`` testbenches added with ``Simulator.add_testbench``::

    async def producer(ctx):
        for beat in beats:
            await stream_put(ctx, dut.i, beat, idle=stall_count(rng, 0.3))

    async def consumer(ctx):
        await stream_record(ctx, dut.o, got, lambda: len(got) == len(beats),
                            ready=lambda: int(rng.random() >= 0.5))
"""

__all__ = ["stall_count", "stream_put", "stream_get", "stream_record", "as_ints", "simulate",
           "sampler"]


def stall_count(rng, probability):
    """A random number of stall cycles: how many draws of ``rng.random()`` in a row fall
    below ``probability`` (geometric, mean ``p / (1 - p)``; 0 when ``probability`` is 0)."""
    count = 0
    while rng.random() < probability:
        count += 1
    return count


def as_ints(payload):
    """An array payload as a list of Python ints (a ``convert`` for :func:`stream_record`)."""
    return [int(v) for v in payload]


def _together(streams, payloads):
    if isinstance(streams, (tuple, list)):
        if not isinstance(payloads, (tuple, list)) or len(payloads) != len(streams):
            raise ValueError(f"{len(streams)} streams need as many payloads")
        return list(streams), list(payloads)
    return [streams], [payloads]


async def stream_put(ctx, stream, payload, *, idle=0, idle_payload=None):
    """Send one beat and return after the clock edge that transfers it.

    Parameters
    ----------
    ctx : amaranth.sim.SimulatorContext
    stream : amaranth.lib.stream.Interface or tuple of them
        A tuple is driven as one handshake (streams a component joins, such as a unit's
        activation and weight streams): every ``valid`` rises together and the beat
        transfers at the edge where every ``ready`` is high.
    payload
        The payload, or a tuple of payloads in the order of ``stream``.
    idle : int
        Cycles with ``valid`` low before the beat is offered.
    idle_payload
        If given, the payload (or tuple of payloads) shown during those idle cycles: what
        is on a stream whose ``valid`` is low must never transfer.
    """
    streams, payloads = _together(stream, payload)
    if idle and idle_payload is not None:
        for s, p in zip(streams, _together(stream, idle_payload)[1]):
            ctx.set(s.valid, 0)
            ctx.set(s.payload, p)
    for _ in range(idle):
        await ctx.tick()
    for s, p in zip(streams, payloads):
        ctx.set(s.payload, p)
        ctx.set(s.valid, 1)
    ready = streams[0].ready
    for s in streams[1:]:
        ready = ready & s.ready
    await ctx.tick().until(ready)
    for s in streams:
        ctx.set(s.valid, 0)


async def stream_get(ctx, stream, *, backpressure=0):
    """Receive one beat: ``ready`` low for ``backpressure`` cycles, then high until a beat
    transfers; returns its payload (sampled at the transfer's clock edge)."""
    ctx.set(stream.ready, 0)
    for _ in range(backpressure):
        await ctx.tick()
    ctx.set(stream.ready, 1)
    payload, = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


async def stream_record(ctx, stream, got, done, *, ready=lambda: 1, convert=None):
    """Record every beat that transfers on ``stream``, cycle by cycle, until ``done()``.

    After each clock edge, a beat that transferred at it (``valid`` and ``ready`` high) is
    appended to the list ``got`` (through ``convert``, if given), ``ready`` is set to
    ``ready()`` for the next edge, and the recording stops when ``done()`` is true.
    ``ready`` keeps its value (0 unless set before) up to the first edge.
    """
    async for _, _, valid, is_ready, payload in ctx.tick().sample(
            stream.valid, stream.ready, stream.payload):
        if valid and is_ready:
            got.append(payload if convert is None else convert(payload))
        ctx.set(stream.ready, ready())
        if done():
            return


def simulate(dut, *testbenches, processes=(), cycles=None, period=1e-8):
    """Run ``dut`` under ``amaranth.sim`` with one clock: the ``testbenches`` and the
    ``processes`` (samplers that never end by themselves) added, until every testbench
    returns or, with ``cycles``, at most that many clock periods (a hang then fails the
    test's comparisons instead of waiting forever)."""
    from amaranth.sim import Simulator
    sim = Simulator(dut)
    sim.add_clock(period)
    for bench in testbenches:
        sim.add_testbench(bench)
    for process in processes:
        sim.add_process(process)
    if cycles is None:
        sim.run()
    else:
        sim.run_until(period * cycles)


def sampler(signals, into):
    """A process appending each cycle's values of ``signals`` (a tuple of ints, or an int
    for one signal) to the list ``into``: pulses and flags a test counts."""
    many = isinstance(signals, (tuple, list))
    signals = tuple(signals) if many else (signals,)

    async def process(ctx):
        async for _, _, *values in ctx.tick().sample(*signals):
            into.append(tuple(int(v) for v in values) if many else int(values[0]))
    return process
