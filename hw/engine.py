"""The layer engine: a matmul unit fed with base-3 packed weights.

Dataflow (see the README's "Layers" section): the unit holds no weights. For each token
and each tile of ``rows`` output rows, the host streams the tile's ``N_in / lanes``
weight beats, packed 5 trits per byte (``ceil(rows * lanes / 5)`` bytes a beat, 1.6 bits
per weight plus at most 4 padding trits a beat), beside the token's activations cut into
``lanes``-wide beats; the unit accumulates across the beats and emits the tile's
``rows`` outputs through the fixed-point output stage. Beats of consecutive tiles and
tokens follow each other with no bubble.
"""

from dataclasses import dataclass

from amaranth.hdl import Module, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from model.encoding import packed_length
from model.quant import ACT_WIDTH, TERNARY

from .lanes import GENERIC
from .matmul import ErrorLayout, MatmulUnit
from .unpack import ROM, TritUnpacker

__all__ = ["LayerEngine", "LayerMapping", "bytes_per_beat", "check_layer_shape",
           "layer_cycles", "DEFAULT_LANES", "DEFAULT_ROWS"]

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
class LayerMapping:
    """How one ``out_features x in_features`` BitLinear over ``tokens`` tokens maps onto
    an engine of ``lanes`` x ``rows``: the one place that counts tiles, stream beats,
    bytes and cycles (the RTL driver, ``hw perf`` and the reports use it).

    For each token, for each of the ``row_tiles`` tiles of ``rows`` outputs, the tile's
    ``col_beats`` beats; a beat carries ``lanes`` int8 activations and ``rows * lanes``
    weight codes packed 5 per byte. Weights are streamed once per token.

    Raises
    ------
    ValueError
        If the layer does not tile onto the engine (:func:`check_layer_shape`).
    """

    out_features: int
    in_features: int
    tokens: int = 1
    lanes: int = DEFAULT_LANES
    rows: int = DEFAULT_ROWS
    levels_per_stage: int = 1
    output_stage: bool = True
    max_beats: int = None

    def __post_init__(self):
        if isinstance(self.tokens, bool) or not isinstance(self.tokens, int) \
                or self.tokens < 1:
            raise ValueError(f"tokens must be a positive integer, not {self.tokens!r}")
        check_layer_shape(self.out_features, self.in_features, lanes=self.lanes,
                          rows=self.rows, max_beats=self.max_beats)

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

    @property
    def latency(self):
        from .matmul import unit_latency
        return unit_latency(self.lanes, self.levels_per_stage, self.output_stage)

    @property
    def cycles(self):
        """The cycle model: from the first beat to the last result, no stall. One beat
        per clock; tile and token switches cost nothing; then the unit's latency."""
        return self.beats + self.latency


def layer_cycles(out_features, in_features, tokens, *, lanes, rows, levels_per_stage=1,
                 output_stage=True):
    """Cycles from a layer's first beat to its last result, no stall
    (:attr:`LayerMapping.cycles`)."""
    return LayerMapping(out_features, in_features, tokens, lanes, rows, levels_per_stage,
                        output_stage).cycles


class LayerEngine(wiring.Component):
    """A :class:`TritUnpacker` in front of a ternary :class:`MatmulUnit` (with the
    output stage by default).

    Parameters
    ----------
    lanes, rows, max_beats, levels_per_stage : int
        As for :class:`MatmulUnit`.
    fabric : str
        As for :class:`MatmulUnit` (``"ecp5"``: the Fmax of the FPGA reports).
    decoder : str
        The unpacker's byte decoder (:class:`TritUnpacker`): ``"rom"`` (the default, the
        smaller and faster one in ``make bench-area``) or ``"mulshift"``.
    output_stage : bool
        Rescale each result to ``OUT_WIDTH`` bits with the token's ``(scale, shift)``
        (the default), or emit the raw accumulators (``acc_width(lanes * max_beats)``
        bits; ``act`` then has no ``scale``/``shift``).

    Attributes
    ----------
    act : stream, in
        As :class:`MatmulUnit` ``act`` (with ``scale`` and ``shift`` when
        ``output_stage``).
    wgt : stream, in
        Payload ``ArrayLayout(unsigned(8), bytes_per_beat)``: the beat's codes, row-major,
        packed by :func:`model.encoding.pack_trits`.
    res : stream, out
        ``rows`` results (``OUT_WIDTH`` bits, or accumulators without the output stage).
    error : Signal(ErrorLayout), out
        ``code``: an invalid packed byte (243..255) was received; ``overflow`` as in
        the unit.
    """

    def __init__(self, *, lanes, rows, max_beats=1024, levels_per_stage=1, fabric=GENERIC,
                 decoder=ROM, output_stage=True):
        self._unit = MatmulUnit(lanes=lanes, rows=rows, weight_mode=TERNARY,
                                output_stage=output_stage, max_beats=max_beats,
                                levels_per_stage=levels_per_stage, fabric=fabric)
        self._unpacker = TritUnpacker(bytes_per_beat=bytes_per_beat(lanes, rows),
                                      decoder=decoder)
        super().__init__({
            "act": In(stream.Signature(self._unit.act_layout)),
            "wgt": In(stream.Signature(data.ArrayLayout(unsigned(8),
                                                        bytes_per_beat(lanes, rows)))),
            "res": Out(stream.Signature(self._unit.res_layout)),
            "error": Out(ErrorLayout),
        })

    @property
    def unit(self):
        return self._unit

    @property
    def unpacker(self):
        return self._unpacker

    @property
    def latency(self):
        return self._unit.latency

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = unit = self._unit
        m.submodules.unpacker = unpacker = self._unpacker
        wiring.connect(m, wiring.flipped(self.act), unit.act)
        wiring.connect(m, wiring.flipped(self.res), unit.res)
        wiring.connect(m, wiring.flipped(self.wgt), unpacker.i)
        codes = unit.rows * unit.lanes
        m.d.comb += [
            unit.wgt.payload.as_value().eq(unpacker.o.payload.as_value()[:2 * codes]),
            unit.wgt.valid.eq(unpacker.o.valid),
            unpacker.o.ready.eq(unit.wgt.ready),
            self.error.code.eq(unit.error.code | unpacker.invalid),
            self.error.overflow.eq(unit.error.overflow),
        ]
        return m
