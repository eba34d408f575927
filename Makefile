# Ternary matmul accelerator: every entry point creates .venv from pyproject.toml first.
PYTHON_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The project's one command-line tool (pyproject's [project.scripts]).
TA := $(VENV)/bin/ternary-accel
# Where the benchmark targets write their tables for the docs.
RESULTS ?= docs/results
# Placement seeds of make bench-area (Fmax is their median).
SEEDS ?= 1,2,3
STAMP := $(VENV)/.installed
# The build directory: ./build, or $TERNARY_ACCEL_BUILD as for the commands (hw/paths.py).
BUILD := $(or $(TERNARY_ACCEL_BUILD),build)
DOCS_STAMP := $(VENV)/.installed-docs

# Design parameters of `make verilog`.
LANES ?= 16
ROWS ?= 8
# The PyTorch of the [train] extra, installed first: the CPU build (a plain 'torch' from
# PyPI is a CUDA build of several GB). Override with TORCH=torch==X.Y or another spec.
TORCH ?= torch==2.13.0
# The board of `make bitstream` (required): orangecrab or ulx3s, their LFE5U-85F variants.
BITSTREAM_BOARDS := orangecrab ulx3s
BOARD ?=
# Extra flags of `make dse`, e.g. DSE_ARGS="--jobs 2 --device 45f,85f".
DSE_ARGS ?=
# Extra flags of `make ip` and `make ip-lint`, e.g. IP_ARGS="--top token --bus-bits 64".
IP_ARGS ?=

.PHONY: all docs sim test test-fast verilog regmap ip ip-lint synth energy dse bench bench-area bench-packing bench-sim bench-token bench-block bench-system bench-sparse bench-prefill bench-quality bench-numerics bench-head perf bitstream bitstream-board clean distclean help

all: test

help:
	@echo "make sim      - generate Verilog, run the cocotb regression under Verilator"
	@echo "make test     - the whole pytest suite (model, hw, cocotb, energy)"
	@echo "make test-fast - the suite without Verilator, synthesis and slow tests (about two minutes)"
	@echo "make verilog  - write build/verilog/matmul_unit.v (LANES=$(LANES) ROWS=$(ROWS))"
	@echo "make regmap   - the register map: C header, Python and JSON under build/regmap/, docs/registers.md"
	@echo "make ip       - the system top as vendor IP under build/ip/NAME: Verilog, IP-XACT,"
	@echo "                Vivado packaging script, FuseSoC core (flags via IP_ARGS=\"...\")"
	@echo "make ip-lint  - make ip, then the FuseSoC core's lint target (Verilator)"
	@echo "make synth    - Yosys + nextpnr for one unit (LANES, ROWS), report under build/reports/"
	@echo "make energy   - Table 1, model-size sweep and figure under build/energy/"
	@echo "make energy-gates - energy per MAC measured on 180 nm gates (ternary vs int8, workloads),"
	@echo "                table to docs/results, plot under build/energy-gates/ (about 10 min)"
	@echo "make bench-area - ECP5 area/Fmax sweep with the int8 baseline, median of SEEDS=1,2,3 (about 2.5 h; SEEDS=1 about 50 min)"
	@echo "make bench-packing - weight packings of the memory port (base3, 3in5, 2bit): bits/weight, decoder LUT4s, Fmax"
	@echo "make bench-sim  - a BitNet b1.58 2B4T block through the RTL, bit-exact, timed"
	@echo "make bench-token - whole tokens on the token core, every operation in RTL, bit-exact, cycles by"
	@echo "                operation: the reference model (3 tokens, stalls), then one 2B4T token"
	@echo "                (random weights; about 30 min, 10 GB of RAM)"
	@echo "make bench-system - 2B4T q_proj at T=1 and T=16 from DRAM through the layer"
	@echo "                system's AXI master (cocotbext-axi), bit-exact, cycles against the model"
	@echo "make bench-block - one 2B4T decoder layer (prompt + decode steps) through the RTL"
	@echo "make bench-prefill - a 2B4T block, 16 tokens, weight reuse T=16, 128-bit weight port, pipelined output stage, RTL"
	@echo "make bench-sparse - 2B4T down_proj: dense engine vs the sparse dataflow, RTL; the trained models' own down_proj beside it"
	@echo "make bench-numerics - hardware numerics against float, per operation and together (about 20 min)"
	@echo "make bench-head - the LM head's formats: quality on the reference model, bits a weight, 2B4T bytes (about 10 min)"
	@echo "make bench-quality - test perplexity of the shipped reference models under each numerics (about 2 min)"
	@echo "make perf     - 2B4T tokens/s, time to first token, J/token per board preset, rooflines"
	@echo "make dse      - engine design-space sweep on ECP5: area, Fmax, 2B4T tokens/s, Pareto plot"
	@echo "                under build/dse/ (flags via DSE_ARGS=\"--lanes 16,32 --jobs 2 ...\")"
	@echo "make bitstream BOARD=orangecrab|ulx3s - the board's LiteX SoC with the accelerator as"
	@echo "                an ECP5 bitstream (YoWASP tools), report to docs/results (about 30 min)"
	@echo "make soc-sim  - the accelerator in a simulated LiteX SoC (VexRiscv, LiteDRAM): a firmware"
	@echo "                runs a BitLinear layer from DRAM, every output checked (about 5 min, then seconds)"
	@echo "make docs     - the documentation (topics and API) under build/docs, warnings as errors"
	@echo "make clean    - remove build/ (or \$$TERNARY_ACCEL_BUILD)"

