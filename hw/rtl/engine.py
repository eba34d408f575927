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

from dataclasses import dataclass, field

import numpy as np

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ternary_accel.model.encoding import TRITS_PER_BYTE, check_packing
from ternary_accel.hw.mapping import (BASE3, DEFAULT_LANES, default_packing, DEFAULT_ROWS, PACKINGS, LayerTiling,
                           beat_port_bits, bytes_per_beat, check_layer_shape,
                           port_words_per_beat)
from ternary_accel.model.quant import ACT_WIDTH, TERNARY
from ternary_accel.model.sparse import BEAT_MAJOR, column_bytes
from ternary_accel.hw.mapping import SparseTiling

from ternary_accel.hw.rtl.lanes import GENERIC
from ternary_accel.hw.rtl.matmul import (DEFAULT_ACT_COPIES, QUEUE_DEPTH, ErrorLayout, MatmulUnit,
                     accumulate_delay, output_interval, result_cycles, unit_latency)
from ternary_accel.hw.params import check_positive_int
from ternary_accel.hw.rtl.unpack import ROM, TritUnpacker, WordDecoder

__all__ = ["LayerEngine", "LayerMapping", "SparseLayerMapping", "bytes_per_beat",
           "result_cycles", "MAX_TOKENS", "PACKINGS",
           "check_layer_shape", "layer_cycles", "weight_beat_bytes", "WEIGHT_ORDERS",
           "ROWS_ORDER", "COLUMNS_ORDER", "DEFAULT_LANES", "DEFAULT_ROWS"]

