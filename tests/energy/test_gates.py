"""Energy from gates: the flow on a tiny unit (K = 4, M = 1) mapped to the OSU 180 nm
cells, the toggle counter, the energy arithmetic and the command's errors."""

import numpy as np
import pytest

from ternary_accel.energy.gates import (EnergyBreakdown, gate_energy, op_reference_pj,
                                        scale_factor)
from ternary_accel.model.arith import matmul_int

pytestmark = pytest.mark.xdist_group("energy-gates")

TRAILER = "apt-get install qflow-tech-osu018 opensta"


# --- the arithmetic and the toggle counter (no tools) ------------------------------------

def test_scaling_rule_is_cv2_with_c_proportional_to_the_node():
    assert scale_factor("180nm") == 1.0
    assert scale_factor("45nm") == pytest.approx(45 / 180 * (0.9 / 1.8) ** 2)
    assert scale_factor("7nm") == pytest.approx(7 / 180 * (0.7 / 1.8) ** 2)
    with pytest.raises(ValueError, match="no scaling figures"):
        scale_factor("3nm")


def test_per_operation_reference_is_the_papers_reading():
    assert op_reference_pj("45nm") == 0.03                      # one INT8 add
    assert op_reference_pj("7nm", act_width=4) == pytest.approx(0.0035)
    assert op_reference_pj("45nm", "int8") == pytest.approx(0.23)  # INT8 mul + add


def test_gate_energy_by_hand():
    pin_energy = {("u1", "Y"): {"internal": 2e-15, "switching": 3e-15},
                  ("u1", "A"): {"internal": 0.0, "switching": 0.0},
                  ("r1", "CLK"): {"internal": 5e-15, "switching": 0.0},
                  ("r1", "Q"): {"internal": 1e-15, "switching": 4e-15}}
    pins = {("u1", "Y"): ("n1", 0), ("u1", "A"): ("a", 0), ("r1", "CLK"): ("clk", 0),
            ("r1", "Q"): ("q", 3)}
    types = {"u1": "NAND2X1", "r1": "DFFPOSX1"}
    toggles = {("n1", 0): 6, ("a", 0): 10, ("q", 3): 2}
    e = gate_energy(pin_energy, {"u1": 1e-9, "r1": 2e-9}, pins, types, toggles, cycles=10,
                    period_ns=10, sequential={"DFFPOSX1"}, macs_per_cycle=2)
    assert e.energy["combinational"]["internal"] == pytest.approx(2e-15 * 0.6)
    assert e.energy["combinational"]["switching"] == pytest.approx(3e-15 * 0.6)
    # the clock pin twice a cycle, Q as toggled
    assert e.energy["sequential"]["internal"] == pytest.approx(5e-15 * 2 + 1e-15 * 0.2)
    assert e.energy["sequential"]["switching"] == pytest.approx(4e-15 * 0.2)
    assert e.energy["combinational"]["leakage"] == pytest.approx(1e-9 * 10e-9)
    assert e.per_mac_pj() == pytest.approx(e.total() / 2 * 1e12)
    stopped = gate_energy(pin_energy, {}, pins, types, {k: 0 for k in toggles}, cycles=10,
                          period_ns=10, sequential={"DFFPOSX1"}, clock_running=False)
    assert stopped.total() == 0.0
    with pytest.raises(ValueError, match="did not record"):
        gate_energy(pin_energy, {}, pins, types, {}, cycles=10, period_ns=10,
                    sequential=())


VCD = """$timescale 1ps $end
$scope module tb $end
$var wire 1 ! clk $end
$scope module dut $end
$var wire 1 ! clk $end
$var wire 1 " a $end
$var wire 3 # v [2:0] $end
$upscope $end
$upscope $end
$enddefinitions $end
#0
0!
0"
b000 #
#5000
1!
#10000
0!
1"
b101 #
#15000
1!
#20000
0!
0"
b110 #
#30000
1"
b110 #
#40000
0"
b001 #
"""


def test_toggle_counts_of_a_hand_made_vcd(tmp_path):
    from ternary_accel.sim.gates import toggle_counts
    path = tmp_path / "hand.vcd"
    path.write_text(VCD)
    counts = toggle_counts(path)
    # a: 0 1 0 1 0 -> 4 changes; v: 000 101 110 110 001 -> bit 0: 0 1 0 0 1 -> 3,
    # bit 1: 0 0 1 1 0 -> 2, bit 2: 0 1 1 1 0 -> 2; clk: 4 edges after its first value
    assert counts == {("clk", 0): 4, ("a", 0): 4, ("v", 0): 3, ("v", 1): 2, ("v", 2): 2}
    # the window of cycles 1 and 2 (10 ns to 30 ns): the changes at 10, 15 and 20 ns
    window = toggle_counts(path, start_cycle=1, end_cycle=3)
    assert window == {("clk", 0): 3, ("a", 0): 2, ("v", 0): 2, ("v", 1): 1, ("v", 2): 1}


# --- the command's errors -----------------------------------------------------------------

