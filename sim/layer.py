"""Host side of the layer engine: tiling, packing, the cycle model, and running a whole
BitLinear through the RTL under Verilator.

Dataflow: for each token, for each tile of ``rows`` output rows, the tile's
``N_in / lanes`` beats; a beat carries ``lanes`` activations of the token and the tile's
``rows x lanes`` weight codes packed 5 per byte. The output stage rescales each token
with its own ``(scale, shift)``.
"""

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hw.engine import DEFAULT_LANES, DEFAULT_ROWS
from model.bitlinear import bitlinear_fixed
from model.encoding import TRITS_PER_BYTE, pack_trits

from .packing import pack_struct, unpack_array
from .verilator import retry_text_busy

__all__ = ["EngineConfig", "LayerPlan", "plan_layer", "predicted_cycles", "run_layer",
           "LayerRun"]


@dataclass(frozen=True)
class EngineConfig:
    """Parameters of one :class:`hw.engine.LayerEngine` build."""

    lanes: int = DEFAULT_LANES
    rows: int = DEFAULT_ROWS
    max_beats: int = 256
    levels_per_stage: int = 1

    @property
    def name(self):
        return f"engine_k{self.lanes}_m{self.rows}_b{self.max_beats}_l{self.levels_per_stage}"

    def build(self):
        from hw.engine import LayerEngine
        return LayerEngine(**asdict(self))

    @property
    def latency(self):
        from hw.matmul import unit_latency
        return unit_latency(self.lanes, self.levels_per_stage, True)

    @property
    def bytes_per_beat(self):
        from hw.engine import bytes_per_beat
        return bytes_per_beat(self.lanes, self.rows)


def check_shape(out_features, in_features, config):
    """Raise ``ValueError`` unless the layer tiles onto ``config``."""
    from hw.engine import check_layer_shape
    check_layer_shape(out_features, in_features, lanes=config.lanes, rows=config.rows,
                      max_beats=config.max_beats)


def predicted_cycles(out_features, in_features, tokens, config):
    """:func:`hw.engine.layer_cycles` for ``config`` (shape checked against it)."""
    from hw.engine import layer_cycles
    check_shape(out_features, in_features, config)
    return layer_cycles(out_features, in_features, tokens, lanes=config.lanes,
                        rows=config.rows, levels_per_stage=config.levels_per_stage)


@dataclass
class LayerPlan:
    """The streams of one layer: payload words per beat, and what comes back."""

    act_words: list
    wgt_words: list
    tiles: int          # result vectors (tokens x row tiles)
    out_features: int
    tokens: int


def plan_layer(weights, activations, scale, shift, config):
    """Tile and pack a quantized layer for the engine.

    Parameters
    ----------
    weights : numpy.ndarray, (N_out, N_in), ternary
    activations : numpy.ndarray, (T, N_in), int8
    scale, shift : numpy.ndarray, (T,)
        Output-stage parameters per token (:func:`model.arith.scale_to_fixed`).
    """
    from hw.matmul import act_layout
    n_out, n_in = weights.shape
    check_shape(n_out, n_in, config)
    tokens = activations.shape[0]
    m, k = config.rows, config.lanes
    tiles_r, beats_c = n_out // m, n_in // k
    # Weight beats, (tile, beat) order: the tile's rows x lanes codes, padded to whole
    # bytes with zero weights, packed.
    per_beat = config.bytes_per_beat * TRITS_PER_BYTE
    w = weights.reshape(tiles_r, m, beats_c, k).transpose(0, 2, 1, 3).reshape(-1, m * k)
    w = np.pad(w, ((0, 0), (0, per_beat - m * k)))
    packed = pack_trits(w.reshape(-1)).reshape(-1, config.bytes_per_beat)
    wgt_once = [int.from_bytes(row.tobytes(), "little") for row in packed]
    wgt_words = wgt_once * tokens
    # Activation beats, (token, tile, beat) order.
    x = activations.reshape(tokens, 1, beats_c, k)
    x = np.broadcast_to(x, (tokens, tiles_r, beats_c, k)).reshape(-1, k)
    beats = x.shape[0]
    last = np.zeros(beats, dtype=np.int64)
    last[beats_c - 1::beats_c] = 1
    per_token = tiles_r * beats_c
    act_words = pack_struct(act_layout(k, True), data=x, last=last,
                            scale=np.repeat(scale, per_token),
                            shift=np.repeat(shift, per_token))
    return LayerPlan(act_words, wgt_words, tokens * tiles_r, n_out, tokens)


