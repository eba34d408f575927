"""The token core inside a simulation harness that holds its memories: a
:class:`~ternary_accel.hw.rtl.token.TokenCore` whose five memory channels are served by
channel memories (:mod:`sim.channels`) and whose logits are captured by a recorder
(:class:`~sim.harness.StreamRecorder`), all in the design, so that a simulator runs a
whole token with no testbench code per cycle (:mod:`sim.token_session` under
Verilator).

The memories hold the words of :func:`sim.token.memory_words`: ``prog``, ``vec``,
``wgt`` and ``head`` behind read channels, the KV cache behind a read and a write
channel (:class:`~sim.channels.ReadWriteChannelMemory`: the core writes its keys and
values and reads them back in later tokens; the words persist from token to token).
Each memory is sized to its words (two at least) and offers a command's first word on
the cycle after it takes the command (``latency=1``), as :class:`sim.token.TokenBench`
does: without stalls a token takes the bench's cycles, operation by operation. Every
channel stalls at random (its own seeded LFSRs, :func:`~sim.channels.channel_seeds`),
the KV writes and the logits included, with the threshold on the ``idle`` port
(:func:`~sim.harness.stall_threshold`), set at run time: one build runs with and
without stalls.

The core's control is on the top's ports: ``start``, ``token_in``, ``position`` in;
``busy``, ``done`` (the core's one-cycle pulse), ``token``, ``error`` and ``cycles``
(the per-operation counters) out; with ``elapsed``, the cycles of the token (cleared by
a ``start`` the core takes, counting while it is busy: the count
:class:`sim.token.TokenBench` gives), and ``logits_count``, the logits the recorder took
since ``start``. The recorder's memory (``vocab`` words of the core's ``{value,
last}``) is read back by the host, as the channel memories are loaded, through the
Verilog leaf's array (``storage="verilog"``, the default) or the Amaranth memories
(``"amaranth"``, for ``amaranth.sim``, loaded from ``init``).
"""

from typing import NamedTuple

from amaranth.hdl import (Array, Cat, ClockDomain, ClockSignal, Instance, Module, ResetSignal,
                          Shape, Signal, Value)
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ternary_accel.hw.rtl.token import TokenCore
from ternary_accel.sim.channels import (ReadChannelMemory, ReadWriteChannelMemory,
                                        connect_read, connect_write)
from ternary_accel.sim.harness import (AMARANTH, CLOCK_MODULE, COUNT_WIDTH, CYCLE_WIDTH,
                                       LFSR_WIDTH, STALL_BITS, STORAGES, VERILOG,
                                       StreamRecorder, parts_per_word, stall_threshold)
from ternary_accel.sim.token import memory_depths, memory_words

__all__ = ["CHANNELS", "READ_ONLY", "MAX_PARTS", "TokenHarness", "TokenImages", "load_file",
           "memory_banks", "token_images"]

#: The core's memory channels, in the order of their stall seeds.
CHANNELS = ("prog", "vec", "wgt", "head", "kv")
#: The channels the core only reads.
READ_ONLY = CHANNELS[:4]


#: Stored parts a Verilog leaf memory holds at most: Verilator refuses a range of more
#: than 2**28 (2B4T's ``vec``, 328 M words, is two banks).
MAX_PARTS = 1 << 28


def load_file(channel):
    """The file a channel's memory (or bank, :func:`memory_banks`) loads
    (``storage="verilog"``), in the simulator's working folder."""
    return f"{channel}.bin"


