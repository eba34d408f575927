"""The token core: the whole decoder token on the fabric, run by a sequencer from a
program (:mod:`ternary_accel.hw.program`), bit for bit
:class:`~ternary_accel.hw.program.GoldenToken` and so
:class:`~ternary_accel.model.hwdecoder.HwDecoder`.

The host loads the memories once a model (:class:`~ternary_accel.hw.program.TokenImage`),
and per token sets ``token_in`` and ``position``, pulses ``start`` and waits for
``done``; ``token`` then holds the argmax and the logits have left on ``logits``. The
sequencer fetches one instruction at a time from ``prog``, runs it to completion and
fetches the next, until ``END``.

Units (each its own module, bit for bit its golden function): the ternary
:class:`~ternary_accel.hw.rtl.engine.LayerEngine` (no output stage) with a
:class:`~ternary_accel.hw.rtl.rescale.Rescale`;
:class:`~ternary_accel.hw.rtl.normquant.NormQuant`;
:class:`~ternary_accel.hw.rtl.rope.Rope`;
:class:`~ternary_accel.hw.rtl.elementwise.Elementwise`;
:class:`~ternary_accel.hw.rtl.attention.AbsmaxQuant` (the KV cache's writer) and
:class:`~ternary_accel.hw.rtl.attention.AttentionHead`;
:class:`~ternary_accel.hw.rtl.head.HeadDot` with a row-scale ``Rescale`` and
:class:`~ternary_accel.hw.rtl.head.Argmax`.

Data movers shared by the operations: two scratchpad readers (synchronous read ports,
a registered output stream each), one scratchpad writer (the operation's result
stream to consecutive addresses), the code buffer's writer (``lanes`` codes a word) and
reader (the buffer replayed once per row tile), and one command per memory channel
per operation (two per head for the KV cache's keys and values).

Every channel is a stream with a handshake on both sides, so the core runs at any
memory latency and under any stalls; a bad opcode stops the program with
``error.opcode``; the units' refusals (a vector longer than a buffer) are sticky
``error`` flags too. ``start`` while busy is ignored (``busy`` says so).
"""

from amaranth.hdl import Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ternary_accel.hw import program as P
from ternary_accel.hw.rtl.attention import KV_LAYOUT, AbsmaxQuant, AttentionHead
from ternary_accel.hw.rtl.elementwise import Elementwise
from ternary_accel.hw.rtl.engine import LayerEngine
from ternary_accel.hw.rtl.head import Argmax, HeadDot
from ternary_accel.hw.rtl.normquant import NormQuant
from ternary_accel.hw.rtl.rescale import Rescale
from ternary_accel.hw.rtl.rope import Rope
from ternary_accel.hw.rtl.scalar import EXP_WIDTH

__all__ = ["TokenCore", "CMD_LAYOUT", "TokenErrors", "instruction_layout", "COUNTER_BITS"]

#: Bits of a cycle counter.
COUNTER_BITS = 32

#: A read channel's command: ``count`` words from word address ``addr``.
CMD_LAYOUT = data.StructLayout({"addr": unsigned(32), "count": unsigned(24)})


def instruction_layout():
    """The instruction word as an Amaranth layout (:data:`hw.program.INSTRUCTION`)."""
    return data.StructLayout({name: signed(bits) if s else unsigned(bits)
                              for name, bits, s in P.INSTRUCTION})


class TokenErrors(data.Struct):
    """Sticky error flags, cleared by ``start``.

    Attributes
    ----------
    opcode : an instruction with an unknown ``op`` (the program stopped there)
    norm : the fused norm refused a vector longer than its buffer
    attention : the attention unit refused a row longer than its buffer
    engine : the engine received an invalid weight code or overflowed
    """

    opcode: 1
    norm: 1
    attention: 1
    engine: 1


