"""The accelerator on a LiteX SoC's buses: :func:`add_accelerator`.

A *system component* is an Amaranth ``wiring.Component`` with the ports a Vivado block
design expects (:class:`~ternary_accel.hw.rtl.system.TokenSystem`, the layer system):
``aclk``, ``aresetn`` (active low, synchronous), ``s_axil_*`` (an AXI4-Lite slave: the
register file), ``m_axi_*`` (an AXI4 master: the DMA; its address, data and ID widths
read from the ports) and ``irq``. :func:`add_accelerator` writes its Verilog
(``amaranth.back.verilog.convert``), instantiates it in the SoC and connects it:

- the AXI4-Lite slave on the SoC's bus, in an uncached region of the register map's
  span (LiteX converts from its Wishbone bus);
- the AXI4 master to main RAM: a LiteDRAM crossbar port at the master's data width
  through LiteDRAM's AXI-to-native bridge when the SoC has LiteDRAM (``soc.sdram``);
  otherwise a master of the SoC's bus (``soc.bus.add_master``: integrated main RAM);
- ``irq`` to the CPU's interrupt controller through an event source (a level:
  ``ev_status``/``ev_pending``/``ev_enable`` CSRs), when the SoC has interrupts.

>>> from ternary_accel.soc.accelerator import add_accelerator
>>> accel = add_accelerator(soc, system, name="accel", verilog_dir=build / "accel")
>>> soc.bus.regions["accel"].origin        # the registers' base (mem.h: ACCEL_BASE)

The DMA's addresses are the CPU's: a buffer at ``main_ram + x`` is given to the
accelerator as that address (the bridge subtracts main RAM's origin). The DMA does not
go through the CPU's caches: the firmware flushes its data cache and the L2 cache
before it reads what the accelerator wrote (``flush_cpu_dcache``, ``flush_l2_cache``).
"""

import hashlib
from pathlib import Path

__all__ = ["add_accelerator", "system_ports", "dma_widths", "write_verilog",
           "AXI_CHANNELS", "channel_field"]

#: AXI's channels, by the prefix of a port's name after ``s_axil_`` / ``m_axi_``
#: (``awaddr`` is the ``aw`` channel's ``addr``): the two-letter ones first.
AXI_CHANNELS = ("aw", "ar", "w", "b", "r")


def channel_field(port):
    """``(channel, field)`` of an AXI port name without its prefix: ``"awaddr"`` ->
    ``("aw", "addr")``, ``"rdata"`` -> ``("r", "data")``.

    Raises
    ------
    ValueError
        If the name starts with no AXI channel.
    """
    for channel in AXI_CHANNELS:
        if port.startswith(channel) and len(port) > len(channel):
            return channel, port[len(channel):]
    raise ValueError(f"{port!r} is not an AXI port (channel then field, e.g. 'awaddr')")


def system_ports(system):
    """``{port: (is_output, width)}`` of a system component, from its signature.

    Raises
    ------
    TypeError
        If ``system`` lacks one of the ports the wrapper connects (``aclk``, ``aresetn``,
        ``irq``, ``s_axil_*``, ``m_axi_*``).
    """
    from amaranth.hdl import Shape
    from amaranth.lib.wiring import Out
    members = getattr(getattr(system, "signature", None), "members", None)
    if members is None:
        raise TypeError(f"the system must be an Amaranth wiring.Component, not "
                        f"{type(system).__name__}")
    ports = {name: (member.flow == Out, Shape.cast(member.shape).width)
             for name, member in members.items()}
    needed = ("aclk", "aresetn", "irq", "s_axil_awaddr", "m_axi_araddr", "m_axi_rdata")
    missing = [name for name in needed if name not in ports]
    if missing:
        raise TypeError(f"{type(system).__name__} has no port {', '.join(missing)}: "
                        "not a system component (aclk, aresetn, s_axil_*, m_axi_*, irq)")
    return ports


def dma_widths(system):
    """``(address_bits, data_bits, id_bits)`` of a system component's AXI4 master."""
    ports = system_ports(system)
    return (ports["m_axi_araddr"][1], ports["m_axi_rdata"][1],
            ports["m_axi_arid"][1] if "m_axi_arid" in ports else 1)


