"""cocotb regression of :class:`hw.matmul.MatmulUnit` against :mod:`model`.

The design configuration comes from the ``TB_CONFIG`` environment variable (JSON of
:class:`sim.config.UnitParams`), set by :mod:`sim.runner`.
"""

import os

import numpy as np
import cocotb
from cocotb.triggers import ClockCycles

from ternary_accel.model.arith import SHIFT_MAX, SCALE_WIDTH, OUT_WIDTH
from ternary_accel.model.bitlinear import BitLinearResult, bitlinear_fixed, bitlinear_reference
from ternary_accel.model.encoding import CODE_INVALID
from ternary_accel.model.arith import matmul_int
from ternary_accel.model.quant import ACT_WIDTH, TERNARY, quantize_activations_int4, quantize_weights


from ternary_accel.sim.tb.components import MatmulBench, Vector, codes_for
from ternary_accel.hw.params import UnitParams
from ternary_accel.hw.timing import result_cycles, stream_arrivals

CONFIG = UnitParams.from_json(os.environ.get("TB_CONFIG", "{}")) \
    if os.environ.get("TB_CONFIG") else None

#: (seed, idle probability on each input, backpressure probability on the output); the
#: last fills the result FIFO: inputs always valid, output ready one cycle in ten.
TRAFFIC = ((1, 0.3, 0.3), (2, 0.3, 0.3), (3, 0.3, 0.3), (4, 0.0, 0.9))


def random_weights(rng, config, beats):
    """(beats, rows, lanes) integer weights with whole rows of 0 / +1 / -1 mixed in."""
    if config.weight_mode == TERNARY:
        w = rng.integers(-1, 2, size=(beats, config.rows, config.lanes))
        specials = (0, 1, -1)
    else:
        w = rng.choice((-1, 1), size=(beats, config.rows, config.lanes))
        specials = (1, -1)
    for row in range(config.rows):
        if rng.random() < 0.3:
            w[:, row, :] = rng.choice(specials)
    return w


def random_activations(rng, config, beats):
    """(beats, lanes) activations of the configured width (int8, or int4), its minimum
    (-128, -8) and maximum (127, 7) always present when lanes >= 2."""
    act_min, act_max = config.act_range
    x = rng.integers(act_min, act_max + 1, size=(beats, config.lanes))
    corner = rng.random(size=x.shape)
    x[corner < 0.1] = act_min
    x[corner > 0.9] = act_max
    x.flat[0] = act_min
    x.flat[-1] = act_max
    if rng.random() < 0.1:
        x[:] = rng.choice((act_min, act_max, 0))
    return x


def random_scale(rng, config):
    """Output-stage (scale, shift): mostly near the saturation edge, sometimes anywhere."""
    scale = int(rng.integers(0, 1 << SCALE_WIDTH))
    pivot = config.acc_width + SCALE_WIDTH - OUT_WIDTH
    if rng.random() < 0.25:
        shift = int(rng.integers(0, SHIFT_MAX + 1))
    else:
        shift = int(np.clip(pivot + rng.integers(-3, 8), 0, SHIFT_MAX))
    return scale, shift


def random_vectors(rng, config, count, max_beats=None):
    max_beats = config.max_beats if max_beats is None else max_beats
    vectors = []
    for _ in range(count):
        beats = int(rng.integers(1, max_beats + 1))
        w = random_weights(rng, config, beats)
        scale, shift = random_scale(rng, config)
        vectors.append(Vector(random_activations(rng, config, beats),
                              codes_for(w, config.weight_mode), scale, shift))
    return vectors


def extreme_vectors(config):
    """Accumulator extremes: max_beats beats of the minimum activation (-128; -8 for
    int4) against all -1 (largest sum, 128 * K * max_beats) and all +1 (most negative),
    plus the maximum (127; 7) against each."""
    vectors = []
    beats, rows, lanes = config.max_beats, config.rows, config.lanes
    for x in config.act_range:
        for w in (-1, 1):
            acts = np.full((beats, lanes), x)
            weights = np.full((beats, rows, lanes), w)
            vectors.append(Vector(acts, codes_for(weights, config.weight_mode), 1, 0))
    return vectors


def corner_vectors(config):
    """Activation patterns: all minimum, all maximum, minimum and maximum alternating
    (both phases), each against random weights and whole rows of +1 / -1, one to
    max_beats beats."""
    rng = np.random.default_rng(99)
    act_min, act_max = config.act_range
    lanes = config.lanes
    alternating = np.where(np.arange(lanes) % 2 == 0, act_min, act_max)
    patterns = (np.full(lanes, act_min), np.full(lanes, act_max), alternating,
                act_min + act_max - alternating)
    vectors = []
    for beats in sorted({1, config.max_beats}):
        for pattern in patterns:
            acts = np.tile(pattern, (beats, 1))
            w = random_weights(rng, config, beats)
            w[:, 0, :] = 1
            w[:, -1, :] = -1  # (one row: all -1)
            vectors.append(Vector(acts, codes_for(w, config.weight_mode),
                                  *random_scale(rng, config)))
    return vectors


