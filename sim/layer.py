"""Host side of the layer engine: checking and packing a layer's streams, and running
layers through the RTL under Verilator.

Dataflow (:class:`hw.engine.LayerMapping`): for each token, for each tile of ``rows``
output rows, the tile's ``N_in / lanes`` beats; a beat carries ``lanes`` activations of
the token and the tile's ``rows x lanes`` weight codes packed 5 per byte. With the
output stage each token is rescaled with its own ``(scale, shift)``; without it the
engine returns the exact accumulators.

The public calls:

* :func:`run_on_engine`: one layer, from integer weights and activations (or a
  :class:`model.bitlinear.BitLinearResult`), outputs returned.
* :class:`EngineSession`: one simulator process kept running for many layers (a
  model's every BitLinear), each :meth:`EngineSession.run` returning the outputs.
* :class:`EngineCore`: a session as the integer core of :class:`model.decoder.Decoder`.
"""

import json
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge
from pathlib import Path

import numpy as np

from ternary_accel.hw.rtl.engine import DEFAULT_LANES, DEFAULT_ROWS, LayerMapping
from ternary_accel.model.arith import SCALE_WIDTH, SHIFT_MAX, check_activations
from ternary_accel.model.bitlinear import bitlinear_fixed
from ternary_accel.model.encoding import TRITS_PER_BYTE, check_ternary, pack_trits
from ternary_accel.model.quant import ACT_WIDTH

from ternary_accel.sim.packing import pack_struct
from ternary_accel.sim.verilator import retry_text_busy

__all__ = ["EngineConfig", "LayerPlan", "BatchedPlan", "plan_layer", "plan_batches", "check_layer_inputs",
           "predicted_cycles", "EngineResult", "EngineSession", "EngineCore",
           "run_on_engine", "run_bitlinear", "run_layer", "LayerRun", "build_engine",
           "HarnessConfig", "BENCHES", "MEMORY_BENCH", "CYCLE_BENCH",
           "DEFAULT_BUILD_ROOT"]

#: Where engine builds go unless a ``build_root`` is given: ``build/sim`` of the checkout.
DEFAULT_BUILD_ROOT = Path(__file__).resolve().parent.parent / "build" / "sim"
#: Seconds to wait for the simulator to start and connect, or for one layer's result.
CONNECT_TIMEOUT = 600
RESULT_TIMEOUT = 3600


@dataclass(frozen=True)
class EngineConfig:
    """Parameters of one :class:`hw.engine.LayerEngine` build.

    ``output_stage=False`` builds the engine that returns raw accumulators.
    """

    lanes: int = DEFAULT_LANES
    rows: int = DEFAULT_ROWS
    max_beats: int = 256
    levels_per_stage: int = 1
    output_stage: bool = True
    weight_order: str = "rows"
    act_width: int = ACT_WIDTH
    acc_tiles: int = None
    tokens: int = 1
    weight_port_bits: int = None
    packing: str = None
    #: Rows of the pipelined output stage per cycle (None: the two-register stage).
    output_rows: int = None
    #: Copies of the unit's activation register (None: no input register).
    act_copies: int = None

    @property
    def name(self):
        stage = "" if self.output_stage else "_acc"
        order = "" if self.weight_order == "rows" else f"_{self.weight_order}"
        bank = "" if self.acc_tiles is None else f"_t{self.acc_tiles}"
        reuse = "" if self.tokens == 1 else f"_T{self.tokens}"
        port = "" if self.weight_port_bits is None else f"_p{self.weight_port_bits}"
        packing = "" if self.packing is None else f"_{self.packing}"
        return (f"engine_k{self.lanes}_m{self.rows}_b{self.max_beats}"
                f"_l{self.levels_per_stage}{stage}{order}{bank}"
                f"{'' if self.act_width == ACT_WIDTH else f'_a{self.act_width}'}"
                f"{reuse}{port}{packing}"
                f"{'' if self.output_rows is None else f'_o{self.output_rows}'}"
                f"{'' if self.act_copies is None else f'_c{self.act_copies}'}")

    @property
    def assembled(self):
        """Beats assembled from port words (weight reuse or a port width)."""
        return self.tokens > 1 or self.weight_port_bits is not None

    @property
    def wgt_word_bytes(self):
        """Bytes of one word of the engine's ``wgt`` stream: a whole beat, or a port
        word."""
        if not self.assembled:
            return self.bytes_per_beat
        return self.mapping(self.rows, self.lanes).port_bits_used // 8

    def build(self):
        from ternary_accel.hw.rtl.engine import LayerEngine
        return LayerEngine(**asdict(self))

    @property
    def latency(self):
        return self.mapping(self.rows, self.lanes).latency

    @property
    def bytes_per_beat(self):
        from ternary_accel.hw.rtl.engine import weight_beat_bytes
        return weight_beat_bytes(self.lanes, self.rows, self.weight_order)

    @property
    def res_width(self):
        from ternary_accel.hw.rtl.matmul import result_width
        return result_width(self.lanes, self.max_beats, self.output_stage,
                            act_width=self.act_width)

    def mapping(self, out_features, in_features, tokens=1):
        """The :class:`hw.engine.LayerMapping` of a layer on this engine."""
        return LayerMapping(out_features, in_features, tokens, self.lanes, self.rows,
                            self.levels_per_stage, self.output_stage, self.max_beats,
                            batch=self.tokens, port_bits=self.weight_port_bits,
                            packing=self.packing, output_rows=self.output_rows,
                            act_copies=self.act_copies)


