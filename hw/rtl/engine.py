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

from amaranth.hdl import Cat, Const, Module, Mux, ResetSignal, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ternary_accel.model.encoding import TRITS_PER_BYTE
from ternary_accel.model.sparse import column_bytes

from ternary_accel.hw.mapping import beat_port_bits, port_words_per_beat
from ternary_accel.hw.params import ECP5, ROWS_ORDER, EngineParams
from ternary_accel.hw.rtl.matmul import ErrorLayout, MatmulUnit
from ternary_accel.hw.rtl.unpack import ROM, TritUnpacker, WordDecoder

__all__ = ["LayerEngine"]


def _state_copy(m, fabric, following, register, name):
    """A copy of the 1-bit ``register`` whose next state is ``following``: with
    ``fabric="ecp5"`` a flip-flop instance (Yosys would merge an inferred copy back into
    the register), loading the register's reset value while the domain's reset is high;
    otherwise the register itself."""
    if fabric != ECP5:
        return register
    from ternary_accel.hw.rtl.ecp5 import flip_flop
    copy = Signal(name=name)
    m.submodules[f"{name}_ff"] = flip_flop(
        Mux(ResetSignal(), Const(register.init, 1), following), copy)
    return copy


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
    params : EngineParams, optional
        The engine's parameters (:class:`ternary_accel.hw.params.EngineParams`: its
        unit's, the weight order, the accumulator bank, weight reuse T, the weight port
        and its packing; their meaning, defaults and checks are there).
    decoder : str
        The base-3 byte decoder (:class:`~ternary_accel.hw.rtl.unpack.TritUnpacker`):
        ``"rom"`` (the default, the smaller and faster one in ``make bench-area``) or
        ``"mulshift"``; an implementation choice with the same behaviour.
    **kwargs
        Instead of ``params``: the same parameters by keyword.

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

    def __init__(self, params=None, *, decoder=ROM, **kwargs):
        if params is None:
            params = EngineParams(**kwargs)
        elif kwargs:
            raise TypeError("give an EngineParams or keyword parameters, not both")
        elif not isinstance(params, EngineParams):
            raise TypeError(f"params must be an EngineParams, not {params!r}")
        self._params = params
        self._tokens = params.tokens
        self._port_bits = params.weight_port_bits
        self._packing = packing = params.effective_packing
        self._assembled = params.assembled
        self._weight_order = params.weight_order
        self._unit = MatmulUnit(params.unit)
        codes = self._unit.rows * self._unit.lanes
        if self._assembled:
            self._word_bits = (beat_port_bits(codes, packing) if self._port_bits is None
                               else self._port_bits)
            self._words = port_words_per_beat(codes, packing, self._port_bits)
            self._beat_bytes = self._word_bits // 8
            self._unpacker = WordDecoder(packing=packing, port_bits=self._word_bits,
                                         decoder=decoder)
        else:
            self._words = 1
            self._beat_bytes = params.bytes_per_beat
            self._word_bits = 8 * self._beat_bytes
            self._unpacker = TritUnpacker(bytes_per_beat=self._beat_bytes, decoder=decoder)
        acc_tiles = params.acc_tiles
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
    def params(self):
        """The :class:`ternary_accel.hw.params.EngineParams` the engine was built with."""
        return self._params

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
        # use -> the beat register's enable) has no counter compare on it. final is 0
        # while the register is empty, so that it alone says "the current use is the
        # last"; last_word is kept as a register beside the slot counter.
        remaining = Signal(range(max(self._tokens, 2)), name="beat_remaining")
        final = Signal(name="beat_final")
        last_word = Signal(name="word_slot_last", init=words == 1)  # slot == words - 1
        ready = unit.wgt.ready
        uses = Signal(name="beat_uses")       # a use of the beat transfers now
        used = Signal(name="beat_used")       # the beat's last use transfers now
        m.d.comb += [uses.eq(full & ready), used.eq(final & ready)]
        m.d.comb += decoder.o.ready.eq(~last_word | ~full | used)
        load = decoder.o.valid & last_word & (~full | used)
        word = decoder.o.payload.as_value()
        # the next states of full, final and last_word (the copies below take them too)
        full_next = Signal(name="beat_full_next")
        final_next = Signal(name="beat_final_next")
        last_next = Signal(name="word_slot_last_next")
        m.d.comb += [full_next.eq(full), final_next.eq(final), last_next.eq(last_word)]
        # the staging registers take the words before the last whatever the beat does
        with m.If(decoder.o.valid & ~last_word):
            m.d.comb += last_next.eq(slot == words - 2)
            m.d.sync += slot.eq(slot + 1)
            for w, register in enumerate(staged):
                with m.If(slot == w):
                    m.d.sync += register.eq(word)
        with m.If(load):
            m.d.comb += [last_next.eq(words == 1), full_next.eq(1),
                         final_next.eq(batch == 1)]
            m.d.sync += [slot.eq(0), remaining.eq(batch - 1)]
        with m.Elif(uses):
            m.d.comb += final_next.eq(remaining == 1)
            m.d.sync += remaining.eq(remaining - 1)
            with m.If(final):
                m.d.comb += full_next.eq(0)
        m.d.sync += [full.eq(full_next), final.eq(final_next), last_word.eq(last_next)]
        # The beat register loads in one slice per row, each on its own copy of the
        # load condition from its own copies of full, final and last_word (ECP5:
        # flip-flop instances, which Yosys keeps apart), so no one net enables all of
        # its rows x lanes x 2 flip-flops.
        new_beat = Cat(*staged, word)[:2 * codes]
        slice_bits = 2 * unit.lanes
        for row in range(unit.rows):
            row_full, row_final, row_last = (
                _state_copy(m, self._unit.fabric, value, register, f"{name}_row{row}")
                for value, register, name in ((full_next, full, "beat_full"),
                                              (final_next, final, "beat_final"),
                                              (last_next, last_word, "word_slot_last")))
            row_load = decoder.o.valid & row_last & (~row_full | row_final & ready)
            bits = slice(row * slice_bits, (row + 1) * slice_bits)
            with m.If(row_load):
                m.d.sync += beat[bits].eq(new_beat[bits])
        take = decoder.o.valid & decoder.o.ready
        # a word with an invalid code: sticky, like the unit's flag, a cycle after the
        # word (the decoder's flag, an OR over the word's groups, and the handshake are
        # registered first, so neither sits in front of the flag's enable; registering
        # the groups' flags before the OR measured 430 LUT4s more)
        invalid = Signal(name="word_invalid")
        word_bad = Signal(name="word_bad")
        word_taken = Signal(name="word_taken")
        m.d.sync += [word_bad.eq(decoder.invalid), word_taken.eq(take)]
        with m.If(word_taken & word_bad):
            m.d.sync += invalid.eq(1)
        m.d.comb += [
            unit.wgt.valid.eq(full),
            unit.wgt.payload.as_value().eq(beat),
            self.error.code.eq(unit.error.code | invalid),
        ]
