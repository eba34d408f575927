"""cocotb bench of the accelerator in a system (:class:`hw.rtl.system.TokenSystem`) under
Verilator: the host is cocotbext-axi's ``AxiLiteMaster`` on ``s_axil_*`` driving the
host driver (:class:`hw.host.TokenHost` over :class:`hw.driver.Registers`, through
cocotb's bridge), DRAM is an ``AxiRam`` on ``m_axi_*`` (random pauses on all five of its
channels and the AXI4-Lite master's), the program the ``MICRO`` model's
(``tests/token_models.py``), every token checked against
:class:`hw.program.GoldenToken`. ``tests/sim/test_system.py`` builds the design and
passes ``TB_SYSTEM`` (JSON: ``{"tests": folder of token_models.py, "bus_bits",
"addr_width", "positions", "results": a JSON file the cycles are written to}``).

Tests: tokens from DRAM under backpressure (and the interrupt); the cycles without
pauses; a read error (SLVERR on part of the weights) and a write error (on the logits)
ending the token with ``done`` and ``ERROR_ADDR``, then correct tokens; start while busy
(``ERROR.start_busy``, the token unharmed); a soft reset in mid-token, then a correct
token.
"""

import itertools
import json
import os
import random
import sys

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

from ternary_accel.hw.driver import Registers
from ternary_accel.hw.host import TokenError, TokenHost, dram_layout
from ternary_accel.sim.dram import channel_images
from ternary_accel.sim.tb.axi_lite import CocotbBackend

#: A test's limit of simulated time.
TIMEOUT_US = 20_000
#: DRAM: the AxiRam's bytes, the layout's base.
RAM_SIZE = 1 << 20
BASE = 0x4000
PROMPT = [1, 17, 40, 3]

_cache = {}


def _settings():
    return json.loads(os.environ.get("TB_SYSTEM", "{}"))


def program():
    """The program the test built the design for: the MICRO model of
    ``tests/token_models.py``, or with ``"checkpoint"`` in ``TB_SYSTEM`` the reference
    model's (``HwDecoder(..., numerics=GROUPED_HEAD)`` on ``token_engine(32, 16,
    weight_port_bits=128, packing="3in5")``, two head rows)."""
    if "program" not in _cache:
        settings = _settings()
        from ternary_accel.hw import program as P
        from ternary_accel.model import hwnum as H
        positions = settings.get("positions", 8)
        if settings.get("checkpoint"):
            from ternary_accel.model.checkpoint import load_checkpoint
            from ternary_accel.model.hwdecoder import HwDecoder
            decoder = HwDecoder(load_checkpoint(settings["checkpoint"]),
                                numerics=H.GROUPED_HEAD)
            c = decoder.config
            params = P.token_engine(32, 16, weight_port_bits=128, packing="3in5",
                                    hidden=c.hidden, ffn=c.ffn)
            _cache["program"] = P.make_program(decoder, params, positions=positions,
                                               head_rows=2)
        else:
            sys.path.insert(0, settings["tests"])
            from token_models import micro_decoder
            _cache["program"] = P.make_program(
                micro_decoder(H.GROUPED_HEAD), P.token_engine(8, 4, hidden=32, ffn=64),
                positions=positions)
        images = channel_images(_cache["program"], bus_bits=settings.get("bus_bits", 128))
        _cache["layout"] = dram_layout(images, base=BASE)
    return _cache["program"]


def golden():
    from ternary_accel.hw.program import GoldenToken
    return GoldenToken(program())


def _faulty(ram):
    """Give ``ram`` address ranges that answer SLVERR: ``ram.read_faults`` and
    ``ram.write_faults``, lists of ``(start, stop)`` bus addresses."""
    ram.read_faults, ram.write_faults = [], []
    read, write = ram.read_if._read, ram.write_if._write

    async def faulty_read(address, length):
        if any(a <= address < b for a, b in ram.read_faults):
            raise OSError(f"read fault at {address:#x}")
        return await read(address, length)

    async def faulty_write(address, data):
        if any(a <= address < b for a, b in ram.write_faults):
            raise OSError(f"write fault at {address:#x}")
        return await write(address, data)

    ram.read_if._read, ram.write_if._write = faulty_read, faulty_write
    return ram


def _pauses(p, seed):
    gen = random.Random(seed)
    return (gen.random() < p for _ in itertools.count())


