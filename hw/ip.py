"""Vendor packaging of a system top: the Verilog, an IP-XACT description, a Vivado
packaging script and a FuseSoC core, written into one folder.

A *system top* is a :class:`amaranth.lib.wiring.Component` with AXI's port names, as
:class:`~ternary_accel.hw.rtl.system.TokenSystem` has them:

- ``aclk``, and ``aresetn`` (active low, synchronous);
- ``s_axil_*``: an AXI4-Lite slave (its register file's map: ``top.regs.regmap``,
  e.g. :data:`~ternary_accel.hw.regmap.REGMAP` of the token system);
- ``m_axi_*``: an AXI4 master (to DRAM);
- ``irq``: the interrupt, a level, active high.

:func:`write_ip` writes, for such a top:

``NAME.v``
    The Verilog (:func:`amaranth.back.verilog.convert`), top module ``NAME``.
``component.xml``
    The component in IEEE 1685-2014 IP-XACT: its VLNV, the model's ports with their
    directions and widths (from the component's signature), the bus interfaces (the
    slave ``s_axil`` with its memory map: the register window and its registers; the
    master ``m_axi`` with its address space; the clock ``aclk``, associated with both
    buses and the reset; the reset ``aresetn``, active low; the interrupt ``irq``, level
    high), named by Xilinx's bus definitions (``xilinx.com:interface:aximm:1.0``,
    ``xilinx.com:signal:clock:1.0``, ...), which Vivado and most IP-XACT tools know.
``package_ip.tcl``
    ``vivado -mode batch -source package_ip.tcl`` packages the Verilog as an IP for the
    IP integrator (``ipx::package_project``) under ``vivado_ip/``, with the same
    interfaces and memory map.
``NAME.core``
    A FuseSoC CAPI2 core (``ternary-accel:accel:NAME:VERSION``): the Verilog, targets
    ``default``, ``lint`` (Verilator, lint only) and ``synth`` (Vivado, synthesis only).

Plain Python and Amaranth's Verilog back end: nothing here runs a vendor tool.
"""

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Shape
from amaranth.lib import wiring

from ternary_accel.hw.paths import build_path
from ternary_accel.hw.regmap import REGMAP, RO, RW, W1C, W1P
from ternary_accel.hw.rtl.axi_lite import AxiLiteSignature
from ternary_accel.hw.rtl.dma import AXI4_MEMBERS

__all__ = ["Port", "SystemPorts", "IpPackage", "IpError", "system_ports", "component_xml",
           "package_tcl", "core_file", "write_ip", "regmap_of", "default_description",
           "ip_version", "core_name", "VENDOR", "LIBRARY", "DEFAULT_PART", "IPXACT_NS",
           "SLAVE", "MASTER", "CLOCK", "RESET", "INTERRUPT"]

#: The IP's vendor and library (IP-XACT's VLNV; FuseSoC's core name).
VENDOR = "ternary-accel"
LIBRARY = "accel"
#: The FPGA part of the Vivado flows when none is given: the Kria KV260's Zynq UltraScale+.
DEFAULT_PART = "xck26-sfvc784-2LV-c"
#: The IEEE 1685-2014 namespace.
IPXACT_NS = "http://www.accellera.org/XMLSchema/IPXACT/1685-2014"
_XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"

#: The bus interfaces' names (and the ports' prefixes of the two buses).
SLAVE, MASTER, CLOCK, RESET, INTERRUPT = "s_axil", "m_axi", "aclk", "aresetn", "irq"

# Xilinx's bus and abstraction definitions: (bus type VLNV, abstraction VLNV).
_AXIMM = ("xilinx.com:interface:aximm:1.0", "xilinx.com:interface:aximm_rtl:1.0")
_CLOCK = ("xilinx.com:signal:clock:1.0", "xilinx.com:signal:clock_rtl:1.0")
_RESET = ("xilinx.com:signal:reset:1.0", "xilinx.com:signal:reset_rtl:1.0")
_INTERRUPT = ("xilinx.com:signal:interrupt:1.0", "xilinx.com:signal:interrupt_rtl:1.0")

