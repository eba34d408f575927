"""The vendor packaging of a system top (``hw/ip.py``, ``ternary-accel ip``): the IP-XACT
``component.xml`` against the Verilog it describes (every port of the top module with its
direction and width, and nothing else; the bus interfaces' port maps; the register
window), the FuseSoC core, the Vivado script; refusals; and under Verilator, FuseSoC's
``lint`` target on a small layer system and on the token system of the ``MICRO`` model
(``tests/token_models.py``).

The structure tests run on a stand-in with a system top's ports (fast), a small
:class:`~ternary_accel.hw.rtl.layer_system.LayerSystem` and, marked slow,
:class:`~ternary_accel.hw.rtl.system.TokenSystem`."""

import re
import xml.etree.ElementTree as ET

import pytest
import yaml
from amaranth.hdl import ClockDomain, ClockSignal, Module, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from cli_runner import invoke, usage_error
from ternary_accel.hw import ip
from ternary_accel.hw.regmap import MAGIC, REGMAP
from ternary_accel.hw.rtl.axi_lite import AxiLiteSignature
from ternary_accel.hw.rtl.dma import AXI4_MEMBERS

NS = {"ipxact": ip.IPXACT_NS}


class StandIn(wiring.Component):
    """A system top's ports (``aclk``, ``aresetn``, ``s_axil_*``, ``m_axi_*``, ``irq``)
    around a register: the packaging's fast subject. ``drop`` leaves a port out;
    ``extra`` adds an input."""

    def __init__(self, *, drop=(), extra=None, bus_bits=64, addr_width=40):
        members = {"aclk": In(1), "aresetn": In(1)}
        for name, member in AxiLiteSignature(REGMAP.addr_bits).members.items():
            members[f"s_axil_{name}"] = (In if member.flow == Out else Out)(member.shape)
        for name, (out, width) in AXI4_MEMBERS(addr_width, bus_bits, 2).items():
            members[f"m_axi_{name}"] = (Out if out else In)(width)
        members["irq"] = Out(1)
        if extra:
            members[extra] = In(1)
        for name in drop:
            del members[name]
        self.constants = {"ID.magic": MAGIC}
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain("sync")
        m.d.comb += [ClockSignal("sync").eq(self.aclk), ResetSignal("sync").eq(~self.aresetn)]
        pending = Signal()
        m.d.sync += pending.eq(self.s_axil_awvalid)
        m.d.comb += self.irq.eq(pending)
        return m


def _small_layer_system():
    from ternary_accel.hw.params import EngineParams
    from ternary_accel.hw.rtl.layer_system import LayerSystem
    params = EngineParams(lanes=4, rows=4, output_stage=True, weight_port_bits=64)
    return LayerSystem(params, act_words=64, bus_bits=64, addr_width=32)


def _micro_system():
    from token_models import micro_decoder
    from ternary_accel.hw import program as P
    from ternary_accel.hw.rtl.system import TokenSystem
    from ternary_accel.model import hwnum as H
    program = P.make_program(micro_decoder(H.GROUPED_HEAD),
                             P.token_engine(8, 4, hidden=32, ffn=64), positions=8)
    return TokenSystem(program, 128, addr_width=32)


TOPS = {"stand_in": StandIn, "layer": _small_layer_system, "token": _micro_system}


@pytest.fixture(scope="module", params=["stand_in", "layer",
                                        pytest.param("token", marks=pytest.mark.slow)])
def package(request, tmp_path_factory):
    from ternary_accel.sim.fusesoc import LINT_OPTIONS
    top = TOPS[request.param]()
    name = f"{request.param}_system"
    return top, ip.write_ip(top, tmp_path_factory.mktemp(name), name=name,
                            lint_options=LINT_OPTIONS)


def _verilog_ports(text, module):
    """``{name: (direction, width)}`` of ``module``'s port declarations."""
    body = re.search(rf"^module {module}\(.*?^endmodule", text, re.S | re.M).group(0)
    ports = {}
    for direction, msb, name in re.findall(r"^\s*(input|output)\s+(?:\[(\d+):0\]\s+)?(\w+);",
                                           body, re.M):
        ports[name] = ("in" if direction == "input" else "out", int(msb or 0) + 1)
    return ports


