"""The LM head's hardware path, bit for bit :func:`ternary_accel.model.hwnum.head_accumulators`
and :func:`~ternary_accel.model.hwnum.argmax`; with
:class:`~ternary_accel.hw.rtl.rescale.Rescale` (``row_scales=True``) between them it is
:func:`~ternary_accel.model.hwnum.head_logits` and the token's argmax.

* :class:`HeadDot`: a token's ``hidden`` input codes (the final norm's int8 quantizer,
  ``lanes`` a beat on ``act``, kept in a memory), then the head's rows streamed from
  memory, ``rows`` rows a beat of ``lanes`` codes each (``head_bits`` wide; ``trit5``
  codes in 8 bits) with each row's group multiplier for the beat (``grouped`` only),
  its row scale and ``last`` at the tile's last beat, ``end`` at the head's
  last. A beat's products (registered) are summed per row in two registered adder
  levels, times the multiplier (registered), into the row's accumulator (``hw.timing.HEAD_PIPELINE``
  stages; a stall at the bank holds them all); at ``last`` the ``rows`` sums go to an output bank that
  leaves one row a cycle (``value``, the row's scale, ``last`` on the head's last row)
  while the next tile runs. The head's group must be a multiple of ``lanes``.
* :class:`Argmax`: the residual-format logits one a beat; at ``last`` the index of the
  largest, the lowest among equals, and its value.

Every input pattern has a defined answer: ``act`` beats wait while a head is streaming,
weight beats wait until a token's codes are in (the ``act`` beat with ``last``), the
address counters wrap at ``last`` or at ``hidden / lanes`` beats, whichever comes first
(a stream with the wrong number of beats gives wrong sums, never a hang).
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ternary_accel.model.hwnum import DEFAULT, TRIT5_MAX, HwNumerics

__all__ = ["HeadDot", "Argmax", "head_code_width", "head_acc_width"]


def head_code_width(numerics):
    """Signed bits of a head code: ``head_bits``, or 8 for ``trit5`` (-121..121)."""
    return 8 if numerics.head == "trit5" else numerics.head_bits


def _mult_width(numerics):
    return numerics.head_group_bits if numerics.head == "grouped" else 1


def head_acc_width(hidden, numerics):
    """Signed bits of a row's accumulator over ``hidden`` inputs: the act and code
    widths, the multiplier and the sum's growth."""
    code_max = TRIT5_MAX if numerics.head == "trit5" else (1 << (numerics.head_bits - 1)) - 1
    act_max = 1 << (numerics.head_act_bits - 1)
    mult_max = (1 << _mult_width(numerics)) - 1
    return (hidden * act_max * code_max * mult_max).bit_length() + 1


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")


