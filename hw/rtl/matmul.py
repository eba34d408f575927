"""The matmul unit: ``rows`` dot-product lane groups sharing one activation stream,
multi-beat accumulation, an optional fixed-point output stage, and stream interfaces."""

from amaranth.hdl import Array, Cat, Const, Module, Mux, ResetSignal, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ternary_accel.model.arith import OUT_WIDTH, SCALE_WIDTH, SHIFT_WIDTH, acc_width, signed_range
from ternary_accel.model.encoding import code_width
from ternary_accel.model.quant import ACT_WIDTH

from ternary_accel.hw.params import ECP5, UnitParams
from ternary_accel.hw.rtl.buffer import ResultBuffer
from ternary_accel.hw.rtl.lanes import DotProduct, add_with_carry, invalid_code
from ternary_accel.hw.rtl.outstage import OutputStage
from ternary_accel.hw.timing import (INVALID_OR_FANIN, QUEUE_DEPTH, accumulate_delay,
                                     code_flag_latency, input_latency, output_interval,
                                     result_fifo_depth, result_width, shared_output_stage,
                                     tree_latency, unit_latency)

__all__ = ["MatmulUnit", "ErrorLayout", "act_layout", "wgt_layout", "res_layout",
           "result_width", "unit_latency", "result_fifo_depth", "code_flag_latency",
           "input_latency", "accumulate_delay", "output_interval", "QUEUE_DEPTH"]


def act_layout(lanes, output_stage, act_width=ACT_WIDTH):
    """Payload of the activation stream: ``data`` (K x int8, or K x int4 with
    ``act_width=4``: two activations per byte, lane 0 in the low nibble, as
    :func:`model.encoding.pack_int4`), ``last``, and with the output stage the
    ``scale`` (unsigned ``SCALE_WIDTH``) and ``shift`` (unsigned ``SHIFT_WIDTH``) of
    the token."""
    fields = {"data": data.ArrayLayout(signed(act_width), lanes), "last": 1}
    if output_stage:
        fields["scale"] = unsigned(SCALE_WIDTH)
        fields["shift"] = unsigned(SHIFT_WIDTH)
    return data.StructLayout(fields)


def wgt_layout(lanes, rows, weight_mode):
    """Payload of the weight stream: ``rows`` x ``lanes`` lane codes, row-major."""
    codes = data.ArrayLayout(unsigned(code_width(weight_mode)), lanes)
    return data.ArrayLayout(codes, rows)


#: Yosys ``ram_style`` of the queue: LUT RAM (16 vectors cost what 2 would).
QUEUE_RAM_STYLE = "distributed"


def _credits(m, name, limit, take, give):
    """A credit counter: ``take`` spends one, ``give`` returns one; returns ``room``
    (a credit is left), a register computed a cycle ahead so that it is one flip-flop
    for the input handshake, not a comparator behind the counter. The count never
    exceeds ``limit``, so the comparisons are equalities (LUTs, no carry chain)."""
    count = Signal(range(limit + 1), name=f"{name}_used")
    room = Signal(name=f"{name}_room", init=1)
    full = count == limit
    below_after_take = ~full & (count != limit - 1)  # count + 1 < limit
    # the increment and decrement come from the register alone; take and give only
    # select (a mux level, not an adder chain behind the handshake)
    up, down = take & ~give, give & ~take
    m.d.sync += [
        count.eq(Mux(up, count + 1, Mux(down, count - 1, count))),
        room.eq(Mux(up, below_after_take, Mux(down, 1, ~full))),
    ]
    return room


def _row_copies(m, fabric, following, register, name, count):
    """``count`` copies of the 1-bit ``register`` whose next state is ``following``, one
    per row, so that no single flip-flop drives every row: with ``fabric="ecp5"``
    flip-flop instances (Yosys would merge inferred copies back into one), loading the
    register's reset value while the domain's reset is high; otherwise the register
    itself ``count`` times."""
    if fabric != ECP5:
        return [register] * count
    from ternary_accel.hw.rtl.ecp5 import flip_flop
    copies = []
    for row in range(count):
        copy = Signal(name=f"{name}_row{row}")
        m.submodules[f"{name}_row{row}_ff"] = flip_flop(
            Mux(ResetSignal(), Const(register.init, 1), following), copy)
        copies.append(copy)
    return copies


