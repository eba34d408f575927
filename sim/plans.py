"""A layer's streams for the layer engine: the input checks, and the activation and weight
words of each beat, packed once (vectorized) and replayed by the bench.

Dataflow (:class:`ternary_accel.hw.rtl.engine.LayerMapping`): for each token, for each
tile of ``rows`` output rows, the tile's ``N_in / lanes`` beats; a beat carries ``lanes``
activations of the token and the tile's ``rows x lanes`` weight codes packed 5 per byte.
With the output stage each token is rescaled with its own ``(scale, shift)``; without it
the engine returns the exact accumulators. With weight reuse the weights go as port words,
stored once and replayed per batch (:func:`plan_batches`).
"""

from dataclasses import dataclass

import numpy as np

from ternary_accel.model.arith import SCALE_WIDTH, SHIFT_MAX, check_activations
from ternary_accel.model.encoding import TRITS_PER_BYTE, check_ternary, pack_trits

from ternary_accel.hw.layer_host import pack_port_beats
from ternary_accel.hw.params import ROWS_ORDER, EngineParams
from ternary_accel.sim.packing import pack_struct
from ternary_accel.hw.timing import LayerMapping

__all__ = ["LayerPlan", "BatchedPlan", "plan_layer", "plan_batches", "check_layer_inputs",
           "check_shape", "predicted_cycles"]


def check_shape(out_features, in_features, config):
    """Raise ``ValueError`` unless the layer tiles onto ``config``."""
    config.mapping(out_features, in_features)


def predicted_cycles(out_features, in_features, tokens, config):
    """The cycle model (:attr:`hw.engine.LayerMapping.cycles`) of a layer on ``config``."""
    return config.mapping(out_features, in_features, tokens).cycles


def check_layer_inputs(weights, activations, scale, shift, config):
    """Check a quantized layer for ``config`` and return it normalised.

    Parameters
    ----------
    weights : array_like, (N_out, N_in)
        Ternary weights (-1, 0, +1).
    activations : array_like, (T, N_in) or (N_in,)
        int8 activations (int4 with ``config.act_width=4``); a 1-D vector is one token.
    scale, shift : int or array_like (T,), or None
        The output stage's ``S`` and shift per token; required with the output stage,
        refused without it.

    Returns
    -------
    (weights int8 (N_out, N_in), activations int64 (T, N_in), scale (T,), shift (T,))
        ``scale``/``shift`` are None without the output stage.

    Raises
    ------
    ValueError
        On non-ternary weights, activations outside -128..127 (-8..7), mismatched shapes,
        a shape that does not tile onto the engine, or bad ``scale``/``shift``.
    """
    w = check_ternary(weights)
    if w.ndim != 2:
        raise ValueError(f"weights must be 2-D (N_out, N_in), not shape {w.shape}")
    x = check_activations(activations, act_width=config.act_width)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"activations must be (N_in,) or (T, N_in), not shape {x.shape}")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"activations have {x.shape[1]} features but weights have "
                         f"{w.shape[1]} columns")
    check_shape(*w.shape, config)
    if not config.output_stage:
        if scale is not None or shift is not None:
            raise ValueError("scale and shift need an engine with the output stage "
                             "(this one returns raw accumulators)")
        return w, x, None, None
    if scale is None or shift is None:
        raise ValueError("the output stage needs a scale and a shift per token "
                         "(model.arith.scale_to_fixed)")
    tokens = x.shape[0]
    checked = []
    for name, value, top in (("scale", scale, (1 << SCALE_WIDTH) - 1), ("shift", shift,
                                                                          SHIFT_MAX)):
        v = np.asarray(value)
        if not np.issubdtype(v.dtype, np.integer):
            raise ValueError(f"{name} must be integers, not dtype {v.dtype}")
        v = np.broadcast_to(v.astype(np.int64), (tokens,)) if v.ndim == 0 else \
            v.astype(np.int64)
        if v.shape != (tokens,):
            raise ValueError(f"{name} must have one value per token ({tokens}), "
                             f"not shape {v.shape}")
        if np.any((v < 0) | (v > top)):
            raise ValueError(f"{name} must be in 0..{top}")
        checked.append(v)
    return w, x, checked[0], checked[1]


