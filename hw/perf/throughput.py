"""Whole-model performance and energy of the accelerator on a platform: decode tokens/s,
time to first token, bytes and joules per token, per operation kind.

The operations and bytes are the decoder's own account of a pass
(:func:`model.accounting.account`, for an activation scheme of :mod:`model.schemes`);
every operation's cycles come from the RTL's cycle models: the token core's
(:func:`hw.program.operation_cycles`, equal to the core's counters in simulation) for a
token's norms, quantizers, RoPE, KV writes, attention, element-wise operations, LM head,
sequencer and its BitLinears, the layer engine's (:class:`hw.timing.LayerMapping`, or
:class:`hw.timing.SparseLayerMapping` for the sparse dataflow) for a BitLinear of a batch
of tokens (weight reuse). Each operation takes ``max(compute, memory)`` (its own compute
and DRAM traffic overlap), operations run one after the other, and the DRAM delivers its
peak bandwidth: a projection, and a bound the measured hardware can only approach."""

import math
from dataclasses import asdict, dataclass, replace

from ternary_accel.hw.perf.energy import fp16_reference, pass_energy
from ternary_accel.hw.perf.accounting import ATTENTION, DRAM, ENGINE, HEAD, MEMORIES, SRAM, UNITS, \
    VECTOR, account, batched
from ternary_accel.model.config import model_config
from ternary_accel.model.schemes import B158
from ternary_accel.model.sparse import BEAT_MAJOR

from ternary_accel.hw.perf.platforms import PEERS
from ternary_accel.hw.program import (ATTEND, ELEMENTWISE, HEAD as HEAD_OP, KV_WRITE, LOAD,
                                      MATMUL, NORM, ROPE, SEQUENCER_CYCLES, operation_cycles,
                                      token_engine, token_operations)
from ternary_accel.hw.timing import LayerMapping, SparseLayerMapping

#: The units with RTL whose cycles come from their cycle models (equal to simulation).
RTL_UNITS = (ENGINE, VECTOR, ATTENTION, HEAD)

__all__ = ["overlapped_seconds", "KernelTime", "PhaseReport", "phase_report", "model_report",
           "scheme_rows", "NODES", "batch_sweep", "engine_for_ttft", "TTFT_ENGINES"]

#: Process nodes of the arithmetic energies.
NODES = ("45nm", "7nm")


@dataclass
class KernelTime:
    """One operation kind of a pass on a platform (summed over layers)."""

    label: str
    unit: str
    macs: int
    ops: int
    cycles: int
    dram_bytes: int
    sram_bytes: int
    compute_s: float
    memory_s: float
    seconds: float

    @property
    def bound(self):
        if self.seconds == 0:
            return "-"
        return "memory" if self.memory_s > self.compute_s else "compute"

    @property
    def intensity(self):
        """Operations (MACs count two) per DRAM byte; None without DRAM traffic."""
        work = 2 * self.macs + self.ops
        return work / self.dram_bytes if self.dram_bytes else None

    def to_dict(self):
        return {"kind": self.label, "unit": self.unit, "rtl": self.unit in RTL_UNITS,
                "macs": self.macs, "ops": self.ops, "cycles": self.cycles,
                "dram_bytes": self.dram_bytes, "sram_bytes": self.sram_bytes,
                "compute_s": self.compute_s, "memory_s": self.memory_s,
                "seconds": self.seconds, "bound": self.bound,
                "ops_per_dram_byte": self.intensity}


def overlapped_seconds(compute_s, memory_s):
    """The time of one operation whose compute and DRAM traffic overlap (the weights
    stream while the engine works): ``max(compute, memory)``. The one rule every
    throughput figure of the project uses."""
    return max(compute_s, memory_s)


def token_engine_params(platform):
    """The engine of the token core on ``platform``: its lanes, rows, weight port and
    packing, one token a pass (:func:`hw.program.token_engine`)."""
    return token_engine(platform.lanes, platform.rows, max_beats=platform.engine.max_beats,
                        weight_port_bits=platform.weight_port_bits, packing=platform.packing)


def _positions(accounting):
    """The position of every token of the pass: each sequence's tokens after the
    ``context`` cached positions."""
    per_sequence = accounting.tokens // accounting.batch
    return [accounting.context + i for i in range(per_sequence)] * accounting.batch