def soft_reset(regs, max_polls=1000):
    """Pulse ``CONTROL.soft_reset`` and poll until not busy (from the bridge):
    ``(STATUS fields, ERROR flags, polls)``."""
    regs.CONTROL.soft_reset = 1
    polls = 0
    while regs.STATUS.busy and polls < max_polls:
        polls += 1
    return regs.STATUS.fields(), regs.errors(), polls


async def buses(dut, pause=0.0, seed=1, ram_size=RAM_SIZE):
    """Clock, reset, the host's ``AxiLiteMaster`` on ``s_axil_*`` and DRAM, an
    ``AxiRam`` of ``ram_size`` bytes on ``m_axi_*`` (:func:`_faulty`; an address past it
    answers an error, where the model would wrap), every channel paused with
    probability ``pause``: ``(axil, ram)``."""
    cocotb.start_soon(Clock(dut.aclk, 10, unit="ns").start())
    axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.aclk, dut.aresetn,
                         reset_active_level=False)
    ram = _faulty(AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.aclk, dut.aresetn,
                         reset_active_level=False, size=ram_size))
    ram.read_faults.append((ram_size, 1 << 64))
    ram.write_faults.append((ram_size, 1 << 64))
    for port in (axil.write_if, axil.read_if, ram.write_if, ram.read_if):
        port.log.setLevel("WARNING")
    channels = [axil.write_if.aw_channel, axil.write_if.w_channel, axil.write_if.b_channel,
                axil.read_if.ar_channel, axil.read_if.r_channel,
                ram.write_if.aw_channel, ram.write_if.w_channel, ram.write_if.b_channel,
                ram.read_if.ar_channel, ram.read_if.r_channel]
    if pause:
        for k, channel in enumerate(channels):
            channel.set_pause_generator(_pauses(pause, 100 * seed + k))
    dut.aresetn.value = 0
    await ClockCycles(dut.aclk, 5)
    dut.aresetn.value = 1
    await RisingEdge(dut.aclk)
    return axil, ram


async def setup(dut, pause=0.0, seed=1):
    """:func:`buses`, then DRAM loaded by the host and the bases written: ``(axil, ram,
    host)`` (``host`` is made in the bridge)."""
    axil, ram = await buses(dut, pause, seed, _settings().get("ram_size", RAM_SIZE))
    program()

    @bridge
    def load():
        host = TokenHost(Registers(CocotbBackend(axil)), ram)
        host.load(_cache["layout"])
        return host

    return axil, ram, await load()


def _check(gold, token, position, got_token, logits):
    expected_token, expected = gold.run(token, position)
    assert np.array_equal(np.asarray(logits), expected), \
        f"token {token} at {position}: logits differ"
    assert got_token == expected_token, f"token {token} at {position}: {got_token} != " \
                                        f"{expected_token}"
    return expected_token


