"""The design parameter objects (:mod:`ternary_accel.hw.params`): defaults, checks and
their messages, derived values against :mod:`ternary_accel.hw.timing` and the built
components, JSON and command-line round trips, and the plain-Python modules that must
not import Amaranth."""

import argparse
import json
import subprocess
import sys
from dataclasses import fields

import pytest

from ternary_accel.hw import timing
from ternary_accel.hw.mapping import (DEFAULT_LANES, DEFAULT_ROWS, beat_port_bits,
                                      port_words_per_beat, weight_beat_bytes)
from ternary_accel.hw.params import (BITNET_ENGINE, MAX_TOKENS, EngineParams, ParamsError,
                                     UnitParams, flag_of, flagged)
from ternary_accel.hw.rtl.engine import LayerEngine
from ternary_accel.hw.rtl.matmul import MatmulUnit
from ternary_accel.model.arith import OUT_WIDTH, acc_width
from ternary_accel.model.quant import BINARY, INT8, TERNARY

UNITS = [
    UnitParams(),
    UnitParams(lanes=4, rows=1, weight_mode=BINARY, max_beats=8),
    UnitParams(lanes=16, rows=4, output_stage=True, act_width=4, levels_per_stage=2),
    UnitParams(lanes=8, rows=2, output_stage=True, max_beats=128, fabric="ecp5",
               output_rows=1, act_copies=2),
    UnitParams(lanes=16, rows=4, weight_mode=BINARY, output_stage=True, output_rows=2),
    UnitParams(lanes=8, rows=4, weight_mode=INT8, acc_tiles=3),
]

ENGINES = [
    EngineParams(),
    EngineParams(lanes=16, rows=8, max_beats=16),
    EngineParams(lanes=16, rows=8, max_beats=8, output_stage=False),
    EngineParams(lanes=8, rows=4, max_beats=16, tokens=4, weight_port_bits=16),
    EngineParams(lanes=4, rows=8, max_beats=32, tokens=2, weight_port_bits=32,
                 packing="2bit"),
    EngineParams(lanes=8, rows=4, max_beats=16, output_rows=1),
    EngineParams(lanes=8, rows=4, weight_order="columns", acc_tiles=4),
    EngineParams(lanes=8, rows=4, act_width=4, act_copies=2),
]


# --- defaults -----------------------------------------------------------------------------

def test_unit_defaults():
    p = UnitParams()
    assert (p.lanes, p.rows, p.weight_mode, p.output_stage, p.max_beats,
            p.levels_per_stage, p.fabric, p.act_width, p.acc_tiles, p.output_rows,
            p.act_copies) == (16, 8, TERNARY, False, 1024, 1, "generic", 8, None, None, None)


def test_engine_defaults_are_the_bitnet_engine():
    p = EngineParams()
    assert p == BITNET_ENGINE
    assert (p.lanes, p.rows, p.max_beats, p.output_stage) == (DEFAULT_LANES, DEFAULT_ROWS,
                                                              256, True)
    assert (p.weight_order, p.acc_tiles, p.tokens, p.weight_port_bits, p.packing) == (
        "rows", None, 1, None, None)
    # the pipeline's defaults are the unit's
    unit = UnitParams()
    for name in ("levels_per_stage", "act_width", "output_rows", "act_copies", "fabric"):
        assert getattr(p, name) == getattr(unit, name), name


