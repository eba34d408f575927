"""How a BitLinear is tiled onto the layer engine: tiles, stream beats and bytes.

The one place that counts them. ``hw.engine.LayerMapping`` adds the RTL's latency to
give the cycle model; the RTL driver (``sim.layer``), ``python -m hw perf``, the
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

from ternary_accel.model.encoding import (BASE3, CODES2, DEFAULT_PACKING, PACKINGS, TRITS3_IN5, check_packing,
                       check_port_bits, codes_per_word, packed_length)
from ternary_accel.model.quant import ACT_WIDTH

__all__ = ["DEFAULT_LANES", "DEFAULT_ROWS", "bytes_per_beat", "check_layer_shape",
           "LayerTiling", "PACKINGS", "BASE3", "TRITS3_IN5", "CODES2",
           "port_codes_per_word", "beat_port_bits", "port_words_per_beat",
           "default_packing"]

def default_packing(assembled):
    """The packing an engine takes when none is given: base3 for whole beats (no word
    padding), :data:`model.encoding.DEFAULT_PACKING` for beats assembled from port
    words."""
    return DEFAULT_PACKING if assembled else BASE3


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

#: The default engine: 16 rows x 32 lanes, 512 MACs per cycle.
DEFAULT_LANES = 32
DEFAULT_ROWS = 16


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