def _model_ports(root):
    ports = {}
    for port in root.findall("ipxact:model/ipxact:ports/ipxact:port", NS):
        wire = port.find("ipxact:wire", NS)
        vector = wire.find("ipxact:vectors/ipxact:vector", NS)
        width = 1 if vector is None else (int(vector.find("ipxact:left", NS).text)
                                          - int(vector.find("ipxact:right", NS).text) + 1)
        ports[port.find("ipxact:name", NS).text] = (wire.find("ipxact:direction", NS).text,
                                                     width)
    return ports


def _bus(root, name):
    for bus in root.findall("ipxact:busInterfaces/ipxact:busInterface", NS):
        if bus.find("ipxact:name", NS).text == name:
            return bus
    raise AssertionError(f"no bus interface {name}")


def _port_map(bus):
    return {m.find("ipxact:logicalPort/ipxact:name", NS).text:
            m.find("ipxact:physicalPort/ipxact:name", NS).text
            for m in bus.findall(".//ipxact:portMap", NS)}


def _bus_parameters(bus):
    return {p.find("ipxact:name", NS).text: p.find("ipxact:value", NS).text.strip('"')
            for p in bus.findall("ipxact:parameters/ipxact:parameter", NS)}


# -- component.xml ---------------------------------------------------------------------------

def test_the_component_parses_with_its_vlnv(package):
    _, pkg = package
    root = ET.parse(pkg.component).getroot()
    assert root.tag == f"{{{ip.IPXACT_NS}}}component"
    assert [root.find(f"ipxact:{key}", NS).text for key in
            ("vendor", "library", "name", "version")] == \
        [ip.VENDOR, ip.LIBRARY, pkg.name, ip.ip_version()]
    assert root.find("ipxact:model/ipxact:instantiations/ipxact:componentInstantiation/"
                     "ipxact:moduleName", NS).text == pkg.name
    files = [f.find("ipxact:name", NS).text for f in root.findall(".//ipxact:file", NS)]
    assert files == [pkg.verilog.name]


def test_every_verilog_port_is_in_the_component_with_its_direction_and_width(package):
    _, pkg = package
    verilog_ports = _verilog_ports(pkg.verilog.read_text(), pkg.name)
    assert {"aclk", "aresetn", "irq", "s_axil_awaddr", "m_axi_rdata"} <= set(verilog_ports)
    assert _model_ports(ET.parse(pkg.component).getroot()) == verilog_ports


def test_the_bus_interfaces_map_real_ports(package):
    top, pkg = package
    root = ET.parse(pkg.component).getroot()
    ports = _model_ports(root)
    slave, master = _bus(root, "s_axil"), _bus(root, "m_axi")
    for bus, prefix in ((slave, "s_axil_"), (master, "m_axi_")):
        mapped = _port_map(bus)
        assert set(mapped.values()) == {p for p in ports if p.startswith(prefix)}
        assert all(physical == prefix + logical.lower()
                   for logical, physical in mapped.items())
        assert bus.find("ipxact:busType", NS).get("name") == "aximm"
    assert {"AWID", "AWLEN", "WLAST", "RID", "ARQOS"} <= set(_port_map(master))
    assert slave.find("ipxact:slave/ipxact:memoryMapRef", NS).get("memoryMapRef") == "s_axil"
    assert master.find("ipxact:master/ipxact:addressSpaceRef", NS).get(
        "addressSpaceRef") == "m_axi"
    assert _bus_parameters(slave)["PROTOCOL"] == "AXI4LITE"
    assert _bus_parameters(master) == {
        "PROTOCOL": "AXI4", "DATA_WIDTH": str(ports["m_axi_wdata"][1]),
        "ADDR_WIDTH": str(ports["m_axi_awaddr"][1]), "ID_WIDTH": str(ports["m_axi_awid"][1])}
    clock, reset, irq = _bus(root, "aclk"), _bus(root, "aresetn"), _bus(root, "irq")
    assert _port_map(clock) == {"CLK": "aclk"}
    assert _bus_parameters(clock) == {"ASSOCIATED_BUSIF": "s_axil:m_axi",
                                      "ASSOCIATED_RESET": "aresetn"}
    assert _port_map(reset) == {"RST": "aresetn"}
    assert _bus_parameters(reset) == {"POLARITY": "ACTIVE_LOW"}
    assert _port_map(irq) == {"INTERRUPT": "irq"}
    assert _bus_parameters(irq) == {"SENSITIVITY": "LEVEL_HIGH"}
    assert irq.find("ipxact:master", NS) is not None
    space = root.find("ipxact:addressSpaces/ipxact:addressSpace", NS)
    assert space.find("ipxact:range", NS).text == f"'h{1 << ports['m_axi_awaddr'][1]:X}"
    assert space.find("ipxact:width", NS).text == str(ports["m_axi_wdata"][1])


