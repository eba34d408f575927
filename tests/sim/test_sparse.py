"""The sparse dataflow: compaction, the column-major weight layout and its counts
(:mod:`model.sparse`), and the column-order engine under Verilator, bit-exact to the
dense golden model (:mod:`sim.sparse`)."""

import numpy as np
import pytest

from ternary_accel.model.arith import matmul_int, round_fixed
from ternary_accel.model.encoding import unpack_trits
from ternary_accel.model.sparse import BEAT_MAJOR, MASK, NONZERO, ORDERS, column_bytes, kept_columns, pack_columns
from ternary_accel.hw.mapping import SparseTiling, burst_bytes, sparse_beats
from ternary_accel.model.config import TINY
from ternary_accel.model.decoder import Decoder, generate
from ternary_accel.model.weights import MasterWeights, random_master_weights
from ternary_accel.hw.params import EngineParams
from ternary_accel.sim.plans import plan_layer
from ternary_accel.sim.session import EngineSession
from ternary_accel.sim.workloads import EngineCore
from ternary_accel.sim.sparse import plan_sparse, run_sparse, sparse_config
from ternary_accel.hw.timing import SparseLayerMapping
from ternary_accel.hw.mapping import weight_beat_bytes

# One Verilator build serves the RTL tests here: one xdist worker.
pytestmark = pytest.mark.xdist_group("sparse")

#: A small sparse engine for make test: K = 8 lanes, M = 4 rows, raw accumulators (every
#: bit of the sums compared; the output stage is the unit's, tested elsewhere), an
#: accumulator bank of 32 tiles (both loop orders run on it: the tile-major order sets
#: its tiles port to 1), long enough for the tiny decoder's layers.
SPARSE = sparse_config(lanes=8, rows=4, max_beats=16, acc_tiles=32, output_stage=False)


def test_pack_columns_by_hand():
    # rows = 3: tile 0 is rows 0..2, tile 1 rows 3..5; a column is one byte,
    # t0 + 3 t1 + 9 t2 + 27 t3 + 81 t4 with t = w + 1, trits 3 and 4 padding (w = 0):
    # 27 + 81 = 108 on every byte
    w = np.array([[1, -1], [0, 1], [-1, 0], [1, 1], [0, 0], [-1, -1]])
    stored = pack_columns(w, 3)
    # tile 0: col 0 = (1, 0, -1) -> 2 + 3 + 0 + 108 = 113; col 1 = (-1, 1, 0) -> 0 + 6 + 9
    # + 108 = 123; tile 1: col 0 = (1, 0, -1) -> 113; col 1 = (1, 0, -1) -> 113
    assert stored.shape == (2, 2, 1)
    assert stored[:, :, 0].tolist() == [[113, 123], [113, 113]]


def test_pack_columns_round_trip_and_padding():
    rng = np.random.default_rng(3)
    w = rng.integers(-1, 2, (32, 40))
    stored = pack_columns(w, 16)                    # 16 trits: 4 bytes, 4 padding trits
    assert stored.shape == (2, 40, column_bytes(16)) == (2, 40, 4)
    trits = unpack_trits(stored.reshape(-1)).reshape(2, 40, 20)
    assert np.all(trits[:, :, 16:] == 0)
    assert np.array_equal(trits[:, :, :16].transpose(0, 2, 1).reshape(32, 40), w)
    with pytest.raises(ValueError, match="not a multiple of rows"):
        pack_columns(w, 5)
    with pytest.raises(ValueError, match="rows must be a positive integer"):
        column_bytes(0)


def test_kept_columns():
    x = np.array([[0, 3, 0, -1], [0, 0, 0, 0]])
    assert [c.tolist() for c in kept_columns(x)] == [[1, 3], []]
    mask = np.array([[False, True, True, True], [True, False, False, False]])
    assert [c.tolist() for c in kept_columns(x, MASK, mask)] == [[1, 2, 3], [0]]
    with pytest.raises(ValueError, match="token 0 has a nonzero activation at column 1"):
        kept_columns(x, MASK, ~mask)
    with pytest.raises(ValueError, match="needs the mask"):
        kept_columns(x, MASK)
    with pytest.raises(ValueError, match="goes with schedule='mask'"):
        kept_columns(x, NONZERO, mask)
    with pytest.raises(ValueError, match="boolean array of shape"):
        kept_columns(x, MASK, mask[:, :2])
    with pytest.raises(ValueError, match="schedule must be one of"):
        kept_columns(x, "dense")
    with pytest.raises(ValueError, match="2-D integer array"):
        kept_columns(x.astype(float))