class _Reader:
    """A scratchpad read port as a stream: ``count`` words from ``base``."""

    def __init__(self, m, memory, name, width):
        self.port = memory.read_port()
        self.valid = Signal(name=f"{name}_valid")
        self.ready = Signal(name=f"{name}_ready")
        self.data = Signal(signed(width), name=f"{name}_data")
        self.addr = Signal(16, name=f"{name}_addr")
        self.left = Signal(24, name=f"{name}_left")
        self.load = Signal(name=f"{name}_load")
        self.base = Signal(16, name=f"{name}_base")
        self.count = Signal(24, name=f"{name}_count")
        advance = ~self.valid | self.ready
        m.d.comb += [self.port.addr.eq(self.addr), self.port.en.eq(advance),
                     self.data.eq(self.port.data)]
        with m.If(self.load):
            m.d.sync += [self.addr.eq(self.base), self.left.eq(self.count),
                         self.valid.eq(0)]
        with m.Elif(advance):
            m.d.sync += self.valid.eq(self.left != 0)
            with m.If(self.left != 0):
                m.d.sync += [self.addr.eq(self.addr + 1), self.left.eq(self.left - 1)]


class TokenCore(wiring.Component):
    """A whole decoder token from a program (module docstring).

    Parameters
    ----------
    program : hw.program.TokenProgram
        Sizes the core: the engine, the numerics, the configuration (widths, heads,
        vocabulary), the KV region's positions, the scratchpad.

    Attributes
    ----------
    start, token_in, position : in
    busy, done, token, error : out
    prog_cmd/prog_data, vec_cmd/vec_data, wgt_cmd/wgt_data, kv_cmd/kv_data, kv_wr,
    head_cmd/head_data : the memory channels (:mod:`hw.program`).
    logits : out stream of ``{value, last}``: the token's logits in the residual format.
    """

    def __init__(self, program):
        if not isinstance(program, P.TokenProgram):
            raise TypeError(f"program must be a TokenProgram, not {type(program).__name__}")
        self.program = program
        c, n, p = program.config, program.numerics, program.params
        self._engine = LayerEngine(p)
        self._head = HeadDot(c.hidden, p.lanes, program.head_rows, n)
        self.kv_layout = KV_LAYOUT(c.head_dim, n)
        #: Bits of each memory channel's word.
        self.word_bits = {"prog": P.instruction_bits(), "vec": P.VEC_BITS,
                          "wgt": Shape.cast(self._engine.wgt.payload.shape()).width,
                          "kv": self.kv_layout.size,
                          "head": Shape.cast(self._head.weights.payload.shape()).width}
        cmd = stream.Signature(CMD_LAYOUT)
        super().__init__({
            "start": In(1), "token_in": In(range(c.vocab)),
            "position": In(range(program.positions)),
            "busy": Out(1), "done": Out(1), "token": Out(range(c.vocab)),
            "error": Out(TokenErrors),
            "prog_cmd": Out(cmd), "prog_data": In(stream.Signature(instruction_layout())),
            "vec_cmd": Out(cmd), "vec_data": In(stream.Signature(signed(P.VEC_BITS))),
            "wgt_cmd": Out(cmd),
            "wgt_data": In(stream.Signature(self._engine.wgt.payload.shape())),
            "kv_cmd": Out(cmd), "kv_data": In(stream.Signature(self.kv_layout)),
            "kv_wr": Out(stream.Signature(data.StructLayout({"addr": unsigned(32),
                                                             "data": self.kv_layout}))),
            "head_cmd": Out(cmd),
            "head_data": In(stream.Signature(self._head.weights.payload.shape())),
            "logits": Out(stream.Signature(data.StructLayout({
                "value": signed(n.resid_bits), "last": unsigned(1)}))),
            "cycles": Out(data.ArrayLayout(unsigned(COUNTER_BITS), len(P.OPS))),
        })

    def elaborate(self, platform):
        prog = self.program
        c, n, p = prog.config, prog.numerics, prog.params
        hd, lanes, rows = c.head_dim, p.lanes, p.rows
        m = Module()
        w = n.resid_bits

        # -- memories on chip ------------------------------------------------------------
        m.submodules.scratch = scratch = Memory(shape=signed(w), depth=prog.scratch.words,
                                                init=[])
        m.submodules.codes = codes = Memory(shape=data.ArrayLayout(signed(8), lanes),
                                            depth=prog.code_words, init=[])
        ra = _Reader(m, scratch, "ra", w)
        rb = _Reader(m, scratch, "rb", w)
        sw = scratch.write_port()
        cw = codes.write_port()
        cr = codes.read_port()

        # -- units -------------------------------------------------------------------------
        m.submodules.engine = engine = self._engine
        acc_width = len(engine.res.payload[0])
        m.submodules.rescale = rescale = Rescale(acc_width, n)
        widest = max(c.hidden, c.ffn, c.heads * hd)
        m.submodules.norm = norm = NormQuant(widest, n)
        m.submodules.rope = rope = Rope(hd, prog.positions, c.rope_theta, n)
        m.submodules.elementwise = elem = Elementwise(n)
        code_bits = sorted({n.qk_bits, n.v_bits})
        m.submodules.kvquant = kvq = AbsmaxQuant(
            hd, code_bits[0] if len(code_bits) == 1 else tuple(code_bits), n)
        m.submodules.attention = attn = AttentionHead(hd, prog.positions, n,
                                                       lanes=prog.attention_lanes)
        m.submodules.head = head = self._head
        m.submodules.head_rescale = hrescale = Rescale(head.acc_width, n, row_scales=True)
        m.submodules.argmax = argmax = Argmax(c.vocab, n)
        kvq_bits = kvq.code_bits

        # -- the sequencer's state -----------------------------------------------------------
        ins = Signal(instruction_layout())
        pc = Signal(32)
        token = Signal(range(c.vocab))
        factor = Signal(data.StructLayout({"mant": unsigned(n.scale_bits + 1),
                                           "exp": signed(EXP_WIDTH)}))
        errors = Signal(TokenErrors)
        m.d.comb += [self.token.eq(token), self.error.eq(errors)]
        issued = Signal(24)           # commands issued by this operation
        written = Signal(24)          # results this operation has stored
        expect = Signal(24)           # results it stores in all
        consumed = Signal(24)         # input beats a zip or router has passed on
        aux = Signal(24)              # a second count (code words, KV beats, heads)
        factor_sent = Signal()
        start_op = Signal()           # a cycle to load the movers
        row = Signal(range(rows))     # MATMUL: the engine result's row going out
        in_group = Signal(16)         # ATTEND: query heads issued of the KV head
        kv_offset = Signal(32)        # ATTEND: the KV head's entries
        kv_addr = Signal(32)          # KV_WRITE: the next entry's address
        q_index = Signal(16)          # ATTEND: the query element going in
        kv_codes = Signal(data.ArrayLayout(signed(kvq_bits), hd))   # KV_WRITE's entry
        kv_index = Signal(range(hd + 1))
        kv_full = Signal()
        op = ins.op

        # the scratchpad writer: the operation's result stream
        wr = stream.Signature(signed(w)).create(path=("scratch_wr",))
        m.d.comb += [sw.addr.eq(ins.d + written), sw.data.eq(wr.payload),
                     sw.en.eq(wr.valid & wr.ready), wr.ready.eq(1)]
        with m.If(wr.valid):
            m.d.sync += written.eq(written + 1)

        # the code buffer writer: NORM's codes, ``lanes`` a word
        code_word = Signal(data.ArrayLayout(signed(8), lanes))
        code_lane = Signal(range(lanes))
        m.d.comb += [cw.addr.eq(aux), cw.data.eq(code_word)]

        # the code buffer reader: MATMUL's and HEAD's activation beats
        beats = Signal(16)
        beat = Signal(16)
        tile = Signal(20)
        tiles = Signal(20)
        act_valid = Signal()
        act_last = Signal()
        act_go = Signal()             # the replay is running
        act_ready = Signal()
        act_advance = ~act_valid | act_ready
        m.d.comb += [cr.addr.eq(beat), cr.en.eq(act_advance)]
        with m.If(start_op):
            m.d.sync += [beat.eq(0), tile.eq(0), act_valid.eq(0)]
        with m.Elif(act_advance):
            m.d.sync += act_valid.eq(act_go & (tile != tiles))
            with m.If(act_go & (tile != tiles)):
                m.d.sync += act_last.eq(beat == beats - 1)
                with m.If(beat == beats - 1):
                    m.d.sync += [beat.eq(0), tile.eq(tile + 1)]
                with m.Else():
                    m.d.sync += beat.eq(beat + 1)

        # the channels' commands: one a step of ``issued`` while ``cmd_go``
        def command(channel, addr, count, total=1):
            m.d.comb += [channel.valid.eq(issued < total), channel.payload.addr.eq(addr),
                         channel.payload.count.eq(count)]
            with m.If(channel.valid & channel.ready):
                m.d.sync += issued.eq(issued + 1)

        # -- the cycle counters: a token's cycles by operation, the fetch and decode of
        # every instruction on ``END``'s counter (cleared by ``start``)
        counters = Signal.like(self.cycles)
        counting = Signal(range(len(P.OPS)))
        m.d.comb += self.cycles.eq(counters)
        with m.If(self.start & ~self.busy):
            m.d.sync += counters.eq(0)
        with m.Elif(self.busy):
            for k in range(len(P.OPS)):
                with m.If(counting == k):
                    m.d.sync += counters[k].eq(counters[k] + 1)

        # -- the sequencer -----------------------------------------------------------------
        m.d.comb += [self.busy.eq(1), counting.eq(op)]
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.busy.eq(0)
                with m.If(self.start):
                    m.d.sync += [pc.eq(0), errors.eq(0)]
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += [counting.eq(P.END), self.prog_cmd.valid.eq(1), self.prog_cmd.payload.addr.eq(pc),
                             self.prog_cmd.payload.count.eq(1)]
                with m.If(self.prog_cmd.ready):
                    m.next = "DECODE"
            with m.State("DECODE"):
                m.d.comb += [counting.eq(P.END), self.prog_data.ready.eq(1)]
                with m.If(self.prog_data.valid):
                    m.d.sync += [ins.eq(self.prog_data.payload), pc.eq(pc + 1)]
                    m.next = "SETUP"
            with m.State("SETUP"):
                m.d.comb += [counting.eq(P.END), start_op.eq(1)]
                m.d.sync += [issued.eq(0), written.eq(0), consumed.eq(0), aux.eq(0),
                             factor_sent.eq(0), code_lane.eq(0), row.eq(0), in_group.eq(0),
                             kv_offset.eq(0), q_index.eq(0), kv_index.eq(0), kv_full.eq(0),
                             kv_addr.eq(ins.addr + self.position)]
                m.d.comb += [ra.base.eq(ins.a), rb.base.eq(ins.b), ra.load.eq(1),
                             rb.load.eq(1)]
                m.d.sync += tiles.eq(0)
                with m.Switch(op):
                    with m.Case(P.END):
                        m.d.comb += self.done.eq(1)
                        m.next = "IDLE"
                    with m.Case(P.LOAD):
                        m.d.sync += expect.eq(ins.n)
                        m.next = "LOAD"
                    with m.Case(P.NORM):
                        m.d.comb += ra.count.eq(ins.n)
                        m.next = "NORM"
                    with m.Case(P.MATMUL):
                        m.d.sync += [expect.eq(ins.reps), beats.eq(ins.n // lanes),
                                     tiles.eq(ins.reps // rows)]
                        m.next = "MATMUL"
                    with m.Case(P.ROPE):
                        m.d.comb += ra.count.eq(ins.n * ins.reps)
                        m.d.sync += expect.eq(ins.n * ins.reps)
                        m.next = "ROPE"
                    with m.Case(P.KV_WRITE):
                        m.d.comb += ra.count.eq(ins.n * ins.reps)
                        m.d.sync += expect.eq(ins.reps)
                        m.next = "KV_WRITE"
                    with m.Case(P.ATTEND):
                        m.d.comb += ra.count.eq(ins.n * ins.reps)
                        m.d.sync += expect.eq(ins.n * ins.reps)
                        m.next = "ATTEND"
                    with m.Case(P.ELEMENTWISE):
                        m.d.comb += [ra.count.eq(ins.n), rb.count.eq(ins.n)]
                        m.d.sync += expect.eq(ins.n)
                        m.next = "ELEMENTWISE"
                    with m.Case(P.HEAD):
                        m.d.sync += [beats.eq(ins.n // lanes), tiles.eq(1)]
                        m.next = "HEAD"
                    with m.Default():
                        m.d.sync += errors.opcode.eq(1)
                        m.d.comb += self.done.eq(1)
                        m.next = "IDLE"

            with m.State("LOAD"):
                command(self.vec_cmd, ins.addr + Mux(ins.sub[0], self.token_in * ins.n, 0),
                        ins.n)
                m.d.comb += [wr.valid.eq(self.vec_data.valid),
                             wr.payload.eq(self.vec_data.payload[:w].as_signed()),
                             self.vec_data.ready.eq(1)]
                with m.If(written == expect):
                    m.next = "FETCH"

            with m.State("NORM"):
                command(self.vec_cmd, ins.addr, ins.n)
                both = ra.valid & self.vec_data.valid
                m.d.comb += [norm.i.valid.eq(both), norm.i.payload.x.eq(ra.data),
                             norm.i.payload.g.eq(self.vec_data.payload[:n.gain_bits]),
                             norm.i.payload.last.eq(consumed == ins.n - 1),
                             ra.ready.eq(both & norm.i.ready),
                             self.vec_data.ready.eq(both & norm.i.ready),
                             norm.gain_exp.eq(ins.gexp), norm.eps_term.eq(ins.eps),
                             norm.const_mant.eq(ins.cmant), norm.const_exp.eq(ins.cexp),
                             norm.int4.eq(0)]
                with m.If(both & norm.i.ready):
                    m.d.sync += consumed.eq(consumed + 1)
                m.d.comb += norm.factor.ready.eq(1)
                with m.If(norm.factor.valid):
                    m.d.sync += [factor.mant.eq(norm.factor.payload.mant),
                                 factor.exp.eq(norm.factor.payload.exp)]
                m.d.comb += norm.codes.ready.eq(1)
                with m.If(norm.codes.valid):
                    last_lane = (code_lane == lanes - 1) | norm.codes.payload.last
                    for lane in range(lanes):
                        with m.If(code_lane == lane):
                            m.d.sync += code_word[lane].eq(norm.codes.payload.code)
                            m.d.comb += cw.data[lane].eq(norm.codes.payload.code)
                    m.d.comb += cw.en.eq(last_lane)
                    m.d.sync += code_lane.eq(Mux(last_lane, 0, code_lane + 1))
                    with m.If(last_lane):
                        m.d.sync += aux.eq(aux + 1)
                    with m.If(norm.codes.payload.last):
                        m.next = "FETCH"
                with m.If(norm.error):
                    m.d.sync += errors.norm.eq(1)
                    m.next = "FETCH"

            with m.State("MATMUL"):
                command(self.wgt_cmd, ins.addr, tiles * beats * engine._words)
                m.d.comb += [act_go.eq(1), engine.act.valid.eq(act_valid),
                             engine.act.payload.data.eq(cr.data),
                             engine.act.payload.last.eq(act_last),
                             act_ready.eq(engine.act.ready),
                             engine.wgt.valid.eq(self.wgt_data.valid),
                             engine.wgt.payload.eq(self.wgt_data.payload),
                             self.wgt_data.ready.eq(engine.wgt.ready)]
                # the engine's rows, one a beat, into the rescale
                m.d.comb += [rescale.factor.valid.eq(~factor_sent),
                             rescale.factor.payload.eq(factor),
                             rescale.scale_mant.eq(ins.mant), rescale.scale_exp.eq(ins.exp),
                             rescale.acc.valid.eq(engine.res.valid & factor_sent),
                             rescale.acc.payload.last.eq(consumed == expect - 1),
                             engine.res.ready.eq(rescale.acc.ready & factor_sent
                                                 & (row == rows - 1)),
                             wr.valid.eq(rescale.o.valid), wr.payload.eq(rescale.o.payload.value),
                             rescale.o.ready.eq(wr.ready)]
                for r in range(rows):
                    with m.If(row == r):
                        m.d.comb += rescale.acc.payload.value.eq(engine.res.payload[r])
                with m.If(rescale.factor.valid & rescale.factor.ready):
                    m.d.sync += factor_sent.eq(1)
                with m.If(rescale.acc.valid & rescale.acc.ready):
                    m.d.sync += [row.eq(Mux(row == rows - 1, 0, row + 1)),
                                 consumed.eq(consumed + 1)]
                with m.If(written == expect):
                    m.next = "FETCH"

            with m.State("ROPE"):
                m.d.comb += [rope.i.valid.eq(ra.valid), rope.i.payload.eq(ra.data),
                             ra.ready.eq(rope.i.ready), rope.position.eq(self.position),
                             wr.valid.eq(rope.o.valid), wr.payload.eq(rope.o.payload.value),
                             rope.o.ready.eq(wr.ready)]
                with m.If(written == expect):
                    m.next = "FETCH"

            with m.State("ELEMENTWISE"):
                both = ra.valid & rb.valid
                m.d.comb += [elem.i.valid.eq(both), elem.i.payload.op.eq(ins.sub),
                             elem.i.payload.a.eq(ra.data), elem.i.payload.b.eq(rb.data),
                             elem.i.payload.last.eq(0),
                             ra.ready.eq(both & elem.i.ready), rb.ready.eq(both & elem.i.ready),
                             wr.valid.eq(elem.o.valid), wr.payload.eq(elem.o.payload.value),
                             elem.o.ready.eq(wr.ready)]
                with m.If(written == expect):
                    m.next = "FETCH"

            with m.State("KV_WRITE"):
                m.d.comb += [kvq.i.valid.eq(ra.valid), kvq.i.payload.value.eq(ra.data),
                             kvq.i.payload.last.eq(consumed == ins.n - 1),
                             ra.ready.eq(kvq.i.ready)]
                if len(code_bits) > 1:
                    m.d.comb += kvq.bits.eq(ins.bits)
                with m.If(ra.valid & kvq.i.ready):
                    m.d.sync += consumed.eq(Mux(consumed == ins.n - 1, 0, consumed + 1))
                m.d.comb += kvq.codes.ready.eq(~kv_full)
                with m.If(kvq.codes.valid & ~kv_full):
                    for d in range(hd):
                        with m.If(kv_index == d):
                            m.d.sync += kv_codes[d].eq(kvq.codes.payload.code)
                    m.d.sync += kv_index.eq(kv_index + 1)
                    with m.If(kvq.codes.payload.last):
                        m.d.sync += [kv_full.eq(1), kv_index.eq(0)]
                # a head's entry leaves when its codes and its factor are in
                m.d.comb += [self.kv_wr.valid.eq(kv_full & kvq.factor.valid),
                             self.kv_wr.payload.addr.eq(kv_addr),
                             self.kv_wr.payload.data.codes.eq(kv_codes),
                             kvq.factor.ready.eq(kv_full & self.kv_wr.ready)]
                for name in ("mant", "exp"):
                    m.d.comb += getattr(self.kv_wr.payload.data, name).eq(
                        getattr(kvq.factor.payload, name))
                with m.If(self.kv_wr.valid & self.kv_wr.ready):
                    m.d.sync += [kv_full.eq(0), aux.eq(aux + 1),
                                 kv_addr.eq(kv_addr + ins.stride)]
                    with m.If(aux == expect - 1):
                        m.next = "FETCH"

            with m.State("ATTEND"):
                # commands: keys then values of each query head's KV head (``b`` query
                # heads a KV head: the KV head's offset advances every ``b`` heads)
                length = self.position + 1
                which = issued[0]
                m.d.comb += [self.kv_cmd.valid.eq(issued < 2 * ins.reps),
                             self.kv_cmd.payload.addr.eq(
                                 Mux(which, ins.addr2, ins.addr) + kv_offset),
                             self.kv_cmd.payload.count.eq(length)]
                with m.If(self.kv_cmd.valid & self.kv_cmd.ready):
                    m.d.sync += issued.eq(issued + 1)
                    with m.If(which):
                        with m.If(in_group == ins.b - 1):
                            m.d.sync += [in_group.eq(0), kv_offset.eq(kv_offset + ins.stride)]
                        with m.Else():
                            m.d.sync += in_group.eq(in_group + 1)
                # the data: a head's keys to the keys port, then its values
                to_values = consumed >= length
                m.d.comb += [attn.keys.payload.eq(self.kv_data.payload),
                             attn.values.payload.eq(self.kv_data.payload),
                             attn.keys.payload.last.eq(consumed == length - 1),
                             attn.values.payload.last.eq(consumed == 2 * length - 1),
                             attn.keys.valid.eq(self.kv_data.valid & ~to_values),
                             attn.values.valid.eq(self.kv_data.valid & to_values),
                             self.kv_data.ready.eq(Mux(to_values, attn.values.ready,
                                                       attn.keys.ready))]
                with m.If(self.kv_data.valid & self.kv_data.ready):
                    m.d.sync += consumed.eq(Mux(consumed == 2 * length - 1, 0, consumed + 1))
                m.d.comb += [attn.q.valid.eq(ra.valid), attn.q.payload.value.eq(ra.data),
                             attn.q.payload.last.eq(q_index == ins.n - 1),
                             ra.ready.eq(attn.q.ready)]
                with m.If(attn.q.valid & attn.q.ready):
                    m.d.sync += q_index.eq(Mux(q_index == ins.n - 1, 0, q_index + 1))
                m.d.comb += [wr.valid.eq(attn.o.valid), wr.payload.eq(attn.o.payload.value),
                             attn.o.ready.eq(wr.ready)]
                with m.If(attn.error):
                    m.d.sync += errors.attention.eq(1)
                with m.If(written == expect):
                    m.d.sync += q_index.eq(0)
                    m.next = "FETCH"

            with m.State("HEAD"):
                head_rows = prog.head_rows
                head_tiles = -(-c.vocab // head_rows)
                command(self.head_cmd, ins.addr, head_tiles * (c.hidden // lanes))
                m.d.comb += [act_go.eq(1), head.act.valid.eq(act_valid),
                             head.act.payload.codes.eq(cr.data),
                             head.act.payload.last.eq(act_last),
                             act_ready.eq(head.act.ready),
                             head.weights.valid.eq(self.head_data.valid),
                             head.weights.payload.eq(self.head_data.payload),
                             self.head_data.ready.eq(head.weights.ready)]
                m.d.comb += [hrescale.factor.valid.eq(~factor_sent),
                             hrescale.factor.payload.eq(factor),
                             hrescale.acc.valid.eq(head.o.valid & factor_sent),
                             hrescale.acc.payload.value.eq(head.o.payload.value),
                             hrescale.acc.payload.mant.eq(head.o.payload.mant),
                             hrescale.acc.payload.exp.eq(head.o.payload.exp),
                             hrescale.acc.payload.last.eq(head.o.payload.last),
                             head.o.ready.eq(hrescale.acc.ready & factor_sent)]
                with m.If(hrescale.factor.valid & hrescale.factor.ready):
                    m.d.sync += factor_sent.eq(1)
                # rows past the vocabulary (the last tile's padding) are dropped
                kept = consumed < c.vocab
                last_row = consumed == c.vocab - 1
                m.d.comb += [argmax.i.payload.value.eq(hrescale.o.payload.value),
                             argmax.i.payload.last.eq(last_row),
                             self.logits.payload.value.eq(hrescale.o.payload.value),
                             self.logits.payload.last.eq(last_row),
                             argmax.i.valid.eq(hrescale.o.valid & kept & self.logits.ready),
                             self.logits.valid.eq(hrescale.o.valid & kept & argmax.i.ready),
                             hrescale.o.ready.eq(~kept | (argmax.i.ready & self.logits.ready))]
                with m.If(hrescale.o.valid & hrescale.o.ready):
                    m.d.sync += consumed.eq(consumed + 1)
                m.d.comb += argmax.o.ready.eq(1)
                with m.If(argmax.o.valid):
                    m.d.sync += token.eq(argmax.o.payload.index)
                    m.d.sync += aux.eq(1)
                with m.If(aux[0] & (consumed == head_tiles * head_rows)):
                    m.next = "FETCH"

        with m.If(engine.error.code | engine.error.overflow):
            m.d.sync += errors.engine.eq(1)
        return m