def memory_banks(program, widths):
    """The leaf memories of the channels: ``[(bank, channel, start, stop)]``, a bank
    holding the channel's words ``start`` to ``stop``. A channel is one bank (named
    after it) unless its stored parts exceed :data:`MAX_PARTS`: then ``vec`` is split
    at whole embedding rows (``vec``, ``vec_1``, ..., the gains in the last bank), so
    that no command (a row, a gain vector) spans two banks.

    Raises
    ------
    ValueError
        If a channel other than ``vec``, or a bank, still exceeds :data:`MAX_PARTS`.
    """
    depths = memory_depths(program)
    banks = []
    for name in CHANNELS:
        depth = depths[name]
        limit = MAX_PARTS // parts_per_word(widths[name])
        cuts = [0]
        if depth > limit and name == "vec":
            row = program.config.hidden
            table = program.config.vocab * row
            step = (limit // row) * row
            cuts += list(range(step, table, step))
        cuts.append(depth)
        for k, (start, stop) in enumerate(zip(cuts, cuts[1:])):
            if stop - start > limit:
                raise ValueError(f"the {name} memory's {stop - start} words exceed a "
                                 f"Verilator leaf's {MAX_PARTS} parts")
            banks.append((name if k == 0 else f"{name}_{k}", name, start, stop))
    return banks


def _connect_banks(m, cmd, data_, banks):
    """Join a core's read channel to several bank memories ``[(memory, start)]``: a
    command goes to the bank holding its first address (``addr - start`` there), the
    words come from the bank of the last command taken. Right when a command's words
    all lie in its bank and the core takes them before its next command (the token
    core's ``vec``: a LOAD's row, a NORM's gains, one at a time)."""
    addr = Value.cast(cmd.payload)[:32]
    count = Value.cast(cmd.payload)[32:]
    index = Signal(range(len(banks)))
    for k, (_, start) in enumerate(banks):
        with m.If(addr >= start):
            m.d.comb += index.eq(k)
    serving = Signal(range(len(banks)))
    readies = Array(memory.cmd.ready for memory, _ in banks)
    m.d.comb += cmd.ready.eq(readies[index])
    with m.If(cmd.valid & cmd.ready):
        m.d.sync += serving.eq(index)
    valids = Array(memory.data.valid for memory, _ in banks)
    payloads = Array(Value.cast(memory.data.payload) for memory, _ in banks)
    m.d.comb += [data_.valid.eq(valids[serving]),
                 Value.cast(data_.payload).eq(payloads[serving])]
    for k, (memory, start) in enumerate(banks):
        m.d.comb += [memory.cmd.valid.eq(cmd.valid & (index == k)),
                     Value.cast(memory.cmd.payload).eq(Cat((addr - start)[:32], count)),
                     memory.data.ready.eq(data_.ready & (serving == k))]


class TokenImages(NamedTuple):
    """The memories' contents of a program for the harness (:func:`token_images`).

    Attributes
    ----------
    words : dict or None
        ``{channel: list of int}`` (:func:`sim.token.memory_words`); None when made
        without them (a large image is written to the memories' files in blocks,
        :func:`sim.token.memory_chunks`).
    widths : dict
        ``{channel: bits}`` of a memory word, and ``"logits"``: of a recorded logit.
    logits : Layout
        A recorded logit's ``{value, last}``.
    """

    words: dict
    widths: dict
    logits: object


def token_images(program, *, words=True):
    """:class:`TokenImages` of ``program``, without a harness: from a :class:`TokenCore`
    built only for its port shapes (marked used, so that Amaranth does not warn that it
    was never elaborated); ``words=False`` leaves the words out (``words`` is None)."""
    core = TokenCore(program)
    layout = core.logits.payload.shape()
    images = TokenImages(memory_words(program, core) if words else None,
                         {**core.word_bits, "logits": Shape.cast(layout).width}, layout)
    _mark_used(core)
    return images


def _mark_used(elaboratable, seen=None):
    """Mark an elaboratable built only for its shapes, and those it built (its
    attributes, recursively), as used."""
    seen = set() if seen is None else seen
    if id(elaboratable) in seen or not hasattr(elaboratable, "_MustUse__used"):
        return
    seen.add(id(elaboratable))
    elaboratable._MustUse__used = True
    for thing in vars(elaboratable).values():
        _mark_used(thing, seen)


class TokenHarness(wiring.Component):
    """A :class:`TokenCore` with its memories and a logits recorder (module docstring).

    Parameters
    ----------
    program : hw.program.TokenProgram
        The core and the memories' sizes (the contents are loaded at run time).
    seed : int
        Seed of the stall LFSRs: the memory of channel ``k`` (:data:`CHANNELS`) has
        ``seed + k``, the recorder ``seed + len(CHANNELS)``; in [0, 2**32 - 8).
    idle : float
        Stall probability in [0, 1) of every channel (taking a command, offering a
        word, taking a KV write, taking a logit): the initial value of the ``idle``
        port, which sets it at run time.
    storage : str
        ``"verilog"`` (the Verilog leaf memories, loaded from :func:`load_file` on a
        rising edge of ``<channel>_load``; the harness makes its own clock and takes
        its reset on ``reset``) or ``"amaranth"`` (Amaranth memories with the program's
        words as their initial contents; the usual ``clk`` and ``rst``).

    Attributes
    ----------
    reset : Signal, in
        ``storage="verilog"``: the synchronous reset.
    prog_load, vec_load, wgt_load, head_load, kv_load : Signal, in
        ``storage="verilog"``: a rising edge loads the memory from its file.
    start, token_in, position : Signal, in
        The core's.
    busy, done, token, error, cycles : Signal, out
        The core's.
    idle : Signal(STALL_BITS), in
        The stall threshold of every channel (:func:`~sim.harness.stall_threshold`).
    elapsed : Signal(CYCLE_WIDTH), out
        Cycles of the token: cleared when the core takes ``start``, counting every
        cycle it is busy, up to and including the cycle of ``done``.
    logits_count : Signal(COUNT_WIDTH), out
        Logits taken by the recorder since ``start``.
    """

    def __init__(self, program, *, seed=1, idle=0.0, storage=VERILOG):
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {', '.join(STORAGES)}, "
                             f"not {storage!r}")
        top = (1 << LFSR_WIDTH) - len(CHANNELS) - 1
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < top:
            raise ValueError(f"seed must be an int in [0, {top}), not {seed!r}")
        threshold = stall_threshold(idle)
        self.program = program
        self._storage_kind = storage
        self._core = core = TokenCore(program)
        # the Verilog leaves load their words at run time: only their depths here
        self.words = memory_words(program, core) if storage == AMARANTH else None
        self.widths = dict(core.word_bits)
        #: ``[(bank, channel, start, stop)]``: the leaf memories (:func:`memory_banks`).
        self.banks = memory_banks(program, self.widths)
        self._memories = {}
        self._starts = {}
        extra_banks = 0
        for bank, name, start, stop in self.banks:
            k = CHANNELS.index(name)
            if bank != name:                  # a further bank: a seed of its own
                extra_banks += 1
                k = len(CHANNELS) + extra_banks
            kind = ReadChannelMemory if name in READ_ONLY else ReadWriteChannelMemory
            extra = {"backpressure": idle} if name == "kv" else {}
            if storage == AMARANTH:
                extra["init"] = self.words[name][start:stop]
            else:
                extra["load_file"] = load_file(bank)
            self._memories[bank] = kind(self.widths[name], max(2, stop - start),
                                        storage=storage, seed=seed + k, idle=idle,
                                        latency=1, stall_ports=True, **extra)
            self._starts[bank] = start
        logit = Value.cast(core.logits.payload).shape().width
        self.widths["logits"] = logit
        self._recorder = StreamRecorder(width=logit, depth=max(2, program.config.vocab),
                                        storage=storage)
        self._recorder_seed = seed + len(CHANNELS)
        members = core.signature.members
        ports = {}
        if storage == VERILOG:
            ports["reset"] = In(1)
            ports.update({f"{bank}_load": In(1) for bank, _, _, _ in self.banks})
        ports.update({name: In(members[name].shape)
                      for name in ("start", "token_in", "position")})
        ports.update({name: Out(members[name].shape)
                      for name in ("busy", "done", "token", "error", "cycles")})
        ports["idle"] = In(STALL_BITS, init=threshold)
        ports["elapsed"] = Out(CYCLE_WIDTH)
        ports["logits_count"] = Out(COUNT_WIDTH)
        super().__init__(ports)

    @property
    def core(self):
        return self._core

    @property
    def memories(self):
        """``{channel: ChannelMemory}``."""
        return dict(self._memories)

    @property
    def recorder(self):
        """The logits' :class:`~sim.harness.StreamRecorder`."""
        return self._recorder

    def elaborate(self, platform):
        m = Module()
        if self._storage_kind == VERILOG:
            m.domains.sync = ClockDomain("sync")
            clk = Signal(name="clk")
            m.submodules.clock = Instance(CLOCK_MODULE, o_clk=clk)
            m.d.comb += [ClockSignal("sync").eq(clk), ResetSignal("sync").eq(self.reset)]
        m.submodules.core = core = self._core
        for bank, memory in self._memories.items():
            m.submodules[bank] = memory
            m.d.comb += memory.idle.eq(self.idle)
            if self._storage_kind == VERILOG:
                m.d.comb += memory.load.eq(getattr(self, f"{bank}_load"))
        for name in CHANNELS:
            banks = [(self._memories[b], self._starts[b]) for b, c, _, _ in self.banks
                     if c == name]
            cmd, data_ = getattr(core, f"{name}_cmd"), getattr(core, f"{name}_data")
            if len(banks) == 1:
                connect_read(m, cmd, data_, banks[0][0])
            else:
                _connect_banks(m, cmd, data_, banks)
        connect_write(m, core.kv_wr, self._memories["kv"])
        m.d.comb += self._memories["kv"].backpressure.eq(self.idle)

        m.submodules.logits = rec = self._recorder
        m.d.comb += [
            rec.start.eq(self.start),
            rec.backpressure.eq(self.idle),
            rec.seed.eq(self._recorder_seed),
            rec.i.valid.eq(core.logits.valid),
            rec.i.payload.eq(Value.cast(core.logits.payload)),
            core.logits.ready.eq(rec.i.ready),
            self.logits_count.eq(rec.count),
        ]
        for name in ("start", "token_in", "position"):
            m.d.comb += getattr(core, name).eq(getattr(self, name))
        for name in ("busy", "done", "token", "error", "cycles"):
            m.d.comb += getattr(self, name).eq(getattr(core, name))
        with m.If(self.start & ~core.busy):
            m.d.sync += self.elapsed.eq(0)
        with m.Elif(core.busy):
            m.d.sync += self.elapsed.eq(self.elapsed + 1)
        return m
