"""The interface of a generated top level, for an engineer who integrates the Verilog
without reading Amaranth.

:func:`describe` gives, per Verilog port, its direction and width and, for a stream's
payload and the error flags, the field layout with bit offsets read from the same
``amaranth.lib.data`` layouts the RTL is built from (:func:`hw.rtl.matmul.act_layout`,
:func:`~hw.rtl.matmul.wgt_layout`, :func:`~hw.rtl.matmul.res_layout`,
:class:`~hw.rtl.matmul.ErrorLayout`); the stream handshake; the timing contract
(:mod:`ternary_accel.hw.timing`); the meaning of the error bits; and the weight word
format. ``ternary-accel verilog -o FILE.v`` writes it as ``FILE.json`` and, through
:func:`markdown`, as ``FILE.md``.
"""

from amaranth.hdl import Shape
from amaranth.lib import data, wiring

from ternary_accel.model.encoding import (CODE_INVALID, CODE_NEG, CODE_POS, CODE_ZERO,
                                          TRITS_PER_BYTE, codes_per_group, codes_per_word,
                                          group_bits)
from ternary_accel.model.quant import BINARY, INT8
from ternary_accel.model.sparse import column_bytes
from ternary_accel.hw.params import COLUMNS_ORDER
from ternary_accel.hw.timing import code_flag_latency, result_fifo_depth
from ternary_accel.hw.rtl.matmul import ErrorLayout, MatmulUnit

__all__ = ["describe", "markdown", "layout_fields", "ERROR_BITS", "HANDSHAKE"]

#: What each :class:`~hw.rtl.matmul.ErrorLayout` flag means. Both are sticky: set by the
#: event, cleared only by reset.
ERROR_BITS = {
    "code": "a transferred weight beat carried an invalid code (the unused ternary lane "
            "code 0b10, or a packed byte / group beyond the base-3 range); the weight was "
            "used as 0",
    "overflow": "a dot product ran longer than max_beats beats: its accumulator may have "
                "wrapped modulo 2**acc_width",
}

#: The ``amaranth.lib.stream`` handshake every stream port follows.
HANDSHAKE = (
    "A stream transfers one payload on a rising clock edge where valid and ready are both "
    "high. The producer drives payload and valid and holds both until the transfer; it "
    "must not wait for ready before raising valid. ready may depend on valid. The payload "
    "is ignored while valid is low.")


def _describe_shape(shape):
    """``{width, signed}`` of a scalar, or ``{width, count, stride, element}`` of an array,
    or ``{width, fields}`` of a struct."""
    if isinstance(shape, data.ArrayLayout):
        stride = shape[1].offset if shape.length > 1 else shape.size
        return {"width": shape.size, "count": shape.length, "stride": stride,
                "element": _describe_shape(shape.elem_shape)}
    if isinstance(shape, data.Layout):
        return {"width": shape.size, "fields": layout_fields(shape)}
    shape = Shape.cast(shape)
    return {"width": shape.width, "signed": shape.signed}


def layout_fields(layout, *, base=0):
    """The fields of an ``amaranth.lib.data`` struct layout in bit order:
    ``[{name, offset, width, signed | count, stride, element | fields}]``; the offsets are
    the layout's own (plus ``base``). An array field is one entry: element ``i`` starts at
    ``offset + i * stride``."""
    return [{"name": str(name), "offset": base + field.offset,
             **_describe_shape(field.shape)} for name, field in layout]


def _unit_of(top):
    return top if isinstance(top, MatmulUnit) else top.unit


def _engine_of(top):
    engine = getattr(top, "engine", top)
    return engine if hasattr(engine, "weight_order") else None


