"""Layer engine: host-side tiling and packing, the cycle model, and small layers
bit-exact under Verilator (the 2B4T block stays in make bench-sim)."""

import numpy as np
import pytest

from ternary_accel.model.arith import matmul_int, round_fixed
from ternary_accel.model.bitlinear import bitlinear_fixed, bitlinear_reference
from ternary_accel.model.config import TINY
from ternary_accel.model.decoder import Decoder, generate
from ternary_accel.model.encoding import TRITS_PER_BYTE, unpack_byte_mulshift
from ternary_accel.model.weights import MasterWeights, random_master_weights
from ternary_accel.sim.build import BENCHES
from ternary_accel.sim.config import HarnessConfig
from ternary_accel.hw.params import EngineParams
from ternary_accel.sim.plans import check_shape, plan_layer, predicted_cycles
from ternary_accel.sim.session import EngineSession, run_bitlinear, run_on_engine
from ternary_accel.sim.workloads import EngineCore, run_layer

# Tests of one Verilator build stay on one xdist worker (no two generate into the same
# build folder at once); the two engines here, and their tests, are two groups.
SMALL_BUILD = pytest.mark.xdist_group("engine-small")
ACC_BUILD = pytest.mark.xdist_group("engine-acc")

#: A small engine for make test: K = 16 lanes, M = 8 rows.
SMALL = EngineParams(lanes=16, rows=8, max_beats=16)


def quantized(n_out, n_in, tokens, seed=0):
    rng = np.random.default_rng(seed)
    return bitlinear_reference(rng.normal(size=(n_out, n_in)),
                               rng.normal(size=(tokens, n_in)) * 3)


@pytest.mark.parametrize("n_out, n_in, tokens", [(8, 16, 1), (24, 48, 3), (40, 208, 2)])
def test_plan_round_trip(n_out, n_in, tokens):
    """Unpacking every planned weight beat gives back the layer's tiles, in order."""
    r = quantized(n_out, n_in, tokens)
    scale = np.arange(tokens) + 100
    shift = np.arange(tokens) + 3
    plan = plan_layer(r.weights, r.activations, scale, shift, SMALL)
    beats_c, tiles_r = n_in // SMALL.lanes, n_out // SMALL.rows
    assert len(plan.act_words) == len(plan.wgt_words) == tokens * tiles_r * beats_c
    assert plan.tiles == tokens * tiles_r
    nbytes = SMALL.bytes_per_beat
    first = plan.wgt_words[:tiles_r * beats_c]
    raw = np.array([list(w.to_bytes(nbytes, "little")) for w in first])
    weights, valid = unpack_byte_mulshift(raw)
    assert valid.all()
    codes = weights.reshape(len(first), nbytes * TRITS_PER_BYTE)[:, :SMALL.rows * SMALL.lanes]
    tiles = codes.reshape(tiles_r, beats_c, SMALL.rows, SMALL.lanes).transpose(0, 2, 1, 3)
    assert np.array_equal(tiles.reshape(n_out, n_in), r.weights)
    # weights are the same for every token of the batch
    assert plan.wgt_words == first * tokens


@pytest.mark.parametrize("n_out, n_in, message", [
    (12, 32, "out_features 12 is not a multiple"),
    (16, 40, "in_features 40 is not a multiple"),
    (16, 16 * 17, "max_beats"),
])
def test_shapes_that_do_not_tile(n_out, n_in, message):
    with pytest.raises(ValueError, match=message):
        check_shape(n_out, n_in, SMALL)
    with pytest.raises(ValueError, match=message):
        predicted_cycles(n_out, n_in, 1, SMALL)


def test_cycle_model_by_hand():
    # 64 x 128 on K=16, M=8: 8 row tiles x 8 beats per token, then the latency
    assert predicted_cycles(64, 128, 2, SMALL) == 2 * 8 * 8 + SMALL.latency


@SMALL_BUILD
@pytest.mark.verilator
@pytest.mark.parametrize("bench", BENCHES)
@pytest.mark.parametrize("n_out, n_in, tokens", [(8, 16, 1), (32, 64, 2), (64, 128, 1)])
def test_cycle_model_matches_simulation(n_out, n_in, tokens, bench):
    run = run_layer(f"cycles_{n_out}x{n_in}", quantized(n_out, n_in, tokens), SMALL,
                    frac_bits=6, bench=bench)
    assert run.exact, f"{run.mismatches} mismatching outputs"
    assert run.cycles == run.predicted


