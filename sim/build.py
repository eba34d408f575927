"""Building the layer engine under Verilator: the generated Verilog cached by a digest of
the design's sources, the bare engine for the per-cycle bench or the engine inside its
memory harness (:class:`ternary_accel.sim.harness.EngineHarness`); and any such harness
with the Verilog leaf memories (:func:`build_harness`, shared with
:mod:`sim.token_session`)."""

import os
import time
from dataclasses import asdict
from pathlib import Path

from ternary_accel.sim.config import HarnessConfig
from ternary_accel.hw.paths import build_path

__all__ = ["build_engine", "build_harness", "design_digest", "harness_make_args", "BENCHES", "MEMORY_BENCH", "CYCLE_BENCH",
           "HARNESS_TOP"]


#: The two benches of an :class:`EngineSession`: streams played from memories inside
#: the simulator (:mod:`sim.tb_harness`), or driven cycle by cycle from Python
#: (:mod:`sim.tb_engine`).
MEMORY_BENCH, CYCLE_BENCH = "memory", "cycle"
BENCHES = (MEMORY_BENCH, CYCLE_BENCH)


def design_digest(*parts, sources=()):
    """A key of the generated Verilog: the sources of the design's Python (``model/``,
    ``hw/``, ``sim/harness.py`` and the modules ``sources`` of ``sim/``, such as
    ``"channels.py"``) and ``parts``."""
    import hashlib
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256(repr(parts).encode())
    for path in sorted([*(root / "model").glob("*.py"), *(root / "hw").rglob("*.py"),
                        root / "sim" / "harness.py", *(root / "sim" / s for s in sources)]):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _generate(path, key, convert):
    """Write ``convert()`` (Verilog text) to ``path`` unless the file there was generated
    from the same ``key`` (Amaranth takes about 20 s for the 16 x 32 engine)."""
    started = time.monotonic()
    stamp = path.with_suffix(".key")
    if path.exists() and stamp.exists() and stamp.read_text() == key:
        return time.monotonic() - started
    text = convert()
    if not path.exists() or path.read_text() != text:  # keep the build cache warm
        path.write_text(text)
    stamp.write_text(key)
    return time.monotonic() - started


def build_engine(config, build_root=None, *, quiet=True, bench=CYCLE_BENCH,
                 harness=None, waves=False):
    """Generate and compile the engine under Verilator (cached per configuration):
    the bare engine for the per-cycle bench, or inside its
    :class:`sim.harness.EngineHarness` (memories of ``harness``, a
    :class:`HarnessConfig`) for ``bench="memory"``. ``waves=True`` builds with Verilator's
    tracing, in a folder of its own (``<name>_waves``), so that a traced build never
    replaces the fast one in the cache.

    Returns
    -------
    (runner, build_dir, seconds, phases)
        ``seconds`` is the time to generate and compile, nearly 0 when both are cached;
        ``phases`` splits it: ``generate`` (Amaranth, and Yosys for the harness) and
        ``compile`` (Verilator and the C++ compiler).
    """
    from amaranth.back import verilog
    from ternary_accel.hw.rtl.engine import LayerEngine
    from ternary_accel.sim.verilator import VERILATOR_WAIVERS, build_cached, configure_environment
    if bench not in BENCHES:
        raise ValueError(f"bench must be one of {', '.join(BENCHES)}, not {bench!r}")
    started = time.monotonic()
    configure_environment()
    args = list(VERILATOR_WAIVERS) + ["-O3"]
    if bench == CYCLE_BENCH:
        build_dir = Path(build_root or build_path("sim")).resolve() / (config.name + _waves_suffix(waves))
        build_dir.mkdir(parents=True, exist_ok=True)
        source = build_dir / "layer_engine.v"
        generated = _generate(source, design_digest(asdict(config), bench),
                  lambda: verilog.convert(LayerEngine(config), name="layer_engine",
                                          emit_src=False))
        runner, _ = build_cached(sources=[source], hdl_toplevel="layer_engine",
                                 build_dir=build_dir, build_args=args, waves=waves,
                                 log_file=build_dir / "build.log" if quiet else None)
        total = time.monotonic() - started
        return runner, build_dir, total, {"generate": generated, "compile": total - generated}
    from ternary_accel.sim.harness import EngineHarness
    harness = harness or HarnessConfig()
    build_dir = (Path(build_root or build_path("sim")).resolve() /
                 f"{config.name}_{harness.name}{_waves_suffix(waves)}")
    runner, _, phases = build_harness(
        lambda: EngineHarness(**asdict(harness), **asdict(config)), HARNESS_TOP, build_dir,
        design_digest(asdict(config), asdict(harness), bench), quiet=quiet, waves=waves)
    total = time.monotonic() - started
    return runner, build_dir, total, {"generate": phases["generate"],
                                      "compile": total - phases["generate"]}


