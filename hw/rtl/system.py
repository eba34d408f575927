"""The accelerator in a system: :class:`TokenSystem`, the token core
(:class:`~ternary_accel.hw.rtl.token.TokenCore`) behind an AXI4-Lite slave (the register
file of :data:`ternary_accel.hw.regmap.REGMAP`) with its memories in DRAM through one
AXI4 master (:class:`~ternary_accel.hw.rtl.dma.TokenDma`): the top a Vivado block design
takes (its ports named as AXI's: ``s_axil_*``, ``m_axi_*``, ``aclk``, ``aresetn``,
``irq``).

The glue besides the register file and the DMA:

- ``CONTROL.start`` starts a token (``TOKEN_IN`` at ``POSITION``) when idle; while busy
  it is ignored and sets ``ERROR.start_busy``. ``STATUS.busy`` is the core's busy (or a
  drain in progress, or the last writes not yet answered), ``STATUS.done`` a level set
  when a token ends (the core done and every write it made answered by ``B``: the
  logits are in DRAM) and cleared by the next start.
- ``ERROR``: the core's error bits on their rising edges; ``read_error``/``write_error``
  from the DMA, with ``ERROR_ADDR`` the failing address (the last one).
- A bus error during a token **ends it**: the core is held in reset, the DMA stops
  issuing and drains what is in flight (``TokenDma.abort``/``quiet``), then the DMA is
  reset and the token ends with ``done`` (``TOKEN`` holds no result then: check
  ``ERROR``). ``CONTROL.soft_reset`` does the same drain and reset without ``done``.
- ``IRQ_STATUS.done`` on each end of a token, ``IRQ_STATUS.error`` when an ERROR flag is
  set; ``irq`` = ``CONTROL.irq_enable & ((IRQ_STATUS & IRQ_ENABLE) != 0)``.
- ``CYCLES_*`` the core's counters; ``CYCLES_TOTAL`` the cycles from start to done,
  ``CYCLES_STALL`` those in which the core waited on the DMA (a command not taken, a word
  it was ready for and the DMA owed but had not delivered, a KV write or a logit not
  taken).
- ``LOGITS_STRIDE`` reads 4: logit ``i`` is the 32-bit word at ``LOGITS_BASE + 4 i``.
"""

from amaranth.hdl import (ClockDomain, ClockSignal, Module, ResetInserter, ResetSignal, Value,
                          Signal)
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ternary_accel.hw.regmap import COUNTER_NAMES, REGMAP, build_constants
from ternary_accel.hw.rtl.axi_lite import AxiLiteSignature, RegisterFile
from ternary_accel.hw.rtl.dma import (AXI4_MEMBERS, LOGIT_BYTES, READ_CHANNELS, TokenDma)
from ternary_accel.hw.rtl.token import TokenCore

__all__ = ["TokenSystem", "assemble", "bus_ports", "connect_buses", "control_plane", "ControlPlane"]