# --- checks -------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, message", [
    ({"lanes": 0}, ValueError, "lanes must be at least 1, not 0"),
    ({"lanes": 2.0}, TypeError, "lanes must be a positive integer"),
    ({"lanes": True}, TypeError, "lanes must be a positive integer"),
    ({"rows": -1}, ValueError, "rows must be at least 1, not -1"),
    ({"weight_mode": "int4"}, ValueError, "weight_mode must be one of"),
    ({"weight_mode": 3}, TypeError, "weight_mode must be a string"),
    ({"output_stage": 1}, TypeError, "output_stage must be True or False"),
    ({"max_beats": 0}, ValueError, "max_beats must be at least 1"),
    ({"levels_per_stage": 0}, ValueError, "levels_per_stage must be at least 1"),
    ({"fabric": "xilinx"}, ValueError, "fabric must be one of generic, ecp5"),
    ({"act_width": 2}, ValueError, "act_width"),
    ({"weight_mode": INT8, "act_width": 4}, ValueError, "act_width 4 is for ternary"),
    ({"acc_tiles": 0}, ValueError, "acc_tiles must be at least 1"),
    ({"output_rows": 2}, ValueError, r"output_rows is a parameter of the output stage"),
    ({"output_stage": True, "output_rows": 3}, ValueError,
     r"output_rows must divide rows \(8\), not 3"),
    ({"act_copies": 9}, ValueError, r"act_copies must be at most rows \(8\), not 9"),
    ({"act_copies": 0}, ValueError, "act_copies must be at least 1"),
])
def test_unit_checks_name_the_parameter(kwargs, error, message):
    with pytest.raises(error, match=message):
        UnitParams(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"tokens": 0}, "tokens must be at least 1, not 0"),
    ({"tokens": MAX_TOKENS + 1}, f"tokens must be at most {MAX_TOKENS}, not {MAX_TOKENS + 1}"),
    ({"weight_order": "diagonal"}, "weight_order must be one of rows, columns"),
    ({"acc_tiles": 0}, "acc_tiles must be at least 1"),
    ({"packing": "base4"}, "packing"),
    ({"weight_port_bits": 100}, "multiple of 8"),
    ({"packing": "2bit"}, "needs assembled beats"),
    ({"tokens": 2, "weight_order": "columns"}, "takes whole beats"),
    ({"tokens": 2, "acc_tiles": 4}, "do not combine"),
    ({"weight_order": "columns", "rows": 8, "output_rows": 2}, "parallel output stage"),
    ({"lanes": 0}, "lanes must be at least 1"),
    ({"output_stage": False, "output_rows": 2}, "output_rows is a parameter"),
])
def test_engine_checks_name_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message) as caught:
        EngineParams(**kwargs)
    if isinstance(caught.value, ParamsError):
        assert caught.value.parameter in str(caught.value)


def test_frozen():
    with pytest.raises(AttributeError):
        UnitParams().lanes = 4


# --- derived values -----------------------------------------------------------------------

@pytest.mark.parametrize("p", UNITS, ids=lambda p: p.name)
def test_unit_derived_values(p):
    assert p.acc_width == acc_width(p.lanes * p.max_beats, p.weight_mode, p.act_width)
    assert p.res_width == (OUT_WIDTH if p.output_stage else p.acc_width)
    assert p.res_width == timing.result_width(p.lanes, p.max_beats, p.output_stage,
                                              p.weight_mode, p.act_width)
    assert p.latency == timing.unit_latency(p.lanes, p.levels_per_stage, p.output_stage,
                                            p.output_rows, p.rows, act_copies=p.act_copies)
    assert p.output_interval == timing.output_interval(p.rows, p.output_rows)
    assert p.macs == p.lanes * p.rows
    unit = MatmulUnit(p)
    assert unit.params is p
    for name in ("lanes", "rows", "weight_mode", "output_stage", "max_beats",
                 "levels_per_stage", "fabric", "act_width", "acc_tiles", "output_rows",
                 "act_copies", "acc_width", "res_width", "latency", "output_interval"):
        assert getattr(unit, name) == getattr(p, name), name


@pytest.mark.parametrize("p", ENGINES, ids=lambda p: p.name)
def test_engine_derived_values(p):
    unit = p.unit
    assert unit.weight_mode == TERNARY
    assert unit.acc_tiles == (p.tokens if p.tokens > 1 else p.acc_tiles)
    for name in ("lanes", "rows", "max_beats", "levels_per_stage", "output_stage",
                 "fabric", "act_width", "output_rows", "act_copies"):
        assert getattr(unit, name) == getattr(p, name), name
    assert p.latency == unit.latency and p.res_width == unit.res_width
    assert p.bytes_per_beat == weight_beat_bytes(p.lanes, p.rows, p.weight_order)
    codes = p.lanes * p.rows
    if p.assembled:
        bits = (p.weight_port_bits if p.weight_port_bits is not None
                else beat_port_bits(codes, p.effective_packing))
        assert p.wgt_word_bytes == bits // 8
    else:
        assert p.wgt_word_bytes == p.bytes_per_beat
    engine = LayerEngine(p)
    assert engine.params is p and engine.unit.params == unit
    assert engine.latency == p.latency
    assert engine.weight_beat_bytes == p.wgt_word_bytes
    assert engine.packing == p.effective_packing
    assert engine.port_words_per_beat == (
        port_words_per_beat(codes, p.effective_packing, p.weight_port_bits)
        if p.assembled else 1)
    mapping = p.mapping(p.rows * 2, p.lanes * 2, 3)
    assert mapping.latency == p.latency
    assert mapping.batch == p.tokens and mapping.port_bits == p.weight_port_bits