def check_shape(out_features, in_features, config):
    """Raise ``ValueError`` unless the layer tiles onto ``config``."""
    config.mapping(out_features, in_features)


def predicted_cycles(out_features, in_features, tokens, config):
    """The cycle model (:attr:`hw.engine.LayerMapping.cycles`) of a layer on ``config``."""
    return config.mapping(out_features, in_features, tokens).cycles


def check_layer_inputs(weights, activations, scale, shift, config):
    """Check a quantized layer for ``config`` and return it normalised.

    Parameters
    ----------
    weights : array_like, (N_out, N_in)
        Ternary weights (-1, 0, +1).
    activations : array_like, (T, N_in) or (N_in,)
        int8 activations (int4 with ``config.act_width=4``); a 1-D vector is one token.
    scale, shift : int or array_like (T,), or None
        The output stage's ``S`` and shift per token; required with the output stage,
        refused without it.

    Returns
    -------
    (weights int8 (N_out, N_in), activations int64 (T, N_in), scale (T,), shift (T,))
        ``scale``/``shift`` are None without the output stage.

    Raises
    ------
    ValueError
        On non-ternary weights, activations outside -128..127 (-8..7), mismatched shapes,
        a shape that does not tile onto the engine, or bad ``scale``/``shift``.
    """
    w = check_ternary(weights)
    if w.ndim != 2:
        raise ValueError(f"weights must be 2-D (N_out, N_in), not shape {w.shape}")
    x = check_activations(activations, act_width=config.act_width)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"activations must be (N_in,) or (T, N_in), not shape {x.shape}")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"activations have {x.shape[1]} features but weights have "
                         f"{w.shape[1]} columns")
    check_shape(*w.shape, config)
    if not config.output_stage:
        if scale is not None or shift is not None:
            raise ValueError("scale and shift need an engine with the output stage "
                             "(this one returns raw accumulators)")
        return w, x, None, None
    if scale is None or shift is None:
        raise ValueError("the output stage needs a scale and a shift per token "
                         "(model.arith.scale_to_fixed)")
    tokens = x.shape[0]
    checked = []
    for name, value, top in (("scale", scale, (1 << SCALE_WIDTH) - 1), ("shift", shift,
                                                                          SHIFT_MAX)):
        v = np.asarray(value)
        if not np.issubdtype(v.dtype, np.integer):
            raise ValueError(f"{name} must be integers, not dtype {v.dtype}")
        v = np.broadcast_to(v.astype(np.int64), (tokens,)) if v.ndim == 0 else \
            v.astype(np.int64)
        if v.shape != (tokens,):
            raise ValueError(f"{name} must have one value per token ({tokens}), "
                             f"not shape {v.shape}")
        if np.any((v < 0) | (v > top)):
            raise ValueError(f"{name} must be in 0..{top}")
        checked.append(v)
    return w, x, checked[0], checked[1]