class TokenSystem(wiring.Component):
    """The token core, its register file and its DMA (module docstring).

    Parameters
    ----------
    program : hw.program.TokenProgram
        The core's program (its sizes; the program's words live in DRAM).
    bus_bits : int
        The AXI4 master's data width.
    addr_width : int
        The AXI4 master's address bits.
    **dma : the other parameters of :class:`~ternary_accel.hw.rtl.dma.TokenDma`
        (``max_burst``, ``outstanding``, ``fifo_beats``, ``max_writes``).

    Attributes
    ----------
    aclk, aresetn : In(1)
        The clock and AXI's active-low reset (synchronous).
    s_axil_* : the AXI4-Lite slave (12 address bits, 32-bit data).
    m_axi_* : the AXI4 master.
    irq : Out(1)
    """

    def __init__(self, program, bus_bits=128, *, addr_width=64, **dma):
        self.program = program
        self.core = TokenCore(program)
        self.dma = TokenDma(self.core.word_bits, bus_bits=bus_bits, addr_width=addr_width,
                            **dma)
        self.bus_bits = bus_bits
        #: The register file's constants (the identification, the strides).
        self.constants = build_constants(program, self.core.word_bits, bus_bits=bus_bits)
        self.constants["LOGITS_STRIDE.bytes"] = LOGIT_BYTES
        self.regs = RegisterFile(REGMAP, self.constants)
        super().__init__(bus_ports(REGMAP, addr_width, bus_bits, self.dma.id_width))

    def elaborate(self, platform):
        m = Module()
        core, dma, regs = self.core, self.dma, self.regs
        core_rst, dma_rst = assemble(m, self, regmap=regs.regmap)

        # -- the core's channels to the DMA ------------------------------------------------
        for ch in READ_CHANNELS:
            cmd, data_ = getattr(core, f"{ch}_cmd"), getattr(core, f"{ch}_data")
            dcmd, ddata = getattr(dma, f"{ch}_cmd"), getattr(dma, f"{ch}_data")
            m.d.comb += [dcmd.valid.eq(cmd.valid), dcmd.payload.eq(cmd.payload),
                         cmd.ready.eq(dcmd.ready),
                         data_.valid.eq(ddata.valid),
                         Value.cast(data_.payload).eq(ddata.payload),
                         ddata.ready.eq(data_.ready)]
        m.d.comb += [dma.kv_wr.valid.eq(core.kv_wr.valid),
                     dma.kv_wr.payload.addr.eq(core.kv_wr.payload.addr),
                     dma.kv_wr.payload.data.eq(Value.cast(core.kv_wr.payload.data)),
                     core.kv_wr.ready.eq(dma.kv_wr.ready),
                     dma.logit.valid.eq(core.logits.valid),
                     dma.logit.payload.eq(core.logits.payload.value),
                     core.logits.ready.eq(dma.logit.ready)]
        for ch in (*READ_CHANNELS, "logits"):
            m.d.comb += getattr(dma, f"{ch}_base").eq(
                getattr(regs, f"{ch}_base_lo") | getattr(regs, f"{ch}_base_hi") << 32)

        start = Signal()
        plane = control_plane(m, regs, dma, core_busy=core.busy, core_done=core.done,
                              core_rst=core_rst, dma_rst=dma_rst, start=start, irq=self.irq,
                              core_errors={name: getattr(core.error, name) for name in
                                           ("opcode", "norm", "attention", "engine")})
        m.d.comb += [core.start.eq(start), core.token_in.eq(regs.token_in),
                     core.position.eq(regs.position), dma.restart.eq(start),
                     regs.token.eq(core.token)]

        # -- counters --------------------------------------------------------------------
        for i, name in enumerate(COUNTER_NAMES):
            m.d.comb += getattr(regs, f"cycles_{name.lower()}").eq(core.cycles[i])
        stalled = Signal()
        waits = [core.kv_wr.valid & ~core.kv_wr.ready, core.logits.valid & ~core.logits.ready]
        for k, ch in enumerate(READ_CHANNELS):
            cmd, data_ = getattr(core, f"{ch}_cmd"), getattr(core, f"{ch}_data")
            waits += [cmd.valid & ~cmd.ready, data_.ready & ~data_.valid & dma.pending[k]]
        m.d.comb += stalled.eq(core.busy & _any(waits))
        with m.If(plane.accepted):
            m.d.sync += [regs.cycles_total.eq(0), regs.cycles_stall.eq(0)]
        with m.Elif(plane.busy):
            m.d.sync += regs.cycles_total.eq(regs.cycles_total + 1)
            with m.If(stalled):
                m.d.sync += regs.cycles_stall.eq(regs.cycles_stall + 1)
        return m


def bus_ports(regmap, addr_width, bus_bits, id_width):
    """The members of a system top: ``aclk``, ``aresetn``, the AXI4-Lite slave of
    ``regmap`` (``s_axil_*``), the AXI4 master (``m_axi_*``) and ``irq``."""
    lite = AxiLiteSignature(regmap.addr_bits)
    members = {"aclk": In(1), "aresetn": In(1)}
    for name, member in lite.members.items():      # the slave: the master's reversed
        members[f"s_axil_{name}"] = (In if member.flow == Out else Out)(member.shape)
    for name, (out, width) in AXI4_MEMBERS(addr_width, bus_bits, id_width).items():
        members[f"m_axi_{name}"] = (Out if out else In)(width)
    members["irq"] = Out(1)
    return members


def assemble(m, top, *, regmap):
    """The common part of a system top's ``elaborate``: the ``sync`` domain on ``aclk``
    and ``aresetn``; ``top.core`` and ``top.dma`` under reset inserters, ``top.regs``;
    the buses wired (:func:`connect_buses`). Returns the core's and the DMA's reset
    signals (for :func:`control_plane`)."""
    m.domains.sync = ClockDomain("sync")
    m.d.comb += [ClockSignal("sync").eq(top.aclk), ResetSignal("sync").eq(~top.aresetn)]
    core_rst, dma_rst = Signal(), Signal()
    m.submodules.core = ResetInserter(core_rst)(top.core)
    m.submodules.dma = ResetInserter(dma_rst)(top.dma)
    m.submodules.regs = top.regs
    connect_buses(m, top, regmap, top.regs, top.dma)
    return core_rst, dma_rst


def connect_buses(m, top, regmap, regs, dma):
    """Wire ``top``'s ports (:func:`bus_ports`) to its register file's slave and its
    DMA's master."""
    for name, member in AxiLiteSignature(regmap.addr_bits).members.items():
        port, inner = getattr(top, f"s_axil_{name}"), getattr(regs.axi, name)
        m.d.comb += (inner.eq(port) if member.flow == Out else port.eq(inner))
    for name, (out, _) in AXI4_MEMBERS(1, 8, 1).items():
        port, inner = getattr(top, f"m_axi_{name}"), getattr(dma.axi, name)
        m.d.comb += (port.eq(inner) if out else inner.eq(port))


