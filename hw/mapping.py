"""How a BitLinear is tiled onto the layer engine: tiles, stream beats and bytes.

The one place that counts them. ``hw.engine.LayerMapping`` adds the RTL's latency to
give the cycle model; the RTL driver (``sim.plans``, ``sim.session``), ``ternary-accel perf``, the
whole-model accounting (:mod:`model.accounting`) and the energy model all use these
counts, so the bytes the simulator streams are the bytes the reports charge.

For each token, for each of the ``row_tiles`` tiles of ``rows`` outputs, the tile's
``col_beats`` beats; a beat carries ``lanes`` int8 activations and ``rows * lanes``
weight codes packed 5 per byte (:func:`model.encoding.packed_length`: at most 4 padding
trits a beat).

Weight reuse across tokens (``batch``, the engine's ``tokens`` parameter T): the tokens
go through the engine in batches of up to T; for each batch, for each tile, for each
beat, the weight beat is read once and applied to the batch's tokens on consecutive
cycles, so the weights are streamed once per batch instead of once per token.

The weight port (``port_bits``): a beat arrives as ``port_words_per_beat`` words of the
port, each holding :func:`port_codes_per_word` codes of the ``packing``
(:data:`PACKINGS`); the last word of a beat is padded with zero weights. Without a port
width (``None``) a beat is one word of the whole beat (today's engine: 5 trits per byte
across the beat).
"""

from dataclasses import dataclass, field

import numpy as np

from ternary_accel.model.encoding import (BASE3, CODES2, DEFAULT_PACKING, PACKINGS, TRITS3_IN5,
                                         check_packing,
                       check_port_bits, codes_per_word, packed_length)
from ternary_accel.model.quant import ACT_WIDTH
from ternary_accel.model.sparse import BEAT_MAJOR, TILE_MAJOR, check_order, column_bytes

__all__ = ["DEFAULT_LANES", "DEFAULT_ROWS", "ROWS_ORDER", "COLUMNS_ORDER", "WEIGHT_ORDERS", "bytes_per_beat", "check_layer_shape",
           "LayerTiling", "PACKINGS", "BASE3", "TRITS3_IN5", "CODES2",
           "port_codes_per_word", "beat_port_bits", "port_words_per_beat",
           "default_packing", "weight_beat_bytes", "sparse_beats", "burst_bytes", "SparseTiling"]

def _check_port_bits(port_bits):
    return None if port_bits is None else check_port_bits(port_bits)


def port_codes_per_word(packing, port_bits):
    """Weight codes one ``port_bits``-bit word of the ``packing`` carries
    (:func:`model.encoding.codes_per_word`)."""
    return codes_per_word(packing, port_bits)