def _cycles(cost, platform, accounting):
    """Cycles of one operation of the pass: the token core's operation cycle models
    (:func:`hw.program.operation_cycles`, equal to the RTL's counters), the BitLinears
    of a batch (weight reuse) the layer engine's (:class:`hw.timing.LayerMapping`)."""
    s = cost.sizes
    config = accounting.config
    params = token_engine_params(platform)

    def op(code, position=0, **fields):
        return operation_cycles(code, fields, params=params, numerics=platform.numerics,
                                position=position, head_rows=platform.head_rows)

    tokens = s.get("tokens", 1)
    if cost.unit == ENGINE:
        if cost.kept is not None:
            # the beat-major order, on an accumulator bank of the layer's row tiles
            return SparseLayerMapping(s["out_features"], s["in_features"], cost.kept,
                                      lanes=platform.lanes, rows=platform.rows,
                                      order=BEAT_MAJOR,
                                      acc_tiles=s["out_features"] // platform.rows).cycles
        if tokens == 1:
            return op(MATMUL, n=s["in_features"], reps=s["out_features"])
        mapping = LayerMapping(s["out_features"], s["in_features"], tokens,
                               platform.lanes, platform.rows, batch=platform.weight_reuse,
                               port_bits=platform.weight_port_bits, packing=platform.packing)
        return mapping.cycles + platform.rows + 1
    if cost.unit == HEAD:
        try:
            head = replace(params, lanes=platform.head_lanes)
            return tokens * operation_cycles(HEAD_OP, {"n": s["width"], "reps": s["vocab"]},
                                             params=head, numerics=platform.numerics,
                                             position=0, head_rows=platform.head_rows)
        except ValueError:          # a head that does not tile: its MACs at the unit's rate
            return math.ceil(cost.macs / platform.head_macs_per_cycle)
    kind, hd = cost.kind, config.head_dim
    if kind == "embedding":
        return tokens * op(LOAD, n=s["width"])
    if kind == "rms_norm":
        return tokens * op(NORM, n=s["width"])
    if kind == "rope":
        kv = s["heads"] - config.heads
        return tokens * (op(ROPE, n=hd, reps=config.heads) + op(ROPE, n=hd, reps=kv))
    if kind == "kv_write":
        return tokens * 2 * op(KV_WRITE, n=hd, reps=s["width"] // (2 * hd))
    if kind == "attn_scores":
        return sum(op(ATTEND, position=p, n=hd, reps=config.heads)
                   for p in _positions(accounting))
    if kind == "residual":
        return tokens * op(ELEMENTWISE, n=s["width"])
    if kind == "relu2":
        gated = config.shape.ffn_kind == "gated"
        return tokens * (2 if gated else 1) * op(ELEMENTWISE, n=s["width"])
    if kind in FUSED_KINDS:
        return 0
    raise ValueError(f"no cycle model for the operation {kind!r}")


#: Operations whose cycles another operation's unit counts: the quantizer in the fused
#: norm (NORM), the KV reads, softmax and value products in the attention unit (ATTEND).
FUSED_KINDS = ("act_quant", "kv_read", "softmax", "attn_values")


def sequencer_cycles(accounting, platform):
    """The sequencer's cycles for the pass's tokens: :data:`hw.program.SEQUENCER_CYCLES`
    for each instruction of the token's program (:func:`hw.program.token_operations`)."""
    program = token_operations(accounting.config, token_engine_params(platform),
                               platform.numerics, accounting.context + 1)
    return accounting.tokens * SEQUENCER_CYCLES * len(program)


@dataclass
class PhaseReport:
    """A pass (prefill or decode) on a platform: kernels by kind, totals, energy."""

    phase: str
    tokens: int
    context: int
    kernels: list
    seconds: float
    cycles: int
    dram_bytes: int
    energy: dict          # node -> PassEnergy.per_token() of this design
    fp16_energy: dict     # node -> the FP16 reference's

    def to_dict(self):
        return {"phase": self.phase, "tokens": self.tokens, "context": self.context,
                "seconds": self.seconds, "cycles": self.cycles,
                "dram_bytes": self.dram_bytes,
                "dram_bytes_per_token": self.dram_bytes / self.tokens,
                "joules_per_token": self.energy, "fp16_joules_per_token": self.fp16_energy,
                "kernels": [k.to_dict() for k in self.kernels]}


def phase_report(accounting, platform, clock_mhz, phase, reference=None):
    """Time and energy of the pass ``accounting`` on ``platform`` at ``clock_mhz``; the
    FP16 reference is that of ``reference`` (default: ``accounting``; for a pass of
    another scheme than b1.58, its b1.58 charging)."""
    hz, bandwidth = clock_mhz * 1e6, platform.bandwidth_gbs * 1e9
    kernels = {}
    for cost in accounting.costs:
        label = f"bitlinear {cost.name}" if cost.kind == "bitlinear" else cost.kind
        cycles = _cycles(cost, platform, accounting)
        dram = sum(n for k, n in cost.bytes.items() if MEMORIES[k] == DRAM)
        sram = sum(n for k, n in cost.bytes.items() if MEMORIES[k] == SRAM)
        compute_s, memory_s = cycles / hz, dram / bandwidth
        k = kernels.setdefault(label, KernelTime(label, cost.unit, 0, 0, 0, 0, 0, 0.0, 0.0,
                                                 0.0))
        k.macs += cost.macs
        # Operations besides the unit's multiply-accumulates (a MAC is a mul and an add;
        # a BitLinear's ternary adds and rescale are its engine's work).
        k.ops += 0 if cost.unit == ENGINE else sum(cost.ops.values()) - 2 * cost.macs
        k.cycles += cycles
        k.dram_bytes += dram
        k.sram_bytes += sram
        k.compute_s += compute_s
        k.memory_s += memory_s
        k.seconds += overlapped_seconds(compute_s, memory_s)
    cycles = sequencer_cycles(accounting, platform)
    rows = list(kernels.values()) + [KernelTime("sequencer", VECTOR, 0, 0, cycles, 0, 0,
                                                cycles / hz, 0.0, cycles / hz)]
    dram_pj = platform.dram_pj_per_bit
    energy = {node: pass_energy(accounting, node=node, dram_pj_per_bit=dram_pj).per_token()
              for node in NODES}
    reference = fp16_reference(accounting if reference is None else reference)
    fp16 = {node: pass_energy(reference, node=node, dram_pj_per_bit=dram_pj).per_token()
            for node in NODES}
    return PhaseReport(phase, accounting.tokens, accounting.context, rows,
                       sum(k.seconds for k in rows), sum(k.cycles for k in rows),
                       accounting.dram_bytes, energy, fp16)


def model_report(model, platform, *, prompt=128, context=None, batch=1, clock_mhz=None,
                 bandwidth_gbs=None, reports=None, scheme=B158, precisions=None):
    """The report of ``model`` (a name of :data:`model.shapes.MODELS`) on ``platform``
    (:class:`hw.platforms.Platform`).

    Parameters
    ----------
    prompt : int
        Prompt tokens of the prefill (time to first token).
    context : int, optional
        Cached positions of the decode step (default: ``prompt``, the first step after
        the prompt).
    batch : int
        Sequences decoded together.
    clock_mhz, bandwidth_gbs : float, optional
        Override the platform's clock and bandwidth.
    scheme : model.schemes.ActivationScheme or str
        The activations (default BitNet b1.58); the FP16 reference is always the dense
        one.
    precisions : hw.perf.accounting.Precisions, optional
        The non-BitLinear operations' precisions (default: the float32 glue;
        ``Precisions.hardware()`` for the hardware numerics).

    Returns
    -------
    dict
        JSON-ready: ``decode_tokens_per_s``, ``prefill_tokens_per_s``, ``ttft_s``,
        ``bytes_per_token``, ``joules_per_token``, ``memory_bound_tokens_per_s``, the
        platform, and both phases with their kernels.

    Raises
    ------
    ValueError
        On an unknown model, a model the decoder cannot run or that does not tile onto
        the platform's engine, a bad prompt, context, batch, clock or bandwidth, or an
        unknown scheme.
    """
    config = model_config(model)
    context = prompt if context is None else context
    for name, value in (("clock_mhz", clock_mhz), ("bandwidth_gbs", bandwidth_gbs)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be positive, not {value!r}")
    if bandwidth_gbs is not None:
        platform = replace(platform, bandwidth_gbs=float(bandwidth_gbs))
    measured = platform.measured(reports=reports)
    if clock_mhz is None:
        clock_mhz, clock_source = platform.clock(reports)
    else:
        clock_source = "given"
    shape = dict(lanes=platform.lanes, rows=platform.rows, **platform.engine_port)
    if precisions is not None:
        shape["precisions"] = precisions
    try:
        dense_prefill = account(config, tokens=prompt, context=0, **shape)
        dense_decode = account(config, tokens=1, context=context, **shape)
        prefill = dense_prefill.with_scheme(scheme)
        decode = batched(dense_decode.with_scheme(scheme), batch)
    except ValueError as error:
        raise ValueError(f"{model} on {platform.name} (K={platform.lanes}, "
                         f"M={platform.rows}): {error}") from None
    pre = phase_report(prefill, platform, clock_mhz, "prefill", dense_prefill)
    dec = phase_report(decode, platform, clock_mhz, "decode",
                       batched(dense_decode, batch))
    bytes_per_token = dec.dram_bytes / dec.tokens
    report = {
        "model": model, "scheme": prefill.scheme.to_dict(),
        "precisions": asdict(dense_decode.precisions),
        "platform": platform.to_dict(), "clock_mhz": clock_mhz,
        "clock_source": clock_source, "prompt": prompt, "context": context, "batch": batch,
        "decode_tokens_per_s": dec.tokens / dec.seconds,
        "prefill_tokens_per_s": pre.tokens / pre.seconds,
        "ttft_s": pre.seconds,
        "bytes_per_token": bytes_per_token,
        "memory_bound_tokens_per_s": platform.bandwidth_gbs * 1e9 / bytes_per_token,
        "joules_per_token": dec.energy,
        "fp16_joules_per_token": dec.fp16_energy,
        "engine_macs_per_cycle": platform.lanes * platform.rows,
        "engine_area": (None if measured is None or clock_source == "given"
                        else {"lut4_per_mac": measured.lut4_per_mac,
                              "source": measured.describe()}),
        "units": dict(UNITS),
        "decode": dec.to_dict(), "prefill": pre.to_dict(),
        "peers": peer_rows(model, platform.name, dec),
    }
    return report


def batch_sweep(model, platform, batches, *, context=128, clock_mhz=None, reports=None,
                precisions=None):
    """Decode of ``B`` sequences together for each ``B`` in ``batches`` (the engine's
    weight reuse: a weight beat serves up to T tokens): one row per ``B`` with the
    step's time, tokens/s (all sequences, and each), DRAM bytes and joules per token
    and what bounds the step (``"memory"`` while the DRAM time of the step's operations
    exceeds their compute time, else ``"compute"``).

    Raises
    ------
    ValueError
        As :func:`model_report`, or on a batch that is not a positive integer.
    """
    config = model_config(model)
    if clock_mhz is None:
        clock_mhz, _ = platform.clock(reports)
    shape = dict(lanes=platform.lanes, rows=platform.rows, **platform.engine_port)
    if precisions is not None:
        shape["precisions"] = precisions
    decode = account(config, tokens=1, context=context, **shape)
    rows = []
    for b in batches:
        phase = phase_report(batched(decode, b), platform, clock_mhz, "decode")
        compute = sum(k.compute_s for k in phase.kernels)
        memory = sum(k.memory_s for k in phase.kernels)
        rows.append({"batch": b, "step_s": phase.seconds,
                     "tokens_per_s": phase.tokens / phase.seconds,
                     "tokens_per_s_per_sequence": 1 / phase.seconds,
                     "dram_bytes_per_token": phase.dram_bytes / phase.tokens,
                     "joules_per_token": phase.energy["7nm"]["total"],
                     "compute_s": compute, "memory_s": memory,
                     "bound": "memory" if memory > compute else "compute"})
    return rows


#: Engine shapes tried for a time-to-first-token target (K lanes x M rows, doubling).
TTFT_ENGINES = ((32, 16), (32, 32), (64, 32), (64, 64), (128, 64), (128, 128), (256, 128))


def engine_for_ttft(model, platform, target_s, *, prompt=128, clock_mhz=None,
                    reports=None, precisions=None):
    """The smallest engine of :data:`TTFT_ENGINES` (the preset's T and packing, its
    weight port widened with the beat so that a beat takes as many words, at the
    preset's clock and bandwidth) whose prefill of ``prompt`` tokens takes at most
    ``target_s``. A projection of the cycle model, not a placed design.

    Returns
    -------
    dict
        ``engine``: ``{"lanes", "rows", "ttft_s"}`` of that engine, or None;
        ``largest``: the same for the largest engine tried, with ``limits``, the three
        operation kinds that take the longest there (what no engine size removes).
    """
    config = model_config(model)
    if clock_mhz is None:
        clock_mhz, _ = platform.clock(reports)
    base = platform.engine
    found, largest = None, None
    counted = account(config, tokens=prompt, context=0, lanes=base.lanes, rows=base.rows,
                      **platform.engine_port,
                      **({} if precisions is None else {"precisions": precisions}))
    for lanes, rows in TTFT_ENGINES:
        port = base.weight_port_bits
        if port is not None:
            port = max(8, port * lanes * rows // (base.lanes * base.rows) // 8 * 8)
        try:
            engine = replace(base, lanes=lanes, rows=rows, weight_port_bits=port)
            trial = replace(platform, engine=engine)
            prefill = counted.on_engine(lanes, rows, **trial.engine_port)
        except ValueError:
            continue
        phase = phase_report(prefill, trial, clock_mhz, "prefill")
        top = sorted(phase.kernels, key=lambda k: k.seconds, reverse=True)[:3]
        largest = {"lanes": lanes, "rows": rows, "ttft_s": phase.seconds,
                   "limits": [f"{k.label} ({k.bound})" for k in top]}
        if found is None and phase.seconds <= target_s:
            found = {"lanes": lanes, "rows": rows, "ttft_s": phase.seconds}
            break
    return {"engine": found, "largest": largest}


def peer_rows(model, preset, decode):
    """The published peers (for 2B4T) beside this design on ``preset``; each peer names
    its nearest preset, where the comparison is like for like."""
    rows = []
    for peer in PEERS if model == "b1.58-2b4t" else ():
        if peer.metric == "tokens_per_s":
            ours = decode.tokens / decode.seconds
            ratio = ours / peer.value
        else:
            ours = decode.energy["7nm"]["total"]
            ratio = peer.value / ours          # > 1: we spend less
        rows.append({"system": peer.system, "hardware": peer.hardware, "model": peer.model,
                     "metric": peer.metric, "theirs": peer.value, "ours": ours,
                     "advantage": ratio, "nearest_preset": peer.preset,
                     "like_for_like": peer.preset == preset, "source": peer.source,
                     "note": peer.note})
    return rows


def scheme_rows(models, schemes, *, context=128, platforms=None, reports=None):
    """BitNet b1.58 vs a4.8 vs Q-Sparse (:mod:`model.schemes`): per model and scheme, a
    decode step at ``context`` charged for each scheme: the BitLinears' adds and their
    arithmetic energy (adds and rescales, 45 and 7 nm), the ternary weight, KV-cache and
    DRAM bytes per token on the default engine (16 x 32, the ``ecp5-ddr3`` engine), and
    decode tokens/s on each platform (its own engine and clock; None where the model
    does not tile onto it).

    Returns
    -------
    (list of dict, dict)
        The rows, and ``{model: reason}`` for the models left out (those that do not
        tile onto the default engine or that the decoder cannot run).
    """
    from ternary_accel.hw.perf.energy import arithmetic_joules
    from ternary_accel.hw.mapping import DEFAULT_LANES, DEFAULT_ROWS

    from ternary_accel.hw.perf.platforms import PLATFORMS

    platforms = list(PLATFORMS.values()) if platforms is None else list(platforms)
    rows, skipped = [], {}
    for model in models:
        try:
            config = model_config(model)
            base = account(config, tokens=1, context=context, lanes=DEFAULT_LANES,
                           rows=DEFAULT_ROWS)
        except ValueError as error:
            skipped[model] = str(error)
            continue
        on = {}
        for platform in platforms:
            try:
                on[platform.name] = (platform, account(config, tokens=1, context=context,
                                                       lanes=platform.lanes,
                                                       rows=platform.rows,
                                                       **platform.engine_port))
            except ValueError:
                on[platform.name] = (platform, None)
        for scheme in schemes:
            a = base.with_scheme(scheme)
            engine_ops = a.ops(ENGINE)
            moved = a.bytes()
            row = {"model": model, "scheme": a.scheme.name,
                   "description": a.scheme.description,
                   "bitlinear_adds": sum(n for (p, o), n in engine_ops.items()
                                         if o == "add"),
                   "int4_adds": engine_ops.get(("int4", "add"), 0),
                   "sparse_projections": sorted({c.name for c in a.costs
                                                 if c.kept is not None},
                                                key=[p.name for p in
                                                     config.shape.projections()].index),
                   "ternary_weight_bytes": moved["ternary_weights"],
                   "kv_cache_bytes": moved.get("kv_cache", 0),
                   "dram_bytes": a.dram_bytes,
                   "tokens_per_s": {}}
            for node in NODES:
                row[f"bitlinear_joules_{node}"] = arithmetic_joules(engine_ops, node)
            for name, (platform, counted) in on.items():
                if counted is None:
                    row["tokens_per_s"][name] = None
                    continue
                clock_mhz, _ = platform.clock(reports)
                phase = phase_report(counted.with_scheme(scheme), platform, clock_mhz,
                                     "decode")
                row["tokens_per_s"][name] = phase.tokens / phase.seconds
            rows.append(row)
    return rows, skipped