@dataclass
class LayerPlan:
    """The streams of one layer, each beat stored once.

    Attributes
    ----------
    mapping : hw.engine.LayerMapping
    token_words : list of int
        Activation payload words of each token's ``col_beats`` beats, (token, beat)
        order; a token's beats are the same for every row tile.
    weight_bytes : numpy.ndarray of uint8, (row_tiles * col_beats, bytes_per_beat)
        The packed weight beats, (tile, beat) order; the same for every token.
    """

    mapping: LayerMapping
    token_words: list
    weight_bytes: np.ndarray
    #: With weight reuse: the tokens of each batch of this run (the engine's ``batch``
    #: port); the stored words are then the batched streams (:func:`plan_batches`).
    batch_size: int = None

    @property
    def tiles(self):
        return self.mapping.result_words

    @property
    def batches(self):
        return 1 if self.batch_size is None else self.tokens // self.batch_size

    def order_outputs(self, outputs):
        """The recorded result vectors (stream order) as (tokens, out_features)."""
        outputs = np.asarray(outputs)
        if self.batch_size is None:
            return outputs.reshape(self.tokens, self.out_features)
        tiles, rows = self.mapping.row_tiles, self.mapping.rows
        return (outputs.reshape(self.batches, tiles, self.batch_size, rows)
                .transpose(0, 2, 1, 3).reshape(self.tokens, self.out_features))

    @property
    def tokens(self):
        return self.mapping.tokens

    @property
    def out_features(self):
        return self.mapping.out_features

    @property
    def act_words(self):
        """Activation payload words of every beat in stream order (token, tile, beat)."""
        beats = self.mapping.col_beats
        if self.batch_size is not None:
            per = beats * self.batch_size
            return [word for q in range(self.batches)
                    for word in self.token_words[q * per:(q + 1) * per]
                    * self.mapping.row_tiles]
        return [word for t in range(self.tokens)
                for word in self.token_words[t * beats:(t + 1) * beats]
                * self.mapping.row_tiles]

    @property
    def wgt_words(self):
        """Weight payload words of every beat in stream order (token, tile, beat)."""
        return [int.from_bytes(row.tobytes(), "little") for row in self.weight_bytes] \
            * (self.tokens if self.batch_size is None else self.batches)

    @property
    def descriptors(self):
        """The stream order as loop nests over the stored words (``sim.harness``):
        ``{stream: (inner, middle, outer, middle_stride, outer_stride)}`` for
        ``act`` and ``wgt``: for each token, for each row tile, the tile's beats; with
        weight reuse, for each batch, for each row tile, the tile's beats, each beat's
        port words once and the batch's activation beats."""
        beats, tiles, tokens = self.mapping.col_beats, self.mapping.row_tiles, self.tokens
        if self.batch_size is not None:
            per = beats * self.batch_size
            return {"act": (per, tiles, self.batches, 0, per),
                    "wgt": (len(self.weight_bytes), 1, self.batches, 0, 0)}
        return {"act": (beats, tiles, tokens, 0, beats),
                "wgt": (beats, tiles, tokens, beats, 0)}


@dataclass
class BatchedPlan:
    """A layer on an engine with weight reuse: one :class:`LayerPlan` per run (the full
    batches of T tokens, then the remainder), each with its ``batch_size``."""

    mapping: LayerMapping
    runs: list

    @property
    def tokens(self):
        return self.mapping.tokens

    @property
    def out_features(self):
        return self.mapping.out_features


def plan_layer(weights, activations, scale=None, shift=None, config=None):
    """Check, tile and pack a quantized layer for the engine (vectorized).

    Parameters are those of :func:`check_layer_inputs`.

    Returns
    -------
    LayerPlan
    """
    from ternary_accel.hw.rtl.matmul import act_layout
    config = EngineConfig() if config is None else config
    if config.weight_order != "rows":
        raise ValueError(f"this engine takes weight beats in {config.weight_order!r} order "
                         f"(the sparse dataflow): plan with sim.sparse.plan_sparse")
    w, x, scale, shift = check_layer_inputs(weights, activations, scale, shift, config)
    if config.assembled:
        return plan_batches(w, x, scale, shift, config)
    mapping = config.mapping(w.shape[0], w.shape[1], x.shape[0])
    m, k = config.rows, config.lanes
    tiles_r, beats_c, tokens = mapping.row_tiles, mapping.col_beats, mapping.tokens
    # Weight beats, (tile, beat) order: the tile's rows x lanes codes, padded to whole
    # bytes with zero weights, packed.
    per_beat = mapping.weight_bytes_per_beat * TRITS_PER_BYTE
    tiles = w.reshape(tiles_r, m, beats_c, k).transpose(0, 2, 1, 3).reshape(-1, m * k)
    tiles = np.pad(tiles, ((0, 0), (0, per_beat - m * k)))
    packed = pack_trits(tiles.reshape(-1)).reshape(-1, mapping.weight_bytes_per_beat)
    # Activation beats of each token, (token, beat) order, the last beat marked.
    last = np.zeros(tokens * beats_c, dtype=np.int64)
    last[beats_c - 1::beats_c] = 1
    fields = {"data": x.reshape(-1, k), "last": last}
    if config.output_stage:
        fields.update(scale=np.repeat(scale, beats_c), shift=np.repeat(shift, beats_c))
    token_words = pack_struct(act_layout(k, config.output_stage, config.act_width), **fields)
    return LayerPlan(mapping, token_words, packed)


