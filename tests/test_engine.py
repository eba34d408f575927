"""Layer engine: host-side tiling and packing, the cycle model, and small layers
bit-exact under Verilator (the 2B4T block stays in make bench-sim)."""

import numpy as np
import pytest

from model.bitlinear import bitlinear_reference
from model.encoding import TRITS_PER_BYTE, unpack_byte_mulshift
from sim.layer import EngineConfig, check_shape, plan_layer, predicted_cycles, run_layer

# One Verilator build serves every test here: keep them on one xdist worker so that no
# two compile into the same build folder at once.
pytestmark = pytest.mark.xdist_group("engine")

#: A small engine for make test: K = 16 lanes, M = 8 rows.
SMALL = EngineConfig(lanes=16, rows=8, max_beats=16)


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


@pytest.mark.parametrize("n_out, n_in, tokens", [(8, 16, 1), (32, 64, 2), (64, 128, 1)])
def test_cycle_model_matches_simulation(n_out, n_in, tokens):
    run = run_layer(f"cycles_{n_out}x{n_in}", quantized(n_out, n_in, tokens), SMALL,
                    frac_bits=6)
    assert run.exact, f"{run.mismatches} mismatching outputs"
    assert run.cycles == run.predicted


def test_small_layer_exact_with_idle_and_backpressure():
    run = run_layer("traffic_64x128", quantized(64, 128, 3, seed=5), SMALL, frac_bits=6,
                    idle=0.3, backpressure=0.4, seed=7)
    assert run.exact, f"{run.mismatches} mismatching outputs"
    assert run.cycles > run.predicted  # stalls cost cycles, never correctness
