"""Host side of the sparse dataflow (:mod:`model.sparse`) on the layer engine built with
``weight_order="columns"``: compacting each token, gathering its weight columns, and
running the compacted beats through the RTL.

For each token the kept columns (its nonzero activations, or a Block Q-Sparse mask's
positions) are compacted into ``lanes``-wide activation beats; for each row tile the
matching stored columns (:func:`model.sparse.pack_columns`) are gathered into weight
beats of ``lanes`` columns, the last beat's spare lanes filled with zero columns. The
gather is the driver's (a model of the fetcher, which reads only the kept columns); the
RTL proves that the engine accumulates the compacted beats bit-exact to the dense golden
model in the cycles of :class:`hw.engine.SparseLayerMapping`.

Both loop orders of :mod:`model.sparse` run: ``"tiles"`` (each tile's beats, the
unit's registers) and, on an engine with an accumulator bank (``acc_tiles``), ``"beats"``
(each beat for every tile: the token's activation beat is replayed ``row_tiles`` times
in a row, the weights follow in (beat, tile) order, the bank holds every tile's sums).

Each token is one run of the engine (its beats differ from the next token's), so a
layer's cycles are the sum of its tokens' (:meth:`hw.engine.SparseLayerMapping.token_cycles`:
each pays the unit's latency once).
"""

import time
from dataclasses import dataclass, field

import numpy as np

from ternary_accel.model.encoding import pack_trits
from ternary_accel.model.sparse import BEAT_MAJOR, NONZERO, TILE_MAJOR, check_order, column_bytes, kept_columns, pack_columns

from ternary_accel.hw.params import EngineParams
from ternary_accel.sim.plans import check_layer_inputs
from ternary_accel.sim.packing import pack_struct
from ternary_accel.hw.params import COLUMNS_ORDER
from ternary_accel.hw.timing import SparseLayerMapping

__all__ = ["SparsePlan", "SparseResult", "plan_sparse", "run_sparse", "sparse_config"]


def sparse_config(**kwargs):
    """An :class:`sim.config.EngineParams` of the sparse dataflow (``weight_order="columns"``)."""
    return EngineParams(weight_order=COLUMNS_ORDER, **kwargs)


@dataclass
class SparsePlan:
    """The streams of one token of a layer on the sparse dataflow, each beat stored once
    (the interface of :class:`sim.plans.LayerPlan`).

    Attributes
    ----------
    mapping : hw.engine.SparseLayerMapping
        The token's mapping (one token).
    token_words : list of int
        The token's compacted activation beats.
    weight_bytes : numpy.ndarray of uint8, (row_tiles * beats, lanes * column_bytes)
        The gathered weight beats in stream order: (tile, beat), or (beat, tile) in the
        beat-major order.
    columns : numpy.ndarray of int64
        The kept columns, ascending.
    """

    mapping: SparseLayerMapping
    token_words: list
    weight_bytes: np.ndarray
    columns: np.ndarray

    @property
    def order(self):
        return self.mapping.order

    @property
    def bank_tiles(self):
        """The tiles the engine's accumulator bank interleaves (its ``tiles`` port)."""
        return self.mapping.row_tiles if self.order == BEAT_MAJOR else 1

    @property
    def tiles(self):
        return self.mapping.result_words

    @property
    def tokens(self):
        return 1

    @property
    def out_features(self):
        return self.mapping.out_features

    @property
    def beats(self):
        return self.mapping.token_beats[0]

    @property
    def act_words(self):
        """Activation payload words in stream order."""
        tiles = self.mapping.row_tiles
        if self.order == BEAT_MAJOR:
            return [word for word in self.token_words for _ in range(tiles)]
        return self.token_words * tiles

    @property
    def wgt_words(self):
        """Weight payload words in stream order."""
        return [int.from_bytes(row.tobytes(), "little") for row in self.weight_bytes]

    @property
    def descriptors(self):
        """Loop nests over the stored words (``sim.harness``): the activation beats
        replayed for every row tile (the token's beats per tile, or each beat
        ``row_tiles`` times in a row), the weight beats played once."""
        beats, tiles = self.beats, self.mapping.row_tiles
        if self.order == BEAT_MAJOR:
            return {"act": (1, tiles, beats, 0, 1), "wgt": (tiles * beats, 1, 1, 0, 0)}
        return {"act": (beats, tiles, 1, 0, beats), "wgt": (beats, tiles, 1, beats, 0)}


