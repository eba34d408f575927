"""cocotb testbenches run inside Verilator, and their verification components."""
