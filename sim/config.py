"""Design configurations the simulator builds: the matmul unit of the cocotb regression
(:class:`UnitConfig`), the layer engine (:class:`EngineConfig`) and the memories of its
harness (:class:`HarnessConfig`), with their derived widths."""

import json
from dataclasses import asdict, dataclass

from ternary_accel.model.arith import acc_width, act_range
from ternary_accel.model.quant import ACT_WIDTH, BINARY, TERNARY

from ternary_accel.hw.rtl.engine import DEFAULT_LANES, DEFAULT_ROWS, LayerMapping
from ternary_accel.hw.rtl.lanes import ECP5, GENERIC

__all__ = ["UnitConfig", "EngineConfig", "HarnessConfig", "REGRESSION_CONFIGS", "TOPLEVEL"]

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

