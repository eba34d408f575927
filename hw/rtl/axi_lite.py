"""The host's control plane: an AXI4-Lite slave over a register map
(:mod:`ternary_accel.hw.regmap`), giving the rest of the design one port a field.

:class:`RegisterFile` decodes the map's window (``regmap.span`` bytes, 32-bit data).
Its ports besides the bus, named ``<register>_<field>`` in lower case (``control_start``,
``error_opcode``; a register's only field ``value`` or ``addr`` or ``bytes`` is the
register's name alone, ``token_in``; see :func:`port_name`):

- ``RW``: an output holding the value (reset: the field's reset value);
- ``RO``: an input read by the host (a *constant* field has no port: its value is fixed
  by ``constants``);
- ``W1C``: an input ``<name>_set`` (a 1 in a cycle sets the flag's bits) and an output
  ``<name>`` (the sticky flag); a set in the cycle a write clears wins;
- ``W1P``: an output high for the one cycle after a write of 1 to it.

The bus (:class:`AxiLiteSignature`, member ``axi``; its Verilog ports ``axi__awaddr``...)
answers every transaction: OKAY for an address in the map, SLVERR for any other (a write
there changes nothing, a read returns 0). The write address and the write data are taken
independently (AW before W, W before AW, or together), each into a holding register; the
write is done and its response raised the cycle both are held and the B channel is free,
and a holding register takes its next beat in that same cycle. A read is answered the
cycle after its address is taken, and the next address is taken the cycle its response
is. So reads and writes go on at once, back to back at one of each a cycle, and no
``valid`` waits on a ``ready``. ``awready`` and ``wready`` are combinational from
``bready``, ``arready`` from ``rready`` (AXI allows it; a register slice in front cuts the
paths if timing needs it). The byte strobes are honoured: a byte whose strobe is low is
not written, cleared or pulsed.
The address's two low bits are ignored (AXI4-Lite accesses are a whole word); ``awprot``
and ``arprot`` are accepted and ignored. Reads have no side effects.

The component uses the ``sync`` domain (``clk``, ``rst`` active high in the Verilog); a
system with AXI's ``aresetn`` drives ``rst`` with its complement.
"""

from amaranth.hdl import Cat, Const, Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ternary_accel.hw.regmap import REGMAP, RO, RW, W1C, W1P, RegisterMapError

__all__ = ["AxiLiteSignature", "RegisterFile", "port_name", "OKAY", "SLVERR", "DATA_BITS"]

#: AXI's responses.
OKAY, SLVERR = 0b00, 0b10
#: The data bus of the slave.
DATA_BITS = 32
#: A register's only field by one of these names gives its port the register's name.
_PLAIN = ("value", "addr", "bytes")


def port_name(reg, field):
    """The register file's port of ``field`` of ``reg``: ``control_start``, or for a
    register's only field called ``value``, ``addr`` or ``bytes`` the register's name in
    lower case (``token_in``, ``prog_base_lo``)."""
    if len(reg.fields) == 1 and field.name in _PLAIN:
        return reg.name.lower()
    return f"{reg.name.lower()}_{field.name}"


class AxiLiteSignature(wiring.Signature):
    """AXI4-Lite, from the master's side (a slave's member is ``In`` of it): the five
    channels AW, W, B, AR, R with AXI's signal names.

    Parameters
    ----------
    addr_width : int
        Bits of ``awaddr`` and ``araddr``.
    data_width : int
        Bits of ``wdata`` and ``rdata`` (32 or 64).
    """

    def __init__(self, addr_width, data_width=DATA_BITS):
        if addr_width < 2:
            raise ValueError(f"addr_width must be at least 2, not {addr_width}")
        if data_width not in (32, 64):
            raise ValueError(f"data_width must be 32 or 64 (AXI4-Lite), not {data_width}")
        self.addr_width, self.data_width = addr_width, data_width
        super().__init__({
            "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wvalid": Out(1),
            "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
            "rdata": In(data_width), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })

    def __eq__(self, other):
        return (isinstance(other, AxiLiteSignature) and self.addr_width == other.addr_width
                and self.data_width == other.data_width)

    def __repr__(self):
        return f"AxiLiteSignature({self.addr_width}, {self.data_width})"


