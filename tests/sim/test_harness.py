"""The memory-played harness of :mod:`sim.harness`: players and recorder under
``amaranth.sim`` (a counting payload through random stalls on both sides), the LFSR
against its Python model, and parameter checks. The harness around the engine runs
under Verilator in ``tests/test_engine.py``."""

import itertools

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

import numpy as np

from ternary_accel.sim.harness import (LFSR_TAPS, PART_BITS, EngineHarness, StreamPlayer, StreamRecorder,
                         join_parts, lfsr_next, lfsr_states, memory_image, parts_per_word,
                         stall_threshold)


class Loop(wiring.Component):
    """A player straight into a recorder."""

    def __init__(self, width, depth, res_depth):
        self.player = StreamPlayer(width=width, depth=depth)
        self.recorder = StreamRecorder(width=width, depth=res_depth)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.player = self.player
        m.submodules.recorder = self.recorder
        wiring.connect(m, self.player.o, self.recorder.i)
        return m


def descriptor_addresses(inner, middle, outer, middle_stride, outer_stride, depth):
    return [(t * outer_stride + r * middle_stride + c) % depth
            for t in range(outer) for r in range(middle) for c in range(inner)]


def run_loop(descriptor, idle, backpressure, *, depth=64, res_depth=256, seed=5,
             restart_after=None):
    """Play ``descriptor`` over a memory holding ``1000 + address`` and return the
    recorded words and the cycles until the last one."""
    dut = Loop(16, depth, res_depth)
    player, recorder = dut.player, dut.recorder
    expected = descriptor_addresses(*descriptor, depth)
    out = {}

    async def bench(ctx):
        for address in range(depth):
            ctx.set(player.memory.data[address], 1000 + address)
        for name, value in zip(("inner", "middle", "outer", "middle_stride",
                                "outer_stride"), descriptor):
            ctx.set(getattr(player, name), value)
        ctx.set(player.idle, stall_threshold(idle))
        ctx.set(player.seed, seed)
        ctx.set(recorder.backpressure, stall_threshold(backpressure))
        ctx.set(recorder.seed, seed * 7 + 1)
        for restart in range(2 if restart_after else 1):
            ctx.set(player.start, 1)
            ctx.set(recorder.start, 1)
            await ctx.tick()
            ctx.set(player.start, 0)
            ctx.set(recorder.start, 0)
            cycles = 0
            limit = restart_after if restart == 0 and restart_after else 20 * len(expected) + 50
            while ctx.get(recorder.count) < len(expected) and cycles < limit:
                await ctx.tick()
                cycles += 1
        for _ in range(5):   # nothing more arrives
            await ctx.tick()
        count = ctx.get(recorder.count)
        out["words"] = [ctx.get(recorder.memory.data[i]) for i in range(min(count, res_depth))]
        out["count"] = count
        out["cycles"] = cycles
        out["busy"] = ctx.get(player.busy)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return out, [1000 + a for a in expected]


@pytest.mark.parametrize("descriptor", [
    (5, 1, 1, 0, 0),        # a plain run
    (4, 3, 2, 0, 4),        # activations: a token's beats replayed per row tile
    (4, 3, 2, 4, 0),        # weights: a layer's beats replayed per token
    (3, 2, 3, 5, 17),       # both strides, gaps between the runs
    (7, 3, 4, 20, 30),      # addresses wrap modulo the depth
])
@pytest.mark.parametrize("idle, backpressure", [(0, 0), (0.4, 0), (0, 0.5), (0.3, 0.6)])
def test_player_to_recorder_loses_duplicates_and_reorders_nothing(descriptor, idle,
                                                                   backpressure):
    out, expected = run_loop(descriptor, idle, backpressure)
    assert out["count"] == len(expected)
    assert out["words"] == expected
    assert not out["busy"]
    if idle == backpressure == 0:  # one word per cycle, after the read latency
        assert out["cycles"] == len(expected) + 1