def _weight_format(top):
    """How the weights of one ``wgt`` transfer are encoded."""
    unit, engine = _unit_of(top), _engine_of(top)
    if engine is None:
        if unit.weight_mode == INT8:
            codes = "int8 weights, two's complement"
        elif unit.weight_mode == BINARY:
            codes = "1-bit codes: 1 is +1, 0 is -1"
        else:
            codes = (f"2-bit lane codes: {CODE_ZERO:02b} is 0, {CODE_POS:02b} is +1, "
                     f"{CODE_NEG:02b} is -1, {CODE_INVALID:02b} is invalid (error.code; "
                     f"used as 0)")
        return {"kind": "lane codes", "codes_per_transfer": unit.rows * unit.lanes,
                "text": f"{unit.rows} rows x {unit.lanes} lanes, row-major: the code of "
                        f"row r, lane l at element [r][l] of the payload. {codes}."}
    trits = (f"a byte holds {TRITS_PER_BYTE} weights w_0..w_4 as sum (w_i + 1) * 3**i "
             f"(0..242; the model's pack_trits); 243..255 are invalid (error.code, the "
             f"weights used as 0)")
    if not engine.assembled:
        if engine.weight_order == COLUMNS_ORDER:
            per = column_bytes(unit.rows)
            text = (f"a whole weight beat a transfer, {engine.weight_beat_bytes} bytes, byte "
                    f"b in bits [8b+7:8b]: {unit.lanes} stored columns of {per} bytes each "
                    f"(column c at bytes {per}c..), a column's {unit.rows} weights row 0 "
                    f"first, padded with zero weights; {trits} (the model's pack_columns).")
        else:
            text = (f"a whole weight beat a transfer, {engine.weight_beat_bytes} bytes, byte "
                    f"b in bits [8b+7:8b]: the beat's {unit.rows} x {unit.lanes} weights "
                    f"row-major (weight n is row n // {unit.lanes}, lane n % {unit.lanes}), "
                    f"{TRITS_PER_BYTE} to a byte (weight n in byte n // {TRITS_PER_BYTE}), "
                    f"the tail padded with zero weights; {trits}.")
        return {"kind": "whole beats", "weight_order": engine.weight_order,
                "packing": engine.packing, "word_bits": 8 * engine.weight_beat_bytes,
                "words_per_beat": 1, "text": text}
    packing, bits = engine.packing, engine.weight_port_bits
    per_word = codes_per_word(packing, bits)
    groups = {"base3": f"8-bit groups of {TRITS_PER_BYTE} weights, value "
                       f"sum (w_i + 1) * 3**i (0..242; above is invalid)",
              "3in5": "5-bit groups of 3 weights, value sum (w_i + 1) * 3**i (0..26; "
                      "27..31 are invalid)",
              "2bit": f"2-bit groups of one lane code ({CODE_ZERO:02b} is 0, "
                      f"{CODE_POS:02b} is +1, {CODE_NEG:02b} is -1, {CODE_INVALID:02b} "
                      f"invalid)"}[packing]
    text = (f"one {bits}-bit port word a transfer, {engine.port_words_per_beat} words a "
            f"weight beat. The beat's {unit.rows} x {unit.lanes} weights row-major: weight "
            f"n is code n % {per_word} of word n // {per_word}. A word holds "
            f"{per_word // codes_per_group(packing)} {groups}, group g in bits "
            f"[{group_bits(packing)}g + {group_bits(packing) - 1}:{group_bits(packing)}g]; "
            f"the last word is padded with zero weights and bits no group covers are 0 "
            f"(the model's pack_words). An invalid group sets error.code and decodes as "
            f"zero weights.")
    if engine.tokens > 1:
        text += (f" Each beat is applied to the batch's tokens (1..{engine.tokens}, the "
                 f"batch input), one act transfer each, in token order.")
    return {"kind": "port words", "packing": packing, "word_bits": bits,
            "codes_per_word": per_word, "words_per_beat": engine.port_words_per_beat,
            "text": text}


def _timing(top):
    """The timing contract: latency, output interval, FIFO depth, flag latency."""
    unit, engine = _unit_of(top), _engine_of(top)
    p = unit.params
    contract = {
        "latency": unit.latency,
        "output_interval": unit.output_interval,
        "result_fifo_depth": result_fifo_depth(p.lanes, p.levels_per_stage, p.output_stage,
                                               p.output_rows, p.rows,
                                               act_copies=p.act_copies),
        "code_flag_latency": code_flag_latency(p.lanes, p.rows),
        "macs_per_cycle": p.lanes * p.rows,
        "text": (f"A beat (one act and one wgt transfer, together) a cycle at most. With res "
                 f"always ready and the inputs never starved, result vector n is on res "
                 f"(valid) at cycle C_n = max(A_n + L, C_(n-1) + R), A_n the cycle its last "
                 f"beat transfers, L = {unit.latency}, R = {unit.output_interval}. The "
                 f"inputs are held (ready low) only while the result FIFO "
                 f"({result_fifo_depth(p.lanes, p.levels_per_stage, p.output_stage, p.output_rows, p.rows, act_copies=p.act_copies)} "
                 f"entries) could not take every result in flight, i.e. while res is not "
                 f"ready. error.code rises {code_flag_latency(p.lanes, p.rows)} cycles after "
                 f"the beat with an invalid code."),
    }
    if engine is not None and engine.assembled:
        contract["text"] += (" With assembled beats a weight beat reaches the unit the "
                             "cycle after its last port word and is then applied once per "
                             "token of the batch; ternary_accel.hw.timing.LayerMapping "
                             "gives a layer's cycles.")
    return contract


_ROLE = {"payload": "data", "valid": "handshake", "ready": "handshake"}


