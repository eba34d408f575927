"""The memory side of a core's channels: memories that serve read commands and take
writes, with random stalls, for simulating a core that reaches its memories through
streams (:class:`ReadChannelMemory`, :class:`WriteChannelMemory`,
:class:`ReadWriteChannelMemory`).

A **read channel** ``X`` is two streams. The core drives ``X_cmd`` (its ``Out``; the
memory's ``cmd``), payload :data:`CMD_LAYOUT` = ``{"addr": unsigned(32), "count":
unsigned(24)}``; the memory answers each command, in the order taken, with ``count``
beats on ``X_data`` (the core's ``In``; the memory's ``data``), the words at ``addr,
addr + 1, ...``. Commands may be queued: the memory takes the next command (into a
FIFO of :data:`CMD_FIFO_DEPTH`) while it still returns the previous one's words; the
words of command k + 1 follow all of command k's, with no idle cycle between them. A
command with ``count`` 0 returns nothing.

A **write channel** ``X_wr`` is one stream (the core's ``Out``; the memory's ``wr``),
payload ``{"addr": unsigned(32), "data": <word>}`` (:func:`write_layout`); the memory
writes the word in the cycle it takes the beat.

Every input has defined behaviour, and nothing hangs: addresses wrap modulo the
memory's ``depth`` (a read of ``count`` words from ``addr`` returns the words at
``(addr + i) % depth``, a write to ``addr`` writes ``addr % depth``); a read command of
any count runs to its end.

**Reads after writes** (:class:`ReadWriteChannelMemory`, one memory with both
channels, such as a KV cache the core writes and reads back in the same run): a word is
read from the memory at the earliest in the cycle after its command was taken, and a
write beat lands at the end of the cycle it is taken in. So a read command taken in
the same cycle as a write beat, or later, returns the written word at that address. A
read command taken earlier may return the old or the new word (its words already read
are old ones); the core never reads what it has not yet written.

Timing: at most one word a cycle on ``data``; a word is read from the memory (one
cycle of latency) when the output slot is free, so ``data`` carries a word on every
cycle that ``ready`` is high and no stall is drawn, across commands too. An offered
word stays on ``data`` until it is taken. The first word of a command taken by an idle
memory is offered two cycles after it (``latency=2``, the default: through the command
FIFO) or on the next cycle (``latency=1``: an idle memory with an empty FIFO serves the
command in the cycle it takes it, reading its first word then; a write beat taken in
that same cycle to that address is forwarded to the word, so the contract of reads
after writes holds). Stalls come from seeded LFSRs (the stall
LFSR of :mod:`sim.harness`: :func:`~sim.harness.lfsr_states`,
:func:`~sim.harness.stall_threshold`): with an idle probability ``p``, a cycle on which
the LFSR's low byte is below ``round(256 p)`` takes no command (``cmd.ready`` low),
reads no new word for ``data``, or takes no write (``wr.ready`` low); each of the three
has its own LFSR (:func:`channel_seeds`), starting from reset.

Storage, as in :mod:`sim.harness` (``storage``): an Amaranth
:class:`~amaranth.lib.memory.Memory` for ``amaranth.sim``, initial contents from
``init``, read back through :attr:`~ChannelMemory.memory`; or, for Verilator, the
:data:`~sim.harness.MEMORY_VERILOG` leaf, by name :data:`~sim.harness.MEMORY_NAME`,
loaded from ``load_file`` on a rising edge of the ``load`` port and read or written
by the host through VPI (its array ``words``, :func:`~sim.harness.memory_image`,
:func:`~sim.harness.join_parts`), with no Verilog regenerated for new contents.

A Verilator host loads such a memory with :func:`sim.tb.harness.load_words` (as
``sim/tb/channels.py`` does). The seed is fixed when the memory is built, and the stall
probabilities too unless it takes them from ports (``stall_ports``); the LFSRs restart
on the design's reset.

**Connecting a core.** The memories store plain words of ``width`` bits; ``width`` may
also be the core's word shape (any shape-castable, such as a
:class:`~amaranth.lib.data.Layout`), and then ``data`` and ``wr.data`` carry that shape
and ``wiring.connect`` joins the streams directly (the core's word layout and the
memory's must be equal)::

    mem = ReadChannelMemory(core.X_data.payload.shape(), depth)
    wiring.connect(m, core.X_cmd, mem.cmd)
    wiring.connect(m, mem.data, core.X_data)

A memory built with an int width is joined by :func:`connect_read` and
:func:`connect_write`, which assign the payloads bit for bit
(``core.X_data.payload.as_value().eq(mem.data.payload)``); :func:`width_of` gives
the bits of a word's shape.
"""