def test_the_memory_map_is_the_register_window(package):
    top, pkg = package
    regmap = ip.regmap_of(top)
    root = ET.parse(pkg.component).getroot()
    block = root.find("ipxact:memoryMaps/ipxact:memoryMap/ipxact:addressBlock", NS)
    assert block.find("ipxact:range", NS).text == f"'h{regmap.span:X}"
    assert block.find("ipxact:width", NS).text == "32"
    registers = block.findall("ipxact:register", NS)
    offsets = [(r.find("ipxact:name", NS).text,
                int(r.find("ipxact:addressOffset", NS).text[2:], 16)) for r in registers]
    assert offsets == [(r.name, r.offset) for r in regmap]
    magic = registers[0].find("ipxact:field", NS)
    assert magic.find("ipxact:name", NS).text == "magic"
    assert magic.find(".//ipxact:value", NS).text == f"'h{regmap['ID'].reset:X}"
    for register, reg in zip(registers, regmap):
        for field, f in zip(register.findall("ipxact:field", NS), reg.fields, strict=True):
            assert (int(field.find("ipxact:bitOffset", NS).text),
                    int(field.find("ipxact:bitWidth", NS).text)) == (f.lsb, f.width)
            if f.constant and f"{reg.name}.{f.name}" in top.constants:
                assert int(field.find(".//ipxact:value", NS).text[2:], 16) == \
                    top.constants[f"{reg.name}.{f.name}"]
    clear = [f for f in root.iter(f"{{{ip.IPXACT_NS}}}field")
             if f.find("ipxact:modifiedWriteValue", NS) is not None]
    assert clear and all(f.find("ipxact:modifiedWriteValue", NS).text == "oneToClear"
                         for f in clear)


# -- the FuseSoC core and the Vivado script --------------------------------------------------

def test_the_core_is_capi2_with_the_verilog_and_its_top(package):
    from ternary_accel.sim.fusesoc import LINT_OPTIONS
    _, pkg = package
    text = pkg.core_file.read_text()
    assert text.startswith("CAPI=2:\n")
    core = yaml.safe_load(text)
    assert core["name"] == pkg.core == f"ternary-accel:accel:{pkg.name}:{ip.ip_version()}"
    assert core["filesets"]["rtl"] == {"files": [pkg.verilog.name],
                                       "file_type": "verilogSource"}
    assert (pkg.core_file.parent / pkg.verilog.name).exists()
    targets = core["targets"]
    assert set(targets) == {"default", "lint", "synth"}
    for target in targets.values():
        assert target["filesets"] == ["rtl"] and target["toplevel"] == pkg.name
    assert targets["lint"]["flow"] == "lint"      # edalize's flow API
    assert targets["lint"]["flow_options"] == {"tool": "verilator",
                                               "verilator_options": list(LINT_OPTIONS)}
    assert targets["synth"]["tools"]["vivado"] == {"part": ip.DEFAULT_PART, "pnr": "none"}


def test_the_vivado_script_names_the_files_ports_and_window(package):
    top, pkg = package
    regmap = ip.regmap_of(top)
    tcl = pkg.tcl.read_text()
    assert f"add_files -norecurse [file join $here {pkg.verilog.name}]" in tcl
    assert f"set_property top {pkg.name} [current_fileset]" in tcl
    assert "ipx::package_project" in tcl and "ipx::save_core" in tcl
    mapped = set(re.findall(r"^port_map \$bif \w+ (\w+)$", tcl, re.M))
    assert mapped == set(_verilog_ports(pkg.verilog.read_text(), pkg.name))
    assert f"set_property range {regmap.span} $block" in tcl
    assert "bus_parameter $bif POLARITY ACTIVE_LOW" in tcl
    assert "bus_parameter $bif SENSITIVITY LEVEL_HIGH" in tcl
    assert "bus_parameter $bif ASSOCIATED_BUSIF s_axil:m_axi" in tcl
    assert tcl.count("ipx::add_register ") == len(regmap)
    assert tcl.count("{") == tcl.count("}")