def _pack_port_beats(beats, mapping):
    """Each row of ``beats`` (a beat's row-major codes) as the beat's W port words,
    the last padded with zero weights: (beats * W, port bytes) uint8. Beats padded to
    whole words pack as one array."""
    from ternary_accel.model.encoding import pack_words
    from ternary_accel.hw.mapping import port_codes_per_word
    port_bits = mapping.port_bits_used
    per_beat = mapping.port_words_per_beat * port_codes_per_word(mapping.packing, port_bits)
    padded = np.pad(beats, ((0, 0), (0, per_beat - beats.shape[1])))
    return np.asarray(pack_words(padded.reshape(-1), mapping.packing, port_bits),
                      dtype=np.uint8).reshape(-1, port_bits // 8)


def plan_batches(w, x, scale, shift, config):
    """The batched streams of a checked layer (:func:`plan_layer` on an engine with
    weight reuse or a weight port): the weights as port words, (tile, beat, word)
    order, stored once and replayed per batch; each batch's activations in (beat,
    token) order, replayed per tile."""
    from ternary_accel.hw.rtl.matmul import act_layout
    mapping = config.mapping(w.shape[0], w.shape[1], x.shape[0])
    m, k = config.rows, config.lanes
    tiles_r, beats_c = mapping.row_tiles, mapping.col_beats
    beats = w.reshape(tiles_r, m, beats_c, k).transpose(0, 2, 1, 3).reshape(-1, m * k)
    words = _pack_port_beats(beats, mapping)
    runs, start = [], 0
    for size, batches in mapping.runs:
        count = size * batches
        xs = x[start:start + count].reshape(batches, size, beats_c, k)
        last = np.zeros((batches, beats_c, size), dtype=np.int64)
        last[:, -1, :] = 1
        fields = {"data": xs.transpose(0, 2, 1, 3).reshape(-1, k), "last": last.reshape(-1)}
        if config.output_stage:
            for name, value in (("scale", scale), ("shift", shift)):
                v = value[start:start + count].reshape(batches, 1, size)
                fields[name] = np.broadcast_to(v, (batches, beats_c, size)).reshape(-1)
        token_words = pack_struct(act_layout(k, config.output_stage, config.act_width),
                                  **fields)
        run_mapping = config.mapping(w.shape[0], w.shape[1], count)
        runs.append(LayerPlan(run_mapping, token_words, words, batch_size=size))
        start += count
    return BatchedPlan(mapping, runs)


@dataclass
class EngineResult:
    """What one layer through the RTL gave.

    Attributes
    ----------
    outputs : numpy.ndarray of int64, (T, N_out), or (N_out,) for a 1-D input
        int16 results of the output stage, or raw accumulators.
    cycles : int
        Simulated cycles from the first beat to the last result.
    predicted : int
        The cycle model's count (equal to ``cycles`` when nothing stalls).
    error : int
        The engine's sticky error flags after the layer (bit 0 invalid code, bit 1
        overflow); 0 when all is well.
    wall_seconds : float
        Host time of the call: planning, sending, simulating, receiving.
    timing : dict
        The simulator's seconds by phase: ``simulate`` (the cycles themselves) and,
        for the memory bench, ``load`` (the memories) and ``read`` (the results).
    """

    outputs: np.ndarray
    cycles: int
    predicted: int
    error: int
    wall_seconds: float
    timing: dict = field(default_factory=dict)


#: The two benches of an :class:`EngineSession`: streams played from memories inside
#: the simulator (:mod:`sim.tb_harness`), or driven cycle by cycle from Python
#: (:mod:`sim.tb_engine`).
MEMORY_BENCH, CYCLE_BENCH = "memory", "cycle"
BENCHES = (MEMORY_BENCH, CYCLE_BENCH)


@dataclass(frozen=True)
class HarnessConfig:
    """Memory depths (words) of the :class:`sim.harness.EngineHarness` of a
    ``bench="memory"`` session: a layer fits when its tokens' activation beats
    (``tokens * col_beats``), its weight beats (``row_tiles * col_beats``) and its results
    (``tokens * row_tiles``) fit. The defaults hold every 2B4T projection on the
    16 x 32 engine (34,560 weight beats at most) for up to 16 tokens."""

    act_depth: int = 4096
    wgt_depth: int = 65536
    res_depth: int = 8192

    def __post_init__(self):
        from ternary_accel.hw.params import check_positive_int
        for name in ("act_depth", "wgt_depth", "res_depth"):
            check_positive_int(name, getattr(self, name), minimum=2)

    @property
    def name(self):
        return f"h{self.act_depth}_{self.wgt_depth}_{self.res_depth}"

    def check(self, plan):
        """Raise ``ValueError`` unless ``plan`` (a :class:`LayerPlan`, or a
        :class:`sim.sparse.SparsePlan`) fits: its stored words and its results."""
        mapping = plan.mapping
        needs = (("act_depth", "activation beats", len(plan.token_words)),
                 ("wgt_depth", "weight beats", len(plan.weight_bytes)),
                 ("res_depth", "results", plan.tiles))
        for field, what, count in needs:
            if count > getattr(self, field):
                raise ValueError(
                    f"the layer ({mapping.out_features} x {mapping.in_features}, "
                    f"{plan.tokens} token(s)) has {count} {what}, more than the harness "
                    f"memory holds ({field}={getattr(self, field)}): run fewer tokens at "
                    f"a time or build a HarnessConfig with {field} >= {count}")


def _design_digest(*parts):
    """A key of the generated Verilog: the sources of the design's Python (``model/``,
    ``hw/``, the harness) and ``parts``."""
    import hashlib
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256(repr(parts).encode())
    for path in sorted([*(root / "model").glob("*.py"), *(root / "hw").rglob("*.py"),
                        root / "sim" / "harness.py"]):
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
                 harness=None):
    """Generate and compile the engine under Verilator (cached per configuration):
    the bare engine for the per-cycle bench, or inside its
    :class:`sim.harness.EngineHarness` (memories of ``harness``, a
    :class:`HarnessConfig`) for ``bench="memory"``.

    Returns
    -------
    (runner, build_dir, seconds, phases)
        ``seconds`` is the time to generate and compile, nearly 0 when both are cached;
        ``phases`` splits it: ``generate`` (Amaranth, and Yosys for the harness) and
        ``compile`` (Verilator and the C++ compiler).
    """
    from amaranth.back import verilog
    from ternary_accel.sim.verilator import VERILATOR_WAIVERS, build_cached, configure_environment
    if bench not in BENCHES:
        raise ValueError(f"bench must be one of {', '.join(BENCHES)}, not {bench!r}")
    started = time.monotonic()
    configure_environment()
    args = list(VERILATOR_WAIVERS) + ["-O3"]
    if bench == CYCLE_BENCH:
        build_dir = Path(build_root or DEFAULT_BUILD_ROOT) / config.name
        build_dir.mkdir(parents=True, exist_ok=True)
        source = build_dir / "layer_engine.v"
        generated = _generate(source, _design_digest(asdict(config), bench),
                  lambda: verilog.convert(config.build(), name="layer_engine",
                                          emit_src=False))
        runner, _ = build_cached(sources=[source], hdl_toplevel="layer_engine",
                                 build_dir=build_dir, build_args=args,
                                 log_file=build_dir / "build.log" if quiet else None)
        total = time.monotonic() - started
        return runner, build_dir, total, {"generate": generated, "compile": total - generated}
    from ternary_accel.sim.harness import (CLOCK_VERILOG, MEMORY_VERILOG, VERILATOR_ARGS, EngineHarness,
                          simulation_verilog)
    harness = harness or HarnessConfig()
    build_dir = Path(build_root or DEFAULT_BUILD_ROOT) / f"{config.name}_{harness.name}"
    build_dir.mkdir(parents=True, exist_ok=True)
    source = build_dir / f"{HARNESS_TOP}.v"
    design = EngineHarness(**asdict(harness), **asdict(config))
    generated = _generate(source, _design_digest(asdict(config), asdict(harness), bench),
              lambda: simulation_verilog(design, HARNESS_TOP))
    leaves = []
    for name, text in (("harness_memory.v", MEMORY_VERILOG),
                       ("harness_clock.v", CLOCK_VERILOG)):
        leaves.append(build_dir / name)
        if not leaves[-1].exists() or leaves[-1].read_text() != text:
            leaves[-1].write_text(text)
    # Only the harness's ports, clock and memories are visible to cocotb, so Verilator
    # optimises the engine as it would for a C++ testbench. (A wire that VPI may write
    # is re-evaluated on every eval with all the logic behind it: making the whole top
    # module public ran 6 times slower.)
    control = build_dir / "public.vlt"
    ports = ["__".join(map(str, path)) for path, _ in design.signature.members.flatten()]
    text = "`verilator_config\n" + f'public_flat_rd -module "{HARNESS_TOP}" -var "clk"\n' + \
        "".join(f'public_flat_rw -module "{HARNESS_TOP}" -var "{port}"\n' for port in ports)
    if not control.exists() or control.read_text() != text:
        control.write_text(text)
    runner, _ = build_cached(sources=[control, *leaves, source], hdl_toplevel=HARNESS_TOP,
                             build_dir=build_dir, build_args=args + list(VERILATOR_ARGS),
                             public_flat_rw=False, make_args=harness_make_args(),
                             log_file=build_dir / "build.log" if quiet else None)
    total = time.monotonic() - started
    return runner, build_dir, total, {"generate": generated, "compile": total - generated}


