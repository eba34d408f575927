"""cocotb bench of :class:`hw.engine.LayerEngine`, driven cycle by cycle from Python
(``EngineSession(bench="cycle")``), run as a server: it connects back to the host's
:class:`sim.session.EngineSession` (``TB_SERVER``, ``TB_AUTH``), then streams each planned
layer it receives through the engine and sends back every result and the cycles from
the first beat to the last result, until the host says stop. :mod:`sim.tb_harness` is
the fast bench, with the streams played from memories inside the simulator.

The per-cycle loop is one coroutine doing the least possible: payloads arrive packed,
are written only when a new beat is offered, and results are unpacked after the layer.
The host checks the outputs against the golden model.
"""

import json
import os
import time
import traceback
from multiprocessing.connection import Client

import numpy as np
import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from ternary_accel.hw.params import EngineParams
from ternary_accel.sim.packing import unpack_array


async def reset(dut):
    dut.act__valid.value = 0
    dut.wgt__valid.value = 0
    dut.res__ready.value = 0
    dut.rst.value = 1
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


async def stream(dut, plan, config, traffic):
    """Stream ``plan`` (a :class:`sim.plans.LayerPlan`) with random stalls.

    Returns
    -------
    (list of int, int, int)
        Result words in order, cycles from the first beat to the last result, and the
        engine's error flags.
    """
    rng = np.random.default_rng(traffic.get("seed", 1))
    idle, backpressure = traffic.get("idle", 0.0), traffic.get("backpressure", 0.0)
    act_words, wgt_words = plan.act_words, plan.wgt_words   # expanded once
    count = len(act_words)
    if hasattr(dut, "tiles"):            # an accumulator bank: the tiles interleaved
        dut.tiles.value = getattr(plan, "bank_tiles", 1)
    # Pause patterns drawn up front: True = do not offer / not ready this cycle.
    horizon = int(count * (1 + 4 * max(idle, backpressure)) + 10 * config.latency + 1000)
    act_pause = rng.random(horizon) < idle
    wgt_pause = rng.random(horizon) < idle
    res_pause = rng.random(horizon) < backpressure

    act_valid, act_payload, act_ready = dut.act__valid, dut.act__payload, dut.act__ready
    wgt_valid, wgt_payload = dut.wgt__valid, dut.wgt__payload
    res_valid, res_payload, res_ready = dut.res__valid, dut.res__payload, dut.res__ready
    await reset(dut)

    words = []
    next_beat = 0
    act_on = wgt_on = False
    first = last = None
    cycle = 0
    edge, read_only = RisingEdge(dut.clk), ReadOnly()
    await edge
    while len(words) < plan.tiles:
        p = cycle % horizon
        # Drive: a beat, once offered, stays until it transfers.
        if not act_on:
            if next_beat < count and not act_pause[p]:
                act_payload.value = act_words[next_beat]
                act_valid.value = act_on = 1
            else:
                act_valid.value = 0
        if not wgt_on:
            if next_beat < count and not wgt_pause[p]:
                wgt_payload.value = wgt_words[next_beat]
                wgt_valid.value = wgt_on = 1
            else:
                wgt_valid.value = 0
        ready = not res_pause[p]
        res_ready.value = ready
        await read_only
        # Sample: both streams transfer together (each one's ready needs the other valid).
        if act_on and wgt_on and act_ready.value:
            if first is None:
                first = cycle
            next_beat += 1
            act_on = wgt_on = 0
        if ready and res_valid.value:
            words.append(res_payload.value.to_unsigned())
            last = cycle
        cycle += 1
        if cycle > 50 * horizon:
            raise AssertionError(f"timeout: {len(words)} of {plan.tiles} results")
        await edge
    act_valid.value = 0
    wgt_valid.value = 0
    res_ready.value = 0
    return words, last - first + 1, dut.error.value.to_unsigned()


async def serve_requests(handle):
    """Serve the host's :class:`sim.session.SimulatorSession` (``TB_SERVER``,
    ``TB_AUTH``): for each request it sends, ``await handle(request)`` gives the reply
    (a dict) to send back; an exception is sent as ``{"exception": traceback}`` and
    raised; until the host says stop (``None``)."""
    host, port = os.environ["TB_SERVER"].rsplit(":", 1)
    conn = Client((host, int(port)), authkey=bytes.fromhex(os.environ["TB_AUTH"]))
    try:
        while True:
            request = conn.recv()   # the simulation waits here, at no simulated time
            if request is None:
                break
            try:
                reply = await handle(request)
            except Exception:
                conn.send({"exception": traceback.format_exc(limit=5)})
                raise
            conn.send(reply)
    finally:
        conn.close()


async def serve_jobs(job):
    """Serve the host's :class:`sim.session.EngineSession` (:func:`serve_requests`):
    for each layer it sends, ``await job(plan, traffic)`` gives ``(outputs, cycles,
    error, timing)`` to send back (``timing``: seconds by phase, ``"simulate"`` among
    them). Shared with :mod:`sim.tb_harness`."""

    async def handle(request):
        outputs, cycles, error, timing = await job(request["plan"], request["traffic"])
        return {"outputs": outputs, "cycles": cycles, "error": error, "timing": timing}

    await serve_requests(handle)


@cocotb.test()
async def serve(dut):
    config = EngineParams(**json.loads(os.environ["TB_ENGINE"]))
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())

    async def job(plan, traffic):
        started = time.perf_counter()
        words, cycles, error = await stream(dut, plan, config, traffic)
        timing = {"simulate": time.perf_counter() - started}
        return (unpack_array(words, config.rows, config.res_width, signed=True), cycles,
                error, timing)

    await serve_jobs(job)
