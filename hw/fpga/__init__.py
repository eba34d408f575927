"""FPGA-specific building blocks (vendor primitives) of the ``hw`` components."""
