"""The accelerator's register map, defined once: what the host sees behind the AXI4-Lite
slave (:class:`ternary_accel.hw.rtl.axi_lite.RegisterFile`), and what the C header, the
Python constants, the Markdown page (``docs/registers.md``) and the driver
(:mod:`ternary_accel.hw.driver`) are generated from (``ternary-accel regmap``).

Plain Python (no Amaranth): 32-bit registers at byte addresses, each a list of fields
with an access type (:data:`ACCESS`) and a reset value.

- ``RO``: read-only; the value comes from the hardware (an input of the register file), or
  for a *constant* field from the build (the identification registers: the engine's and
  the model's sizes the core was built for). Writes are ignored.
- ``RW``: read-write; the register file drives the value to the hardware.
- ``W1C``: a sticky flag, set by a one-cycle pulse from the hardware, cleared by writing 1
  (writing 0 leaves it).
- ``W1P``: write 1 to pulse: the register file raises its output for one cycle; reads 0.

The map is checked when this module is imported (:func:`check`): registers word-aligned
and distinct, fields inside 32 bits and not overlapping, reset values fitting their
fields. The identification check of the driver reads :data:`MAGIC` and
:data:`VERSION` (a different major version is refused; a newer minor is compatible).
"""

from dataclasses import dataclass, field as _field

__all__ = ["Field", "Register", "RegisterMap", "RegisterMapError", "ACCESS", "RO", "RW",
           "W1C", "W1P", "MAGIC", "VERSION", "COUNTER_NAMES", "PACKING_CODES",
           "HEAD_FORMAT_CODES", "CHANNELS", "REGMAP", "check", "stride_bytes",
           "DEFAULT_BUS_BITS", "LAYER_MAGIC", "LAYER_CHANNELS", "LAYER_COUNTERS",
           "LAYER_REGMAP", "REGMAPS", "build_layer_constants", "build_constants"]

RO, RW, W1C, W1P = "RO", "RW", "W1C", "W1P"
#: The access types of a field (module docstring).
ACCESS = (RO, RW, W1C, W1P)

#: The identification word: ``ID.magic`` reads it on every build ("b158", 7e5 = "tes").
MAGIC = 0xB1587E55
#: The map's version ``(major, minor)``: a new major version moves or redefines registers
#: (the driver refuses it); a new minor version only adds registers or fields.
VERSION = (1, 0)

#: The token core's cycle counters in :data:`ternary_accel.hw.program.COUNTERS` order
#: (``tests/hw/test_regmap.py`` checks they are the same).
COUNTER_NAMES = ("sequencer", "LOAD", "NORM", "MATMUL", "ROPE", "KV_WRITE", "ATTEND",
                 "ELEMENTWISE", "HEAD")
#: ``ENGINE_PORT.packing``: the weight port's packing by code
#: (:data:`ternary_accel.model.encoding.PACKINGS`).
PACKING_CODES = ("base3", "3in5", "2bit")
#: ``ENGINE_PORT.head_format``: the LM head's format by code
#: (:data:`ternary_accel.model.hwnum.HEAD_FORMATS`).
HEAD_FORMAT_CODES = ("int8", "trit5", "grouped")
#: The memory channels with a base address in DRAM, and what each holds.
CHANNELS = {
    "PROG": "the program (instruction words)",
    "VEC": "the embedding and the norms' gains (32-bit words)",
    "WGT": "the projections' weights (the engine's port words)",
    "HEAD": "the LM head (its row tiles)",
    "KV": "the KV cache (entries: codes and factor; read and written)",
    "LOGITS": "the logits the core streams out (residual-format words)",
}
#: Data width of the DRAM bus the channels' words are laid on (the AXI4 masters).
DEFAULT_BUS_BITS = 64


class RegisterMapError(ValueError):
    """The register map is inconsistent (an overlap, a field too wide, a bad access)."""