class RegisterFile(wiring.Component):
    """An AXI4-Lite slave exposing a register map's fields as ports (module docstring).

    Parameters
    ----------
    regmap : hw.regmap.RegisterMap
        The map (default: the accelerator's, :data:`~ternary_accel.hw.regmap.REGMAP`).
    constants : dict, optional
        ``{"REG.field": value}`` of constant fields (the identification registers;
        :func:`~ternary_accel.hw.regmap.build_constants`); the others read their reset
        value.
    addr_width : int, optional
        Bits of the bus's addresses (default: the map's window, ``regmap.addr_bits``).

    Attributes
    ----------
    axi : In(AxiLiteSignature)
        The bus.
    <register>_<field> : the fields' ports (:func:`port_name`).
    """

    def __init__(self, regmap=REGMAP, constants=None, *, addr_width=None):
        self.regmap = regmap
        self.addr_width = regmap.addr_bits if addr_width is None else addr_width
        if (1 << self.addr_width) < regmap.span:
            raise ValueError(f"addr_width {self.addr_width} does not reach the map's "
                             f"{regmap.span:#x}-byte window")
        self.constants = {}
        for path, value in (constants or {}).items():
            try:
                reg, field = regmap.field(path)
            except KeyError as error:
                raise ValueError(f"constants: {error.args[0]}") from None
            if not field.constant:
                raise ValueError(f"constants: {path} is not a constant field")
            if not 0 <= value < (1 << field.width):
                raise RegisterMapError(f"constants: {path} = {value} does not fit its "
                                       f"{field.width} bits")
            self.constants[path] = value
        members = {"axi": In(AxiLiteSignature(self.addr_width))}
        #: ``{"REG.field": port name}`` of every field with a port.
        self.ports = {}
        for reg in regmap:
            for f in reg.fields:
                if f.constant:
                    continue
                name = port_name(reg, f)
                if f.access == RW:
                    ports = {name: Out(unsigned(f.width), init=f.reset)}
                elif f.access == RO:
                    ports = {name: In(unsigned(f.width))}
                elif f.access == W1C:
                    ports = {name: Out(unsigned(f.width), init=f.reset),
                             f"{name}_set": In(unsigned(f.width))}
                else:
                    ports = {name: Out(unsigned(f.width))}
                for port in ports:
                    if port in members or port in ("clk", "rst"):
                        raise RegisterMapError(f"{reg.name}.{f.name}: port {port!r} is "
                                               f"taken (rename the field)")
                members.update(ports)
                self.ports[f"{reg.name}.{f.name}"] = name
        super().__init__(members)

    def port(self, path):
        """The port of field ``"REG.field"`` (a W1C field's sticky output)."""
        if path not in self.ports:
            raise KeyError(f"{path!r} has no port (a constant field or not in the map)")
        return getattr(self, self.ports[path])

    def _value(self, reg, f):
        """The field's read value (W1P reads 0)."""
        if f.constant:
            return Const(self.constants.get(f"{reg.name}.{f.name}", f.reset), f.width)
        if f.access == W1P:
            return Const(0, f.width)
        return getattr(self, port_name(reg, f))

    def elaborate(self, platform):
        m = Module()
        bus = self.axi

        # -- write address and data: two holding registers, filled independently ---------
        aw_full, aw_addr = Signal(), Signal(self.addr_width - 2)
        w_full, w_data, w_strb = Signal(), Signal(DATA_BITS), Signal(DATA_BITS // 8)
        write = Signal()            # this cycle: both held and the response can go
        # a holding register takes the next beat the cycle it empties
        m.d.comb += [write.eq(aw_full & w_full & (~bus.bvalid | bus.bready)),
                     bus.awready.eq(~aw_full | write), bus.wready.eq(~w_full | write)]
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += [aw_full.eq(1), aw_addr.eq(bus.awaddr[2:])]
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += [w_full.eq(1), w_data.eq(bus.wdata), w_strb.eq(bus.wstrb)]
        mask = Signal(DATA_BITS)    # the strobes, a bit each
        m.d.comb += mask.eq(Cat(*(b.replicate(8) for b in w_strb)))
        bits = Signal(DATA_BITS)    # the data's bits that were strobed
        m.d.comb += bits.eq(w_data & mask)
        with m.If(write):
            m.d.sync += [aw_full.eq(bus.awvalid), w_full.eq(bus.wvalid), bus.bvalid.eq(1),
                         bus.bresp.eq(SLVERR)]
        with m.Elif(bus.bvalid & bus.bready):
            m.d.sync += bus.bvalid.eq(0)

        # -- the registers: stored RW and W1C fields, pulses -----------------------------
        for reg in self.regmap:
            hit = Signal(name=f"{reg.name.lower()}_write")
            m.d.comb += hit.eq(write & (aw_addr == reg.offset >> 2))
            with m.If(hit):
                m.d.sync += bus.bresp.eq(OKAY)
            for f in reg.fields:
                if f.constant or f.access == RO:
                    continue
                port = getattr(self, port_name(reg, f))
                new = bits[f.lsb:f.lsb + f.width]
                strobed = mask[f.lsb:f.lsb + f.width]
                if f.access == RW:
                    with m.If(hit):
                        m.d.sync += port.eq((port & ~strobed) | new)
                elif f.access == W1C:
                    sets = getattr(self, f"{port_name(reg, f)}_set")
                    cleared = Signal.like(port, name=f"{port_name(reg, f)}_clear")
                    m.d.comb += cleared.eq(_when(hit, new))
                    m.d.sync += port.eq((port & ~cleared) | sets)
                else:   # W1P: one cycle
                    m.d.sync += port.eq(_when(hit, new))

        # -- read: the address taken, the word answered the next cycle -------------------
        m.d.comb += bus.arready.eq(~bus.rvalid | bus.rready)
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += bus.rvalid.eq(1)
            with m.Switch(bus.araddr[2:]):
                for reg in self.regmap:
                    with m.Case(reg.offset >> 2):
                        value = 0
                        for f in reg.fields:
                            value = value | (self._value(reg, f).as_unsigned() << f.lsb)
                        m.d.sync += [bus.rdata.eq(value), bus.rresp.eq(OKAY)]
                with m.Default():
                    m.d.sync += [bus.rdata.eq(0), bus.rresp.eq(SLVERR)]
        with m.Elif(bus.rvalid & bus.rready):
            m.d.sync += bus.rvalid.eq(0)
        return m


def _when(condition, value):
    """``value`` when ``condition`` else 0 (an AND with the replicated condition)."""
    return value & condition.replicate(len(value))