#: How a weight beat is packed: the tile's ``rows x lanes`` codes row-major, 5 per byte
#: (the dense dataflow), or ``lanes`` stored columns (the sparse dataflow).
ROWS_ORDER, COLUMNS_ORDER = "rows", "columns"
WEIGHT_ORDERS = (ROWS_ORDER, COLUMNS_ORDER)
#: The most tokens that may share a weight beat (``LayerEngine(tokens=...)``).
MAX_TOKENS = 256


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

    With weight reuse (``batch`` T > 1) or a weight port (``port_bits``) the engine
    assembles each beat from its port words and applies it to the batch's tokens on
    consecutive cycles (:class:`LayerEngine`); the tokens run in batches of T, and a
    last smaller batch is a run of its own.

    Raises
    ------
    ValueError
        If the layer does not tile onto the engine (:func:`check_layer_shape`).
    """

    levels_per_stage: int = 1
    output_stage: bool = True
    max_beats: int = None
    #: Rows the pipelined output stage rescales per cycle (None: the two-register stage;
    #: below ``rows``, one stage shared by the rows behind a queue).
    output_rows: int = field(default=None, kw_only=True)
    #: Copies of the unit's activation input register (None: no input register).
    act_copies: int = field(default=DEFAULT_ACT_COPIES, kw_only=True)

    @property
    def latency(self):
        """L of the unit's timing contract (:func:`hw.matmul.unit_latency`)."""
        return unit_latency(self.lanes, self.levels_per_stage, self.output_stage,
                            self.output_rows if self.output_stage else None, self.rows,
                            act_copies=self.act_copies)

    @property
    def output_interval(self):
        """R: cycles of the output stage per result vector."""
        if not self.output_stage:
            return 1
        return output_interval(self.rows, self.output_rows)

    @property
    def shared_output_stage(self):
        """Whether result vectors queue for a shared output stage (R > 1)."""
        return self.output_interval > 1

    @property
    def start_delay(self):
        """Cycles from a last beat's transfer to its vector's start in the idle shared
        output stage (:attr:`hw.matmul.MatmulUnit.start_delay`)."""
        return accumulate_delay(self.lanes, self.levels_per_stage,
                                act_copies=self.act_copies) + 1

    @property
    def assembled(self):
        """Whether the engine assembles beats from port words (reuse or a port width)."""
        return self.batch > 1 or self.port_bits is not None

    @property
    def beat_period(self):
        """Cycles per weight beat of a batch of ``size`` tokens: max(W, size)."""
        return max(self.port_words_per_beat, self.batch)

    def run_arrivals(self, size, batches):
        """Unthrottled transfer cycles of the last beats of one run's result vectors
        (``batches`` batches of ``size`` tokens; cycle 0 is the run's first transfer),
        in result order: batch, tile, token.

        Without reuse or a port the engine takes one beat per clock, tiles and tokens
        back to back. With them, the beat register is loaded as the last port word of
        a beat arrives: beat ``k``'s ``size`` uses are at ``W + k * max(W, size) + j``.
        """
        beats = self.col_beats
        vectors = np.arange(batches * self.row_tiles, dtype=np.int64)
        if not self.assembled:
            return (vectors + 1) * beats - 1
        words = self.port_words_per_beat
        last_beats = (vectors + 1) * beats - 1
        period = max(words, size)
        return (words + last_beats[:, None] * period
                + np.arange(size, dtype=np.int64)[None, :]).reshape(-1)

    def run_exits(self, size, batches):
        """The cycle each result vector of one run (:attr:`runs`) leaves the engine, no stall
        (the unit's timing contract, :func:`hw.matmul.result_cycles`).

        With a shared output stage (R > 1) a last beat waits while
        :data:`hw.matmul.QUEUE_DEPTH` vectors queue for the stage, and the wait delays
        the beats behind it; when the unthrottled stream would fill the queue the
        schedule is followed beat by beat (:meth:`_throttled_exits`)."""
        arrivals = (self.run_arrivals(size, batches) if self.assembled
                    else self.run_arrivals(1, size * batches))
        latency, interval = self.latency, self.output_interval
        if interval == 1:
            return result_cycles(arrivals, latency, interval)
        delay = self.start_delay
        starts = result_cycles(arrivals, delay, interval)
        queue = QUEUE_DEPTH
        if len(arrivals) <= queue or np.all(arrivals[queue:] >= starts[:-queue] + 1):
            return starts + latency - delay      # the queue never holds a last beat
        return self._throttled_exits(size, batches) + latency - delay

    def _throttled_exits(self, size, batches):
        """Start cycles ``S_n`` in the shared output stage, beat by beat: the last word
        of beat ``k`` is taken at ``L_k = max(L_(k-1) + W, U_(k-1))`` (``U``: the
        beat's last use), its uses follow one a cycle, and a last beat's use ``n``
        waits until ``S_(n - QUEUE_DEPTH) + 1``; ``S_n = max(u_n + delay, S_(n-1) + R)``.
        Without weight assembly the beats are back to back (``W = 1``, one use)."""
        beats, interval, delay = self.col_beats, self.output_interval, self.start_delay
        assembled = self.assembled
        words = self.port_words_per_beat if assembled else 1
        uses = size if assembled else 1
        period = max(words, uses)
        vectors = batches * self.row_tiles * (1 if assembled else size)
        starts = np.zeros(vectors * uses, dtype=np.int64)
        loaded, used, n = -1, -1 << 40, 0     # L and U of the previous beat
        for _ in range(vectors):
            # the tile's beats before its last: never held
            loaded = max(loaded + words, used)
            if beats > 1:
                loaded += (beats - 2) * period
                used = loaded + uses
                loaded = max(loaded + words, used)
            use = loaded
            for _ in range(uses):
                use += 1
                if n >= QUEUE_DEPTH:
                    use = max(use, starts[n - QUEUE_DEPTH] + 1)
                starts[n] = use + delay if n == 0 else max(use + delay,
                                                           starts[n - 1] + interval)
                n += 1
            used = use
        # whole beats go to the unit without the beat register's cycle
        return starts if assembled else starts - 1

    @property
    def runs(self):
        """``(size, batches)`` of each run: the full batches, then the remainder."""
        if not self.assembled:
            return ((self.tokens, 1),)
        full, rest = divmod(self.tokens, self.batch)
        return tuple(run for run in ((self.batch, full), (rest, 1)) if run[0] and run[1])

    def run_cycles(self, size, batches):
        """Cycles of one run, from its first transfer to its last result, no stall."""
        return int(self.run_exits(size, batches)[-1]) + 1

    @property
    def cycles(self):
        """The cycle model: from the first transfer to the last result, no stall,
        summed over the runs (:attr:`runs`). Without reuse or a port: one beat per
        clock, tile and token switches free, then the unit's latency."""
        if not self.assembled and self.output_interval == 1:
            return self.beats + self.latency
        return sum(self.run_cycles(size, batches) for size, batches in self.runs)