class ControlPlane:
    """What :func:`control_plane` returns: ``accepted`` (a start taken: not busy),
    ``busy`` (the system's, drains included) and ``done`` (a job ends this cycle)."""

    def __init__(self, accepted, busy, done):
        self.accepted, self.busy, self.done = accepted, busy, done


def control_plane(m, regs, dma, *, core_busy, core_done, core_rst, dma_rst, start, irq,
                  core_errors, refused=None):
    """The glue of a system top between its register file, its core and its DMA (the
    module docstring's start, done, busy, errors, drain and interrupt), for any core
    that runs one job a start and whose map has :func:`~ternary_accel.hw.regmap` 's
    CONTROL ... IRQ_ENABLE registers.

    Parameters
    ----------
    m : Module
    regs : RegisterFile
    dma : TokenDma
    core_busy, core_done : Value
        The core runs a job; its job ends (a pulse).
    core_rst, dma_rst : Signal
        Driven: hold the core, reset the DMA.
    start : Signal
        Driven: start the core (a start accepted and not ``refused``).
    irq : Signal
        Driven: the interrupt line.
    core_errors : dict
        ``{field: signal}``: the core's error levels, set in ``ERROR`` on their rising
        edges.
    refused : Value or None
        A start is refused (checked before the core starts): the job ends at once with
        ``done`` and ``IRQ_STATUS.error`` (the caller sets the ``ERROR`` flag saying why).

    Returns
    -------
    ControlPlane
    """
    # -- start, done, busy -------------------------------------------------------------
    aborting = Signal()        # draining the DMA, the core held in reset
    abort_done = Signal()      # the drain ends the job (a bus error)
    finishing = Signal()       # the core is done, its last writes not yet answered
    busy = Signal()
    done = Signal()            # a job ends this cycle
    done_level = Signal()
    accepted = Signal()
    m.d.comb += busy.eq(core_busy | aborting | finishing)
    m.d.comb += accepted.eq(regs.control_start & ~busy)
    refused = 0 if refused is None else refused
    m.d.comb += [start.eq(accepted & ~refused),
                 regs.error_start_busy_set.eq(regs.control_start & busy)]
    with m.If(accepted):
        m.d.sync += done_level.eq(0)
    with m.If(done | (accepted & refused)):
        m.d.sync += done_level.eq(1)
    m.d.comb += [regs.status_busy.eq(busy), regs.status_done.eq(done_level),
                 regs.irq_status_done_set.eq(done | (accepted & refused))]

    # -- errors: the core's on rising edges, the DMA's ---------------------------------
    rising = []
    for name, level in core_errors.items():
        previous = Signal(name=f"{name}_before")
        m.d.sync += previous.eq(level)
        rising.append(level & ~previous)
        m.d.comb += getattr(regs, f"error_{name}_set").eq(rising[-1])
    bus_error = Signal()
    m.d.comb += [regs.error_read_error_set.eq(dma.read_error),
                 regs.error_write_error_set.eq(dma.write_error),
                 bus_error.eq(dma.read_error | dma.write_error)]
    error_addr = Signal(64)
    with m.If(bus_error):
        m.d.sync += error_addr.eq(dma.error_addr)
    m.d.comb += [regs.error_addr_lo.eq(error_addr[:32]),
                 regs.error_addr_hi.eq(error_addr[32:])]
    m.d.comb += regs.irq_status_error_set.eq(_any(
        [bus_error, regs.control_start & busy, accepted & refused, *rising]))

    # -- the drain: a bus error in a job, or a soft reset --------------------------------
    m.d.comb += [dma.abort.eq(aborting), core_rst.eq(aborting)]
    with m.If(aborting):
        with m.If(dma.quiet):
            m.d.comb += [dma_rst.eq(1), done.eq(abort_done)]
            m.d.sync += [aborting.eq(0), abort_done.eq(0)]
    with m.Else():
        # done once the core's last writes are in DRAM
        with m.If(core_done | finishing):
            with m.If(dma.writes_idle):
                m.d.comb += done.eq(1)
                m.d.sync += finishing.eq(0)
            with m.Else():
                m.d.sync += finishing.eq(1)
    with m.If(regs.control_soft_reset):
        m.d.sync += [aborting.eq(1), finishing.eq(0)]
    with m.Elif(bus_error & core_busy & ~aborting):
        m.d.sync += [aborting.eq(1), abort_done.eq(1)]

    # -- interrupt ---------------------------------------------------------------------
    m.d.comb += irq.eq(regs.control_irq_enable & (
        (regs.irq_status_done & regs.irq_enable_done) |
        (regs.irq_status_error & regs.irq_enable_error)))
    return ControlPlane(accepted, busy, done)


def _any(values):
    out = values[0]
    for v in values[1:]:
        out = out | v
    return out
