"""The accelerator in a LiteX SoC: the wrapper that puts a system component
(:class:`~ternary_accel.hw.rtl.system.TokenSystem` or the layer system: an AXI4-Lite
slave, an AXI4 master, an interrupt) on a LiteX SoC's buses
(:mod:`ternary_accel.soc.accelerator`), and the simulated SoC with a VexRiscv, LiteDRAM
and its SDRAM model under Verilator that runs a C firmware against it
(:mod:`ternary_accel.soc.sim`, ``soc/firmware/``).

Needs the ``soc`` extra (LiteX, LiteDRAM, the VexRiscv and the software packages) and,
for the firmware and the simulator, Debian's ``gcc-riscv64-unknown-elf``,
``libevent-dev``, ``libjson-c-dev``, ``meson`` and ``ninja-build`` (``make soc-tools``).
"""