#: A register field's access in IP-XACT: (access, modifiedWriteValue, volatile).
_FIELD_ACCESS = {
    RO: ("read-only", None, True),
    RW: ("read-write", None, False),
    W1C: ("read-write", "oneToClear", True),
    W1P: ("write-only", None, False),   # a write of 1 pulses the hardware; reads 0
}


class IpError(ValueError):
    """The component is not a system top (a port missing, a bus signal unknown)."""


@dataclass(frozen=True)
class Port:
    """A port of the generated Verilog module.

    Parameters
    ----------
    name : str
    direction : str
        ``"in"`` or ``"out"`` (IP-XACT's words).
    width : int
    """

    name: str
    direction: str
    width: int


@dataclass(frozen=True)
class SystemPorts:
    """A system top's ports, sorted into the bus interfaces.

    Attributes
    ----------
    ports : tuple of Port
        Every port, in the signature's order.
    slave, master : dict
        ``{AXI signal (upper case): port name}`` of ``s_axil_*`` and ``m_axi_*``.
    slave_addr_bits, slave_data_bits, master_addr_bits, master_data_bits, id_bits : int
    """

    ports: tuple
    slave: dict
    master: dict
    slave_addr_bits: int
    slave_data_bits: int
    master_addr_bits: int
    master_data_bits: int
    id_bits: int

    def __getitem__(self, name):
        for port in self.ports:
            if port.name == name:
                return port
        raise KeyError(name)


@dataclass(frozen=True)
class IpPackage:
    """What :func:`write_ip` wrote.

    Attributes
    ----------
    directory : Path
    name : str
        The Verilog top module (and the IP's name).
    core : str
        The FuseSoC core's VLNV (``ternary-accel:accel:NAME:VERSION``).
    verilog, component, tcl, core_file : Path
    ports : SystemPorts
    """

    directory: Path
    name: str
    core: str
    verilog: Path
    component: Path
    tcl: Path
    core_file: Path
    ports: SystemPorts


def ip_version():
    """The IP's version: the installed project's (``0.1.0``), ``0.0.0`` from a tree that
    is not installed."""
    try:
        return metadata.version("ternary-accel")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def core_name(name, version=None, *, vendor=VENDOR, library=LIBRARY):
    """The FuseSoC VLNV of the IP ``name``: ``ternary-accel:accel:NAME:VERSION``."""
    return f"{vendor}:{library}:{name}:{version or ip_version()}"


def _expected_members():
    """``{prefix: {signal: flow of the top's port}}`` of the two buses (the slave's
    directions reversed from AXI4-Lite's master signature)."""
    lite = {name: ("out" if member.flow == wiring.In else "in")
            for name, member in AxiLiteSignature(2).members.items()}
    axi4 = {name: ("out" if out else "in") for name, (out, _) in AXI4_MEMBERS(1, 8, 1).items()}
    return {SLAVE: lite, MASTER: axi4}


def regmap_of(top):
    """The register map behind ``top``'s ``s_axil``: its register file's
    (``top.regs.regmap``), else the token system's :data:`~ternary_accel.hw.regmap.REGMAP`."""
    return getattr(getattr(top, "regs", None), "regmap", None) or REGMAP


def default_description(top):
    """The IP's description unless one is given: what the top is, in a line."""
    return (f"{type(top).__name__}: a ternary (BitNet b1.58) LLM accelerator with an "
            f"AXI4-Lite register slave, an AXI4 master to DRAM and a level interrupt")


