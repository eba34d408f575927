"""The layer engine: a matmul unit fed with base-3 packed weights.

Dataflow (see the README's "Layers" section): the unit holds no weights. For each token
and each tile of ``rows`` output rows, the host streams the tile's ``N_in / lanes``
weight beats, packed 5 trits per byte (``ceil(rows * lanes / 5)`` bytes a beat, 1.6 bits
per weight plus at most 4 padding trits a beat), beside the token's activations cut into
``lanes``-wide beats; the unit accumulates across the beats and emits the tile's
``rows`` outputs through the fixed-point output stage. Beats of consecutive tiles and
tokens follow each other with no bubble.

With ``weight_order="columns"`` the engine takes the sparse dataflow's beats
(:mod:`model.sparse`): a beat's weights are ``lanes`` stored columns of its tile, each
``packed_length(rows)`` bytes (the column's trits, 5 per byte), so a column the
compacted activations need can be fetched on its own; the unit is the same.
"""

from dataclasses import dataclass

from amaranth.hdl import Module, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from model.encoding import TRITS_PER_BYTE
from model.mapping import (DEFAULT_LANES, DEFAULT_ROWS, LayerTiling, bytes_per_beat,
                           check_layer_shape)
from model.quant import ACT_WIDTH, TERNARY
from model.sparse import BEAT_MAJOR, SparseTiling, column_bytes

from .lanes import GENERIC
from .matmul import ErrorLayout, MatmulUnit
from .unpack import ROM, TritUnpacker

__all__ = ["LayerEngine", "LayerMapping", "SparseLayerMapping", "bytes_per_beat",
           "check_layer_shape", "layer_cycles", "weight_beat_bytes", "WEIGHT_ORDERS",
           "ROWS_ORDER", "COLUMNS_ORDER", "DEFAULT_LANES", "DEFAULT_ROWS"]

#: How a weight beat is packed: the tile's ``rows x lanes`` codes row-major, 5 per byte
#: (the dense dataflow), or ``lanes`` stored columns (the sparse dataflow).
ROWS_ORDER, COLUMNS_ORDER = "rows", "columns"
WEIGHT_ORDERS = (ROWS_ORDER, COLUMNS_ORDER)


def weight_beat_bytes(lanes, rows, weight_order=ROWS_ORDER):
    """Packed bytes of one weight beat: :func:`bytes_per_beat` row-major, or ``lanes``
    columns of :func:`model.sparse.column_bytes` each."""
    if weight_order == ROWS_ORDER:
        return bytes_per_beat(lanes, rows)
    if weight_order == COLUMNS_ORDER:
        return lanes * column_bytes(rows)
    raise ValueError(f"weight_order must be one of {', '.join(WEIGHT_ORDERS)}, "
                     f"not {weight_order!r}")


@dataclass(frozen=True)
class LayerMapping(LayerTiling):
    """:class:`model.mapping.LayerTiling` (tiles, beats, bytes) on a built engine: with
    its pipeline (``levels_per_stage``, ``output_stage``) and ``max_beats``, the RTL's
    latency and the cycle model. The RTL driver, ``hw perf`` and the reports use it.

    Raises
    ------
    ValueError
        If the layer does not tile onto the engine (:func:`check_layer_shape`).
    """

    levels_per_stage: int = 1
    output_stage: bool = True
    max_beats: int = None

    @property
    def latency(self):
        from .matmul import unit_latency
        return unit_latency(self.lanes, self.levels_per_stage, self.output_stage)

    @property
    def cycles(self):
        """The cycle model: from the first beat to the last result, no stall. One beat
        per clock; tile and token switches cost nothing; then the unit's latency."""
        return self.beats + self.latency


