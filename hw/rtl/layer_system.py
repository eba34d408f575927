"""The layer engine in a system: :class:`LayerSystem`, one BitLinear layer (up to T
tokens) from DRAM.

The engine sits behind an AXI4-Lite register file
(:data:`~ternary_accel.hw.regmap.LAYER_REGMAP`) and one AXI4 master
(:class:`~ternary_accel.hw.rtl.dma.TokenDma` with the channels ``act``, ``scale``,
``wgt`` and the written ``out``): the top a LiteX SoC or a Vivado block design takes for
a layer at a time, with the ports of :class:`~ternary_accel.hw.rtl.system.TokenSystem`
(``s_axil_*``, ``m_axi_*``, ``aclk``, ``aresetn``, ``irq``).

**A run.** The host writes the layer's shape (``LAYER_SHAPE.beats`` = in_features /
lanes, ``.tiles`` = out_features / rows), ``LAYER_TOKENS`` and the four base addresses,
then ``CONTROL.start``. :class:`LayerCore` asks the DMA for the tokens' scale words and
activation words and for every weight word of the layer at once (the weights prefetch
into the DMA's FIFO while the activations load); the activations go to an on-chip
buffer of ``act_words`` words, (beat, token) order, the scales to a table. Then, for
each row tile, it plays the buffer to the engine (a beat's tokens on consecutive cycles,
the engine's weight reuse) while the weight words stream from DRAM straight into the
engine's port; each result vector (``rows`` 16-bit outputs of a token and a tile) is
written to ``OUT_BASE + (token * tiles + tile) * OUT_STRIDE``, so a token's outputs are
contiguous in DRAM. The layer is done when its last result is in DRAM (``B``).

**Refused starts.** A zero ``beats``, ``tiles`` or ``LAYER_TOKENS``, tokens above T,
beats above ``max_beats``, tokens x beats above ``ACT_WORDS``, or weight words past the
command's 24-bit count set ``ERROR.shape``; a base address not aligned to the bus sets
``ERROR.align``; either ends the start at once with ``done`` (and ``IRQ_STATUS.error``),
without touching memory. Bus errors, soft reset, start while busy and the interrupt
behave as in :class:`~ternary_accel.hw.rtl.system.TokenSystem` (:func:`control_plane`).

**Cycles.** ``CYCLES_LOAD`` (start to the last activation on chip), ``CYCLES_RUN`` (to
the last result handed to the DMA), ``CYCLES_TOTAL`` (start to done),
``CYCLES_STALL`` (cycles of the run in which the engine was ready for a weight word
that had not arrived). The cycle model of the run is the engine's
(:meth:`~ternary_accel.hw.params.EngineParams.mapping`): :func:`layer_run_cycles`.
"""

from amaranth.hdl import Module, Signal, Value, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ternary_accel.model.arith import SCALE_WIDTH, SHIFT_WIDTH

from ternary_accel.hw.params import ROWS_ORDER, EngineParams
from ternary_accel.hw.regmap import LAYER_REGMAP, build_layer_constants
from ternary_accel.hw.rtl.axi_lite import RegisterFile
from ternary_accel.hw.rtl.dma import TokenDma
from ternary_accel.hw.rtl.engine import LayerEngine
from ternary_accel.hw.rtl.system import assemble, bus_ports, control_plane
from ternary_accel.hw.rtl.token import CMD_LAYOUT

__all__ = ["LayerCore", "LayerSystem", "LAYER_CHANNELS", "MAX_COUNT"]

#: The layer system's read channels, by ``ARID``.
LAYER_CHANNELS = ("act", "scale", "wgt")
#: Words a read command asks for at most (its ``count`` field).
MAX_COUNT = (1 << CMD_LAYOUT.members["count"].width) - 1


def check_system_params(params, act_words):
    """Raise ``ValueError`` unless ``params`` and ``act_words`` make a layer system."""
    if not isinstance(params, EngineParams):
        raise TypeError(f"params must be an EngineParams, not {params!r}")
    if params.weight_port_bits is None:
        raise ValueError("a layer system needs a weight port (weight_port_bits): its "
                         "weights arrive as port words from DRAM")
    if not params.output_stage:
        raise ValueError("a layer system needs the engine's output stage")
    if params.weight_order != ROWS_ORDER or params.acc_tiles is not None:
        raise ValueError("a layer system runs the dense engine (rows order, no "
                         "accumulator bank)")
    if act_words < params.tokens:
        raise ValueError(f"act_words ({act_words}) must hold a beat of each of the "
                         f"{params.tokens} tokens")