def harness_make_args():
    """``make`` variables of the harness's build: its per-cycle code at ``-O2``, which
    simulates about a fifth faster than the regression's ``-O1`` for 20 s more of
    compilation at 16 x 32 (a ``MAKEFLAGS`` that sets ``OPT_FAST`` itself wins)."""
    user = os.environ.get("MAKEFLAGS", "")
    return () if "OPT_FAST" in user and "OPT_FAST=-O1" not in user else ("OPT_FAST=-O2",)


#: Name of the generated harness's top-level module.
HARNESS_TOP = "engine_harness"


class EngineSession:
    """One simulator process running the layer engine, serving layers one after another.

    The simulator (cocotb under Verilator) connects back to this process over a
    loopback socket with an authentication key; each :meth:`run` sends a planned layer
    and receives its outputs. Use as a context manager.

    Parameters
    ----------
    config : EngineConfig
    build_root : path-like, optional
        Folder of the builds (default :data:`DEFAULT_BUILD_ROOT`); the engine's build
        and the session's logs go to a folder named after the configuration in it.
    idle, backpressure : float
        Probability of an idle cycle on each input stream and of a not-ready cycle on
        the result stream (random stalls; 0 for full speed).
    seed : int
        Seed of the stall patterns.
    bench : str
        ``"memory"`` (the default): the engine inside :class:`sim.harness.EngineHarness`,
        its streams played from memories by the simulator itself (:mod:`sim.tb_harness`),
        stalls from LFSRs; or ``"cycle"``: every handshake driven and sampled from
        Python each cycle (:mod:`sim.tb_engine`), stalls from NumPy, about 30 times
        slower. Both give the same outputs, and the same cycles without stalls.
    harness : HarnessConfig, optional
        The memories of the ``"memory"`` bench (default :class:`HarnessConfig`).
    """

    def __init__(self, config=None, *, build_root=None, idle=0.0, backpressure=0.0,
                 seed=1, bench=MEMORY_BENCH, harness=None):
        self.config = EngineConfig() if config is None else config
        for name, value in (("idle", idle), ("backpressure", backpressure)):
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be a probability in [0, 1), not {value!r}")
        if bench not in BENCHES:
            raise ValueError(f"bench must be one of {', '.join(BENCHES)}, not {bench!r}")
        if harness is not None and bench != MEMORY_BENCH:
            raise ValueError("a HarnessConfig goes with bench='memory'")
        self.bench = bench
        self.harness = (harness or HarnessConfig()) if bench == MEMORY_BENCH else None
        self.build_root = build_root
        self.traffic = {"idle": idle, "backpressure": backpressure, "seed": seed}
        self.build_seconds = None
        self.build_phases = {}
        self.build_dir = None
        self.run_dir = None
        self._conn = None
        self._thread = None
        self._failure = None
        self._failed = False
        self._jobs = 0

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def log(self):
        """The simulator's log file (in the session's own run folder)."""
        return self.run_dir / "session.log" if self.run_dir else None

    def start(self):
        """Build the engine (cached) and start the simulator."""
        if self._conn is not None:
            return
        runner, self.build_dir, self.build_seconds, self.build_phases = build_engine(
            self.config, self.build_root, bench=self.bench, harness=self.harness)
        module, top = (("ternary_accel.sim.tb.harness", HARNESS_TOP) if self.bench == MEMORY_BENCH
                       else ("ternary_accel.sim.tb.engine", "layer_engine"))
        key = secrets.token_bytes(32)
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(1.0)
        host, port = listener.getsockname()
        env = {"TB_ENGINE": json.dumps(asdict(self.config)),
               "TB_SERVER": f"{host}:{port}", "TB_AUTH": key.hex(),
               "PYTHONPATH": os.pathsep.join(
                   [str(Path(__file__).resolve().parent.parent)] +
                   ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))}
        # Each session runs in a folder of its own inside the build: the memory images
        # it loads, its log and results, so that sessions of one build side by side
        # (two processes, or two pytest workers) never read each other's files.
        self.run_dir = Path(tempfile.mkdtemp(prefix="session-", dir=self.build_dir))
        results = self.run_dir / "session.xml"

        def simulate():
            try:
                retry_text_busy(lambda: runner.test(
                    test_module=module, hdl_toplevel=top,
                    build_dir=self.build_dir, test_dir=self.run_dir,
                    results_xml=str(results), extra_env=env, log_file=self.log))
            except SystemExit:
                pass
            except Exception as error:  # reported to the caller by _check_alive
                self._failure = error

        self._thread = threading.Thread(target=simulate, name="engine-sim", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + CONNECT_TIMEOUT
        try:
            while True:
                try:
                    sock, _ = listener.accept()
                    break
                except socket.timeout:
                    self._check_alive()
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the simulator did not connect within "
                                           f"{CONNECT_TIMEOUT} s (log: {self.log})") from None
        finally:
            listener.close()
        sock.settimeout(None)
        conn = Connection(sock.detach())
        deliver_challenge(conn, key)
        answer_challenge(conn, key)
        self._conn = conn

    def _check_alive(self):
        if self._thread is not None and not self._thread.is_alive():
            raise RuntimeError(f"the engine simulator stopped ({self._failure or 'exited'}); "
                               f"see {self.log}")

    def run(self, weights, activations, scale=None, shift=None):
        """Run one quantized layer through the engine; see :func:`check_layer_inputs`
        for the arguments and their checks.

        Returns
        -------
        EngineResult
        """
        single = np.ndim(activations) == 1
        result = self.run_plan(plan_layer(weights, activations, scale, shift, self.config))
        if single:
            result.outputs = result.outputs[0]
        return result

    def run_plan(self, plan):
        """Run a planned layer (:func:`plan_layer`, :func:`sim.sparse.plan_sparse`).

        Returns
        -------
        EngineResult
            Outputs (tokens, out_features).
        """
        if isinstance(plan, BatchedPlan):
            started = time.monotonic()
            results = [self.run_plan(run) for run in plan.runs]
            return EngineResult(np.concatenate([r.outputs for r in results]),
                                sum(r.cycles for r in results), plan.mapping.cycles,
                                int(np.bitwise_or.reduce([r.error for r in results])),
                                time.monotonic() - started,
                                {key: sum(r.timing.get(key, 0.0) for r in results)
                                 for key in results[0].timing})
        if self.harness is not None:
            self.harness.check(plan)
        if getattr(plan, "batch_size", None) is not None and self.bench != MEMORY_BENCH:
            raise ValueError("the cycle bench drives act and wgt in lockstep: an engine "
                             "with weight reuse or a weight port runs on bench='memory'")
        if self._conn is None:
            self.start()
        started = time.monotonic()
        self._jobs += 1
        self._conn.send({"plan": plan, "traffic": {**self.traffic,
                                                   "seed": self.traffic["seed"] + self._jobs}})
        deadline = started + RESULT_TIMEOUT
        while not self._conn.poll(1.0):
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"no result within {RESULT_TIMEOUT} s (log: {self.log})")
        reply = self._conn.recv()
        if "exception" in reply:
            self._failed = True
            raise RuntimeError(f"the engine simulation failed: {reply['exception']} "
                               f"(log: {self.log})")
        outputs = (plan.order_outputs(reply["outputs"]) if hasattr(plan, "order_outputs")
                   else reply["outputs"].reshape(plan.tokens, plan.out_features))
        return EngineResult(outputs, reply["cycles"],
                            plan.mapping.cycles, reply["error"], time.monotonic() - started,
                            reply["timing"])

    def close(self):
        """Stop the simulator (waits for it to exit)."""
        if self._conn is not None:
            try:
                self._conn.send(None)
            except OSError:
                pass
            self._conn.close()
            self._conn = None
        if self._thread is not None:
            self._thread.join(timeout=60)
            stopped = not self._thread.is_alive()
            self._thread = None
            # a clean session leaves nothing behind; a failed one keeps its log
            if stopped and not self._failed and self._failure is None and self.run_dir:
                shutil.rmtree(self.run_dir, ignore_errors=True)


