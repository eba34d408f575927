"""int4 activations (BitNet a4.8, ``act_width=4``): the exact model, the two-per-byte
packing, and the lane groups and unit under ``amaranth.sim``, exhaustive where small."""

import itertools

import numpy as np
import pytest
from amaranth.hdl import Fragment, signed
from amaranth.lib import data
from amaranth.sim import Simulator

from ternary_accel.hw.rtl.engine import LayerEngine
from ternary_accel.hw.rtl.lanes import DotProduct
from ternary_accel.hw.rtl.matmul import MatmulUnit, act_layout
from ternary_accel.model.arith import (acc_width, act_range, check_act_width, check_activations,
                         matmul_int, term_magnitude)
from ternary_accel.model.encoding import (CODE_INVALID, CODE_NEG, CODE_POS, CODE_ZERO, decode_lane_codes,
                            pack_int4, unpack_int4)
from ternary_accel.model.quant import ACT_WIDTHS, BINARY, TERNARY


# The exact model.

def test_act_widths_and_ranges():
    assert ACT_WIDTHS == (4, 8)
    assert act_range(4) == (-8, 7) and act_range(8) == (-128, 127) == act_range()
    assert term_magnitude(TERNARY, 4) == 8 and term_magnitude(BINARY, 4) == 8
    assert term_magnitude(TERNARY) == 128


@pytest.mark.parametrize("value, error", [(6, ValueError), (16, ValueError), (0, ValueError),
                                          ("4", TypeError), (True, TypeError),
                                          (4.0, TypeError)])
def test_check_act_width_errors(value, error):
    with pytest.raises(error, match="act_width"):
        check_act_width(value)


@pytest.mark.parametrize("act_width", ACT_WIDTHS)
def test_acc_width_holds_every_sum(act_width):
    """For K = 1..300 the width holds +-K * 2**(act_width-1) and nothing narrower does."""
    lo, hi = act_range(act_width)
    for terms in range(1, 301):
        width = acc_width(terms, TERNARY, act_width)
        extreme = terms * -lo                      # -1 * (-8) * K, the largest |sum|
        assert -(1 << (width - 1)) <= -extreme and extreme <= (1 << (width - 1)) - 1
        assert extreme > (1 << (width - 2)) - 1    # one bit less overflows
    assert acc_width(32, TERNARY, 4) == acc_width(32) - 4


def test_check_activations_int4():
    assert check_activations([-8, 7], act_width=4).tolist() == [-8, 7]
    for bad in ([8], [-9], [127]):
        with pytest.raises(ValueError, match=r"int4 \(-8\.\.7\)"):
            check_activations(bad, act_width=4)
    with pytest.raises(ValueError, match="act_width"):
        check_activations([1], act_width=2)


def test_matmul_int_int4_exhaustive_pairs():
    """Every pair of int4 activations against every pair of ternary weights."""
    acts = np.array(list(itertools.product(range(-8, 8), repeat=2)))
    weights = np.array(list(itertools.product((-1, 0, 1), repeat=2)))
    got = matmul_int(weights, acts, TERNARY, act_width=4)
    assert np.array_equal(got, acts @ weights.T)
    with pytest.raises(ValueError, match="int4"):
        matmul_int(weights, acts + 1, act_width=4)


# Two int4 per byte.

def test_unpack_every_byte_and_pack_back():
    every = np.arange(256)
    values = unpack_int4(every, 512).reshape(256, 2)
    low, high = every & 0xF, every >> 4
    assert np.array_equal(values[:, 0], np.where(low > 7, low - 16, low))
    assert np.array_equal(values[:, 1], np.where(high > 7, high - 16, high))
    assert values.min() == -8 and values.max() == 7
    assert np.array_equal(pack_int4(values), every)


def test_pack_every_pair_and_odd_counts():
    pairs = np.array(list(itertools.product(range(-8, 8), repeat=2)))
    packed = pack_int4(pairs)
    assert packed.dtype == np.uint8 and len(np.unique(packed)) == 256
    assert pack_int4([-8, 7]).tolist() == [0x78] and pack_int4([1, -1]).tolist() == [0xF1]
    for count in range(0, 8):
        values = np.arange(count) % 16 - 8
        packed = pack_int4(values)
        assert len(packed) == (count + 1) // 2
        assert np.array_equal(unpack_int4(packed, count), values)


