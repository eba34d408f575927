"""The register map (``hw/regmap.py``): its checks, its agreement with the token core
(counters, packings, head formats, the build's constants), its generated artefacts
(``docs/registers.md`` up to date, the C header compiling, the Python module matching),
the CLI command, and the driver's register layer over the map's Python model."""

import dataclasses
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from cli_runner import invoke, usage_error
from ternary_accel.hw import regmap as R
from ternary_accel.hw.driver import (BusError, IdentificationError, RegisterModel,
                                     Registers)
from ternary_accel.hw.regmap_formats import render

ROOT = Path(__file__).resolve().parents[2]


# -- the map's checks -----------------------------------------------------------------------

def _map(*registers):
    return R.RegisterMap("t", registers)


def test_the_map_is_consistent():
    R.check(R.REGMAP)
    offsets = [r.offset for r in R.REGMAP]
    assert offsets == sorted(set(offsets)) and all(o % 4 == 0 for o in offsets)
    for reg in R.REGMAP:
        used = 0
        for f in reg.fields:
            assert not used & f.mask and f.msb <= 31
            used |= f.mask
    assert R.REGMAP["ID"].reset == R.MAGIC
    assert R.REGMAP["VERSION"].reset == R.VERSION[0] << 16 | R.VERSION[1]


@pytest.mark.parametrize("registers, message", [
    ((R.Register("A", 0, [R.Field("x", 0, 8, R.RW)]),
      R.Register("B", 0, [R.Field("y", 0, 8, R.RW)])), "overlaps register A"),
    ((R.Register("A", 2, [R.Field("x", 0, 8, R.RW)]),), "not a word address"),
    ((R.Register("A", 0x1000, [R.Field("x", 0, 8, R.RW)]),), "not a word address"),
    ((R.Register("A", 0, [R.Field("x", 0, 8, R.RW), R.Field("y", 7, 2, R.RW)]),),
     "field y: bits 8:7 overlap another field"),
    ((R.Register("A", 0, [R.Field("x", 30, 4, R.RW)]),), "bits 33:30 are outside 31:0"),
    ((R.Register("A", 0, [R.Field("x", 0, 4, R.RW, reset=16)]),),
     "reset value 0x10 does not fit 4 bits"),
    ((R.Register("A", 0, [R.Field("x", 0, 4, "RC")]),), "access must be one of"),
    ((R.Register("A", 0, [R.Field("x", 0, 4, R.RW, constant=True)]),),
     "a constant field must be RO"),
    ((R.Register("A", 0, [R.Field("x", 0, 1, R.W1P, reset=1)]),), "W1P field resets to 0"),
    ((R.Register("A", 0, [R.Field("x", 0, 1, R.RW)]),
      R.Register("A", 4, [R.Field("x", 0, 1, R.RW)])), "register A: defined twice"),
    ((R.Register("a", 0, [R.Field("x", 0, 1, R.RW)]),), "upper-case identifier"),
    ((R.Register("A", 0, []),), "no fields"),
])
def test_the_map_refuses_inconsistencies(registers, message):
    with pytest.raises(R.RegisterMapError, match=message):
        _map(*registers)


def test_the_map_agrees_with_the_token_core():
    from ternary_accel.hw.program import COUNTERS
    from ternary_accel.hw.rtl.token import COUNTER_BITS, TokenErrors
    from ternary_accel.model.encoding import PACKINGS
    from ternary_accel.model.hwnum import HEAD_FORMATS
    assert R.COUNTER_NAMES == COUNTERS
    assert R.PACKING_CODES == PACKINGS and R.HEAD_FORMAT_CODES == HEAD_FORMATS
    for name in COUNTERS:
        assert R.REGMAP[f"CYCLES_{name.upper()}"].fields[0].width == COUNTER_BITS
    # every TokenErrors flag has its W1C bit
    flags = {f.name for f in R.REGMAP["ERROR"].fields}
    from amaranth.lib import data
    assert set(data.Layout.cast(TokenErrors).members) <= flags
    assert {"read_error", "write_error", "start_busy"} <= flags


