"""Fast unit tests of the Amaranth components under ``amaranth.sim``."""

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from streams import as_ints, stall_count, stream_put, stream_record

from ternary_accel.hw.rtl.lanes import DotProduct
from ternary_accel.hw.rtl.matmul import MatmulUnit
from ternary_accel.model.arith import acc_width, act_range, matmul_int, round_fixed
from ternary_accel.model.encoding import (CODE_INVALID, CODE_POS, decode_lane_codes, encode_binary_codes,
                            encode_lane_codes)
from ternary_accel.model.quant import BINARY, TERNARY


@pytest.mark.parametrize("kwargs, error", [
    ({"lanes": 0, "rows": 1}, ValueError),
    ({"lanes": 4.0, "rows": 1}, TypeError),
    ({"lanes": 4, "rows": -2}, ValueError),
    ({"lanes": 4, "rows": True}, TypeError),
    ({"lanes": 4, "rows": 1, "weight_mode": "int4"}, ValueError),
    ({"lanes": 4, "rows": 1, "weight_mode": 3}, TypeError),
    ({"lanes": 4, "rows": 1, "output_stage": 1}, TypeError),
    ({"lanes": 4, "rows": 1, "max_beats": 0}, ValueError),
    ({"lanes": 4, "rows": 1, "levels_per_stage": 0}, ValueError),
    ({"lanes": 4, "rows": 1, "fabric": "xilinx"}, ValueError),
    ({"lanes": 4, "rows": 1, "fabric": None}, TypeError),
])
def test_matmul_parameter_errors(kwargs, error):
    with pytest.raises(error):
        MatmulUnit(**kwargs)


def test_dot_product_parameter_errors():
    with pytest.raises(ValueError, match="lanes"):
        DotProduct(lanes=0)
    with pytest.raises(TypeError, match="levels_per_stage"):
        DotProduct(lanes=4, levels_per_stage="2")
    with pytest.raises(ValueError, match="fabric must be one of generic, ecp5"):
        DotProduct(lanes=4, fabric="ECP5")


@pytest.mark.parametrize("fabric", ["generic", "ecp5"])
def test_dot_product_without_the_invalid_flag(fabric):
    """As the unit builds its lane groups: no ``invalid`` port, the same sum (the ECP5
    build elaborates; its arithmetic is proved equal to the generic one in test_fpga)."""
    with pytest.raises(TypeError, match="invalid_flag"):
        DotProduct(lanes=4, invalid_flag=1)
    dut = DotProduct(lanes=5, invalid_flag=False, fabric=fabric)
    Fragment.get(dut, None)
    assert not dut.invalid_flag and not hasattr(dut, "invalid")
    assert DotProduct(lanes=5).invalid_flag and hasattr(DotProduct(lanes=5), "invalid")
    if fabric != "generic":
        return
    rng = np.random.default_rng(3)
    acts = rng.integers(-128, 128, size=(20, 5))
    weights = rng.integers(-1, 2, size=(20, 5))
    codes = encode_lane_codes(weights)
    got = []

    async def bench(ctx):
        ctx.set(dut.en, 1)
        for i in range(len(acts) + dut.latency):
            if i < len(acts):
                ctx.set(dut.activations, [int(a) for a in acts[i]])
                ctx.set(dut.codes, [int(c) for c in codes[i]])
            await ctx.tick()
            if i >= dut.latency - 1:
                got.append(ctx.get(dut.sum) + ctx.get(dut.carry))

    _run(dut, bench)
    assert got[:len(acts)] == (acts * weights).sum(axis=1).tolist()


@pytest.mark.parametrize("lanes, levels_per_stage, tree", [
    (1, 1, 1), (2, 1, 1), (4, 1, 2), (5, 1, 3), (16, 1, 4), (16, 2, 2), (16, 4, 1),
    (64, 1, 6), (64, 3, 2),
])
@pytest.mark.parametrize("carry_out", [False, True])
def test_dot_product_latency(lanes, levels_per_stage, tree, carry_out):
    dut = DotProduct(lanes=lanes, levels_per_stage=levels_per_stage, carry_out=carry_out)
    Fragment.get(dut, None)  # elaborates: every width and register count is consistent
    # the final correction stage counts unless the carry is handed out
    assert dut.latency == tree + (0 if carry_out else 1)
    assert dut.sum_width == acc_width(lanes)


def test_widths_derive_from_k():
    unit = MatmulUnit(lanes=16, rows=8, max_beats=160)
    Fragment.get(unit, None)
    assert unit.acc_width == acc_width(16 * 160)
    assert unit.res_width == unit.acc_width
    assert len(unit.res.payload.as_value()) == 8 * unit.acc_width
    scaled = MatmulUnit(lanes=16, rows=8, output_stage=True)
    Fragment.get(scaled, None)
    assert scaled.res_width == 16


