"""Whole-model performance and energy of the accelerator on a platform: decode tokens/s,
time to first token, bytes and joules per token, per operation kind.

The operations and bytes are the decoder's own account of a pass
(:func:`model.accounting.account`); the BitLinears' cycles are the engine's cycle model
(:class:`hw.engine.LayerMapping`, equal to the RTL simulation); the other units have no
RTL and run at the platform's assumed throughput. Each operation takes
``max(compute, memory)`` (its own compute and DRAM traffic overlap), operations run one
after the other, and the DRAM delivers its peak bandwidth: a projection, and a bound the
measured hardware can only approach.
"""

import math
from dataclasses import dataclass, replace

from energy.system import fp16_reference, pass_energy
from model.accounting import ATTENTION, DRAM, ENGINE, HEAD, MEMORIES, SRAM, UNITS, \
    account, batched
from model.config import model_config

from .engine import LayerMapping
from .platforms import PEERS, REPORTS

__all__ = ["KernelTime", "PhaseReport", "phase_report", "model_report", "NODES"]

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
        return {"kind": self.label, "unit": self.unit, "rtl": self.unit == ENGINE,
                "macs": self.macs, "ops": self.ops, "cycles": self.cycles,
                "dram_bytes": self.dram_bytes, "sram_bytes": self.sram_bytes,
                "compute_s": self.compute_s, "memory_s": self.memory_s,
                "seconds": self.seconds, "bound": self.bound,
                "ops_per_dram_byte": self.intensity}


def _cycles(cost, platform):
    if cost.unit == ENGINE:
        s = cost.sizes
        return LayerMapping(s["out_features"], s["in_features"], s["tokens"],
                            platform.lanes, platform.rows).cycles
    per_cycle = {ATTENTION: platform.attention_macs_per_cycle,
                 HEAD: platform.head_macs_per_cycle}.get(cost.unit)
    if cost.macs and per_cycle:
        return math.ceil(cost.macs / per_cycle)
    return math.ceil(sum(cost.ops.values()) / platform.vector_ops_per_cycle)


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


def phase_report(accounting, platform, clock_mhz, phase):
    """Time and energy of the pass ``accounting`` on ``platform`` at ``clock_mhz``."""
    hz, bandwidth = clock_mhz * 1e6, platform.bandwidth_gbs * 1e9
    kernels = {}
    for cost in accounting.costs:
        label = f"bitlinear {cost.name}" if cost.kind == "bitlinear" else cost.kind
        cycles = _cycles(cost, platform)
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
        k.seconds += max(compute_s, memory_s)
    rows = list(kernels.values())
    dram_pj = platform.dram_pj_per_bit
    energy = {node: pass_energy(accounting, node=node, dram_pj_per_bit=dram_pj).per_token()
              for node in NODES}
    reference = fp16_reference(accounting)
    fp16 = {node: pass_energy(reference, node=node, dram_pj_per_bit=dram_pj).per_token()
            for node in NODES}
    return PhaseReport(phase, accounting.tokens, accounting.context, rows,
                       sum(k.seconds for k in rows), sum(k.cycles for k in rows),
                       accounting.dram_bytes, energy, fp16)


def model_report(model, platform, *, prompt=128, context=None, batch=1, clock_mhz=None,
                 bandwidth_gbs=None, reports=REPORTS):
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
        the platform's engine, or a bad prompt, context, batch, clock or bandwidth.
    """
    config = model_config(model)
    context = prompt if context is None else context
    for name, value in (("clock_mhz", clock_mhz), ("bandwidth_gbs", bandwidth_gbs)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be positive, not {value!r}")
    if bandwidth_gbs is not None:
        platform = replace(platform, bandwidth_gbs=float(bandwidth_gbs))
    if clock_mhz is None:
        clock_mhz, clock_source = platform.clock(reports)
    else:
        clock_source = "given"
    shape = dict(lanes=platform.lanes, rows=platform.rows)
    try:
        prefill = account(config, tokens=prompt, context=0, **shape)
        decode = batched(account(config, tokens=1, context=context, **shape), batch)
    except ValueError as error:
        raise ValueError(f"{model} on {platform.name} (K={platform.lanes}, "
                         f"M={platform.rows}): {error}") from None
    pre = phase_report(prefill, platform, clock_mhz, "prefill")
    dec = phase_report(decode, platform, clock_mhz, "decode")
    bytes_per_token = dec.dram_bytes / dec.tokens
    report = {
        "model": model, "platform": platform.to_dict(), "clock_mhz": clock_mhz,
        "clock_source": clock_source, "prompt": prompt, "context": context, "batch": batch,
        "decode_tokens_per_s": dec.tokens / dec.seconds,
        "prefill_tokens_per_s": pre.tokens / pre.seconds,
        "ttft_s": pre.seconds,
        "bytes_per_token": bytes_per_token,
        "memory_bound_tokens_per_s": platform.bandwidth_gbs * 1e9 / bytes_per_token,
        "joules_per_token": dec.energy,
        "fp16_joules_per_token": dec.fp16_energy,
        "engine_macs_per_cycle": platform.lanes * platform.rows,
        "units": dict(UNITS),
        "decode": dec.to_dict(), "prefill": pre.to_dict(),
        "peers": peer_rows(model, platform.name, dec),
    }
    return report


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