@dataclass(frozen=True)
class SparseLayerMapping(SparseTiling):
    """:class:`model.sparse.SparseTiling` on a built engine (``weight_order="columns"``):
    its latency and the cycle model of the sparse dataflow.

    Raises
    ------
    ValueError
        If the layer does not tile onto the engine, or a token keeps more columns than
        ``max_beats`` beats hold.
    """

    levels_per_stage: int = 1
    output_stage: bool = True
    max_beats: int = None
    acc_tiles: int = None

    def __post_init__(self):
        super().__post_init__()
        if self.max_beats is not None and max(self.token_beats) > self.max_beats:
            raise ValueError(f"a token keeps {max(self.kept)} columns, "
                             f"{max(self.token_beats)} beats, more than the engine's "
                             f"max_beats ({self.max_beats})")
        if self.order == BEAT_MAJOR and (self.acc_tiles is None
                                         or self.acc_tiles < self.row_tiles):
            raise ValueError(f"the beat-major order of a layer of {self.row_tiles} row "
                             f"tiles needs an engine with an accumulator bank of at least "
                             f"{self.row_tiles} tiles (acc_tiles={self.acc_tiles})")

    @property
    def latency(self):
        from .matmul import unit_latency
        return unit_latency(self.lanes, self.levels_per_stage, self.output_stage)

    @property
    def cycles(self):
        """From the first beat to the last result, no stall: one compacted beat per
        clock, tokens and tiles back to back, then the unit's latency."""
        return self.beats + self.latency

    def token_cycles(self, token):
        """The cycle model of token ``token`` alone: its beats for every tile, then the
        latency."""
        return self.row_tiles * self.token_beats[token] + self.latency


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
    act_width : int
        As for :class:`MatmulUnit`: 8 (the default) or 4 (BitNet a4.8's int4 inputs,
        two per byte on ``act``).
    weight_order : str
        ``"rows"`` (the default): a beat's ``rows x lanes`` codes row-major, packed 5 per
        byte across the beat; ``"columns"``: ``lanes`` columns of ``packed_length(rows)``
        bytes each (the sparse dataflow, :mod:`model.sparse`).
    decoder : str
        The unpacker's byte decoder (:class:`TritUnpacker`): ``"rom"`` (the default, the
        smaller and faster one in ``make bench-area``) or ``"mulshift"``.
    output_stage : bool
        Rescale each result to ``OUT_WIDTH`` bits with the token's ``(scale, shift)``
        (the default), or emit the raw accumulators (``acc_width(lanes * max_beats)``
        bits; ``act`` then has no ``scale``/``shift``).
    acc_tiles : int, optional
        The unit's accumulator bank (:class:`MatmulUnit`): up to ``acc_tiles`` row tiles
        interleaved beat by beat (the beat-major order of :mod:`model.sparse`), with
        the ``tiles`` port.

    Attributes
    ----------
    act : stream, in
        As :class:`MatmulUnit` ``act`` (with ``scale`` and ``shift`` when
        ``output_stage``).
    wgt : stream, in
        Payload ``ArrayLayout(unsigned(8), weight_beat_bytes(lanes, rows, weight_order))``:
        the beat's codes packed by :func:`model.encoding.pack_trits`, row-major over the
        beat, or column by column (:func:`model.sparse.pack_columns`).
    res : stream, out
        ``rows`` results (``OUT_WIDTH`` bits, or accumulators without the output stage).
    error : Signal(ErrorLayout), out
        ``code``: an invalid packed byte (243..255) was received; ``overflow`` as in
        the unit.
    tiles : Signal, in
        With ``acc_tiles``: as the unit's ``tiles``.
    """

    def __init__(self, *, lanes, rows, max_beats=1024, levels_per_stage=1, fabric=GENERIC,
                 decoder=ROM, output_stage=True, weight_order=ROWS_ORDER,
                 act_width=ACT_WIDTH, acc_tiles=None, **pipeline):
        self._beat_bytes = weight_beat_bytes(lanes, rows, weight_order)
        self._weight_order = weight_order
        self._unit = MatmulUnit(lanes=lanes, rows=rows, weight_mode=TERNARY,
                                output_stage=output_stage, max_beats=max_beats,
                                levels_per_stage=levels_per_stage, fabric=fabric,
                                act_width=act_width, acc_tiles=acc_tiles, **pipeline)
        self._unpacker = TritUnpacker(bytes_per_beat=self._beat_bytes, decoder=decoder)
        ports = {
            "act": In(stream.Signature(self._unit.act_layout)),
            "wgt": In(stream.Signature(data.ArrayLayout(unsigned(8), self._beat_bytes))),
            "res": Out(stream.Signature(self._unit.res_layout)),
            "error": Out(ErrorLayout),
        }
        if acc_tiles is not None:
            ports["tiles"] = In(range(acc_tiles + 1))
        super().__init__(ports)

    @property
    def unit(self):
        return self._unit

    @property
    def unpacker(self):
        return self._unpacker

    @property
    def latency(self):
        return self._unit.latency

    @property
    def weight_order(self):
        return self._weight_order

    @property
    def act_width(self):
        return self._unit.act_width

    @property
    def weight_beat_bytes(self):
        return self._beat_bytes

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = unit = self._unit
        m.submodules.unpacker = unpacker = self._unpacker
        wiring.connect(m, wiring.flipped(self.act), unit.act)
        wiring.connect(m, wiring.flipped(self.res), unit.res)
        wiring.connect(m, wiring.flipped(self.wgt), unpacker.i)
        if self._unit.acc_tiles is not None:
            m.d.comb += unit.tiles.eq(self.tiles)
        codes = unit.rows * unit.lanes
        if self._weight_order == ROWS_ORDER:
            m.d.comb += unit.wgt.payload.as_value().eq(
                unpacker.o.payload.as_value()[:2 * codes])
        else:
            # Column c of the beat is trits c * column_trits .. of the unpacked codes,
            # row 0 first: wiring only.
            column_trits = column_bytes(unit.rows) * TRITS_PER_BYTE
            for row in range(unit.rows):
                for lane in range(unit.lanes):
                    m.d.comb += unit.wgt.payload[row][lane].eq(
                        unpacker.o.payload[lane * column_trits + row])
        m.d.comb += [
            unit.wgt.valid.eq(unpacker.o.valid),
            unpacker.o.ready.eq(unit.wgt.ready),
            self.error.code.eq(unit.error.code | unpacker.invalid),
            self.error.overflow.eq(unit.error.overflow),
        ]
        return m