def _run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("lanes", [1, 3, 8, 13])
@pytest.mark.parametrize("weight_mode", [TERNARY, BINARY])
@pytest.mark.parametrize("levels_per_stage", [1, 2])
@pytest.mark.parametrize("carry_out", [False, True])
def test_dot_product_exact(lanes, weight_mode, levels_per_stage, carry_out):
    rng = np.random.default_rng(lanes)
    dut = DotProduct(lanes=lanes, weight_mode=weight_mode, levels_per_stage=levels_per_stage,
                     carry_out=carry_out)
    count = 40
    acts = rng.integers(-128, 128, size=(count, lanes))
    acts[0] = -128
    acts[1] = 127
    if weight_mode == TERNARY:
        weights = rng.integers(-1, 2, size=(count, lanes))
        weights[0] = -1
        codes = encode_lane_codes(weights)
        codes[5, 0] = CODE_INVALID  # the hardware uses 0 for it
        weights = decode_lane_codes(codes, strict=False)
    else:
        weights = rng.choice((-1, 1), size=(count, lanes))
        weights[0] = -1
        codes = encode_binary_codes(weights)
    expected = (acts * weights).sum(axis=1)
    got, invalid = [], []

    async def bench(ctx):
        ctx.set(dut.en, 1)
        for i in range(count + dut.latency):
            if i < count:
                ctx.set(dut.activations, [int(a) for a in acts[i]])
                ctx.set(dut.codes, [int(c) for c in codes[i]])
                invalid.append(ctx.get(dut.invalid))
            await ctx.tick()
            if i >= dut.latency - 1:
                got.append(ctx.get(dut.sum) + ctx.get(dut.carry))
        # en low holds the pipeline
        ctx.set(dut.en, 0)
        held = ctx.get(dut.sum)
        assert carry_out or ctx.get(dut.carry) == 0
        ctx.set(dut.activations, [0] * lanes)
        for _ in range(3):
            await ctx.tick()
            assert ctx.get(dut.sum) == held

    _run(dut, bench)
    assert got[:count] == expected.tolist()
    assert expected[0] == 128 * lanes
    assert invalid[5] == (weight_mode == TERNARY)
    assert sum(invalid) == (1 if weight_mode == TERNARY else 0)


@pytest.mark.parametrize("output_stage", [False, True])
@pytest.mark.parametrize("act_width", [8, 4])
def test_matmul_unit_streams(output_stage, act_width):
    """Random valid/ready on all three streams; results in order and exact."""
    lanes, rows = 4, 3
    dut = MatmulUnit(lanes=lanes, rows=rows, output_stage=output_stage, max_beats=4,
                     act_width=act_width)
    rng = np.random.default_rng(9)
    lo, hi = act_range(act_width)
    vectors = []
    for _ in range(12):
        beats = int(rng.integers(1, 5))
        acts = rng.integers(lo, hi + 1, size=(beats, lanes))
        weights = rng.integers(-1, 2, size=(beats, rows, lanes))
        scale, shift = int(rng.integers(0, 1 << 16)), int(rng.integers(8, 20))
        acc = sum(matmul_int(weights[b], acts[b], act_width=act_width) for b in range(beats))
        want = round_fixed(acc, scale, shift) if output_stage else acc
        vectors.append((acts, encode_lane_codes(weights), scale, shift, want.tolist()))
    got = []

    async def producer(ctx):
        act_beats = []
        wgt_beats = []
        for acts, codes, scale, shift, _ in vectors:
            for b in range(acts.shape[0]):
                payload = {"data": [int(a) for a in acts[b]], "last": int(b == acts.shape[0] - 1)}
                if output_stage:
                    payload.update(scale=scale, shift=shift)
                act_beats.append(payload)
                wgt_beats.append([[int(c) for c in row] for row in codes[b]])
        for act, wgt in zip(act_beats, wgt_beats):
            await stream_put(ctx, (dut.act, dut.wgt), (act, wgt), idle=stall_count(rng, 0.3))

    async def consumer(ctx):
        await stream_record(ctx, dut.res, got, lambda: len(got) == len(vectors),
                            ready=lambda: int(rng.random() < 0.6), convert=as_ints)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer, background=True)
    sim.add_testbench(consumer)
    sim.run()
    assert got == [v[4] for v in vectors]


@pytest.mark.parametrize("lanes, rows", [(1, 1), (4, 1), (5, 3), (16, 8), (32, 16)])
def test_code_flag_latency(lanes, rows):
    """error.code rises exactly code_flag_latency cycles after the one beat (of many
    clean ones) whose last lane of the last row carries the unused code, and stays."""
    dut = MatmulUnit(lanes=lanes, rows=rows, max_beats=4)
    codes = [[CODE_POS] * lanes for _ in range(rows)]
    bad = [row[:] for row in codes]
    bad[-1][-1] = CODE_INVALID
    seen = []

    async def bench(ctx):
        ctx.set(dut.res.ready, 1)
        ctx.set(dut.act.payload, {"data": [1] * lanes, "last": 1})
        ctx.set(dut.act.valid, 1)
        ctx.set(dut.wgt.valid, 1)
        for beat in range(12):
            ctx.set(dut.wgt.payload, bad if beat == 3 else codes)
            assert ctx.get(dut.act.ready)
            await ctx.tick()
            seen.append(ctx.get(dut.error.code))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    # after the edge ending beat 3, one more cycle per register of the flag path
    first = 3 + dut.code_flag_latency - 1
    assert seen == [0] * first + [1] * (12 - first)
