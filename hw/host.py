"""The host's side of :class:`~ternary_accel.hw.rtl.system.TokenSystem`: a program's
images laid out in DRAM, and tokens run through the registers
(:class:`ternary_accel.hw.driver.Registers`).

The DRAM layout of a channel: word ``i`` at ``base + i * stride`` (the channel's
``*_STRIDE``: the word rounded up to whole bus beats), each word little-endian and
zero-padded to its stride; bases aligned to 4 KB here (the DMA needs the bus's
alignment). Logit ``i`` is the 32-bit little-endian word at ``LOGITS_BASE + 4 i``.

>>> images = sim.dram.channel_images(program, bus_bits=128)   # {channel: bytes}
>>> layout = dram_layout(images, base=0x1000_0000)       # {channel: (base, bytes)}
>>> host = TokenHost(Registers(backend), memory)          # memory: write(addr, bytes)...
>>> host.load(layout)
>>> token, logits = host.run(17, position=0)

Backends: the registers over any ``read32``/``write32`` backend (``hw.driver``); the
memory over any object with ``write(addr, data)`` and ``read(addr, length)``: the
simulation's ``AxiRam`` (``sim/tb/system.py``) or :class:`DevMemMemory` (``/dev/mem``
of a board's DRAM: written from the Linux interface, **untested on hardware**; the
region must be reserved from Linux, e.g. a ``reserved-memory`` node, and the PL must
see the same physical addresses).

Plain Python (the register layer); the images of a program are packed by
:func:`ternary_accel.sim.dram.channel_images` (NumPy and Amaranth: the core's layouts),
on the machine that builds them.
"""

import mmap
import os
import time

__all__ = ["CHANNEL_ORDER", "dram_layout", "TokenHost", "TokenError", "wait_done", "write_layout",
           "DevMemMemory", "LOGIT_BYTES"]

#: The channels with a base, in the order :func:`dram_layout` places them.
CHANNEL_ORDER = ("PROG", "VEC", "WGT", "HEAD", "KV", "LOGITS")
#: Bytes of a logit in DRAM.
LOGIT_BYTES = 4


class TokenError(RuntimeError):
    """A token ended with an ERROR flag set, or did not end in time."""


def dram_layout(images, *, base=0x1000_0000, align=4096, bases=None):
    """``{channel: (base, bytes)}``: the channels' images (``{channel: bytes}``, as
    :func:`ternary_accel.sim.dram.channel_images` makes them of a program) one after
    the other from ``base``, each at a multiple of ``align``; ``bases`` (``{channel:
    address}``) places some where given instead."""
    layout, at = {}, base
    for name in CHANNEL_ORDER:
        image = images[name]
        where = (bases or {}).get(name)
        if where is None:
            at = -(-at // align) * align
            where, at = at, at + len(image)
        layout[name] = (where, image)
    return layout


def write_layout(regs, memory, layout):
    """Write each ``{channel: (base, bytes)}`` image of ``layout`` to ``memory`` and its
    base to the channel's ``*_BASE`` registers."""
    for name, (base, image) in layout.items():
        memory.write(base, image)
        regs.set_base(name, base)


def wait_done(regs, wait, error, job, *, timeout_s=60.0, polls=None):
    """Wait for ``STATUS.done`` (``wait(regs)``, an interrupt hook, or polling for
    ``timeout_s`` seconds or ``polls`` reads), then raise ``error`` if an ERROR flag is
    set (the flags and ERROR_ADDR in the message) or the ``job`` did not end."""
    if wait is not None:
        wait(regs)
    else:
        deadline, n = time.monotonic() + timeout_s, 0
        while not regs.STATUS.done:
            n += 1
            if time.monotonic() > deadline or (polls is not None and n > polls):
                raise error(f"the {job} did not finish (STATUS {regs.STATUS.fields()})")
    errors = regs.errors()
    if errors:
        addr = regs.read("ERROR_ADDR_LO") | regs.read("ERROR_ADDR_HI") << 32
        raise error(f"ERROR {', '.join(errors)} (ERROR_ADDR {addr:#x})")


class TokenHost:
    """Tokens on a :class:`~ternary_accel.hw.rtl.system.TokenSystem` (module docstring).

    Parameters
    ----------
    regs : hw.driver.Registers
    memory : object
        ``write(addr, data)`` and ``read(addr, length)`` of DRAM at the PL's addresses.
    wait : callable, optional
        ``wait(regs)`` returns when the token is done (an interrupt); by default
        :meth:`run` polls ``STATUS.done``.
    """

    def __init__(self, regs, memory, *, wait=None):
        self.regs, self.memory, self.wait = regs, memory, wait
        self.vocab = regs.MODEL_VOCAB.vocab
        self.layout = None

    def load(self, layout):
        """Write the images of ``layout`` (:func:`dram_layout`) and set the bases."""
        write_layout(self.regs, self.memory, layout)
        self.layout = layout

    def start(self, token, position):
        """Write TOKEN_IN and POSITION, clear the flags, pulse start."""
        self.regs.TOKEN_IN = token
        self.regs.POSITION = position
        self.regs.ERROR = 0xFFFF_FFFF
        self.regs.IRQ_STATUS = 0xFFFF_FFFF
        self.regs.CONTROL.start = 1

    def finish(self, *, timeout_s=60.0, polls=None):
        """Wait for the token (``STATUS.done``), then ``(token, logits)``.

        Raises
        ------
        TokenError
            If an ERROR flag is set (the flags and ERROR_ADDR in the message), or the
            token did not end in ``timeout_s`` seconds (or ``polls`` reads).
        """
        wait_done(self.regs, self.wait, TokenError, "token", timeout_s=timeout_s, polls=polls)
        return self.regs.TOKEN.value, self.logits()

    def run(self, token, position, **kwargs):
        """One token: :meth:`start` and :meth:`finish`."""
        self.start(token, position)
        return self.finish(**kwargs)

    def logits(self):
        """The last token's logits (signed ints) from LOGITS_BASE."""
        raw = self.memory.read(self.regs.base("LOGITS"), LOGIT_BYTES * self.vocab)
        return [int.from_bytes(raw[i:i + LOGIT_BYTES], "little", signed=True)
                for i in range(0, len(raw), LOGIT_BYTES)]


class DevMemMemory:
    """DRAM through ``/dev/mem`` (root; a region reserved from Linux), ``write(addr,
    data)`` and ``read(addr, length)`` at physical addresses in ``[base, base + size)``.

    Untested on hardware: written from the Linux ``/dev/mem`` interface. The PL reads
    DRAM through an HP port, which on a Zynq UltraScale+ is not coherent with the CPU's
    caches: map the region uncached (``O_SYNC``, as here) or flush.
    """

    def __init__(self, base, size, path="/dev/mem"):
        page = mmap.PAGESIZE
        if base % page:
            raise ValueError(f"base {base:#x} is not page-aligned")
        self.base, self.size = base, size
        self.fd = os.open(path, os.O_RDWR | os.O_SYNC)
        try:
            self.map = mmap.mmap(self.fd, size, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE, offset=base)
        except OSError:
            os.close(self.fd)
            raise

    def _at(self, addr, length):
        if not (self.base <= addr and addr + length <= self.base + self.size):
            raise ValueError(f"{addr:#x}+{length} is outside the mapped region")
        return addr - self.base

    def write(self, addr, data):
        at = self._at(addr, len(data))
        self.map[at:at + len(data)] = bytes(data)

    def read(self, addr, length):
        at = self._at(addr, length)
        return bytes(self.map[at:at + length])

    def close(self):
        self.map.close()
        os.close(self.fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
