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

from model.mapping import (DEFAULT_LANES, DEFAULT_ROWS, LayerTiling, bytes_per_beat,
                           check_layer_shape)
from model.quant import TERNARY

from .lanes import GENERIC
from .matmul import ErrorLayout, MatmulUnit
from .unpack import ROM, TritUnpacker

__all__ = ["LayerEngine", "LayerMapping", "bytes_per_beat", "check_layer_shape",
           "layer_cycles", "DEFAULT_LANES", "DEFAULT_ROWS"]


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