@pytest.mark.parametrize("values, message", [
    ([0, 8], "value 8 at index 1"), ([-9], "value -9 at index 0"),
    ([0.5], "non-integer"), ([[1, 2], [3, 200]], "value 200 at index 3"),
])
def test_pack_int4_errors(values, message):
    with pytest.raises(ValueError, match=message):
        pack_int4(values)


@pytest.mark.parametrize("packed, count, message", [
    ([256], 2, "0..255"), ([-1], 2, "0..255"), ([1, 2], 2, "take 1 bytes, not 2"),
    ([1], 3, "take 2 bytes, not 1"), ([0x10], 1, "padding nibble"), ([1], -1, "count"),
])
def test_unpack_int4_errors(packed, count, message):
    with pytest.raises(ValueError, match=message):
        unpack_int4(packed, count)


def test_pack_int4_is_the_beat_layout():
    """The activation beat of an int4 unit is pack_int4 of its lanes, byte 0 lowest."""
    rng = np.random.default_rng(4)
    layout = data.ArrayLayout(signed(4), 10)
    assert act_layout(10, False, 4).members["data"] == layout
    for _ in range(20):
        values = rng.integers(-8, 8, size=10)
        bits = layout.const([int(v) for v in values]).as_bits()
        assert bits == int.from_bytes(bytes(pack_int4(values)), "little")


# The RTL.

@pytest.mark.parametrize("build", [
    lambda: DotProduct(lanes=4, act_width=6), lambda: DotProduct(lanes=4, act_width="4"),
    lambda: DotProduct(lanes=4, weight_mode="int8", act_width=4),
    lambda: MatmulUnit(lanes=4, rows=1, act_width=True),
    lambda: MatmulUnit(lanes=4, rows=1, weight_mode="int8", act_width=4),
    lambda: LayerEngine(lanes=4, rows=1, act_width=2),
])
def test_act_width_parameter_errors(build):
    with pytest.raises((TypeError, ValueError), match="act_width"):
        build()


@pytest.mark.parametrize("fabric", ["generic", "ecp5"])
def test_int4_widths(fabric):
    group = DotProduct(lanes=32, act_width=4, fabric=fabric)
    Fragment.get(group, None)
    assert group.act_width == 4 and group.sum_width == acc_width(32, TERNARY, 4) == 10
    assert len(group.activations.as_value()) == 32 * 4
    unit = MatmulUnit(lanes=16, rows=4, max_beats=8, act_width=4, fabric=fabric)
    Fragment.get(unit, None)
    assert unit.acc_width == acc_width(16 * 8, TERNARY, 4) == 12
    assert len(unit.act.payload.data.as_value()) == 64
    engine = LayerEngine(lanes=16, rows=4, act_width=4, fabric=fabric)
    Fragment.get(engine, None)
    assert engine.act_width == 4 and len(engine.act.payload.data.as_value()) == 64


def _exhaustive_inputs(lanes, weight_mode):
    """Every combination of int4 activations and codes (ternary: with the unused one)."""
    codes = ((CODE_ZERO, CODE_POS, CODE_NEG, CODE_INVALID) if weight_mode == TERNARY
             else (0, 1))
    combos = list(itertools.product(itertools.product(range(-8, 8), repeat=lanes),
                                    itertools.product(codes, repeat=lanes)))
    acts = np.array([a for a, _ in combos]).reshape(-1, lanes)
    code = np.array([c for _, c in combos]).reshape(-1, lanes)
    if weight_mode == TERNARY:
        weights = decode_lane_codes(code, strict=False)
    else:
        weights = 2 * code - 1
    return acts, code, (acts * weights).sum(axis=1)


@pytest.mark.parametrize("lanes", [1, 2])
@pytest.mark.parametrize("weight_mode", [TERNARY, BINARY])
@pytest.mark.parametrize("carry_out", [False, True])
def test_int4_dot_product_exhaustive(lanes, weight_mode, carry_out):
    """Every input of a 1- or 2-lane int4 group, one per cycle through the pipeline."""
    acts, codes, expected = _exhaustive_inputs(lanes, weight_mode)
    dut = DotProduct(lanes=lanes, weight_mode=weight_mode, carry_out=carry_out, act_width=4)
    got, invalid = [], []

    async def bench(ctx):
        ctx.set(dut.en, 1)
        for i in range(len(acts) + dut.latency):
            if i < len(acts):
                ctx.set(dut.activations, [int(a) for a in acts[i]])
                ctx.set(dut.codes, [int(c) for c in codes[i]])
                invalid.append(ctx.get(dut.invalid))
            await ctx.tick()
            if i >= dut.latency - 1:
                got.append(ctx.get(dut.sum) + ctx.get(dut.carry))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert got[:len(acts)] == expected.tolist()
    want_invalid = (codes == CODE_INVALID).any(axis=1) if weight_mode == TERNARY else \
        np.zeros(len(codes), dtype=bool)
    assert invalid == want_invalid.tolist()


