"""The AXI4-Lite register file (``hw/rtl/axi_lite.py``) under ``amaranth.sim`` with a
small map and a hand-written master: AW before W, W before AW and together, byte strobes,
W1C set and clear in one cycle, a pulse, SLVERR, and the constructor's checks. The full
map under cocotbext-axi's master and random backpressure is ``tests/sim/test_axi_lite.py``
(Verilator)."""

import pytest
from amaranth.sim import Simulator

from ternary_accel.hw import regmap as R
from ternary_accel.hw.rtl.axi_lite import OKAY, SLVERR, AxiLiteSignature, RegisterFile

MAP = R.RegisterMap("small", (
    R.Register("ID", 0x0, (R.Field("magic", 0, 32, R.RO, 0x1234, constant=True),)),
    R.Register("CTRL", 0x4, (R.Field("go", 0, 1, R.W1P), R.Field("mode", 8, 4, R.RW, 5),
                             R.Field("level", 16, 16, R.RW))),
    R.Register("FLAGS", 0x8, (R.Field("a", 0, 1, R.W1C), R.Field("b", 8, 1, R.W1C))),
    R.Register("DATA", 0xC, (R.Field("value", 0, 32, R.RO),)),
), span=0x40)


async def write(ctx, bus, addr, data, strobe=0xF, order="together", limit=20):
    """A write with AW and W in ``order``; returns the response."""
    first = {"together": ("aw", "w"), "aw": ("aw",), "w": ("w",)}[order]
    pending = set(("aw", "w"))
    ctx.set(bus.awaddr, addr)
    ctx.set(bus.wdata, data)
    ctx.set(bus.wstrb, strobe)
    ctx.set(bus.bready, 1)
    for cycle in range(limit):
        offered = pending if cycle >= 2 or order == "together" else set(first) & pending
        ctx.set(bus.awvalid, "aw" in offered)
        ctx.set(bus.wvalid, "w" in offered)
        taken = {c for c in offered if ctx.get(getattr(bus, f"{c}ready"))}
        got = ctx.get(bus.bvalid)
        resp = ctx.get(bus.bresp)
        await ctx.tick()
        pending -= taken
        if got:
            assert not pending, "a response before both halves were taken"
            ctx.set(bus.awvalid, 0)
            ctx.set(bus.wvalid, 0)
            return resp
    raise AssertionError("no write response")


async def read(ctx, bus, addr, limit=20):
    ctx.set(bus.araddr, addr)
    ctx.set(bus.arvalid, 1)
    ctx.set(bus.rready, 1)
    for _ in range(limit):
        if ctx.get(bus.arready):
            await ctx.tick()
            ctx.set(bus.arvalid, 0)
            break
        await ctx.tick()
    for _ in range(limit):
        if ctx.get(bus.rvalid):
            value, resp = ctx.get(bus.rdata), ctx.get(bus.rresp)
            await ctx.tick()
            return value, resp
        await ctx.tick()
    raise AssertionError("no read response")


def test_register_file_transactions():
    dut = RegisterFile(MAP, {"ID.magic": 0xCAFE})
    bus = dut.axi
    pulses = []

    async def watch(ctx):
        async for _, _, go in ctx.tick().sample(dut.ctrl_go):
            pulses.append(go)

    async def bench(ctx):
        assert await read(ctx, bus, 0x0) == (0xCAFE, OKAY)
        assert await read(ctx, bus, 0x4) == (5 << 8, OKAY)
        for order in ("together", "aw", "w"):
            assert await write(ctx, bus, 0x4, 0x1234_0300, order=order) == OKAY
            assert await read(ctx, bus, 0x4) == (0x1234_0300, OKAY)
        assert ctx.get(dut.ctrl_mode) == 3 and ctx.get(dut.ctrl_level) == 0x1234
        assert await write(ctx, bus, 0x4, 0xFFFF_FFFF, strobe=0b0100) == OKAY
        assert await read(ctx, bus, 0x4) == (0x12FF_0300, OKAY)
        assert not any(pulses)
        assert await write(ctx, bus, 0x4, 0x1, strobe=0b0001) == OKAY   # go, mode kept
        assert await read(ctx, bus, 0x4) == (0x12FF_0300, OKAY)       # go reads 0
        # W1C: set by a pulse; a clear in the cycle of a set leaves it set
        ctx.set(dut.flags_a_set, 1)
        ctx.set(dut.flags_b_set, 1)
        await ctx.tick()
        ctx.set(dut.flags_a_set, 0)
        ctx.set(dut.flags_b_set, 0)
        assert await read(ctx, bus, 0x8) == (0x101, OKAY)
        assert await write(ctx, bus, 0x8, 0x101, strobe=0b0010) == OKAY   # b only
        assert await read(ctx, bus, 0x8) == (0x1, OKAY)
        ctx.set(dut.flags_a_set, 1)                    # held through the clearing write
        assert await write(ctx, bus, 0x8, 0x1) == OKAY
        ctx.set(dut.flags_a_set, 0)
        assert await read(ctx, bus, 0x8) == (0x1, OKAY)
        assert await write(ctx, bus, 0x8, 0x1) == OKAY
        assert await read(ctx, bus, 0x8) == (0x0, OKAY)
        # RO and unmapped
        ctx.set(dut.data, 0xDEAD_BEEF)
        assert await write(ctx, bus, 0xC, 0) == OKAY
        assert await read(ctx, bus, 0xC) == (0xDEAD_BEEF, OKAY)
        assert await read(ctx, bus, 0x10) == (0, SLVERR)
        assert await read(ctx, bus, 0x3C) == (0, SLVERR)
        assert await write(ctx, bus, 0x10, 0xFFFF_FFFF) == SLVERR
        assert await read(ctx, bus, 0x4) == (0x12FF_0300, OKAY)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.add_process(watch)
    sim.run()
    assert sum(pulses) == 1 and pulses.count(1) == 1


def test_register_file_ports_and_checks():
    dut = RegisterFile(MAP)
    names = set(dut.signature.members)
    assert {"axi", "ctrl_go", "ctrl_mode", "ctrl_level", "flags_a", "flags_a_set",
            "flags_b", "flags_b_set", "data"} == names
    assert dut.port("CTRL.mode") is dut.ctrl_mode
    assert dut.signature.members["axi"].signature == AxiLiteSignature(MAP.addr_bits)
    with pytest.raises(ValueError, match="CTRL.mode is not a constant field"):
        RegisterFile(MAP, {"CTRL.mode": 1})
    with pytest.raises(R.RegisterMapError, match="does not fit its 32 bits"):
        RegisterFile(MAP, {"ID.magic": 1 << 32})
    with pytest.raises(ValueError, match="no register 'NOPE'"):
        RegisterFile(MAP, {"NOPE.x": 1})
    with pytest.raises(ValueError, match="does not reach"):
        RegisterFile(MAP, addr_width=4)
    with pytest.raises(KeyError, match="has no port"):
        dut.port("ID.magic")
    clash = R.RegisterMap("c", (
        R.Register("A", 0, (R.Field("x", 0, 1, R.W1C),)),
        R.Register("A_X", 4, (R.Field("set", 0, 1, R.RW),))))
    with pytest.raises(R.RegisterMapError, match="A_X.set: port 'a_x_set' is taken"):
        RegisterFile(clash)
    full = RegisterFile(constants={"ENGINE.lanes": 32})
    assert full.addr_width == 12 and "control_start" in full.signature.members
