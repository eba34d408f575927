"""cocotb bench of :class:`hw.engine.LayerEngine`: streams one planned layer and records
every result word and the cycles from the first beat to the last result.

Inputs come from the job folder named by ``TB_JOB`` (written by :func:`sim.layer.run_layer`,
which also checks the outputs against the golden model). The per-cycle loop is one
coroutine doing the least possible: payloads are packed before the simulation starts,
written only when a new beat is offered, and results are unpacked after it ends.
"""

import json
import os
from pathlib import Path

import numpy as np
import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from .layer import EngineConfig, plan_layer


@cocotb.test()
async def stream_layer(dut):
    config = EngineConfig(**json.loads(os.environ["TB_ENGINE"]))
    job = Path(os.environ["TB_JOB"])
    traffic = json.loads(os.environ.get("TB_TRAFFIC", "{}"))
    layer = np.load(job / "layer.npz")
    plan = plan_layer(layer["weights"], layer["activations"], layer["scale"],
                      layer["shift"], config)
    rng = np.random.default_rng(traffic.get("seed", 1))
    idle, backpressure = traffic.get("idle", 0.0), traffic.get("backpressure", 0.0)
    count = len(plan.act_words)
    # Pause patterns drawn up front: True = do not offer / not ready this cycle.
    horizon = int(count * (1 + 4 * max(idle, backpressure)) + 10 * config.latency + 1000)
    act_pause = rng.random(horizon) < idle
    wgt_pause = rng.random(horizon) < idle
    res_pause = rng.random(horizon) < backpressure

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    act_valid, act_payload, act_ready = dut.act__valid, dut.act__payload, dut.act__ready
    wgt_valid, wgt_payload = dut.wgt__valid, dut.wgt__payload
    res_valid, res_payload, res_ready = dut.res__valid, dut.res__payload, dut.res__ready
    act_valid.value = 0
    wgt_valid.value = 0
    res_ready.value = 0
    dut.rst.value = 1
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0

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
                act_payload.value = plan.act_words[next_beat]
                act_valid.value = act_on = 1
            else:
                act_valid.value = 0
        if not wgt_on:
            if next_beat < count and not wgt_pause[p]:
                wgt_payload.value = plan.wgt_words[next_beat]
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
            words.append(hex(res_payload.value.to_unsigned()))
            last = cycle
        cycle += 1
        if cycle > 50 * horizon:
            raise AssertionError(f"timeout: {len(words)} of {plan.tiles} results")
        await edge
    error = dut.error.value.to_unsigned()
    (job / "stats.json").write_text(json.dumps({
        "cycles": last - first + 1, "words": words, "error": error}))
    assert error == 0, f"error flags raised: {error:#x}"