from amaranth.hdl import Module, Mux, Shape, Signal, Value, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ternary_accel.hw.params import check_positive_int
from ternary_accel.sim.harness import (AMARANTH, COUNT_WIDTH, LFSR_WIDTH, STALL_BITS,
                                       STORAGES, VERILOG, MemoryStorage, stall_source,
                                       stall_threshold)

__all__ = ["ADDR_WIDTH", "CMD_LAYOUT", "CMD_FIFO_DEPTH", "write_layout", "width_of",
           "channel_seeds", "ChannelMemory", "ReadChannelMemory", "WriteChannelMemory",
           "ReadWriteChannelMemory", "connect_read", "connect_write"]

#: Bits of a channel's word address.
ADDR_WIDTH = 32
#: Payload of a read command: ``count`` words from ``addr``.
CMD_LAYOUT = data.StructLayout({"addr": unsigned(ADDR_WIDTH),
                                "count": unsigned(COUNT_WIDTH)})
#: Commands a read channel memory holds besides the one it serves.
CMD_FIFO_DEPTH = 2


def width_of(shape):
    """Bits of a word of ``shape`` (an int width, a shape or a layout).

    Raises
    ------
    TypeError
        If ``shape`` is not shape-castable.
    ValueError
        If it has no bits.
    """
    if isinstance(shape, bool):
        raise TypeError(f"a word's shape must be an int or shape-castable, not {shape!r}")
    if isinstance(shape, int):
        width = shape
    else:
        try:
            width = Shape.cast(shape).width
        except TypeError:
            raise TypeError(f"a word's shape must be an int or shape-castable, "
                            f"not {shape!r}") from None
    if width < 1:
        raise ValueError(f"a word must have at least 1 bit, not {width}")
    return width


def _word_shape(width):
    """The port shape of a word: ``unsigned(width)`` for an int, else the shape itself."""
    return unsigned(width) if isinstance(width, int) else width


def write_layout(word):
    """Payload of a write channel whose words are ``word`` (an int width or a shape)."""
    return data.StructLayout({"addr": unsigned(ADDR_WIDTH), "data": _word_shape(word)})


def channel_seeds(seed):
    """The seeds of the command, data and write LFSRs of a memory of ``seed``: three
    different stall patterns from one seed (0 runs as 1)."""
    return tuple((seed * 2654435761 + n * 40503) % (1 << LFSR_WIDTH) or 1 for n in range(3))


def _bits(value):
    """The bits of a payload (a View, a Value or a value-castable)."""
    return Value.cast(value)


def connect_read(m, cmd, data_, memory):
    """Join a core's read channel (``cmd``: its ``X_cmd``, ``data_``: its ``X_data``) to
    ``memory``'s ``cmd`` and ``data``, whatever the shapes of the words (bit for bit)."""
    m.d.comb += [
        memory.cmd.valid.eq(cmd.valid),
        _bits(memory.cmd.payload).eq(_bits(cmd.payload)),
        cmd.ready.eq(memory.cmd.ready),
        data_.valid.eq(memory.data.valid),
        _bits(data_.payload).eq(_bits(memory.data.payload)),
        memory.data.ready.eq(data_.ready),
    ]


