"""cocotb bench of :class:`sim.token_harness.TokenHarness`, run as a server for the host's
:class:`sim.token_session.TokenSession` (:func:`sim.tb.engine.serve_requests`).

Two requests: ``{"load": {"words": {channel: words}, "widths": {channel: bits}}}``
resets the harness and loads its memories from files through the Verilog leaves
(:func:`sim.tb.harness.load_words`), once a session; or ``{"load": {"files": {channel:
parts}, "widths": ...}}`` loads them from the files the host wrote already in the run
folder (:func:`sim.token.write_memory_file`: a large image's words never pass through
the socket), each file holding ``parts`` stored parts, one a memory or bank
(:func:`sim.token_harness.memory_banks`); ``{"tokens": [...], "start":
position, "idle": threshold, "limit": cycles}`` runs the tokens one after the other at
positions ``start, start + 1, ...``: for each it sets ``token_in``, ``position`` and
the stall threshold, pulses ``start`` and waits for ``done`` with a cocotb trigger (no
Python per simulated cycle), then reads the core's ports and the recorded logits
(:class:`sim.tb.harness.Results`: raw GPI handles, made once). The KV memory keeps its
words from token to token and from request to request.
"""

import time
from pathlib import Path

import cocotb
from cocotb.triggers import First, RisingEdge, Timer

from ternary_accel.sim.harness import PART_BITS, PERIOD_NS
from ternary_accel.sim.tb.engine import serve_requests
from ternary_accel.sim.tb.harness import Results, load_words, strobe_loaded
from ternary_accel.sim.token_harness import CHANNELS, load_file

#: Cycles after ``done`` before the recorder's memory is read (its last write lands on
#: the edge that ends the cycle of ``done`` at the latest).
SETTLE_CYCLES = 2


async def reset(dut):
    dut.start.value = 0
    for name in CHANNELS:
        getattr(dut, f"{name}_load").value = 0
    dut.reset.value = 1
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.reset.value = 0


async def load(dut, words, widths):
    """Reset the harness and load every channel memory; returns the seconds taken."""
    started = time.perf_counter()
    await reset(dut)
    for name in CHANNELS:
        await load_words(dut.clk, getattr(dut, name), getattr(dut, f"{name}_load"),
                         load_file(name), words[name], widths[name], name)
    return time.perf_counter() - started


async def load_written(clock, scope, strobe, path, parts, name):
    """Load the Verilog leaf memory under ``scope`` from the file ``path`` the host
    wrote (``parts`` stored parts, :func:`sim.token.write_memory_file`) with a rising
    edge of ``strobe``; then check three stored parts (first, middle, last) against the
    file through VPI and strobe again if they differ (as
    :func:`sim.tb.harness.load_words`)."""
    size = PART_BITS // 8
    if parts == 0:
        return
    if Path(path).stat().st_size != parts * size:
        raise AssertionError(f"{path}: {Path(path).stat().st_size} bytes, expected "
                             f"{parts} parts of {size}")
    probes = sorted({0, parts // 2, parts - 1})
    with open(path, "rb") as f:
        expected = []
        for i in probes:
            f.seek(i * size)
            expected.append(int.from_bytes(f.read(size), "big"))
    await strobe_loaded(clock, scope, strobe, probes, expected, parts, name)


async def load_files(dut, parts):
    """Reset the harness and load every channel memory from the files the host wrote
    (``{memory: parts}``, a channel's memory or a bank of it,
    :func:`sim.token_harness.memory_banks`); returns ``{channel: seconds}`` and the total."""
    started = time.perf_counter()
    for name in parts:
        getattr(dut, f"{name}_load").value = 0
    await reset(dut)
    seconds = {}
    for name in parts:                  # a channel's memory, or a bank of it
        at = time.perf_counter()
        await load_written(dut.clk, getattr(dut, name), getattr(dut, f"{name}_load"),
                           load_file(name), parts[name], name)
        seconds[name] = time.perf_counter() - at
    return seconds, time.perf_counter() - started


def peak_kb():
    """The simulator process's peak resident memory (``VmHWM``, kB; None off Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


async def run(dut, results, request):
    """Run the tokens of ``request`` (module docstring); returns the reply."""
    clock = dut.clk
    vocab = request["vocab"]
    counters = request["counters"]
    reply = {"tokens": [], "logits": [], "cycles": [], "op_cycles": [], "errors": [],
             "counts": []}
    simulate = read = 0.0
    dut.idle.value = request["idle"]
    for position, token in enumerate(request["tokens"], request["start"]):
        dut.token_in.value = int(token)
        dut.position.value = position
        started = time.perf_counter()
        dut.start.value = 1
        await RisingEdge(clock)
        dut.start.value = 0
        timer = Timer(request["limit"] * PERIOD_NS, unit="ns")
        fired = await First(RisingEdge(dut.done), timer)
        if fired is timer:
            raise AssertionError(f"token {token} at position {position} did not finish in "
                                 f"{request['limit']} cycles ({dut.logits_count.value.to_unsigned()}"
                                 f" logits, error flags {dut.error.value.to_unsigned():#x})")
        for _ in range(SETTLE_CYCLES):
            await RisingEdge(clock)
        settled = time.perf_counter()
        simulate += settled - started
        count = dut.logits_count.value.to_unsigned()
        packed = dut.cycles.value.to_unsigned()
        width = len(dut.cycles) // counters
        reply["tokens"].append(dut.token.value.to_unsigned())
        reply["cycles"].append(dut.elapsed.value.to_unsigned())
        reply["op_cycles"].append([(packed >> (width * k)) & ((1 << width) - 1)
                                   for k in range(counters)])
        reply["errors"].append(dut.error.value.to_unsigned())
        reply["counts"].append(count)
        reply["logits"].append(results.read(min(count, vocab)))
        read += time.perf_counter() - settled
    reply["timing"] = {"simulate": simulate, "read": read}
    reply["peak_kb"] = peak_kb()
    return reply


@cocotb.test()
async def serve(dut):
    results = None

    async def handle(request):
        nonlocal results
        if "load" in request:
            job = request["load"]
            results = Results(dut.logits, job["widths"]["logits"])
            if "files" in job:
                channels, seconds = await load_files(dut, job["files"])
                return {"seconds": seconds, "channels": channels}
            return {"seconds": await load(dut, job["words"], job["widths"])}
        if results is None:
            raise RuntimeError("tokens before the memories were loaded")
        return await run(dut, results, request)

    await serve_requests(handle)