def res_layout(rows, width):
    """Payload of the result stream: ``rows`` signed results of ``width`` bits."""
    return data.ArrayLayout(signed(width), rows)


class ErrorLayout(data.Struct):
    """Sticky error flags of the matmul unit; cleared only by reset.

    Attributes
    ----------
    code : 1 bit
        A transferred weight beat carried the unused ternary code ``0b10`` (it was
        used as weight 0).
    overflow : 1 bit
        A dot product ran longer than ``max_beats`` beats: its accumulator may have
        wrapped modulo ``2**acc_width``.
    """

    code: 1
    overflow: 1


class MatmulUnit(wiring.Component):
    """M x K ternary matmul unit: ``rows`` accumulators of ``lanes``-wide dot products.

    Per beat the unit takes K activations (shared by all rows) from ``act`` and
    M x K weight codes from ``wgt``, and adds each row's dot product into that row's
    accumulator. After the beat whose activation payload has ``last`` set it emits the
    M accumulators on ``res`` (through the output stage when enabled) and clears them,
    so a dot product spans any number of beats.

    A beat transfers when ``act`` and ``wgt`` are both valid and the result FIFO has
    room for every result that may still be in flight (a credit count). The datapath
    itself never stalls, so no register needs an enable driven by ``res.ready``; with
    both inputs always valid and the output always ready it takes one beat per clock:
    ``rows * lanes`` MACs per cycle, no bubbles.

    Output stage (``output_stage=True``): each accumulator is multiplied by the
    unsigned ``scale`` and rounded/saturated by ``shift`` exactly as
    :func:`model.arith.round_fixed`; ``scale`` and ``shift`` are taken from the
    activation beat marked ``last``. Bypassed, ``res`` carries the raw accumulators.

    Parameters
    ----------
    params : UnitParams, optional
        The unit's parameters (:class:`ternary_accel.hw.params.UnitParams`: lanes K, rows
        M, weight mode, output stage, ``max_beats``, pipeline, fabric, activation width,
        accumulator bank, output rows, activation copies; their meaning, defaults and
        checks are there).
    **kwargs
        Instead of ``params``: the same parameters by keyword
        (``MatmulUnit(lanes=16, rows=8)`` is ``MatmulUnit(UnitParams(lanes=16, rows=8))``).

    With ``acc_tiles`` the partial sums of up to ``acc_tiles`` row tiles are kept in an
    accumulator bank (per row a memory ``acc_tiles`` deep, read and written back every
    beat) instead of one register per row. The stream then interleaves the dot products
    of ``tiles`` tiles (the beat-major order of :mod:`ternary_accel.model.sparse`): beat
    ``n`` adds into tile ``n mod tiles``, and the ``tiles`` beats after a round's first
    one that carry ``last`` end their tiles' dot products, one result each, in tile
    order. With ``tiles = 1`` the bank behaves as the registers. A dot product's first
    round ignores what the bank holds, so a reset mid-stream leaves nothing stale.
    ``max_beats`` counts rounds. With ``fabric="ecp5"`` the lane groups are built from
    Lattice ``CCU2C`` carry cells (:class:`ternary_accel.hw.rtl.lanes.DotProduct`): same
    behaviour and latency, fewer LUTs, and the Verilog then needs the Lattice cell
    library. With ``act_width=4`` the lane groups and accumulators narrow to the int4
    range (two activations per byte on ``act``).

    Attributes
    ----------
    act : stream, in
        Payload :meth:`act_layout`: ``data`` (K x int8, or K x int4), ``last``, and
        with the output stage ``scale`` and ``shift``.
    wgt : stream, in
        Payload :meth:`wgt_layout`: M x K weight codes, row-major.
    res : stream, out
        Payload :meth:`res_layout`: M signed results.
    error : Signal(ErrorLayout), out
        Sticky error flags; ``code`` rises :attr:`code_flag_latency` cycles after the
        beat that carried an invalid code.
    tiles : Signal(range(acc_tiles + 1)), in
        With ``acc_tiles``: the row tiles the stream interleaves (held for the whole
        layer; 0 counts as 1).

    Raises
    ------
    TypeError, ValueError
        On a parameter of the wrong type or out of range.
    """

    def __init__(self, params=None, **kwargs):
        if params is None:
            params = UnitParams(**kwargs)
        elif kwargs:
            raise TypeError("give a UnitParams or keyword parameters, not both")
        elif not isinstance(params, UnitParams):
            raise TypeError(f"params must be a UnitParams, not {params!r}")
        self._params = params
        self._lanes, self._rows = params.lanes, params.rows
        self._weight_mode, self._output_stage = params.weight_mode, params.output_stage
        self._max_beats, self._levels_per_stage = params.max_beats, params.levels_per_stage
        self._fabric, self._act_width = params.fabric, params.act_width
        self._acc_tiles, self._output_rows = params.acc_tiles, params.output_rows
        self._act_copies = params.act_copies
        ports = {
            "act": In(stream.Signature(self.act_layout)),
            "wgt": In(stream.Signature(self.wgt_layout)),
            "res": Out(stream.Signature(self.res_layout)),
            "error": Out(ErrorLayout),
        }
        if self._acc_tiles is not None:
            ports["tiles"] = In(range(self._acc_tiles + 1))
        super().__init__(ports)

    # Parameters, read-only.

    @property
    def params(self):
        """The :class:`ternary_accel.hw.params.UnitParams` the unit was built with."""
        return self._params

    @property
    def lanes(self):
        return self._lanes

    @property
    def rows(self):
        return self._rows

    @property
    def weight_mode(self):
        return self._weight_mode

    @property
    def output_stage(self):
        return self._output_stage

    @property
    def max_beats(self):
        return self._max_beats

    @property
    def levels_per_stage(self):
        return self._levels_per_stage

    @property
    def fabric(self):
        return self._fabric

    @property
    def act_width(self):
        return self._act_width

    @property
    def acc_tiles(self):
        return self._acc_tiles

    @property
    def output_rows(self):
        return self._output_rows

    @property
    def act_copies(self):
        return self._act_copies

    @property
    def output_interval(self):
        """R: cycles a result vector holds the output stage (see :func:`output_interval`)."""
        return output_interval(self._rows, self._output_rows)

    @property
    def shared_output_stage(self):
        """Whether ``output_rows < rows``: vectors queue for one shared output stage."""
        return shared_output_stage(self._output_rows, self._rows)

    @property
    def queue_depth(self):
        """Vectors the shared output stage's queue holds (0 without a queue)."""
        return QUEUE_DEPTH if self.shared_output_stage else 0

    @property
    def start_delay(self):
        """Cycles from a ``last`` beat's transfer to its vector's start in the idle
        shared output stage (see :func:`throttled_result_cycles`)."""
        return accumulate_delay(self._lanes, self._levels_per_stage,
                                act_copies=self._act_copies) + 1

    # Derived widths and layouts: the single place the sim side reads them from.

    @property
    def acc_width(self):
        """Accumulator width: ``acc_width(lanes * max_beats, weight_mode, act_width)``."""
        return acc_width(self._lanes * self._max_beats, self._weight_mode, self._act_width)

    @property
    def res_width(self):
        """Width of one result: ``OUT_WIDTH`` with the output stage, else ``acc_width``."""
        return result_width(self._lanes, self._max_beats, self._output_stage,
                            self._weight_mode, self._act_width)

    @property
    def act_layout(self):
        return act_layout(self._lanes, self._output_stage, self._act_width)

    @property
    def wgt_layout(self):
        return wgt_layout(self._lanes, self._rows, self._weight_mode)

    @property
    def res_layout(self):
        return res_layout(self._rows, self.res_width)

    @property
    def tree_latency(self):
        return tree_latency(self._lanes, self._levels_per_stage)

    @property
    def input_latency(self):
        """Registers between the input handshake and the lane groups
        (see :func:`input_latency`)."""
        return input_latency(self._act_copies)

    @property
    def latency(self):
        """Cycles from a ``last`` beat's transfer to its result on ``res``, unstalled
        (see :func:`unit_latency`)."""
        return unit_latency(self._lanes, self._levels_per_stage, self._output_stage,
                            self._output_rows, self._rows, act_copies=self._act_copies)

    @property
    def code_flag_latency(self):
        """Cycles from the transfer of a beat with an invalid code to ``error.code``
        high (see :func:`code_flag_latency`)."""
        return code_flag_latency(self._lanes, self._rows)

    def elaborate(self, platform):
        m = Module()
        lanes, rows = self._lanes, self._rows
        depth = result_fifo_depth(lanes, self._levels_per_stage, self._output_stage,
                                  self._output_rows, rows, act_copies=self._act_copies)

        # The datapath never stalls: a beat is taken only while the result FIFO (or,
        # with a shared output stage, the queue in front of it) has room for every
        # result that may still be in flight (credits), so no register needs an enable
        # driven by res.ready.
        m.submodules.results = fifo = ResultBuffer(
            width=rows * self.res_width, depth=depth)
        taken = fifo.r.valid & fifo.r.ready
        fire = Signal()
        fire_last = Signal()
        serial = self.shared_output_stage
        starts = Signal()  # with the shared stage: a queued vector enters it
        room = _credits(m, "credits", QUEUE_DEPTH if serial else depth, fire_last,
                        starts if serial else taken)
        if self._output_rows is None:
            # every beat waits for room (the unit before output_rows)
            gate = room
        else:
            # only a last beat needs room; the others go on while the stage drains
            gate = room | ~self.act.payload.last
        m.d.comb += [
            fire.eq(self.act.valid & self.wgt.valid & gate),
            fire_last.eq(fire & self.act.payload.last),
            self.act.ready.eq(self.wgt.valid & gate),
            self.wgt.ready.eq(self.act.valid & gate),
        ]

        groups = []
        activations, codes = self._input_stage(m)
        for row in range(rows):
            group = DotProduct(lanes=lanes, weight_mode=self._weight_mode,
                               levels_per_stage=self._levels_per_stage, carry_out=True,
                               fabric=self._fabric, act_width=self._act_width,
                               invalid_flag=False)
            m.submodules[f"row{row}"] = group
            groups.append(group)
            m.d.comb += [
                group.activations.eq(activations[row]),
                group.codes.eq(codes[row]),
                group.en.eq(1),
            ]

        # Invalid codes: one LUT per pair of lanes, registered; then a tree of 4-input
        # ORs, registered after every level, beside the beat's fire delayed as much;
        # then the sticky flag. A status bit: the cycles it takes do not matter
        # (code_flag_latency), and no wide OR or long route sits on one path.
        flags = []
        for row in range(rows):
            codes = self.wgt.payload[row]
            for start in range(0, lanes, 2):
                bit = Signal(name=f"row{row}_invalid{start // 2}")
                m.d.sync += bit.eq(invalid_code(codes[start], self._weight_mode) |
                                   (invalid_code(codes[start + 1], self._weight_mode)
                                    if start + 1 < lanes else 0))
                flags.append(bit)
        flag_fire = Signal(name="invalid_fire0")
        m.d.sync += flag_fire.eq(fire)
        level = 0
        while len(flags) > 1:
            level += 1
            ors = []
            for start in range(0, len(flags), INVALID_OR_FANIN):
                bit = Signal(name=f"invalid_or{level}_{start // INVALID_OR_FANIN}")
                m.d.sync += bit.eq(Cat(*flags[start:start + INVALID_OR_FANIN]).any())
                ors.append(bit)
            flags = ors
            delayed = Signal(name=f"invalid_fire{level}")
            m.d.sync += delayed.eq(flag_fire)
            flag_fire = delayed
        with m.If(flags[0] & flag_fire):
            m.d.sync += self.error.code.eq(1)

        # Beat tags (valid, last, scale, shift; with the bank the beat's tile and whether
        # it ends a round) travel beside the adder trees.
        bank = self._acc_tiles is not None
        tag_layout = data.StructLayout({
            "valid": 1, "last": 1,
            **({"scale": unsigned(SCALE_WIDTH), "shift": unsigned(SHIFT_WIDTH)}
               if self._output_stage else {}),
            **({"tile": range(self._acc_tiles), "wrap": 1} if bank else {}),
        })
        tag = Signal(tag_layout, name="tag_in")
        m.d.comb += [tag.valid.eq(fire), tag.last.eq(self.act.payload.last)]
        if self._output_stage:
            m.d.comb += [tag.scale.eq(self.act.payload.scale),
                         tag.shift.eq(self.act.payload.shift)]
        if bank:
            # beat n is tile n mod tiles (tiles = 0 counts as 1)
            tile = Signal(range(self._acc_tiles), name="tile")
            wrap = Signal(name="tile_wrap")
            m.d.comb += [wrap.eq(tile + 1 >= self.tiles), tag.tile.eq(tile),
                         tag.wrap.eq(wrap)]
            with m.If(fire):
                m.d.sync += tile.eq(Mux(wrap, 0, tile + 1))
        tags = [tag]
        for stage in range(self.input_latency + self.tree_latency):
            next_tag = Signal(tag_layout, name=f"stage{stage}_tag")
            m.d.sync += next_tag.eq(tags[-1])
            tags.append(next_tag)
        tag = tags[-1]

        # Accumulate stage.
        width = self.acc_width
        # one accumulator register per row, or none with the bank (its memories)
        accs = [None if bank else Signal(signed(width), name=f"acc{row}")
                for row in range(rows)]
        beats = Signal(range(self._max_beats + 1))
        # With the bank: whether the tag's beat is its tiles' first (beats == 0), kept
        # as a register beside beats so that no compare feeds the rows' read-data
        # select; and whether the beat before it wrote its tile (the sum to take is then
        # that beat's, in done, not the memory's).
        # Both in one copy per row (each drives acc_width select LUTs).
        if bank:
            first, first_next = self._first_beat_flag(m, tag)
            firsts = _row_copies(m, self._fabric, first_next, first, "first_beat", rows)
            forward = Signal(name="bank_forward")
            forward_next = tags[-1].valid & (tags[-2].tile == tags[-1].tile)
            m.d.sync += forward.eq(forward_next)
            forwards = _row_copies(m, self._fabric, forward_next, forward, "bank_forward",
                                   rows)
        # done takes every cycle's sums (only those of a last beat, done_tag.valid,
        # are used): no enable on its rows x acc_width flip-flops
        done = Signal(data.ArrayLayout(signed(width), rows), name="done")
        done_tag = Signal(tag_layout, name="done_tag")
        m.d.sync += [done_tag.eq(tag), done_tag.valid.eq(tag.valid & tag.last)]
        # beats counts the rounds of the current dot products (with the registers a
        # round is one beat)
        with m.If(tag.valid):
            with m.If(beats == self._max_beats):
                m.d.sync += self.error.overflow.eq(1)
            with m.If(tag.wrap if bank else Const(1)):
                with m.If(tag.last):
                    m.d.sync += beats.eq(0)
                with m.Elif(beats != self._max_beats):
                    m.d.sync += beats.eq(beats + 1)
        for row, (acc, group) in enumerate(zip(accs, groups)):
            # the lane group's last correction rides in as the carry-in; the sum
            # wraps only past max_beats (flagged)
            carry = group.carry if group.has_correction else None
            if bank:
                # read a cycle ahead (the tag one stage earlier), write back the sum; a
                # tile read while the beat before writes it takes that beat's sum from
                # done (forwarded) instead of the memory's old one: one LUT per bit
                # selects 0, the forwarded or the read sum, and the adder's result
                # loops back through no bypass mux
                memory = Memory(shape=signed(width), depth=self._acc_tiles, init=[])
                m.submodules[f"bank{row}"] = memory
                write = memory.write_port()
                read = memory.read_port()
                stored = Mux(firsts[row], 0, Mux(forwards[row], done[row], read.data))
                total = Signal(signed(width), name=f"total{row}")
                m.d.comb += [
                    read.addr.eq(tags[-2].tile),
                    total.eq(add_with_carry(stored, group.sum, carry)[:width]),
                    write.addr.eq(tag.tile),
                    write.data.eq(total),
                    write.en.eq(tag.valid),
                ]
                m.d.sync += done[row].eq(total)
                continue
            total = add_with_carry(acc, group.sum, carry)[:width].as_signed()
            m.d.sync += done[row].eq(total)
            with m.If(tag.valid):
                with m.If(tag.last):
                    m.d.sync += acc.eq(0)
                with m.Else():
                    m.d.sync += acc.eq(total)

        result, result_valid = done, done_tag.valid
        if self._output_stage and self._output_rows is None:
            result, result_valid = self._output_stage_pipeline(m, done, done_tag)
        elif serial:
            result, result_valid = self._shared_output_stage(m, done, done_tag, starts,
                                                             taken)
        elif self._output_stage:
            m.submodules.output_stage = stage = OutputStage(
                slots=rows, acc_width=width, fabric=self._fabric)
            m.d.comb += [stage.valid.eq(done_tag.valid), stage.acc.eq(done),
                         stage.scale.eq(done_tag.scale), stage.shift.eq(done_tag.shift)]
            result, result_valid = stage.out, stage.out_valid
        m.d.comb += [
            fifo.w.valid.eq(result_valid),
            fifo.w.payload.eq(result),
            self.res.valid.eq(fifo.r.valid),
            self.res.payload.eq(fifo.r.payload),
            fifo.r.ready.eq(self.res.ready),
        ]
        return m

    def _first_beat_flag(self, m, tag):
        """A register that is 1 while the accumulate stage's beat is the first round of
        its tiles (``beats == 0``): set by a last beat, cleared by any other, updated
        when the round ends (``tag.wrap``), 1 after reset; returned with its next
        state."""
        first = Signal(name="first_beat", init=1)
        following = Signal(name="first_beat_next")
        m.d.comb += following.eq(Mux(tag.valid & tag.wrap, tag.last, first))
        m.d.sync += first.eq(following)
        return first, following

    def _shared_output_stage(self, m, done, done_tag, starts, taken):
        """Finished vectors queue (``QUEUE_DEPTH`` deep, LUT RAM); a serializer passes
        ``output_rows`` rows a cycle through one :class:`OutputStage`, a vector every
        ``R`` cycles; a collector puts the result vector back together. Returns the
        result and its valid, for the result FIFO."""
        rows, slots, interval = self._rows, self._output_rows, self.output_interval
        width = self.acc_width
        entry = data.StructLayout({"acc": data.ArrayLayout(signed(width), rows),
                                   "scale": unsigned(SCALE_WIDTH),
                                   "shift": unsigned(SHIFT_WIDTH)})
        m.submodules.queue = queue = Memory(shape=entry, depth=QUEUE_DEPTH, init=[],
                                            attrs={"ram_style": QUEUE_RAM_STYLE})
        write, read = queue.write_port(), queue.read_port()
        address = (QUEUE_DEPTH - 1).bit_length()
        # pointers one bit wider than the address: equal means empty (the credits
        # keep the queue from ever holding more than QUEUE_DEPTH vectors)
        write_ptr = Signal(address + 1, name="queue_write")
        read_ptr = Signal(address + 1, name="queue_read")
        m.d.comb += [write.addr.eq(write_ptr[:address]), write.en.eq(done_tag.valid),
                     write.data.acc.eq(done), write.data.scale.eq(done_tag.scale),
                     write.data.shift.eq(done_tag.shift)]
        with m.If(done_tag.valid):
            m.d.sync += write_ptr.eq(write_ptr + 1)

        # Start a vector when one is queued, the result FIFO has room for its result
        # and the previous vector's last slice is being issued (or none is).
        res_room = _credits(m, "res_credits", result_fifo_depth(
            self._lanes, self._levels_per_stage, True, slots, rows,
            act_copies=self._act_copies), starts, taken)
        # Every term of the start is a register (the queue's "not empty" and the
        # slice counter's "last slice" computed a cycle ahead), so the start is one LUT
        # away from flip-flops.
        issuing = Signal(name="ser_issuing")
        slice_index = Signal(range(interval), name="ser_slice")
        final = Signal(name="ser_slice_final")  # slice_index == interval - 1
        waiting = Signal(range(QUEUE_DEPTH + 1), name="queue_waiting")
        queued = Signal(name="queue_nonempty")  # waiting != 0
        m.d.comb += [starts.eq(queued & res_room & (~issuing | final)),
                     read.addr.eq(read_ptr[:address]), read.en.eq(starts)]
        arrives = done_tag.valid
        m.d.sync += [
            waiting.eq(Mux(arrives & ~starts, waiting + 1,
                           Mux(starts & ~arrives, waiting - 1, waiting))),
            queued.eq(arrives | Mux(starts, waiting != 1, waiting != 0)),
        ]
        with m.If(starts):
            m.d.sync += [read_ptr.eq(read_ptr + 1), issuing.eq(1), slice_index.eq(0),
                         final.eq(interval == 1)]
        with m.Elif(issuing):
            with m.If(final):
                m.d.sync += [issuing.eq(0), final.eq(0)]
            with m.Else():
                m.d.sync += [slice_index.eq(slice_index + 1),
                             final.eq(slice_index == interval - 2)]

        # The serializer: slice k of the vector in the read register, registered.
        head = read.data
        pieces = Array(Cat(*[head.acc[k * slots + j] for j in range(slots)])
                       for k in range(interval))
        ser_acc = Signal(data.ArrayLayout(signed(width), slots), name="ser_acc",
                         reset_less=True)
        ser_scale = Signal(unsigned(SCALE_WIDTH), name="ser_scale", reset_less=True)
        ser_shift = Signal(unsigned(SHIFT_WIDTH), name="ser_shift", reset_less=True)
        ser_valid, ser_final = Signal(name="ser_valid"), Signal(name="ser_final")
        m.d.sync += [ser_acc.eq(pieces[slice_index]), ser_scale.eq(head.scale),
                     ser_shift.eq(head.shift), ser_valid.eq(issuing),
                     ser_final.eq(issuing & final)]

        m.submodules.output_stage = stage = OutputStage(
            slots=slots, acc_width=width, fabric=self._fabric, tag_width=1)
        m.d.comb += [stage.valid.eq(ser_valid), stage.acc.eq(ser_acc),
                     stage.scale.eq(ser_scale), stage.shift.eq(ser_shift),
                     stage.tag.eq(ser_final)]

        # The collector: a vector's slices leave the stage on consecutive cycles, so a
        # shift register without enable holds slices 0 .. R - 2 when the last leaves.
        held = [Signal(data.ArrayLayout(signed(OUT_WIDTH), slots), name=f"collect{k}",
                       reset_less=True) for k in range(interval - 1)]
        for k in range(interval - 1):
            m.d.sync += held[k].eq(held[k + 1] if k + 1 < interval - 1 else stage.out)
        result = Signal(self.res_layout, name="collected")
        m.d.comb += result.eq(Cat(*held, stage.out))
        return result, stage.out_valid & stage.out_tag[0]

    def _input_stage(self, m):
        """The activations and weight codes each row's lane group takes: the input
        payloads themselves, or with ``act_copies`` one register stage of both, the
        activations in ``act_copies`` copies (copy ``j`` feeds rows ``j * per_copy`` to
        ``(j + 1) * per_copy - 1``) so no register drives every row."""
        rows, copies = self._rows, self._act_copies
        data, codes = self.act.payload.data, self.wgt.payload
        if copies is None:
            return [data] * rows, [codes[row] for row in range(rows)]
        per_copy = -(-rows // copies)
        activations = []
        for copy in range(copies):
            value = Signal(data.shape(), name=f"act_copy{copy}", reset_less=True)
            if self._fabric == ECP5:
                # Yosys merges registers of one input (opt_merge); vendor flip-flop
                # instances it leaves alone, one copy per placement region.
                from ternary_accel.hw.rtl.ecp5 import flip_flop
                raw = value.as_value()
                for bit in range(len(raw)):
                    m.submodules[f"act_copy{copy}_ff{bit}"] = flip_flop(
                        data.as_value()[bit], raw[bit])
            else:
                m.d.sync += value.eq(data)
            activations += [value] * min(per_copy, rows - copy * per_copy)
        registered = Signal(codes.shape(), name="wgt_stage", reset_less=True)
        m.d.sync += registered.eq(codes)
        return activations, [registered[row] for row in range(rows)]

    def _output_stage_pipeline(self, m, done, done_tag):
        """Multiply register, then round/saturate register (``model.arith.round_fixed``)."""
        rows = self._rows
        product_width = self.acc_width + SCALE_WIDTH + 1
        products = Signal(data.ArrayLayout(signed(product_width), rows), name="mul_products")
        mul_valid = Signal(name="mul_valid")
        shift = Signal(unsigned(SHIFT_WIDTH), name="mul_shift")
        m.d.sync += [mul_valid.eq(done_tag.valid), shift.eq(done_tag.shift)]
        for row in range(rows):
            m.d.sync += products[row].eq(done[row] * done_tag.scale)

        # Half an output LSB: bit (shift - 1) set, none when shift == 0. A shift of the
        # product's width or more rounds every value to 0.
        bias = Signal(unsigned(product_width), name="round_bias")
        m.d.comb += bias.eq((Const(1, product_width + 1) << shift)[1:])
        lo, hi = signed_range(OUT_WIDTH)
        results = Signal(self.res_layout, name="results")
        result_valid = Signal(name="result_valid")
        m.d.sync += result_valid.eq(mul_valid)
        for row in range(rows):
            rounded = Signal(signed(product_width + 1), name=f"rounded{row}")
            m.d.comb += rounded.eq(Mux(shift >= product_width, 0,
                                       (products[row] + bias) >> shift))
            m.d.sync += results[row].eq(Mux(rounded > hi, hi, Mux(rounded < lo, lo, rounded)))
        return results, result_valid