async def make_bench(dut, **traffic):
    bench = MatmulBench(dut, CONFIG, **traffic)
    await bench.start()
    return bench


def int4_reference(weights, activations, config):
    """:func:`bitlinear_reference` with the a4.8 INT4 absmean activation quantizer."""
    qw = quantize_weights(weights, config.weight_mode)
    qx = quantize_activations_int4(activations)
    acc = matmul_int(qw.values, qx.values, config.weight_mode, config.act_width)
    return BitLinearResult(qw.values, qx.values, qw.beta, qx.scale, acc,
                           acc / qx.scale[:, None] * qw.beta)


@cocotb.test()
async def test_random_traffic(dut):
    """Random matrices and vectors with corner cases, random idle cycles on both inputs
    and random backpressure on the output (up to a full result FIFO), several seeds;
    every word checked."""
    bench = await make_bench(dut)
    total_vectors = 0
    start = bench.cycle
    for seed, idle, backpressure in TRAFFIC:
        rng = np.random.default_rng(seed)
        bench.set_traffic(seed, idle=idle, backpressure=backpressure)
        vectors = (extreme_vectors(CONFIG) + corner_vectors(CONFIG) +
                   random_vectors(rng, CONFIG, 250))
        rng.shuffle(vectors)
        bench.send(vectors)
        await bench.wait_done()
        total_vectors += len(vectors)
    bench.scoreboard.assert_done()
    assert bench.scoreboard.checked == total_vectors
    assert bench.error_flags()["overflow"] == 0
    bench.record("random_traffic", total_vectors, bench.cycle - start)
    bench.stop()


@cocotb.test()
async def test_throughput(dut):
    """Always-valid inputs and always-ready output: N vectors of B beats take exactly
    N * B + latency cycles from the first beat to the last result (one beat a clock,
    no bubble between consecutive output vectors), or with a shared output stage the
    timing contract's last exit (:func:`hw.matmul.result_cycles`; a result every R
    cycles when B < R)."""
    bench = await make_bench(dut)
    rng = np.random.default_rng(7)
    for beats in (1, 3):
        await bench.reset()
        count = 32
        vectors = []
        for _ in range(count):
            w = random_weights(rng, CONFIG, beats)
            vectors.append(Vector(random_activations(rng, CONFIG, beats),
                                  codes_for(w, CONFIG.weight_mode),
                                  *random_scale(rng, CONFIG)))
        bench.act.first_transfer = None
        bench.send(vectors)
        await bench.wait_done()
        bench.scoreboard.assert_done()
        measured = bench.res.last_transfer - bench.act.first_transfer + 1
        arrivals = stream_arrivals([beats] * count)
        predicted = int(result_cycles(arrivals, CONFIG.latency,
                                      CONFIG.output_interval)[-1]) + 1
        dut._log.info("throughput: %d vectors x %d beats: %d cycles (predicted %d)",
                      count, beats, measured, predicted)
        assert measured == predicted, f"measured {measured} cycles, predicted {predicted}"
        bench.record(f"throughput_b{beats}", count, measured)
    bench.stop()


@cocotb.test()
async def test_reset_mid_transfer(dut):
    """Reset in the middle of a transfer drops the work in flight; the work after it is
    exact, and the sticky error flags are cleared."""
    bench = await make_bench(dut)
    rng = np.random.default_rng(11)
    bench.set_traffic(11, idle=0.2, backpressure=0.5)
    first = random_vectors(rng, CONFIG, 20, max_beats=CONFIG.max_beats + 2)
    bench.send(first)
    await ClockCycles(dut.clk, 40)
    assert bench.scoreboard.expected, "reset must happen while work is still in flight"
    checked_before = bench.scoreboard.checked
    await bench.reset(cycles=3)
    flags = bench.error_flags()
    assert flags == {"code": 0, "overflow": 0}, f"flags not cleared by reset: {flags}"
    after = random_vectors(rng, CONFIG, 30)
    bench.send(after)
    await bench.wait_done()
    bench.scoreboard.assert_done()
    assert bench.scoreboard.checked == checked_before + len(after)
    bench.record("reset_mid_transfer", bench.scoreboard.checked, bench.cycle)
    bench.stop()


