"""Reusable cocotb verification components for the matmul unit's streams.

Driver / Monitor / Model / Scoreboard, assembled by :class:`MatmulBench`. One clock
coroutine calls every component once per cycle (drive just after the rising edge,
sample in the read-only phase), which keeps the Python cost per simulated cycle low.
"""

import itertools
import json
import os
from collections import deque
from dataclasses import dataclass

import numpy as np
import cocotb
from cocotb.clock import Clock
from cocotb.triggers import Event, ReadOnly, RisingEdge

from amaranth.lib import data

from ternary_accel.hw.rtl.matmul import ErrorLayout
from ternary_accel.model.arith import matmul_int, round_fixed, wrap_signed
from ternary_accel.model.encoding import (CODE_INVALID, code_width, decode_binary_codes,
                            decode_lane_codes, encode_binary_codes, encode_lane_codes)
from ternary_accel.model.quant import TERNARY

from ternary_accel.sim.packing import field_slices, pack_array, pack_struct, unpack_array
from ternary_accel.hw.rtl.matmul import act_layout as unit_act_layout

__all__ = ["Vector", "StreamDriver", "StreamMonitor", "MatmulModel", "Scoreboard",
           "MatmulBench", "pauses", "never", "codes_for"]


def never():
    """A pause generator that never pauses."""
    return itertools.repeat(False)


def pauses(rng, probability):
    """An endless pause generator: True (idle this cycle) with ``probability``."""
    while True:
        yield bool(rng.random() < probability)


def codes_for(weights, weight_mode):
    """Lane codes of integer weights in ``weight_mode``."""
    if weight_mode == TERNARY:
        return encode_lane_codes(weights)
    return encode_binary_codes(weights)


@dataclass
class Vector:
    """One dot-product transaction: ``beats`` activation and weight beats.

    Attributes
    ----------
    activations : numpy.ndarray, (beats, lanes)
        int8 activations (int4 on an ``act_width=4`` unit).
    codes : numpy.ndarray, (beats, rows, lanes)
        Lane codes (may include the invalid ternary code on purpose).
    scale, shift : int
        Output-stage multiplier and shift (ignored when the stage is bypassed).
    """

    activations: np.ndarray
    codes: np.ndarray
    scale: int = 1
    shift: int = 0

    @property
    def beats(self):
        return self.activations.shape[0]


class StreamDriver:
    """Drives an ``amaranth.lib.stream`` input of the DUT from a queue of payload words.

    Once ``valid`` is raised it stays up, payload unchanged, until the beat transfers;
    the pause generator only decides whether a new beat is offered in a cycle.
    """

    def __init__(self, dut, prefix, pause=None):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.pause = pause if pause is not None else never()
        self.queue = deque()
        self.offered = None
        self._valid = False
        self.transfers = 0
        self.first_transfer = None

    def send(self, words):
        self.queue.extend(words)

    def clear(self):
        self.queue.clear()
        self.offered = None
        self._valid = False
        self.valid.value = 0

    def drive(self):
        if self.offered is not None:
            return  # hold valid and payload until the beat transfers
        if self.queue and not next(self.pause):
            self.offered = self.queue.popleft()
            self.payload.value = self.offered
            self.valid.value = 1
        elif self._valid:
            self.valid.value = 0
        self._valid = self.offered is not None

    def sample(self, cycle):
        if self.offered is not None and self.ready.value:
            if self.first_transfer is None:
                self.first_transfer = cycle
            self.transfers += 1
            self.offered = None

    @property
    def idle(self):
        return self.offered is None and not self.queue


class StreamMonitor:
    """Drives ``ready`` of an output stream with a pause generator and collects the
    payload of every transfer, with the cycle it happened in."""

    def __init__(self, dut, prefix, pause=None, callback=None):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.pause = pause if pause is not None else never()
        self.callback = callback
        self.last_transfer = None
        self._ready = False

    def drive(self):
        self._ready = not next(self.pause)
        self.ready.value = int(self._ready)

    def sample(self, cycle):
        if self._ready and self.valid.value:
            self.last_transfer = cycle
            if self.callback is not None:
                self.callback(self.payload.value.to_unsigned())


class MatmulModel:
    """The golden model of one :class:`hw.matmul.MatmulUnit` configuration.

    Everything comes from :mod:`model`: the hardware's decoding of the unused code
    (weight 0), wrap-around past ``max_beats`` (flagged by the RTL), and
    :func:`model.arith.round_fixed`.
    """

    def __init__(self, config):
        self.config = config

    def weights(self, codes):
        if self.config.weight_mode == TERNARY:
            return decode_lane_codes(codes, strict=False)
        return decode_binary_codes(codes)

    def expected(self, vector):
        acc = np.zeros(self.config.rows, dtype=np.int64)
        for beat in range(vector.beats):
            acc += matmul_int(self.weights(vector.codes[beat]), vector.activations[beat],
                              self.config.weight_mode, self.config.act_width)
        acc = wrap_signed(acc, self.config.acc_width)
        if self.config.output_stage:
            return round_fixed(acc, vector.scale, vector.shift)
        return acc

    def invalid(self, vector):
        return self.config.weight_mode == TERNARY and bool(np.any(vector.codes == CODE_INVALID))

    def overflow(self, vector):
        return vector.beats > self.config.max_beats


