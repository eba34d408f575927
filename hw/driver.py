"""The host driver's register layer: named access to the accelerator's registers
(:data:`ternary_accel.hw.regmap.REGMAP`) over any backend with ``read32(addr)`` and
``write32(addr, value)``.

>>> regs = Registers(RegisterModel())       # a backend: here the map's Python model
>>> regs.TOKEN_IN = 17                      # a whole register
>>> regs.CONTROL.irq_enable = 1             # a field: the register's other RW fields kept
>>> regs.CONTROL.start = 1                  # a W1P field: only its bit is written
>>> regs.ID.magic == REGMAP.magic, regs.TOKEN_IN.value
(True, 17)

Writing a field writes the register once: the field's new value, the register's other
``RW`` fields as read, and 0 in its other ``W1C`` and ``W1P`` fields (so setting one field
never clears a flag or pulses a start by accident). A ``RO`` field refuses a write.

Backends: :class:`MmapBackend` (``/dev/mem`` or a UIO device on a Zynq or Kria board;
written from the Linux interfaces' documentation, untested on hardware),
:class:`RegisterModel` (the map's behaviour in Python, for tests), and the cocotb bench's
(``sim/tb/axi_lite.py``: an ``AxiLiteMaster`` behind ``cocotb``'s bridge).

Plain Python: it imports nothing but :mod:`ternary_accel.hw.regmap` (no NumPy, no
Amaranth), so it runs on a board's small Python.
"""

import mmap
import os

from ternary_accel.hw.regmap import (COUNTER_NAMES, HEAD_FORMAT_CODES,
                                     PACKING_CODES, REGMAP, RO, RW, W1C, W1P)

__all__ = ["Registers", "RegisterView", "IdentificationError", "MmapBackend",
           "RegisterModel", "BusError"]


class IdentificationError(RuntimeError):
    """The device is not this accelerator, or its register map is of another version."""


class BusError(RuntimeError):
    """The bus answered an access with an error (SLVERR or DECERR)."""


class RegisterView:
    """One register of a :class:`Registers`: its fields as attributes."""

    __slots__ = ("_regs", "_reg")

    def __init__(self, regs, reg):
        object.__setattr__(self, "_regs", regs)
        object.__setattr__(self, "_reg", reg)

    @property
    def register(self):
        """The :class:`~ternary_accel.hw.regmap.Register`."""
        return self._reg

    def read(self):
        """The register's word."""
        return self._regs.read(self._reg.name)

    def write(self, value):
        """Write the whole word (every field's access applies: W1C clears, W1P pulses)."""
        self._regs.write(self._reg.name, value)

    def fields(self):
        """``{field: value}`` from one read."""
        word = self.read()
        return {f.name: (word & f.mask) >> f.lsb for f in self._reg.fields}

    def __getattr__(self, name):
        try:
            f = self._reg.field(name)
        except KeyError as error:
            raise AttributeError(error.args[0]) from None
        return (self.read() & f.mask) >> f.lsb

    def __setattr__(self, name, value):
        try:
            f = self._reg.field(name)
        except KeyError as error:
            raise AttributeError(error.args[0]) from None
        where = f"{self._reg.name}.{name}"
        if f.access == RO:
            raise AttributeError(f"{where} is read-only")
        value = int(value)
        if not 0 <= value < (1 << f.width):
            raise ValueError(f"{where} takes 0 .. {(1 << f.width) - 1}, not {value}")
        others = self._reg.mask(RW) & ~f.mask
        word = self.read() & others if others else 0
        self._regs.write(self._reg.name, word | (value << f.lsb))

    def __repr__(self):
        fields = ", ".join(f"{k}={v:#x}" for k, v in self.fields().items())
        return f"<{self._reg.name} @{self._reg.offset:#05x}: {fields}>"