def test_keywords_are_a_shorthand():
    assert MatmulUnit(lanes=4, rows=2).params == UnitParams(lanes=4, rows=2)
    assert LayerEngine(lanes=4, rows=2, tokens=2).params == EngineParams(lanes=4, rows=2,
                                                                         tokens=2)
    with pytest.raises(TypeError, match="not both"):
        MatmulUnit(UnitParams(), lanes=4)
    with pytest.raises(TypeError, match="not both"):
        LayerEngine(EngineParams(), lanes=4)
    with pytest.raises(TypeError, match="must be a UnitParams"):
        MatmulUnit(EngineParams())
    with pytest.raises(TypeError, match="must be an EngineParams"):
        LayerEngine(UnitParams())


# --- names --------------------------------------------------------------------------------

def test_names():
    assert UnitParams(lanes=4, rows=1, max_beats=8).name == "k4_m1_ternary_raw_b8_l1"
    assert (UnitParams(lanes=8, rows=2, output_stage=True, max_beats=128, fabric="ecp5",
                       output_rows=1, act_copies=2).name
            == "k8_m2_ternary_os1_b128_l1_ecp5_c2")
    assert UnitParams(act_width=4).name.endswith("_a4")
    assert EngineParams().name == "engine_k32_m16_b256_l1"
    assert (EngineParams(lanes=8, rows=4, max_beats=16, tokens=4, weight_port_bits=16,
                         output_stage=False).name == "engine_k8_m4_b16_l1_acc_T4_p16")
    assert UnitParams().report_name == "unit8x16_ternary"
    assert (UnitParams(output_stage=True, output_rows=1, act_copies=2, act_width=4)
            .report_name == "unit8x16_ternary_a4_os_o1_ac2")
    assert (EngineParams(tokens=16, weight_port_bits=128, packing="3in5", output_rows=1)
            .report_name == "engine16x32_T16_p128_3in5_os_o1")
    assert EngineParams(weight_order="columns", acc_tiles=4).engine_suffix == "_columns_t4"
    # every parameter apart changes the build folder's name
    base = EngineParams(lanes=8, rows=4)
    variants = [base.replace(**{name: value}) for name, value in (
        ("lanes", 4), ("rows", 2), ("max_beats", 16), ("levels_per_stage", 2),
        ("output_stage", False), ("act_width", 4), ("tokens", 2),
        ("weight_port_bits", 64), ("output_rows", 1), ("act_copies", 2))]
    assert len({v.name for v in variants} | {base.name}) == len(variants) + 1


# --- JSON -----------------------------------------------------------------------------

@pytest.mark.parametrize("p", UNITS + ENGINES, ids=lambda p: p.name)
def test_json_round_trip(p):
    text = p.to_json()
    assert json.loads(text) == p.to_dict()
    assert type(p).from_json(text) == p
    assert type(p).from_dict(p.to_dict()) == p


def test_json_refuses_unknown_and_bad_values():
    with pytest.raises(ValueError, match="unknown UnitParams parameter 'bogus'"):
        UnitParams.from_dict({"lanes": 4, "bogus": 1})
    with pytest.raises(ValueError, match="unknown EngineParams parameter 'weight_mode'"):
        EngineParams.from_json('{"weight_mode": "ternary"}')
    with pytest.raises(ValueError, match="tokens must be at most"):
        EngineParams.from_json('{"tokens": 1000}')


def test_replace_checks_again():
    assert UnitParams().replace(lanes=4).lanes == 4
    with pytest.raises(ValueError, match="lanes must be at least 1"):
        UnitParams().replace(lanes=0)


# --- the command line ---------------------------------------------------------------------

def _unit_parser():
    parser = argparse.ArgumentParser(prog="t")
    UnitParams.add_arguments(parser)
    return parser