def run_on_engine(weights, activations, *, scale=None, shift=None, config=None,
                  build_root=None, idle=0.0, backpressure=0.0, seed=1, bench=MEMORY_BENCH):
    """Run one quantized layer on the engine's RTL and return its outputs.

    With ``config.output_stage`` (the default engine) pass the per-token ``scale`` and
    ``shift`` and get the int16 results; with ``EngineConfig(output_stage=False)`` get
    the raw accumulators. A 1-D activation vector is one token.

    Returns
    -------
    EngineResult
    """
    with EngineSession(config, build_root=build_root, idle=idle, backpressure=backpressure,
                       seed=seed, bench=bench) as session:
        return session.run(weights, activations, scale, shift)


def run_bitlinear(result, *, frac_bits=None, config=None, **kwargs):
    """Run a :class:`model.bitlinear.BitLinearResult` on the engine: through the output
    stage with ``frac_bits`` fractional output bits (the engine ``config`` must have
    it), or as raw accumulators when ``frac_bits`` is None."""
    if frac_bits is None:
        config = config or EngineConfig(output_stage=False)
        return run_on_engine(result.weights, result.activations, config=config, **kwargs)
    fixed = bitlinear_fixed(result, frac_bits)
    return run_on_engine(result.weights, result.activations, scale=fixed["scale"],
                         shift=fixed["shift"], config=config, **kwargs)


