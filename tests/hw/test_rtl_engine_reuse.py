"""Weight reuse across tokens and the weight port (``LayerEngine(tokens=T,
weight_port_bits=P)``): each weight beat, assembled from its port words, is applied to
the activations of a batch of T tokens on consecutive cycles. Checked against the golden
model, every result word: in the Amaranth simulator with random stalls on every stream,
invalid codes and a reset in mid-stream, and under Verilator on the memory bench, where
the cycle model (:class:`hw.engine.LayerMapping`) must equal the simulated cycles."""

import numpy as np
import pytest
from amaranth.hdl import ResetInserter, Signal
from amaranth.sim import Simulator

from ternary_accel.hw.rtl.engine import LayerEngine
from ternary_accel.model.arith import round_fixed
from ternary_accel.model.encoding import unpack_words
from ternary_accel.hw.params import EngineParams
from ternary_accel.sim.plans import BatchedPlan, plan_layer
from ternary_accel.sim.session import EngineSession
from ternary_accel.hw.timing import LayerMapping
from ternary_accel.hw.timing import result_cycles

#: Two unit shapes with T = 4: 8 x 4 on a 16-bit base-3 port (a beat is 4 words:
#: W = T) and 4 x 8 on a 64-bit 3-in-5 port (a beat is 1 word); and 4 x 8 with T = 2 on
#: a 32-bit port of 2-bit codes (W = 2).
REUSE_A = EngineParams(lanes=8, rows=4, max_beats=16, tokens=4, weight_port_bits=16,
                       packing="base3")
REUSE_B = EngineParams(lanes=4, rows=8, max_beats=32, tokens=4, weight_port_bits=64,
                       packing="3in5")
REUSE_C = EngineParams(lanes=4, rows=8, max_beats=32, tokens=2, weight_port_bits=32,
                       packing="2bit")
#: The pipelined output stage: shared by the rows (2 a cycle of 8: R = 4) on a batched
#: engine, parallel (R = 1) on another, and shared (1 row a cycle of 4) on an engine of
#: whole beats; short layers fill the stage's queue, so last beats are held.
REUSE_D = EngineParams(lanes=4, rows=8, max_beats=32, tokens=4, weight_port_bits=64,
                       packing="3in5", output_rows=2)
REUSE_E = EngineParams(lanes=4, rows=8, max_beats=32, tokens=2, weight_port_bits=32,
                       packing="2bit", output_rows=8)
WHOLE_O = EngineParams(lanes=8, rows=4, max_beats=16, output_rows=1)
CONFIGS = {"8x4_p16_base3": REUSE_A, "4x8_p64_3in5": REUSE_B, "4x8_p32_2bit": REUSE_C,
           "4x8_p64_3in5_o2": REUSE_D}
STAGE_CONFIGS = {"4x8_p64_3in5_o2": REUSE_D, "4x8_p32_2bit_o8": REUSE_E,
                 "8x4_whole_o1": WHOLE_O}
#: A byte of invalid codes in each packing: a base-3 byte of 255; in 3in5 the group
#: inside the byte reads 31; four 2-bit codes 0b10.
INVALID_BYTE = {"base3": 0xFF, "3in5": 0xFF, "2bit": 0xAA}


def quantized(rng, n_out, n_in, tokens):
    w = rng.integers(-1, 2, size=(n_out, n_in))
    x = rng.integers(-128, 128, size=(tokens, n_in))
    scale = rng.integers(1, 1 << 16, size=tokens)
    shift = rng.integers(8, 22, size=tokens)
    return w, x, scale, shift


def golden(w, x, scale, shift):
    return round_fixed(x @ w.T, scale[:, None], shift[:, None])