def system_ports(top):
    """The ports of the system top ``top``, checked and sorted into its buses.

    Parameters
    ----------
    top : amaranth.lib.wiring.Component

    Returns
    -------
    SystemPorts

    Raises
    ------
    IpError
        If a port of a system top is missing, has the wrong direction, or a ``s_axil_*``
        or ``m_axi_*`` port is not a signal of its bus.
    """
    if not isinstance(top, wiring.Component):
        raise IpError(f"a system top must be an Amaranth wiring.Component, not "
                      f"{type(top).__name__}")
    kind = type(top).__name__
    ports = []
    for path, member, _ in top.signature.flatten(top):
        ports.append(Port("__".join(str(p) for p in path),
                          "in" if member.flow == wiring.In else "out",
                          Shape.cast(member.shape).width))
    by_name = {p.name: p for p in ports}
    for name, direction in ((CLOCK, "in"), (RESET, "in"), (INTERRUPT, "out")):
        port = by_name.get(name)
        if port is None or port.direction != direction or port.width != 1:
            raise IpError(f"{kind} is not a system top: it needs a 1-bit {direction}put "
                          f"port {name}")
    buses = {}
    for prefix, members in _expected_members().items():
        bus = {}
        for signal, direction in members.items():
            port = by_name.get(f"{prefix}_{signal}")
            if port is None:
                raise IpError(f"{kind} is not a system top: it has no port "
                              f"{prefix}_{signal}")
            if port.direction != direction:
                raise IpError(f"{kind}: port {port.name} must be an {direction}put")
            bus[signal.upper()] = port.name
        extra = [p.name for p in ports if p.name.startswith(prefix + "_")
                 and p.name not in bus.values()]
        if extra:
            raise IpError(f"{kind}: port {extra[0]} is not a signal of {prefix}")
        buses[prefix] = bus
    return SystemPorts(
        tuple(ports), buses[SLAVE], buses[MASTER],
        slave_addr_bits=by_name[f"{SLAVE}_awaddr"].width,
        slave_data_bits=by_name[f"{SLAVE}_wdata"].width,
        master_addr_bits=by_name[f"{MASTER}_awaddr"].width,
        master_data_bits=by_name[f"{MASTER}_wdata"].width,
        id_bits=by_name[f"{MASTER}_awid"].width)


# -- IP-XACT ---------------------------------------------------------------------------------

def _hex(value):
    """A SystemVerilog literal, as IP-XACT 2014's expressions take them: ``'h1000``."""
    return f"'h{value:X}"


class _Xml:
    """Elements of the ``ipxact:`` namespace."""

    @staticmethod
    def tag(name):
        return f"{{{IPXACT_NS}}}{name}"

    def sub(self, parent, tag, text=None, /, **attributes):
        element = ET.SubElement(parent, self.tag(tag),
                                {self.tag(k) if k == "id" else k: str(v)
                                 for k, v in attributes.items()})
        if text is not None:
            element.text = str(text)
        return element

    def vlnv(self, parent, tag, vlnv):
        vendor, library, name, version = vlnv.split(":")
        return self.sub(parent, tag, vendor=vendor, library=library, name=name,
                        version=version)


def _parameters(x, parent, values, prefix):
    if not values:
        return
    parameters = x.sub(parent, "parameters")
    for i, (name, value) in enumerate(values.items()):
        parameter = x.sub(parameters, "parameter", parameterId=f"{prefix}_{name}",
                          resolve="immediate")
        x.sub(parameter, "name", name)
        x.sub(parameter, "value", f'"{value}"' if isinstance(value, str) else value)


def _bus_interface(x, parent, name, types, mode, port_map, parameters=None, ref=None):
    bus = x.sub(parent, "busInterface")
    x.sub(bus, "name", name)
    x.vlnv(bus, "busType", types[0])
    abstraction = x.sub(x.sub(bus, "abstractionTypes"), "abstractionType")
    x.vlnv(abstraction, "abstractionRef", types[1])
    maps = x.sub(abstraction, "portMaps")
    for logical, physical in port_map.items():
        entry = x.sub(maps, "portMap")
        x.sub(x.sub(entry, "logicalPort"), "name", logical)
        x.sub(x.sub(entry, "physicalPort"), "name", physical)
    role = x.sub(bus, mode)
    if ref is not None:
        x.sub(role, ref[0], **{ref[0]: ref[1]})
    _parameters(x, bus, parameters, f"BUSIFPARAM_{name}")
    return bus