def connect_write(m, wr, memory):
    """Join a core's write channel ``wr`` (its ``X_wr``) to ``memory``'s ``wr``, whatever
    the shapes of the words (the address as a number, the word bit for bit)."""
    m.d.comb += [
        memory.wr.valid.eq(wr.valid),
        memory.wr.payload.addr.eq(wr.payload.addr),
        _bits(memory.wr.payload.data).eq(_bits(wr.payload.data)),
        wr.ready.eq(memory.wr.ready),
    ]


class ChannelMemory(wiring.Component):
    """A memory of ``depth`` words behind a read channel, a write channel or both (the
    base of :class:`ReadChannelMemory`, :class:`WriteChannelMemory` and
    :class:`ReadWriteChannelMemory`; the module docstring states the contract).

    Parameters
    ----------
    width : int or shape-castable
        Bits of a word, or the word's shape (a layout): the ports carry it as that shape,
        the memory stores its bits.
    depth : int
        Words in the memory (>= 2); addresses wrap modulo ``depth``.
    read, write : bool
        Which channels the memory has.
    storage : str
        ``"amaranth"`` (an Amaranth memory, for ``amaranth.sim``) or ``"verilog"`` (the
        Verilog leaf, for Verilator).
    seed : int
        Seed of the stall LFSRs (:func:`channel_seeds`), from reset.
    idle : float
        Stall probability in [0, 1) of taking a command and of reading a word for
        ``data`` (read channel).
    backpressure : float
        Stall probability of taking a write beat (write channel).
    init : sequence of int
        ``storage="amaranth"``: the initial words (at most ``depth``; the rest 0).
    stall_ports : bool
        Take the stall thresholds (:func:`~sim.harness.stall_threshold`) from the ports
        ``idle`` (read channel) and ``backpressure`` (write channel), set at run time,
        instead of the parameters ``idle`` and ``backpressure`` (which are then the
        ports' initial values).
    latency : int
        Read channel: cycles from taking a command to offering its first word, when the
        memory is idle and nothing stalls: 2 (through the command FIFO) or 1 (an idle
        memory serves the command in the cycle it is taken; module docstring).
    load_file : str
        ``storage="verilog"``, with a read channel: the file
        (:func:`~sim.harness.memory_image`, relative to the simulator's working folder)
        that a rising edge of ``load`` reads into the memory.

    Attributes
    ----------
    cmd : stream of CMD_LAYOUT, in
        Read commands (read channel).
    data : stream of the word, out
        The words of the commands, in order (read channel).
    wr : stream of write_layout(word), in
        Writes (write channel).
    load : Signal, in
        ``storage="verilog"`` with a read channel: a rising edge loads ``load_file``.
    idle, backpressure : Signal(STALL_BITS), in
        ``stall_ports=True``: the stall thresholds of the read and write channels.
    """

    def __init__(self, width, depth, *, read, write, storage=AMARANTH, seed=1, idle=0.0,
                 backpressure=0.0, init=(), load_file="words.bin", latency=2, stall_ports=False):
        self._width = width_of(width)
        if not isinstance(latency, int) or isinstance(latency, bool) or latency not in (1, 2):
            raise ValueError(f"latency must be 1 or 2, not {latency!r}")
        self._latency = latency
        self._depth = check_positive_int("depth", depth, minimum=2)
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {', '.join(STORAGES)}, "
                             f"not {storage!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or \
                not 0 <= seed < 1 << LFSR_WIDTH:
            raise ValueError(f"seed must be an int in [0, 2**{LFSR_WIDTH}), not {seed!r}")
        self._idle = stall_threshold(idle)
        self._backpressure = stall_threshold(backpressure)
        init = list(init)
        if init and storage != AMARANTH:
            raise ValueError("init is for storage='amaranth'; load the Verilog leaf "
                             "from load_file")
        if len(init) > depth:
            raise ValueError(f"init has {len(init)} words, more than depth {depth}")
        if any(isinstance(w, bool) or not isinstance(w, int) or not 0 <= w < 1 << self._width
               for w in init):
            raise ValueError(f"init must hold ints in [0, 2**{self._width})")
        self._read, self._write, self._seed = read, write, seed
        loading = read and storage == VERILOG
        self._storage = MemoryStorage(self._width, depth, storage,
                                      load_file if loading else "", init)
        word = _word_shape(width)
        ports = {}
        if read:
            ports["cmd"] = In(stream.Signature(CMD_LAYOUT))
            ports["data"] = Out(stream.Signature(word))
            if loading:
                ports["load"] = In(1)
            if stall_ports:
                ports["idle"] = In(STALL_BITS, init=self._idle)
        if write:
            ports["wr"] = In(stream.Signature(write_layout(word)))
            if stall_ports:
                ports["backpressure"] = In(STALL_BITS, init=self._backpressure)
        self._stall_ports = bool(stall_ports)
        super().__init__(ports)

    @property
    def width(self):
        """Bits of a word."""
        return self._width

    @property
    def latency(self):
        return self._latency

    @property
    def depth(self):
        return self._depth

    @property
    def storage(self):
        return self._storage.kind

    @property
    def memory(self):
        """The :class:`amaranth.lib.memory.Memory` of the words (``storage="amaranth"``;
        None for the Verilog leaf): a test reads and writes it through ``ctx``."""
        return self._storage.memory

    def _threshold(self, name):
        """The stall threshold ``name`` (``"idle"`` or ``"backpressure"``): its port
        with ``stall_ports``, else the constant."""
        return getattr(self, name) if self._stall_ports else getattr(self, f"_{name}")

    def _wrap(self, address):
        """``address % depth`` as a signal index of the memory."""
        if self._depth & (self._depth - 1) == 0:
            return address[:max(1, (self._depth - 1).bit_length())]
        return (address % self._depth)[:(self._depth - 1).bit_length()]

    def elaborate(self, platform):
        m = Module()
        cmd_seed, data_seed, wr_seed = channel_seeds(self._seed)
        read = write = None
        if self._write:
            stall = stall_source(m, wr_seed, None, self._threshold("backpressure"), "wr")
            take = Signal()
            m.d.comb += [self.wr.ready.eq(~stall), take.eq(self.wr.valid & ~stall)]
            write = (take, self._wrap(self.wr.payload.addr), _bits(self.wr.payload.data))
        if self._read:
            read = self._serve(m, cmd_seed, data_seed, write)
        self._storage.add(m, read=read, write=write,
                          load=self.load if "load" in self.signature.members else 0)
        return m

    def _serve(self, m, cmd_seed, data_seed, write):
        """The read channel: a command FIFO, the command being served and the output
        slot; returns the memory's read port signals (en, addr, data). ``write``: the
        write port's (take, addr, data), forwarded to a word read in the same cycle
        (``latency=1``)."""
        aw = range(self._depth)
        m.submodules.commands = commands = fifo.SyncFIFO(width=CMD_LAYOUT.size,
                                                         depth=CMD_FIFO_DEPTH)
        cmd_stall = stall_source(m, cmd_seed, None, self._threshold("idle"), "cmd")
        taken = Signal()
        m.d.comb += [
            self.cmd.ready.eq(commands.w_rdy & ~cmd_stall),
            taken.eq(self.cmd.valid & ~cmd_stall),
            commands.w_data.eq(_bits(self.cmd.payload)),
        ]
        # the command being served: the next address and the words left; with none
        # left, the FIFO's head is served from this cycle on (no idle cycle between
        # commands), or, with latency 1 and the FIFO empty, the command taken now
        addr, left = Signal(aw), Signal(COUNT_WIDTH)
        head = data.View(CMD_LAYOUT, commands.r_data)
        idle = left == 0
        bypass = Signal()
        if self._latency == 1:
            m.d.comb += bypass.eq(idle & ~commands.r_rdy & taken)
        next_addr = Mux(commands.r_rdy, self._wrap(head.addr), self._wrap(self.cmd.payload.addr))
        next_left = Mux(commands.r_rdy, head.count, Mux(bypass, self.cmd.payload.count, 0))
        now_addr, now_left = Signal(aw), Signal(COUNT_WIDTH)
        m.d.comb += [
            commands.w_en.eq(taken & ~bypass),
            commands.r_en.eq(idle),
            now_addr.eq(Mux(idle, next_addr, addr)),
            now_left.eq(Mux(idle, next_left, left)),
        ]
        data_stall = stall_source(m, data_seed, None, self._threshold("idle"), "data")
        advance = Signal()   # the output slot is free (empty, or taken this cycle)
        issue = Signal()     # read the next word into it
        m.d.comb += [
            advance.eq(~self.data.valid | self.data.ready),
            issue.eq(advance & (now_left != 0) & ~data_stall),
        ]
        with m.If(advance):
            m.d.sync += self.data.valid.eq(issue)
        last = self._depth - 1
        m.d.sync += [
            addr.eq(Mux(issue, Mux(now_addr == last, 0, now_addr + 1), now_addr)),
            left.eq(now_left - issue),
        ]
        word = _bits(self.data.payload)
        if self._latency == 1 and write is not None:
            # a word read in the cycle a write to its address is taken: the new word
            w_take, w_addr, w_data = write
            stored = Signal(self._width)
            forward, forwarded = Signal(), Signal(self._width)
            with m.If(advance):
                m.d.sync += [forward.eq(issue & w_take & (w_addr == now_addr)),
                             forwarded.eq(w_data)]
            m.d.comb += word.eq(Mux(forward, forwarded, stored))
            return advance, now_addr, stored
        return advance, now_addr, word


