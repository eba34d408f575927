"""The integration description of the generated Verilog (:mod:`hw.rtl.interface`): every
port listed, payload offsets equal to the RTL's ``amaranth.lib.data`` layouts, the timing
contract from :mod:`hw.timing`, the error bits, the weight word format, and the sidecar
and Markdown page ``ternary-accel verilog -o`` writes."""

import json

import pytest
from amaranth.hdl import Shape
from amaranth.lib import data

from ternary_accel.cli.verilog import ports_of
from ternary_accel.hw.params import EngineParams, UnitParams
from ternary_accel.hw.rtl.axis import AxisEngine, AxisMatmul
from ternary_accel.hw.rtl.engine import LayerEngine
from ternary_accel.hw.rtl.interface import ERROR_BITS, describe, layout_fields, markdown
from ternary_accel.hw.rtl.matmul import ErrorLayout, MatmulUnit
from ternary_accel.hw.timing import code_flag_latency, result_fifo_depth
from ternary_accel.model.encoding import codes_per_word
from ternary_accel.model.quant import BINARY, INT8

from cli_runner import invoke as run

UNITS = [UnitParams(lanes=4, rows=2), UnitParams(lanes=4, rows=2, output_stage=True),
         UnitParams(lanes=8, rows=2, act_width=4, output_stage=True, output_rows=1),
         UnitParams(lanes=3, rows=2, weight_mode=BINARY),
         UnitParams(lanes=2, rows=2, weight_mode=INT8)]
ENGINES = [EngineParams(lanes=8, rows=4, max_beats=16),
           EngineParams(lanes=8, rows=4, weight_order="columns", acc_tiles=2),
           EngineParams(lanes=8, rows=4, tokens=2, weight_port_bits=32),
           EngineParams(lanes=4, rows=8, weight_port_bits=64, packing="2bit",
                        output_stage=False)]

TOPS = ([(MatmulUnit(p), False) for p in UNITS] + [(LayerEngine(p), False) for p in ENGINES]
        + [(AxisMatmul(UNITS[1]), True), (AxisMatmul(UNITS[0]), True),
           (AxisEngine(ENGINES[0]), True), (AxisEngine(ENGINES[2]), True)])
IDS = [f"{type(top).__name__}-{top.params.name if hasattr(top, 'params') else i}"
       for i, (top, _) in enumerate(TOPS)]


@pytest.mark.parametrize("top, axis", TOPS, ids=IDS)
def test_every_port_listed(top, axis):
    described = describe(top, "top", axis=axis)["ports"]
    verilog = ports_of(top, axis=axis)
    assert [(p["name"], p["direction"], p["width"]) for p in described] == \
        [(p["name"], p["direction"], p["width"]) for p in verilog]
    assert all(p["meaning"] for p in described), [p["name"] for p in described
                                                  if not p["meaning"]]
    page = markdown(describe(top, "top", axis=axis))
    for port in verilog:
        assert f"| `{port['name']}` |" in page


def _check_fields(fields, layout, base=0):
    """Every described field at the layout's own offset and width, arrays' strides too."""
    names = [str(name) for name, _ in layout]
    assert [f["name"] for f in fields] == names
    for f in fields:
        field = layout[f["name"]]
        assert f["offset"] == base + field.offset
        assert f["width"] == Shape.cast(field.shape).width
        if isinstance(field.shape, data.ArrayLayout):
            assert f["count"] == field.shape.length
            if field.shape.length > 1:
                assert f["stride"] == field.shape[1].offset


@pytest.mark.parametrize("top, axis", [t for t in TOPS if not t[1]],
                         ids=[i for i, t in zip(IDS, TOPS) if not t[1]])
def test_payload_offsets_are_the_layouts(top, axis):
    ports = {p["name"]: p for p in describe(top, "top")["ports"]}
    act = top.act.payload.shape()
    _check_fields(ports["act__payload"]["fields"], act)
    wgt, res = top.wgt.payload.shape(), top.res.payload.shape()
    for name, layout in (("wgt__payload", wgt), ("res__payload", res)):
        described = ports[name]["layout"]
        assert described["width"] == layout.size and described["count"] == layout.length
        if layout.length > 1:
            assert described["stride"] == layout[1].offset
    _check_fields(ports["error"]["fields"], data.Layout.cast(ErrorLayout))