def corrupt(plan, config, w, word, byte):
    """Make byte ``byte`` of stored port word ``word`` invalid (:data:`INVALID_BYTE`) in
    every run of ``plan``; return the weights the engine then uses, from the golden
    model's decoding of the words (invalid codes as zeros)."""
    mapping = plan.mapping
    for run in plan.runs:
        run.weight_bytes = run.weight_bytes.copy()
        run.weight_bytes[word, byte] = INVALID_BYTE[config.packing]
    words = plan.runs[0].weight_bytes
    codes = unpack_words(words, config.packing, mapping.port_bits_used, strict=False)
    beats = codes.reshape(mapping.row_tiles * mapping.col_beats, -1)[
        :, :mapping.codes_per_beat]
    tiles = beats.reshape(mapping.row_tiles, mapping.col_beats, config.rows, config.lanes)
    return tiles.transpose(0, 2, 1, 3).reshape(w.shape).astype(np.int64)


# --- the cycle model --------------------------------------------------------------

def test_result_cycles_is_the_output_queue():
    """C_n = max(A_n + L, C_{n-1} + R), by hand."""
    assert result_cycles([0, 1, 2, 10], 5, 1).tolist() == [5, 6, 7, 15]
    assert result_cycles([0, 1, 2, 10], 5, 4).tolist() == [5, 9, 13, 17]
    assert result_cycles([0, 1, 2, 30], 5, 4).tolist() == [5, 9, 13, 35]


def test_cycle_model_by_hand():
    """8 x 4 engine, 16-bit port (10 codes a word, W = 4), T = 4; a 8 x 32 layer: 2 row
    tiles of 4 beats. 6 tokens: a batch of 4, then one of 2."""
    m = LayerMapping(8, 32, 6, 8, 4, max_beats=16, batch=4, port_bits=16)
    assert (m.port_words_per_beat, m.runs, m.latency) == (4, ((4, 1), (2, 1)), m.latency)
    L = m.latency
    # batch of 4: beat k used at 4 + 4k + j; the last beat of tile 1 is k = 7
    assert m.run_cycles(4, 1) == 4 + 7 * 4 + 3 + L + 1
    # batch of 2: a beat every max(W, 2) = 4 cycles, 2 uses each
    assert m.run_cycles(2, 1) == 4 + 7 * 4 + 1 + L + 1
    assert m.cycles == m.run_cycles(4, 1) + m.run_cycles(2, 1)
    # weights read once per batch: 2 passes of 8 beats of 4 words of 2 bytes
    assert m.weight_bytes == 2 * 8 * 4 * 2 and m.weight_beats == 16
    # T = 1 on the same port: port-bound, a beat every W = 4 cycles
    one = LayerMapping(8, 32, 1, 8, 4, max_beats=16, batch=1, port_bits=16)
    assert one.cycles == 4 + 7 * 4 + L + 1


def test_mapping_checks_its_parameters():
    with pytest.raises(ValueError, match="batch must be a positive integer"):
        LayerMapping(8, 32, 1, 8, 4, batch=0)
    with pytest.raises(ValueError, match="multiple of 8"):
        LayerMapping(8, 32, 1, 8, 4, port_bits=12)
    with pytest.raises(ValueError, match="packing must be one of"):
        LayerMapping(8, 32, 1, 8, 4, port_bits=16, packing="base4")


def test_engine_checks_its_parameters():
    with pytest.raises(ValueError, match="tokens must be at most 256"):
        LayerEngine(lanes=4, rows=2, tokens=257)
    with pytest.raises(ValueError, match="tokens"):
        LayerEngine(lanes=4, rows=2, tokens=0)
    with pytest.raises(ValueError, match="whole beats"):
        LayerEngine(lanes=4, rows=2, tokens=2, weight_order="columns")
    with pytest.raises(ValueError, match="do not combine"):
        LayerEngine(lanes=4, rows=2, tokens=2, acc_tiles=4)
    with pytest.raises(ValueError, match="multiple of 8"):
        LayerEngine(lanes=4, rows=2, weight_port_bits=20)
    with pytest.raises(ValueError, match="needs assembled beats"):
        LayerEngine(lanes=4, rows=2, packing="2bit")


def test_batched_plan_streams_weights_once_per_batch():
    rng = np.random.default_rng(0)
    w, x, scale, shift = quantized(rng, 8, 32, 9)
    plan = plan_layer(w, x, scale, shift, REUSE_A)
    assert isinstance(plan, BatchedPlan)
    assert [(r.batch_size, r.batches) for r in plan.runs] == [(4, 2), (1, 1)]
    for run in plan.runs:
        # (tiles x beats x W) words stored once, replayed per batch
        assert run.weight_bytes.shape == (2 * 4 * 4, 2)
        assert len(run.wgt_words) == run.batches * 32
        assert len(run.act_words) == run.tokens * 2 * 4


