"""The matmul unit's accumulator bank (``acc_tiles``): dot products of several row
tiles interleaved beat by beat (the beat-major order of :mod:`model.sparse`), checked in
the Amaranth simulator against the golden model, every result word."""

import numpy as np
import pytest
from amaranth.hdl import ResetInserter, Signal
from amaranth.sim import Simulator

from ternary_accel.hw.rtl.matmul import MatmulUnit
from ternary_accel.model.arith import matmul_int, round_fixed
from ternary_accel.model.encoding import encode_lane_codes

LANES, ROWS, ACC_TILES, MAX_BEATS = 4, 3, 8, 4


def layer(rng, tiles, rounds, output_stage):
    """One layer in beat-major order: ``rounds`` beats per dot product, each beat's
    activations shared by the ``tiles`` tiles; the expected results in tile order."""
    acts = rng.integers(-128, 128, size=(rounds, LANES))
    weights = rng.integers(-1, 2, size=(tiles, rounds, ROWS, LANES))
    scale, shift = int(rng.integers(0, 1 << 16)), int(rng.integers(8, 20))
    beats, want = [], []
    for r in range(rounds):
        for t in range(tiles):
            act = {"data": [int(a) for a in acts[r]], "last": int(r == rounds - 1)}
            if output_stage:
                act.update(scale=scale, shift=shift)
            beats.append((act, encode_lane_codes(weights[t, r]).tolist()))
    for t in range(tiles):
        acc = sum(matmul_int(weights[t, r], acts[r]) for r in range(rounds))
        want.append((round_fixed(acc, scale, shift) if output_stage else acc).tolist())
    return beats, want


def simulate(layers, output_stage, *, stall=0.3, reset_after=None, seed=1):
    """Stream ``layers`` ((tiles, beats, want) each) with random stalls on every stream;
    ``reset_after = (layer, n)``: after ``n`` beats of that layer (before its last
    round) pulse the reset and go on with the next layer; that layer's results are then
    not expected. Returns the results, the expected ones and the error flags."""
    unit = MatmulUnit(lanes=LANES, rows=ROWS, output_stage=output_stage,
                      max_beats=MAX_BEATS, acc_tiles=ACC_TILES)
    rst = Signal()
    dut = ResetInserter({"sync": rst})(unit)
    rng = np.random.default_rng(seed)
    kept = [i for i in range(len(layers)) if reset_after is None or i != reset_after[0]]
    expected = [w for i in kept for w in layers[i][2]]
    got, flags = [], {}

    async def producer(ctx):
        owed = 0
        for index, (tiles, beats, want) in enumerate(layers):
            while len(got) < owed:                   # the layer before has drained
                await ctx.tick()
            ctx.set(unit.tiles, tiles)
            for n, (act, wgt) in enumerate(beats):
                if reset_after == (index, n):
                    ctx.set(rst, 1)
                    await ctx.tick().repeat(2)
                    ctx.set(rst, 0)
                    break
                while rng.random() < stall:
                    await ctx.tick()
                ctx.set(unit.act.payload, act)
                ctx.set(unit.wgt.payload, wgt)
                ctx.set(unit.act.valid, 1)
                ctx.set(unit.wgt.valid, 1)
                await ctx.tick().until(unit.act.ready)
                ctx.set(unit.act.valid, 0)
                ctx.set(unit.wgt.valid, 0)
            else:
                owed += len(want)

    async def consumer(ctx):
        async for _, _, valid, ready, payload in ctx.tick().sample(
                unit.res.valid, unit.res.ready, unit.res.payload):
            if valid and ready:
                got.append([int(v) for v in payload])
            ctx.set(unit.res.ready, int(rng.random() >= stall))
            if len(got) == len(expected):
                break
        await ctx.tick().repeat(4)
        flags["code"] = ctx.get(unit.error.code)
        flags["overflow"] = ctx.get(unit.error.overflow)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer, background=True)
    sim.add_testbench(consumer)
    sim.run()
    return got, expected, flags


@pytest.mark.parametrize("output_stage", [False, True])
def test_interleaved_tiles_exact(output_stage):
    """Layers of 1, 3 and 8 tiles (1..4 rounds), back to back, random stalls."""
    rng = np.random.default_rng(4)
    layers = []
    for tiles, rounds in ((3, 2), (1, 4), (8, 1), (3, 3), (8, 4), (2, 1)):
        beats, want = layer(rng, tiles, rounds, output_stage)
        layers.append((tiles, beats, want))
    got, expected, flags = simulate(layers, output_stage)
    assert got == expected
    assert flags == {"code": 0, "overflow": 0}


def test_reset_mid_layer_leaves_nothing_stale():
    """A reset in the middle of a layer (partial sums in the bank, tiles counted part
    way): the next layer's results are exact."""
    rng = np.random.default_rng(7)
    layers = []
    for tiles, rounds in ((3, 2), (5, 3), (3, 2), (4, 4)):
        beats, want = layer(rng, tiles, rounds, True)
        layers.append((tiles, beats, want))
    got, expected, flags = simulate(layers, True, reset_after=(1, 7))
    assert got == expected
    assert flags == {"code": 0, "overflow": 0}


def test_zero_tiles_counts_as_one():
    rng = np.random.default_rng(5)
    beats, want = layer(rng, 1, 3, False)
    got, expected, _ = simulate([(0, beats, want)], False)
    assert got == expected


def test_overflow_counts_rounds():
    """MAX_BEATS rounds of 3 tiles are fine; one more round raises overflow."""
    rng = np.random.default_rng(6)
    ok_beats, ok_want = layer(rng, 3, MAX_BEATS, False)
    got, expected, flags = simulate([(3, ok_beats, ok_want)], False, stall=0)
    assert got == expected and flags["overflow"] == 0
    long_beats, long_want = layer(rng, 3, MAX_BEATS + 1, False)
    _, _, flags = simulate([(3, long_beats, long_want)], False, stall=0)
    assert flags["overflow"] == 1


def test_unit_without_bank_has_no_tiles_port():
    assert "tiles" not in MatmulUnit(lanes=4, rows=2).signature.members
    with pytest.raises(ValueError, match="acc_tiles"):
        MatmulUnit(lanes=4, rows=2, acc_tiles=0)