def _field_reset(reg, f, constants):
    """A field's reset value: a constant field's from the build (``constants``)."""
    return constants.get(f"{reg.name}.{f.name}", f.reset) if f.constant else f.reset


def _register_reset(reg, constants):
    return sum(_field_reset(reg, f, constants) << f.lsb for f in reg.fields)


def _memory_map(x, parent, regmap, constants, data_bits):
    memory_map = x.sub(x.sub(parent, "memoryMaps"), "memoryMap")
    x.sub(memory_map, "name", SLAVE)
    block = x.sub(memory_map, "addressBlock")
    x.sub(block, "name", "registers")
    if regmap.description:
        x.sub(block, "description", regmap.description)
    x.sub(block, "baseAddress", _hex(0))
    x.sub(block, "range", _hex(regmap.span))
    x.sub(block, "width", data_bits)
    x.sub(block, "usage", "register")
    for reg in regmap:
        register = x.sub(block, "register")
        x.sub(register, "name", reg.name)
        if reg.description:
            x.sub(register, "description", reg.description)
        x.sub(register, "addressOffset", _hex(reg.offset))
        x.sub(register, "size", 32)
        for f in reg.fields:
            access, modified, volatile = _FIELD_ACCESS[f.access]
            reset = _field_reset(reg, f, constants)
            field = x.sub(register, "field")
            x.sub(field, "name", f.name)
            if f.description:
                x.sub(field, "description", f.description)
            x.sub(field, "bitOffset", f.lsb)
            x.sub(x.sub(x.sub(field, "resets"), "reset"), "value", _hex(reset))
            x.sub(field, "bitWidth", f.width)
            x.sub(field, "volatile", "true" if volatile and not f.constant else "false")
            x.sub(field, "access", access)
            if modified:
                x.sub(field, "modifiedWriteValue", modified)
    return memory_map