#: Vivado's commands that ``package_ip.tcl`` calls, as plain Tcl: objects in a tree
#: (``core/bus_interface/s_axil/port_map/AWADDR``), every property set printed. The
#: packager's inference is played by two interfaces ``ipx::package_project`` makes.
VIVADO_STUBS = r"""
set ::tree [dict create]
proc children {parent kind} {
    if {[dict exists $::tree "$parent|$kind"]} { return [dict get $::tree "$parent|$kind"] }
    return {}
}
proc ipx_get {kind args} {
    set name *; set parent ""
    for {set i 0} {$i < [llength $args]} {incr i} {
        set arg [lindex $args $i]
        if {$arg eq "-of_objects"} { incr i; set parent [lindex $args $i] } else { set name $arg }
    }
    set found {}
    foreach o [children $parent $kind] {
        if {[string match $name [lindex [split $o /] end]]} { lappend found $o }
    }
    return $found
}
proc ipx_add {kind name parent} {
    if {[ipx_get $kind $name -of_objects $parent] ne ""} { error "$kind $name exists" }
    set o "$parent/$kind/$name"
    dict lappend ::tree "$parent|$kind" $o
    return $o
}
proc ipx_remove {kind name parent} {
    if {[ipx_get $kind $name -of_objects $parent] eq ""} { error "no $kind $name" }
    set kept {}
    foreach o [children $parent $kind] {
        if {[lindex [split $o /] end] ne $name} { lappend kept $o }
    }
    dict set ::tree "$parent|$kind" $kept
}
namespace eval ipx {}
foreach kind {bus_interface port_map bus_parameter memory_map address_block register
              register_parameter field} {
    proc ipx::get_${kind}s {args} "ipx_get $kind {*}\$args"
    proc ipx::add_$kind {name parent} "ipx_add $kind \$name \$parent"
    proc ipx::remove_$kind {name parent} "ipx_remove $kind \$name \$parent"
}
proc ipx::package_project {args} {
    set bif [ipx::add_bus_interface s_axil core]
    ipx::add_port_map AWADDR $bif
    ipx::add_bus_interface aresetn_rst core
}
proc ipx::current_core {} { return core }
foreach command {create_xgui_files update_checksums check_integrity save_core} {
    proc ipx::$command {core} {}
}
proc create_project {args} { puts "create_project $args" }
proc add_files {args} { puts "add_files $args" }
proc current_fileset {} { return sources_1 }
proc update_compile_order {args} {}
proc close_project {} {}
proc set_property {name value object} { puts [list set_property $name $value $object] }
proc get_property {name object} { return [lindex [split $object /] end] }
"""