@dataclass
class EngineCore:
    """The integer core of :class:`model.decoder.Decoder` on the RTL: every BitLinear
    runs on an :class:`EngineSession` built without the output stage, which returns the
    exact accumulators; on an engine with ``weight_order="columns"`` through the sparse
    dataflow (:func:`sim.sparse.run_sparse`: only each token's nonzero activations and
    their weight columns; ``kept`` in the call records).

    Attributes
    ----------
    session : EngineSession
    calls : list of dict
        One record per BitLinear: layer, projection, tokens, cycles, predicted cycles,
        wall seconds, seconds of simulation.
    """

    session: EngineSession
    calls: list = field(default_factory=list)
    name = "rtl"

    def __post_init__(self):
        if self.session.config.output_stage:
            raise ValueError("the decoder's core needs raw accumulators: an EngineConfig "
                             "with output_stage=False")

    def __call__(self, weights, activations, *, layer=None, name=None):
        sparse = self.session.config.weight_order == "columns"
        if sparse:       # the sparse dataflow (sim.sparse): only the nonzero activations
            from ternary_accel.sim.sparse import run_sparse
            result = run_sparse(self.session, weights, activations)
        else:
            result = self.session.run(weights, activations)
        if result.error:
            raise RuntimeError(f"engine error flags {result.error:#x} on {name} of "
                               f"layer {layer}")
        self.calls.append({"layer": layer, "name": name, "tokens": len(activations),
                           "cycles": result.cycles, "predicted": result.predicted,
                           "wall_seconds": result.wall_seconds,
                           "simulate_seconds": result.timing.get("simulate", 0.0),
                           **({"kept": sum(result.mapping.kept)} if sparse else {})})
        return result.outputs