def component_xml(top, name, *, ports=None, vendor=VENDOR, library=LIBRARY, version=None,
                  regmap=None, description=None, verilog_file=None):
    """The IEEE 1685-2014 IP-XACT ``component.xml`` of the system top ``top``.

    Parameters
    ----------
    top : amaranth.lib.wiring.Component
        The system top (:func:`system_ports`); its ``constants`` (``{"REG.field":
        value}``, if it has them) are the reset values of the constant register fields.
    name : str
        The Verilog module's name and the IP's.
    ports : SystemPorts, optional
        ``system_ports(top)``, when already known.
    vendor, library, version : str
        The VLNV (version: :func:`ip_version` by default).
    regmap : hw.regmap.RegisterMap, optional
        The registers behind ``s_axil`` (default :func:`regmap_of` ``top``).
    description : str, optional
    verilog_file : str, optional
        The Verilog's file name (default ``NAME.v``).

    Returns
    -------
    str
    """
    ports = system_ports(top) if ports is None else ports
    regmap = regmap_of(top) if regmap is None else regmap
    if 1 << ports.slave_addr_bits < regmap.span:
        raise IpError(f"{name}: {SLAVE}'s {ports.slave_addr_bits} address bits do not "
                      f"cover the register window ({regmap.span:#x} bytes)")
    version = version or ip_version()
    constants = getattr(top, "constants", None) or {}
    x = _Xml()
    ET.register_namespace("ipxact", IPXACT_NS)
    ET.register_namespace("xsi", _XSI_NS)
    root = ET.Element(x.tag("component"), {
        f"{{{_XSI_NS}}}schemaLocation": f"{IPXACT_NS} {IPXACT_NS}/index.xsd"})
    for tag, value in (("vendor", vendor), ("library", library), ("name", name),
                       ("version", version)):
        x.sub(root, tag, value)

    buses = x.sub(root, "busInterfaces")
    _bus_interface(x, buses, SLAVE, _AXIMM, "slave", ports.slave,
                   {"PROTOCOL": "AXI4LITE", "DATA_WIDTH": ports.slave_data_bits,
                    "ADDR_WIDTH": ports.slave_addr_bits},
                   ref=("memoryMapRef", SLAVE))
    _bus_interface(x, buses, MASTER, _AXIMM, "master", ports.master,
                   {"PROTOCOL": "AXI4", "DATA_WIDTH": ports.master_data_bits,
                    "ADDR_WIDTH": ports.master_addr_bits, "ID_WIDTH": ports.id_bits},
                   ref=("addressSpaceRef", MASTER))
    _bus_interface(x, buses, CLOCK, _CLOCK, "slave", {"CLK": CLOCK},
                   {"ASSOCIATED_BUSIF": f"{SLAVE}:{MASTER}", "ASSOCIATED_RESET": RESET})
    _bus_interface(x, buses, RESET, _RESET, "slave", {"RST": RESET},
                   {"POLARITY": "ACTIVE_LOW"})
    _bus_interface(x, buses, INTERRUPT, _INTERRUPT, "master", {"INTERRUPT": INTERRUPT},
                   {"SENSITIVITY": "LEVEL_HIGH"})

    space = x.sub(x.sub(root, "addressSpaces"), "addressSpace")
    x.sub(space, "name", MASTER)
    x.sub(space, "range", _hex(1 << ports.master_addr_bits))
    x.sub(space, "width", ports.master_data_bits)
    _memory_map(x, root, regmap, constants, ports.slave_data_bits)

    model = x.sub(root, "model")
    view = x.sub(x.sub(model, "views"), "view")
    x.sub(view, "name", "rtl")
    x.sub(view, "componentInstantiationRef", "verilog_rtl")
    instantiation = x.sub(x.sub(model, "instantiations"), "componentInstantiation")
    x.sub(instantiation, "name", "verilog_rtl")
    x.sub(instantiation, "language", "verilog")
    x.sub(instantiation, "moduleName", name)
    x.sub(x.sub(instantiation, "fileSetRef"), "localName", "rtl")
    model_ports = x.sub(model, "ports")
    for port in ports.ports:
        element = x.sub(model_ports, "port")
        x.sub(element, "name", port.name)
        wire = x.sub(element, "wire")
        x.sub(wire, "direction", port.direction)
        if port.width > 1:
            vector = x.sub(x.sub(wire, "vectors"), "vector")
            x.sub(vector, "left", port.width - 1)
            x.sub(vector, "right", 0)

    file_set = x.sub(x.sub(root, "fileSets"), "fileSet")
    x.sub(file_set, "name", "rtl")
    file_ = x.sub(file_set, "file")
    x.sub(file_, "name", verilog_file or f"{name}.v")
    x.sub(file_, "fileType", "verilogSource")
    x.sub(root, "description", description or default_description(top))
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(
        root, encoding="unicode") + "\n"


# -- Vivado ----------------------------------------------------------------------------------

def _tcl_word(text):
    """``text`` as one Tcl word (braced: no substitution inside)."""
    text = str(text)
    if re.fullmatch(r"[A-Za-z0-9_.:/+-]+", text):
        return text
    if "{" in text or "}" in text or "\\" in text:
        raise IpError(f"cannot quote {text!r} for Tcl")
    return "{" + text + "}"


