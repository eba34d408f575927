"""Hardware of the ternary matmul accelerator: design parameters, cycle model and
layer mapping (plain Python), Amaranth components (:mod:`ternary_accel.hw.rtl`), the open
FPGA flow (:mod:`ternary_accel.hw.fpga`), cost models (:mod:`ternary_accel.hw.perf`) and the
design-space exploration (:mod:`ternary_accel.hw.dse`)."""
