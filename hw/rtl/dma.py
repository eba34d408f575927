"""The token core's memory channels over one AXI4 master: :class:`TokenDma`.

**One master, shared.** The five read channels (``prog``, ``vec``, ``wgt``, ``head``,
``kv``) share one AXI4 read port (one ``AR`` arbiter, round robin; ``ARID`` = the
channel's index, so ``R`` beats are routed by ``RID`` and the channels never wait on
each other's data), and the two write streams (the KV cache's entries and the logits)
share its write port. One master because the sequencer runs one operation at a time:
a MATMUL reads only ``wgt``, an ATTEND only ``kv``, a HEAD only ``head``, so the weight
channel has the whole bus when it needs it (the other channels read a few words between
operations), and one master is one HP port of a Zynq and one interface in a Vivado
block design.

**Reads.** A channel's command ``{addr, count}`` (word address, words) is the bytes at
``base + addr * stride``, ``count * stride`` of them, where ``stride`` is the word rounded
up to whole bus beats (:func:`~ternary_accel.hw.regmap.stride_bytes`) and ``base`` the
channel's ``*_BASE`` register (its low bits below the bus's bytes are ignored: bases are
aligned to the bus). The command is cut into INCR bursts of full-width beats
(``ARSIZE`` = the bus), each at most ``max_burst`` beats (AXI4: 256) and never
crossing a 4 KB boundary. Each channel has a receive FIFO of ``fifo_beats`` beats and
issues a burst only when the FIFO has room reserved for all of its beats (credits), so
``R`` is never blocked by a slow consumer and one channel's data never stands in front of
another's; up to ``outstanding`` bursts of a channel are in flight at once (enough to
cover the memory's latency at a beat a cycle: the weights' bandwidth). A gearbox after
the FIFO turns beats into words: a word narrower than a beat is the beat's low bits, a
word wider is ``stride / bus bytes`` beats, least significant first (each word
little-endian, zero-padded to its stride: the layout of :mod:`ternary_accel.hw.host`).

**Writes.** A KV entry ``{addr, data}`` is written at ``KV_BASE + addr * stride`` (a
burst of its beats, split at a 4 KB boundary); logit ``i`` of a token (counted from the
``restart`` pulse) is a 32-bit word (the residual value sign-extended) at
``LOGITS_BASE + 4 * i``: one beat with the four strobes of its lane. Up to
``max_writes`` bursts wait for their ``B`` response. A KV read burst is issued only when
every write has been answered (the core reads back entries it has just written).

**Errors.** A ``SLVERR`` or ``DECERR`` on ``R`` or ``B`` pulses ``read_error`` or
``write_error`` with the beat's (the burst's, for a write) byte address on
``error_addr``; the burst goes on (its beats are taken). ``abort`` (the system's, after
an error or a soft reset) stops issuing, takes and drops every beat still coming, sends
the ``W`` beats of bursts already addressed, takes their ``B``; ``quiet`` says nothing
is in flight any more, when the system may reset the DMA (``ResetInserter``) and the
core without leaving the interconnect a transaction.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ternary_accel.hw.regmap import stride_bytes
from ternary_accel.hw.rtl.token import CMD_LAYOUT

__all__ = ["Axi4Signature", "TokenDma", "READ_CHANNELS", "AXI4_MEMBERS", "OKAY", "SLVERR",
           "DECERR", "LOGIT_BYTES"]

#: The read channels, by ``ARID``.
READ_CHANNELS = ("prog", "vec", "wgt", "head", "kv")
OKAY, SLVERR, DECERR = 0b00, 0b10, 0b11
#: Bytes of a logit in DRAM.
LOGIT_BYTES = 4
#: A 4 KB page: no burst crosses one.
PAGE = 4096


def AXI4_MEMBERS(addr_width, data_width, id_width):
    """``{name: (is_output_of_master, width)}`` of AXI4's signals."""
    out, inp = True, False
    return {
        "awid": (out, id_width), "awaddr": (out, addr_width), "awlen": (out, 8),
        "awsize": (out, 3), "awburst": (out, 2), "awlock": (out, 1), "awcache": (out, 4),
        "awprot": (out, 3), "awqos": (out, 4), "awvalid": (out, 1), "awready": (inp, 1),
        "wdata": (out, data_width), "wstrb": (out, data_width // 8), "wlast": (out, 1),
        "wvalid": (out, 1), "wready": (inp, 1),
        "bid": (inp, id_width), "bresp": (inp, 2), "bvalid": (inp, 1), "bready": (out, 1),
        "arid": (out, id_width), "araddr": (out, addr_width), "arlen": (out, 8),
        "arsize": (out, 3), "arburst": (out, 2), "arlock": (out, 1), "arcache": (out, 4),
        "arprot": (out, 3), "arqos": (out, 4), "arvalid": (out, 1), "arready": (inp, 1),
        "rid": (inp, id_width), "rdata": (inp, data_width), "rresp": (inp, 2),
        "rlast": (inp, 1), "rvalid": (inp, 1), "rready": (out, 1),
    }


class Axi4Signature(wiring.Signature):
    """AXI4 (full), from the master's side, with AXI's signal names."""

    def __init__(self, addr_width, data_width, id_width):
        self.addr_width, self.data_width, self.id_width = addr_width, data_width, id_width
        super().__init__({name: Out(w) if o else In(w) for name, (o, w) in
                          AXI4_MEMBERS(addr_width, data_width, id_width).items()})

    def __eq__(self, other):
        return (isinstance(other, Axi4Signature) and
                (self.addr_width, self.data_width, self.id_width) ==
                (other.addr_width, other.data_width, other.id_width))

    def __repr__(self):
        return f"Axi4Signature({self.addr_width}, {self.data_width}, {self.id_width})"


def _min(m, name, *values):
    """The smallest of ``values`` (unsigned), as a signal."""
    width = max(len(v) for v in values)
    best = values[0]
    for v in values[1:]:
        best = Mux(v < best, v, best)
    out = Signal(width, name=name)
    m.d.comb += out.eq(best)
    return out


class TokenDma(wiring.Component):
    """The token core's memories over one AXI4 master (module docstring); with other
    ``channels`` and write streams, any core's (the layer system's:
    :class:`~ternary_accel.hw.rtl.layer_system.LayerSystem`).

    Parameters
    ----------
    word_bits : dict
        ``{channel: bits}`` of the core's words (``TokenCore.word_bits``: ``prog``,
        ``vec``, ``wgt``, ``head``, ``kv``), the ``entries`` channel's included.
    channels : tuple of str
        The read channels, by ``ARID`` (default :data:`READ_CHANNELS`).
    entries : str or None
        The channel whose words are written at a word address (``<entries>_wr``:
        ``{addr, data}``; the token core's KV cache); None: no such stream.
    logits : bool
        The sequential stream of 32-bit words (``logit``, ``logits_base``,
        ``restart``).
    bus_bits : int
        The AXI data width (a power of two, 32 to 1024).
    addr_width : int
        Bits of the AXI addresses.
    max_burst : int
        Beats of a read burst at most (1..256).
    outstanding : int
        Read bursts in flight at most, per channel.
    fifo_beats : int
        Beats of each read channel's receive FIFO (at least ``max_burst``).
    max_writes : int
        Write bursts waiting for their response at most.

    Attributes
    ----------
    <ch>_cmd : In(stream of CMD_LAYOUT); <ch>_data : Out(stream of unsigned(word bits))
        The read channels.
    <entries>_wr : In(stream of {addr, data})
        The entries' writes (``kv_wr``: the KV cache's).
    logit : In(stream of signed(32)); restart : In(1)
        The logits (``restart``: the next logit is number 0).
    <ch>_base : In(64)
        The bases of the channels and of ``logits``.
    abort : In(1); quiet : Out(1)
        Stop and drain; nothing in flight.
    writes_idle : Out(1)
        Every write taken has been answered (its ``B``): the KV entries and the logits
        are in DRAM.
    read_error, write_error : Out(1); error_addr : Out(64)
    pending : Out(len(channels))
        A read channel has words to deliver (a command in progress or beats due).
    axi : Out(Axi4Signature)
    """

    def __init__(self, word_bits, *, channels=READ_CHANNELS, entries="kv", logits=True,
                 bus_bits=128, addr_width=64, max_burst=64, outstanding=4, fifo_beats=128,
                 max_writes=8):
        if bus_bits < 32 or bus_bits & (bus_bits - 1) or bus_bits > 1024:
            raise ValueError(f"bus_bits must be a power of two in 32..1024, not {bus_bits}")
        if not 1 <= max_burst <= 256:
            raise ValueError(f"max_burst must be in 1..256, not {max_burst}")
        if fifo_beats < max_burst:
            raise ValueError(f"fifo_beats ({fifo_beats}) must hold a burst ({max_burst})")
        if outstanding < 1 or max_writes < 1:
            raise ValueError("outstanding and max_writes must be positive")
        if not channels or len(set(channels)) != len(channels):
            raise ValueError(f"channels must be distinct names, not {channels!r}")
        if entries is None and not logits:
            raise ValueError("a DMA writes entries, logits or both")
        missing = set(channels) | ({entries} if entries else set())
        missing -= set(word_bits)
        if missing:
            raise ValueError(f"word_bits has no width for {', '.join(sorted(missing))}")
        self.channels, self.entries, self.logits = tuple(channels), entries, logits
        self.word_bits = dict(word_bits)
        self.bus_bits, self.addr_width = bus_bits, addr_width
        self.bus_bytes = bus_bits // 8
        self.max_burst, self.outstanding = max_burst, outstanding
        self.fifo_beats, self.max_writes = fifo_beats, max_writes
        #: ``{channel: bytes}`` between words in DRAM.
        self.strides = {ch: stride_bytes(self.word_bits[ch], bus_bits)
                        for ch in (*channels, *([entries] if entries else []))}
        self.id_width = max(1, (len(channels) - 1).bit_length())
        cmd = stream.Signature(CMD_LAYOUT)
        members = {}
        for ch in channels:
            members[f"{ch}_cmd"] = In(cmd)
            members[f"{ch}_data"] = Out(stream.Signature(unsigned(self.word_bits[ch])))
        bases = list(channels)
        if entries and entries not in channels:
            bases.append(entries)
        if logits:
            bases.append("logits")
        for ch in bases:
            members[f"{ch}_base"] = In(64)
        if entries:
            members[f"{entries}_wr"] = In(stream.Signature(data.StructLayout({
                "addr": unsigned(32), "data": unsigned(self.word_bits[entries])})))
        if logits:
            members["logit"] = In(stream.Signature(signed(32)))
            members["restart"] = In(1)
        members["abort"] = In(1)
        members["quiet"] = Out(1)
        members["writes_idle"] = Out(1)
        members["read_error"] = Out(1)
        members["write_error"] = Out(1)
        members["error_addr"] = Out(64)
        members["pending"] = Out(len(channels))
        members["axi"] = Out(Axi4Signature(addr_width, bus_bits, self.id_width))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        axi = self.axi
        bb = self.bus_bytes
        shift = bb.bit_length() - 1
        size = shift                                  # AxSIZE: log2(bytes a beat)
        page_beats = PAGE // bb
        writes_quiet = Signal()

        # -- the constant AXI fields ---------------------------------------------------
        m.d.comb += [axi.arsize.eq(size), axi.arburst.eq(1), axi.arcache.eq(0b0011),
                     axi.awsize.eq(size), axi.awburst.eq(1), axi.awcache.eq(0b0011),
                     axi.awid.eq(0)]

        # -- read channels -------------------------------------------------------------
        reqs, lens, addrs, grants, fifos, beat_addrs = [], [], [], [], [], []
        outstanding_any = []
        for k, ch in enumerate(self.channels):
            stride, bits = self.strides[ch], self.word_bits[ch]
            bpw = stride // bb
            cmd, out = getattr(self, f"{ch}_cmd"), getattr(self, f"{ch}_data")
            base = getattr(self, f"{ch}_base")
            addr = Signal(64, name=f"{ch}_addr")
            left = Signal(40, name=f"{ch}_left")              # beats still to request
            reserved = Signal(range(self.fifo_beats + 1), name=f"{ch}_reserved")
            m.submodules[f"{ch}_beats"] = beats = fifo.SyncFIFOBuffered(
                width=self.bus_bits, depth=self.fifo_beats)
            m.submodules[f"{ch}_bursts"] = bursts = fifo.SyncFIFO(
                width=64, depth=self.outstanding)
            fifos.append(beats)
            outstanding_any.append(bursts.r_rdy)
            # take a command when the previous one is all requested
            m.d.comb += cmd.ready.eq((left == 0) & ~self.abort)
            with m.If(cmd.valid & cmd.ready):
                m.d.sync += [
                    addr.eq((base & ~Const(bb - 1, 64)) + cmd.payload.addr * stride),
                    left.eq(cmd.payload.count * bpw)]
            # the next burst: up to max_burst, the page's end, the command's end
            to_page = Signal(range(page_beats + 1), name=f"{ch}_to_page")
            m.d.comb += to_page.eq(page_beats - addr[shift:12])
            length = _min(m, f"{ch}_len", left, Const(self.max_burst, 9), to_page)
            free = Signal(range(self.fifo_beats + 1), name=f"{ch}_free")
            m.d.comb += free.eq(self.fifo_beats - reserved)
            req = Signal(name=f"{ch}_req")
            m.d.comb += req.eq((left != 0) & (free >= length) & bursts.w_rdy & ~self.abort &
                               (writes_quiet if ch == self.entries else 1))
            grant = Signal(name=f"{ch}_grant")
            reqs.append(req), lens.append(length), addrs.append(addr), grants.append(grant)
            with m.If(grant):
                m.d.sync += [addr.eq(addr + (length << shift)), left.eq(left - length)]
            m.d.comb += [bursts.w_en.eq(grant), bursts.w_data.eq(addr)]
            # R beats of this channel
            beat = Signal(8, name=f"{ch}_beat")
            taken = Signal(name=f"{ch}_taken")
            m.d.comb += taken.eq(axi.rvalid & axi.rready & (axi.rid == k))
            m.d.comb += [beats.w_en.eq(taken & ~self.abort), beats.w_data.eq(axi.rdata)]
            with m.If(taken):
                m.d.sync += beat.eq(Mux(axi.rlast, 0, beat + 1))
            m.d.comb += bursts.r_en.eq(taken & axi.rlast)
            beat_addrs.append(bursts.r_data + (beat << shift))
            # the gearbox: beats to words
            pop = Signal(name=f"{ch}_pop")
            if bpw == 1:
                m.d.comb += [out.valid.eq(beats.r_rdy), out.payload.eq(beats.r_data[:bits]),
                             pop.eq(out.valid & out.ready)]
            else:
                acc = Signal((bpw - 1) * self.bus_bits, name=f"{ch}_acc")
                part = Signal(range(bpw), name=f"{ch}_part")
                whole = Signal(bpw * self.bus_bits, name=f"{ch}_word")
                m.d.comb += whole.eq(Cat(acc, beats.r_data))
                with m.If(part == bpw - 1):
                    m.d.comb += [out.valid.eq(beats.r_rdy), out.payload.eq(whole[:bits]),
                                 pop.eq(out.valid & out.ready)]
                    with m.If(pop):
                        m.d.sync += part.eq(0)
                with m.Else():
                    m.d.comb += pop.eq(beats.r_rdy)
                    with m.If(pop):
                        m.d.sync += [acc.word_select(part, self.bus_bits).eq(beats.r_data),
                                     part.eq(part + 1)]
            m.d.comb += beats.r_en.eq(pop)
            m.d.sync += reserved.eq(reserved + Mux(grant, length, 0) - pop)
            m.d.comb += self.pending[k].eq((left != 0) | (reserved != 0))

        # -- the AR arbiter: round robin, a registered AR -----------------------------
        n = len(self.channels)
        last = Signal(range(max(n, 2)))
        with m.If(axi.arvalid & axi.arready):
            m.d.sync += axi.arvalid.eq(0)
        with m.If(~axi.arvalid | axi.arready):
            with m.Switch(last):
                for previous in range(n):
                    with m.Case(previous):
                        order = [(previous + 1 + i) % n for i in range(n)]
                        for i, k in enumerate(order):
                            with (m.If if i == 0 else m.Elif)(reqs[k]):
                                m.d.comb += grants[k].eq(1)
                                m.d.sync += [axi.arvalid.eq(1), axi.arid.eq(k),
                                             axi.araddr.eq(addrs[k]),
                                             axi.arlen.eq(lens[k] - 1), last.eq(k)]
        m.d.comb += axi.rready.eq(1)
        with m.Switch(axi.rid):
            for k, f in enumerate(fifos):
                with m.Case(k):
                    m.d.comb += axi.rready.eq(f.w_rdy | self.abort)

        # -- writes: entries (KV) and logits --------------------------------------------
        ent_bpw = self.strides[self.entries] // bb if self.entries else 1
        lanes = bb // LOGIT_BYTES
        w_addr = Signal(64)                     # the next burst's byte address
        w_left = Signal(range(ent_bpw + 1))     # beats of the job still to address
        w_data = Signal(ent_bpw * self.bus_bits)
        w_strb = Signal(bb)
        w_burst = Signal(range(ent_bpw + 1))    # W beats of the current burst still to send
        m.submodules.responses = responses = fifo.SyncFIFO(width=64, depth=self.max_writes)

        m.d.comb += [axi.wdata.eq(w_data[:self.bus_bits]), axi.wstrb.eq(w_strb),
                     axi.wvalid.eq(w_burst != 0), axi.wlast.eq(w_burst == 1)]
        with m.If(axi.awvalid & axi.awready):
            m.d.sync += axi.awvalid.eq(0)
        w_shake = axi.wvalid & axi.wready
        with m.If(w_shake):
            m.d.sync += [w_burst.eq(w_burst - 1), w_data.eq(w_data >> self.bus_bits)]
        # a new burst may be addressed in the cycle the current one finishes
        free = Signal()
        m.d.comb += free.eq(~(axi.awvalid & ~axi.awready) &
                            ((w_burst == 0) | ((w_burst == 1) & w_shake)))
        can = Signal()
        m.d.comb += can.eq(free & responses.w_rdy & ~self.abort)

        def burst(at, beats, exact):
            to_page = Signal(range(page_beats + 1))
            m.d.comb += to_page.eq(page_beats - at[shift:12])
            length = _min(m, None, beats, to_page)
            m.d.comb += [responses.w_en.eq(1), responses.w_data.eq(exact)]
            m.d.sync += [axi.awvalid.eq(1), axi.awaddr.eq(at & ~Const(bb - 1, 64)),
                         axi.awlen.eq(length - 1), w_burst.eq(length),
                         w_addr.eq((at & ~Const(bb - 1, 64)) + (length << shift)),
                         w_left.eq(beats - length)]

        # the jobs in priority order: the rest of an entry (split at a page), an entry,
        # a logit
        jobs = []
        entry_valid = Const(0)
        if self.entries:
            entry = getattr(self, f"{self.entries}_wr")
            entry_valid = entry.valid
            entry_at = Signal(64)
            m.d.comb += entry_at.eq(
                (getattr(self, f"{self.entries}_base") & ~Const(bb - 1, 64)) +
                entry.payload.addr * self.strides[self.entries])

            def write_entry():
                m.d.comb += entry.ready.eq(1)
                burst(entry_at, Const(ent_bpw, range(ent_bpw + 1)), entry_at)
                m.d.sync += [w_data.eq(entry.payload.data), w_strb.eq(-1)]
            jobs.append((entry.valid, write_entry))
        if self.logits:
            index = Signal(32)                  # the next logit's number
            logit_at = Signal(64)
            m.d.comb += logit_at.eq((self.logits_base & ~Const(LOGIT_BYTES - 1, 64)) +
                                    index * LOGIT_BYTES)
            lane = logit_at[2:shift] if lanes > 1 else Const(0, 1)

            def write_logit():
                m.d.comb += self.logit.ready.eq(1)
                burst(logit_at, Const(1, range(ent_bpw + 1)), logit_at)
                m.d.sync += [w_data.eq(self.logit.payload.as_unsigned() << (lane * 32)),
                             w_strb.eq(Const(0xF, bb) << (lane * LOGIT_BYTES)),
                             index.eq(index + 1)]
            jobs.append((self.logit.valid, write_logit))
            with m.If(self.restart):
                m.d.sync += index.eq(0)
        with m.If(can):
            with m.If(w_left != 0):
                burst(w_addr, w_left, w_addr)
            for valid, job in jobs:
                with m.Elif(valid):
                    job()
        m.d.comb += [axi.bready.eq(1), responses.r_en.eq(axi.bvalid)]
        m.d.comb += [writes_quiet.eq(free & (w_left == 0) & ~responses.r_rdy &
                                     ~entry_valid),
                     self.writes_idle.eq(free & (w_left == 0) & ~responses.r_rdy)]

        # -- errors --------------------------------------------------------------------
        r_addr = Signal(64)
        with m.Switch(axi.rid):
            for k, a in enumerate(beat_addrs):
                with m.Case(k):
                    m.d.comb += r_addr.eq(a)
        r_bad = axi.rvalid & axi.rready & axi.rresp[1]
        b_bad = axi.bvalid & axi.bresp[1]
        m.d.comb += [self.read_error.eq(r_bad), self.write_error.eq(b_bad),
                     self.error_addr.eq(Mux(r_bad, r_addr, responses.r_data))]

        # -- quiet: nothing addressed waits for its data or its response -----------------
        in_flight = Signal()
        m.d.comb += in_flight.eq(axi.arvalid | axi.awvalid | (w_burst != 0) |
                                 responses.r_rdy | Cat(*outstanding_any).any())
        m.d.comb += self.quiet.eq(~in_flight)
        return m