@dataclass(frozen=True)
class Field:
    """A field of a register.

    Parameters
    ----------
    name : str
        A lower-case identifier (the driver's attribute, the register file's port).
    lsb : int
        Its least significant bit.
    width : int
        Its bits.
    access : str
        One of :data:`ACCESS`.
    reset : int
        Its value after reset (for a constant field, the value unless the build sets it).
    description : str
    constant : bool
        An ``RO`` field fixed when the design is built (no hardware input).
    """

    name: str
    lsb: int
    width: int
    access: str
    reset: int = 0
    description: str = ""
    constant: bool = False

    @property
    def msb(self):
        """Its most significant bit."""
        return self.lsb + self.width - 1

    @property
    def mask(self):
        """The field's bits in the register (``(2**width - 1) << lsb``)."""
        return ((1 << self.width) - 1) << self.lsb

    def bits(self):
        """``"7:0"`` or ``"3"``: the field's bits as the documentation writes them."""
        return str(self.lsb) if self.width == 1 else f"{self.msb}:{self.lsb}"


@dataclass(frozen=True)
class Register:
    """A 32-bit register at byte address ``offset``, made of ``fields``."""

    name: str
    offset: int
    fields: tuple
    description: str = ""

    def __post_init__(self):
        object.__setattr__(self, "fields", tuple(self.fields))

    @property
    def reset(self):
        """The register's value after reset."""
        value = 0
        for f in self.fields:
            value |= f.reset << f.lsb
        return value

    def mask(self, *access):
        """The bits of the fields with one of ``access`` (every field's bits if none)."""
        value = 0
        for f in self.fields:
            if not access or f.access in access:
                value |= f.mask
        return value

    def field(self, name):
        """The field called ``name``."""
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"register {self.name} has no field {name!r} (it has "
                       f"{', '.join(f.name for f in self.fields)})")

    @property
    def access(self):
        """``RO``, ``RW``, ``W1C``, ``W1P`` or ``mixed``: its fields' access."""
        kinds = {f.access for f in self.fields}
        return kinds.pop() if len(kinds) == 1 else "mixed"


@dataclass(frozen=True)
class RegisterMap:
    """The registers of a slave, by offset; ``map["CONTROL"]`` is a register by name."""

    name: str
    registers: tuple
    version: tuple = VERSION
    magic: int = MAGIC
    description: str = ""
    span: int = 0x1000
    by_name: dict = _field(init=False, repr=False, compare=False)

    def __post_init__(self):
        regs = tuple(sorted(self.registers, key=lambda r: r.offset))
        object.__setattr__(self, "registers", regs)
        object.__setattr__(self, "by_name", {r.name: r for r in regs})
        check(self)

    def __getitem__(self, name):
        try:
            return self.by_name[name]
        except KeyError:
            raise KeyError(f"no register {name!r} in the map") from None

    def __iter__(self):
        return iter(self.registers)

    def __len__(self):
        return len(self.registers)

    def at(self, offset):
        """The register at byte address ``offset``, or None."""
        for r in self.registers:
            if r.offset == offset:
                return r
        return None

    def field(self, path):
        """``(register, field)`` of ``"REG.field"``."""
        reg_name, _, field_name = path.partition(".")
        reg = self[reg_name]
        return reg, reg.field(field_name)

    @property
    def addr_bits(self):
        """Address bits of the slave's window (:attr:`span` bytes)."""
        return (self.span - 1).bit_length()