def test_build_constants_of_a_token_core():
    from token_models import micro_decoder
    from ternary_accel.hw.program import make_program, token_engine
    from ternary_accel.hw.rtl.token import TokenCore
    from ternary_accel.model.hwnum import GROUPED_HEAD
    program = make_program(micro_decoder(GROUPED_HEAD),
                           token_engine(8, 4, hidden=32, ffn=64), positions=8, head_rows=2)
    core = TokenCore(program)
    values = R.build_constants(program, core.word_bits, bus_bits=64)
    assert values["ENGINE.lanes"] == 8 and values["ENGINE.rows"] == 4
    assert values["ENGINE_PORT.head_format"] == R.HEAD_FORMAT_CODES.index("grouped")
    assert values["ENGINE_PORT.head_rows"] == 2
    assert values["MODEL_VOCAB.vocab"] == 48 and values["MODEL_POSITIONS.positions"] == 8
    assert values["PROG_STRIDE.bytes"] == 40           # 318 bits on a 64-bit bus
    assert values["VEC_STRIDE.bytes"] == 8
    assert all(values[f"{c}_STRIDE.bytes"] % 8 == 0 for c in R.CHANNELS)
    assert R.build_constants(program, core.word_bits, bus_bits=128)["PROG_STRIDE.bytes"] \
        == 48


def test_stride_bytes():
    assert [R.stride_bytes(b, 64) for b in (1, 32, 64, 65, 318)] == [8, 8, 8, 16, 40]
    assert R.stride_bytes(318, 32) == 40
    with pytest.raises(ValueError, match="multiple of 8"):
        R.stride_bytes(8, 12)


# -- the generated artefacts ----------------------------------------------------------------

@pytest.mark.parametrize("page, regmap", [("registers.md", R.REGMAP),
                                          ("registers-layer.md", R.LAYER_REGMAP)])
def test_docs_registers_md_is_up_to_date(page, regmap):
    path = ROOT / "docs" / page
    assert path.read_text() == render("markdown", regmap), \
        f"docs/{page} is stale: run 'make regmap' (ternary-accel regmap -o ...)"


def test_markdown_lists_every_register_and_field():
    text = render("markdown")
    for reg in R.REGMAP:
        assert f"[{reg.name}](#{reg.name.lower()})" in text and f"### {reg.name}\n" in text
        for f in reg.fields:
            assert f"| `{f.name}` |" in text


def test_json_round_trips_the_map():
    data = json.loads(render("json"))
    assert data["magic"] == R.MAGIC and tuple(data["version"]) == R.VERSION
    again = R.RegisterMap(data["name"], tuple(
        R.Register(r["name"], r["offset"], tuple(
            R.Field(**{k: f[k] for k in ("name", "lsb", "width", "access", "reset",
                                          "description", "constant")})
            for f in r["fields"]), r["description"]) for r in data["registers"]))
    assert [dataclasses.astuple(r) for r in again] == \
        [dataclasses.astuple(r) for r in R.REGMAP]