class LayerCore(wiring.Component):
    """The engine, its activation buffer and scale table, and the run's sequencing
    (module docstring): the part of :class:`LayerSystem` a soft reset resets.

    Parameters
    ----------
    params : EngineParams
        The engine (with a weight port and the output stage).
    act_words : int
        Words of the activation buffer (``lanes`` codes each).

    Attributes
    ----------
    start : In(1)
        Run the layer of ``beats``, ``tiles``, ``tokens`` (checked by the system).
    busy, done : Out(1)
        A run is going on; a run ended this cycle (its last result handed over).
    act_cmd, scale_cmd, wgt_cmd : Out(stream of CMD_LAYOUT)
    act_data, scale_data, wgt_data : In(stream of words)
    out_wr : Out(stream of {addr, data})
        A result vector and its word address in the OUT region.
    error : Out(1)
        The engine's error flags (sticky until reset), OR-ed.
    cycles_load, cycles_run, cycles_stall : Out(32)
    weight_words : Out(32)
        Weight words the run asks for (``tiles * beats * W``), for the system's check.
    """

    def __init__(self, params, act_words):
        check_system_params(params, act_words)
        self.params = params
        self.act_words = act_words
        self.engine = LayerEngine(params)
        self.words_per_beat = self.engine.port_words_per_beat
        T = params.tokens
        #: Bits of each channel's word.
        self.word_bits = {
            "act": params.lanes * params.act_width,
            "scale": SCALE_WIDTH + SHIFT_WIDTH,
            "wgt": self.engine.weight_port_bits,
            "out": Value.cast(Signal(self.engine.unit.res_layout)).shape().width,
        }
        cmd = stream.Signature(CMD_LAYOUT)
        super().__init__({
            "start": In(1), "beats": In(16), "tiles": In(16), "tokens": In(range(T + 1)),
            "busy": Out(1), "done": Out(1),
            "act_cmd": Out(cmd), "scale_cmd": Out(cmd), "wgt_cmd": Out(cmd),
            "act_data": In(stream.Signature(unsigned(self.word_bits["act"]))),
            "scale_data": In(stream.Signature(unsigned(self.word_bits["scale"]))),
            "wgt_data": In(stream.Signature(unsigned(self.word_bits["wgt"]))),
            "out_wr": Out(stream.Signature(data.StructLayout({
                "addr": unsigned(32), "data": unsigned(self.word_bits["out"])}))),
            "error": Out(1),
            "cycles_load": Out(32), "cycles_run": Out(32), "cycles_stall": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        T, W = p.tokens, self.words_per_beat
        m.submodules.engine = engine = self.engine
        m.submodules.buffer = buffer = memory.Memory(
            shape=unsigned(self.word_bits["act"]), depth=self.act_words, init=[])
        wr = buffer.write_port()
        rd = buffer.read_port()          # synchronous: data the cycle after its address

        beats, tiles = Signal(16), Signal(16)
        tokens = Signal(range(T + 1))
        scales = [Signal(SCALE_WIDTH + SHIFT_WIDTH, name=f"scale_{t}") for t in range(T)]
        loading, running = Signal(), Signal()
        m.d.comb += self.busy.eq(loading | running)
        if T > 1:
            m.d.comb += engine.batch.eq(tokens)

        # -- start: latch the shape, ask for the scales, the activations, the weights ---
        act_total = Signal(32)           # tokens * beats
        with m.If(self.start & ~self.busy):
            m.d.sync += [beats.eq(self.beats), tiles.eq(self.tiles), tokens.eq(self.tokens),
                         act_total.eq(self.tokens * self.beats), loading.eq(1),
                         self.act_cmd.valid.eq(1), self.scale_cmd.valid.eq(1),
                         self.wgt_cmd.valid.eq(1),
                         self.cycles_load.eq(0), self.cycles_run.eq(0),
                         self.cycles_stall.eq(0)]
        m.d.comb += [self.scale_cmd.payload.count.eq(tokens),
                     self.act_cmd.payload.count.eq(act_total),
                     self.wgt_cmd.payload.count.eq(tiles * beats * W)]
        for cmd in (self.act_cmd, self.scale_cmd, self.wgt_cmd):
            with m.If(cmd.valid & cmd.ready):
                m.d.sync += cmd.valid.eq(0)

        # -- load: scales to the table, activations to the buffer ------------------------
        s_index = Signal(range(T + 1))
        a_index = Signal(32)
        m.d.comb += [self.scale_data.ready.eq(loading), self.act_data.ready.eq(loading),
                     wr.addr.eq(a_index), wr.data.eq(self.act_data.payload),
                     wr.en.eq(self.act_data.valid & self.act_data.ready)]
        with m.If(self.scale_data.valid & self.scale_data.ready):
            m.d.sync += s_index.eq(s_index + 1)
            for t, reg in enumerate(scales):
                with m.If(s_index == t):
                    m.d.sync += reg.eq(self.scale_data.payload)
        with m.If(wr.en):
            m.d.sync += a_index.eq(a_index + 1)
        with m.If(loading):
            m.d.sync += self.cycles_load.eq(self.cycles_load + 1)
            with m.If((s_index == tokens) & (a_index == act_total) & ~self.act_cmd.valid &
                      ~self.scale_cmd.valid):
                m.d.sync += [loading.eq(0), running.eq(1), s_index.eq(0), a_index.eq(0)]

        # -- the feeder: for each tile, the buffer in (beat, token) order ----------------
        f_tile, f_beat = Signal(16), Signal(16)
        f_token = Signal(range(T + 1))
        f_addr = Signal(range(self.act_words + 1))
        f_more = Signal()                # beats of the run still to read
        out_valid = Signal()             # the read port's data is the next beat
        out_last = Signal()
        out_scale = Signal(SCALE_WIDTH + SHIFT_WIDTH)
        advance = Signal()
        m.d.comb += advance.eq(~out_valid | self.engine.act.ready)
        m.d.comb += [rd.addr.eq(f_addr), rd.en.eq(advance)]
        with m.If(self.start & ~self.busy):
            m.d.sync += [f_tile.eq(0), f_beat.eq(0), f_token.eq(0), f_addr.eq(0),
                         f_more.eq(1)]
        with m.If(advance):
            m.d.sync += out_valid.eq(running & f_more)
            with m.If(running & f_more):
                m.d.sync += [out_last.eq(f_beat == beats - 1),
                             out_scale.eq(_select(m, scales, f_token)),
                             f_addr.eq(f_addr + 1), f_token.eq(f_token + 1)]
                with m.If(f_token == tokens - 1):
                    m.d.sync += [f_token.eq(0), f_beat.eq(f_beat + 1)]
                    with m.If(f_beat == beats - 1):
                        m.d.sync += [f_beat.eq(0), f_addr.eq(0), f_tile.eq(f_tile + 1)]
                        with m.If(f_tile == tiles - 1):
                            m.d.sync += f_more.eq(0)
        act = engine.act
        m.d.comb += [act.valid.eq(out_valid),
                     Value.cast(act.payload.data).eq(rd.data),
                     act.payload.last.eq(out_last),
                     act.payload.scale.eq(out_scale[:SCALE_WIDTH]),
                     act.payload.shift.eq(out_scale[SCALE_WIDTH:])]

        # -- weights straight from the DMA ----------------------------------------------
        m.d.comb += [engine.wgt.valid.eq(self.wgt_data.valid & running),
                     Value.cast(engine.wgt.payload).eq(self.wgt_data.payload),
                     self.wgt_data.ready.eq(engine.wgt.ready & running)]
        w_left = Signal(32)              # weight words still due
        with m.If(self.start & ~self.busy):
            m.d.sync += w_left.eq(self.tiles * self.beats * W)
        with m.Elif(self.wgt_data.valid & self.wgt_data.ready):
            m.d.sync += w_left.eq(w_left - 1)

        # -- results: (token, tile) order in DRAM ---------------------------------------
        r_token = Signal(range(T + 1))
        r_tile = Signal(16)
        r_base = Signal(32)              # r_token * tiles
        res = engine.res
        m.d.comb += [self.out_wr.valid.eq(res.valid),
                     self.out_wr.payload.addr.eq(r_base + r_tile),
                     self.out_wr.payload.data.eq(Value.cast(res.payload)),
                     res.ready.eq(self.out_wr.ready)]
        with m.If(self.start & ~self.busy):
            m.d.sync += [r_token.eq(0), r_tile.eq(0), r_base.eq(0)]
        with m.If(res.valid & res.ready):
            m.d.sync += [r_token.eq(r_token + 1), r_base.eq(r_base + tiles)]
            with m.If(r_token == tokens - 1):
                m.d.sync += [r_token.eq(0), r_base.eq(0), r_tile.eq(r_tile + 1)]
                with m.If(r_tile == tiles - 1):
                    m.d.comb += self.done.eq(1)
                    m.d.sync += running.eq(0)
        with m.If(running):
            m.d.sync += self.cycles_run.eq(self.cycles_run + 1)
            with m.If(engine.wgt.ready & ~self.wgt_data.valid & (w_left != 0)):
                m.d.sync += self.cycles_stall.eq(self.cycles_stall + 1)

        m.d.comb += self.error.eq(engine.error.code | engine.error.overflow)
        return m


def _select(m, values, index):
    """``values[index]`` (a mux of signals)."""
    out = Signal.like(values[0])
    with m.Switch(index):
        for i, v in enumerate(values):
            with m.Case(i):
                m.d.comb += out.eq(v)
    return out


class LayerSystem(wiring.Component):
    """The layer engine, its register file and its DMA (module docstring).

    Parameters
    ----------
    params : EngineParams
        The engine: with a weight port (``weight_port_bits``) and the output stage; T
        (``tokens``) the most tokens of a run.
    act_words : int
        Words of the activation buffer (a word: ``lanes`` codes of a token): a run
        takes tokens x beats of them at most.
    bus_bits : int
        The AXI4 master's data width.
    addr_width : int
        The AXI4 master's address bits.
    **dma : the other parameters of :class:`~ternary_accel.hw.rtl.dma.TokenDma`.

    Attributes
    ----------
    aclk, aresetn : In(1)
    s_axil_* : the AXI4-Lite slave (12 address bits, 32-bit data).
    m_axi_* : the AXI4 master.
    irq : Out(1)
    """

    def __init__(self, params=None, act_words=4096, bus_bits=128, *, addr_width=64,
                 **dma):
        params = EngineParams(lanes=16, rows=32, weight_port_bits=bus_bits) \
            if params is None else params
        self.params = params
        self.core = LayerCore(params, act_words)
        self.dma = TokenDma(self.core.word_bits, channels=LAYER_CHANNELS, entries="out",
                            logits=False, bus_bits=bus_bits, addr_width=addr_width, **dma)
        self.bus_bits = bus_bits
        self.act_words = act_words
        #: The register file's constants (identification, limits, strides).
        self.constants = build_layer_constants(params, act_words, self.core.word_bits,
                                               bus_bits=bus_bits)
        self.regs = RegisterFile(LAYER_REGMAP, self.constants)
        super().__init__(bus_ports(LAYER_REGMAP, addr_width, bus_bits, self.dma.id_width))

    def mapping(self, out_features, in_features, tokens=1):
        """The engine's cycle model of a layer (:meth:`EngineParams.mapping`)."""
        return self.params.mapping(out_features, in_features, tokens)

    def elaborate(self, platform):
        m = Module()
        core, dma, regs = self.core, self.dma, self.regs
        core_rst, dma_rst = assemble(m, self, regmap=regs.regmap)
        p = self.params

        # -- the core's channels to the DMA ------------------------------------------------
        for ch in LAYER_CHANNELS:
            wiring.connect(m, getattr(core, f"{ch}_cmd"), getattr(dma, f"{ch}_cmd"))
            wiring.connect(m, getattr(dma, f"{ch}_data"), getattr(core, f"{ch}_data"))
        m.d.comb += [dma.out_wr.valid.eq(core.out_wr.valid),
                     dma.out_wr.payload.eq(core.out_wr.payload),
                     core.out_wr.ready.eq(dma.out_wr.ready)]
        bases = {}
        for ch in (*LAYER_CHANNELS, "out"):
            bases[ch] = getattr(regs, f"{ch}_base_lo") | getattr(regs, f"{ch}_base_hi") << 32
            m.d.comb += getattr(dma, f"{ch}_base").eq(bases[ch])

        # -- the start's checks (products registered: the registers are written long
        #    before a start) ---------------------------------------------------------------
        beats, tiles, tokens = regs.layer_shape_beats, regs.layer_shape_tiles, regs.layer_tokens
        act_total, wgt_total = Signal(48), Signal(48)
        m.d.sync += [act_total.eq(tokens * beats),
                     wgt_total.eq(tiles * beats * core.words_per_beat)]
        shape_bad, align_bad = Signal(), Signal()
        m.d.comb += [
            shape_bad.eq((beats == 0) | (tiles == 0) | (tokens == 0) | (tokens > p.tokens) |
                         (beats > p.max_beats) | (act_total > self.act_words) |
                         (wgt_total > MAX_COUNT)),
            align_bad.eq(_any([b[:(self.bus_bits // 8).bit_length() - 1] != 0
                               for b in bases.values()]))]
        m.d.comb += [core.beats.eq(beats), core.tiles.eq(tiles), core.tokens.eq(tokens)]

        start, refused = Signal(), Signal()
        plane = control_plane(m, regs, dma, core_busy=core.busy, core_done=core.done,
                              core_rst=core_rst, dma_rst=dma_rst, start=start,
                              refused=refused, irq=self.irq,
                              core_errors={"engine": core.error})
        m.d.comb += [refused.eq(shape_bad | align_bad),
                     core.start.eq(start),
                     regs.error_shape_set.eq(plane.accepted & shape_bad),
                     regs.error_align_set.eq(plane.accepted & align_bad)]
        m.d.comb += [regs.cycles_load.eq(core.cycles_load), regs.cycles_run.eq(core.cycles_run),
                     regs.cycles_stall.eq(core.cycles_stall)]
        with m.If(plane.accepted):
            m.d.sync += regs.cycles_total.eq(0)
        with m.Elif(plane.busy):
            m.d.sync += regs.cycles_total.eq(regs.cycles_total + 1)
        return m


def _any(values):
    out = values[0]
    for v in values[1:]:
        out = out | v
    return out