# --- the RTL in the Amaranth simulator ----------------------------------------------

def simulate(config, runs, *, stall=0.3, reset_after=None, seed=3):
    """Play the runs' streams (act and wgt stalled independently, res backpressured)
    through the engine; ``reset_after = (run, n)`` pulses the reset after ``n`` words
    of that run's weights and drops the run. Returns the results of each run kept (in
    stream order) and the error flags."""
    engine = LayerEngine(config)
    rst = Signal()
    dut = ResetInserter({"sync": rst})(engine)
    rng = np.random.default_rng(seed)
    got, flags = [], {}

    async def bench(ctx):
        for index, run in enumerate(runs):
            ctx.set(engine.batch, run.batch_size)
            acts, wgts = run.act_words, run.wgt_words
            a = g = 0
            results = []
            while len(results) < run.tiles:
                if reset_after == (index, g):
                    ctx.set(rst, 1)
                    await ctx.tick().repeat(2)
                    ctx.set(rst, 0)
                    results = None
                    break
                act_valid = a < len(acts) and rng.random() >= stall
                wgt_valid = g < len(wgts) and rng.random() >= stall
                if act_valid:
                    ctx.set(engine.act.payload.as_value(), acts[a])
                if wgt_valid:
                    ctx.set(engine.wgt.payload.as_value(), wgts[g])
                ctx.set(engine.act.valid, act_valid)
                ctx.set(engine.wgt.valid, wgt_valid)
                ready = rng.random() >= stall
                ctx.set(engine.res.ready, ready)
                if act_valid and ctx.get(engine.act.ready):
                    a += 1
                if wgt_valid and ctx.get(engine.wgt.ready):
                    g += 1
                if ready and ctx.get(engine.res.valid):
                    results.append([int(v) for v in ctx.get(engine.res.payload)])
                await ctx.tick()
            ctx.set(engine.act.valid, 0)
            ctx.set(engine.wgt.valid, 0)
            if results is not None:
                got.append(np.array(results))
        await ctx.tick().repeat(8)
        flags["code"] = ctx.get(engine.error.code)
        flags["overflow"] = ctx.get(engine.error.overflow)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got, flags


def outputs(plan_runs, got):
    return np.concatenate([run.order_outputs(words) for run, words in zip(plan_runs, got)])


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_batches_exact_with_stalls_on_every_stream(config):
    """9 tokens (two batches of 4 and one of 1) of a 16 x 64 layer, every stream
    stalled at random: every result equals the golden model's, no flag raised."""
    rng = np.random.default_rng(1)
    w, x, scale, shift = quantized(rng, 16, 64, 9)
    plan = plan_layer(w, x, scale, shift, config)
    got, flags = simulate(config, plan.runs)
    assert np.array_equal(outputs(plan.runs, got), golden(w, x, scale, shift))
    assert flags == {"code": 0, "overflow": 0}


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_invalid_port_bytes_decode_as_zeros_and_raise_the_flag(config):
    rng = np.random.default_rng(2)
    w, x, scale, shift = quantized(rng, 8, 32, 4)
    plan = plan_layer(w, x, scale, shift, config)
    effective = corrupt(plan, config, w, word=1, byte=1)
    assert not np.array_equal(effective, w)
    got, flags = simulate(config, plan.runs)
    assert np.array_equal(outputs(plan.runs, got), golden(effective, x, scale, shift))
    assert flags["code"] == 1


def test_reset_mid_stream_leaves_nothing_stale():
    """A reset with a beat half assembled, a beat in use and partial sums of the
    batch's tokens in the bank: the next run's results are exact."""
    rng = np.random.default_rng(3)
    layers = [quantized(rng, 8, 32, 4) for _ in range(3)]
    plans = [plan_layer(*layer, REUSE_A) for layer in layers]
    runs = [p.runs[0] for p in plans]
    got, flags = simulate(REUSE_A, runs, reset_after=(1, 14))
    assert len(got) == 2
    for index, words in zip((0, 2), got):
        assert np.array_equal(runs[index].order_outputs(words), golden(*layers[index]))
    assert flags == {"code": 0, "overflow": 0}


