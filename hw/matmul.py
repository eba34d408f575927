"""The matmul unit: ``rows`` dot-product lane groups sharing one activation stream,
multi-beat accumulation, an optional fixed-point output stage, and stream interfaces."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from model.arith import OUT_WIDTH, SCALE_WIDTH, SHIFT_WIDTH, acc_width, signed_range
from model.encoding import code_width
from model.quant import ACT_WIDTH, TERNARY

from .buffer import RESULT_BUFFER_LATENCY, ResultBuffer
from .lanes import (GENERIC, DotProduct, add_with_carry, check_act_width, check_fabric,
                    invalid_code, tree_latency)
from .params import check_bool, check_positive_int, check_weight_mode

__all__ = ["MatmulUnit", "ErrorLayout", "act_layout", "wgt_layout", "res_layout",
           "result_width", "unit_latency", "pipeline_depth", "result_fifo_depth",
           "code_flag_latency"]


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


def result_width(lanes, max_beats, output_stage, weight_mode=TERNARY, act_width=ACT_WIDTH):
    """Bits of one result: ``OUT_WIDTH`` with the output stage, else the accumulator's
    ``acc_width(lanes * max_beats, weight_mode, act_width)``."""
    return (OUT_WIDTH if output_stage else
            acc_width(lanes * max_beats, weight_mode, act_width))


#: Inputs of each OR of the invalid-code flag tree (one LUT4).
INVALID_OR_FANIN = 4


def code_flag_latency(lanes, rows):
    """Cycles from a beat carrying an invalid code to ``error.code`` high: the pair
    flags, the registered OR tree over the ``rows * ceil(lanes / 2)`` pair flags, the
    sticky flag."""
    count, levels = rows * -(-lanes // 2), 0
    while count > 1:
        count, levels = -(-count // INVALID_OR_FANIN), levels + 1
    return 1 + levels + 1


#: Cycles from a write into the result FIFO to that result on ``res``.
RESULT_FIFO_LATENCY = RESULT_BUFFER_LATENCY


def pipeline_depth(lanes, levels_per_stage, output_stage):
    """Registers from the input handshake to the result FIFO's write port: the lane
    groups' tree stages, the accumulate register and, with the output stage, the
    multiply and round registers."""
    return tree_latency(lanes, levels_per_stage) + 1 + (2 if output_stage else 0)


def unit_latency(lanes, levels_per_stage, output_stage):
    """Cycles from a ``last`` beat's transfer to its result on ``res``, unstalled."""
    return pipeline_depth(lanes, levels_per_stage, output_stage) + RESULT_FIFO_LATENCY


