"""What the simulator builds: the matmul units of the cocotb regression
(:data:`REGRESSION_CONFIGS`, :class:`~ternary_accel.hw.params.UnitParams`), and the memories
of the layer engine's harness (:class:`HarnessConfig`). An engine build is an
:class:`~ternary_accel.hw.params.EngineParams`."""

from dataclasses import dataclass

from ternary_accel.hw.params import ECP5, UnitParams, check_positive_int
from ternary_accel.model.quant import BINARY, TERNARY

__all__ = ["REGRESSION_CONFIGS", "REGRESSION_MAX_BEATS", "HarnessConfig", "TOPLEVEL"]

#: Name of the generated top-level Verilog module of the regression.
TOPLEVEL = "matmul_unit"

#: Longest dot product of the regression's units, in beats: small, so that the overflow
#: test reaches the accumulator's limit quickly.
REGRESSION_MAX_BEATS = 8


def _unit(**params):
    return UnitParams(**{"max_beats": REGRESSION_MAX_BEATS, **params})


#: The regression: (K, M) in {(4, 1), (16, 8)} x {ternary, binary} x output stage
#: {off, on}, two corners of that at (64, 4), and two builds of the ECP5-fabric lane
#: groups, simulated with the Lattice cell models; then the int4 activations of BitNet a4.8 (``act_width=4``): a
#: generic ternary unit with the output stage and an ECP5-fabric one raw. max_beats is
#: small (:data:`REGRESSION_MAX_BEATS`) so the overflow test is quick. Last, the
#: pipelined output stage: shared by the rows (output_rows < rows) on the ECP5 fabric with its MULT18X18D blocks
#: (simulated with this project's model of them; a 19-bit accumulator takes two blocks)
#: and the activation register copies, and generic, two rows a cycle.
REGRESSION_CONFIGS = tuple(
    _unit(lanes=k, rows=m, weight_mode=mode, output_stage=stage)
    for (k, m) in ((4, 1), (16, 8))
    for mode in (TERNARY, BINARY)
    for stage in (False, True)
) + (
    # the widest shape: the two diagonal corners of mode x stage (the others are the
    # same RTL paths, crossed in full at the smaller shapes; a K = 64 build is the
    # regression's slowest)
    _unit(lanes=64, rows=4, weight_mode=TERNARY, output_stage=True),
    _unit(lanes=64, rows=4, weight_mode=BINARY, output_stage=False),

    _unit(lanes=8, rows=2, weight_mode=TERNARY, fabric=ECP5),
    _unit(lanes=5, rows=1, weight_mode=BINARY, output_stage=True, fabric=ECP5),
    _unit(lanes=16, rows=4, weight_mode=TERNARY, output_stage=True, act_width=4),
    _unit(lanes=8, rows=2, weight_mode=TERNARY, fabric=ECP5, act_width=4),
    _unit(lanes=8, rows=2, weight_mode=TERNARY, output_stage=True, max_beats=128,
               fabric=ECP5, output_rows=1, act_copies=2),
    _unit(lanes=16, rows=4, weight_mode=BINARY, output_stage=True, output_rows=2),
)


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