@pytest.mark.parametrize("descriptor", [(0, 3, 2, 0, 0), (4, 0, 2, 0, 0), (4, 3, 0, 0, 0)])
def test_a_zero_count_plays_nothing(descriptor):
    out, expected = run_loop(descriptor, 0, 0)
    assert expected == [] and out["count"] == 0 and not out["busy"]


def test_start_in_the_middle_restarts_the_run():
    out, expected = run_loop((6, 4, 2, 6, 0), 0.2, 0.2, restart_after=9)
    assert out["words"] == expected


def test_lfsr_is_maximal_on_its_low_bits_and_stalls_at_the_rate_asked():
    # the Python model; test_rtl_lfsr_follows_the_python_model checks the RTL against it
    states = lfsr_states(0x1234, 1 << 16)
    assert len(set(states)) == len(states)
    assert lfsr_next(1) == LFSR_TAPS
    for probability in (0.1, 0.5, 0.9):
        threshold = stall_threshold(probability)
        rate = sum((s & 0xFF) < threshold for s in states) / len(states)
        assert abs(rate - probability) < 0.01


def test_rtl_lfsr_follows_the_python_model():
    """The recorder is ready exactly on the cycles the Python LFSR does not stall."""
    rec = StreamRecorder(width=8, depth=4)
    threshold, seed, cycles = stall_threshold(0.5), 0xBEEF, 300
    seen = []

    async def bench(ctx):
        ctx.set(rec.backpressure, threshold)
        ctx.set(rec.seed, seed)
        ctx.set(rec.start, 1)
        await ctx.tick()
        ctx.set(rec.start, 0)
        for _ in range(cycles):
            seen.append(ctx.get(rec.i.ready))
            await ctx.tick()

    sim = Simulator(rec)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    model = [int((s & 0xFF) >= threshold) for s in lfsr_states(seed, cycles)]
    assert seen == model


@pytest.mark.parametrize("width", [1, 63, 64, 65, 257, 824])
def test_memory_image_round_trips_through_the_part_layout(width):
    """The bytes the Verilog leaf $freads: each word as 64-bit parts, least significant
    part first, each part big-endian; from ints and from little-endian byte rows."""
    rng = np.random.default_rng(width)
    words = [int(rng.integers(0, 1 << 62)) << max(0, width - 62) & ((1 << width) - 1)
             for _ in range(5)] + [(1 << width) - 1, 0]
    image = memory_image(words, width)
    part = PART_BITS // 8
    assert len(image) == len(words) * parts_per_word(width) * part
    parts = [int.from_bytes(image[i:i + part], "big") for i in range(0, len(image), part)]
    assert join_parts(parts, width) == words
    rows = np.array([list(w.to_bytes(-(-width // 8), "little")) for w in words],
                    dtype=np.uint8)
    assert memory_image(rows, width) == image


def test_engine_harness_checks_its_parameters():
    with pytest.raises(ValueError, match="storage must be one of"):
        StreamPlayer(width=8, depth=4, storage="sram")
    with pytest.raises(ValueError, match="depth"):
        EngineHarness(act_depth=1, wgt_depth=4, res_depth=4, lanes=4, rows=1)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("kwargs, error", [
    ({"width": 0, "depth": 4}, ValueError),
    ({"width": 8, "depth": 1}, ValueError),
    ({"width": 8, "depth": 4.0}, TypeError),
])
def test_parameter_errors(kwargs, error):
    for cls in (StreamPlayer, StreamRecorder):
        with pytest.raises(error):
            cls(**kwargs)


def test_stall_threshold_checks_its_probability():
    assert stall_threshold(0) == 0 and stall_threshold(0.5) == 128
    assert stall_threshold(0.999) == 255
    for bad in (-0.1, 1.0, 2):
        with pytest.raises(ValueError, match="probability"):
            stall_threshold(bad)


def test_descriptor_model_sanity():
    assert descriptor_addresses(2, 2, 2, 0, 2, 16) == [0, 1, 0, 1, 2, 3, 2, 3]
    assert list(itertools.islice(descriptor_addresses(2, 2, 2, 2, 0, 16), 4)) == [0, 1, 2, 3]