def test_python_module_matches_the_map(tmp_path):
    path = tmp_path / "ternary_accel_regs.py"
    path.write_text(render("python"))
    spec = importlib.util.spec_from_file_location("ternary_accel_regs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.MAGIC == R.MAGIC and module.VERSION == R.VERSION
    assert module.REG_CONTROL == 0x040 and module.CONTROL_START_MASK == 1
    assert module.ERROR_START_BUSY_SHIFT == R.REGMAP["ERROR"].field("start_busy").lsb
    for reg in R.REGMAP:
        offset, fields = module.REGISTERS[reg.name]
        assert offset == reg.offset
        assert fields == {f.name: (f.lsb, f.width, f.access, f.reset) for f in reg.fields}


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_c_header_compiles_and_matches(tmp_path):
    header = render("c")
    names = [line.split()[1] for line in header.splitlines() if line.startswith("#define")]
    assert len(names) == len(set(names)), "a C name is defined twice"
    (tmp_path / "regs.h").write_text(header)
    (tmp_path / "main.c").write_text(
        '#include <stdio.h>\n#include "regs.h"\n'
        "int main(void) {\n"
        '  printf("%u %u %u %u %u\\n", TERNARY_ACCEL_MAGIC, TERNARY_ACCEL_CONTROL,\n'
        "         TERNARY_ACCEL_ERROR_START_BUSY_MASK, TERNARY_ACCEL_MAP_VERSION_MAJOR,\n"
        "         TERNARY_ACCEL_GET(TERNARY_ACCEL_VERSION_MAJOR, 0x00020001u) +\n"
        "         TERNARY_ACCEL_SET(TERNARY_ACCEL_ENGINE_ROWS, 3u));\n"
        "  return 0;\n}\n")
    run = subprocess.run(["cc", "-Wall", "-Werror", "-o", tmp_path / "main",
                          tmp_path / "main.c"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    out = subprocess.run([tmp_path / "main"], capture_output=True, text=True).stdout.split()
    start_busy = R.REGMAP["ERROR"].field("start_busy")
    assert [int(x) for x in out] == [R.MAGIC, 0x040, start_busy.mask, R.VERSION[0],
                                     2 + (3 << 16)]


def test_regmap_cli(tmp_path):
    result = invoke("regmap", "--format", "c", "-o", tmp_path / "new" / "regs.h")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "new" / "regs.h").read_text() == render("c")
    result = invoke("regmap", "--format", "json")
    assert result.returncode == 0 and json.loads(result.stdout)["magic"] == R.MAGIC
    usage_error(invoke("regmap", "--format", "vhdl"), "--format", "vhdl")


# -- the driver's register layer ------------------------------------------------------------

def test_registers_named_fields_over_the_model():
    model = RegisterModel(constants={"ENGINE.lanes": 32, "ENGINE.rows": 16,
                                     "ENGINE_PORT.packing": 1, "PROG_STRIDE.bytes": 40})
    regs = Registers(model)
    assert regs.ENGINE.lanes == 32 and regs.ENGINE.rows == 16
    info = regs.identification()
    assert info["version"] == R.VERSION and info["packing"] == "3in5"
    assert info["strides"]["PROG"] == 40
    regs.CONTROL.irq_enable = 1
    regs.CONTROL.start = 1                         # keeps irq_enable, pulses start
    assert model.pulses == ["CONTROL.start"] and regs.CONTROL.irq_enable == 1
    assert regs.CONTROL.start == 0                 # W1P reads 0
    regs.TOKEN_IN = 99
    assert regs.TOKEN_IN.value == 99 and regs.read("TOKEN_IN") == 99
    model.set_flag("ERROR.norm")
    model.set_flag("ERROR.start_busy")
    assert regs.errors() == ["norm", "start_busy"]
    regs.ERROR.norm = 1                            # clears norm only
    assert regs.errors() == ["start_busy"]
    regs.set_base("WGT", 0xDEAD_BEEF_0000_1000)
    assert regs.base("WGT") == 0xDEAD_BEEF_0000_1000
    model.inputs["CYCLES_MATMUL.value"] = 77
    assert regs.cycles()["MATMUL"] == 77 and list(regs.cycles())[-2:] == ["total", "stall"]
    assert "CONTROL" in dir(regs)


def test_registers_refusals():
    regs = Registers(RegisterModel())
    with pytest.raises(AttributeError, match="ENGINE.lanes is read-only"):
        regs.ENGINE.lanes = 1
    with pytest.raises(AttributeError, match="TOKEN is read-only"):
        regs.TOKEN = 1
    with pytest.raises(AttributeError, match="no register 'NOPE'"):
        regs.NOPE
    with pytest.raises(AttributeError, match="has no field 'nope'"):
        regs.CONTROL.nope
    with pytest.raises(ValueError, match=r"CONTROL.start takes 0 .. 1, not 2"):
        regs.CONTROL.start = 2
    with pytest.raises(ValueError, match="64-bit address"):
        regs.set_base("KV", -1)
    with pytest.raises(BusError, match="SLVERR"):
        regs.backend.read32(0x030)


def test_identification_mismatch_is_a_clear_error():
    model = RegisterModel(constants={"ID.magic": 0x1234})
    with pytest.raises(IdentificationError, match="ID reads 0x00001234, expected 0xb1587e55"):
        Registers(model)
    model = RegisterModel(constants={"VERSION.major": R.VERSION[0] + 1})
    with pytest.raises(IdentificationError, match=r"version 2\.0 on the device"):
        Registers(model)
    Registers(RegisterModel(constants={"VERSION.minor": R.VERSION[1] + 1}))  # newer minor


def test_mmap_backend_over_a_file(tmp_path):
    """The mmap backend's word accesses, on a plain file instead of a device."""
    from ternary_accel.hw.driver import MmapBackend
    path = tmp_path / "mem"
    words = bytearray(R.REGMAP.span)
    words[0:4] = R.MAGIC.to_bytes(4, "little")
    words[4:8] = (R.VERSION[0] << 16 | R.VERSION[1]).to_bytes(4, "little")
    path.write_bytes(bytes(words))
    with MmapBackend(str(path)) as backend:
        regs = Registers(backend)
        regs.TOKEN_IN = 0xCAFE
        assert backend.read32(0x060) == 0xCAFE
    assert path.read_bytes()[0x60:0x64] == (0xCAFE).to_bytes(4, "little")
    with pytest.raises(ValueError, match="page size"):
        MmapBackend(str(path), base=0x123)
