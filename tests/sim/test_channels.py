"""The channel memories of :mod:`sim.channels` under ``amaranth.sim``: read commands
answered in order through stalls and backpressure on both sides, queued and empty
commands, address wrap, writes read back, the stall LFSRs against their Python model,
layout-typed core ports, and parameter checks."""

import json
import random
import time

import pytest
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from ternary_accel.sim.channels import (CMD_FIFO_DEPTH, CMD_LAYOUT, ReadChannelMemory,
                                        ReadWriteChannelMemory, WriteChannelMemory,
                                        channel_seeds, connect_read, connect_write,
                                        width_of, write_layout)
from ternary_accel.sim.harness import lfsr_states, stall_threshold

WIDTH = 16


def contents(depth):
    return [(7919 * a + 13) % (1 << WIDTH) for a in range(depth)]


def expected_words(memory, commands):
    depth = len(memory)
    return [memory[(addr + i) % depth] for addr, count, *_ in commands for i in range(count)]


def simulate(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def drive(mem, *, commands=(), writes=(), offer=1.0, ready=1.0, ready_pattern=None,
          rng_seed=3, limit=20_000, tail=8):
    """Drive ``mem``'s channels from a testbench, cycle by cycle: ``commands`` (addr,
    count[, writes taken before it may be offered]) and ``writes`` (addr, word) offered
    on a cycle with probability ``offer`` (an offered beat stays until taken); ``data``
    ready with probability ``ready``, or per cycle from ``ready_pattern(cycle)``.
    Returns the words received, the cycle each command and write was taken, the cycle of
    each word, and the cycles run."""
    rng = random.Random(rng_seed)
    out = {"words": [], "cmd_cycles": [], "wr_cycles": [], "word_cycles": [], "cycles": 0}

    async def bench(ctx):
        c = w = 0                        # next command, next write
        cmd_valid = wr_valid = False
        idle_after = None                # cycles run after everything was done
        expected = None if not commands else sum(cmd[1] for cmd in commands)
        cycle = 0
        while cycle < limit:
            # writes
            if "wr" in mem.signature.members:
                if not wr_valid and w < len(writes) and rng.random() < offer:
                    wr_valid = True
                    ctx.set(mem.wr.payload, {"addr": writes[w][0], "data": writes[w][1]})
                ctx.set(mem.wr.valid, wr_valid)
                wr_taken = wr_valid and ctx.get(mem.wr.ready)
            else:
                wr_taken = False
            # commands: a command waiting for writes may go in the cycle they are taken
            if "cmd" in mem.signature.members:
                done_writes = w + wr_taken
                if not cmd_valid and c < len(commands) and rng.random() < offer and \
                        (len(commands[c]) < 3 or commands[c][2] <= done_writes):
                    cmd_valid = True
                    ctx.set(mem.cmd.payload, {"addr": commands[c][0], "count": commands[c][1]})
                ctx.set(mem.cmd.valid, cmd_valid)
                cmd_taken = cmd_valid and ctx.get(mem.cmd.ready)
                take = ready_pattern(cycle) if ready_pattern else rng.random() < ready
                ctx.set(mem.data.ready, take)
                if ctx.get(mem.data.valid) and take:
                    out["words"].append(ctx.get(mem.data.payload))
                    out["word_cycles"].append(cycle)
            else:
                cmd_taken = False
            await ctx.tick()
            if wr_taken:
                out["wr_cycles"].append(cycle)
                w += 1
                wr_valid = False
            if cmd_taken:
                out["cmd_cycles"].append(cycle)
                c += 1
                cmd_valid = False
            cycle += 1
            finished = c == len(commands) and w == len(writes) and \
                (expected is None or len(out["words"]) >= expected)
            if finished and idle_after is None:
                out["cycles"] = cycle
                idle_after = 0
            if idle_after is not None:
                idle_after += 1
                if idle_after > tail:   # and nothing more arrives
                    break
        if idle_after is None:
            out["cycles"] = cycle
        if "data" in mem.signature.members:
            ctx.set(mem.data.ready, 1)
            for _ in range(4):
                if ctx.get(mem.data.valid):
                    out["words"].append(ctx.get(mem.data.payload))
                await ctx.tick()
        if mem.memory is not None:
            out["memory"] = [ctx.get(mem.memory.data[a]) for a in range(mem.depth)]

    simulate(mem, bench)
    return out


COMMANDS = [(0, 5), (3, 1), (10, 0), (60, 9), (2, 16), (7, 0), (7, 0), (33, 3), (1, 2)]


@pytest.mark.parametrize("idle, offer, ready", [
    (0.0, 1.0, 1.0), (0.4, 1.0, 1.0), (0.0, 1.0, 0.4), (0.0, 0.5, 1.0), (0.3, 0.6, 0.5),
    (0.7, 0.9, 0.2),
])
@pytest.mark.parametrize("latency", [2, 1])
def test_every_command_returns_its_words_in_order(idle, offer, ready, latency):
    depth = 64
    memory = contents(depth)
    mem = ReadChannelMemory(WIDTH, depth, seed=11, idle=idle, init=memory, latency=latency)
    out = drive(mem, commands=COMMANDS, offer=offer, ready=ready)
    assert out["words"] == expected_words(memory, COMMANDS)   # nothing lost or added
    assert len(out["cmd_cycles"]) == len(COMMANDS)


def test_queued_commands_run_back_to_back():
    """Without stalls the next command is taken while the previous one's words are still
    returned, and its words follow with no idle cycle: one word a cycle throughout."""
    depth = 32
    memory = contents(depth)
    commands = [(4, 6), (20, 5), (0, 7), (9, 4)]
    mem = ReadChannelMemory(WIDTH, depth, init=memory)
    out = drive(mem, commands=commands)
    total = sum(n for _, n in commands)
    assert out["words"] == expected_words(memory, commands)
    cycles = out["word_cycles"]
    assert cycles == list(range(cycles[0], cycles[0] + total))     # no gap
    assert cycles[0] == out["cmd_cycles"][0] + 2     # FIFO, then the memory's latency
    # the second command was queued before the first's last word went out
    assert out["cmd_cycles"][1] < cycles[commands[0][1] - 1]
    # the FIFO holds CMD_FIFO_DEPTH commands: with data held back, that many queue up
    mem = ReadChannelMemory(WIDTH, depth, init=memory)
    out = drive(mem, commands=commands, ready_pattern=lambda cycle: cycle >= 30)
    assert out["words"] == expected_words(memory, commands)
    assert sum(c < 30 for c in out["cmd_cycles"]) == CMD_FIFO_DEPTH + 1   # + the served one


def test_latency_one_offers_the_first_word_on_the_next_cycle():
    """``latency=1``: an idle memory serves a command in the cycle it takes it, so its
    first word comes on the next cycle (the FIFO's cycle saved); queued commands still
    follow back to back."""
    depth = 32
    memory = contents(depth)
    commands = [(4, 6), (20, 5), (0, 7), (9, 4)]
    mem = ReadChannelMemory(WIDTH, depth, init=memory, latency=1)
    out = drive(mem, commands=commands)
    total = sum(n for _, n in commands)
    assert out["words"] == expected_words(memory, commands)
    cycles = out["word_cycles"]
    assert cycles[0] == out["cmd_cycles"][0] + 1
    assert cycles == list(range(cycles[0], cycles[0] + total))     # no gap
    # single-word and empty commands in a row, each served as it comes
    mem = ReadChannelMemory(WIDTH, depth, init=memory, latency=1)
    out = drive(mem, commands=[(3, 1)] * 3 + [(5, 0), (6, 2)], tail=20)
    assert out["words"] == [memory[3]] * 3 + memory[6:8]


def test_stall_ports_set_the_thresholds_at_run_time():
    """``stall_ports=True``: the ``idle`` and ``backpressure`` ports give the stalls the
    parameters would (the LFSR model), and 0 none."""
    cycles = 120

    def trace(run_time, **kwargs):
        both = ReadWriteChannelMemory(WIDTH, 16, seed=5, **kwargs)
        seen = []

        async def bench(ctx):
            if run_time is not None:
                ctx.set(both.idle, stall_threshold(run_time))
                ctx.set(both.backpressure, stall_threshold(run_time / 2))
            for _ in range(cycles):
                seen.append((ctx.get(both.cmd.ready), ctx.get(both.wr.ready)))
                await ctx.tick()

        simulate(both, bench)
        return seen

    assert trace(0.6, stall_ports=True) == trace(None, idle=0.6, backpressure=0.3)
    assert trace(None, stall_ports=True) == [(1, 1)] * cycles
    assert trace(None, stall_ports=True, idle=0.6) == trace(None, idle=0.6)


@pytest.mark.parametrize("idle", [0.0, 0.5])
def test_a_zero_count_returns_nothing(idle):
    memory = contents(16)
    mem = ReadChannelMemory(WIDTH, 16, idle=idle, init=memory)
    out = drive(mem, commands=[(3, 0)] * 5, tail=20)
    assert out["words"] == [] and len(out["cmd_cycles"]) == 5
    mem = ReadChannelMemory(WIDTH, 16, idle=idle, init=memory)
    commands = [(3, 0), (5, 2), (0, 0), (0, 0), (9, 1), (1, 0)]
    out = drive(mem, commands=commands, tail=20)
    assert out["words"] == expected_words(memory, commands)


@pytest.mark.parametrize("depth", [16, 10])
def test_addresses_wrap_modulo_the_depth(depth):
    """A command running past the end, one longer than the memory, an address far past
    the depth (up to 2**32 - 1): the words at (addr + i) % depth."""
    memory = contents(depth)
    commands = [(depth - 3, 6), (5, 2 * depth + 3), (1000, 4), ((1 << 32) - 1, 3)]
    mem = ReadChannelMemory(WIDTH, depth, idle=0.2, seed=5, init=memory)
    out = drive(mem, commands=commands, ready=0.7)
    assert out["words"] == expected_words(memory, commands)


def test_a_consumer_holding_ready_low_for_long_stretches_loses_and_duplicates_nothing():
    depth = 64
    memory = contents(depth)
    commands = [(a * 7 % depth, 1 + a % 9) for a in range(24)]
    pattern = random.Random(9)
    stretches = {}

    def ready(cycle):   # alternating stretches of 0..60 cycles low and 1..5 cycles random
        block = cycle // 64
        if block not in stretches:
            stretches[block] = (pattern.randrange(61), pattern.randrange(1, 6))
        low, high = stretches[block]
        at = cycle % 64
        return at >= low and (at - low < high or pattern.random() < 0.5)

    for idle in (0.0, 0.5):
        mem = ReadChannelMemory(WIDTH, depth, idle=idle, seed=77, init=memory)
        out = drive(mem, commands=commands, offer=0.8, ready_pattern=ready, limit=50_000)
        assert out["words"] == expected_words(memory, commands)


def test_stalls_follow_the_lfsr_model_and_repeat_for_a_seed():
    """``cmd.ready`` (empty commands offered every cycle: the FIFO never fills),
    ``wr.ready`` and ``data.valid`` (one long command, every word taken at once) are the
    Python LFSR's no-stall cycles from reset; one seed gives one pattern, another seed
    another."""
    idle, cycles = 0.5, 200
    threshold = stall_threshold(idle)

    def trace(seed):
        seen = {"cmd": [], "data": [], "wr": []}
        both = ReadWriteChannelMemory(WIDTH, 16, seed=seed, idle=idle, backpressure=idle)

        async def empty_commands(ctx):
            ctx.set(both.cmd.valid, 1)
            for _ in range(cycles):
                seen["cmd"].append(ctx.get(both.cmd.ready))
                seen["wr"].append(ctx.get(both.wr.ready))
                await ctx.tick()

        simulate(both, empty_commands)
        read = ReadChannelMemory(WIDTH, 16, seed=seed, idle=idle)

        async def long_command(ctx):
            ctx.set(read.data.ready, 1)
            ctx.set(read.cmd.payload, {"addr": 0, "count": 10_000})
            ctx.set(read.cmd.valid, 1)
            for cycle in range(cycles):
                taken = "taken" not in seen and ctx.get(read.cmd.ready)
                seen["data"].append(ctx.get(read.data.valid))
                await ctx.tick()
                if taken:
                    seen["taken"] = cycle
                    ctx.set(read.cmd.valid, 0)

        simulate(read, long_command)
        return seen

    def model(seed):
        return [int((s & 0xFF) >= threshold) for s in lfsr_states(seed, cycles)]

    seed = 0xC0FFEE
    seen = trace(seed)
    cmd_seed, data_seed, wr_seed = channel_seeds(seed)
    assert seen["cmd"] == model(cmd_seed)
    assert seen["wr"] == model(wr_seed)
    # the command taken on cycle t is served from t + 1: a word is offered on the cycle
    # after each cycle that draws no stall
    start = seen["taken"] + 2
    assert not any(seen["data"][:start])
    assert seen["data"][start:] == model(data_seed)[start - 1:cycles - 1]
    assert trace(seed) == seen
    assert trace(seed + 1) != seen


def test_writes_land_with_backpressure_and_read_back():
    depth = 32
    rng = random.Random(4)
    writes = [(rng.randrange(1 << 32), rng.randrange(1 << WIDTH)) for _ in range(60)]
    mem = WriteChannelMemory(WIDTH, depth, seed=9, idle=0.6)
    out = drive(mem, writes=writes, offer=0.7)
    model = [0] * depth
    for addr, word in writes:     # in order: a later write of an address wins
        model[addr % depth] = word
    assert out["memory"] == model and len(out["wr_cycles"]) == len(writes)
    assert len(set(out["wr_cycles"])) == len(writes)     # one write a cycle


@pytest.mark.parametrize("latency", [2, 1])
@pytest.mark.parametrize("idle, backpressure", [(0.0, 0.0), (0.5, 0.3), (0.2, 0.8)])
def test_a_read_taken_with_or_after_a_write_sees_the_new_word(idle, backpressure, latency):
    """Writes of a KV-cache-like region while reads of it, each command offered as soon
    as (the same cycle as) the last write it reads is taken, and reads of the initial
    words elsewhere: every word read is the one written."""
    depth = 64
    initial = contents(depth)
    writes = [(a, 0xA000 + a) for a in range(32)]
    commands = []
    for k in range(16):
        commands.append((2 * k, 2, 2 * k + 2))       # both words just written
        commands.append((40 + k, 1, 0))              # never written: the initial word
    commands.append((0, 32, 32))                     # everything, after the last write
    mem = ReadWriteChannelMemory(WIDTH, depth, seed=21, idle=idle,
                                 backpressure=backpressure, init=initial, latency=latency)
    out = drive(mem, commands=commands, writes=writes, offer=1.0, ready=0.8)
    final = list(initial)
    for addr, word in writes:
        final[addr] = word
    assert out["words"] == expected_words(final, commands)
    assert out["memory"] == final
    # some command went in the very cycle its last write was taken (the edge case)
    last_write = {2 * k + 2: out["wr_cycles"][2 * k + 1] for k in range(16)}
    same = [out["cmd_cycles"][2 * k] == last_write[2 * k + 2] for k in range(16)]
    assert any(same)


@pytest.mark.parametrize("idle", [0.0, 0.4])
def test_latency_one_forwards_a_write_to_a_read_in_its_cycle(idle):
    """``latency=1``: a command taken in the cycle that the write of its word is taken
    reads that word in the same cycle; the write is forwarded, so it sees the new
    word."""
    depth = 32
    writes = [(a, 0xB000 + a) for a in range(depth)]
    commands = [(a, 1, a + 1) for a in range(depth)]    # each word as it is written
    mem = ReadWriteChannelMemory(WIDTH, depth, seed=3, idle=idle, backpressure=idle,
                                 init=contents(depth), latency=1)
    out = drive(mem, commands=commands, writes=writes)
    assert out["words"] == [word for _, word in writes]
    assert any(c == w for c, w in zip(out["cmd_cycles"], out["wr_cycles"]))


class LayoutCore(wiring.Component):
    """A stand-in for a core with layout-typed channel ports, driven by the test."""

    WORD = data.StructLayout({"lo": 8, "hi": data.ArrayLayout(4, 2)})

    def __init__(self):
        super().__init__({
            "X_cmd": Out(stream.Signature(CMD_LAYOUT)),
            "X_data": In(stream.Signature(self.WORD)),
            "X_wr": Out(stream.Signature(write_layout(self.WORD))),
        })

    def elaborate(self, platform):
        return Module()


class Pair(wiring.Component):
    """A LayoutCore joined to a read+write memory, by the helpers (an int-width memory)
    or by ``wiring.connect`` (a memory of the core's word layout)."""

    def __init__(self, by_layout):
        self.core = LayoutCore()
        word = LayoutCore.WORD if by_layout else width_of(LayoutCore.WORD)
        self.mem = ReadWriteChannelMemory(word, 8, init=[0x5A, 0xFFFF, 0x1234])
        self.by_layout = by_layout
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.core, m.submodules.mem = self.core, self.mem
        if self.by_layout:
            wiring.connect(m, self.core.X_cmd, self.mem.cmd)
            wiring.connect(m, self.mem.data, self.core.X_data)
            wiring.connect(m, self.core.X_wr, self.mem.wr)
        else:
            connect_read(m, self.core.X_cmd, self.core.X_data, self.mem)
            connect_write(m, self.core.X_wr, self.mem)
        return m


@pytest.mark.parametrize("by_layout", [False, True])
def test_a_layout_typed_core_port_joins_a_word_memory(by_layout):
    assert width_of(LayoutCore.WORD) == 16 and width_of(12) == 12
    dut = Pair(by_layout)
    core = dut.core
    got = []

    async def bench(ctx):
        ctx.set(core.X_wr.payload, {"addr": 3, "data": {"lo": 0x21, "hi": [0x3, 0xC]}})
        ctx.set(core.X_wr.valid, 1)
        await ctx.tick()
        ctx.set(core.X_wr.valid, 0)
        ctx.set(core.X_cmd.payload, {"addr": 0, "count": 4})
        ctx.set(core.X_cmd.valid, 1)
        await ctx.tick()
        ctx.set(core.X_cmd.valid, 0)
        ctx.set(core.X_data.ready, 1)
        for _ in range(10):
            if ctx.get(core.X_data.valid):
                word = ctx.get(core.X_data.payload)
                got.append((word.lo, list(word.hi)))
            await ctx.tick()

    simulate(dut, bench)
    assert got == [(0x5A, [0, 0]), (0xFF, [0xF, 0xF]), (0x34, [0x2, 0x1]),
                   (0x21, [0x3, 0xC])]


@pytest.mark.parametrize("make, error", [
    (lambda: ReadChannelMemory(0, 4), ValueError),
    (lambda: ReadChannelMemory("8", 4), TypeError),
    (lambda: ReadChannelMemory(8, 1), ValueError),
    (lambda: ReadChannelMemory(8, 4.0), TypeError),
    (lambda: ReadChannelMemory(8, 4, storage="sram"), ValueError),
    (lambda: ReadChannelMemory(8, 4, idle=1.0), ValueError),
    (lambda: ReadChannelMemory(8, 4, seed=-1), ValueError),
    (lambda: ReadChannelMemory(8, 4, latency=0), ValueError),
    (lambda: ReadChannelMemory(8, 4, init=[1] * 5), ValueError),
    (lambda: ReadChannelMemory(8, 4, init=[256]), ValueError),
    (lambda: ReadChannelMemory(8, 4, storage="verilog", init=[1]), ValueError),
    (lambda: WriteChannelMemory(8, 4, idle=-0.1), ValueError),
    (lambda: ReadWriteChannelMemory(8, 4, backpressure=2), ValueError),
])
def test_parameter_errors(make, error):
    with pytest.raises(error):
        make()


def test_ports():
    read = ReadChannelMemory(8, 4)
    assert set(read.signature.members) == {"cmd", "data"}
    assert set(ReadChannelMemory(8, 4, storage="verilog").signature.members) == \
        {"cmd", "data", "load"}
    assert set(WriteChannelMemory(8, 4).signature.members) == {"wr"}
    assert set(WriteChannelMemory(8, 4, storage="verilog").signature.members) == {"wr"}
    assert set(ReadWriteChannelMemory(8, 4).signature.members) == {"cmd", "data", "wr"}
    assert read.memory is not None and ReadChannelMemory(8, 4, storage="verilog").memory is None


class ChannelSum(wiring.Component):
    """A read channel memory (Verilog leaf) and a tiny consumer: on ``start`` it sends
    the commands ``(addr0, count0)`` and ``(addr1, count1)``, takes the words with a
    fixed backpressure pattern, sums and counts them, and raises ``done`` when all
    arrived."""

    def __init__(self, width, depth, *, idle, seed):
        self.mem = ReadChannelMemory(width, depth, storage="verilog", idle=idle, seed=seed,
                                     load_file="words.bin")
        super().__init__({
            "start": In(1), "load": In(1),
            "addr0": In(32), "count0": In(24), "addr1": In(32), "count1": In(24),
            "done": Out(1), "beats": Out(24), "total": Out(width + 16),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = self.mem
        pending, now, expected = Signal(2), Signal(8), Signal(25)
        m.d.comb += [
            mem.load.eq(self.load),
            mem.cmd.valid.eq(pending != 0),
            mem.cmd.payload.addr.eq(Mux(pending == 2, self.addr0, self.addr1)),
            mem.cmd.payload.count.eq(Mux(pending == 2, self.count0, self.count1)),
            mem.data.ready.eq(~(now[1] & now[3])),          # a quarter of the cycles: not ready
        ]
        m.d.sync += now.eq(now + 1)
        with m.If(self.start):
            m.d.sync += [pending.eq(2), self.beats.eq(0), self.total.eq(0), self.done.eq(0),
                         expected.eq(self.count0 + self.count1)]
        with m.Else():
            with m.If(mem.cmd.valid & mem.cmd.ready):
                m.d.sync += pending.eq(pending - 1)
            with m.If(mem.data.valid & mem.data.ready):
                m.d.sync += [self.beats.eq(self.beats + 1),
                             self.total.eq(self.total + mem.data.payload)]
            m.d.sync += self.done.eq((pending == 0) & (self.beats == expected))
        return m


@pytest.mark.verilator
@pytest.mark.xdist_group("channels")
def test_verilator_read_channel_loaded_through_the_leaf_memory(tmp_path):
    """The host loads the leaf memory from a file, no Verilog regenerated; a consumer in
    the design sums the words of two queued commands (one wrapping past the end) through
    stalls on both sides (``sim/tb/channels.py`` checks the sum)."""
    from amaranth.back import verilog
    from cocotb_tools.runner import get_results

    from ternary_accel.hw.paths import build_path
    from ternary_accel.sim.harness import MEMORY_VERILOG
    from ternary_accel.sim.verilator import (VERILATOR_WAIVERS, build_cached,
                                             retry_text_busy)
    started = time.monotonic()
    width, depth = 72, 100                    # two stored parts a word, depth not 2**k
    build_dir = build_path("sim", "channel_sum").resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    top = build_dir / "channel_sum.v"
    text = verilog.convert(ChannelSum(width, depth, idle=0.3, seed=17), name="channel_sum",
                           emit_src=False)
    if not top.exists() or top.read_text() != text:
        top.write_text(text)
    leaf = build_dir / "harness_memory.v"
    if not leaf.exists() or leaf.read_text() != MEMORY_VERILOG:
        leaf.write_text(MEMORY_VERILOG)
    runner, _ = build_cached(sources=[leaf, top], hdl_toplevel="channel_sum",
                             build_dir=build_dir, build_args=list(VERILATOR_WAIVERS),
                             log_file=build_dir / "build.log")
    rng = random.Random(2)
    words = [rng.randrange(1 << width) for _ in range(depth)]
    job = {"words": words, "width": width, "commands": [[7, 40], [depth - 5, 30]]}
    results = tmp_path / "results.xml"
    try:
        retry_text_busy(lambda: runner.test(
            test_module="ternary_accel.sim.tb.channels", hdl_toplevel="channel_sum",
            build_dir=build_dir, test_dir=tmp_path, results_xml=str(results),
            extra_env={"TB_CHANNELS": json.dumps(job)}, log_file=tmp_path / "sim.log"))
    except SystemExit:
        pass
    assert results.exists(), (tmp_path / "sim.log").read_text()[-2000:]
    tests, failed = get_results(results)
    assert tests == 1 and failed == 0, (tmp_path / "sim.log").read_text()[-3000:]
    assert time.monotonic() - started < 300