def package_tcl(name, ports, *, vendor=VENDOR, library=LIBRARY, version=None,
                regmap=REGMAP, part=DEFAULT_PART, verilog_file=None, description=None,
                constants=None):
    """The Vivado script that packages the Verilog as an IP for the IP integrator.

    ``vivado -mode batch -source package_ip.tcl [-tclargs PART]`` creates a project in a
    temporary folder beside the script, adds the Verilog, runs ``ipx::package_project``
    into ``vivado_ip/``, makes sure of the bus interfaces (the two AXI buses, the clock
    associated with both and the reset, the active-low reset, the level-high interrupt),
    sets the memory map of ``s_axil`` (the register window and its registers), saves the
    IP and removes the project. Add ``vivado_ip/`` to a project's IP repositories.

    Vivado's IP versions are ``MAJOR.MINOR``: the first two numbers of ``version``.

    Returns
    -------
    str
    """
    version = version or ip_version()
    vivado_version = ".".join(version.split(".")[:2])
    constants = constants or {}
    verilog_file = verilog_file or f"{name}.v"
    q = _tcl_word
    lines = [
        f"# Vivado IP packaging of {name} ({vendor}:{library}:{name}:{vivado_version}),",
        "# generated by ternary-accel ip (hw/ip.py); do not edit.",
        "#   vivado -mode batch -source package_ip.tcl [-tclargs PART]",
        "# writes the IP into vivado_ip/ beside this script: add that folder to a project's",
        "# IP repositories (Settings > IP > Repository) and the IP integrator lists it.",
        "",
        "set here [file normalize [file dirname [info script]]]",
        f"set part {q(part)}",
        "if {$argc > 0} { set part [lindex $argv 0] }",
        "set ip_dir [file join $here vivado_ip]",
        "# the packaging project: a temporary folder, removed at the end",
        "set project_dir [file join $here .vivado_project_[pid]]",
        "",
        "create_project -force -part $part ip_packaging $project_dir",
        f"add_files -norecurse [file join $here {q(verilog_file)}]",
        f"set_property top {q(name)} [current_fileset]",
        "update_compile_order -fileset sources_1",
        "file delete -force $ip_dir",
        f"ipx::package_project -root_dir $ip_dir -vendor {q(vendor)} -library {q(library)} \\",
        "    -taxonomy /UserIP -import_files -set_current true",
        "set core [ipx::current_core]",
        f"set_property name {q(name)} $core",
        f"set_property version {q(vivado_version)} $core",
        f"set_property display_name {q(name)} $core",
        f"set_property description {q(description or name)} $core",
        "",
        "# The interfaces, whatever the packager inferred from the port names.",
        "proc bus_interface {core name bus abstraction mode} {",
        "    set bif [ipx::get_bus_interfaces $name -of_objects $core]",
        "    if {$bif eq \"\"} { set bif [ipx::add_bus_interface $name $core] }",
        "    set_property bus_type_vlnv $bus $bif",
        "    set_property abstraction_type_vlnv $abstraction $bif",
        "    set_property interface_mode $mode $bif",
        "    foreach map [ipx::get_port_maps -of_objects $bif] {",
        "        ipx::remove_port_map [get_property name $map] $bif",
        "    }",
        "    return $bif",
        "}",
        "proc port_map {bif logical physical} {",
        "    set_property physical_name $physical [ipx::add_port_map $logical $bif]",
        "}",
        "proc bus_parameter {bif name value} {",
        "    set parameter [ipx::get_bus_parameters $name -of_objects $bif]",
        "    if {$parameter eq \"\"} { set parameter [ipx::add_bus_parameter $name $bif] }",
        "    set_property value $value $parameter",
        "}",
        "# Interfaces the packager inferred under other names: removed.",
        f"set names {{{SLAVE} {MASTER} {CLOCK} {RESET} {INTERRUPT}}}",
        "foreach bif [ipx::get_bus_interfaces -of_objects $core] {",
        "    if {[get_property name $bif] ni $names} {",
        "        ipx::remove_bus_interface [get_property name $bif] $core",
        "    }",
        "}",
        "",
    ]
    interfaces = (
        (SLAVE, _AXIMM, "slave", ports.slave, {}),
        (MASTER, _AXIMM, "master", ports.master, {}),
        (CLOCK, _CLOCK, "slave", {"CLK": CLOCK},
         {"ASSOCIATED_BUSIF": f"{SLAVE}:{MASTER}", "ASSOCIATED_RESET": RESET}),
        (RESET, _RESET, "slave", {"RST": RESET}, {"POLARITY": "ACTIVE_LOW"}),
        (INTERRUPT, _INTERRUPT, "master", {"INTERRUPT": INTERRUPT},
         {"SENSITIVITY": "LEVEL_HIGH"}),
    )
    for bif, (bus, abstraction), mode, port_map, parameters in interfaces:
        lines.append(f"set bif [bus_interface $core {bif} {bus} {abstraction} {mode}]")
        lines += [f"port_map $bif {logical} {physical}"
                  for logical, physical in port_map.items()]
        lines += [f"bus_parameter $bif {key} {q(value)}" for key, value in parameters.items()]
        lines.append("")
    lines += [
        f"# The register window of {SLAVE} ({regmap.span:#x} bytes) and its registers.",
        f"if {{[ipx::get_memory_maps {SLAVE} -of_objects $core] ne \"\"}} {{",
        f"    ipx::remove_memory_map {SLAVE} $core",
        "}",
        f"set memory_map [ipx::add_memory_map {SLAVE} $core]",
        f"set_property slave_memory_map_ref {SLAVE} [ipx::get_bus_interfaces {SLAVE} "
        "-of_objects $core]",
        "set block [ipx::add_address_block registers $memory_map]",
        f"set_property range {regmap.span} $block",
        f"set_property width {ports.slave_data_bits} $block",
        "set_property usage register $block",
    ]
    for reg in regmap:
        lines.append(f"set register [ipx::add_register {reg.name} $block]")
        lines.append(f"set_property address_offset {reg.offset:#x} $register")
        lines.append("set_property size 32 $register")
        if reg.description:
            lines.append(f"set_property description {q(reg.description)} $register")
        # Vivado keeps a register's reset value as its parameter RESET_VALUE
        lines.append(f"set_property value {_register_reset(reg, constants):#010x} "
                     "[ipx::add_register_parameter RESET_VALUE $register]")
        for f in reg.fields:
            access, modified, _ = _FIELD_ACCESS[f.access]
            lines.append(f"set field [ipx::add_field {f.name} $register]")
            lines.append(f"set_property bit_offset {f.lsb} $field; "
                         f"set_property bit_width {f.width} $field; "
                         f"set_property access {access} $field")
            if modified:
                lines.append(f"set_property modified_write_value {modified} $field")
    lines += [
        "",
        "ipx::create_xgui_files $core",
        "ipx::update_checksums $core",
        "ipx::check_integrity $core",
        "ipx::save_core $core",
        "close_project",
        "file delete -force $project_dir",
        'puts "IP packaged: $ip_dir"',
        "",
    ]
    return "\n".join(lines)