def run_unstalled(config, runs):
    """Every stream always valid, ``res`` always ready: the results of each run and its
    cycles from its first transfer (act or wgt) to its last result."""
    engine = LayerEngine(config)
    got, cycles = [], []

    async def bench(ctx):
        ctx.set(engine.res.ready, 1)
        for run in runs:
            if config.tokens > 1:
                ctx.set(engine.batch, run.batch_size)
            acts, wgts = run.act_words, run.wgt_words
            a = g = 0
            results, first, cycle = [], None, 0
            while len(results) < run.tiles:
                ctx.set(engine.act.valid, a < len(acts))
                ctx.set(engine.wgt.valid, g < len(wgts))
                if a < len(acts):
                    ctx.set(engine.act.payload.as_value(), acts[a])
                if g < len(wgts):
                    ctx.set(engine.wgt.payload.as_value(), wgts[g])
                moved_a = a < len(acts) and ctx.get(engine.act.ready)
                moved_g = g < len(wgts) and ctx.get(engine.wgt.ready)
                if first is None and (moved_a or moved_g):
                    first = cycle
                a, g = a + moved_a, g + moved_g
                if ctx.get(engine.res.valid):
                    results.append([int(v) for v in ctx.get(engine.res.payload)])
                    last = cycle
                await ctx.tick()
                cycle += 1
                assert cycle < 50_000
            ctx.set(engine.act.valid, 0)
            ctx.set(engine.wgt.valid, 0)
            got.append(np.array(results))
            cycles.append(last - first + 1)
            await ctx.tick().repeat(4)

    sim = Simulator(engine)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got, cycles


@pytest.mark.slow
@pytest.mark.parametrize("config", STAGE_CONFIGS.values(), ids=STAGE_CONFIGS.keys())
@pytest.mark.parametrize("n_out, n_in, tokens", [(16, 32, 9), (8, 128, 4), (64, 8, 6)])
def test_pipelined_output_stage_cycle_model_is_exact(config, n_out, n_in, tokens):
    """The pipelined output stage, parallel or shared by the rows, on batched and
    whole-beat engines: every result exact, and each run's cycles equal the model's,
    including the short layers whose results outrun a shared stage (the queue fills,
    last beats are held, :meth:`hw.engine.LayerMapping.run_exits`)."""
    rng = np.random.default_rng(n_out + n_in + tokens)
    w, x, scale, shift = quantized(rng, n_out, n_in, tokens)
    plan = plan_layer(w, x, scale, shift, config)
    runs = plan.runs if isinstance(plan, BatchedPlan) else [plan]
    got, cycles = run_unstalled(config, runs)
    mapping = config.mapping(n_out, n_in, tokens)
    if isinstance(plan, BatchedPlan):
        assert np.array_equal(outputs(runs, got), golden(w, x, scale, shift))
        assert cycles == [mapping.run_cycles(*run) for run in mapping.runs]
    else:
        assert np.array_equal(plan.order_outputs(got[0]) if hasattr(plan, "order_outputs")
                              else got[0], golden(w, x, scale, shift))
        assert cycles == [mapping.cycles]


def test_a_short_layer_fills_the_shared_stage_queue():
    """The case the beat-by-beat schedule exists for: on the shared stage (R = 4) the
    unthrottled arrivals would overrun the queue, and the model says so."""
    mapping = REUSE_D.mapping(64, 8, 8)
    size, batches = mapping.runs[0]
    arrivals = mapping.run_arrivals(size, batches)
    starts = result_cycles(arrivals, mapping.start_delay, mapping.output_interval)
    assert np.any(arrivals[16:] < starts[:-16] + 1)
    assert mapping.run_cycles(size, batches) > int(starts[-1]) + mapping.latency \
        - mapping.start_delay


# --- the RTL under Verilator: the cycle model equals the simulation ------------------