def check(regmap):
    """Raise :class:`RegisterMapError` unless ``regmap`` is consistent (module docstring)."""
    seen_names, seen_offsets = set(), {}
    for reg in regmap.registers:
        where = f"register {reg.name}"
        if not reg.name.isidentifier() or reg.name != reg.name.upper():
            raise RegisterMapError(f"{where}: the name must be an upper-case identifier")
        if reg.name in seen_names:
            raise RegisterMapError(f"{where}: defined twice")
        seen_names.add(reg.name)
        if reg.offset % 4 or not 0 <= reg.offset < regmap.span:
            raise RegisterMapError(f"{where}: offset {reg.offset:#x} is not a word address "
                                   f"inside the {regmap.span:#x}-byte window")
        if reg.offset in seen_offsets:
            raise RegisterMapError(f"{where}: offset {reg.offset:#x} overlaps register "
                                   f"{seen_offsets[reg.offset]}")
        seen_offsets[reg.offset] = reg.name
        if not reg.fields:
            raise RegisterMapError(f"{where}: no fields")
        used, names = 0, set()
        for f in reg.fields:
            at = f"{where} field {f.name}"
            if not f.name.isidentifier() or f.name != f.name.lower():
                raise RegisterMapError(f"{at}: the name must be a lower-case identifier")
            if f.name in names:
                raise RegisterMapError(f"{at}: defined twice")
            names.add(f.name)
            if f.access not in ACCESS:
                raise RegisterMapError(f"{at}: access must be one of {', '.join(ACCESS)}, "
                                       f"not {f.access!r}")
            if f.width < 1 or f.lsb < 0 or f.msb > 31:
                raise RegisterMapError(f"{at}: bits {f.msb}:{f.lsb} are outside 31:0")
            if used & f.mask:
                raise RegisterMapError(f"{at}: bits {f.bits()} overlap another field")
            used |= f.mask
            if not 0 <= f.reset < (1 << f.width):
                raise RegisterMapError(f"{at}: reset value {f.reset:#x} does not fit "
                                       f"{f.width} bits")
            if f.constant and f.access != RO:
                raise RegisterMapError(f"{at}: a constant field must be RO, not {f.access}")
            if f.access == W1P and f.reset:
                raise RegisterMapError(f"{at}: a W1P field resets to 0 (it reads 0)")
    return regmap