def test_the_vivado_script_runs_on_stubs_of_vivados_commands(package, tmp_path):
    """``package_ip.tcl`` under ``tclsh`` with :data:`VIVADO_STUBS`: it runs to the end
    (its Tcl is sound), leaves exactly the five interfaces, maps every port once and sets
    the register window. Vivado's own behaviour is not tested (no Vivado here)."""
    import shutil
    import subprocess
    tclsh = shutil.which("tclsh")
    if tclsh is None:
        pytest.skip("no tclsh (apt-get install tcl)")
    top, pkg = package
    runner = tmp_path / "run.tcl"
    runner.write_text(VIVADO_STUBS + f"\nsource {{{pkg.tcl}}}\n"
                      "foreach bif [ipx::get_bus_interfaces -of_objects core] "
                      "{ puts [list interface $bif] }\n")
    proc = subprocess.run([tclsh, str(runner)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [eval_tcl_list(line) for line in proc.stdout.splitlines()]
    assert proc.stdout.count("IP packaged: ") == 1
    interfaces = [line[1].split("/")[-1] for line in lines if line[0] == "interface"]
    assert interfaces == ["s_axil", "m_axi", "aclk", "aresetn", "irq"]
    physical = [line[2] for line in lines if line[:2] == ["set_property", "physical_name"]]
    assert sorted(physical) == sorted(_verilog_ports(pkg.verilog.read_text(), pkg.name))
    assert ["set_property", "range", str(ip.regmap_of(top).span),
            "core/memory_map/s_axil/address_block/registers"] in lines


def eval_tcl_list(line):
    """A line of ``puts [list ...]`` as its words (no braces in them here)."""
    return line.replace("{", "").replace("}", "").split()


# -- refusals --------------------------------------------------------------------------------

@pytest.mark.parametrize("drop, message", [
    (("irq",), "1-bit output port irq"),
    (("aresetn",), "1-bit input port aresetn"),
    (("m_axi_rlast",), "no port m_axi_rlast"),
])
def test_a_component_without_a_system_tops_ports_is_refused(drop, message):
    with pytest.raises(ip.IpError, match=message):
        ip.system_ports(StandIn(drop=drop))


def test_a_port_that_is_no_bus_signal_is_refused():
    with pytest.raises(ip.IpError, match="m_axi_awuser is not a signal of m_axi"):
        ip.system_ports(StandIn(extra="m_axi_awuser"))


class Unclocked(StandIn):
    """A register in a domain of its own: Amaranth adds ``clk`` and ``rst`` ports."""

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.irq.eq(self.s_axil_awvalid)
        return m


def test_a_top_whose_verilog_has_ports_of_its_own_is_refused(tmp_path):
    with pytest.raises(ip.IpError, match="besides its signature's: clk, rst"):
        ip.write_ip(Unclocked(), tmp_path, name="unclocked")


def test_a_bad_name_or_version_is_refused(tmp_path):
    with pytest.raises(ip.IpError, match="Verilog identifier"):
        ip.write_ip(StandIn(), tmp_path, name="1top")
    with pytest.raises(ip.IpError, match="numbers with dots"):
        ip.write_ip(StandIn(), tmp_path, name="top", version="v1")


def test_ip_writes_the_package_of_the_layer_system(tmp_path):
    result = invoke("ip", "--lanes", 4, "--rows", 4, "--act-words", 64, "--bus-bits", 64,
                    "--addr-width", 32, "--name", "accel", "-o", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(tmp_path / name) for name in
                                     ("accel.v", "component.xml", "package_ip.tcl",
                                      "accel.core")]
    assert "LayerSystem as IP ternary-accel:accel:accel:" in result.stderr
    assert "m_axi 64 data bits, 32-bit addresses" in result.stderr
    root = ET.parse(tmp_path / "component.xml").getroot()
    assert _model_ports(root) == _verilog_ports((tmp_path / "accel.v").read_text(), "accel")


@pytest.mark.parametrize("argv, fragment", [
    (["--bus-bits", "48"], "--bus-bits must be a power of two"),
    (["--bus-bits", "2048"], "--bus-bits must be a power of two"),
    (["--addr-width", "8"], "--addr-width must be in 12..64"),
    (["--name", "1top"], "--name must be a Verilog identifier"),
    (["--ip-version", "one"], "--ip-version must be numbers with dots"),
    (["--vendor", "a b"], "--vendor must be"),
    (["--top", "nope"], "--top"),
    (["--checkpoint", "x"], "--checkpoint applies only with --top token"),
    (["--top", "token", "--tokens", "4"], "--tokens applies only with --top layer"),
    (["--tokens", "300"], "--tokens must be at most 256"),
    (["--top", "token", "--checkpoint", "/nonexistent"], "--checkpoint: no folder"),
])
def test_ip_bad_flags_are_usage_errors(argv, fragment):
    usage_error(invoke("ip", *argv), fragment)


# -- FuseSoC lint ----------------------------------------------------------------------------

@pytest.mark.verilator
@pytest.mark.parametrize("top", ["layer", "token"])
def test_fusesoc_lints_the_system(tmp_path, top):
    """``fusesoc run --target lint`` on a packaged small layer system and the token
    system of MICRO: Verilator lints the Verilog clean with the core's options."""
    from ternary_accel.sim.fusesoc import LINT_OPTIONS, run_target
    pkg = ip.write_ip(TOPS[top](), tmp_path / "ip", name=f"{top}_system",
                      lint_options=LINT_OPTIONS)
    status, output = run_target(pkg.directory, pkg.core, build_root=tmp_path / "fusesoc",
                                timeout=600)
    assert status == 0, output[-4000:]
    assert "ERROR" not in output and "%Warning" not in output, output[-4000:]


@pytest.mark.verilator
def test_fusesoc_lint_fails_on_a_warning(tmp_path):
    """The lint target is a check: without the waivers, -Wall's warnings on Amaranth's
    Verilog fail it."""
    from ternary_accel.sim.fusesoc import run_target
    pkg = ip.write_ip(StandIn(), tmp_path / "ip", name="stand_in", lint_options=["-Wall"])
    status, output = run_target(pkg.directory, pkg.core, build_root=tmp_path / "fusesoc",
                                timeout=300)
    assert status != 0 and "%Warning" in output, output[-4000:]