# -- FuseSoC ---------------------------------------------------------------------------------

def _yaml_list(items):
    return "[" + ", ".join(_yaml_scalar(i) for i in items) + "]"


def _yaml_scalar(text):
    text = str(text)
    if re.fullmatch(r"[A-Za-z0-9_./+=-]+", text) and not text.startswith("-"):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def core_file(name, *, vendor=VENDOR, library=LIBRARY, version=None, verilog_file=None,
              lint_options=(), part=DEFAULT_PART, description=None):
    """The FuseSoC CAPI2 core of the Verilog ``NAME.v``.

    Targets: ``default`` (the Verilog and its top), ``lint`` (edalize's lint flow:
    Verilator ``--lint-only`` with ``lint_options``, the ``verilator`` on ``PATH``) and
    ``synth`` (Vivado on ``part``, synthesis only: ``pnr: none``).

    Returns
    -------
    str
    """
    verilog_file = verilog_file or f"{name}.v"
    lines = [
        "CAPI=2:",
        "# generated by ternary-accel ip (hw/ip.py); do not edit.",
        f"name: {core_name(name, version, vendor=vendor, library=library)}",
        f"description: {_yaml_scalar(description or name)}",
        "",
        "filesets:",
        "  rtl:",
        "    files:",
        f"      - {_yaml_scalar(verilog_file)}",
        "    file_type: verilogSource",
        "",
        "targets:",
        "  default: &default",
        "    filesets: [rtl]",
        f"    toplevel: {name}",
        "",
        "  lint:",
        "    <<: *default",
        "    description: Verilator, lint only",
        "    flow: lint",
        "    flow_options:",
        "      tool: verilator",
        f"      verilator_options: {_yaml_list(lint_options)}",
        "",
        "  synth:",
        "    <<: *default",
        "    description: Vivado synthesis (no place and route)",
        "    default_tool: vivado",
        "    tools:",
        "      vivado:",
        f"        part: {_yaml_scalar(part)}",
        "        pnr: none",
        "",
    ]
    return "\n".join(lines)