# (Re)create the virtual environment when it is missing or older than pyproject.toml.
# Every optional extra too (dev pulls all): the tests run every feature. The filter hides
# setuptools' note that an editable install uses an import finder (it always does here).
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet '$(TORCH)'
	PYTHONWARNINGS="ignore:::setuptools.command.editable_wheel" \
		$(PY) -m pip install --quiet -e '.[dev,all]'
	@touch $@

# The docs extra on top of the project's install.
$(DOCS_STAMP): $(STAMP)
	PYTHONWARNINGS="ignore:::setuptools.command.editable_wheel" \
		$(PY) -m pip install --quiet -e '.[docs]'
	@touch $@

docs: $(DOCS_STAMP)
	rm -rf docs/api/generated
	$(PY) -m sphinx -W --keep-going -b html -q docs build/docs
	@echo "docs: build/docs/index.html"

sim: $(STAMP)
	$(TA) sim

test: $(STAMP) gate-tools soc-tools
	$(PY) -m pytest -n 2 --dist loadgroup

test-fast: $(STAMP)
	$(PY) -m pytest -n 2 -m "not verilator and not synth and not slow"

verilog: $(STAMP)
	$(TA) verilog --lanes $(LANES) --rows $(ROWS) -o $(BUILD)/verilog/matmul_unit.v
	$(TA) verilog --lanes $(LANES) --rows $(ROWS) --axis --output-stage \
		-o $(BUILD)/verilog/matmul_unit_axis.v

# The register map (hw/regmap.py) for the host: the C header, the Python constants and
# JSON under build/regmap/, and the page docs/registers.md (tests/hw/test_regmap.py
# checks that the page is up to date).
regmap: $(STAMP)
	$(TA) regmap --format c -o $(BUILD)/regmap/ternary_accel_regs.h
	$(TA) regmap --format python -o $(BUILD)/regmap/ternary_accel_regs.py
	$(TA) regmap --format json -o $(BUILD)/regmap/ternary_accel_regs.json
	$(TA) regmap --format markdown -o docs/registers.md
	$(TA) regmap --map layer --format c -o $(BUILD)/regmap/ternary_accel_layer_regs.h
	$(TA) regmap --map layer --format python -o $(BUILD)/regmap/ternary_accel_layer_regs.py
	$(TA) regmap --map layer --format json -o $(BUILD)/regmap/ternary_accel_layer_regs.json
	$(TA) regmap --map layer --format markdown -o docs/registers-layer.md

# The system top packaged for vendor flows (docs/packaging.md): Verilog, component.xml,
# package_ip.tcl (Vivado) and a FuseSoC core under $(BUILD)/ip/NAME; ip-lint then runs
# `fusesoc run --target lint` on the core with the project's Verilator.
ip: $(STAMP)
	$(TA) ip $(IP_ARGS)

ip-lint: $(STAMP)
	$(TA) ip --lint $(IP_ARGS)

synth: $(STAMP)
	$(TA) synth --lanes $(LANES) --rows $(ROWS) --target ecp5

bench-area: $(STAMP)
	$(TA) bench area --seeds $(SEEDS) --results $(RESULTS)

bench-packing: $(STAMP)
	$(TA) bench packing --results $(RESULTS)

bench-sim: $(STAMP)
	$(TA) bench layer --results $(RESULTS) --results-name bench-sim

bench-token: $(STAMP)
	$(TA) bench token --idle 0.2 --results $(RESULTS)
	$(TA) bench token --model b1.58-2b4t --prompt-ids 128000 --positions 4 \
		--results $(RESULTS) --results-name bench-token-2b4t

