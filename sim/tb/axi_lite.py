"""cocotb bench of the AXI4-Lite register file (:class:`hw.rtl.axi_lite.RegisterFile`
over :data:`hw.regmap.REGMAP`) under Verilator, driven by cocotbext-axi's
``AxiLiteMaster``; the expected values come from the map's Python model
(:class:`hw.driver.RegisterModel`). ``tests/sim/test_axi_lite.py`` builds the design with
the constants of ``TB_AXI_LITE`` (JSON: ``{"constants": {"REG.field": value}}``).

Tests: every register's reset value; RW registers read back through byte strobes; RO
registers ignore writes; W1C flags set by their input pulses and cleared by a 1; a W1P
field pulses one cycle; an unmapped address answers SLVERR (read and write); random
backpressure on all five channels (cocotbext-axi's pause generators) under concurrent,
back-to-back reads and writes, with AW before W, W before AW and both together seen; the
driver's :class:`hw.driver.Registers` over the bus (:class:`CocotbBackend`).
"""

import itertools
import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiResp

from ternary_accel.hw.driver import BusError, Registers, RegisterModel
from ternary_accel.hw.regmap import REGMAP, RO, RW, W1C
from ternary_accel.hw.rtl.axi_lite import port_name

#: A test's limit of simulated time (the longest takes about 100 us).
TIMEOUT_US = 1000
#: An unmapped word in the window, and the window's last word.
UNMAPPED = (0x030, 0x07C, 0x200, REGMAP.span - 4)


def _constants():
    return json.loads(os.environ.get("TB_AXI_LITE", "{}")).get("constants", {})


class CocotbBackend:
    """The driver's backend over an ``AxiLiteMaster``, for code run in a
    ``cocotb.task.bridge`` thread: each access blocks the thread until the bus answers
    (``cocotb.task.resume``); an error response raises :class:`hw.driver.BusError`."""

    def __init__(self, master):
        self.master = master

    def read32(self, addr):
        resp = resume(self.master.read)(addr, 4)
        if resp.resp != AxiResp.OKAY:
            raise BusError(f"{resp.resp.name} reading {addr:#x}")
        return int.from_bytes(resp.data, "little")

    def write32(self, addr, value):
        resp = resume(self.master.write)(addr, value.to_bytes(4, "little"))
        if resp.resp != AxiResp.OKAY:
            raise BusError(f"{resp.resp.name} writing {addr:#x}")


def _ro_ports():
    """``[(path, port, width)]`` of the RO fields with an input port."""
    return [(f"{r.name}.{f.name}", port_name(r, f), f.width)
            for r in REGMAP for f in r.fields if f.access == RO and not f.constant]


async def setup(dut):
    """Clock, reset, every input at 0; returns the master and the model."""
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    for _, port, _ in _ro_ports():
        getattr(dut, port).value = 0
    for r in REGMAP:
        for f in r.fields:
            if f.access == W1C:
                getattr(dut, f"{port_name(r, f)}_set").value = 0
    axi = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "axi", bus_separator="__"), dut.clk,
                        dut.rst, reset_active_level=True)
    axi.write_if.log.setLevel("WARNING")
    axi.read_if.log.setLevel("WARNING")
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    return axi, RegisterModel(constants=_constants())


async def read(axi, addr):
    resp = await axi.read(addr, 4)
    return int.from_bytes(resp.data, "little"), resp.resp


async def write(axi, addr, value, strobe=0xF):
    """Write the strobed bytes of ``value`` (contiguous, as AXI's narrow writes are)."""
    lanes = [i for i in range(4) if strobe >> i & 1]
    assert lanes == list(range(lanes[0], lanes[-1] + 1)), "contiguous strobes only"
    data = value.to_bytes(4, "little")[lanes[0]:lanes[-1] + 1]
    return (await axi.write(addr + lanes[0], data)).resp


def _random_strobe(rng):
    first = rng.randrange(4)
    return sum(1 << i for i in range(first, rng.randrange(first, 4) + 1))