@SMALL_BUILD
@pytest.mark.verilator
@pytest.mark.parametrize("bench", BENCHES)
def test_small_layer_exact_with_idle_and_backpressure(bench):
    run = run_layer("traffic_64x128", quantized(64, 128, 3, seed=5), SMALL, frac_bits=6,
                    idle=0.3, backpressure=0.4, seed=7, bench=bench)
    assert run.exact, f"{run.mismatches} mismatching outputs"
    assert run.cycles > run.predicted  # stalls cost cycles, never correctness


@SMALL_BUILD
@pytest.mark.verilator
def test_both_benches_give_the_same_results_on_the_same_layers():
    """The memory-played harness and the per-cycle bench, same configuration and seed:
    every output word equal (and equal to the golden model) on layers of 1 to 5 tokens
    with all-extreme rows, with and without stalls; equal cycles without stalls."""
    rng = np.random.default_rng(21)
    layers = []
    for tokens in (1, 2, 5):
        r = quantized(40, 160, tokens, seed=int(rng.integers(1 << 30)))
        fixed = bitlinear_fixed(r, 5)
        w = r.weights.copy()
        w[0], w[1] = 1, -1
        x = r.activations.copy()
        x[0] = -128
        layers.append((w, x, fixed["scale"], fixed["shift"]))
    outcome = {}
    for bench in BENCHES:
        for stalls in (0.0, 0.35):
            with EngineSession(SMALL, idle=stalls, backpressure=stalls, seed=3,
                               bench=bench) as session:
                outcome[bench, stalls] = [session.run(*layer) for layer in layers]
    for i, (w, x, scale, shift) in enumerate(layers):
        expected = round_fixed(matmul_int(w, x), scale[:, None], shift[:, None])
        for key, runs in outcome.items():
            assert np.array_equal(runs[i].outputs, expected), (key, i)
            assert runs[i].error == 0
        assert outcome["memory", 0.0][i].cycles == outcome["cycle", 0.0][i].cycles \
            == outcome["memory", 0.0][i].predicted
        assert outcome["memory", 0.35][i].cycles > outcome["memory", 0.35][i].predicted


@pytest.mark.verilator
def test_harness_memories_bound_the_layer():
    small = HarnessConfig(act_depth=16, wgt_depth=32, res_depth=8)
    session = EngineSession(SMALL, harness=small)    # checked before anything is built
    w, x = np.zeros((16, 128), dtype=int), np.zeros((3, 128), dtype=int)
    with pytest.raises(ValueError, match=r"24 activation beats.*act_depth=16"):
        session.run(w, x, 1, 0)
    with pytest.raises(ValueError, match=r"64 weight beats.*wgt_depth=32"):
        session.run(np.zeros((64, 128), dtype=int), x[:1], 1, 0)
    with pytest.raises(ValueError, match=r"9 results.*res_depth=8"):
        session.run(np.zeros((24, 16), dtype=int), np.zeros((3, 16), dtype=int), 1, 0)
    with pytest.raises(ValueError, match="bench must be one of"):
        EngineSession(SMALL, bench="fast")
    with pytest.raises(ValueError, match="goes with bench='memory'"):
        EngineSession(SMALL, bench="cycle", harness=small)
    with pytest.raises(ValueError, match="wgt_depth"):
        HarnessConfig(wgt_depth=1)


# -- the driver's public API ---------------------------------------------------------------

#: The same small engine without the output stage: raw accumulators (the decoder's core).
ACC = EngineParams(lanes=16, rows=8, max_beats=8, output_stage=False)


