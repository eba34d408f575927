"""How a BitLinear is tiled onto the layer engine: tiles, stream beats and bytes.

The one place that counts them. ``hw.engine.LayerMapping`` adds the RTL's latency to
give the cycle model; the RTL driver (``sim.layer``), ``python -m hw perf``, the
whole-model accounting (:mod:`model.accounting`) and the energy model all use these
counts, so the bytes the simulator streams are the bytes the reports charge.

For each token, for each of the ``row_tiles`` tiles of ``rows`` outputs, the tile's
``col_beats`` beats; a beat carries ``lanes`` int8 activations and ``rows * lanes``
weight codes packed 5 per byte (:func:`model.encoding.packed_length`: at most 4 padding
trits a beat). Weights are streamed once per token: the engine has no weight reuse
across tokens yet.
"""

from dataclasses import dataclass

from .encoding import packed_length
from .quant import ACT_WIDTH

__all__ = ["DEFAULT_LANES", "DEFAULT_ROWS", "bytes_per_beat", "check_layer_shape",
           "LayerTiling"]

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

    def __post_init__(self):
        for name in ("tokens", "lanes", "rows"):
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
    def weight_bytes_per_beat(self):
        return bytes_per_beat(self.lanes, self.rows)

    @property
    def weight_bytes_per_token(self):
        """Packed weight bytes of the whole layer (read once per token)."""
        return self.row_tiles * self.col_beats * self.weight_bytes_per_beat

    @property
    def weight_bytes(self):
        """Packed weight bytes streamed for all ``tokens``."""
        return self.beats * self.weight_bytes_per_beat

    @property
    def activation_bytes(self):
        """int8 activation bytes streamed (each token's row once per row tile)."""
        return self.beats * self.lanes * ACT_WIDTH // 8