def test_sparse_tiling_by_hand():
    t = SparseTiling(32, 64, (10, 0, 64), lanes=8, rows=4)
    assert t.row_tiles == 8 and t.dense_col_beats == 8
    assert t.token_beats == (2, 1, 8)               # ceil(10/8), at least 1, 64/8
    assert t.beats == 8 * 11
    assert t.column_bytes == 1 and t.weight_bytes_per_beat == 8
    assert t.weight_bytes == 8 * 74                 # kept columns of every tile, 1 byte
    assert t.port_bytes == 88 * 8                   # with the zero padding lanes
    assert t.index_bits == 6
    assert t.density == pytest.approx(74 / 192)
    assert sparse_beats(0, 8) == 1 and sparse_beats(9, 8) == 2
    for kept, message in (((), "one count per token"), ((65,), "0..64"),
                          ((-1,), "0..64"), ((1.5,), "0..64")):
        with pytest.raises(ValueError, match=message):
            SparseTiling(32, 64, kept, lanes=8, rows=4)
    with pytest.raises(ValueError, match="not a multiple"):
        SparseTiling(30, 64, (1,), lanes=8, rows=4)


def test_burst_bytes_by_hand():
    # 16 rows: 4 bytes a column, 16 columns a 64-byte burst
    assert burst_bytes([0, 1, 2, 15], 64, 16, 64) == 64           # one burst
    assert burst_bytes([0, 16, 63], 64, 16, 64, row_tiles=3) == 3 * 3 * 64
    assert burst_bytes([], 64, 16, 64) == 0
    # 8 rows: 2 bytes a column; a column of 5 tiles is 10 bytes, one 16-byte burst
    assert burst_bytes([3, 7], 64, 8, 16, order=BEAT_MAJOR, row_tiles=5) == 2 * 16
    assert burst_bytes([3], 64, 8, 4, order=BEAT_MAJOR, row_tiles=5) == 12
    with pytest.raises(ValueError, match="columns must be in 0..63"):
        burst_bytes([64], 64, 16, 64)
    with pytest.raises(ValueError, match="burst must be a positive integer"):
        burst_bytes([1], 64, 16, 0)
    with pytest.raises(ValueError, match="order must be one of"):
        burst_bytes([1], 64, 16, 64, order="rows")
    assert SparseTiling(32, 64, (3,), 8, 4).accumulators == 4
    assert SparseTiling(32, 64, (3,), 8, 4, BEAT_MAJOR).accumulators == 32


def test_sparse_mapping_cycles_and_max_beats():
    m = SparseLayerMapping(32, 64, (10, 0), lanes=8, rows=4, max_beats=8)
    assert m.cycles == m.beats + m.latency == 8 * 3 + m.latency
    assert m.token_cycles(0) == 8 * 2 + m.latency
    with pytest.raises(ValueError, match="max_beats"):
        SparseLayerMapping(32, 64, (64,), lanes=8, rows=4, max_beats=4)
    with pytest.raises(ValueError, match="accumulator bank of at least 8 tiles"):
        SparseLayerMapping(32, 64, (64,), lanes=8, rows=4, order=BEAT_MAJOR, acc_tiles=4)
    assert weight_beat_bytes(32, 16, "columns") == 32 * 4
    assert weight_beat_bytes(32, 16) == 103
    with pytest.raises(ValueError, match="weight_order must be one of"):
        weight_beat_bytes(32, 16, "diagonal")


def sparse_layer(n_out, n_in, tokens, density, seed):
    rng = np.random.default_rng(seed)
    w = rng.integers(-1, 2, (n_out, n_in)).astype(np.int8)
    x = rng.integers(-128, 128, (tokens, n_in))
    x[rng.random(x.shape) >= density] = 0
    return w, x, None, None                  # no output stage: no scale or shift


def expected(w, x, scale=None, shift=None):
    """The dense golden model: accumulators, or through the output stage."""
    if scale is None:
        return matmul_int(w, x)
    return np.stack([round_fixed(matmul_int(w, x[t]), int(scale[t]), int(shift[t]))
                     for t in range(len(x))])


@pytest.fixture(scope="module")
def session():
    with EngineSession(SPARSE, idle=0.25, backpressure=0.25, seed=7) as s:
        yield s


@pytest.fixture(scope="module")
def full_speed():
    with EngineSession(SPARSE) as s:
        yield s


@pytest.mark.verilator
@pytest.mark.parametrize("order", ORDERS)
def test_random_sparse_tokens_exact_with_stalls(session, order):
    """80 % zeros, an all-zero token, a fully dense one, all -128: every output word."""
    w, x, scale, shift = sparse_layer(16, 64, 5, 0.2, seed=1)
    x[1] = 0
    x[2] = np.random.default_rng(2).integers(-128, 128, 64)
    x[2, x[2] == 0] = 1
    x[3] = -128
    result = run_sparse(session, w, x, scale, shift, order=order)
    assert result.error == 0
    assert np.array_equal(result.outputs, expected(w, x, scale, shift))
    assert result.mapping.kept[1:4] == (0, 64, 64)
    assert result.mapping.order == order
    assert result.cycles > result.predicted          # the stalls cost cycles


@pytest.mark.verilator
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("n_out, n_in, tokens, density", [
    (4, 8, 1, 0.5), (16, 64, 3, 0.2), (32, 64, 2, 0.9)])
