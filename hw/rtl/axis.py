"""AXI4-Stream top levels of the matmul unit and of the layer engine, for vendor block
designs (Vivado, Quartus).

Port names follow the AXI4-Stream convention so that the tools infer the interfaces:
``s_axis_act_*`` (activations), ``s_axis_wgt_*`` (weight codes), ``m_axis_out_*``
(results), clocked by ``aclk`` with the active-low ``aresetn``. TDATA widths are padded
to whole bytes; the padding bits are ignored on inputs and zero on outputs.

=====================  =====  ===============================================
port                   dir    meaning
=====================  =====  ===============================================
``s_axis_act_tdata``   in     K int8 activations, lane 0 in bits [7:0] (``act_width=4``:
                              K int4, two per byte, lane 0 in bits [3:0])
``s_axis_act_tuser``   in     output stage only: ``scale`` (low 16 bits), then ``shift``
``s_axis_act_tlast``   in     last beat of a dot product
``s_axis_wgt_tdata``   in     M x K lane codes, row-major, row 0 lane 0 in the low bits
                              (the engine: a packed weight beat or port word, byte 0
                              in the low bits)
``m_axis_out_tdata``   out    M results, row 0 in the low bits
``m_axis_out_tlast``   out    1: every result vector is a packet of one beat
``error_code``         out    sticky: an invalid ternary code was received
``error_overflow``     out    sticky: a dot product ran past ``max_beats``
``tiles``, ``batch``   in     the engine's ``tiles`` / ``batch`` inputs, where it has them
=====================  =====  ===============================================
"""

from amaranth.hdl import ClockDomain, ClockSignal, Const, Module, ResetSignal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ternary_accel.hw.rtl.matmul import MatmulUnit

__all__ = ["AxisMatmul", "AxisEngine", "byte_padded"]


def byte_padded(bits):
    """``bits`` rounded up to a whole number of bytes."""
    return -(-bits // 8) * 8


class AxisMatmul(wiring.Component):
    """A :class:`MatmulUnit` with AXI4-Stream port names and its own clock domain.

    Parameters
    ----------
    **unit_params
        The :class:`MatmulUnit` parameters.
    """

    def __init__(self, params=None, **kwargs):
        self._init(MatmulUnit(params, **kwargs))

    def _init(self, core):
        self._core = core
        self._unit = core if isinstance(core, MatmulUnit) else core.unit
        unit = self._core
        act_bits = len(unit.act.payload.data.as_value())
        wgt_bits = len(unit.wgt.payload.as_value())
        out_bits = len(unit.res.payload.as_value())
        ports = {
            "aclk": In(1), "aresetn": In(1),
            "s_axis_act_tdata": In(byte_padded(act_bits)),
            "s_axis_act_tvalid": In(1), "s_axis_act_tready": Out(1),
            "s_axis_act_tlast": In(1),
            "s_axis_wgt_tdata": In(byte_padded(wgt_bits)),
            "s_axis_wgt_tvalid": In(1), "s_axis_wgt_tready": Out(1),
            "m_axis_out_tdata": Out(byte_padded(out_bits)),
            "m_axis_out_tvalid": Out(1), "m_axis_out_tready": In(1),
            "m_axis_out_tlast": Out(1),
            "error_code": Out(1), "error_overflow": Out(1),
        }
        if self._unit.output_stage:
            scale = unit.act.payload.scale
            shift = unit.act.payload.shift
            ports["s_axis_act_tuser"] = In(byte_padded(len(scale) + len(shift)))
        self._extra = [name for name in ("tiles", "batch") if name in unit.signature.members]
        for name in self._extra:
            ports[name] = In(unit.signature.members[name].shape)
        super().__init__(ports)

    @property
    def unit(self):
        """The wrapped :class:`MatmulUnit`."""
        return self._unit

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain()
        m.d.comb += [ClockSignal().eq(self.aclk), ResetSignal().eq(~self.aresetn)]
        m.submodules.core = unit = self._core
        payload = unit.act.payload
        data = payload.data.as_value()
        m.d.comb += [
            data.eq(self.s_axis_act_tdata[:len(data)]),
            payload.last.eq(self.s_axis_act_tlast),
            unit.act.valid.eq(self.s_axis_act_tvalid),
            self.s_axis_act_tready.eq(unit.act.ready),
            unit.wgt.payload.as_value().eq(
                self.s_axis_wgt_tdata[:len(unit.wgt.payload.as_value())]),
            unit.wgt.valid.eq(self.s_axis_wgt_tvalid),
            self.s_axis_wgt_tready.eq(unit.wgt.ready),
            self.m_axis_out_tdata.eq(unit.res.payload.as_value()),
            self.m_axis_out_tvalid.eq(unit.res.valid),
            unit.res.ready.eq(self.m_axis_out_tready),
            self.m_axis_out_tlast.eq(Const(1)),
            self.error_code.eq(unit.error.code),
            self.error_overflow.eq(unit.error.overflow),
        ]
        for name in self._extra:
            m.d.comb += getattr(unit, name).eq(getattr(self, name))
        if self._unit.output_stage:
            scale = payload.scale
            m.d.comb += [
                scale.eq(self.s_axis_act_tuser[:len(scale)]),
                payload.shift.eq(self.s_axis_act_tuser[len(scale):]),
            ]
        return m


class AxisEngine(AxisMatmul):
    """A :class:`hw.engine.LayerEngine` with the AXI4-Stream port names of
    :class:`AxisMatmul`.

    Parameters
    ----------
    **engine_params
        The :class:`hw.engine.LayerEngine` parameters.
    """

    def __init__(self, params=None, **kwargs):
        from ternary_accel.hw.rtl.engine import LayerEngine
        self._init(LayerEngine(params, **kwargs))

    @property
    def engine(self):
        """The wrapped :class:`hw.engine.LayerEngine`."""
        return self._core