def plan_sparse(stored, activations, columns, scale, shift, config, order=TILE_MAJOR):
    """Compact one token and gather its weight columns.

    Parameters
    ----------
    stored : numpy.ndarray of uint8, (row_tiles, N_in, column_bytes)
        The layer's weights as :func:`model.sparse.pack_columns` stores them.
    activations : numpy.ndarray of int, (N_in,)
        The token's quantized activations.
    columns : numpy.ndarray of int
        The kept columns, ascending (:func:`model.sparse.kept_columns`).
    scale, shift : int or None
        The token's output-stage factor (None without the output stage).
    config : sim.config.EngineParams
        An engine with ``weight_order="columns"``.
    order : str
        ``"tiles"`` or ``"beats"`` (an engine with ``acc_tiles`` >= the row tiles).

    Returns
    -------
    SparsePlan
    """
    from ternary_accel.hw.rtl.matmul import act_layout
    tiles, n_in, width = stored.shape
    k, m = config.lanes, config.rows
    mapping = SparseLayerMapping(tiles * m, n_in, (len(columns),), lanes=k, rows=m,
                                 order=order, levels_per_stage=config.levels_per_stage,
                                 output_stage=config.output_stage,
                                 max_beats=config.max_beats, acc_tiles=config.acc_tiles,
                                 output_rows=config.output_rows,
                                 act_copies=config.act_copies)
    beats = mapping.token_beats[0]
    slots = beats * k
    # Activation beats: the kept values, the spare lanes zero, the last beat marked.
    values = np.zeros(slots, dtype=np.int64)
    values[:len(columns)] = activations[columns]
    last = np.zeros(beats, dtype=np.int64)
    last[-1] = 1
    fields = {"data": values.reshape(beats, k), "last": last}
    if config.output_stage:
        fields.update(scale=np.full(beats, scale), shift=np.full(beats, shift))
    words = pack_struct(act_layout(k, config.output_stage, config.act_width), **fields)
    # Weight beats: the kept columns of every tile, the spare lanes zero columns.
    gathered = np.empty((tiles, slots, width), dtype=np.uint8)
    gathered[:, :len(columns)] = stored[:, columns]
    gathered[:, len(columns):] = pack_trits(np.zeros(m, dtype=np.int8))
    gathered = gathered.reshape(tiles, beats, k * width)
    if order == BEAT_MAJOR:
        gathered = gathered.transpose(1, 0, 2)
    return SparsePlan(mapping, words, np.ascontiguousarray(gathered).reshape(-1, k * width),
                      np.asarray(columns, dtype=np.int64))


@dataclass
class SparseResult:
    """What one layer on the sparse dataflow gave.

    Attributes
    ----------
    outputs : numpy.ndarray of int64, (T, N_out), or (N_out,) for a 1-D input
    cycles : int
        Simulated cycles, summed over the tokens' runs.
    predicted : int
        The cycle model's count, summed the same way.
    error : int
        The engine's error flags, ORed over the runs.
    mapping : hw.engine.SparseLayerMapping
        The whole layer (every token's kept columns): beats and bytes.
    wall_seconds : float
    timing : dict
        The simulator's seconds by phase, summed over the runs.
    """

    outputs: np.ndarray
    cycles: int
    predicted: int
    error: int
    mapping: SparseLayerMapping
    wall_seconds: float
    timing: dict = field(default_factory=dict)


def run_sparse(session, weights, activations, scale=None, shift=None, *, schedule=NONZERO,
               mask=None, order=None):
    """Run a quantized layer on the sparse dataflow of ``session``'s engine.

    Parameters
    ----------
    session : sim.session.EngineSession
        A session whose engine has ``weight_order="columns"``.
    weights, activations, scale, shift
        As for :func:`sim.plans.check_layer_inputs` (the engine's ``max_beats`` must
        hold a dense dot product: a token may keep every column).
    schedule, mask
        The kept columns (:func:`model.sparse.kept_columns`): ``"nonzero"``, or
        ``"mask"`` with a Block Q-Sparse mask (T, N_in).
    order : str, optional
        ``"tiles"`` or ``"beats"``; by default ``"beats"`` on an engine with an
        accumulator bank, else ``"tiles"``.

    Returns
    -------
    SparseResult

    Raises
    ------
    ValueError
        On an engine without the column order, or the input errors of
        :func:`sim.plans.check_layer_inputs` and :func:`model.sparse.kept_columns`.
    """
    config = session.config
    if config.weight_order != COLUMNS_ORDER:
        raise ValueError(f"the sparse dataflow needs an engine with "
                         f"weight_order='{COLUMNS_ORDER}', not {config.weight_order!r}")
    order = check_order(order or (BEAT_MAJOR if config.acc_tiles else TILE_MAJOR))
    started = time.monotonic()
    single = np.ndim(activations) == 1
    w, x, scale, shift = check_layer_inputs(weights, activations, scale, shift, config)
    if mask is not None and single:
        mask = np.asarray(mask)[None, :]
    kept = kept_columns(x, schedule, mask)
    mapping = SparseLayerMapping(w.shape[0], w.shape[1], tuple(len(c) for c in kept),
                                 lanes=config.lanes, rows=config.rows, order=order,
                                 levels_per_stage=config.levels_per_stage,
                                 output_stage=config.output_stage,
                                 max_beats=config.max_beats, acc_tiles=config.acc_tiles,
                                 output_rows=config.output_rows,
                                 act_copies=config.act_copies)
    stored = pack_columns(w, config.rows)
    assert stored.shape[2] == column_bytes(config.rows)
    outputs, cycles, predicted, error, timing = [], 0, 0, 0, {}
    for t, columns in enumerate(kept):
        plan = plan_sparse(stored, x[t], columns,
                           None if scale is None else int(scale[t]),
                           None if shift is None else int(shift[t]), config, order)
        result = session.run_plan(plan)
        outputs.append(result.outputs[0])
        cycles += result.cycles
        predicted += mapping.token_cycles(t)
        error |= result.error
        for phase, seconds in result.timing.items():
            timing[phase] = timing.get(phase, 0.0) + seconds
    outputs = np.stack(outputs)
    return SparseResult(outputs[0] if single else outputs, cycles, predicted, error,
                        mapping, time.monotonic() - started, timing)