def build_harness(make_design, top, build_dir, key, *, quiet=True, waves=False):
    """Generate and compile a simulation harness (a component with the Verilog leaf
    memories and clock of :mod:`sim.harness`) under Verilator, cached: the Verilog of
    ``make_design()`` (:func:`~sim.harness.simulation_verilog`) is generated again only
    when ``key`` changes, and Verilator runs only when the sources change.

    Only the top's ports, its clock and the leaf memories are visible to cocotb.

    Parameters
    ----------
    make_design : callable
        Builds the harness component (called only when its Verilog is generated).
    top : str
        Name of the top-level module.
    build_dir : path-like
    key : str
        Identifies the design (:func:`design_digest`).

    Returns
    -------
    (runner, seconds, phases)
        As for :func:`build_engine`.
    """
    from ternary_accel.sim.harness import (CLOCK_VERILOG, MEMORY_VERILOG, VERILATOR_ARGS,
                                           simulation_verilog)
    from ternary_accel.sim.verilator import VERILATOR_WAIVERS, build_cached, configure_environment
    started = time.monotonic()
    configure_environment()
    args = list(VERILATOR_WAIVERS) + ["-O3"]
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    source = build_dir / f"{top}.v"
    # The harness is built only when its Verilog is generated: a component built and
    # dropped unelaborated draws Amaranth's UnusedElaboratable warning. Its port names
    # are kept beside the Verilog for the runs that find it cached.
    ports_file = source.with_suffix(".ports")
    if not ports_file.exists():
        source.with_suffix(".key").unlink(missing_ok=True)      # generate again
    ports = []

    def convert():
        design = make_design()
        ports[:] = ["__".join(map(str, path))
                    for path, _ in design.signature.members.flatten()]
        return simulation_verilog(design, top)

    generated = _generate(source, key, convert)
    if ports:
        ports_file.write_text("\n".join(ports) + "\n")
    else:
        ports = ports_file.read_text().split()
    leaves = []
    for name, text in (("harness_memory.v", MEMORY_VERILOG),
                       ("harness_clock.v", CLOCK_VERILOG)):
        leaves.append(build_dir / name)
        if not leaves[-1].exists() or leaves[-1].read_text() != text:
            leaves[-1].write_text(text)
    # Only the harness's ports, clock and memories are visible to cocotb, so Verilator
    # optimises the design as it would for a C++ testbench. (A wire that VPI may write
    # is re-evaluated on every eval with all the logic behind it: making the whole top
    # module public ran 6 times slower.)
    control = build_dir / "public.vlt"
    text = "`verilator_config\n" + f'public_flat_rd -module "{top}" -var "clk"\n' + \
        "".join(f'public_flat_rw -module "{top}" -var "{port}"\n' for port in ports)
    if not control.exists() or control.read_text() != text:
        control.write_text(text)
    runner, _ = build_cached(sources=[control, *leaves, source], hdl_toplevel=top,
                             build_dir=build_dir, build_args=args + list(VERILATOR_ARGS),
                             public_flat_rw=False, make_args=harness_make_args(), waves=waves,
                             log_file=build_dir / "build.log" if quiet else None)
    total = time.monotonic() - started
    return runner, total, {"generate": generated, "compile": total - generated}


def _waves_suffix(waves):
    return "_waves" if waves else ""


def harness_make_args():
    """``make`` variables of the harness's build: its per-cycle code at ``-O2``, which
    simulates about a fifth faster than the regression's ``-O1`` for 20 s more of
    compilation at 16 x 32 (a ``MAKEFLAGS`` that sets ``OPT_FAST`` itself wins)."""
    user = os.environ.get("MAKEFLAGS", "")
    return () if "OPT_FAST" in user and "OPT_FAST=-O1" not in user else ("OPT_FAST=-O2",)


#: Name of the generated harness's top-level module.
HARNESS_TOP = "engine_harness"

