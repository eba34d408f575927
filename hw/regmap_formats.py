"""The register map (:mod:`ternary_accel.hw.regmap`) written out for the host's side: a C
header, a Python constants module, a Markdown page (``docs/registers.md``) and JSON
(``ternary-accel regmap --format c|python|markdown|json``). Plain Python.

Every text names its source and says it is generated; the same map always gives the same
text (the test of ``docs/registers.md`` compares them byte for byte).
"""

import json

from ternary_accel.hw.regmap import ACCESS, REGMAP

__all__ = ["FORMATS", "render", "c_header", "python_module", "markdown", "to_dict",
           "json_text", "SUFFIXES"]

_SOURCE = "hw/regmap.py"
_COMMAND = "ternary-accel regmap"


def _version(regmap):
    return f"{regmap.version[0]}.{regmap.version[1]}"


def _prefix(regmap):
    return regmap.name.upper()


def c_header(regmap=REGMAP):
    """A C header: ``#define``\\ s of each register's offset, and each field's shift, mask
    (in place), width and reset value; the magic and the version."""
    p = _prefix(regmap)
    guard = f"{p}_REGS_H"
    lines = [f"/* {regmap.name} register map v{_version(regmap)}: {regmap.description}.",
             f" * Generated from {_SOURCE} by '{_COMMAND} --format c': do not edit.",
             " * Offsets are bytes from the slave's base; registers are 32 bits.",
             " * Access: RO read-only, RW read-write, W1C write 1 to clear,",
             " * W1P write 1 to pulse (reads 0). */",
             f"#ifndef {guard}", f"#define {guard}", "", "#include <stdint.h>", "",
             f"#define {p}_MAGIC 0x{regmap.magic:08X}u",
             f"#define {p}_MAP_VERSION_MAJOR {regmap.version[0]}u",
             f"#define {p}_MAP_VERSION_MINOR {regmap.version[1]}u",
             f"#define {p}_SPAN 0x{regmap.span:X}u", ""]
    for reg in regmap:
        r = f"{p}_{reg.name}"
        lines.append(f"/* {reg.name}: {reg.description} ({reg.access}) */")
        lines.append(f"#define {r} 0x{reg.offset:03X}u")
        lines.append(f"#define {r}_RESET 0x{reg.reset:08X}u")
        for f in reg.fields:
            fname = f"{r}_{f.name.upper()}"
            lines += [f"#define {fname}_SHIFT {f.lsb}u",
                      f"#define {fname}_WIDTH {f.width}u",
                      f"#define {fname}_MASK 0x{f.mask:08X}u",
                      f"#define {fname}_RESET 0x{f.reset:X}u"]
        lines.append("")
    lines += ["/* A field's value in a register's word, and a register's word from it. */",
              f"#define {p}_GET(reg_field, word) "
              f"(((word) & reg_field##_MASK) >> reg_field##_SHIFT)",
              f"#define {p}_SET(reg_field, value) "
              f"(((uint32_t)(value) << reg_field##_SHIFT) & reg_field##_MASK)", "",
              f"#endif /* {guard} */", ""]
    return "\n".join(lines)


def python_module(regmap=REGMAP):
    """A Python module with no imports: ``REG_<NAME>`` offsets, ``<REG>_<FIELD>_SHIFT``,
    ``_MASK`` and ``_WIDTH``, and ``REGISTERS``: ``{name: (offset, {field: (lsb, width,
    access, reset)})}`` for a driver that does not install the package."""
    lines = [f'"""{regmap.name} register map v{_version(regmap)}: {regmap.description}.',
             "",
             f"Generated from {_SOURCE} by '{_COMMAND} --format python': do not edit.",
             '"""', "",
             f"MAGIC = 0x{regmap.magic:08X}",
             f"VERSION = {tuple(regmap.version)!r}",
             f"SPAN = 0x{regmap.span:X}", ""]
    for reg in regmap:
        lines.append(f"# {reg.name}: {reg.description} ({reg.access})")
        lines.append(f"REG_{reg.name} = 0x{reg.offset:03X}")
        for f in reg.fields:
            n = f"{reg.name}_{f.name.upper()}"
            lines += [f"{n}_SHIFT = {f.lsb}", f"{n}_WIDTH = {f.width}",
                      f"{n}_MASK = 0x{f.mask:08X}"]
        lines.append("")
    lines.append("#: ``{register: (offset, {field: (lsb, width, access, reset)})}``.")
    lines.append("REGISTERS = {")
    for reg in regmap:
        fields = ", ".join(f"{f.name!r}: ({f.lsb}, {f.width}, {f.access!r}, 0x{f.reset:X})"
                           for f in reg.fields)
        lines.append(f"    {reg.name!r}: (0x{reg.offset:03X}, {{{fields}}}),")
    lines += ["}", ""]
    return "\n".join(lines)