def _stream_ports(top, name, stream):
    """The three Verilog ports of the stream member ``name``."""
    payload = stream.payload.shape()
    direction = "input" if top.signature.members[name].flow == wiring.In else "output"
    back = "output" if direction == "input" else "input"
    return [
        {"name": f"{name}__payload", "direction": direction, "width": payload.size,
         "stream": name, "role": "payload", **_payload(payload)},
        {"name": f"{name}__valid", "direction": direction, "width": 1, "stream": name,
         "role": "valid"},
        {"name": f"{name}__ready", "direction": back, "width": 1, "stream": name,
         "role": "ready"},
    ]


def _payload(layout):
    if isinstance(layout, data.StructLayout):
        return {"fields": layout_fields(layout)}
    return {"layout": _describe_shape(layout)}


_MEANINGS = {
    "act": "activations: a beat of K activations (lane 0 in the low bits), last marks a "
           "dot product's last beat; with the output stage the token's scale and shift, "
           "read from the last beat",
    "wgt": "weights of the beat (see weight_format)",
    "res": "a result vector: M signed results, row 0 in the low bits",
    "error": "sticky error flags (see errors)",
    "tiles": "row tiles the stream interleaves on the accumulator bank (held for a layer; "
             "0 counts as 1)",
    "batch": "tokens of the current batch, 1..T (held for a run; 0 counts as 1)",
}


def _native_ports(top):
    ports = [{"name": "clk", "direction": "input", "width": 1, "role": "clock",
              "meaning": "clock, rising edge"},
             {"name": "rst", "direction": "input", "width": 1, "role": "reset",
              "meaning": "synchronous reset, active high"}]
    for name, member in top.signature.members.items():
        value = getattr(top, name)
        if hasattr(value, "payload") and hasattr(value, "valid"):
            for port in _stream_ports(top, name, value):
                port["meaning"] = _MEANINGS[name] if port["role"] == "payload" else (
                    "stream handshake")
                ports.append(port)
            continue
        port = {"name": name,
                "direction": "input" if member.flow == wiring.In else "output",
                "width": Shape.cast(member.shape).width, "role": "data",
                "meaning": _MEANINGS.get(name, "")}
        if name == "error":
            port["fields"] = layout_fields(data.Layout.cast(ErrorLayout))
        ports.append(port)
    return ports


def _axis_ports(top):
    """The AXI4-Stream wrapper's ports (:mod:`hw.rtl.axis`), fields from the core's
    layouts."""
    core = top.engine if hasattr(top, "engine") else top.unit
    act = core.act.payload.shape()
    by_name = {p["name"]: p for p in layout_fields(act)}
    width = {name: Shape.cast(member.shape).width
             for name, member in top.signature.members.items()}
    ports = []
    for name, member in top.signature.members.items():
        direction = "input" if member.flow == wiring.In else "output"
        port = {"name": name, "direction": direction, "width": width[name]}
        if name == "aclk":
            port.update(role="clock", meaning="clock, rising edge")
        elif name == "aresetn":
            port.update(role="reset", meaning="synchronous reset, active low")
        elif name.endswith(("_tvalid", "_tready")):
            port.update(role=name.rsplit("_", 1)[1][1:], stream=name.rsplit("_", 1)[0],
                        meaning="AXI4-Stream handshake")
        elif name == "s_axis_act_tdata":
            port.update(role="payload", stream="s_axis_act", meaning=_MEANINGS["act"],
                        fields=[dict(by_name["data"], offset=0)],
                        padding="bits above the fields are ignored")
        elif name == "s_axis_act_tuser":
            base = by_name["scale"]["offset"]
            port.update(role="payload", stream="s_axis_act",
                        meaning="the token's scale and shift (output stage)",
                        fields=[dict(by_name[f], offset=by_name[f]["offset"] - base)
                                for f in ("scale", "shift")])
        elif name == "s_axis_act_tlast":
            port.update(role="payload", stream="s_axis_act", meaning="last beat of a dot "
                        "product (the payload's last)")
        elif name == "s_axis_wgt_tdata":
            port.update(role="payload", stream="s_axis_wgt", meaning=_MEANINGS["wgt"],
                        layout=_describe_shape(core.wgt.payload.shape()),
                        padding="bits above the layout are ignored")
        elif name == "m_axis_out_tdata":
            port.update(role="payload", stream="m_axis_out", meaning=_MEANINGS["res"],
                        layout=_describe_shape(core.res.payload.shape()),
                        padding="bits above the layout are 0")
        elif name == "m_axis_out_tlast":
            port.update(role="payload", stream="m_axis_out",
                        meaning="always 1: each result vector is a packet of one beat")
        elif name.startswith("error_"):
            flag = name[len("error_"):]
            port.update(role="error", meaning=f"sticky: {ERROR_BITS[flag]}")
        else:
            port.update(role="data", meaning=_MEANINGS.get(name, ""))
        ports.append(port)
    return ports