async def _pulse(clk, signal, cycles=1):
    await RisingEdge(clk)
    signal.value = 1
    await ClockCycles(clk, cycles)
    signal.value = 0


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def reset_values(dut):
    """Every register reads its reset value (constants: the build's), OKAY."""
    axi, model = await setup(dut)
    for reg in REGMAP:
        value, resp = await read(axi, reg.offset)
        assert resp == AxiResp.OKAY, f"{reg.name}: {resp}"
        assert value == model.read32(reg.offset), \
            f"{reg.name} reads {value:#010x}, expected {model.read32(reg.offset):#010x}"
    assert dut.control_start.value == 0 and dut.token_in.value == 0


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def rw_read_back_with_strobes(dut):
    """RW registers read back what was written, byte by byte under the strobes; a partial
    write leaves the other bytes; the ports carry the values."""
    axi, model = await setup(dut)
    rng = random.Random(1)
    rw = [r for r in REGMAP if r.mask(RW)]
    for reg in rw:
        for strobe in (0xF, 0x1, 0x2, 0x4, 0x8, 0x3, 0xC, 0x6, 0xE, 0x7):
            value = rng.getrandbits(32)
            assert await write(axi, reg.offset, value, strobe) == AxiResp.OKAY
            model.write32(reg.offset, value, strobe)
            got, resp = await read(axi, reg.offset)
            assert resp == AxiResp.OKAY
            assert got == model.read32(reg.offset), \
                f"{reg.name} strobe {strobe:#x}: {got:#010x} != {model.read32(reg.offset):#010x}"
    for reg in rw:
        for f in reg.fields:
            if f.access == RW:
                want = (model.read32(reg.offset) & f.mask) >> f.lsb
                got = int(getattr(dut, port_name(reg, f)).value)
                assert got == want, f"port {port_name(reg, f)} = {got:#x}, expected {want:#x}"


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def ro_registers_ignore_writes(dut):
    """RO registers (constants and inputs) read their value after any write, OKAY."""
    axi, model = await setup(dut)
    rng = random.Random(2)
    for path, port, width in _ro_ports():
        value = rng.getrandbits(width)
        getattr(dut, port).value = value
        model.inputs[path] = value
    await RisingEdge(dut.clk)
    for reg in REGMAP:
        if reg.access != RO:
            continue
        assert await write(axi, reg.offset, 0xFFFF_FFFF ^ model.read32(reg.offset)) \
            == AxiResp.OKAY
        got, _ = await read(axi, reg.offset)
        assert got == model.read32(reg.offset), \
            f"{reg.name}: {got:#010x} after a write, expected {model.read32(reg.offset):#010x}"


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def w1c_flags(dut):
    """W1C flags: set by a one-cycle pulse of their input, kept by a write of 0 or of 1
    to the other flags, cleared by a write of 1 (under its byte's strobe only)."""
    axi, model = await setup(dut)
    for reg in REGMAP:
        for f in reg.fields:
            if f.access != W1C:
                continue
            path, port = f"{reg.name}.{f.name}", port_name(reg, f)
            await _pulse(dut.clk, getattr(dut, f"{port}_set"))
            model.set_flag(path)
            await RisingEdge(dut.clk)
            assert getattr(dut, port).value == 1, f"{port} not set by its pulse"
            assert (await read(axi, reg.offset))[0] == model.read32(reg.offset)
            # a 0, a 1 in the other flags, and a 1 here with another byte's strobe only
            other = reg.mask() & ~f.mask
            for value, strobe in ((0, 0xF), (other, 0xF), (f.mask, 1 << (f.lsb // 8 + 1) % 4)):
                await write(axi, reg.offset, value, strobe)
                model.write32(reg.offset, value, strobe)
                assert getattr(dut, port).value == 1, \
                    f"{path} cleared by {value:#x} under strobe {strobe:#x}"
            await write(axi, reg.offset, f.mask)
            model.write32(reg.offset, f.mask)
            assert getattr(dut, port).value == 0, f"{path} not cleared by a 1"
            assert (await read(axi, reg.offset))[0] == model.read32(reg.offset)


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def pulse_fields(dut):
    """A W1P field pulses exactly one cycle a write of 1, reads 0, and keeps the
    register's RW fields; a 0, or its byte unstrobed, pulses nothing."""
    axi, _ = await setup(dut)
    counts = {"control_start": 0, "control_soft_reset": 0}

    async def count():
        while True:
            await FallingEdge(dut.clk)
            for name in counts:
                counts[name] += int(getattr(dut, name).value)

    cocotb.start_soon(count())
    control = REGMAP["CONTROL"].offset
    await write(axi, control, 1 << 8)                         # irq_enable
    await write(axi, control, (1 << 8) | 1)                   # start
    await ClockCycles(dut.clk, 4)
    assert counts == {"control_start": 1, "control_soft_reset": 0}, counts
    assert (await read(axi, control))[0] == 1 << 8
    await write(axi, control, 0b10 | 1 << 8)                  # soft reset
    await write(axi, control, 0x1, strobe=0x2)                # byte 0 unstrobed
    await write(axi, control, 1 << 8)                         # zeros
    await ClockCycles(dut.clk, 4)
    assert counts == {"control_start": 1, "control_soft_reset": 1}, counts
    for _ in range(3):                                        # back to back
        await write(axi, control, 1 | 1 << 8)
    await ClockCycles(dut.clk, 4)
    assert counts["control_start"] == 4, counts
    assert dut.control_irq_enable.value == 1


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def unmapped_addresses_answer_slverr(dut):
    """Reads and writes outside the map answer SLVERR (a read 0), nothing changes, and
    the bus goes on."""
    axi, model = await setup(dut)
    before = [(await read(axi, r.offset))[0] for r in REGMAP]
    for addr in UNMAPPED:
        value, resp = await read(axi, addr)
        assert resp == AxiResp.SLVERR and value == 0, (hex(addr), resp, value)
        assert await write(axi, addr, 0xFFFF_FFFF) == AxiResp.SLVERR, hex(addr)
    assert [(await read(axi, r.offset))[0] for r in REGMAP] == before
    assert (await read(axi, 0))[0] == model.read32(0)


class _Coverage:
    """What the bus did, sampled every cycle: which of AW and W each write's handshake
    came first, cycles with a read and a write handshake together, back-to-back
    responses."""

    def __init__(self, dut):
        self.dut = dut
        self.counts = dict.fromkeys(("aw_first", "w_first", "together", "read_and_write",
                                     "b_back_to_back", "r_back_to_back"), 0)
        self.pending = []               # "aw" or "w" taken without its other half

    async def run(self):
        d, last_b, last_r = self.dut, False, False
        while True:
            await FallingEdge(d.clk)
            aw = bool(d.axi__awvalid.value and d.axi__awready.value)
            w = bool(d.axi__wvalid.value and d.axi__wready.value)
            ar = bool(d.axi__arvalid.value and d.axi__arready.value)
            b = bool(d.axi__bvalid.value and d.axi__bready.value)
            r = bool(d.axi__rvalid.value and d.axi__rready.value)
            if aw and w and not self.pending:
                self.counts["together"] += 1
            else:
                for half in ("aw",) * aw + ("w",) * w:
                    if self.pending and self.pending[0] != half:
                        first = self.pending.pop(0)
                        self.counts[f"{first}_first"] += 1
                    else:
                        self.pending.append(half)
            self.counts["read_and_write"] += ar and (aw or w)
            self.counts["b_back_to_back"] += b and last_b
            self.counts["r_back_to_back"] += r and last_r
            last_b, last_r = b, r


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def random_traffic_under_backpressure(dut):
    """Concurrent readers and writers (disjoint registers each) with random pauses on
    AW, W, B, AR and R; every read checked against the model; then the same without
    pauses (back-to-back)."""
    axi, model = await setup(dut)
    rng = random.Random(5)
    coverage = _Coverage(dut)
    cocotb.start_soon(coverage.run())
    for path, port, width in _ro_ports():
        value = rng.getrandbits(width)
        getattr(dut, port).value = value
        model.inputs[path] = value

    def pauses(p, seed):
        gen = random.Random(seed)
        return (gen.random() < p for _ in itertools.count())

    rw = [r for r in REGMAP if r.mask(RW) == r.mask()]
    readonly = [r for r in REGMAP if r.access == RO]

    async def writer(regs, seed, n):
        g = random.Random(seed)
        for _ in range(n):
            reg = g.choice(regs)
            value, strobe = g.getrandbits(32), _random_strobe(g)
            assert await write(axi, reg.offset, value, strobe) == AxiResp.OKAY
            model.write32(reg.offset, value, strobe)
            got, resp = await read(axi, reg.offset)
            assert resp == AxiResp.OKAY and got == model.read32(reg.offset), \
                f"{reg.name}: {got:#010x} != {model.read32(reg.offset):#010x}"

    async def reader(seed, n):
        g = random.Random(seed)
        for _ in range(n):
            if g.random() < 0.2:
                addr = g.choice(UNMAPPED)
                assert (await read(axi, addr))[1] == AxiResp.SLVERR
                assert await write(axi, addr, g.getrandbits(32)) == AxiResp.SLVERR
                continue
            reg = g.choice(readonly)
            got, resp = await read(axi, reg.offset)
            assert resp == AxiResp.OKAY and got == model.read32(reg.offset), reg.name

    channels = [axi.write_if.aw_channel, axi.write_if.w_channel, axi.write_if.b_channel,
                axi.read_if.ar_channel, axi.read_if.r_channel]
    for paused in (True, False):
        for k, channel in enumerate(channels):
            if paused:
                channel.set_pause_generator(pauses(0.4, 10 * k + 1))
            else:   # the generator's last value stays unless cleared
                channel.clear_pause_generator()
                channel.pause = False
        # four writers on disjoint registers, two readers
        tasks = [cocotb.start_soon(writer(rw[k::4], 100 * paused + k, 40)) for k in range(4)]
        tasks += [cocotb.start_soon(reader(200 * paused + k, 40)) for k in range(2)]
        for task in tasks:
            await task
    await ClockCycles(dut.clk, 2)
    counts = coverage.counts
    dut._log.info(f"bus coverage: {counts}")
    assert all(counts[k] > 0 for k in counts), f"a case never happened: {counts}"


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def driver_over_the_bus(dut):
    """The driver's register layer (:class:`hw.driver.Registers`) over the bus: the
    identification, named fields, a pulse, a W1C clear, a 64-bit base, a bus error."""
    axi, model = await setup(dut)
    starts = []

    async def count():
        while True:
            await FallingEdge(dut.clk)
            if dut.control_start.value:
                starts.append(1)

    cocotb.start_soon(count())
    dut.cycles_matmul.value = 1234
    await _pulse(dut.clk, dut.error_norm_set)

    @bridge
    def host():
        regs = Registers(CocotbBackend(axi))          # checks the identification
        info = regs.identification()
        regs.TOKEN_IN = 17
        regs.POSITION.value = 3
        regs.CONTROL.irq_enable = 1
        regs.CONTROL.start = 1
        regs.set_base("KV", 0x1_2345_6780)
        errors = regs.errors()
        regs.ERROR.norm = 1
        try:
            regs.backend.read32(UNMAPPED[0])
            bus_error = None
        except BusError as error:
            bus_error = str(error)
        try:
            regs.ENGINE.lanes = 3
            refused = None
        except AttributeError as error:
            refused = str(error)
        return (info, regs.TOKEN_IN.value, regs.POSITION.value, regs.CONTROL.fields(),
                regs.base("KV"), errors, regs.errors(), regs.cycles()["MATMUL"], bus_error,
                refused)

    (info, token_in, position, control, kv_base, errors, errors_after, matmul, bus_error,
     refused) = await host()
    constants = _constants()
    assert info["lanes"] == constants.get("ENGINE.lanes", 0)
    assert info["strides"]["PROG"] == constants.get("PROG_STRIDE.bytes", 0)
    assert (token_in, position) == (17, 3)
    assert control == {"start": 0, "soft_reset": 0, "irq_enable": 1}
    assert dut.token_in.value == 17 and dut.position.value == 3
    assert kv_base == 0x1_2345_6780 and dut.kv_base_hi.value == 1
    assert errors == ["norm"] and errors_after == []
    assert matmul == 1234
    assert bus_error and "SLVERR" in bus_error
    assert refused == "ENGINE.lanes is read-only"
    await ClockCycles(dut.clk, 2)
    assert len(starts) == 1, starts