@cocotb.test()
async def test_invalid_codes(dut):
    """The unused ternary code 0b10 acts as weight 0 and raises the sticky error.code
    flag; binary codes are all valid and never raise it."""
    bench = await make_bench(dut)
    rng = np.random.default_rng(5)
    bench.set_traffic(5, idle=0.2, backpressure=0.2)
    clean = random_vectors(rng, CONFIG, 10)
    bench.send(clean)
    await bench.wait_done()
    assert bench.error_flags()["code"] == 0
    checked = len(clean)
    if CONFIG.weight_mode == TERNARY:
        dirty = random_vectors(rng, CONFIG, 10)
        for vector in dirty:
            mask = rng.random(size=vector.codes.shape) < 0.2
            vector.codes = np.where(mask, CODE_INVALID, vector.codes)
        dirty[0].codes[:] = CODE_INVALID  # a whole vector of invalid codes sums to 0
        bench.send(dirty)
        await bench.wait_done()
        assert bench.error_flags()["code"] == 1
        bench.send(random_vectors(rng, CONFIG, 5))
        await bench.wait_done()
        assert bench.error_flags()["code"] == 1, "error.code must be sticky"
        checked += 15
        await bench.reset()
        assert bench.error_flags()["code"] == 0
    bench.scoreboard.assert_done()
    assert bench.scoreboard.checked == checked
    bench.record("invalid_codes", checked, bench.cycle)
    bench.stop()


@cocotb.test()
async def test_overflow_flag(dut):
    """A dot product of max_beats beats at the accumulator extremes is exact with no
    flag; one beat more raises error.overflow, and the result wraps as the model says."""
    bench = await make_bench(dut)
    bench.send(extreme_vectors(CONFIG))
    await bench.wait_done()
    assert bench.error_flags()["overflow"] == 0
    acts = np.full((CONFIG.max_beats + 1, CONFIG.lanes), CONFIG.act_range[0])
    weights = np.full((CONFIG.max_beats + 1, CONFIG.rows, CONFIG.lanes), -1)
    bench.send([Vector(acts, codes_for(weights, CONFIG.weight_mode), 1, 0)])
    await bench.wait_done()
    assert bench.error_flags()["overflow"] == 1
    bench.scoreboard.assert_done()
    bench.record("overflow", bench.scoreboard.checked, bench.cycle)
    bench.stop()


@cocotb.test()
async def test_bitlinear_end_to_end(dut):
    """Float weights and activations, quantized by model/, through the RTL: equal bit
    for bit to the integer model, and within the documented bound of the float
    reference (output stage) or exactly its accumulators (bypass).

    With int4 activations the activations go through BitNet a4.8's INT4 absmean
    quantizer (:func:`model.quant.quantize_activations_int4`)."""
    bench = await make_bench(dut)
    bench.set_traffic(21, idle=0.2, backpressure=0.2)
    rng = np.random.default_rng(21)
    beats = min(4, CONFIG.max_beats)
    in_features = CONFIG.lanes * beats
    tokens = 8
    weights = rng.normal(size=(CONFIG.rows, in_features))
    activations = rng.normal(size=(tokens, in_features)) * rng.uniform(0.5, 4, (tokens, 1))
    if CONFIG.act_width == ACT_WIDTH:
        ref = bitlinear_reference(weights, activations, CONFIG.weight_mode)
    else:
        ref = int4_reference(weights, activations, CONFIG)
    fixed = None
    if CONFIG.output_stage:
        # As many fractional bits as keep every output clear of saturation.
        peak = float(np.max(np.abs(ref.y))) + 1e-9
        frac_bits = max(0, int(np.floor(np.log2((1 << (OUT_WIDTH - 2)) / peak))))
        fixed = bitlinear_fixed(ref, frac_bits)
    codes = codes_for(ref.weights, CONFIG.weight_mode)  # (rows, in_features)
    vectors = []
    for t in range(tokens):
        acts = ref.activations[t].reshape(beats, CONFIG.lanes)
        beat_codes = codes.reshape(CONFIG.rows, beats, CONFIG.lanes).transpose(1, 0, 2)
        scale, shift = (int(fixed["scale"][t]), int(fixed["shift"][t])) if fixed else (1, 0)
        vectors.append(Vector(acts, beat_codes, scale, shift))
    bench.send(vectors)
    await bench.wait_done()
    bench.scoreboard.assert_done()
    got = np.array(bench.scoreboard.received)
    if CONFIG.output_stage:
        assert np.array_equal(got, fixed["y_fixed"])
        error = np.abs(got * 2.0 ** -frac_bits - ref.y)
        assert np.all(error <= fixed["bound"]), f"max error {error.max()} over the bound"
    else:
        assert np.array_equal(got, ref.acc)
        assert np.allclose(got / ref.act_scale[:, None] * ref.beta, ref.y, rtol=0, atol=0)
    bench.record("bitlinear_end_to_end", tokens, bench.cycle)
    bench.stop()
