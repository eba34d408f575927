"""cocotb bench of a read channel memory (:class:`sim.channels.ReadChannelMemory`,
Verilog leaf storage) under Verilator: the host loads the memory from a file through
the leaf (:func:`sim.tb.harness.load_words`), sets two read commands on the top's
ports, starts, waits for ``done`` and checks the sum and count of the words that the
top's consumer took (``tests/sim/test_channels.py`` builds the top, ``ChannelSum``).
The job comes in ``TB_CHANNELS`` (JSON: ``words``, ``width``, ``commands``)."""

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import First, RisingEdge, Timer

from ternary_accel.sim.tb.harness import load_words

#: The memory image the bench writes and the memory loads (its ``load_file``).
WORDS_FILE = "words.bin"


@cocotb.test()
async def sum_words(dut):
    job = json.loads(os.environ["TB_CHANNELS"])
    words, width, commands = job["words"], job["width"], job["commands"]
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.start.value = dut.load.value = 0
    dut.rst.value = 1
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await load_words(dut.clk, dut.mem, dut.load, WORDS_FILE, words, width, "channel")
    for k, (addr, count) in enumerate(commands):
        getattr(dut, f"addr{k}").value = addr
        getattr(dut, f"count{k}").value = count
    dut.start.value = 1
    await RisingEdge(dut.clk)
    dut.start.value = 0
    await First(RisingEdge(dut.done), Timer(100 * (len(words) + 100), unit="ns"))
    read = [words[(addr + i) % len(words)] for addr, count in commands for i in range(count)]
    beats, total = dut.beats.value.to_unsigned(), dut.total.value.to_unsigned()
    assert dut.done.value, f"timeout: {beats} of {len(read)} words"
    assert (beats, total) == (len(read), sum(read) % (1 << len(dut.total))), \
        f"{beats} words summing to {total}, expected {len(read)} summing to {sum(read)}"