def _module_ports(text, name):
    """The port names of module ``name`` in the Verilog ``text``."""
    match = re.search(rf"^module {re.escape(name)}\((.*?)\);", text, re.M | re.S)
    if match is None:
        raise IpError(f"no module {name} in the Verilog")
    return [port.strip() for port in match.group(1).split(",") if port.strip()]


# -- all of it -------------------------------------------------------------------------------

def write_ip(top, directory=None, *, name, vendor=VENDOR, library=LIBRARY, version=None,
             regmap=None, part=DEFAULT_PART, lint_options=(), description=None):
    """Write the Verilog, ``component.xml``, ``package_ip.tcl`` and ``NAME.core`` of the
    system top ``top`` into ``directory`` (module docstring).

    Parameters
    ----------
    top : amaranth.lib.wiring.Component
        A system top (:func:`system_ports`).
    directory : path-like, optional
        Default ``build/ip/NAME`` (:func:`~ternary_accel.hw.paths.build_path`).
    name : str
        The Verilog top module and the IP's name (a Verilog identifier).
    vendor, library, version : str
        The VLNV (version: :func:`ip_version` by default).
    regmap : hw.regmap.RegisterMap, optional
        The registers behind ``s_axil`` (default :func:`regmap_of` ``top``).
    part : str
        The FPGA part of the Vivado flows.
    lint_options : sequence of str
        Verilator's options of the core's ``lint`` target (``-Wall`` and the project's
        waivers of Amaranth's Verilog: the caller's, from ``sim.verilator``).
    description : str, optional

    Returns
    -------
    IpPackage

    Raises
    ------
    IpError
        If ``top`` is not a system top or ``name`` not an identifier.
    """
    if not (isinstance(name, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)):
        raise IpError(f"the IP's name must be a Verilog identifier, not {name!r}")
    version = version or ip_version()
    description = description or default_description(top)
    if not re.fullmatch(r"\d+(\.\d+)*", version):
        raise IpError(f"version must be numbers with dots (0.1.0), not {version!r}")
    ports = system_ports(top)
    regmap = regmap_of(top) if regmap is None else regmap
    directory = Path(directory) if directory is not None else build_path("ip", name)
    verilog_file = f"{name}.v"
    xml = component_xml(top, name, ports=ports, vendor=vendor, library=library,
                        version=version, regmap=regmap, description=description,
                        verilog_file=verilog_file)
    text = verilog.convert(top, name=name, emit_src=False)
    extra = sorted(set(_module_ports(text, name)) - {p.name for p in ports.ports})
    if extra:
        raise IpError(f"the Verilog of {type(top).__name__} has ports besides its "
                      f"signature's: {', '.join(extra)} (a system top clocks its domains "
                      f"from aclk and aresetn)")
    directory.mkdir(parents=True, exist_ok=True)
    paths = IpPackage(directory, name, core_name(name, version, vendor=vendor, library=library),
                      verilog=directory / verilog_file, component=directory / "component.xml",
                      tcl=directory / "package_ip.tcl", core_file=directory / f"{name}.core",
                      ports=ports)
    paths.verilog.write_text(text)
    paths.component.write_text(xml)
    paths.tcl.write_text(package_tcl(
        name, ports, vendor=vendor, library=library, version=version, regmap=regmap,
        part=part, verilog_file=verilog_file, description=description,
        constants=getattr(top, "constants", None)))
    paths.core_file.write_text(core_file(
        name, vendor=vendor, library=library, version=version, verilog_file=verilog_file,
        lint_options=lint_options, part=part, description=description))
    return paths