def _record(name, value):
    path = _settings().get("results")
    if not path:
        return
    data = json.loads(open(path).read()) if os.path.exists(path) else {}
    data[name] = value
    with open(path, "w") as f:
        json.dump(data, f)


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def tokens_from_dram_under_backpressure(dut):
    """The prompt and two more tokens from DRAM, pauses on every channel: every logit
    and token the golden model's; the counters add up to CYCLES_TOTAL (but the cycles
    waiting for the last writes' responses); the interrupt rises at done."""
    _, _, host = await setup(dut, pause=0.3, seed=1)
    gold = golden()

    @bridge
    def run():
        regs = host.regs
        regs.IRQ_ENABLE.done = 1
        regs.CONTROL.irq_enable = 1
        out = []
        for position, token in enumerate(PROMPT + [40, 11]):
            got, logits = host.run(token, position)
            cycles = regs.cycles()
            out.append((token, position, got, logits, cycles, int(dut.irq.value)))
        return out

    results = await run()
    for token, position, got, logits, cycles, irq in results:
        _check(gold, token, position, got, logits)
        ops = sum(v for k, v in cycles.items() if k not in ("total", "stall"))
        assert ops <= cycles["total"] <= ops + 64, cycles     # + the last writes' B
        assert irq == 1
    _record("paused", [r[4] for r in results])


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def cycles_without_pauses(dut):
    """The prompt with DRAM answering at once, the host waiting on the interrupt
    line: the cycles (recorded for the test)."""
    _, _, host = await setup(dut, pause=0.0)
    gold = golden()
    prompt = PROMPT[:_settings().get("tokens", len(PROMPT))]

    async def interrupt():
        if not dut.irq.value:
            await RisingEdge(dut.irq)

    host.wait = lambda regs: resume(interrupt)()

    @bridge
    def run():
        host.regs.IRQ_ENABLE.done = 1
        host.regs.CONTROL.irq_enable = 1
        out = []
        for position, token in enumerate(prompt):
            got, logits = host.run(token, position)
            out.append((got, logits, host.regs.cycles()))
        return out

    results = await run()
    for position, (got, logits, _) in enumerate(results):
        _check(gold, prompt[position], position, got, logits)
    _record("cycles", [c for *_, c in results])


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def bus_errors_end_the_token(dut):
    """SLVERR on part of the weights: the token ends with done, ERROR.read_error and
    ERROR_ADDR in the range; SLVERR on the logits: ERROR.write_error; each time the next
    token (the faults removed) is the golden model's."""
    _, ram, host = await setup(dut, pause=0.2, seed=3)
    wgt_base, wgt = _cache["layout"]["WGT"]
    logits_base, logits = _cache["layout"]["LOGITS"]
    bad = (wgt_base + len(wgt) // 2, wgt_base + len(wgt) // 2 + 64)

    @bridge
    def run():
        regs, out = host.regs, {}
        regs.IRQ_ENABLE.error = 1
        regs.CONTROL.irq_enable = 1
        ram.read_faults.append(bad)
        host.start(17, 0)
        try:
            host.finish(polls=5000)
            out["read"] = None
        except TokenError as error:
            out["read"] = str(error)
        out["read_state"] = (regs.STATUS.fields(), regs.errors(),
                             regs.read("ERROR_ADDR_LO") | regs.read("ERROR_ADDR_HI") << 32,
                             int(dut.irq.value))
        ram.read_faults.clear()
        out["after_read"] = host.run(17, 0)
        ram.write_faults.append((logits_base + 16, logits_base + 32))
        host.start(40, 1)
        try:
            host.finish(polls=5000)
            out["write"] = None
        except TokenError as error:
            out["write"] = str(error)
        out["write_state"] = (regs.STATUS.fields(), regs.errors(),
                              regs.read("ERROR_ADDR_LO") | regs.read("ERROR_ADDR_HI") << 32)
        ram.write_faults.clear()
        out["after_write"] = host.run(40, 1)
        return out

    out = await run()
    assert out["read"] and "read_error" in out["read"], out["read"]
    status, errors, addr, irq = out["read_state"]
    assert status == {"busy": 0, "done": 1}, status
    assert errors == ["read_error"], errors
    assert bad[0] <= addr < bad[1] and addr % 16 == 0, hex(addr)
    assert irq == 1
    gold = golden()
    _check(gold, 17, 0, *out["after_read"])
    assert out["write"] and "write_error" in out["write"], out["write"]
    status, errors, addr = out["write_state"]
    assert status == {"busy": 0, "done": 1}, status
    assert "write_error" in errors, errors
    assert logits_base + 16 <= addr < logits_base + 32, hex(addr)
    _check(gold, 40, 1, *out["after_write"])


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def start_while_busy_and_soft_reset(dut):
    """A start while busy sets ERROR.start_busy and leaves the token alone; a soft reset
    in mid-token stops it (not busy, no done) and the next token is right."""
    _, _, host = await setup(dut, pause=0.2, seed=4)

    @bridge
    def run():
        regs, out = host.regs, {}
        host.start(17, 0)
        out["busy"] = regs.STATUS.busy
        regs.CONTROL.start = 1                    # refused
        out["flags"] = regs.errors()
        regs.ERROR.start_busy = 1
        out["first"] = host.finish(polls=5000)
        host.start(40, 1)
        regs.STATUS.read()
        out["busy_before_reset"] = regs.STATUS.busy
        out["after_reset"] = soft_reset(regs)
        out["second"] = host.run(40, 1)
        return out

    out = await run()
    assert out["busy"] == 1 and out["flags"] == ["start_busy"], out
    gold = golden()
    _check(gold, 17, 0, *out["first"])
    assert out["busy_before_reset"] == 1
    status, errors, polls = out["after_reset"]
    assert status == {"busy": 0, "done": 0} and errors == [] and polls < 1000, out
    _check(gold, 40, 1, *out["second"])