@pytest.mark.parametrize("lanes, weight_mode", [(5, TERNARY), (7, BINARY), (16, TERNARY)])
def test_int4_dot_product_random_and_extremes(lanes, weight_mode):
    rng = np.random.default_rng(lanes)
    count = 60
    acts = rng.integers(-8, 8, size=(count, lanes))
    acts[:4] = [[-8], [7], [-8], [7]]
    signs = rng.choice((-1, 1), size=(count, lanes))
    signs[:4] = [[-1], [-1], [1], [1]]
    if weight_mode == TERNARY:
        weights = np.where(rng.random((count, lanes)) < 0.3, 0, signs)
        weights[:4] = signs[:4]
        from ternary_accel.model.encoding import encode_lane_codes
        codes = encode_lane_codes(weights)
    else:
        weights = signs
        codes = (weights + 1) // 2
    expected = (acts * weights).sum(axis=1)
    assert expected[0] == 8 * lanes and expected[2] == -8 * lanes
    dut = DotProduct(lanes=lanes, weight_mode=weight_mode, levels_per_stage=2, act_width=4)
    got = []

    async def bench(ctx):
        ctx.set(dut.en, 1)
        for i in range(count + dut.latency):
            if i < count:
                ctx.set(dut.activations, [int(a) for a in acts[i]])
                ctx.set(dut.codes, [int(c) for c in codes[i]])
            await ctx.tick()
            if i >= dut.latency - 1:
                got.append(ctx.get(dut.sum))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert got[:count] == expected.tolist()


def test_engine_config_int4_inputs():
    """The layer driver checks int4 ranges and packs two activations per byte."""
    from ternary_accel.hw.params import EngineParams
    from ternary_accel.sim.plans import plan_layer
    config = EngineParams(lanes=8, rows=4, act_width=4, output_stage=False)
    assert config.name.endswith("_a4") and LayerEngine(config).act_width == 4
    weights = np.ones((4, 16), dtype=np.int64)
    plan = plan_layer(weights, np.full((2, 16), -8), config=config)
    beat = act_layout(8, False, 4).const({"data": [-8] * 8, "last": 0}).as_bits()
    assert plan.token_words[0] == beat
    with pytest.raises(ValueError, match=r"int4 \(-8\.\.7\)"):
        plan_layer(weights, np.full((2, 16), 8), config=config)
    assert EngineParams().act_width == 8 and not EngineParams().name.endswith("_a4")


@pytest.mark.verilator
@pytest.mark.xdist_group("engine_a4")
def test_int4_engine_on_the_memory_bench():
    """An int4 layer engine under Verilator, streams played from memories with random
    stalls: every accumulator equals the golden model's, at the corners (all -8, all 7,
    alternating) and on random int4 tokens; without stalls the cycles are the model's."""
    from ternary_accel.hw.params import EngineParams
    from ternary_accel.sim.session import EngineSession
    config = EngineParams(lanes=8, rows=4, act_width=4, max_beats=8, output_stage=False)
    rng = np.random.default_rng(11)
    weights = rng.integers(-1, 2, size=(12, 64)).astype(np.int8)
    weights[0], weights[1] = 1, -1              # the accumulator extremes: +-8 * 64
    tokens = np.concatenate([np.full((1, 64), -8), np.full((1, 64), 7),
                             np.tile([-8, 7], (1, 32)), rng.integers(-8, 8, size=(3, 64))])
    golden = matmul_int(weights, tokens, act_width=4)
    assert golden[0, 0] == -512 and golden[0, 1] == 512 and golden[1, 0] == 448
    with EngineSession(config, idle=0.2, backpressure=0.2, seed=3) as session:
        result = session.run(weights, tokens)
    assert result.error == 0 and np.array_equal(result.outputs, golden)
    with EngineSession(config) as session:
        result = session.run(weights, tokens)
    assert np.array_equal(result.outputs, golden) and result.cycles == result.predicted