@dataclass
class LayerPlan:
    """The streams of one layer, each beat stored once.

    Attributes
    ----------
    mapping : hw.engine.LayerMapping
    token_words : list of int
        Activation payload words of each token's ``col_beats`` beats, (token, beat)
        order; a token's beats are the same for every row tile.
    weight_bytes : numpy.ndarray of uint8, (row_tiles * col_beats, bytes_per_beat)
        The packed weight beats, (tile, beat) order; the same for every token.
    """

    mapping: LayerMapping
    token_words: list
    weight_bytes: np.ndarray
    #: With weight reuse: the tokens of each batch of this run (the engine's ``batch``
    #: port); the stored words are then the batched streams (:func:`plan_batches`).
    batch_size: int = None

    @property
    def tiles(self):
        return self.mapping.result_words

    @property
    def batches(self):
        return 1 if self.batch_size is None else self.tokens // self.batch_size

    def order_outputs(self, outputs):
        """The recorded result vectors (stream order) as (tokens, out_features)."""
        outputs = np.asarray(outputs)
        if self.batch_size is None:
            return outputs.reshape(self.tokens, self.out_features)
        tiles, rows = self.mapping.row_tiles, self.mapping.rows
        return (outputs.reshape(self.batches, tiles, self.batch_size, rows)
                .transpose(0, 2, 1, 3).reshape(self.tokens, self.out_features))

    @property
    def tokens(self):
        return self.mapping.tokens

    @property
    def out_features(self):
        return self.mapping.out_features

    @property
    def act_words(self):
        """Activation payload words of every beat in stream order (token, tile, beat)."""
        beats = self.mapping.col_beats
        if self.batch_size is not None:
            per = beats * self.batch_size
            return [word for q in range(self.batches)
                    for word in self.token_words[q * per:(q + 1) * per]
                    * self.mapping.row_tiles]
        return [word for t in range(self.tokens)
                for word in self.token_words[t * beats:(t + 1) * beats]
                * self.mapping.row_tiles]

    @property
    def wgt_words(self):
        """Weight payload words of every beat in stream order (token, tile, beat)."""
        return [int.from_bytes(row.tobytes(), "little") for row in self.weight_bytes] \
            * (self.tokens if self.batch_size is None else self.batches)

    @property
    def descriptors(self):
        """The stream order as loop nests over the stored words (``sim.harness``):
        ``{stream: (inner, middle, outer, middle_stride, outer_stride)}`` for
        ``act`` and ``wgt``: for each token, for each row tile, the tile's beats; with
        weight reuse, for each batch, for each row tile, the tile's beats, each beat's
        port words once and the batch's activation beats."""
        beats, tiles, tokens = self.mapping.col_beats, self.mapping.row_tiles, self.tokens
        if self.batch_size is not None:
            per = beats * self.batch_size
            return {"act": (per, tiles, self.batches, 0, per),
                    "wgt": (len(self.weight_bytes), 1, self.batches, 0, 0)}
        return {"act": (beats, tiles, tokens, 0, beats),
                "wgt": (beats, tiles, tokens, beats, 0)}


@dataclass
class BatchedPlan:
    """A layer on an engine with weight reuse: one :class:`LayerPlan` per run (the full
    batches of T tokens, then the remainder), each with its ``batch_size``."""

    mapping: LayerMapping
    runs: list

    @property
    def tokens(self):
        return self.mapping.tokens

    @property
    def out_features(self):
        return self.mapping.out_features


def plan_layer(weights, activations, scale=None, shift=None, config=None):
    """Check, tile and pack a quantized layer for the engine (vectorized).

    Parameters are those of :func:`check_layer_inputs`.

    Returns
    -------
    LayerPlan
    """
    from ternary_accel.hw.rtl.matmul import act_layout
    config = EngineParams() if config is None else config
    if config.weight_order != ROWS_ORDER:
        raise ValueError(f"this engine takes weight beats in {config.weight_order!r} order "
                         f"(the sparse dataflow): plan with sim.sparse.plan_sparse")
    w, x, scale, shift = check_layer_inputs(weights, activations, scale, shift, config)
    if config.assembled:
        return plan_batches(w, x, scale, shift, config)
    mapping = config.mapping(w.shape[0], w.shape[1], x.shape[0])
    m, k = config.rows, config.lanes
    tiles_r, beats_c, tokens = mapping.row_tiles, mapping.col_beats, mapping.tokens
    # Weight beats, (tile, beat) order: the tile's rows x lanes codes, padded to whole
    # bytes with zero weights, packed.
    per_beat = mapping.weight_bytes_per_beat * TRITS_PER_BYTE
    tiles = w.reshape(tiles_r, m, beats_c, k).transpose(0, 2, 1, 3).reshape(-1, m * k)
    tiles = np.pad(tiles, ((0, 0), (0, per_beat - m * k)))
    packed = pack_trits(tiles.reshape(-1)).reshape(-1, mapping.weight_bytes_per_beat)
    # Activation beats of each token, (token, beat) order, the last beat marked.
    last = np.zeros(tokens * beats_c, dtype=np.int64)
    last[beats_c - 1::beats_c] = 1
    fields = {"data": x.reshape(-1, k), "last": last}
    if config.output_stage:
        fields.update(scale=np.repeat(scale, beats_c), shift=np.repeat(shift, beats_c))
    token_words = pack_struct(act_layout(k, config.output_stage, config.act_width), **fields)
    return LayerPlan(mapping, token_words, packed)


def plan_batches(w, x, scale, shift, config):
    """The batched streams of a checked layer (:func:`plan_layer` on an engine with
    weight reuse or a weight port): the weights as port words, (tile, beat, word)
    order, stored once and replayed per batch; each batch's activations in (beat,
    token) order, replayed per tile."""
    from ternary_accel.hw.rtl.matmul import act_layout
    mapping = config.mapping(w.shape[0], w.shape[1], x.shape[0])
    m, k = config.rows, config.lanes
    tiles_r, beats_c = mapping.row_tiles, mapping.col_beats
    beats = w.reshape(tiles_r, m, beats_c, k).transpose(0, 2, 1, 3).reshape(-1, m * k)
    words = pack_port_beats(beats, mapping)
    runs, start = [], 0
    for size, batches in mapping.runs:
        count = size * batches
        xs = x[start:start + count].reshape(batches, size, beats_c, k)
        last = np.zeros((batches, beats_c, size), dtype=np.int64)
        last[:, -1, :] = 1
        fields = {"data": xs.transpose(0, 2, 1, 3).reshape(-1, k), "last": last.reshape(-1)}
        if config.output_stage:
            for name, value in (("scale", scale), ("shift", shift)):
                v = value[start:start + count].reshape(batches, 1, size)
                fields[name] = np.broadcast_to(v, (batches, beats_c, size)).reshape(-1)
        token_words = pack_struct(act_layout(k, config.output_stage, config.act_width),
                                  **fields)
        run_mapping = config.mapping(w.shape[0], w.shape[1], count)
        runs.append(LayerPlan(run_mapping, token_words, words, batch_size=size))
        start += count
    return BatchedPlan(mapping, runs)

