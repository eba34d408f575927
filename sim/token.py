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

__all__ = ["pack", "unpack", "pack_array", "memory_words", "memory_depths", "memory_arrays",
           "memory_chunks", "write_memory_file", "TokenBench"]


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


def _leaves(layout, value, offset=0):
    """``(offset, width, values)`` of every plain field of ``layout`` in ``value`` (as
    :func:`pack_array` takes it), least significant first."""
    if isinstance(layout, data.StructLayout):
        for name, field in layout:
            inner = value.get(name, 0) if isinstance(value, dict) else 0
            yield from _leaves(field.shape, inner, offset + field.offset)
        return
    if isinstance(layout, data.ArrayLayout):
        step = Shape.cast(layout.elem_shape).width
        for k in range(layout.length):
            yield from _leaves(layout.elem_shape, _element(value, k), offset + k * step)
        return
    yield offset, Shape.cast(layout).width, value


def _element(value, k):
    """Element ``k`` of an array value: the column ``k`` after the words' axis (of each
    array of a dict, for an array of structs)."""
    if isinstance(value, dict):
        return {name: _element(v, k) for name, v in value.items()}
    if np.ndim(value) == 0:
        return value
    return np.asarray(value)[:, k]


def pack_array(layout, value, count):
    """:func:`pack` of ``count`` words at once, as their little-endian bytes: ``(count,
    ceil(width / 8))`` uint8 (the rows of ``memory_image`` and the leaf memories' files).

    ``value`` is what :func:`pack` takes with NumPy arrays for its numbers, each with
    the words on its first axis: an array of shape ``(count, length, ...)`` for an
    :class:`~amaranth.lib.data.ArrayLayout` (element ``k`` is ``value[:, k]``), a dict
    of such for a struct (an array of structs: a dict of arrays ``(count, length)``), an
    array ``(count,)`` for a plain shape; a missing field or a scalar is the same in
    every word. Two's complement, masked to each field, as :func:`pack`."""
    width = Shape.cast(layout).width
    size = -(-width // 8)
    leaves = list(_leaves(layout, value))
    out = np.zeros((count, size), dtype=np.uint8)
    if all(off % 8 == 0 and w in (8, 16, 32, 64) for off, w, _ in leaves):
        for off, w, v in leaves:                   # whole bytes: no bit arithmetic
            v = np.broadcast_to(np.asarray(v, dtype=np.int64), (count,))
            raw = np.ascontiguousarray(v.astype("<u8")).view(np.uint8).reshape(count, 8)
            out[:, off // 8:off // 8 + w // 8] = raw[:, :w // 8]
        return out
    bits = np.zeros((count, size * 8), dtype=np.uint8)
    for off, w, v in leaves:
        v = np.broadcast_to(np.asarray(v, dtype=np.int64), (count,))
        if w < 64:
            v = v & ((1 << w) - 1)
        bits[:, off:off + w] = ((v.astype(np.uint64)[:, None] >> np.arange(w, dtype=np.uint64))
                                & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits, axis=1, bitorder="little")


def memory_depths(program):
    """``{channel: words}`` of the program's memories (:func:`memory_words`'s lengths)."""
    img = program.image
    return {"prog": len(img.prog), "vec": len(img.vec), "wgt": len(img.wgt),
            "head": int(np.prod(img.head["last"].shape)), "kv": img.kv_entries}


def memory_arrays(program, core, channel, start=0, stop=None):
    """Words ``start`` to ``stop`` of a channel's memory (:func:`memory_words`) as
    their little-endian bytes, ``(words, ceil(bits / 8))`` uint8, vectorized
    (:func:`pack_array`): what a large image loads (:func:`memory_chunks`)."""
    img = program.image
    depth = memory_depths(program)[channel]
    stop = depth if stop is None else min(stop, depth)
    count = max(0, stop - start)
    if channel == "prog":
        size = -(-Shape.cast(core.prog_data.payload.shape()).width // 8)
        raw = b"".join(int(w).to_bytes(size, "little") for w in img.prog[start:stop])
        return np.frombuffer(raw, dtype=np.uint8).reshape(count, size).copy()
    if channel == "vec":
        v = np.asarray(img.vec[start:stop], dtype=np.int64) & 0xFFFFFFFF
        return v.astype("<u4").view(np.uint8).reshape(count, 4)
    if channel == "wgt":
        return pack_array(core.wgt_data.payload.shape(), np.asarray(img.wgt[start:stop]),
                          count)
    if channel == "kv":
        return np.zeros((count, -(-core.kv_layout.size // 8)), dtype=np.uint8)
    if channel != "head":
        raise ValueError(f"unknown channel {channel!r}")
    h = img.head
    beats = h["last"].shape[1]
    index = np.arange(start, stop)
    t, b = index // beats, index % beats
    value = {"codes": h["codes"][t, b], "scale": {"mant": h["mant"][t], "exp": h["exp"][t]},
             "last": h["last"][t, b], "end": h["end"][t, b]}
    if "mult" in h:
        value["mult"] = h["mult"][t, b]
    return pack_array(core.head_data.payload.shape(), value, count)


def memory_chunks(program, core, channel, words=1 << 20, start=0, stop=None):
    """A channel's memory (its words ``start`` to ``stop``) as :func:`memory_arrays`
    blocks of ``words`` words each."""
    stop = memory_depths(program)[channel] if stop is None else stop
    for at in range(start, stop, words):
        yield memory_arrays(program, core, channel, at, min(at + words, stop))


def write_memory_file(path, chunks, width, part_bits=None):
    """Write words (blocks of little-endian bytes, :func:`memory_chunks`) to ``path`` as
    the Verilog leaf memory loads them (``sim.harness.memory_image``: each word as its
    ``part_bits`` parts, least significant first, each part big-endian); returns the
    parts written."""
    if part_bits is None:
        from ternary_accel.sim.harness import PART_BITS as part_bits
    part = part_bits // 8
    size = part * -(-width // part_bits)
    parts = 0
    with open(path, "wb") as f:
        for raw in chunks:
            raw = np.asarray(raw, dtype=np.uint8)
            if raw.shape[1] < size:
                raw = np.pad(raw, ((0, 0), (0, size - raw.shape[1])))
            f.write(raw.reshape(-1, part)[:, ::-1].tobytes())
            parts += raw.shape[0] * (size // part)
    return parts


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