class HeadDot(wiring.Component):
    """The head's exact row sums of a token (module docstring).

    Parameters
    ----------
    hidden : int
        Inputs a row (a multiple of ``lanes``).
    lanes : int
        Inputs a beat (a divisor of a ``grouped`` head's ``head_group``).
    rows : int
        Rows a beat.
    numerics : model.hwnum.HwNumerics
        ``head``, ``head_bits``, ``head_group``, ``head_group_bits``, ``head_act_bits``,
        ``scale_bits``.
    """

    def __init__(self, hidden, lanes, rows, numerics=DEFAULT):
        for name, value in (("hidden", hidden), ("lanes", lanes), ("rows", rows)):
            _positive(name, value)
        if not isinstance(numerics, HwNumerics):
            raise TypeError(f"numerics must be an HwNumerics, not {type(numerics).__name__}")
        if hidden % lanes:
            raise ValueError(f"lanes = {lanes} does not divide hidden = {hidden}")
        if numerics.head == "grouped" and numerics.head_group % lanes:
            raise ValueError(f"lanes = {lanes} does not divide the head's group "
                             f"{numerics.head_group}")
        self.hidden, self.lanes, self.rows, self.numerics = hidden, lanes, rows, numerics
        self.beats = hidden // lanes
        self.acc_width = head_acc_width(hidden, numerics)
        s = numerics.scale_bits
        scale = {"mant": unsigned(s), "exp": signed(8)}
        self._scale = data.StructLayout(scale)
        beat = {"codes": data.ArrayLayout(data.ArrayLayout(
                    signed(head_code_width(numerics)), lanes), rows)}
        if numerics.head == "grouped":
            beat["mult"] = data.ArrayLayout(unsigned(numerics.head_group_bits), rows)
        super().__init__({
            "act": In(stream.Signature(data.StructLayout({
                "codes": data.ArrayLayout(signed(numerics.head_act_bits), lanes),
                "last": unsigned(1)}))),
            "weights": In(stream.Signature(data.StructLayout({
                **beat, "scale": data.ArrayLayout(self._scale, rows),
                "last": unsigned(1), "end": unsigned(1)}))),
            "o": Out(stream.Signature(data.StructLayout({
                "value": signed(self.acc_width), **scale, "last": unsigned(1)}))),
        })

    def elaborate(self, platform):
        n, rows, lanes = self.numerics, self.rows, self.lanes
        m = Module()
        m.submodules.codes = memory = Memory(
            shape=data.ArrayLayout(signed(n.head_act_bits), lanes), depth=self.beats,
            init=[])
        write = memory.write_port()
        read = memory.read_port()           # synchronous: the beat's codes a cycle later

        loading = Signal(init=1)            # a token's codes are being written
        act_addr = Signal(range(self.beats))
        beat_addr = Signal(range(self.beats))

        # The pipeline (hw.timing.HEAD_PIPELINE stages after the edge that takes a beat),
        # advancing together: P the beat (the memory reads its codes), Q the codes
        # registered, S1 the products, S2 the first tree levels' sums, D the row sums,
        # E the row sums times the multipliers (accumulated at the next edge).
        control = data.StructLayout({
            "scale": data.ArrayLayout(self._scale, rows), "last": unsigned(1),
            "end": unsigned(1),
            **({"mult": data.ArrayLayout(unsigned(n.head_group_bits), rows)}
               if n.head == "grouped" else {})})
        code_w = head_code_width(n)
        prod_w = n.head_act_bits + code_w
        p_valid, p_beat = Signal(), Signal(self.weights.payload.shape())
        q_valid, q_beat = Signal(), Signal(self.weights.payload.shape())
        q_codes = Signal(data.ArrayLayout(signed(n.head_act_bits), lanes))
        stages = []                          # (valid, control) of S1, S2, D, E
        for name in ("s1", "s2", "d", "e"):
            stages.append((Signal(name=f"{name}_valid"), Signal(control, name=f"{name}_ctl")))
        products = [[Signal(signed(prod_w), name=f"prod{r}_{k}") for k in range(lanes)]
                    for r in range(rows)]
        split = max(1, lanes // 4)           # S2 sums groups of `split` products
        parts = -(-lanes // split)
        part_w = prod_w + split.bit_length()
        partials = [[Signal(signed(part_w), name=f"part{r}_{g}") for g in range(parts)]
                    for r in range(rows)]
        dot_w = prod_w + lanes.bit_length()
        dots = [Signal(signed(dot_w), name=f"dot{r}") for r in range(rows)]
        weighted_w = dot_w + (n.head_group_bits + 1 if n.head == "grouped" else 0)
        weighted = [Signal(signed(weighted_w), name=f"weighted{r}") for r in range(rows)]

        # the output bank: `rows` sums and scales leaving one a cycle
        bank = Signal(data.ArrayLayout(signed(self.acc_width), rows))
        bank_scale = Signal(data.ArrayLayout(self._scale, rows))
        bank_end = Signal()
        bank_full = Signal()
        out_row = Signal(range(rows))
        accs = [Signal(signed(self.acc_width), name=f"acc{r}") for r in range(rows)]

        d_valid, d_ctl = stages[2]
        e_valid, e_ctl = stages[3]
        draining = bank_full & ~(self.o.ready & (out_row == rows - 1))
        advance = ~(e_valid & e_ctl.last & draining)
        accept = self.weights.valid & self.weights.ready

        m.d.comb += [
            self.act.ready.eq(loading),
            write.addr.eq(act_addr), write.data.eq(self.act.payload.codes),
            write.en.eq(self.act.valid & loading),
            self.weights.ready.eq(~loading & advance),
            read.addr.eq(beat_addr), read.en.eq(advance),
        ]
        with m.If(self.act.valid & loading):
            m.d.sync += act_addr.eq(Mux(self.act.payload.last | (act_addr == self.beats - 1),
                                        0, act_addr + 1))
            with m.If(self.act.payload.last):
                m.d.sync += loading.eq(0)
        with m.If(accept):
            m.d.sync += beat_addr.eq(Mux(self.weights.payload.last
                                         | (beat_addr == self.beats - 1), 0, beat_addr + 1))
            with m.If(self.weights.payload.end):
                m.d.sync += loading.eq(1)

        def take(ctl, beat):
            out = [ctl.scale.eq(beat.scale), ctl.last.eq(beat.last), ctl.end.eq(beat.end)]
            if n.head == "grouped":
                out.append(ctl.mult.eq(beat.mult))
            return out

        with m.If(advance):
            m.d.sync += [p_valid.eq(accept), p_beat.eq(self.weights.payload)]
            # Q: the memory's output registered (its clock-to-out is long on ECP5)
            m.d.sync += [q_valid.eq(p_valid), q_beat.eq(p_beat), q_codes.eq(read.data)]
            # S1: the products of the beat's codes and the token's codes
            (s1_valid, s1_ctl), (s2_valid, s2_ctl) = stages[0], stages[1]
            m.d.sync += [s1_valid.eq(q_valid), *take(s1_ctl, q_beat)]
            for r in range(rows):
                for k in range(lanes):
                    m.d.sync += products[r][k].eq(q_codes[k] * q_beat.codes[r][k])
            # S2: sums of `split` products; D: the row sums
            m.d.sync += [s2_valid.eq(s1_valid), s2_ctl.eq(s1_ctl)]
            for r in range(rows):
                for g in range(parts):
                    m.d.sync += partials[r][g].eq(sum(products[r][g * split:(g + 1) * split]))
            m.d.sync += [d_valid.eq(s2_valid), d_ctl.eq(s2_ctl)]
            for r in range(rows):
                m.d.sync += dots[r].eq(sum(partials[r]))
            # E: each row sum times the beat's multiplier
            m.d.sync += [e_valid.eq(d_valid), e_ctl.eq(d_ctl)]
            for r in range(rows):
                m.d.sync += weighted[r].eq(dots[r] * d_ctl.mult[r] if n.head == "grouped"
                                           else dots[r])

        # the output bank, one row a cycle
        m.d.comb += [self.o.valid.eq(bank_full),
                     self.o.payload.value.eq(bank[out_row]),
                     self.o.payload.mant.eq(bank_scale[out_row].mant),
                     self.o.payload.exp.eq(bank_scale[out_row].exp),
                     self.o.payload.last.eq(bank_end & (out_row == rows - 1))]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += out_row.eq(Mux(out_row == rows - 1, 0, out_row + 1))
            with m.If(out_row == rows - 1):
                m.d.sync += bank_full.eq(0)

        # the weighted row sums into the rows' accumulators
        with m.If(e_valid & advance):
            for r in range(rows):
                total = accs[r] + weighted[r]
                with m.If(e_ctl.last):
                    m.d.sync += [accs[r].eq(0), bank[r].eq(total),
                                 bank_scale[r].eq(e_ctl.scale[r])]
                with m.Else():
                    m.d.sync += accs[r].eq(total)
            with m.If(e_ctl.last):
                m.d.sync += [bank_full.eq(1), bank_end.eq(e_ctl.end)]
        return m


class Argmax(wiring.Component):
    """The index of the largest residual-format logit, the lowest among equals
    (module docstring).

    Parameters
    ----------
    vocab : int
        Logits a token (sizes the index).
    numerics : model.hwnum.HwNumerics
        ``resid_bits``.
    """

    def __init__(self, vocab, numerics=DEFAULT):
        _positive("vocab", vocab)
        self.vocab, self.numerics = vocab, numerics
        w = numerics.resid_bits
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"value": signed(w),
                                                        "last": unsigned(1)}))),
            "o": Out(stream.Signature(data.StructLayout({
                "index": unsigned(max(1, (vocab - 1).bit_length())), "value": signed(w)}))),
        })

    def elaborate(self, platform):
        m = Module()
        w = self.numerics.resid_bits
        index = Signal(range(max(2, self.vocab)))
        best = Signal(signed(w))
        best_index = Signal.like(index)
        result = Signal(self.o.payload.shape())
        full = Signal()
        beat = self.i.payload
        first = index == 0
        better = first | (beat.value > best)
        m.d.comb += [self.i.ready.eq(~full), self.o.valid.eq(full), self.o.payload.eq(result)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += full.eq(0)
        with m.If(self.i.valid & self.i.ready):
            value = Mux(better, beat.value, best)
            at = Mux(better, index, best_index)
            with m.If(beat.last):
                m.d.sync += [index.eq(0), full.eq(1), result.index.eq(at),
                             result.value.eq(value)]
            with m.Else():
                m.d.sync += [index.eq(index + 1), best.eq(value), best_index.eq(at)]
        return m