def write_verilog(system, path, *, name):
    """Write ``system``'s Verilog (top module ``name``) to ``path``, leaving the file
    untouched when its text is the same (its time stamp keeps the builds cached).

    Returns
    -------
    str
        The SHA-256 of the text.
    """
    from amaranth.back import verilog
    text = verilog.convert(system, name=name, emit_src=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return hashlib.sha256(text.encode()).hexdigest()


def add_accelerator(soc, system, *, name="accel", base=None, verilog_dir,
                    dma="auto", clock_domain="sys", register_slices=False):
    """Add a system component to a LiteX SoC (module docstring).

    Call it after the SoC's main RAM is added (``add_sdram`` or integrated main RAM)
    and before the SoC is finalized (built).

    Parameters
    ----------
    soc : litex.soc.integration.soc.SoC
    system : amaranth.lib.wiring.Component
        ``TokenSystem`` or the layer system (ports: module docstring).
    name : str
        The SoC's name of the accelerator: its bus region (``<NAME>_BASE`` in the
        generated ``mem.h``), its CSRs (``<name>_ev_*``), its interrupt
        (``<NAME>_INTERRUPT``) and its Verilog module (``ternary_accel_<name>``).
    base : int, optional
        The registers' base address: an uncached region the size of the slave's
        window (``2 ** s_axil_awaddr bits``: 4 KB). By default LiteX allocates one in the CPU's I/O region.
    verilog_dir : path
        Where the Verilog is written (``ternary_accel_<name>.v``).
    dma : {"auto", "sdram", "bus"}
        How the AXI4 master reaches main RAM: a LiteDRAM crossbar port (``"sdram"``),
        a master of the SoC's bus (``"bus"``), or the first when the SoC has LiteDRAM.
    clock_domain : str
        The LiteX clock domain of ``aclk``/``aresetn``.
    register_slices : bool
        Put a register slice (valid and ready registered) on each of the AXI4 master's
        five channels, between the accelerator and the bridge or bus: no combinational
        path crosses between them (a placed SoC closes timing; one cycle more each way).

    Returns
    -------
    litex.gen.LiteXModule
        The accelerator's module, added to the SoC as ``name``: ``.axil`` (the slave's
        AXILiteInterface), ``.axi`` (the master's AXIInterface), ``.irq``, ``.region``,
        ``.verilog`` (the file), ``.dma`` (``"sdram"`` or ``"bus"``) and with LiteDRAM
        ``.port`` (the crossbar's native port at the master's width) and ``.bridge``.

    Raises
    ------
    TypeError
        If ``system`` is not a system component.
    ValueError
        If ``dma`` is not one of the choices, or ``"sdram"`` on an SoC without LiteDRAM.
    """
    from migen import ClockSignal, Instance, ResetSignal, Signal
    from litex.gen import LiteXModule
    from litex.soc.integration.soc import SoCRegion
    from litex.soc.interconnect import axi
    from litex.soc.interconnect.csr_eventmanager import EventManager, EventSourceLevel

    ports = system_ports(system)
    address_bits, data_bits, id_bits = dma_widths(system)
    if dma not in ("auto", "sdram", "bus"):
        raise ValueError(f"dma must be 'auto', 'sdram' or 'bus', not {dma!r}")
    has_sdram = hasattr(soc, "sdram")
    if dma == "auto":
        dma = "sdram" if has_sdram else "bus"
    if dma == "sdram" and not has_sdram:
        raise ValueError("dma='sdram' needs an SoC with LiteDRAM (add_sdram first)")

    module_name = f"ternary_accel_{name}"
    verilog = Path(verilog_dir) / f"{module_name}.v"
    write_verilog(system, verilog, name=module_name)
    soc.platform.add_source(str(verilog.resolve()))

    accel = LiteXModule()
    accel.verilog, accel.dma = verilog, dma
    accel.axil = axil = axi.AXILiteInterface(data_width=32, address_width=32)
    accel.axi = master = axi.AXIInterface(data_width=data_bits, address_width=address_bits,
                                          id_width=id_bits)
    accel.irq = irq = Signal()

    # -- the ports ---------------------------------------------------------------------
    connections = {"i_aclk": ClockSignal(clock_domain),
                   "i_aresetn": ~ResetSignal(clock_domain), "o_irq": irq}
    for port, (is_output, width) in ports.items():
        for prefix, bus in (("s_axil_", axil), ("m_axi_", master)):
            if not port.startswith(prefix):
                continue
            channel, field = channel_field(port[len(prefix):])
            target = getattr(getattr(bus, channel), field)
            if is_output:
                wire = Signal(width, name=f"{name}_{port}")
                accel.comb += target.eq(wire)
                connections[f"o_{port}"] = wire
            else:
                connections[f"i_{port}"] = target[:width]
    accel.specials += Instance(module_name, **connections)

    # -- the interrupt -------------------------------------------------------------------
    accel.ev = EventManager()
    accel.ev.done = EventSourceLevel(description="the accelerator's irq line (a level)")
    accel.ev.finalize()
    accel.comb += accel.ev.done.trigger.eq(irq)
    soc.add_module(name=name, module=accel)

    # -- the buses -----------------------------------------------------------------------
    span = 1 << ports["s_axil_awaddr"][1]           # the register file's window
    if base is None:
        accel.region = soc.bus.alloc_region(name, span, cached=False)
    else:
        accel.region = SoCRegion(origin=base, size=span, cached=False)
    soc.bus.add_slave(name=name, slave=axil, region=accel.region)
    if register_slices:
        master = _register_slices(accel, master)
    if dma == "sdram":
        from litedram.frontend.axi import LiteDRAMAXI2Native
        accel.port = port = soc.sdram.crossbar.get_port(data_width=data_bits)
        accel.bridge = LiteDRAMAXI2Native(
            master, port, base_address=soc.bus.regions["main_ram"].origin)
    else:
        soc.bus.add_master(name=f"{name}_dma", master=master)
    if getattr(soc, "irq", None) is not None and soc.irq.enabled:
        soc.irq.add(name, use_loc_if_exists=True)
    return accel


def _register_slices(module, master):
    """A copy of the AXI4 interface ``master`` behind a register slice on each channel
    (``stream.Buffer`` with valid and ready piped), added to ``module``."""
    from litex.soc.interconnect import axi, stream
    sliced = axi.AXIInterface(data_width=master.data_width,
                              address_width=master.address_width, id_width=master.id_width)
    for channel, downstream in (("aw", True), ("w", True), ("ar", True), ("b", False),
                                ("r", False)):
        source, sink = ((getattr(master, channel), getattr(sliced, channel)) if downstream
                        else (getattr(sliced, channel), getattr(master, channel)))
        buffer = stream.Buffer(source.description, pipe_valid=True, pipe_ready=True)
        setattr(module, f"{channel}_slice", buffer)
        module.comb += [source.connect(buffer.sink), buffer.source.connect(sink)]
    return sliced
