"""The token core's memories for simulation: the memory images of a
:class:`~ternary_accel.hw.program.TokenProgram` as the channels' words, and an
``amaranth.sim`` bench that serves every channel from them with random stalls, runs
tokens and reads the results back.

Each read channel answers its commands in order (a queue of commands), offering one
word a cycle, with idle cycles drawn from a seeded generator; the KV cache's write
channel writes into the same words its read channel serves; the logits stream is
recorded with random backpressure.
"""

import numpy as np
from amaranth.hdl import Shape, Value
from amaranth.lib import data

from ternary_accel.hw.rtl.token import TokenCore

__all__ = ["pack", "unpack", "memory_words", "TokenBench"]


def pack(layout, value):
    """The integer of one ``value`` in ``layout``: a dict for a struct, a sequence for
    an array, an int for a plain shape (two's complement, masked to the field)."""
    if isinstance(layout, data.StructLayout):
        word = 0
        for name, field in layout:
            word |= pack(field.shape, value.get(name, 0)) << field.offset
        return word
    if isinstance(layout, data.ArrayLayout):
        step = Shape.cast(layout.elem_shape).width
        word = 0
        for k, element in enumerate(value):
            word |= pack(layout.elem_shape, element) << (k * step)
        return word
    width = Shape.cast(layout).width
    return int(value) & ((1 << width) - 1)


def unpack(layout, word):
    """The inverse of :func:`pack`."""
    if isinstance(layout, data.StructLayout):
        return {name: unpack(field.shape, (word >> field.offset)
                             & ((1 << Shape.cast(field.shape).width) - 1))
                for name, field in layout}
    if isinstance(layout, data.ArrayLayout):
        step = Shape.cast(layout.elem_shape).width
        return [unpack(layout.elem_shape, (word >> (k * step)) & ((1 << step) - 1))
                for k in range(layout.length)]
    shape = Shape.cast(layout)
    if shape.signed and word >> (shape.width - 1):
        word -= 1 << shape.width
    return word


def memory_words(program, core):
    """``{channel: list of int}``: the words of the ``prog``, ``vec``, ``wgt`` and
    ``head`` memories of ``program`` for ``core``; the ``kv`` memory starts as zeros."""
    img = program.image
    wgt_layout = core.wgt_data.payload.shape()
    head_layout = core.head_data.payload.shape()
    wgt = [pack(wgt_layout, [int(b) for b in row]) for row in img.wgt]
    h = img.head
    tiles, beats = h["last"].shape
    head = []
    for t in range(tiles):
        scale = [{"mant": int(mt), "exp": int(ex)} for mt, ex in zip(h["mant"][t], h["exp"][t])]
        for b in range(beats):
            beat = {"codes": h["codes"][t, b].tolist(), "scale": scale,
                    "last": int(h["last"][t, b]), "end": int(h["end"][t, b])}
            if "mult" in h:
                beat["mult"] = h["mult"][t, b].tolist()
            head.append(pack(head_layout, beat))
    vec_mask = (1 << 32) - 1
    return {"prog": [int(w) for w in img.prog],
            "vec": [int(v) & vec_mask for v in img.vec],
            "wgt": wgt, "head": head, "kv": [0] * img.kv_entries}


class TokenBench:
    """A :class:`TokenCore` under ``amaranth.sim`` with its memories served from a
    program's images (module docstring).

    Parameters
    ----------
    program : hw.program.TokenProgram
    idle : float
        Probability of an idle cycle on each channel's data and of backpressure on
        the logits.
    seed : int
    """

    def __init__(self, program, *, idle=0.0, seed=0):
        self.program = program
        self.core = TokenCore(program)
        self.words = memory_words(program, self.core)
        self.idle = idle
        self.rng = np.random.default_rng(seed)
        self.cycles = []

    def _stall(self):
        return self.idle > 0 and self.rng.random() < self.idle

    def _serve(self, name):
        """A read channel's server process."""
        cmd = getattr(self.core, f"{name}_cmd")
        port = getattr(self.core, f"{name}_data")
        words = self.words[name]
        target = Value.cast(port.payload)
        if target.shape().signed:              # the vec words: two's complement
            top = 1 << (target.shape().width - 1)
            words = [w - 2 * top if w >= top else w for w in words]

        async def process(ctx):
            queue = []                      # word addresses still to offer
            offered = False
            ctx.set(cmd.ready, 1)
            async for _, _, c_valid, c_payload, d_ready in ctx.tick().sample(
                    cmd.valid, Value.cast(cmd.payload), port.ready):
                if c_valid:
                    addr, count = c_payload & 0xFFFFFFFF, c_payload >> 32
                    queue.extend(range(addr, addr + count))
                if offered and d_ready:
                    queue.pop(0)
                offered = bool(queue) and not self._stall()
                ctx.set(port.valid, int(offered))
                if offered:
                    ctx.set(target, words[queue[0] % len(words)])
        return process

    def _kv_writer(self):
        wr = self.core.kv_wr
        kv = self.words["kv"]
        width = self.core.kv_layout.size

        async def process(ctx):
            ctx.set(wr.ready, 1)
            async for _, _, valid, payload in ctx.tick().sample(wr.valid,
                                                                Value.cast(wr.payload)):
                if valid:
                    kv[(payload & 0xFFFFFFFF) % len(kv)] = (payload >> 32) & ((1 << width) - 1)
                ctx.set(wr.ready, int(not self._stall()))
        return process

    def run(self, tokens, start=0, *, cycles=10_000_000):
        """Tokens ``tokens`` at positions ``start ..``: returns ``(next tokens, logits)``,
        logits (len(tokens), vocab) int64 in the residual format; ``self.cycles`` the
        cycles of each token from ``start`` to ``done``."""
        from amaranth.sim import Simulator
        core = self.core
        vocab = self.program.config.vocab
        out_tokens, logits = [], []
        self.errors = errors = []
        self.op_cycles = []

        async def host(ctx):
            for position, token in enumerate(tokens, start):
                ctx.set(core.token_in, int(token))
                ctx.set(core.position, position)
                ctx.set(core.start, 1)
                await ctx.tick()
                ctx.set(core.start, 0)
                row = []
                count = 0
                ctx.set(core.logits.ready, 1)
                while True:
                    _, _, done, l_valid, l_ready, value = await ctx.tick().sample(
                        core.done, core.logits.valid, core.logits.ready,
                        core.logits.payload.value)
                    count += 1
                    if l_valid and l_ready:
                        row.append(value)
                    ctx.set(core.logits.ready, int(not self._stall()))
                    if done:
                        break
                    if count > cycles:
                        raise TimeoutError(f"token {token} at position {position} did not "
                                           f"finish in {cycles} cycles")
                self.cycles.append(count)
                self.op_cycles.append([int(ctx.get(core.cycles[k]))
                                       for k in range(len(core.cycles))])
                errors.append(int(ctx.get(Value.cast(core.error))))
                out_tokens.append(int(ctx.get(core.token)))
                if len(row) != vocab:
                    raise AssertionError(f"{len(row)} logits, expected {vocab}")
                logits.append(row)

        sim = Simulator(core)
        sim.add_clock(1e-8)
        for name in ("prog", "vec", "wgt", "kv", "head"):
            sim.add_process(self._serve(name))
        sim.add_process(self._kv_writer())
        sim.add_testbench(host)
        sim.run()
        return out_tokens, np.asarray(logits, dtype=np.int64)
