"""Design configurations of the cocotb regression and their derived widths."""

import json
from dataclasses import asdict, dataclass

from ternary_accel.model.arith import acc_width, act_range
from ternary_accel.model.quant import ACT_WIDTH, BINARY, TERNARY

from ternary_accel.hw.rtl.lanes import ECP5, GENERIC

__all__ = ["UnitConfig", "REGRESSION_CONFIGS", "TOPLEVEL"]

#: Name of the generated top-level Verilog module.
TOPLEVEL = "matmul_unit"


@dataclass(frozen=True)
class UnitConfig:
    """Parameters of one :class:`hw.matmul.MatmulUnit` build."""

    lanes: int
    rows: int
    weight_mode: str = TERNARY
    output_stage: bool = False
    max_beats: int = 8
    levels_per_stage: int = 1
    fabric: str = GENERIC
    act_width: int = ACT_WIDTH
    #: Rows per cycle of the pipelined output stage (None: the two-register stage).
    output_rows: int = None
    #: Copies of the activation input register (None: no input register).
    act_copies: int = None

    @property
    def name(self):
        stage = "os" if self.output_stage else "raw"
        if self.output_rows is not None:
            stage += f"{self.output_rows}"
        fabric = "" if self.fabric == GENERIC else f"_{self.fabric}"
        acts = "" if self.act_width == ACT_WIDTH else f"_a{self.act_width}"
        copies = "" if self.act_copies is None else f"_c{self.act_copies}"
        return (f"k{self.lanes}_m{self.rows}_{self.weight_mode}_{stage}"
                f"_b{self.max_beats}_l{self.levels_per_stage}{fabric}{acts}{copies}")

    @property
    def acc_width(self):
        return acc_width(self.lanes * self.max_beats, self.weight_mode, self.act_width)

    @property
    def act_range(self):
        """``(min, max)`` of one activation: -128..127, or -8..7 for int4."""
        return act_range(self.act_width)

    @property
    def res_width(self):
        from ternary_accel.hw.rtl.matmul import result_width
        return result_width(self.lanes, self.max_beats, self.output_stage,
                            self.weight_mode, self.act_width)

    @property
    def latency(self):
        from ternary_accel.hw.rtl.matmul import unit_latency
        return unit_latency(self.lanes, self.levels_per_stage, self.output_stage,
                            self.output_rows, self.rows, act_copies=self.act_copies)

    @property
    def output_interval(self):
        """R, cycles per result vector in the output stage."""
        from ternary_accel.hw.rtl.matmul import output_interval
        return output_interval(self.rows, self.output_rows)

    @property
    def act_layout(self):
        from ternary_accel.hw.rtl.matmul import act_layout
        return act_layout(self.lanes, self.output_stage, self.act_width)

    def unit_kwargs(self):
        return asdict(self)

    def build_unit(self):
        from ternary_accel.hw.rtl.matmul import MatmulUnit
        return MatmulUnit(**self.unit_kwargs())

    def to_json(self):
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text):
        return cls(**json.loads(text))


#: The regression: (K, M) in {(4, 1), (16, 8)} x {ternary, binary} x output stage
#: {off, on}, two corners of that at (64, 4), and two builds of the ECP5-fabric lane groups, simulated with the
#: Lattice cell models; then the int4 activations of BitNet a4.8 (``act_width=4``): a
#: generic ternary unit with the output stage and an ECP5-fabric one raw. max_beats is
#: small so the overflow test is quick. Last, the pipelined output stage: shared by
#: the rows (output_rows < rows) on the ECP5 fabric with its MULT18X18D blocks
#: (simulated with this project's model of them; a 19-bit accumulator takes two blocks)
#: and the activation register copies, and generic, two rows a cycle.
REGRESSION_CONFIGS = tuple(
    UnitConfig(lanes=k, rows=m, weight_mode=mode, output_stage=stage)
    for (k, m) in ((4, 1), (16, 8))
    for mode in (TERNARY, BINARY)
    for stage in (False, True)
) + (
    # the widest shape: the two diagonal corners of mode x stage (the others are the
    # same RTL paths, crossed in full at the smaller shapes; a K = 64 build is the
    # regression's slowest)
    UnitConfig(lanes=64, rows=4, weight_mode=TERNARY, output_stage=True),
    UnitConfig(lanes=64, rows=4, weight_mode=BINARY, output_stage=False),

    UnitConfig(lanes=8, rows=2, weight_mode=TERNARY, fabric=ECP5),
    UnitConfig(lanes=5, rows=1, weight_mode=BINARY, output_stage=True, fabric=ECP5),
    UnitConfig(lanes=16, rows=4, weight_mode=TERNARY, output_stage=True, act_width=4),
    UnitConfig(lanes=8, rows=2, weight_mode=TERNARY, fabric=ECP5, act_width=4),
    UnitConfig(lanes=8, rows=2, weight_mode=TERNARY, output_stage=True, max_beats=128,
               fabric=ECP5, output_rows=1, act_copies=2),
    UnitConfig(lanes=16, rows=4, weight_mode=BINARY, output_stage=True, output_rows=2),
)