@dataclass(frozen=True)
class SparseLayerMapping(SparseTiling):
    """:class:`hw.mapping.SparseTiling` on a built engine (``weight_order="columns"``):
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
    #: As :class:`LayerMapping`; the sparse dataflow takes only a parallel stage
    #: (None or ``rows``).
    output_rows: int = field(default=None, kw_only=True)
    act_copies: int = field(default=DEFAULT_ACT_COPIES, kw_only=True)

    def __post_init__(self):
        super().__post_init__()
        if self.output_rows not in (None, self.rows):
            raise ValueError("the sparse dataflow takes a parallel output stage: "
                             f"output_rows must be None or rows ({self.rows}), "
                             f"not {self.output_rows}")
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
        return unit_latency(self.lanes, self.levels_per_stage, self.output_stage,
                            self.output_rows if self.output_stage else None, self.rows,
                            act_copies=self.act_copies)

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
    """Weight decoders in front of a ternary :class:`MatmulUnit` (with the output stage
    by default).

    Two front ends:

    * **Whole beats** (``tokens=1``, no ``weight_port_bits``: the default, today's
      engine): a :class:`TritUnpacker` decodes a whole base-3 beat a cycle, straight
      into the unit.
    * **Assembled beats** (``tokens > 1`` or a ``weight_port_bits``): a
      :class:`WordDecoder` sized to the port decodes one port word a cycle into a
      staging register; the beat's last word loads the beat register (with the staged
      words) when it is free, and the beat is applied to ``tokens`` activation beats on
      consecutive cycles (the batch's tokens, interleaved on the unit's accumulator
      bank of ``tokens`` x ``rows`` sums: :class:`MatmulUnit` ``acc_tiles``). Each
      token's results leave through the output stage with its own ``(scale, shift)``.
      Weights are read once per batch. A beat of W words needs ``max(W, n)`` cycles for
      ``n`` tokens (:class:`LayerMapping`).

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
        bytes each (the sparse dataflow, :mod:`model.sparse`; whole beats only).
    decoder : str
        The base-3 byte decoder (:class:`TritUnpacker`): ``"rom"`` (the default, the
        smaller and faster one in ``make bench-area``) or ``"mulshift"``.
    output_stage : bool
        Rescale each result to ``OUT_WIDTH`` bits with the token's ``(scale, shift)``
        (the default), or emit the raw accumulators (``acc_width(lanes * max_beats)``
        bits; ``act`` then has no ``scale``/``shift``).
    acc_tiles : int, optional
        The unit's accumulator bank (:class:`MatmulUnit`): up to ``acc_tiles`` row tiles
        interleaved beat by beat (the beat-major order of :mod:`model.sparse`), with
        the ``tiles`` port. Whole beats only.
    tokens : int
        T, the most tokens that share each weight beat (1 to 256; default 1).
    weight_port_bits : int, optional
        Width of the weight port in bits (a multiple of 8, e.g. a 64-, 128- or 256-bit
        memory bus); None: a whole beat per word.
    packing : str
        The port words' packing (:data:`model.mapping.PACKINGS`): ``"base3"`` (5 trits a
        byte), ``"3in5"`` (3 trits in 5 bits) or ``"2bit"`` (lane codes); None (the
        default): base3 for whole beats, ``model.encoding.DEFAULT_PACKING`` (3in5, the
        measured best on a 128-bit port: ``make bench-packing``) for assembled beats.
        Assembled beats only, except ``"base3"``.

    Attributes
    ----------
    act : stream, in
        As :class:`MatmulUnit` ``act`` (with ``scale`` and ``shift`` when
        ``output_stage``). With reuse, for each beat the batch's tokens in order.
    wgt : stream, in
        Whole beats: payload ``ArrayLayout(unsigned(8), weight_beat_bytes(...))``, the
        beat's codes packed by :func:`model.encoding.pack_trits`, row-major over the
        beat, or column by column (:func:`model.sparse.pack_columns`). Assembled: one
        port word of ``weight_port_bits // 8`` bytes (:func:`model.encoding.pack_words`
        of the beat's row-major codes, W words a beat).
    res : stream, out
        ``rows`` results (``OUT_WIDTH`` bits, or accumulators without the output stage).
    error : Signal(ErrorLayout), out
        ``code``: an invalid packed code was received (decoded as zero weights);
        ``overflow`` as in the unit.
    tiles : Signal, in
        With ``acc_tiles``: as the unit's ``tiles``.
    batch : Signal(range(tokens + 1)), in
        With ``tokens > 1``: the tokens of the current batch, 1..T (0 counts as 1);
        held for a whole run.
    """

    def __init__(self, *, lanes, rows, max_beats=1024, levels_per_stage=1, fabric=GENERIC,
                 decoder=ROM, output_stage=True, weight_order=ROWS_ORDER,
                 act_width=ACT_WIDTH, acc_tiles=None, tokens=1, weight_port_bits=None,
                 packing=None, output_rows=None,
                 act_copies=DEFAULT_ACT_COPIES):
        self._tokens = check_positive_int("tokens", tokens)
        if packing is None:
            packing = default_packing(self._tokens > 1 or weight_port_bits is not None)
        check_packing(packing)
        if self._tokens > MAX_TOKENS:
            raise ValueError(f"tokens must be at most {MAX_TOKENS}, not {tokens}")
        port_words_per_beat(1, packing, weight_port_bits)    # checks the port width
        self._port_bits = weight_port_bits
        self._packing = packing
        self._assembled = self._tokens > 1 or weight_port_bits is not None
        if self._assembled:
            if weight_order != ROWS_ORDER:
                raise ValueError("weight_order='columns' (the sparse dataflow) takes whole "
                                 "beats: no tokens > 1 or weight_port_bits")
            if acc_tiles is not None:
                raise ValueError("acc_tiles (the sparse dataflow's bank) and tokens > 1 or "
                                 "weight_port_bits do not combine: the bank holds the "
                                 "batch's tokens")
        elif packing != BASE3:
            raise ValueError(f"packing {packing!r} needs assembled beats: give "
                             f"weight_port_bits (or tokens > 1)")
        if (weight_order != ROWS_ORDER and output_stage and output_rows is not None
                and output_rows < rows):
            raise ValueError("the sparse dataflow (weight_order='columns') takes a parallel "
                             "output stage: output_rows must be None or rows")
        self._weight_order = weight_order
        bank = self._tokens if self._tokens > 1 else acc_tiles
        self._unit = MatmulUnit(lanes=lanes, rows=rows, weight_mode=TERNARY,
                                output_stage=output_stage, max_beats=max_beats,
                                levels_per_stage=levels_per_stage, fabric=fabric,
                                act_width=act_width, acc_tiles=bank, output_rows=output_rows,
                                act_copies=act_copies)
        codes = self._unit.rows * self._unit.lanes
        if self._assembled:
            self._word_bits = (beat_port_bits(codes, packing) if weight_port_bits is None
                               else weight_port_bits)
            self._words = port_words_per_beat(codes, packing, weight_port_bits)
            self._beat_bytes = self._word_bits // 8
            self._unpacker = WordDecoder(packing=packing, port_bits=self._word_bits,
                                         decoder=decoder)
        else:
            self._words = 1
            self._beat_bytes = weight_beat_bytes(lanes, rows, weight_order)
            self._word_bits = 8 * self._beat_bytes
            self._unpacker = TritUnpacker(bytes_per_beat=self._beat_bytes, decoder=decoder)
        ports = {
            "act": In(stream.Signature(self._unit.act_layout)),
            "wgt": In(stream.Signature(data.ArrayLayout(unsigned(8), self._beat_bytes))),
            "res": Out(stream.Signature(self._unit.res_layout)),
            "error": Out(ErrorLayout),
        }
        if acc_tiles is not None:
            ports["tiles"] = In(range(acc_tiles + 1))
        if self._tokens > 1:
            ports["batch"] = In(range(self._tokens + 1))
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
    def output_rows(self):
        return self._unit.output_rows

    @property
    def act_copies(self):
        return self._unit.act_copies

    @property
    def tokens(self):
        """T: the most tokens that share a weight beat."""
        return self._tokens

    @property
    def packing(self):
        return self._packing

    @property
    def weight_port_bits(self):
        """The port width in bits (the whole beat's word without ``weight_port_bits``)."""
        return self._word_bits

    @property
    def port_words_per_beat(self):
        return self._words

    @property
    def assembled(self):
        return self._assembled

    @property
    def weight_beat_bytes(self):
        """Bytes of one word of the ``wgt`` stream (a whole beat, or a port word)."""
        return self._beat_bytes

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = unit = self._unit
        m.submodules.unpacker = unpacker = self._unpacker
        wiring.connect(m, wiring.flipped(self.act), unit.act)
        wiring.connect(m, wiring.flipped(self.res), unit.res)
        wiring.connect(m, wiring.flipped(self.wgt), unpacker.i)
        m.d.comb += self.error.overflow.eq(unit.error.overflow)
        if self._assembled:
            self._assemble(m, unit, unpacker)
            return m
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
        ]
        return m

    def _assemble(self, m, unit, decoder):
        """Port words -> staging register -> beat register, held for the batch."""
        codes = unit.rows * unit.lanes
        words, per_word = self._words, len(decoder.o.payload)
        word_width = 2 * per_word
        staged = [Signal(word_width, name=f"staged{w}") for w in range(words - 1)]
        slot = Signal(range(max(words, 2)), name="word_slot")
        beat = Signal(2 * codes, name="beat")
        full = Signal(name="beat_full")
        if self._tokens > 1:
            batch = Signal(range(self._tokens + 1), name="batch_tokens")
            m.d.comb += [batch.eq(Mux(self.batch == 0, 1, self.batch)),
                         unit.tiles.eq(batch)]
        else:
            batch = Const(1, 1)
        # The beat's uses left after the current one, and whether the current one is its
        # last: registers, so that the handshake's path (the unit's wgt.ready -> the last
        # use -> the beat register's enable) has no counter compare on it.
        remaining = Signal(range(max(self._tokens, 2)), name="beat_remaining")
        final = Signal(name="beat_final")
        used = Signal(name="beat_used")       # the beat's last use transfers now
        m.d.comb += used.eq(full & unit.wgt.ready & final)
        last_word = slot == words - 1
        m.d.comb += decoder.o.ready.eq(~last_word | ~full | used)
        load = decoder.o.valid & last_word & (~full | used)
        word = decoder.o.payload.as_value()
        # the staging registers take the words before the last whatever the beat does
        with m.If(decoder.o.valid & ~last_word):
            m.d.sync += slot.eq(slot + 1)
            for w, register in enumerate(staged):
                with m.If(slot == w):
                    m.d.sync += register.eq(word)
        with m.If(load):
            m.d.sync += [slot.eq(0), full.eq(1), remaining.eq(batch - 1),
                         final.eq(batch == 1),
                         beat.eq(Cat(*staged, word)[:2 * codes])]
        with m.Elif(used):
            m.d.sync += full.eq(0)
        with m.Elif(full & unit.wgt.ready):
            m.d.sync += [remaining.eq(remaining - 1), final.eq(remaining == 1)]
        take = decoder.o.valid & decoder.o.ready
        # a word with an invalid code: sticky, like the unit's flag
        invalid = Signal(name="word_invalid")
        with m.If(take & decoder.invalid):
            m.d.sync += invalid.eq(1)
        m.d.comb += [
            unit.wgt.valid.eq(full),
            unit.wgt.payload.as_value().eq(beat),
            self.error.code.eq(unit.error.code | invalid),
        ]
