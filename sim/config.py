"""Design configurations of the cocotb regression and their derived widths."""

import json
from dataclasses import asdict, dataclass

from model.arith import acc_width
from model.quant import BINARY, TERNARY

from hw.lanes import ECP5, GENERIC

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

    @property
    def name(self):
        stage = "os" if self.output_stage else "raw"
        fabric = "" if self.fabric == GENERIC else f"_{self.fabric}"
        return (f"k{self.lanes}_m{self.rows}_{self.weight_mode}_{stage}"
                f"_b{self.max_beats}_l{self.levels_per_stage}{fabric}")

    @property
    def acc_width(self):
        return acc_width(self.lanes * self.max_beats)

    @property
    def res_width(self):
        from hw.matmul import result_width
        return result_width(self.lanes, self.max_beats, self.output_stage)

    @property
    def latency(self):
        from hw.matmul import unit_latency
        return unit_latency(self.lanes, self.levels_per_stage, self.output_stage)

    @property
    def act_layout(self):
        from hw.matmul import act_layout
        return act_layout(self.lanes, self.output_stage)

    def unit_kwargs(self):
        return asdict(self)

    def build_unit(self):
        from hw.matmul import MatmulUnit
        return MatmulUnit(**self.unit_kwargs())

    def to_json(self):
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text):
        return cls(**json.loads(text))


#: The regression: (K, M) in {(4, 1), (16, 8), (64, 4)} x {ternary, binary} x output
#: stage {off, on}, and two builds of the ECP5-fabric lane groups, simulated with the
#: Lattice cell models. max_beats is small so the overflow test is quick.
REGRESSION_CONFIGS = tuple(
    UnitConfig(lanes=k, rows=m, weight_mode=mode, output_stage=stage)
    for (k, m) in ((4, 1), (16, 8), (64, 4))
    for mode in (TERNARY, BINARY)
    for stage in (False, True)
) + (
    UnitConfig(lanes=8, rows=2, weight_mode=TERNARY, fabric=ECP5),
    UnitConfig(lanes=5, rows=1, weight_mode=BINARY, output_stage=True, fabric=ECP5),
)