class Scoreboard:
    """Compares every result word with the model's expectation, in order."""

    def __init__(self, config, log):
        self.config = config
        self.log = log
        self.expected = deque()
        self.checked = 0
        self.mismatches = []
        self.received = []

    def expect(self, result):
        self.expected.append(np.asarray(result, dtype=np.int64))

    def clear(self):
        self.expected.clear()

    def receive(self, word):
        got = unpack_array([word], self.config.rows, self.config.res_width, signed=True)[0]
        self.received.append(got)
        if not self.expected:
            self.mismatches.append(("unexpected result", got))
            self.log.error("unexpected result %s", got)
            return
        want = self.expected.popleft()
        self.checked += 1
        if not np.array_equal(got, want):
            self.mismatches.append((self.checked - 1, got, want))
            if len(self.mismatches) <= 5:
                self.log.error("result %d: got %s, expected %s", self.checked - 1, got, want)

    def assert_done(self):
        assert not self.mismatches, \
            f"{len(self.mismatches)} mismatching results, first: {self.mismatches[0]}"
        assert not self.expected, f"{len(self.expected)} expected results never arrived"


class MatmulBench:
    """The matmul unit's testbench: clock, reset, drivers, monitor, model, scoreboard."""

    def __init__(self, dut, config, *, seed=0, idle=0.0, backpressure=0.0):
        self.dut = dut
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.model = MatmulModel(config)
        self.scoreboard = Scoreboard(config, dut._log)
        self.act = StreamDriver(dut, "act", pauses(self.rng, idle))
        self.wgt = StreamDriver(dut, "wgt", pauses(self.rng, idle))
        self.res = StreamMonitor(dut, "res", pauses(self.rng, backpressure),
                                 self.scoreboard.receive)
        self.cycle = 0
        self._error_fields = field_slices(data.Layout.cast(ErrorLayout))
        self._loop = None
        self._reset_cycles = 0
        self._reset_done = Event()

    async def start(self):
        cocotb.start_soon(Clock(self.dut.clk, 10, unit="ns").start())
        self.dut.rst.value = 1
        self.act.clear()
        self.wgt.clear()
        self.dut.res__ready.value = 0
        self._loop = cocotb.start_soon(self._run())
        await self.reset()

    def stop(self):
        if self._loop is not None:
            self._loop.cancel()
            self._loop = None

    def set_traffic(self, seed, idle=0.0, backpressure=0.0):
        """New random stream: idle probability on each input, backpressure on the output."""
        self.rng = np.random.default_rng(seed)
        self.act.pause = pauses(self.rng, idle)
        self.wgt.pause = pauses(self.rng, idle)
        self.res.pause = pauses(self.rng, backpressure)

    async def reset(self, cycles=2):
        """Assert reset for ``cycles`` clock edges; drop everything queued or in flight
        (the RTL drops it too). The clock loop applies it at a cycle boundary, so no
        transfer is half-seen."""
        self._reset_cycles = cycles
        self._reset_done.clear()
        await self._reset_done.wait()
        await ReadOnly()  # registers read after this show the reset

    async def _run(self):
        clk = self.dut.clk
        drivers = (self.act, self.wgt)
        while True:
            await RisingEdge(clk)
            self.cycle += 1
            if self._reset_cycles:
                self.dut.rst.value = 1
                self.dut.res__ready.value = 0
                for driver in drivers:
                    driver.clear()
                self.scoreboard.clear()
                self._reset_cycles -= 1
                if self._reset_cycles == 0:
                    self.dut.rst.value = 0
                    self._reset_done.set()
                continue
            for driver in drivers:
                driver.drive()
            self.res.drive()
            await ReadOnly()
            for driver in drivers:
                driver.sample(self.cycle)
            self.res.sample(self.cycle)

    # Transactions.

    def send(self, vectors):
        """Queue ``vectors`` on the input streams and their results on the scoreboard."""
        act_layout = unit_act_layout(self.config.lanes, self.config.output_stage,
                                     self.config.act_width)
        act_words, wgt_words = [], []
        for vector in vectors:
            beats = vector.beats
            last = np.zeros(beats, dtype=np.int64)
            last[-1] = 1
            fields = {"data": vector.activations, "last": last}
            if self.config.output_stage:
                fields["scale"] = np.full(beats, vector.scale)
                fields["shift"] = np.full(beats, vector.shift)
            act_words += pack_struct(act_layout, **fields)
            wgt_words += pack_array(vector.codes.reshape(beats, -1),
                                    code_width(self.config.weight_mode))
            self.scoreboard.expect(self.model.expected(vector))
        self.act.send(act_words)
        self.wgt.send(wgt_words)

    async def wait_done(self, timeout_cycles=200_000):
        start = self.cycle
        while self.scoreboard.expected or not (self.act.idle and self.wgt.idle):
            await RisingEdge(self.dut.clk)
            if self.cycle - start > timeout_cycles:
                raise AssertionError(
                    f"timeout: {len(self.scoreboard.expected)} results outstanding")
        await RisingEdge(self.dut.clk)
        await ReadOnly()  # flags read after this are those of the completed work

    def error_flags(self):
        """The sticky error flags; read them after :meth:`wait_done` or :meth:`reset`."""
        value = self.dut.error.value.to_unsigned()
        return {name: (value >> offset) & ((1 << width) - 1)
                for name, (offset, width) in self._error_fields.items()}

    def record(self, test, vectors, cycles):
        """Append a line of statistics for ``make sim``'s summary."""
        path = os.environ.get("TB_STATS")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps({"config": self.config.name, "test": test,
                                    "vectors": vectors, "cycles": cycles}) + "\n")