def test_cycle_model_matches_simulation(full_speed, n_out, n_in, tokens, density, order):
    w, x, scale, shift = sparse_layer(n_out, n_in, tokens, density, seed=n_out)
    result = run_sparse(full_speed, w, x, scale, shift, order=order)
    assert np.array_equal(result.outputs, expected(w, x, scale, shift))
    assert result.cycles == result.predicted


@pytest.mark.verilator
def test_block_sparse_static_schedule(session):
    """N:M = 4:8 masks: every token keeps the same number of columns, zeros included."""
    w, x, scale, shift = sparse_layer(8, 64, 3, 1.0, seed=4)
    blocks = np.abs(x).reshape(3, 8, 8)
    order = np.argsort(-blocks, axis=2, kind="stable")[:, :, :4]
    mask = np.zeros_like(blocks, dtype=bool)
    np.put_along_axis(mask, order, True, axis=2)
    mask = mask.reshape(3, 64)
    x = np.where(mask, x, 0)
    x[0, np.flatnonzero(mask[0])[:3]] = 0           # kept positions that are zero
    result = run_sparse(session, w, x, scale, shift, schedule=MASK, mask=mask)
    assert result.mapping.order == BEAT_MAJOR        # the bank engine's default
    assert result.mapping.kept == (32, 32, 32)
    assert result.mapping.token_beats == (4, 4, 4)
    assert np.array_equal(result.outputs, expected(w, x, scale, shift))


@pytest.mark.verilator
def test_one_token_vector(full_speed):
    w, x, scale, shift = sparse_layer(8, 16, 1, 0.3, seed=5)
    result = run_sparse(full_speed, w, x[0])
    assert result.outputs.shape == (8,)
    assert np.array_equal(result.outputs, expected(w, x, scale, shift)[0])


@pytest.mark.verilator
def test_invalid_byte_is_flagged_and_decoded_as_zero_weights(full_speed):
    w, x, scale, shift = sparse_layer(8, 16, 1, 1.0, seed=6)
    columns = kept_columns(x)[0]
    plan = plan_sparse(pack_columns(w, 4), x[0], columns, None, None, SPARSE)
    plan.weight_bytes[0, 0] = 255                   # tile 0, beat 0, lane 0's column
    result = full_speed.run_plan(plan)
    assert result.error & 1
    zeroed = w.copy()
    zeroed[0:4, columns[0]] = 0
    assert np.array_equal(result.outputs[0], expected(zeroed, x, scale, shift)[0])


@pytest.mark.verilator
def test_wrong_engine_or_inputs():
    w, x, scale, shift = sparse_layer(8, 16, 1, 0.5, seed=8)
    dense = EngineSession(EngineParams(lanes=8, rows=4, max_beats=8))
    with pytest.raises(ValueError, match="weight_order='columns'"):
        run_sparse(dense, w, x, scale, shift)
    with pytest.raises(ValueError, match="sim.sparse.plan_sparse"):
        plan_layer(w, x, scale, shift, SPARSE)
    columns = EngineSession(SPARSE)                  # not started: the checks come first
    with pytest.raises(ValueError, match="int8"):
        run_sparse(columns, w, x * 4, scale, shift)
    with pytest.raises(ValueError, match="needs the mask"):
        run_sparse(columns, w, x, scale, shift, schedule=MASK)
    wide = np.zeros((132, 16), dtype=np.int8)           # 33 tiles, the bank holds 32
    with pytest.raises(ValueError, match="accumulator bank of at least 33 tiles"):
        run_sparse(columns, wide, x)
    with pytest.raises(ValueError, match="scale and shift need an engine with the output"):
        run_sparse(columns, w, x, 1, 0)
    with pytest.raises(ValueError, match="order must be one of"):
        run_sparse(columns, w, x, scale, shift, order="rows")


@pytest.mark.verilator
def test_a48_decoder_on_the_sparse_dataflow(session):
    """BitNet a4.8 with Q-Sparse Top-K on the tiny model, every BitLinear through the
    sparse RTL (random stalls): the same tokens and bit-identical logits as the golden
    model, and fewer columns than the dense dataflow streams."""
    weights = MasterWeights(TINY, random_master_weights(TINY, seed=3))
    options = dict(activations="a4.8", topk=0.5)
    golden = generate(Decoder(weights, **options), [5, 9, 200], 2)
    core = EngineCore(session)
    rtl = generate(Decoder(weights, core=core, **options), [5, 9, 200], 2)
    assert rtl.generated_ids == golden.generated_ids
    assert np.array_equal(rtl.logits, golden.logits)
    assert len(core.calls) == 7 * TINY.layers * 3        # prefill + 2 decode steps
    kept = sum(c["kept"] for c in core.calls)
    columns = sum(c["tokens"] * (TINY.ffn if c["name"] == "down" else TINY.hidden)
                  for c in core.calls)
    assert kept <= 0.5 * columns
