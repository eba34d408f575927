# Ternary matmul accelerator: every entry point creates .venv from pyproject.toml first.
PYTHON_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Design parameters of `make verilog`.
LANES ?= 16
ROWS ?= 8

.PHONY: all sim test verilog energy bench clean distclean help

all: test

help:
	@echo "make sim      - generate Verilog, run the cocotb regression under Verilator"
	@echo "make test     - the whole pytest suite (model, hw, cocotb, energy)"
	@echo "make verilog  - write build/verilog/matmul_unit.v (LANES=$(LANES) ROWS=$(ROWS))"
	@echo "make energy   - Table 1, model-size sweep and figure under build/energy/"
	@echo "make clean    - remove build/"

# (Re)create the virtual environment when it is missing or older than pyproject.toml.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

sim: $(STAMP)
	$(PY) -m sim

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup

verilog: $(STAMP)
	$(PY) -m hw verilog --lanes $(LANES) --rows $(ROWS) -o build/verilog/matmul_unit.v

energy: $(STAMP)
	$(PY) -m energy report --outdir build/energy

clean:
	rm -rf build sim_build

distclean: clean
	rm -rf $(VENV) *.egg-info