def describe(top, name, *, axis=False):
    """The interface of ``top`` (a :class:`~hw.rtl.matmul.MatmulUnit`,
    :class:`~hw.rtl.engine.LayerEngine`, or their :mod:`hw.rtl.axis` wrappers) as the
    generated Verilog module ``name`` sees it.

    Returns
    -------
    dict
        ``module``, ``ports`` (each: ``name``, ``direction``, ``width``, ``role``,
        ``meaning``, and for payloads ``fields`` or ``layout`` with bit offsets),
        ``handshake``, ``timing``, ``errors`` (bit offset and meaning of each flag) and
        ``weight_format``.
    """
    errors = [dict(f, meaning=ERROR_BITS[f["name"]])
              for f in layout_fields(data.Layout.cast(ErrorLayout))]
    act, wgt = ("s_axis_act", "s_axis_wgt") if axis else ("act", "wgt")
    engine = _engine_of(top)
    if engine is not None and engine.assembled:
        pairing = (f" {wgt} takes port words on its own (ahead of the beat they make up, "
                   f"while the beat register is busy); {act} transfers together with a use "
                   f"of the assembled beat: its ready is high only while a beat is loaded "
                   f"and the result FIFO has room.")
    else:
        pairing = (f" {act} and {wgt} transfer together: each one's ready is high only "
                   f"while the other is valid and the result FIFO has room.")
    return {
        "module": name,
        "ports": _axis_ports(top) if axis else _native_ports(top),
        "handshake": HANDSHAKE + (" AXI4-Stream: tvalid/tready as valid/ready." if axis
                                  else "") + pairing,
        "timing": _timing(top),
        "errors": errors,
        "weight_format": _weight_format(top),
    }


def _bits(offset, width):
    return f"[{offset + width - 1}:{offset}]" if width > 1 else f"[{offset}]"


def _field_lines(fields, indent=""):
    lines = []
    for f in fields:
        text = f"{indent}- `{f['name']}` bits {_bits(f['offset'], f['width'])}"
        if "count" in f:
            element = f["element"]
            kind = (f"signed {element['width']}-bit" if element.get("signed")
                    else f"{element['width']}-bit")
            if "count" in element:
                kind = (f"{element['count']} x {element['element']['width']}-bit "
                        f"(stride {element['stride']})")
            text += (f": {f['count']} elements of {kind}, element i at bit "
                     f"{f['offset']} + {f['stride']}i")
        else:
            text += f": {'signed' if f.get('signed') else 'unsigned'}"
        lines.append(text)
        if "fields" in f:
            lines += _field_lines(f["fields"], indent + "  ")
    return lines


def _layout_line(layout):
    if "count" not in layout:
        return f"{layout['width']} bits"
    element = layout["element"]
    inner = (f"{element['count']} x {'signed ' if element['element'].get('signed') else ''}"
             f"{element['element']['width']}-bit (element j at bit {element['stride']}j)"
             if "count" in element else
             f"{'signed ' if element.get('signed') else ''}{element['width']}-bit")
    return (f"{layout['count']} elements of {inner}, element i at bit {layout['stride']}i "
            f"({layout['width']} bits)")


def markdown(description, config=None):
    """The integration page of :func:`describe`'s ``description`` as Markdown (``config``:
    the parameters, shown as a table)."""
    d = description
    lines = [f"# `{d['module']}`: integration", ""]
    if config:
        lines += ["Generated by `ternary-accel verilog`. Parameters:", "",
                  "| parameter | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in config.items()] + [""]
    lines += ["## Ports", "", "| port | direction | width | meaning |", "|---|---|---|---|"]
    lines += [f"| `{p['name']}` | {p['direction']} | {p['width']} | {p.get('meaning', '')} |"
              for p in d["ports"]]
    lines += ["", "## Payload layouts", "",
              "Bit offsets as the RTL's `amaranth.lib.data` layouts place them (bit 0 is "
              "the least significant).", ""]
    for p in d["ports"]:
        if "fields" in p:
            lines += [f"`{p['name']}`:", ""] + _field_lines(p["fields"]) + [""]
        elif "layout" in p:
            lines += [f"`{p['name']}`: {_layout_line(p['layout'])}", ""]
    lines += ["## Handshake", "", d["handshake"], "", "## Timing contract", "",
              d["timing"]["text"], "",
              "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in d["timing"].items() if k != "text"]
    lines += ["", "## Error bits", "", "| bit | flag | meaning |", "|---|---|---|"]
    lines += [f"| {e['offset']} | `{e['name']}` | sticky: {e['meaning']} |"
              for e in d["errors"]]
    lines += ["", "## Weight word format", "", d["weight_format"]["text"], ""]
    return "\n".join(lines)
