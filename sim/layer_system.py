"""The layer system (:class:`hw.rtl.layer_system.LayerSystem`) under Verilator with its
cocotbext-axi bench (``sim/tb/layer_system.py``): build (cached by design) and run.
``tests/sim/test_layer_system.py`` runs the bench's tests on a small engine;
``ternary-accel bench system`` runs 2B4T projections through it and reads their cycles.
"""

import json

__all__ = ["DESIGN_KEYS", "system_params", "run_layer_system"]

#: What a design names: the engine's ``lanes``, ``rows``, ``tokens`` (T), ``port_bits``
#: and ``max_beats``, the ``bus_bits`` and ``addr_width`` of the AXI master, the
#: ``act_words`` of the activation buffer (and the bench's ``ram_size`` in bytes).
DESIGN_KEYS = ("lanes", "rows", "tokens", "port_bits", "max_beats", "bus_bits",
               "addr_width", "act_words")


def system_params(design):
    """The :class:`~ternary_accel.hw.params.EngineParams` of ``design``."""
    from ternary_accel.hw.params import EngineParams
    return EngineParams(lanes=design["lanes"], rows=design["rows"], tokens=design["tokens"],
                        weight_port_bits=design["port_bits"], max_beats=design["max_beats"])


def run_layer_system(design, workdir, *, layers=None, tests=None):
    """Build ``design`` (cached under the build directory) and run the bench.

    Parameters
    ----------
    design : dict
        :data:`DESIGN_KEYS` (and ``ram_size``).
    workdir : pathlib.Path
        Where the run's files go.
    layers : list of (out_features, in_features, tokens), optional
        Run only these layers (the bench's ``cycles_without_pauses``), recording cycles.
    tests : str, optional
        A regular expression of the bench's tests to run (cocotb's filter).

    Returns
    -------
    (int, int, dict, str)
        Tests run, tests failed, what the bench recorded (``{"cycles": [...]}``), the
        simulation's log.
    """
    from cocotb_tools.runner import get_results

    from ternary_accel.hw.paths import build_path
    from ternary_accel.hw.rtl.layer_system import LayerSystem
    from ternary_accel.sim.build import harness_make_args
    from ternary_accel.sim.harness import simulation_verilog
    from ternary_accel.sim.verilator import VERILATOR_WAIVERS, build_cached, retry_text_busy
    system = LayerSystem(system_params(design), design["act_words"], design["bus_bits"],
                         addr_width=design["addr_width"])
    name = "layer_system_" + "_".join(f"{k}{design[k]}" for k in DESIGN_KEYS)
    build_dir = build_path("sim", name).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    top = build_dir / "layer_system.v"
    text = simulation_verilog(system, "layer_system")
    if not top.exists() or top.read_text() != text:      # keep the build cache warm
        top.write_text(text)
    runner, _ = build_cached(sources=[top], hdl_toplevel="layer_system",
                             build_dir=build_dir,
                             build_args=[*VERILATOR_WAIVERS, "-Wno-CASEINCOMPLETE"],
                             make_args=harness_make_args(), log_file=build_dir / "build.log")
    workdir.mkdir(parents=True, exist_ok=True)
    results, recorded = workdir / "results.xml", workdir / "cycles.json"
    recorded.unlink(missing_ok=True)
    settings = {**design, "results": str(recorded)}
    if layers:
        settings["layers"] = [list(layer) for layer in layers]
    env = {"TB_LAYER": json.dumps(settings)}
    if tests:
        env["COCOTB_TEST_FILTER"] = tests
    try:
        retry_text_busy(lambda: runner.test(
            test_module="ternary_accel.sim.tb.layer_system", hdl_toplevel="layer_system",
            build_dir=build_dir, test_dir=workdir, results_xml=str(results),
            extra_env=env, log_file=workdir / "sim.log"))
    except SystemExit:
        pass
    log = (workdir / "sim.log").read_text() if (workdir / "sim.log").exists() else ""
    if not results.exists():
        return 0, 0, {}, log
    tests_run, failed = get_results(results)
    data = json.loads(recorded.read_text()) if recorded.exists() else {}
    return tests_run, failed, data, log
