"""The open FPGA flow: Yosys and nextpnr (YoWASP), area and Fmax reports, formal
equivalence, and the behavioural models of vendor cells."""