class Registers:
    """The accelerator's registers over ``backend``, by name.

    Parameters
    ----------
    backend : object
        ``read32(addr) -> int`` and ``write32(addr, value)`` at byte offsets from the
        slave's base.
    regmap : hw.regmap.RegisterMap
    check : bool
        Check the identification first (:meth:`check_id`).

    ``regs.NAME`` is a :class:`RegisterView` (``regs.CONTROL.start = 1``,
    ``regs.ENGINE.lanes``); ``regs.NAME = value`` writes the whole register.
    """

    def __init__(self, backend, regmap=REGMAP, *, check=True):
        object.__setattr__(self, "backend", backend)
        object.__setattr__(self, "regmap", regmap)
        if check:
            self.check_id()

    def read(self, name):
        """The word of register ``name``."""
        return self.backend.read32(self.regmap[name].offset) & 0xFFFF_FFFF

    def write(self, name, value):
        """Write the word ``value`` to register ``name``."""
        reg = self.regmap[name]
        if reg.access == RO:
            raise AttributeError(f"{name} is read-only")
        value = int(value)
        if not 0 <= value <= 0xFFFF_FFFF:
            raise ValueError(f"{name} takes a 32-bit word, not {value}")
        self.backend.write32(reg.offset, value)

    def __getattr__(self, name):
        if name.isupper() and name in self.regmap.by_name:
            return RegisterView(self, self.regmap[name])
        raise AttributeError(f"no register {name!r} in the map")

    def __setattr__(self, name, value):
        if name in self.regmap.by_name:
            self.write(name, value)
        else:
            raise AttributeError(f"no register {name!r} in the map")

    def __dir__(self):
        return [*super().__dir__(), *self.regmap.by_name]

    # -- identification -------------------------------------------------------------------
    def check_id(self):
        """Read the identification and return it (:meth:`identification`).

        Raises
        ------
        IdentificationError
            The magic word is not :data:`~ternary_accel.hw.regmap.MAGIC` (not this
            device, or the bus reads something else), or the map's major version is not
            the driver's, or its minor version is older than the driver's.
        """
        magic = self.read("ID")
        if magic != self.regmap.magic:
            raise IdentificationError(
                f"no ternary accelerator here: ID reads {magic:#010x}, expected "
                f"{self.regmap.magic:#010x} (wrong base address or device?)")
        version = self.VERSION.fields()
        major, minor = self.regmap.version
        if version["major"] != major or version["minor"] < minor:
            raise IdentificationError(
                f"register map version {version['major']}.{version['minor']} on the device, "
                f"the driver needs {major}.{minor} or a newer {major}.x")
        return self.identification()

    def identification(self):
        """The build's sizes: every constant field of the map by name (the token map's:
        ``{version, lanes, rows, weight_port_bits, packing, head_format, head_rows,
        hidden, ffn, layers, head_dim, heads, kv_heads, vocab, positions}``; the layer
        map's: ``{version, lanes, rows, weight_port_bits, packing, max_tokens,
        max_beats, words}``), codes named, and ``strides: {channel: bytes}``."""
        info, strides = {}, {}
        for reg in self.regmap:
            if reg.name == "ID" or not all(f.constant for f in reg.fields):
                continue
            if reg.name.endswith("_STRIDE"):
                strides[reg.name[:-len("_STRIDE")]] = self.read(reg.name)
            else:
                info.update(getattr(self, reg.name).fields())
        info["version"] = (info.pop("major"), info.pop("minor"))
        info["packing"] = _code(PACKING_CODES, info["packing"])
        if "head_format" in info:
            info["head_format"] = _code(HEAD_FORMAT_CODES, info["head_format"])
        info["strides"] = strides
        return info

    # -- helpers ---------------------------------------------------------------------------
    def set_base(self, channel, address):
        """Write channel ``channel``'s (``"PROG"``, ``"KV"``...) 64-bit DRAM base address."""
        if not 0 <= address < 1 << 64:
            raise ValueError(f"{channel} base takes a 64-bit address, not {address}")
        self.write(f"{channel}_BASE_LO", address & 0xFFFF_FFFF)
        self.write(f"{channel}_BASE_HI", address >> 32)

    def base(self, channel):
        """Channel ``channel``'s DRAM base address."""
        return self.read(f"{channel}_BASE_LO") | self.read(f"{channel}_BASE_HI") << 32

    def cycles(self):
        """``{counter: cycles}`` of the last token (``hw.program.COUNTERS`` order), with
        ``total`` and ``stall``."""
        names = [*COUNTER_NAMES, "total", "stall"]
        return {n: self.read(f"CYCLES_{n.upper()}") for n in names}

    def errors(self):
        """The ERROR flags that are set, by name."""
        return [name for name, value in self.ERROR.fields().items() if value]