@pytest.mark.parametrize("missing", ["library", "sta"])
def test_missing_package_is_one_line_exit_2(cli, monkeypatch, tmp_path, missing):
    from ternary_accel.hw.fpga import gates
    if missing == "library":
        monkeypatch.setattr(gates, "CELL_LIBRARY_DIR", tmp_path)
    else:
        monkeypatch.setattr(gates.shutil, "which", lambda *a, **k: None)
    result = cli("energy", "gates", "--lanes", "4", "--rows", "1", "--workdir",
                 str(tmp_path / "w"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(TRAILER), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("flags, message", [
    (["--lanes", "0"], "--lanes"),
    (["--sweep", "0.5,2"], "zero fractions"),
    (["--designs", "fp16"], "unknown design"),
    (["--workloads", "imagenet"], "unknown workload"),
    (["--cycles", "x"], "--cycles"),
])
def test_bad_flags_are_usage_errors(cli, flags, message):
    result = cli("energy", "gates", *flags)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


# --- the flow on a tiny unit ----------------------------------------------------------------

K, M = 4, 1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The K=4 M=1 ternary unit mapped, characterized, and built twice: its gate netlist
    with the cells' models, and its RTL, in the same testbench."""
    from ternary_accel.hw.fpga.gates import (ToolError, cell_library, characterize,
                                             map_to_cells, sta_path)
    from ternary_accel.hw.params import UnitParams
    from ternary_accel.hw.rtl.matmul import MatmulUnit
    from ternary_accel.sim.gates import GateSim, top_ports
    try:
        cell_library()
        sta_path()
    except ToolError as error:
        pytest.skip(str(error))
    workdir = tmp_path_factory.mktemp("gates")
    from ternary_accel.cli.energy_gates import MAX_BEATS
    params = UnitParams(lanes=K, rows=M, max_beats=MAX_BEATS)
    net = map_to_cells(MatmulUnit(params), workdir=workdir / params.name)
    ports = top_ports(net.json)
    return dict(params=params, netlist=net, ports=ports, workdir=workdir,
                characterization=characterize(net),
                gates=GateSim([net.verilog, net.library.models], ports,
                              net.workdir / "gates"),
                rtl=GateSim([net.rtl], ports, net.workdir / "rtl"))


@pytest.mark.synth
@pytest.mark.verilator
def test_gate_netlist_matches_rtl_and_golden_model_bit_for_bit(tiny):
    from ternary_accel.sim.gates import pack_words, unit_results, unit_stream
    params = tiny["params"]
    rng = np.random.default_rng(25)
    weights = rng.integers(-1, 2, (4 * M, 6 * K))
    acts = rng.integers(-128, 128, (5, 6 * K))
    values, order = unit_stream(params, weights, acts, cycles=5 * 4 * 6)
    for name, seq in values.items():        # drain
        seq.extend([1 if name == "res__ready" else 0] * (params.latency + 4))
    words = pack_words(tiny["ports"], values)
    gates, _ = tiny["gates"].run(words, name="random")
    rtl, _ = tiny["rtl"].run(words, name="random")
    assert gates == rtl                      # every output port, every cycle
    results = unit_results(params, gates)
    expected = [list(matmul_int(weights[t * M:(t + 1) * M], acts[k])) for k, t in order]
    assert len(order) == 20 and results == expected


@pytest.mark.synth
@pytest.mark.verilator
def test_toggle_counts_of_a_hand_made_stimulus(tiny):
    from ternary_accel.sim.gates import pack_words, toggle_counts
    # lane 0 of the activation: bit 0 goes 0 1 1 0 1 0 0 0 ... (4 changes), bit 3 rises
    # once; nothing else moves after the reset
    pattern = [0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 8, 8, 8, 8]
    values = {"rst": [1, 1] + [0] * 12, "act__payload": pattern}
    run, vcd = tiny["gates"].run(pack_words(tiny["ports"], values), name="hand", vcd=True)
    counts = toggle_counts(vcd, start_cycle=2, end_cycle=14)
    assert counts["act__payload", 0] == 4 and counts["act__payload", 3] == 1
    assert all(counts["act__payload", b] == 0 for b in (1, 2, 4, 5, 6, 7))
    # the harness register behind bit 0 (its D through the reset gate) copies it a cycle
    # later: the same 4 changes
    pins, types = tiny["netlist"].connections()
    gates = {i for (i, p), net in pins.items() if net == ("act__payload", 0)}
    gated = {pins[i, "Y"] for i in gates if (i, "Y") in pins}
    (reg,) = [i for (i, p), net in pins.items() if p == "D" and net in gated]
    assert types[reg] == "DFFPOSX1"
    assert counts[pins[reg, "Q"]] == 4
    # a valid-less beat does not reach the lanes' results: the result port stays quiet
    assert sum(counts["res__payload", b] for b in range(tiny["params"].res_width)) == 0


@pytest.mark.synth
@pytest.mark.verilator
def test_idle_design_dissipates_leakage_only(tiny):
    from ternary_accel.hw.fpga.gates import SEQUENTIAL_CELLS, report_power
    from ternary_accel.sim.gates import pack_words, toggle_counts, unit_stream
    params, ch = tiny["params"], tiny["characterization"]
    weights = np.ones((M, 2 * K), dtype=np.int64)
    acts = np.full((1, 2 * K), 5)
    values, _ = unit_stream(params, weights, acts, cycles=40, idle=True)
    _, vcd = tiny["gates"].run(pack_words(tiny["ports"], values), name="idle", vcd=True)
    toggles = toggle_counts(vcd, start_cycle=12, end_cycle=42)
    assert all(n == 0 for (net, _), n in toggles.items() if net != "clk")
    pins, types = tiny["netlist"].connections()
    args = dict(cycles=30, period_ns=ch.period_ns, sequential=SEQUENTIAL_CELLS)
    gated = gate_energy(ch.pin_energy, ch.leakage_w, pins, types, toggles,
                        clock_running=False, **args)
    assert gated.dynamic == 0.0 and gated.total() == pytest.approx(gated.total("leakage"))
    assert gated.total() > 0
    running = gate_energy(ch.pin_energy, ch.leakage_w, pins, types, toggles, **args)
    # a running clock adds the flip-flops' clock pins, nothing combinational
    assert running.total("internal", "combinational") == 0.0
    assert running.total("switching") == 0.0
    assert running.total("internal", "sequential") > 0
    # OpenSTA's own report of the idle design, clock stopped: leakage only, the same
    table = report_power(tiny["netlist"], input_activity=0.0, clock=False)
    total = table["Total"]
    assert total["internal"] == 0.0 and total["switching"] == 0.0
    assert total["total"] == pytest.approx(total["leakage"])
    assert total["leakage"] * ch.period_ns * 1e-9 == pytest.approx(gated.total(), rel=1e-3)


@pytest.mark.synth
def test_pin_energies_add_up_to_opensta_report_power(tiny):
    from ternary_accel.hw.fpga.gates import SEQUENTIAL_CELLS
    ch = tiny["characterization"]
    pins, types = tiny["netlist"].connections()
    # the characterization's own run: every net once a cycle, the clock twice
    once = {net: 100 for net in pins.values() if net is not None}
    e = gate_energy(ch.pin_energy, ch.leakage_w, pins, types, once, cycles=100,
                    period_ns=ch.period_ns, sequential=SEQUENTIAL_CELLS,
                    internal="sta_internal")
    for group in ("sequential", "combinational"):
        watts = {k: v / (ch.period_ns * 1e-9) for k, v in e.energy[group].items()}
        report = ch.report[group.capitalize()]
        for kind in ("internal", "switching", "leakage"):
            assert watts[kind] == pytest.approx(report[kind], rel=0.01), (group, kind)
    # the flow's internal energy averages the rise and fall entries (OpenSTA 2.0.17
    # adds them): never more than OpenSTA's
    fair = gate_energy(ch.pin_energy, ch.leakage_w, pins, types, once, cycles=100,
                       period_ns=ch.period_ns, sequential=SEQUENTIAL_CELLS)
    assert 0 < fair.total("internal") < e.total("internal")


@pytest.mark.synth
@pytest.mark.verilator
def test_command_on_the_tiny_unit(cli, tiny, tmp_path):
    # the fixture's folder: the command reuses its netlist and simulation builds
    result = cli("energy", "gates", "--lanes", str(K), "--rows", str(M), "--designs",
                 "ternary", "--workloads", "uniform,zero-acts", "--sweep", "0,1",
                 "--cycles", "64", "--workdir", str(tiny["workdir"]), "--plot",
                 str(tmp_path / "plot.png"), "--results", str(tmp_path / "results"))
    assert result.returncode == 0, result.stderr
    assert "| ternary | uniform |" in result.stdout and "| ternary | zeros-1 |" in result.stdout
    assert "bit-exact" in result.stderr and (tmp_path / "plot.png").exists()
    written = (tmp_path / "results" / "energy-gates.md").read_text()
    assert "Generated by `ternary-accel energy gates" in written
    rows = {line.split("|")[2].strip(): float(line.split("|")[5])
            for line in result.stdout.splitlines() if line.startswith("| ternary |")}
    # zero activations and zero weights leave the lanes still: less energy per MAC
    assert rows["zero-acts"] < rows["uniform"] and rows["zeros-1"] < rows["zeros-0"]
    csv = cli("energy", "gates", "--lanes", str(K), "--rows", str(M), "--designs", "ternary",
              "--workloads", "uniform", "--no-sweep", "--repeats", "1", "--cycles", "64",
              "--workdir", str(tiny["workdir"]), "--no-plot", "--format", "csv")
    assert csv.returncode == 0, csv.stderr
    lines = csv.stdout.strip().splitlines()
    assert lines[0].startswith("Design,Workload,") and lines[1].startswith("ternary,uniform,")
    assert len(lines) == 2


def test_breakdown_per_mac_without_macs_is_nan():
    e = EnergyBreakdown(energy={"sequential": {"internal": 1e-12}}, cycles=1)
    assert np.isnan(e.per_mac_pj())