@pytest.mark.verilator
@pytest.mark.xdist_group("reuse")
@pytest.mark.parametrize("config", [REUSE_A, REUSE_B, REUSE_D],
                         ids=["8x4_p16", "4x8_p64_3in5", "4x8_p64_3in5_o2"])
def test_cycle_model_matches_verilator(config):
    """Batches of 4, 2 and 1 tokens (port-bound when W > n), 3 layer shapes: outputs
    exact, simulated cycles equal the model's."""
    rng = np.random.default_rng(4)
    with EngineSession(config) as session:
        for n_out, n_in, tokens in ((16, 64, 4), (8, 32, 6), (24, 96, 1)):
            w, x, scale, shift = quantized(rng, n_out, n_in, tokens)
            result = session.run(w, x, scale, shift)
            assert np.array_equal(result.outputs, golden(w, x, scale, shift))
            assert result.error == 0
            assert result.cycles == result.predicted == \
                config.mapping(n_out, n_in, tokens).cycles


@pytest.mark.verilator
@pytest.mark.xdist_group("reuse")
def test_verilator_stalls_and_invalid_bytes():
    rng = np.random.default_rng(5)
    w, x, scale, shift = quantized(rng, 16, 64, 7)
    with EngineSession(REUSE_A, idle=0.3, backpressure=0.3, seed=9) as session:
        result = session.run(w, x, scale, shift)
        assert np.array_equal(result.outputs, golden(w, x, scale, shift))
        assert result.error == 0 and result.cycles > result.predicted
        plan = plan_layer(w, x, scale, shift, REUSE_A)
        effective = corrupt(plan, REUSE_A, w, word=9, byte=0)
        bad = session.run_plan(plan)
        assert np.array_equal(bad.outputs, golden(effective, x, scale, shift))
        assert bad.error & 1


# --- the whole-model account with weight reuse ------------------------------------

def test_prefill_reads_the_weights_once_per_batch():
    """A 2B4T prompt of 32 tokens on an engine with T = 16 and a 128-bit port: the
    ternary weights are read twice, as the engine's mapping counts them; batched decode
    of 4 sequences shares the beats too."""
    from ternary_accel.hw.perf.accounting import account, batched
    from ternary_accel.model.config import model_config
    config = model_config("b1.58-2b4t")
    plain = account(config, tokens=32)
    reuse = account(config, tokens=32, weight_reuse=16, port_bits=128)
    per_pass = sum(LayerMapping(p.out_features, p.in_features, 1, batch=16,
                                port_bits=128).weight_bytes
                   for p in config.shape.projections()) * config.layers
    assert reuse.bytes()["ternary_weights"] == 2 * per_pass
    # 16 tokens a pass, at 112 bytes a beat on the port (7 words) against 103 whole
    plain_bytes = plain.bytes()["ternary_weights"]
    assert plain_bytes * 112 == 16 * 103 * reuse.bytes()["ternary_weights"]
    decode = account(config, tokens=1, context=8, weight_reuse=16, port_bits=128)
    assert batched(decode, 4).bytes()["ternary_weights"] == per_pass
    assert batched(account(config, tokens=1, context=8), 4).bytes()["ternary_weights"] == \
        4 * account(config, tokens=1, context=8).bytes()["ternary_weights"]
    # re-costing keeps the engine
    assert reuse.with_scheme("a4.8").weight_reuse == 16


def test_platform_with_reuse_has_a_shorter_time_to_first_token():
    from dataclasses import replace
    from ternary_accel.hw.perf.throughput import model_report
    from ternary_accel.hw.perf.platforms import get_platform
    reuse = get_platform("ecp5-ddr3")               # T = 16, a 128-bit port
    assert (reuse.weight_reuse, reuse.weight_port_bits) == (16, 128)
    base = replace(reuse, engine=replace(reuse.engine, tokens=1))
    plain = model_report("b1.58-2b4t", base, prompt=64, clock_mhz=100.0)
    fast = model_report("b1.58-2b4t", reuse, prompt=64, clock_mhz=100.0)
    assert fast["ttft_s"] < plain["ttft_s"] / 2
