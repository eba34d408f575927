"""The token core under Verilator with its memories in the harness: a
:class:`TokenSession` builds :class:`sim.token_harness.TokenHarness` for a program
(cached), starts one simulator process (cocotb, :mod:`sim.tb.token`), loads the
memories once, and runs tokens one after the other, the KV cache growing in the
simulator's memory from call to call, as :meth:`sim.token.TokenBench.run` does under
``amaranth.sim``.

Nothing in Python runs per simulated cycle: the bench starts a token and waits for
``done`` with a cocotb trigger; the channels, their stalls and the logits recorder are
in the design.

The memories' words never pass through Python ints or the socket: the session writes
each memory's file into its run folder in blocks of packed words
(:func:`sim.token.memory_chunks`, :func:`sim.token.write_memory_file`, the bytes
``sim.harness.memory_image`` makes of :func:`sim.token.memory_words`), and the bench
loads the leaves from them, so that a model as large as 2B4T (1.3 GB of ``vec``) loads.
"""

import hashlib
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ternary_accel.hw.paths import build_path
from ternary_accel.hw.program import OPS, TokenProgram
from ternary_accel.hw.rtl.token import TokenCore
from ternary_accel.sim.build import build_harness, design_digest
from ternary_accel.sim.harness import LFSR_WIDTH, stall_threshold
from ternary_accel.sim.session import SimulatorSession
from ternary_accel.sim.token import memory_chunks, unpack, write_memory_file
from ternary_accel.sim import token_harness as _harness
from ternary_accel.sim.token_harness import (CHANNELS, TokenHarness, _mark_used, load_file,
                                             memory_banks, token_images)

__all__ = ["TOKEN_TOP", "TokenRun", "TokenSession", "build_token"]

#: Name of the generated harness's top-level module.
TOKEN_TOP = "token_harness"
#: The modules of ``sim/`` in the harness's design, besides ``sim/harness.py``.
HARNESS_SOURCES = ("channels.py", "token_harness.py")


class TokenRun(NamedTuple):
    """What :meth:`TokenSession.run` gives, one entry a token.

    Attributes
    ----------
    tokens : list of int
        The next tokens (the core's argmax).
    logits : numpy.ndarray of int64, (T, vocab)
        The logits in the residual format.
    cycles : list of int
        Cycles of each token, from ``start`` to ``done`` (as :class:`sim.token.TokenBench`
        counts them).
    op_cycles : list of list of int
        The core's cycle counters of each token, in the order of
        :data:`hw.program.OPS`.
    errors : list of int
        The core's error flags after each token (:class:`hw.rtl.token.TokenErrors`).
    """

    tokens: list
    logits: np.ndarray
    cycles: list
    op_cycles: list
    errors: list


def _structure(program):
    """What the harness's Verilog depends on in ``program``: the core's sizes and the
    memories' depths (not their contents, which are loaded at run time)."""
    img = program.image
    depths = (len(img.prog), len(img.vec), len(img.wgt), int(np.prod(img.head["last"].shape)),
              img.kv_entries)
    return (repr(program.config), repr(program.params), repr(program.numerics),
            program.positions, repr(program.scratch), program.code_words, depths,
            _harness.MAX_PARTS)


def build_token(program, *, seed=1, build_root=None, quiet=True):
    """Generate and compile the :class:`TokenHarness` of ``program`` under Verilator,
    cached: in a folder named after the model, the engine and a digest of the program's
    sizes and ``seed``; generated again when the design's sources change.

    Returns
    -------
    (runner, build_dir, seconds, phases)
        As for :func:`sim.build.build_engine`.
    """
    parts = (_structure(program), seed)
    short = hashlib.sha256(repr(parts).encode()).hexdigest()[:12]
    build_dir = (Path(build_root or build_path("sim")).resolve() /
                 f"token_{program.config.shape.name}_{program.params.name}_{short}")
    runner, seconds, phases = build_harness(
        lambda: TokenHarness(program, seed=seed), TOKEN_TOP, build_dir,
        design_digest(*parts, sources=HARNESS_SOURCES), quiet=quiet)
    return runner, build_dir, seconds, phases