class ReadChannelMemory(ChannelMemory):
    """A memory behind a read channel: ports ``cmd`` (in), ``data`` (out) and, with
    ``storage="verilog"``, ``load`` (in). Parameters as for :class:`ChannelMemory`
    (``idle``: the stalls of taking commands and of offering words)."""

    def __init__(self, width, depth, *, storage=AMARANTH, seed=1, idle=0.0, init=(),
                 load_file="words.bin", latency=2, stall_ports=False):
        super().__init__(width, depth, read=True, write=False, storage=storage, seed=seed,
                         idle=idle, init=init, load_file=load_file, latency=latency,
                         stall_ports=stall_ports)


class WriteChannelMemory(ChannelMemory):
    """A memory behind a write channel: port ``wr`` (in). Parameters as for
    :class:`ChannelMemory`, with ``idle`` the probability of a cycle that takes no write
    (backpressure). The words are read back through :attr:`memory` (amaranth.sim) or
    the leaf's ``words`` (VPI)."""

    def __init__(self, width, depth, *, storage=AMARANTH, seed=1, idle=0.0, init=()):
        super().__init__(width, depth, read=False, write=True, storage=storage, seed=seed,
                         backpressure=idle, init=init)


class ReadWriteChannelMemory(ChannelMemory):
    """One memory behind a read channel and a write channel: ports ``cmd`` (in),
    ``data`` (out), ``wr`` (in) and, with ``storage="verilog"``, ``load`` (in). Reads and
    writes may be in flight at once; a read command taken in the same cycle as a write
    beat or later sees the written word (module docstring). Parameters as for
    :class:`ChannelMemory`: ``idle`` for the read channel, ``backpressure`` for
    writes."""

    def __init__(self, width, depth, *, storage=AMARANTH, seed=1, idle=0.0,
                 backpressure=0.0, init=(), load_file="words.bin", latency=2,
                 stall_ports=False):
        super().__init__(width, depth, read=True, write=True, storage=storage, seed=seed,
                         idle=idle, backpressure=backpressure, init=init,
                         load_file=load_file, latency=latency, stall_ports=stall_ports)