def _code(codes, value):
    return codes[value] if value < len(codes) else value


class MmapBackend:
    """The registers through ``mmap`` of a Linux device: a UIO device (``/dev/uioN``, map
    ``index``) or ``/dev/mem`` at the slave's physical ``base`` (root, and a kernel
    without ``CONFIG_STRICT_DEVMEM`` for the PL's addresses).

    Untested on hardware: written from the Linux UIO and ``/dev/mem`` interfaces; on a
    Zynq UltraScale+ (Kria KV260) the slave sits on an HPM port (e.g. ``0xA000_0000``).
    Each access is one aligned 32-bit load or store (through a ``memoryview`` of
    unsigned ints).

    Parameters
    ----------
    path : str
        ``"/dev/uio0"`` or ``"/dev/mem"``.
    base : int
        With ``/dev/mem``: the slave's physical address (page-aligned).
    span : int
        Bytes mapped (the register map's window).
    index : int
        With UIO: the map number (its offset is ``index`` pages).
    """

    def __init__(self, path="/dev/uio0", *, base=0, span=REGMAP.span, index=0):
        page = mmap.PAGESIZE
        if "uio" in os.path.basename(path):
            offset = index * page
        else:
            if base % page:
                raise ValueError(f"base {base:#x} is not a multiple of the page size "
                                 f"({page:#x})")
            offset = base
        self.fd = os.open(path, os.O_RDWR | os.O_SYNC)
        try:
            self.map = mmap.mmap(self.fd, span, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE, offset=offset)
        except OSError:
            os.close(self.fd)
            raise
        self.words = memoryview(self.map).cast("I")

    def read32(self, addr):
        return self.words[addr >> 2]

    def write32(self, addr, value):
        self.words[addr >> 2] = value

    def close(self):
        """Unmap and close the device."""
        self.words.release()
        self.map.close()
        os.close(self.fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RegisterModel:
    """The register file's behaviour in Python (a backend): RW stored, W1C cleared by a 1
    and set by :meth:`set_flag`, W1P reading 0 (its pulses recorded in :attr:`pulses`),
    RO fields from :attr:`inputs` (or constants), an unmapped address a :class:`BusError`.

    Parameters
    ----------
    regmap : hw.regmap.RegisterMap
    constants : dict, optional
        ``{"REG.field": value}`` of constant fields (as for the RTL ``RegisterFile``).
    """

    def __init__(self, regmap=REGMAP, constants=None):
        self.regmap = regmap
        self.constants = dict(constants or {})
        self.stored = {r.name: r.reset & r.mask(RW, W1C) for r in regmap}
        #: ``{"REG.field": value}`` of the RO fields the hardware drives.
        self.inputs = {}
        #: ``["REG.field"]`` of every pulse, in order.
        self.pulses = []

    def _reg(self, addr):
        reg = self.regmap.at(addr & ~3)
        if reg is None:
            raise BusError(f"SLVERR: no register at {addr:#x}")
        return reg

    def read32(self, addr):
        reg = self._reg(addr)
        word = self.stored[reg.name]
        for f in reg.fields:
            path = f"{reg.name}.{f.name}"
            if f.constant:
                word |= self.constants.get(path, f.reset) << f.lsb
            elif f.access == RO:
                word |= (self.inputs.get(path, 0) & ((1 << f.width) - 1)) << f.lsb
        return word

    def write32(self, addr, value, strobe=0xF):
        reg = self._reg(addr)
        mask = sum(0xFF << 8 * i for i in range(4) if strobe >> i & 1)
        value &= mask
        rw, w1c = reg.mask(RW) & mask, reg.mask(W1C)
        self.stored[reg.name] = (self.stored[reg.name] & ~rw) | (value & rw)
        self.stored[reg.name] &= ~(value & w1c)
        for f in reg.fields:
            if f.access == W1P and value & f.mask:
                self.pulses.append(f"{reg.name}.{f.name}")

    def set_flag(self, path):
        """The hardware sets W1C field ``"REG.field"`` (all its bits)."""
        reg, f = self.regmap.field(path)
        if f.access != W1C:
            raise ValueError(f"{path} is {f.access}, not W1C")
        self.stored[reg.name] |= f.mask