def _cell(text):
    return str(text).replace("|", "\\|")


def markdown(regmap=REGMAP):
    """The Markdown page: the summary table (offset, register, access, reset, what it
    holds), then every register's fields."""
    lines = ["# Registers" + ("" if regmap.name == "ternary_accel" else
                              f" of {regmap.name}"), "",
             f"<!-- Generated from {_SOURCE} by '{_COMMAND} --format markdown' "
             f"(make regmap): do not edit. -->", "",
             f"The {regmap.name} register map, version {_version(regmap)}: "
             f"{regmap.description}. The AXI4-Lite slave "
             "(`hw/rtl/axi_lite.py`, `RegisterFile`) decodes a "
             f"{regmap.span:#x}-byte window; every register is 32 bits at a byte offset "
             "from its base. An address outside the map answers SLVERR (a write there "
             "changes nothing); every other access answers OKAY. Byte strobes are honoured "
             "bit by bit: a byte whose strobe is low is not written (nor cleared, nor "
             "pulsed).", "",
             "Access: " + ", ".join(f"**{a}** {_ACCESS_TEXT[a]}" for a in ACCESS) + ". "
             "A *build* field is RO and fixed when the design is generated (the sizes the "
             "core was built for; its reset column shows 0 unless the map fixes it).", "",
             "`ternary-accel regmap --format c|python|json` writes the same map as a C "
             "header, a Python constants module or JSON (`make regmap`: under "
             "`build/regmap/`); `hw/driver.py`'s `Registers` gives named field access "
             "(`regs.CONTROL.start = 1`, `regs.ENGINE.lanes`).", "",
             "| offset | register | access | reset | description |",
             "|---|---|---|---|---|"]
    for reg in regmap:
        lines.append(f"| `0x{reg.offset:03X}` | [{reg.name}](#{reg.name.lower()}) | "
                     f"{_access(reg)} | `0x{reg.reset:08X}` | {_cell(reg.description)} |")
    lines.append("")
    lines.append("## Fields")
    for reg in regmap:
        lines += ["", f"### {reg.name}", "",
                  f"`0x{reg.offset:03X}`: {reg.description}.", "",
                  "| bits | field | access | reset | description |",
                  "|---|---|---|---|---|"]
        for f in sorted(reg.fields, key=lambda f: -f.lsb):
            access = "RO (build)" if f.constant else f.access
            lines.append(f"| {f.bits()} | `{f.name}` | {access} | `{f.reset:#x}` | "
                         f"{_cell(f.description)} |")
    lines.append("")
    return "\n".join(lines)


_ACCESS_TEXT = {"RO": "read-only (writes ignored)", "RW": "read-write",
                "W1C": "sticky, set by the hardware, write 1 to clear",
                "W1P": "write 1 to pulse for one cycle (reads 0)"}


def _access(reg):
    kinds = []
    for f in reg.fields:
        kind = "RO (build)" if f.constant else f.access
        if kind not in kinds:
            kinds.append(kind)
    return ", ".join(kinds)


def to_dict(regmap=REGMAP):
    """The map as plain data: ``{name, version, magic, span, registers: [{name, offset,
    reset, description, fields: [{name, lsb, width, access, reset, constant,
    description}]}]}``."""
    return {"name": regmap.name, "version": list(regmap.version), "magic": regmap.magic,
            "span": regmap.span, "description": regmap.description,
            "registers": [{"name": r.name, "offset": r.offset, "reset": r.reset,
                           "description": r.description,
                           "fields": [{"name": f.name, "lsb": f.lsb, "width": f.width,
                                       "access": f.access, "reset": f.reset,
                                       "constant": f.constant,
                                       "description": f.description}
                                      for f in r.fields]}
                          for r in regmap]}


def json_text(regmap=REGMAP):
    """:func:`to_dict` as indented JSON."""
    return json.dumps(to_dict(regmap), indent=2) + "\n"


#: ``--format`` name: the function writing it.
FORMATS = {"c": c_header, "python": python_module, "markdown": markdown,
           "json": json_text}
#: The file suffix of each format (``make regmap``'s files).
SUFFIXES = {"c": ".h", "python": ".py", "markdown": ".md", "json": ".json"}


def render(fmt, regmap=REGMAP):
    """The map as text in ``fmt`` (one of :data:`FORMATS`)."""
    try:
        return FORMATS[fmt](regmap)
    except KeyError:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}") from None