class TokenSession(SimulatorSession):
    """A :class:`~ternary_accel.hw.rtl.token.TokenCore` program under Verilator (module
    docstring). Use as a context manager: entering builds (cached), starts the
    simulator and loads the memories.

    Parameters
    ----------
    program : hw.program.TokenProgram
    idle : float
        Stall probability in [0, 1) of every channel (commands, words, KV writes,
        logits); set at run time, so sessions of any ``idle`` share a build.
    seed : int
        Seed of the stall LFSRs (a build of its own per seed).
    build_root : path-like, optional
        Folder of the builds (default ``sim`` under :func:`ternary_accel.hw.paths.build_root`).
    progress : callable, optional
        Told of each long step as it starts (a line of text: the build, the memory
        files, the load).

    Attributes
    ----------
    build_seconds, build_phases : float, dict
        The build's seconds (nearly 0 when cached), by phase.
    write_seconds : float
        Seconds to write the memories' files (host side).
    load_seconds : float
        The simulator's seconds to load the memories.
    load_channels : dict
        Those seconds by channel.
    simulated : dict
        Over all :meth:`run` calls: ``cycles`` (of the tokens), ``seconds`` (the
        simulator's time from each ``start`` to two cycles after its ``done``) and
        ``read_seconds`` (reading the ports and the logits back) and ``peak_mb`` (the
        simulator process's peak resident memory, MB, after the last run; None when the
        system does not say).
    """

    what = "token core"

    def __init__(self, program, *, idle=0.0, seed=1, build_root=None, progress=None):
        if not isinstance(program, TokenProgram):
            raise TypeError(f"program must be a TokenProgram, not {type(program).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int) or \
                not 0 <= seed < (1 << LFSR_WIDTH) - len(CHANNELS) - 1:
            raise ValueError(f"seed must be an int in [0, 2**{LFSR_WIDTH} - "
                             f"{len(CHANNELS) + 1}), not {seed!r}")
        super().__init__(build_root=build_root)
        self.program = program
        self.idle = idle
        self._threshold = stall_threshold(idle)
        self.seed = seed
        self.images = token_images(program, words=False)
        self.progress = progress
        self.write_seconds = self.load_seconds = None
        self.load_channels = {}
        self.simulated = {"cycles": 0, "seconds": 0.0, "read_seconds": 0.0, "peak_mb": None}

    def _say(self, text):
        if self.progress is not None:
            self.progress(text)

    def _launch(self):
        self._say("building the harness under Verilator (cached)")
        runner, self.build_dir, self.build_seconds, self.build_phases = build_token(
            self.program, seed=self.seed, build_root=self.build_root)
        return runner, "ternary_accel.sim.tb.token", TOKEN_TOP, {}

    def start(self):
        """Build (cached), start the simulator and load the memories."""
        if self._conn is not None:
            return
        super().start()
        self._say(f"build {self.build_seconds:.0f} s; writing the memory files")
        started = time.monotonic()
        core = TokenCore(self.program)            # for its ports' shapes only
        _mark_used(core)
        parts = {bank: write_memory_file(self.run_dir / load_file(bank),
                                         memory_chunks(self.program, core, name,
                                                       start=start, stop=stop),
                                         self.images.widths[name])
                 for bank, name, start, stop in memory_banks(self.program,
                                                             self.images.widths)}
        self.write_seconds = time.monotonic() - started
        self._say(f"files written in {self.write_seconds:.0f} s; loading the memories")
        reply = self._request({"load": {"files": parts, "widths": self.images.widths}})
        self.load_seconds = reply["seconds"]
        self.load_channels = reply["channels"]
        self._say(f"memories loaded in {self.load_seconds:.0f} s")

    def run(self, tokens, start_position=0, *, cycles=10_000_000):
        """Run ``tokens`` at positions ``start_position, start_position + 1, ...``, one
        after the other, on the KV cache of the tokens run before.

        Parameters
        ----------
        tokens : sequence of int
        start_position : int
        cycles : int
            Cycles a token may take before the run fails.

        Returns
        -------
        TokenRun
            ``(tokens, logits, cycles, op_cycles, errors)``.

        Raises
        ------
        ValueError
            If a token or position is out of range.
        RuntimeError
            If a token did not finish in ``cycles`` or the simulator failed.
        AssertionError
            If a token did not send ``vocab`` logits, the last one marked ``last``.
        """
        c = self.program.config
        tokens = [int(t) for t in tokens]
        if any(not 0 <= t < c.vocab for t in tokens):
            raise ValueError(f"tokens must be in 0..{c.vocab - 1}, not {tokens}")
        end = start_position + len(tokens)
        if start_position < 0 or end > self.program.positions:
            raise ValueError(f"positions {start_position}..{end - 1} are outside the "
                             f"program's 0..{self.program.positions - 1}")
        if not tokens:
            return TokenRun([], np.zeros((0, c.vocab), np.int64), [], [], [])
        reply = self._request({"tokens": tokens, "start": start_position,
                               "idle": self._threshold, "limit": int(cycles),
                               "vocab": c.vocab, "counters": len(OPS)})
        self.simulated["cycles"] += sum(reply["cycles"])
        self.simulated["seconds"] += reply["timing"]["simulate"]
        self.simulated["read_seconds"] += reply["timing"]["read"]
        if reply.get("peak_kb") is not None:
            self.simulated["peak_mb"] = round(reply["peak_kb"] / 1024)
        layout = self.images.logits
        logits = []
        for k, (count, words) in enumerate(zip(reply["counts"], reply["logits"])):
            if count != c.vocab:
                raise AssertionError(f"token {tokens[k]} at position {start_position + k}: "
                                     f"{count} logits, expected {c.vocab}")
            beats = [unpack(layout, w) for w in words]
            if [b["last"] for b in beats] != [0] * (c.vocab - 1) + [1]:
                raise AssertionError(f"token {tokens[k]} at position {start_position + k}: "
                                     f"'last' not on the last logit alone")
            logits.append([b["value"] for b in beats])
        return TokenRun(reply["tokens"], np.asarray(logits, dtype=np.int64),
                        reply["cycles"], reply["op_cycles"], reply["errors"])
