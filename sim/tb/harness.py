"""cocotb bench of :class:`sim.harness.EngineHarness`, run as a server like
:mod:`sim.tb_engine`: for each planned layer it receives, it writes the layer's
activation and weight words into the harness's memories (once each: the players replay
them per row tile and per token), sets the descriptors and stall patterns, starts the
run and waits for ``done``, with no Python in the per-cycle loop; then it reads back the
recorded results, the first/last cycle stamps and the engine's error flags.

The players' memories are loaded from files the bench writes (``$fread`` on a rising
edge of ``act_load``/``wgt_load``, where a VPI write costs 17 us a 824-bit word because
Verilator sets it bit by bit); the recorded results are read through cocotb's
raw GPI handles, made once per stored part and kept for the session.
"""

import json
import os
import time
from pathlib import Path

import cocotb
from cocotb.triggers import First, RisingEdge, Timer

from ternary_accel.hw.rtl.matmul import act_layout

from ternary_accel.sim.harness import (ACT_FILE, MEMORY_NAME, PART_BITS, PERIOD_NS, WGT_FILE, join_parts,
                      memory_image, parts_per_word, stall_threshold)
from ternary_accel.hw.params import EngineParams
from ternary_accel.sim.packing import unpack_array
from ternary_accel.sim.tb.engine import serve_jobs



class Results:
    """The recorder's memory seen through raw GPI handles, one per word, made on first
    use."""

    def __init__(self, scope, width):
        self.array = getattr(getattr(scope, MEMORY_NAME), "words")._handle
        self.width = width
        self.handles = []

    def read(self, count):
        parts = count * parts_per_word(self.width)
        while len(self.handles) < parts:
            self.handles.append(self.array.get_handle_by_index(len(self.handles)))
        return join_parts([int(h.get_signal_val_binstr(), 2) for h in self.handles[:parts]],
                          self.width)


#: Loads of a memory before its words are declared not loaded.
LOAD_ATTEMPTS = 3


async def load(dut, stream, words, width):
    """Write ``words`` to the player ``stream``'s file and load them
    (:func:`load_words`)."""
    await load_words(dut.clk, getattr(dut, stream), getattr(dut, f"{stream}_load"),
                     ACT_FILE if stream == "act" else WGT_FILE, words, width, stream)


async def load_words(clock, scope, strobe, path, words, width, name):
    """Write ``words`` to ``path`` (:func:`~sim.harness.memory_image`) and load them
    into the Verilog leaf memory :data:`~sim.harness.MEMORY_NAME` under ``scope`` (a
    rising edge of ``strobe``, on a cycle of ``clock``); then check three stored parts
    (first, middle, last) through VPI and strobe again if they differ.

    Raises
    ------
    AssertionError
        If the memory still does not hold the words after :data:`LOAD_ATTEMPTS` loads.
    """
    image = memory_image(words, width)
    Path(path).write_bytes(image)
    part = PART_BITS // 8
    count = len(image) // part
    probes = sorted({0, count // 2, count - 1})
    expected = [int.from_bytes(image[i * part:(i + 1) * part], "big") for i in probes]
    await strobe_loaded(clock, scope, strobe, probes, expected, count, name)


async def strobe_loaded(clock, scope, strobe, probes, expected, count, name):
    """Pulse ``strobe`` (the leaf memory under ``scope`` loads its file) and check the
    stored parts ``probes`` against ``expected`` through VPI, strobing again up to
    :data:`LOAD_ATTEMPTS` times; ``count`` parts in all (for the messages).

    Raises
    ------
    AssertionError
        If the parts still differ after the last attempt.
    """
    array = getattr(getattr(scope, MEMORY_NAME), "words")._handle
    for attempt in range(1, LOAD_ATTEMPTS + 1):
        strobe.value = 1
        await RisingEdge(clock)
        strobe.value = 0
        await RisingEdge(clock)
        stored = [int(array.get_handle_by_index(i).get_signal_val_binstr(), 2)
                  for i in probes]
        if stored == expected:
            return
        scope._log.warning(f"{name} memory: load {attempt} of {count} parts not seen "
                           f"(parts {probes} hold {stored}, expected {expected})")
    raise AssertionError(f"the {name} memory did not load its {count} parts in "
                         f"{LOAD_ATTEMPTS} attempts")


async def reset(dut):
    dut.start.value = 0
    dut.reset.value = 1
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.reset.value = 0


async def run(dut, results, widths, plan, traffic, cycle_limit):
    """Play ``plan`` (a :class:`sim.plans.LayerPlan`) through the harness.

    Returns
    -------
    (list of int, int, int, dict)
        Result words in order, cycles from the first beat to the last result, the
        engine's error flags, and the seconds spent loading the memories, simulating
        (from start to done) and reading the results.
    """
    await reset(dut)
    t0 = time.perf_counter()
    await load(dut, "act", plan.token_words, widths["act"])
    await load(dut, "wgt", plan.weight_bytes, widths["wgt"])
    t1 = time.perf_counter()
    for stream, descriptor in plan.descriptors.items():
        for field, value in zip(("inner", "middle", "outer", "middle_stride",
                                 "outer_stride"), descriptor):
            getattr(dut, f"{stream}_{field}").value = value
    seed = traffic.get("seed", 1)
    dut.act_idle.value = dut.wgt_idle.value = stall_threshold(traffic.get("idle", 0.0))
    dut.res_backpressure.value = stall_threshold(traffic.get("backpressure", 0.0))
    # three different streams of stalls from one seed
    dut.act_seed.value, dut.wgt_seed.value, dut.res_seed.value = (
        (seed * 2654435761 + n * 40503) % (1 << 32) or 1 for n in range(3))
    dut.expected.value = plan.tiles
    if hasattr(dut, "tiles"):            # an accumulator bank: the tiles interleaved
        dut.tiles.value = getattr(plan, "bank_tiles", 1)
    if hasattr(dut, "batch"):            # weight reuse: the tokens of each batch
        dut.batch.value = getattr(plan, "batch_size", None) or 1
    dut.start.value = 1
    await RisingEdge(dut.clk)
    dut.start.value = 0
    await First(RisingEdge(dut.done), Timer(cycle_limit * PERIOD_NS, unit="ns"))
    t2 = time.perf_counter()
    count = dut.count.value.to_unsigned()
    if not dut.done.value or count != plan.tiles:
        raise AssertionError(f"timeout: {count} of {plan.tiles} results after "
                             f"{cycle_limit} cycles")
    cycles = dut.last.value.to_unsigned() - dut.first.value.to_unsigned() + 1
    words = results.read(plan.tiles)
    timing = {"load": t1 - t0, "simulate": t2 - t1, "read": time.perf_counter() - t2}
    return words, cycles, dut.error.value.to_unsigned(), timing


@cocotb.test()
async def serve(dut):
    config = EngineParams(**json.loads(os.environ["TB_ENGINE"]))
    results = Results(dut.res, config.rows * config.res_width)
    widths = {"act": act_layout(config.lanes, config.output_stage, config.act_width).size,
              "wgt": 8 * config.wgt_word_bytes}

    async def job(plan, traffic):
        stalls = max(traffic.get("idle", 0.0), traffic.get("backpressure", 0.0))
        limit = int(50 * (plan.mapping.beats + config.latency) / (1 - stalls)) + 10_000
        words, cycles, error, timing = await run(dut, results, widths, plan, traffic, limit)
        return (unpack_array(words, config.rows, config.res_width, signed=True), cycles,
                error, timing)

    await serve_jobs(job)
