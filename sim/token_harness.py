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

from amaranth.hdl import (ClockDomain, ClockSignal, Instance, Module, ResetSignal, Shape,
                          Signal, Value)
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ternary_accel.hw.rtl.token import TokenCore
from ternary_accel.sim.channels import (ReadChannelMemory, ReadWriteChannelMemory,
                                        connect_read, connect_write)
from ternary_accel.sim.harness import (AMARANTH, CLOCK_MODULE, COUNT_WIDTH, CYCLE_WIDTH,
                                       LFSR_WIDTH, STALL_BITS, STORAGES, VERILOG,
                                       StreamRecorder, stall_threshold)
from ternary_accel.sim.token import memory_words

__all__ = ["CHANNELS", "READ_ONLY", "TokenHarness", "TokenImages", "load_file",
           "token_images"]

#: The core's memory channels, in the order of their stall seeds.
CHANNELS = ("prog", "vec", "wgt", "head", "kv")
#: The channels the core only reads.
READ_ONLY = CHANNELS[:4]


def load_file(channel):
    """The file a channel's memory loads (``storage="verilog"``), in the simulator's
    working folder."""
    return f"{channel}.bin"


class TokenImages(NamedTuple):
    """The memories' contents of a program for the harness (:func:`token_images`).

    Attributes
    ----------
    words : dict
        ``{channel: list of int}`` (:func:`sim.token.memory_words`).
    widths : dict
        ``{channel: bits}`` of a memory word, and ``"logits"``: of a recorded logit.
    logits : Layout
        A recorded logit's ``{value, last}``.
    """

    words: dict
    widths: dict
    logits: object


def token_images(program):
    """:class:`TokenImages` of ``program``, without a harness: from a :class:`TokenCore`
    built only for its port shapes (marked used, so that Amaranth does not warn that it
    was never elaborated)."""
    core = TokenCore(program)
    layout = core.logits.payload.shape()
    images = TokenImages(memory_words(program, core),
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
        self.words = memory_words(program, core)
        self.widths = dict(core.word_bits)
        self._memories = {}
        for k, name in enumerate(CHANNELS):
            depth = max(2, len(self.words[name]))
            kind = ReadChannelMemory if name in READ_ONLY else ReadWriteChannelMemory
            extra = {"backpressure": idle} if name == "kv" else {}
            if storage == AMARANTH:
                extra["init"] = self.words[name]
            else:
                extra["load_file"] = load_file(name)
            self._memories[name] = kind(self.widths[name], depth, storage=storage,
                                        seed=seed + k, idle=idle, latency=1,
                                        stall_ports=True, **extra)
        logit = Value.cast(core.logits.payload).shape().width
        self.widths["logits"] = logit
        self._recorder = StreamRecorder(width=logit, depth=max(2, program.config.vocab),
                                        storage=storage)
        self._recorder_seed = seed + len(CHANNELS)
        members = core.signature.members
        ports = {}
        if storage == VERILOG:
            ports["reset"] = In(1)
            ports.update({f"{name}_load": In(1) for name in CHANNELS})
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
        for name, memory in self._memories.items():
            m.submodules[name] = memory
            connect_read(m, getattr(core, f"{name}_cmd"), getattr(core, f"{name}_data"),
                         memory)
            m.d.comb += memory.idle.eq(self.idle)
            if self._storage_kind == VERILOG:
                m.d.comb += memory.load.eq(getattr(self, f"{name}_load"))
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
