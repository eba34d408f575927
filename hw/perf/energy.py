"""Energy of a forward pass on this accelerator: arithmetic and data movement, per token.

Where :mod:`energy.count` reproduces the BitNet paper's arithmetic-only table (matmuls,
512 tokens), this module charges *everything* the decoder does in one pass
(:func:`model.accounting.account`): every operation at its precision with the per-op
energies of :mod:`energy.ops` (45 nm or 7 nm), every DRAM byte at a memory's energy per
bit and every on-chip byte at an SRAM's. Static power, clocks, I/O and the host are not
counted: these are dynamic energies of the datapath and the memories.

The FP16 reference is the same pass with every BitLinear an FP16 matrix product (one
FP16 multiply and one add per weight and token, FP16 weights streamed per token, dense);
everything else is unchanged. For a pass charged for another activation scheme than
BitNet b1.58 (``model.schemes``), take the reference of its b1.58 charging
(``accounting.with_scheme("b1.58")``): the reference has no 4-bit, sparse or KV-cache
savings of its own.
"""

from dataclasses import dataclass, replace

from ternary_accel.hw.perf.accounting import DRAM, MEMORIES, SRAM, OpCost
from ternary_accel.hw.mapping import LayerTiling

from ternary_accel.energy.ops import memory_pj_per_bit, op_energy

__all__ = ["PassEnergy", "pass_energy", "fp16_reference", "DEFAULT_DRAM", "DEFAULT_SRAM",
           "SPECIAL_AS"]

#: DRAM and on-chip memory of the per-token figures unless a platform gives its own
#: (Horowitz, ISSCC 2014: DRAM 1.3-2.6 nJ per 64 bits; a 32 KB SRAM 20 pJ).
DEFAULT_DRAM = "dram-low"
DEFAULT_SRAM = "sram-32kb"
#: exp, rsqrt and divides have no figure in the sources; each is charged as this op.
SPECIAL_AS = "mul"


@dataclass(frozen=True)
class PassEnergy:
    """Joules of one pass, split by where they go; ``per_token`` divides by the tokens."""

    arithmetic: float
    dram: float
    sram: float
    tokens: int
    node: str

    @property
    def total(self):
        return self.arithmetic + self.dram + self.sram

    def per_token(self):
        return {"arithmetic": self.arithmetic / self.tokens, "dram": self.dram / self.tokens,
                "sram": self.sram / self.tokens, "total": self.total / self.tokens}


def arithmetic_joules(ops, node):
    """Joules of ``{(precision, op): count}`` at ``node`` (special ops as :data:`SPECIAL_AS`)."""
    pj = 0.0
    for (precision, op), count in ops.items():
        pj += count * op_energy(node, precision, SPECIAL_AS if op == "special" else op)
    return pj * 1e-12


def pass_energy(accounting, *, node="7nm", dram_pj_per_bit=None, sram_pj_per_bit=None):
    """Energy of the pass ``accounting`` (:class:`model.accounting.Accounting`).

    Parameters
    ----------
    node : str
        Process node of the per-op energies (``"45nm"`` or ``"7nm"``).
    dram_pj_per_bit, sram_pj_per_bit : float, optional
        Memory energies; default :data:`DEFAULT_DRAM` and :data:`DEFAULT_SRAM`.

    Returns
    -------
    PassEnergy
    """
    dram = memory_pj_per_bit(DEFAULT_DRAM) if dram_pj_per_bit is None else dram_pj_per_bit
    sram = memory_pj_per_bit(DEFAULT_SRAM) if sram_pj_per_bit is None else sram_pj_per_bit
    if dram < 0 or sram < 0:
        raise ValueError("memory energies per bit must be non-negative")
    return PassEnergy(arithmetic_joules(accounting.ops(), node),
                      8 * sum(accounting.bytes(DRAM).values()) * dram * 1e-12,
                      8 * sum(accounting.bytes(SRAM).values()) * sram * 1e-12,
                      accounting.tokens, node)


def fp16_reference(accounting):
    """The same pass with FP16 BitLinears: an :class:`~model.accounting.Accounting`
    whose BitLinears do one FP16 multiply and add per weight and token and stream FP16
    weights (2 bytes each) per token, with FP16 activations (2 bytes) instead of int8,
    streamed per row tile as the engine's dense dataflow streams them."""
    costs = []
    for cost in accounting.costs:
        if cost.kind == "bitlinear":
            s = cost.sizes
            t, m, k = s["tokens"], s["out_features"], s["in_features"]
            macs = t * m * k
            # int8 rows, once per row tile
            streamed = LayerTiling(m, k, t, accounting.lanes,
                                   accounting.rows).activation_bytes
            cost = OpCost(cost.kind, cost.layer, cost.name, cost.unit, dict(s),
                          {("fp16", "mul"): macs, ("fp16", "add"): macs},
                          {"ternary_weights": 2 * t * m * k,
                           "activations": 2 * streamed + 4 * t * m}, macs, 0)
        costs.append(cost)
    assert MEMORIES["ternary_weights"] == DRAM and MEMORIES["activations"] == SRAM
    return replace(accounting, costs=costs)