@pytest.mark.parametrize("change, message", [
    (dict(activations=np.full((1, 32), 200)), r"int8 \(-128\.\.127\)"),
    (dict(activations=np.full((1, 32), -129)), r"int8 \(-128\.\.127\)"),
    (dict(activations=np.zeros((1, 32), dtype=float)), "integer array"),
    (dict(weights=np.full((8, 32), 2)), "ternary"),
    (dict(weights=np.zeros(32, dtype=int)), "2-D"),
    (dict(activations=np.zeros((1, 16), dtype=int)), "16 features"),
    (dict(scale=np.array([1 << 16])), "scale must be in 0..65535"),
    (dict(shift=np.array([64])), "shift must be in 0..63"),
    (dict(scale=np.array([1, 2])), "one value per token"),
    (dict(scale=None), "needs a scale and a shift"),
    (dict(weights=np.zeros((12, 32), dtype=int)), "not a multiple"),
])
def test_plan_rejects_bad_inputs(change, message):
    args = dict(weights=np.zeros((8, 32), dtype=int), activations=np.zeros((1, 32), dtype=int),
                scale=np.array([3]), shift=np.array([2]))
    args.update(change)
    with pytest.raises(ValueError, match=message):
        plan_layer(config=SMALL, **args)


def test_plan_refuses_scale_without_output_stage():
    with pytest.raises(ValueError, match="raw accumulators"):
        plan_layer(np.zeros((8, 32), dtype=int), np.zeros(32, dtype=int), 3, 2, ACC)


@SMALL_BUILD
@pytest.mark.verilator
def test_run_on_engine_returns_output_stage_results():
    r = quantized(24, 48, 2, seed=11)
    fixed = bitlinear_fixed(r, 6)
    run = run_on_engine(r.weights, r.activations, scale=fixed["scale"], shift=fixed["shift"],
                        config=SMALL)
    assert run.outputs.shape == (2, 24) and run.error == 0
    assert np.array_equal(run.outputs, fixed["y_fixed"])
    assert run.cycles == run.predicted
    # the same through run_bitlinear
    assert np.array_equal(run_bitlinear(r, frac_bits=6, config=SMALL).outputs,
                          fixed["y_fixed"])


@ACC_BUILD
@pytest.mark.verilator
def test_session_returns_raw_accumulators_and_takes_one_token():
    rng = np.random.default_rng(4)
    w = rng.integers(-1, 2, size=(32, 128))
    w[0], w[1] = 1, -1                                  # accumulator extremes
    x = rng.integers(-128, 128, size=(3, 128))
    x[0] = -128
    with EngineSession(ACC) as session:
        run = session.run(w, x)
        assert np.array_equal(run.outputs, matmul_int(w, x))
        assert run.outputs[0, 0] == -128 * 128 and run.outputs[0, 1] == 128 * 128
        single = session.run(w, x[1])                   # a 1-D vector is one token
        assert single.outputs.shape == (32,)
        assert np.array_equal(single.outputs, matmul_int(w, x[1]))
        assert single.cycles == single.predicted == ACC.mapping(32, 128).cycles


@pytest.mark.verilator
def test_build_root_is_a_parameter(tmp_path):
    tiny = EngineParams(lanes=4, rows=2, max_beats=2, output_stage=False)
    w = np.array([[1, -1, 0, 1], [0, 0, -1, -1]])
    run = run_on_engine(w, np.array([5, -7, 127, -128]), config=tiny, build_root=tmp_path)
    assert np.array_equal(run.outputs, [5 + 7 - 128, -127 + 128])
    assert (tmp_path / f"{tiny.name}_{HarnessConfig().name}" / "engine_harness.v").exists()


@ACC_BUILD
@pytest.mark.verilator
def test_tiny_model_generates_bit_exact_on_the_rtl(tmp_path):
    """Every BitLinear of a tiny model on the engine: the same logits, bit for bit."""
    weights = MasterWeights(TINY, random_master_weights(TINY, seed=2))
    golden = generate(Decoder(weights), [3, 17, 250], 3)
    with EngineSession(ACC, idle=0.2, backpressure=0.2) as session:
        core = EngineCore(session)
        rtl = generate(Decoder(weights, core=core), [3, 17, 250], 3)
    assert rtl.generated_ids == golden.generated_ids
    assert np.array_equal(rtl.logits, golden.logits)
    assert len(core.calls) == 7 * TINY.layers * 4        # prefill + 3 decode steps
    assert all(c["cycles"] >= c["predicted"] for c in core.calls)