def reassemble(words, plan, config):
    """Result words, (token, tile) order -> (T, N_out) outputs."""
    from model.arith import OUT_WIDTH
    values = unpack_array(words, config.rows, OUT_WIDTH, signed=True)
    return values.reshape(plan.tokens, plan.out_features)


@dataclass
class LayerRun:
    """Outcome of one layer through the RTL."""

    name: str
    out_features: int
    in_features: int
    tokens: int
    cycles: int
    predicted: int
    exact: bool
    wall_seconds: float
    build_seconds: float
    mismatches: int

    @property
    def macs(self):
        return self.out_features * self.in_features * self.tokens

    @property
    def cycles_per_second(self):
        return self.cycles / self.wall_seconds if self.wall_seconds else float("nan")


def build_engine(config):
    """Generate and compile the engine under Verilator (cached per configuration)."""
    from amaranth.back import verilog
    from cocotb_tools.runner import get_runner

    from .runner import BUILD_ROOT
    from .verilator import VERILATOR_WAIVERS, configure_environment
    configure_environment()
    build_dir = BUILD_ROOT / config.name
    build_dir.mkdir(parents=True, exist_ok=True)
    source = build_dir / "layer_engine.v"
    text = verilog.convert(config.build(), name="layer_engine", emit_src=False)
    if not source.exists() or source.read_text() != text:
        source.write_text(text)
    runner = get_runner("verilator")
    started = time.monotonic()
    runner.build(sources=[source], hdl_toplevel="layer_engine", build_dir=build_dir,
                 build_args=list(VERILATOR_WAIVERS) + ["-O3"],
                 log_file=build_dir / "build.log")
    return runner, build_dir, time.monotonic() - started


def run_layer(name, result, config, *, frac_bits, idle=0.0, backpressure=0.0, seed=1):
    """Run a :class:`model.bitlinear.BitLinearResult` through the engine under Verilator
    and compare every output with :func:`model.bitlinear.bitlinear_fixed`.

    Returns
    -------
    LayerRun
    """
    fixed = bitlinear_fixed(result, frac_bits)
    plan = plan_layer(result.weights, result.activations, fixed["scale"], fixed["shift"],
                      config)
    runner, build_dir, build_seconds = build_engine(config)
    job = build_dir / f"job_{name}"
    job.mkdir(exist_ok=True)
    # The testbench re-plans from the quantized layer: no payload words on disk.
    np.savez(job / "layer.npz", weights=result.weights, activations=result.activations,
             scale=fixed["scale"], shift=fixed["shift"])
    (job / "stats.json").unlink(missing_ok=True)
    env = {"TB_ENGINE": json.dumps(asdict(config)), "TB_JOB": str(job),
           "TB_TRAFFIC": json.dumps({"idle": idle, "backpressure": backpressure,
                                     "seed": seed}),
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    started = time.monotonic()
    results_xml = job / "results.xml"
    try:
        retry_text_busy(lambda: runner.test(
            test_module="sim.tb_engine", hdl_toplevel="layer_engine", build_dir=build_dir,
            test_dir=job, results_xml=str(results_xml), extra_env=env,
            log_file=job / "sim.log"))
    except SystemExit:
        pass
    wall = time.monotonic() - started
    stats = json.loads((job / "stats.json").read_text()) if (job / "stats.json").exists() \
        else {"cycles": 0, "words": []}
    got = reassemble([int(w, 16) for w in stats["words"]], plan, config) \
        if len(stats["words"]) == plan.tiles else None
    mismatches = -1 if got is None else int(np.sum(got != fixed["y_fixed"]))
    n_out, n_in = result.weights.shape
    return LayerRun(name, n_out, n_in, plan.tokens, stats["cycles"],
                    predicted_cycles(n_out, n_in, plan.tokens, config),
                    mismatches == 0, wall, build_seconds, mismatches)