def test_offsets_place_the_values():
    """A payload built through the RTL's layout has each value at the described bits."""
    unit = MatmulUnit(lanes=4, rows=2, output_stage=True, act_width=4)
    layout = unit.act.payload.shape()
    values = {"data": [-8, 7, -1, 3], "last": 1, "scale": 0xBEEF, "shift": 37}
    bits = layout.const(values).as_value().value
    fields = {f["name"]: f for f in describe(unit, "u")["ports"][2]["fields"]}
    for lane, value in enumerate(values["data"]):
        f = fields["data"]
        width = f["element"]["width"]
        raw = (bits >> (f["offset"] + lane * f["stride"])) & ((1 << width) - 1)
        assert raw - ((raw >> (width - 1)) << width) == value
    for name in ("last", "scale", "shift"):
        f = fields[name]
        assert (bits >> f["offset"]) & ((1 << f["width"]) - 1) == values[name]


def test_axis_fields_follow_the_core():
    top = AxisMatmul(UnitParams(lanes=4, rows=2, output_stage=True))
    ports = {p["name"]: p for p in describe(top, "a", axis=True)["ports"]}
    act = top.unit.act.payload.shape()
    data_field = ports["s_axis_act_tdata"]["fields"][0]
    assert (data_field["offset"], data_field["width"]) == (0, Shape.cast(act["data"].shape).width)
    scale, shift = ports["s_axis_act_tuser"]["fields"]
    assert scale["offset"] == 0 and shift["offset"] == act["shift"].offset - act["scale"].offset
    assert ports["m_axis_out_tdata"]["layout"]["width"] == top.unit.res.payload.shape().size


@pytest.mark.parametrize("top, axis", TOPS, ids=IDS)
def test_timing_and_errors(top, axis):
    d = describe(top, "top", axis=axis)
    unit = top if isinstance(top, MatmulUnit) else top.unit
    p = unit.params
    timing = d["timing"]
    assert timing["latency"] == p.latency and timing["output_interval"] == p.output_interval
    assert timing["result_fifo_depth"] == result_fifo_depth(
        p.lanes, p.levels_per_stage, p.output_stage, p.output_rows, p.rows,
        act_copies=p.act_copies)
    assert timing["code_flag_latency"] == code_flag_latency(p.lanes, p.rows)
    assert f"L = {p.latency}, R = {p.output_interval}" in timing["text"]
    layout = data.Layout.cast(ErrorLayout)
    assert [(e["name"], e["offset"]) for e in d["errors"]] == \
        [(str(name), field.offset) for name, field in layout]
    assert set(ERROR_BITS) == {str(name) for name, _ in layout}
    assert "valid and ready" in d["handshake"]


@pytest.mark.parametrize("p", ENGINES, ids=lambda p: p.name)
def test_engine_weight_format(p):
    engine = LayerEngine(p)
    fmt = describe(engine, "e")["weight_format"]
    assert fmt["words_per_beat"] == engine.port_words_per_beat
    assert fmt["word_bits"] == 8 * engine.weight_beat_bytes
    assert fmt["packing"] == engine.packing
    if p.assembled:
        assert fmt["codes_per_word"] == codes_per_word(engine.packing, fmt["word_bits"])
        assert f"{fmt['word_bits']}-bit port word" in fmt["text"]
    else:
        assert f"{engine.weight_beat_bytes} bytes" in fmt["text"]


def test_unit_weight_format():
    fmt = describe(MatmulUnit(lanes=4, rows=2), "u")["weight_format"]
    assert fmt["codes_per_transfer"] == 8 and "01 is +1, 11 is -1" in fmt["text"]


def test_layout_fields_nested():
    layout = data.StructLayout({"a": 3, "b": data.ArrayLayout(data.ArrayLayout(4, 3), 2)})
    fields = layout_fields(layout)
    assert fields[1]["offset"] == 3 and fields[1]["stride"] == 12
    assert fields[1]["element"] == {"width": 12, "count": 3, "stride": 4,
                                    "element": {"width": 4, "signed": False}}


def test_cli_writes_sidecar_and_page(tmp_path):
    out = tmp_path / "eng.v"
    result = run("verilog", "--engine", "--lanes", "8", "--rows", "4", "--output-stage",
                 "--tokens", "2", "--weight-port-bits", "32", "-o", str(out))
    assert result.returncode == 0, result.stderr
    sidecar = json.loads(out.with_suffix(".json").read_text())
    for key in ("ports", "handshake", "timing", "errors", "weight_format", "config"):
        assert key in sidecar
    payload = {p["name"]: p for p in sidecar["ports"]}["act__payload"]
    assert [f["name"] for f in payload["fields"]] == ["data", "last", "scale", "shift"]
    page = out.with_suffix(".md").read_text()
    for port in sidecar["ports"]:
        assert f"`{port['name']}`" in page
    assert "## Weight word format" in page and "5-bit groups of 3 weights" in page