def result_fifo_depth(lanes, levels_per_stage, output_stage):
    """Entries of the result FIFO: every result that can be in flight, plus slack so an
    always-ready consumer never throttles the input."""
    return unit_latency(lanes, levels_per_stage, output_stage) + 2


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
    lanes : int
        K, activations per beat (>= 1).
    rows : int
        M, output rows (>= 1).
    weight_mode : str
        ``"ternary"`` or ``"binary"``.
    output_stage : bool
        Rescale accumulators to ``OUT_WIDTH``-bit fixed point, or bypass.
    max_beats : int
        Longest dot product, in beats, that the accumulator is sized for
        (``acc_width(lanes * max_beats)`` bits). Longer ones raise ``error.overflow``.
    levels_per_stage : int
        Adder levels per pipeline register in the lane groups.
    acc_tiles : int, optional
        Keep the partial sums of up to ``acc_tiles`` row tiles in an accumulator bank
        (per row a memory ``acc_tiles`` deep, read and written back every beat) instead
        of one register per row. The stream then interleaves the dot products of
        ``tiles`` tiles (the beat-major order of :mod:`model.sparse`): beat ``n`` adds
        into tile ``n mod tiles``, and the ``tiles`` beats after a round's first one
        that carry ``last`` end their tiles' dot products, one result each, in tile
        order. With ``tiles = 1`` the bank behaves as the registers. A dot product's
        first round ignores what the bank holds, so a reset mid-stream leaves nothing
        stale. ``max_beats`` counts rounds.
    fabric : str
        ``"generic"`` (portable Verilog) or ``"ecp5"``: lane groups built from Lattice
        ``CCU2C`` carry cells (see :class:`hw.lanes.DotProduct`); same behaviour and
        latency, fewer LUTs on ECP5, and the Verilog then needs the Lattice cell library.
    act_width : int
        Bits of an activation: 8 (the default) or 4 (BitNet a4.8's int4 inputs,
        -8..7, two per byte on ``act``); lane groups and accumulators narrow to the
        int4 range. Ternary and binary weights only.

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

    def __init__(self, *, lanes, rows, weight_mode=TERNARY, output_stage=False,
                 max_beats=1024, levels_per_stage=1, fabric=GENERIC, act_width=ACT_WIDTH,
                 acc_tiles=None):
        self._lanes = check_positive_int("lanes", lanes)
        self._rows = check_positive_int("rows", rows)
        self._weight_mode = check_weight_mode(weight_mode)
        self._output_stage = check_bool("output_stage", output_stage)
        self._max_beats = check_positive_int("max_beats", max_beats)
        self._levels_per_stage = check_positive_int("levels_per_stage", levels_per_stage)
        self._fabric = check_fabric(fabric)
        self._act_width = check_act_width(act_width, self._weight_mode)
        self._acc_tiles = None if acc_tiles is None else check_positive_int("acc_tiles",
                                                                            acc_tiles)
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
    def latency(self):
        """Cycles from a ``last`` beat's transfer to its result on ``res``, unstalled
        (see :func:`unit_latency`)."""
        return unit_latency(self._lanes, self._levels_per_stage, self._output_stage)

    @property
    def code_flag_latency(self):
        """Cycles from the transfer of a beat with an invalid code to ``error.code``
        high (see :func:`code_flag_latency`)."""
        return code_flag_latency(self._lanes, self._rows)

    def elaborate(self, platform):
        m = Module()
        lanes, rows = self._lanes, self._rows
        depth = result_fifo_depth(lanes, self._levels_per_stage, self._output_stage)

        # The datapath never stalls: a beat is taken only while the result FIFO has
        # room for every result that may still be in flight (credits), so no register
        # needs an enable driven by res.ready.
        m.submodules.results = fifo = ResultBuffer(
            width=rows * self.res_width, depth=depth)
        committed = Signal(range(depth + 1))  # results accepted, not yet read out
        fire = Signal()
        room = Signal()
        m.d.comb += [
            room.eq(committed < depth),
            fire.eq(self.act.valid & self.wgt.valid & room),
            self.act.ready.eq(self.wgt.valid & room),
            self.wgt.ready.eq(self.act.valid & room),
        ]
        fire_last = fire & self.act.payload.last
        taken = fifo.r.valid & fifo.r.ready
        m.d.sync += committed.eq(committed + fire_last - taken)

        groups = []
        for row in range(rows):
            group = DotProduct(lanes=lanes, weight_mode=self._weight_mode,
                               levels_per_stage=self._levels_per_stage, carry_out=True,
                               fabric=self._fabric, act_width=self._act_width)
            m.submodules[f"row{row}"] = group
            groups.append(group)
            m.d.comb += [
                group.activations.eq(self.act.payload.data),
                group.codes.eq(self.wgt.payload[row]),
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
        for stage in range(self.tree_latency):
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
                # read a cycle ahead (the tag one stage earlier), write back the sum;
                # transparent, so a tile read right after its write sees the new sum
                memory = Memory(shape=signed(width), depth=self._acc_tiles, init=[])
                m.submodules[f"bank{row}"] = memory
                write = memory.write_port()
                read = memory.read_port(transparent_for=(write,))
                stored = Mux(beats == 0, 0, read.data)
                total = Signal(signed(width), name=f"total{row}")
                m.d.comb += [
                    read.addr.eq(tags[-2].tile),
                    total.eq(add_with_carry(stored, group.sum, carry)[:width]),
                    write.addr.eq(tag.tile),
                    write.data.eq(total),
                    write.en.eq(tag.valid),
                ]
                with m.If(tag.valid & tag.last):
                    m.d.sync += done[row].eq(total)
                continue
            with m.If(tag.valid):
                total = add_with_carry(acc, group.sum, carry)[:width].as_signed()
                with m.If(tag.last):
                    m.d.sync += [done[row].eq(total), acc.eq(0)]
                with m.Else():
                    m.d.sync += acc.eq(total)

        result, result_valid = done, done_tag.valid
        if self._output_stage:
            result, result_valid = self._output_stage_pipeline(m, done, done_tag)
        m.d.comb += [
            fifo.w.valid.eq(result_valid),
            fifo.w.payload.eq(result),
            self.res.valid.eq(fifo.r.valid),
            self.res.payload.eq(fifo.r.payload),
            fifo.r.ready.eq(self.res.ready),
        ]
        return m

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