def _engine_parser():
    parser = argparse.ArgumentParser(prog="t")
    EngineParams.add_arguments(parser)
    return parser


def test_argparse_defaults_are_the_params_defaults():
    assert UnitParams.from_args(_unit_parser(), _unit_parser().parse_args([])) == UnitParams()
    parser = _engine_parser()
    assert EngineParams.from_args(parser, parser.parse_args([])) == EngineParams()


def _flags(p, names):
    """The command line that gives ``p``'s values of ``names``."""
    argv = []
    for name in names:
        value = getattr(p, name)
        if isinstance(value, bool):
            argv.append(flag_of(name) if value else "--no-" + flag_of(name)[2:])
        elif value is not None:
            argv += [flag_of(name), str(value)]
    return argv


@pytest.mark.parametrize("p", [u for u in UNITS if u.acc_tiles is None],
                         ids=lambda p: p.name)
def test_unit_argparse_round_trip(p):
    parser = _unit_parser()
    names = [f.name for f in fields(UnitParams) if f.name != "acc_tiles"]
    assert UnitParams.from_args(parser, parser.parse_args(_flags(p, names))) == p


@pytest.mark.parametrize("p", ENGINES, ids=lambda p: p.name)
def test_engine_argparse_round_trip(p):
    parser = _engine_parser()
    names = [f.name for f in fields(EngineParams)]
    assert EngineParams.from_args(parser, parser.parse_args(_flags(p, names))) == p


@pytest.mark.parametrize("argv, message", [
    (["--tokens", "1000"], "--tokens must be at most 256, not 1000"),
    (["--tokens", "0"], "--tokens must be at least 1, not 0"),
    (["--output-rows", "1", "--no-output-stage"],
     "--output-rows is a parameter of the output stage (--output-stage)"),
    (["--output-rows", "3"], "--output-rows must divide --rows (16), not 3"),
    (["--act-copies", "17"], "--act-copies must be at most --rows (16), not 17"),
    (["--lanes", "0"], "--lanes must be at least 1, not 0"),
    (["--max-beats", "0"], "--max-beats must be at least 1, not 0"),
    (["--tokens", "2", "--acc-tiles", "4"], "--acc-tiles (the sparse dataflow's bank)"),
    (["--packing", "2bit"], "needs assembled beats: give --weight-port-bits"),
    (["--weight-port-bits", "100"], "--weight-port-bits"),
])
def test_from_args_errors_name_the_flag(argv, message, capsys):
    parser = _engine_parser()
    with pytest.raises(SystemExit) as exit_:
        EngineParams.from_args(parser, parser.parse_args(argv))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert err.count("error:") == 1


def test_flagged():
    assert flagged("tokens must be at most 256, not 1000") == \
        "--tokens must be at most 256, not 1000"
    assert flagged("tokens must be at most 256", {"tokens": "--reuse"}) == \
        "--reuse must be at most 256"
    assert flag_of("weight_port_bits") == "--weight-port-bits"


# --- no Amaranth below the RTL ------------------------------------------------------------

PLAIN = ("ternary_accel.hw.params", "ternary_accel.hw.timing", "ternary_accel.hw.mapping",
         "ternary_accel.hw.perf.throughput", "ternary_accel.hw.perf.accounting",
         "ternary_accel.hw.perf.platforms", "ternary_accel.hw.perf.energy",
         "ternary_accel.hw.fpga.counts")


@pytest.mark.parametrize("module", PLAIN)
def test_plain_modules_do_not_import_amaranth(module):
    code = (f"import sys, {module}\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'amaranth')\n"
            "print(','.join(loaded))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "", f"{module} imports {result.stdout.strip()}"


@pytest.mark.parametrize("cls, changes, message", [
    (UnitParams, {"lanes": 4097}, "lanes must be at most 4096, not 4097"),
    (UnitParams, {"rows": 10**8}, "rows must be at most 4096"),
    (UnitParams, {"max_beats": 1 << 30}, "max_beats must be at most 16777216"),
    (EngineParams, {"weight_port_bits": 1 << 20}, "weight_port_bits must be at most 65536"),
])
def test_design_sizes_are_bounded(cls, changes, message):
    # a mistyped size is refused at once, never an elaboration that does not end
    with pytest.raises(ValueError, match=message):
        cls(**changes)