def stride_bytes(word_bits, bus_bits=DEFAULT_BUS_BITS):
    """A channel word's stride in DRAM: ``word_bits`` rounded up to whole bus words, in
    bytes (a 318-bit instruction on a 64-bit bus: 40 bytes)."""
    if word_bits < 1 or bus_bits < 8 or bus_bits % 8:
        raise ValueError(f"word_bits must be positive and bus_bits a multiple of 8, not "
                         f"{word_bits} and {bus_bits}")
    return -(-word_bits // bus_bits) * bus_bits // 8


def _value(name, offset, field_name, description, *, access=RO, width=32, reset=0,
           constant=False, fdesc=None):
    """A register of one full-width field."""
    return Register(name, offset, (Field(field_name, 0, width, access, reset,
                                         fdesc or description, constant),), description)


def _const(name, lsb, width, description, reset=0):
    return Field(name, lsb, width, RO, reset, description, constant=True)


def _identification(magic=MAGIC):
    """ID, VERSION and ENGINE (the engine's shape): the first registers of every map."""
    return [
        _value("ID", 0x000, "magic", f"identification: reads {magic:#010x} on every build",
               reset=magic, constant=True),
        Register("VERSION", 0x004, (
            _const("minor", 0, 16, "the map's minor version (registers added)", VERSION[1]),
            _const("major", 16, 16, "the map's major version (registers moved)", VERSION[0]),
        ), "version of this register map"),
        Register("ENGINE", 0x008, (
            _const("lanes", 0, 16, "the engine's lanes (inputs summed a cycle a row)"),
            _const("rows", 16, 16, "the engine's rows (outputs a cycle)"),
        ), "the layer engine's shape"),
    ]


def _port_fields():
    """ENGINE_PORT's weight port fields (bits 19:0) of every map."""
    return (_const("weight_port_bits", 0, 16, "bits of the weight port (a WGT word)"),
            _const("packing", 16, 4, "the weight port's packing: "
                   + ", ".join(f"{i} {p}" for i, p in enumerate(PACKING_CODES))))


def _control(job, start, extra_errors=()):
    """CONTROL, STATUS, ERROR (``extra_errors`` in its low byte, then the bus's and the
    start's flags), ERROR_ADDR_LO/HI, IRQ_STATUS and IRQ_ENABLE at 0x040..0x058, for a
    core that runs one ``job`` (a token, a layer) a start."""
    return [
        Register("CONTROL", 0x040, (
            Field("start", 0, 1, W1P, 0, f"write 1: {start}; while busy the start is "
                  "refused and ERROR.start_busy set"),
            Field("soft_reset", 1, 1, W1P, 0, "write 1: reset the core and the DMA "
                  "(the registers keep their values)"),
            Field("irq_enable", 8, 1, RW, 0, "the interrupt line's global enable"),
        ), "control"),
        Register("STATUS", 0x044, (
            Field("busy", 0, 1, RO, 0, f"a {job} is running"),
            Field("done", 1, 1, RO, 0, f"a {job} has finished since the last start "
                  "(its results and the counters are valid)"),
        ), "status"),
        Register("ERROR", 0x048, (
            *extra_errors,
            Field("read_error", 8, 1, W1C, 0, "a DMA read answered SLVERR or DECERR "
                  "(ERROR_ADDR holds its address)"),
            Field("write_error", 9, 1, W1C, 0, "a DMA write answered SLVERR or DECERR "
                  "(ERROR_ADDR holds its address)"),
            Field("start_busy", 16, 1, W1C, 0, "CONTROL.start was written while busy "
                  "(the start was ignored)"),
        ), "sticky error flags: write 1 to clear"),
        _value("ERROR_ADDR_LO", 0x04C, "addr", "the failing DMA address, bits 31:0"),
        _value("ERROR_ADDR_HI", 0x050, "addr", "the failing DMA address, bits 63:32"),
        Register("IRQ_STATUS", 0x054, (
            Field("done", 0, 1, W1C, 0, f"a {job} finished"),
            Field("error", 1, 1, W1C, 0, "an ERROR flag was set"),
        ), "interrupt causes: write 1 to clear; the line is CONTROL.irq_enable and "
           "any cause set and enabled"),
        Register("IRQ_ENABLE", 0x058, (
            Field("done", 0, 1, RW, 0, f"interrupt when a {job} finishes"),
            Field("error", 1, 1, RW, 0, "interrupt when an ERROR flag is set"),
        ), "interrupt causes enabled"),
    ]


def _channels(channels):
    """``<NAME>_BASE_LO/HI`` at 0x100 and ``<NAME>_STRIDE`` at 0x140 of ``channels``
    (``{name: what it holds}``)."""
    regs = []
    for i, (name, holds) in enumerate(channels.items()):
        for half, bits in (("LO", "31:0"), ("HI", "63:32")):
            regs.append(_value(f"{name}_BASE_{half}", 0x100 + 8 * i + 4 * (half == "HI"),
                               "addr", f"{name} base address in DRAM, bits {bits}: "
                               f"{holds}", access=RW))
    for i, name in enumerate(channels):
        regs.append(_value(f"{name}_STRIDE", 0x140 + 4 * i, "bytes",
                           f"bytes between two {name} words in DRAM (the word rounded up "
                           f"to the bus width)", constant=True))
    return regs


def _registers():
    regs = [
        *_identification(),
        Register("ENGINE_PORT", 0x00C, (
            *_port_fields(),
            _const("head_format", 20, 4, "the LM head's format: "
                   + ", ".join(f"{i} {p}" for i, p in enumerate(HEAD_FORMAT_CODES))),
            _const("head_rows", 24, 8, "rows of the LM head unit"),
        ), "the weight port and the LM head unit"),
        _value("MODEL_HIDDEN", 0x010, "hidden", "the model's hidden size the core was built for",
               constant=True),
        _value("MODEL_FFN", 0x014, "ffn", "the model's feed-forward size", constant=True),
        Register("MODEL_LAYERS", 0x018, (
            _const("layers", 0, 16, "decoder layers"),
            _const("head_dim", 16, 16, "elements of an attention head"),
        ), "the model's layers and head size"),
        Register("MODEL_HEADS", 0x01C, (
            _const("heads", 0, 16, "query heads"),
            _const("kv_heads", 16, 16, "key/value heads"),
        ), "the model's attention heads"),
        _value("MODEL_VOCAB", 0x020, "vocab", "the vocabulary (token ids 0 .. vocab - 1)",
               constant=True),
        _value("MODEL_POSITIONS", 0x024, "positions",
               "positions the KV region holds (POSITION is below it)", constant=True),
        *_control("token", "run a token (TOKEN_IN at POSITION)", extra_errors=(
            Field("opcode", 0, 1, W1C, 0, "an instruction with an unknown op (the program "
                  "stopped there)"),
            Field("norm", 1, 1, W1C, 0, "the fused norm refused a vector longer than its "
                  "buffer"),
            Field("attention", 2, 1, W1C, 0, "the attention unit refused a row longer than "
                  "its buffer"),
            Field("engine", 3, 1, W1C, 0, "the engine received an invalid weight code or "
                  "overflowed"),
        )),
        # -- the token -----------------------------------------------------------------
        _value("TOKEN_IN", 0x060, "value", "the token id the next start runs", access=RW),
        _value("POSITION", 0x064, "value", "its position (0 .. MODEL_POSITIONS - 1)",
               access=RW),
        _value("TOKEN", 0x068, "value", "the last token's argmax (the next token id)"),
    ]
    # -- cycle counters ---------------------------------------------------------------
    for i, name in enumerate(COUNTER_NAMES):
        what = ("the sequencer's cycles (fetch, decode, set-up of every instruction)"
                if name == "sequencer" else f"cycles of the {name} operations")
        regs.append(_value(f"CYCLES_{name.upper()}", 0x080 + 4 * i, "value",
                           f"{what}, last token"))
    after = 0x080 + 4 * len(COUNTER_NAMES)
    regs.append(_value("CYCLES_TOTAL", after, "value", "cycles from start to done, "
                       "last token"))
    regs.append(_value("CYCLES_STALL", after + 4, "value", "cycles of the last token in "
                       "which the core waited on a memory channel (the DMA)"))
    regs += _channels(CHANNELS)
    return regs


#: The accelerator's register map.
REGMAP = RegisterMap(
    "ternary_accel", tuple(_registers()),
    description="the token core's control plane: identification, control, status, "
                "errors, interrupts, the token, cycle counters, the memory channels' "
                "DRAM layout")


#: The layer system's identification word (its map is :data:`LAYER_REGMAP`).
LAYER_MAGIC = 0xB1587E1A
#: The layer system's memory channels: a base address in DRAM each, and what it holds.
LAYER_CHANNELS = {
    "ACT": "the activations: int8 codes, one word a beat of `lanes` features, (beat, "
           "token) order",
    "SCALE": "the output stage's scale (bits 15:0) and shift (21:16), a word a token",
    "WGT": "the weights: the engine's port words, (row tile, beat, word) order",
    "OUT": "the results: a word of `rows` signed 16-bit outputs per (token, row tile), "
           "(token, tile) order",
}
#: The layer system's cycle counters (``CYCLES_<name>``).
LAYER_COUNTERS = {
    "LOAD": "cycles from the start to the last activation and scale on chip",
    "RUN": "cycles from the end of the load to the last result handed to the DMA",
    "TOTAL": "cycles from start to done",
    "STALL": "cycles of the run in which the engine waited for a weight word (the DMA "
             "had none)",
}


def _layer_registers():
    regs = [
        *_identification(LAYER_MAGIC),
        Register("ENGINE_PORT", 0x00C, _port_fields(), "the weight port"),
        Register("ENGINE_LIMITS", 0x010, (
            _const("max_tokens", 0, 16, "T: the most tokens a layer run takes (weight "
                   "reuse: each weight word serves them all)"),
            _const("max_beats", 16, 16, "the most beats of a dot product (in_features / "
                   "lanes)"),
        ), "the engine's limits"),
        _value("ACT_WORDS", 0x014, "words", "words of the activation buffer: tokens x "
               "beats is at most this", constant=True),
        *_control("layer", "run the layer described by LAYER_SHAPE and LAYER_TOKENS",
                  extra_errors=(
            Field("engine", 3, 1, W1C, 0, "the engine received an invalid weight code or "
                  "overflowed"),
            Field("shape", 4, 1, W1C, 0, "the start was refused: a zero or too large "
                  "LAYER_SHAPE or LAYER_TOKENS (see ENGINE_LIMITS and ACT_WORDS)"),
            Field("align", 5, 1, W1C, 0, "the start was refused: a base address not "
                  "aligned to the bus width"),
        )),
        Register("LAYER_SHAPE", 0x060, (
            Field("beats", 0, 16, RW, 0, "beats of the dot product: in_features / lanes"),
            Field("tiles", 16, 16, RW, 0, "row tiles: out_features / rows"),
        ), "the layer's shape"),
        _value("LAYER_TOKENS", 0x064, "value", "tokens of the layer (1 .. max_tokens)",
               access=RW),
    ]
    for i, (name, what) in enumerate(LAYER_COUNTERS.items()):
        regs.append(_value(f"CYCLES_{name}", 0x080 + 4 * i, "value", f"{what}, last layer"))
    return regs + _channels(LAYER_CHANNELS)


#: The layer system's register map (:class:`~ternary_accel.hw.rtl.layer_system.LayerSystem`).
LAYER_REGMAP = RegisterMap(
    "ternary_accel_layer", tuple(_layer_registers()), magic=LAYER_MAGIC,
    description="the layer system's control plane: identification, control, status, "
                "errors, interrupts, the layer's shape, cycle counters, the memory "
                "channels' DRAM layout")
#: The register maps by the name ``ternary-accel regmap --map`` takes.
REGMAPS = {"token": REGMAP, "layer": LAYER_REGMAP}


def build_layer_constants(params, act_words, word_bits, *, bus_bits=DEFAULT_BUS_BITS):
    """The constant fields' values of a layer system.

    Parameters
    ----------
    params : hw.params.EngineParams
        The engine's parameters.
    act_words : int
        Words of the activation buffer.
    word_bits : dict
        Bits of each channel's word (``{"act", "scale", "wgt", "out"}``).
    bus_bits : int
        The DRAM bus's data width.

    Returns
    -------
    dict
        ``{"REG.field": value}``, each checked against its field's width.
    """
    values = {
        "ENGINE.lanes": params.lanes, "ENGINE.rows": params.rows,
        "ENGINE_PORT.weight_port_bits": word_bits["wgt"],
        "ENGINE_PORT.packing": PACKING_CODES.index(params.effective_packing),
        "ENGINE_LIMITS.max_tokens": params.tokens,
        "ENGINE_LIMITS.max_beats": params.max_beats,
        "ACT_WORDS.words": act_words,
    }
    for name in LAYER_CHANNELS:
        values[f"{name}_STRIDE.bytes"] = stride_bytes(word_bits[name.lower()], bus_bits)
    return _checked(values, LAYER_REGMAP)


def build_constants(program, word_bits, *, bus_bits=DEFAULT_BUS_BITS, regmap=REGMAP):
    """The constant fields' values for a token core built from ``program``.

    Parameters
    ----------
    program : hw.program.TokenProgram
        The program the core is sized for (its engine, numerics, configuration,
        positions and LM head rows).
    word_bits : dict
        Bits of each channel's word, ``{"prog", "vec", "wgt", "kv", "head"}``
        (``TokenCore.word_bits``); LOGITS' is the residual format's.
    bus_bits : int
        The DRAM bus's data width (the channels' strides are whole bus words).

    Returns
    -------
    dict
        ``{"REG.field": value}`` for :class:`~ternary_accel.hw.rtl.axi_lite.RegisterFile`'s
        ``constants``; each value is checked against its field's width.
    """
    p, n, c = program.params, program.numerics, program.config
    packing = p.effective_packing
    values = {
        "ENGINE.lanes": p.lanes, "ENGINE.rows": p.rows,
        "ENGINE_PORT.weight_port_bits": p.weight_port_bits or word_bits["wgt"],
        "ENGINE_PORT.packing": PACKING_CODES.index(packing),
        "ENGINE_PORT.head_format": HEAD_FORMAT_CODES.index(n.head),
        "ENGINE_PORT.head_rows": program.head_rows,
        "MODEL_HIDDEN.hidden": c.hidden, "MODEL_FFN.ffn": c.ffn,
        "MODEL_LAYERS.layers": c.layers, "MODEL_LAYERS.head_dim": c.head_dim,
        "MODEL_HEADS.heads": c.heads, "MODEL_HEADS.kv_heads": c.kv_heads,
        "MODEL_VOCAB.vocab": c.vocab, "MODEL_POSITIONS.positions": program.positions,
    }
    bits = {**{k.upper(): v for k, v in word_bits.items()}, "LOGITS": n.resid_bits}
    for name in CHANNELS:
        values[f"{name}_STRIDE.bytes"] = stride_bytes(bits[name], bus_bits)
    return _checked(values, regmap)


def _checked(values, regmap):
    """``values`` after checking each fits its field of ``regmap``."""
    for path, value in values.items():
        _, f = regmap.field(path)
        if not 0 <= value < (1 << f.width):
            raise RegisterMapError(f"{path} = {value} does not fit its {f.width} bits")
    return values