@dataclass
class LayerRun:
    """Outcome of one layer through the RTL, checked against the golden model."""

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
    error: int = 0
    timing: dict = field(default_factory=dict)

    @property
    def macs(self):
        return self.out_features * self.in_features * self.tokens

    @property
    def cycles_per_second(self):
        return self.cycles / self.wall_seconds if self.wall_seconds else float("nan")


def run_layer(name, result, config, *, frac_bits, idle=0.0, backpressure=0.0, seed=1,
              session=None, build_root=None, bench=MEMORY_BENCH):
    """Run a :class:`model.bitlinear.BitLinearResult` through the engine (on ``session``,
    else a session of its own) and compare every output with
    :func:`model.bitlinear.bitlinear_fixed`.

    Returns
    -------
    LayerRun
    """
    fixed = bitlinear_fixed(result, frac_bits)
    own = session is None
    if own:
        session = EngineSession(config, build_root=build_root, idle=idle,
                                backpressure=backpressure, seed=seed, bench=bench)
    try:
        session.start()
        run = session.run(result.weights, result.activations, fixed["scale"],
                          fixed["shift"])
    finally:
        if own:
            session.close()
    mismatches = int(np.sum(run.outputs != fixed["y_fixed"]))
    n_out, n_in = result.weights.shape
    return LayerRun(name, n_out, n_in, len(result.activations), run.cycles, run.predicted,
                    mismatches == 0 and run.error == 0, run.wall_seconds,
                    session.build_seconds, mismatches, run.error, run.timing)