def beat_port_bits(codes, packing):
    """The narrowest whole-byte word that holds a beat of ``codes`` codes (the port of an
    engine without a ``port_bits``: one word per beat)."""
    check_packing(packing)
    if packing == BASE3:
        return 8 * packed_length(codes)
    if packing == TRITS3_IN5:
        return 8 * -(-5 * -(-codes // 3) // 8)
    return 8 * -(-2 * codes // 8)


def port_words_per_beat(codes, packing, port_bits):
    """Port words of one beat of ``codes`` codes (1 without a ``port_bits``)."""
    if port_bits is None:
        return 1
    return -(-codes // port_codes_per_word(packing, port_bits))

#: The engine of the BitNet b1.58 2B4T figures, which the tilings and the cost models
#: assume unless told otherwise: 16 rows x 32 lanes, 512 MACs per cycle (the defaults of
#: :class:`ternary_accel.hw.params.EngineParams`).
DEFAULT_LANES, DEFAULT_ROWS = 32, 16

#: How a weight beat is packed: the tile's ``rows x lanes`` codes row-major, 5 per byte
#: (the dense dataflow), or ``lanes`` stored columns (the sparse dataflow).
ROWS_ORDER, COLUMNS_ORDER = "rows", "columns"
WEIGHT_ORDERS = (ROWS_ORDER, COLUMNS_ORDER)


def default_packing(assembled):
    """The packing of an engine's weight words when none is given: ``3in5``
    (:data:`ternary_accel.model.encoding.DEFAULT_PACKING`) when beats are assembled from
    port words (weight reuse or a port width: the same bits a weight as ``base3`` on a
    128-bit port, a fifth of the decoder), ``base3`` for whole beats."""
    return DEFAULT_PACKING if assembled else BASE3


def bytes_per_beat(lanes, rows):
    """Packed weight bytes of one beat: the ``rows * lanes`` codes, 5 per byte."""
    return packed_length(rows * lanes)


def check_layer_shape(out_features, in_features, *, lanes, rows, max_beats=None):
    """Raise ``ValueError`` unless an ``out_features x in_features`` layer tiles onto an
    engine of ``lanes`` x ``rows`` (and fits ``max_beats`` beats per dot product)."""
    if out_features % rows:
        raise ValueError(f"out_features {out_features} is not a multiple of the engine's "
                         f"rows ({rows})")
    if in_features % lanes:
        raise ValueError(f"in_features {in_features} is not a multiple of the engine's "
                         f"lanes ({lanes})")
    if max_beats is not None and in_features // lanes > max_beats:
        raise ValueError(f"in_features {in_features} needs {in_features // lanes} beats, "
                         f"more than the engine's max_beats ({max_beats})")


@dataclass(frozen=True)
class LayerTiling:
    """One ``out_features x in_features`` BitLinear over ``tokens`` tokens on an engine
    of ``lanes`` x ``rows``: its tiles, beats and streamed bytes.

    Raises
    ------
    ValueError
        If ``tokens`` is not a positive integer or the layer does not tile onto the
        engine (:func:`check_layer_shape`).
    """

    out_features: int
    in_features: int
    tokens: int = 1
    lanes: int = DEFAULT_LANES
    rows: int = DEFAULT_ROWS
    #: The engine's T: tokens that share each weight beat (1: no reuse).
    batch: int = field(default=1, kw_only=True)
    #: Width of the weight port in bits (None: one whole beat per word).
    port_bits: int = field(default=None, kw_only=True)
    #: The packing of the port's words (:data:`PACKINGS`); None: base3 for whole beats,
    #: else :data:`model.encoding.DEFAULT_PACKING`.
    packing: str = field(default=None, kw_only=True)

    def __post_init__(self):
        if self.packing is None:
            object.__setattr__(self, "packing", default_packing(
                getattr(self, "batch", 1) > 1 or self.port_bits is not None))
        check_packing(self.packing)
        _check_port_bits(self.port_bits)
        for name in ("tokens", "lanes", "rows", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        check_layer_shape(self.out_features, self.in_features, lanes=self.lanes,
                          rows=self.rows, max_beats=getattr(self, "max_beats", None))

    @property
    def row_tiles(self):
        return self.out_features // self.rows

    @property
    def col_beats(self):
        """Beats of one dot product (one tile of one token)."""
        return self.in_features // self.lanes

    @property
    def beats(self):
        """Beats streamed for the whole layer: one per clock, unstalled."""
        return self.tokens * self.row_tiles * self.col_beats

    @property
    def result_words(self):
        """Result vectors (``rows`` outputs each): one per token and tile."""
        return self.tokens * self.row_tiles

    @property
    def codes_per_beat(self):
        return self.rows * self.lanes

    @property
    def port_bits_used(self):
        """The port's width in bits: ``port_bits``, or the whole beat's word."""
        return (beat_port_bits(self.codes_per_beat, self.packing)
                if self.port_bits is None else self.port_bits)

    @property
    def port_words_per_beat(self):
        """Port words of one weight beat (W)."""
        return port_words_per_beat(self.codes_per_beat, self.packing, self.port_bits)

    @property
    def weight_bytes_per_beat(self):
        """Bytes of one weight beat on the port: its words, padding included
        (:func:`bytes_per_beat` without a port width, base-3)."""
        return self.port_words_per_beat * self.port_bits_used // 8

    @property
    def batches(self):
        """Passes over the weights: ``ceil(tokens / batch)``."""
        return -(-self.tokens // self.batch)

    @property
    def batch_sizes(self):
        """Tokens of each pass: full batches, then the remainder."""
        full, rest = divmod(self.tokens, self.batch)
        return (self.batch,) * full + ((rest,) if rest else ())

    @property
    def weight_beats(self):
        """Weight beats streamed for the whole layer: each tile's beats once per batch."""
        return self.batches * self.row_tiles * self.col_beats

    @property
    def weight_bytes_per_token(self):
        """Packed weight bytes of one pass over the layer (read once per batch)."""
        return self.row_tiles * self.col_beats * self.weight_bytes_per_beat

    @property
    def weight_bytes(self):
        """Packed weight bytes streamed for all ``tokens`` (once per batch)."""
        return self.weight_beats * self.weight_bytes_per_beat

    @property
    def activation_bytes(self):
        """int8 activation bytes streamed (each token's row once per row tile)."""
        return self.beats * self.lanes * ACT_WIDTH // 8


# The sparse dataflow (:mod:`ternary_accel.model.sparse`): each token's kept columns only.

def sparse_beats(kept, lanes):
    """Beats of one token's dot product: ``ceil(kept / lanes)``, at least 1."""
    return max(1, -(-int(kept) // lanes))


def burst_bytes(columns, in_features, rows, burst, *, order=TILE_MAJOR, row_tiles=1):
    """Bytes a memory read in whole ``burst``-byte bursts delivers for one token's kept
    ``columns``, every tile's.

    ``order="tiles"``: each tile's ``in_features`` stored columns are contiguous from a
    burst boundary, and every burst that holds a byte of a kept column is read whole. At
    4 bytes a column (16 rows) a 64-byte burst holds 16 columns, so at 84 % zeros 94 %
    of the bursts are still needed (``1 - 0.84**16``).
    ``order="beats"``: each column of the layer (``row_tiles * column_bytes`` bytes) is
    contiguous from a burst boundary: a kept column costs its bursts, nothing else.
    """
    width = column_bytes(rows)
    check_order(order)
    for name, value in (("burst", burst), ("row_tiles", row_tiles)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    c = np.asarray(columns, dtype=np.int64)
    if c.size and (c.min() < 0 or c.max() >= in_features):
        raise ValueError(f"columns must be in 0..{in_features - 1}")
    if order == BEAT_MAJOR:
        return int(c.size) * -(-row_tiles * width // burst) * burst
    first, last = (c * width) // burst, (c * width + width - 1) // burst
    touched = np.unique(np.concatenate([np.arange(f, l + 1) for f, l in zip(first, last)])
                        if c.size else np.zeros(0, dtype=np.int64))
    return int(touched.size) * burst * row_tiles


@dataclass(frozen=True)
class SparseTiling:
    """One ``out_features x in_features`` BitLinear on the sparse dataflow of an engine of
    ``lanes`` x ``rows``: for each token (``kept`` columns each), its compacted beats for
    every row tile, in the loop ``order``.

    Attributes
    ----------
    kept : tuple of int
        Columns kept per token (0..in_features).
    order : str
        ``"tiles"`` or ``"beats"`` (:data:`ORDERS`): the beats and bytes are the same;
        ``"beats"`` needs an accumulator for every output (:attr:`accumulators`).

    Raises
    ------
    ValueError
        If the layer does not tile onto the engine or a count is out of range.
    """

    out_features: int
    in_features: int
    kept: tuple
    lanes: int = DEFAULT_LANES
    rows: int = DEFAULT_ROWS
    order: str = TILE_MAJOR

    def __post_init__(self):
        check_order(self.order)
        for name in ("lanes", "rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        # A token's beats, not the dense dot product's, must fit the accumulator: the
        # engine's mapping checks them against max_beats.
        check_layer_shape(self.out_features, self.in_features, lanes=self.lanes,
                          rows=self.rows)
        kept = tuple(self.kept)
        if not kept:
            raise ValueError("kept must have one count per token (at least one token)")
        for count in kept:
            if isinstance(count, bool) or not isinstance(count, (int, np.integer)) \
                    or not 0 <= count <= self.in_features:
                raise ValueError(f"kept columns per token must be integers in "
                                 f"0..{self.in_features}, not {count!r}")
        object.__setattr__(self, "kept", tuple(int(c) for c in kept))

    @property
    def tokens(self):
        return len(self.kept)

    @property
    def row_tiles(self):
        return self.out_features // self.rows

    @property
    def dense_col_beats(self):
        """Beats of one dense dot product, for comparison."""
        return self.in_features // self.lanes

    @property
    def token_beats(self):
        """Beats of each token's dot product (one tile): :func:`sparse_beats`."""
        return tuple(sparse_beats(c, self.lanes) for c in self.kept)

    @property
    def beats(self):
        """Beats streamed for the whole layer: each token's beats for every tile."""
        return self.row_tiles * sum(self.token_beats)

    @property
    def result_words(self):
        return self.tokens * self.row_tiles

    @property
    def density(self):
        """Kept columns over all columns, over the tokens."""
        return sum(self.kept) / (self.tokens * self.in_features)

    @property
    def accumulators(self):
        """Accumulators the order needs: a tile's ``rows``, or every output."""
        return self.rows if self.order == TILE_MAJOR else self.out_features

    @property
    def column_bytes(self):
        return column_bytes(self.rows)

    @property
    def weight_bytes_per_beat(self):
        """Bytes of one weight beat on the engine's port: ``lanes`` columns."""
        return self.lanes * self.column_bytes

    @property
    def weight_bytes(self):
        """Weight bytes fetched from memory: every kept column of every tile, once per
        token (the padding lanes are zeros the fetcher makes up, no memory read)."""
        return self.row_tiles * sum(self.kept) * self.column_bytes

    @property
    def port_bytes(self):
        """Bytes across the engine's weight port, padding lanes included."""
        return self.beats * self.weight_bytes_per_beat

    @property
    def index_bits(self):
        """Bits of one column index: ``ceil(log2(in_features))``, at least 1."""
        return max(1, (self.in_features - 1).bit_length())

    @property
    def index_bytes(self):
        """Column indices fetched: each kept column's index once per tile (the fetcher
        walks the token's index list for every tile)."""
        return self.row_tiles * sum(self.kept) * self.index_bits / 8

    @property
    def activation_bytes(self):
        """Compacted activation bytes streamed (a token's beats once per row tile)."""
        return self.beats * self.lanes * ACT_WIDTH // 8


def weight_beat_bytes(lanes, rows, weight_order=ROWS_ORDER):
    """Packed bytes of one weight beat: :func:`bytes_per_beat` row-major, or ``lanes``
    columns of :func:`ternary_accel.model.sparse.column_bytes` each."""
    if weight_order == ROWS_ORDER:
        return bytes_per_beat(lanes, rows)
    if weight_order == COLUMNS_ORDER:
        return lanes * column_bytes(rows)
    raise ValueError(f"weight_order must be one of {', '.join(WEIGHT_ORDERS)}, "
                     f"not {weight_order!r}")