bench-block: $(STAMP)
	$(TA) bench block --results $(RESULTS)

bench-system: $(STAMP)
	$(TA) bench system --results $(RESULTS)

bench-prefill: $(STAMP)
	$(TA) bench layer --tokens 16 --reuse 16 --weight-port-bits 128 --output-rows 1 \
		--weights ternary --results $(RESULTS) --results-name bench-prefill

bench-sparse: $(STAMP)
	$(TA) bench sparse --trained --results $(RESULTS)

bench-quality: $(STAMP)
	$(TA) bench quality --results $(RESULTS) \
		$(if $(wildcard $(BUILD)/train/float/master),--float-baseline $(BUILD)/train/float/master)

bench-numerics: $(STAMP)
	$(TA) bench numerics --sweep --results $(RESULTS)

bench-head: $(STAMP)
	$(TA) bench numerics --heads --results $(RESULTS) --results-name bench-head

bench: bench-area bench-packing bench-sim bench-token bench-block bench-sparse bench-prefill

perf: $(STAMP)
	@for p in ecp5-ddr3 kv260 hbm2; do \
		$(TA) perf --platform $$p --numerics hw --batch-sweep 1,2,4,8,16,32 \
			--batch-plot $(BUILD)/perf/batch-$$p.png \
			--roofline $(BUILD)/perf/roofline-$$p.png \
			--results $(RESULTS) --results-name perf-$$p || exit 1; \
		echo; done

# The bitstream of a board's LiteX SoC (VexRiscv, LiteDRAM, UART, the accelerator) at
# 60 MHz: LiteX writes the Verilog and the BIOS, the YoWASP tools synthesize, place, route
# and pack; the report goes to docs/results/bitstream-$(BOARD).md.
bitstream: bitstream-board $(STAMP)
	$(TA) bitstream --board $(BOARD) --results $(RESULTS)

bitstream-board:
	@case " $(BITSTREAM_BOARDS) " in *" $(BOARD) "*) ;; *) \
		echo "make bitstream: BOARD must be one of $(BITSTREAM_BOARDS), not '$(BOARD)'" \
			"(e.g. make bitstream BOARD=ulx3s)" >&2; exit 2;; esac

dse: $(STAMP)
	$(TA) dse $(DSE_ARGS)

energy: $(STAMP)
	$(TA) energy report --outdir $(BUILD)/energy
	$(TA) energy table1 --results $(RESULTS)
	$(TA) energy sweep --results $(RESULTS)
	$(TA) schemes --trained --results $(RESULTS)

# Debian packages of the gate-level energy flow (energy gates, tests/energy/test_gates.py):
# the OSU 180 nm cell library and OpenSTA, installed when missing and apt-get can.
GATE_DEBS := qflow-tech-osu018 opensta

gate-tools:
	@if ! dpkg -s $(GATE_DEBS) >/dev/null 2>&1; then \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			echo "installing $(GATE_DEBS) (gate-level energy: 180 nm cells, OpenSTA)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq $(GATE_DEBS) >/dev/null || exit 1; \
		else \
			echo "$(GATE_DEBS) missing and not installable here (apt-get install" \
				"$(GATE_DEBS)): the gate-level energy tests will be skipped"; \
		fi; \
	fi

energy-gates: $(STAMP) gate-tools
	$(TA) energy gates --results $(RESULTS)

# Debian packages of the SoC simulation (ternary-accel soc-sim, tests/soc/test_soc_sim.py):
# the RISC-V compiler of the firmware and LiteX's BIOS, meson and ninja (picolibc), the
# libraries of LiteX's simulator; installed when missing and apt-get can.
SOC_DEBS := gcc-riscv64-unknown-elf libevent-dev libjson-c-dev meson ninja-build

.PHONY: soc-sim soc-tools
soc-tools:
	@if ! dpkg -s $(SOC_DEBS) >/dev/null 2>&1; then \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			echo "installing $(SOC_DEBS) (the SoC simulation: firmware, LiteX's simulator)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq $(SOC_DEBS) >/dev/null || exit 1; \
		else \
			echo "$(SOC_DEBS) missing and not installable here (apt-get install" \
				"$(SOC_DEBS)): the SoC simulation's test will be skipped"; \
		fi; \
	fi

soc-sim: $(STAMP) soc-tools
	$(TA) soc-sim --workload layer

clean:
	rm -rf $(BUILD) sim_build docs/api/generated

distclean: clean
	rm -rf $(VENV) *.egg-info
