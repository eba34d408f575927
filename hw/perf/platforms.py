"""Boards the accelerator is projected on, as data, and the published figures of peers.

To add a board, add a :class:`Platform` to :data:`PLATFORMS`; ``ternary-accel perf
--platform NAME`` and ``make perf`` pick it up. Each figure says where it comes from;
what is assumed (no RTL or no flow behind it) says so.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ternary_accel.hw.paths import build_path

__all__ = ["Platform", "PLATFORMS", "get_platform", "Peer", "PEERS", "reported_fmax",
           ]


_HOROWITZ_DRAM = "Horowitz, ISSCC 2014: DRAM 1.3 nJ per 64-bit access (low end)"


@dataclass(frozen=True)
class Platform:
    """A board: its memory, the engine built on it, and the assumed helper units.

    Attributes
    ----------
    name, description : str
    bandwidth_gbs : float
        Peak DRAM bandwidth (GB/s); the projection assumes all of it is usable.
    dram_pj_per_bit : float
        DRAM access energy per bit, with ``dram_source``.
    lanes, rows : int
        The layer engine's shape (K x M MACs per cycle).
    fallback_clock_mhz : float
        Clock when no FPGA report of the engine exists (``clock_source`` says why this
        figure); ``reports_family`` names the FPGA family whose ``build/reports``
        Fmax is used first (None: no open flow for this board).
    vector_ops_per_cycle, attention_macs_per_cycle, head_macs_per_cycle : int
        Throughput of the units that have no RTL yet (assumed).
    weight_reuse, weight_port_bits, packing
        The layer engine's weight reuse T, weight port and packing
        (:class:`hw.engine.LayerEngine` ``tokens``, ``weight_port_bits``, ``packing``;
        default: no reuse, whole beats).
    """

    name: str
    description: str
    bandwidth_gbs: float
    dram_pj_per_bit: float
    dram_source: str
    lanes: int
    rows: int
    fallback_clock_mhz: float
    clock_source: str
    reports_family: str = None
    vector_ops_per_cycle: int = 16
    attention_macs_per_cycle: int = 16
    head_macs_per_cycle: int = 64
    weight_reuse: int = 1
    weight_port_bits: int = None
    packing: str = None

    @property
    def engine_port(self):
        """The engine's reuse and port as :func:`model.accounting.account` takes them."""
        return {"weight_reuse": self.weight_reuse, "port_bits": self.weight_port_bits,
                "packing": self.packing}

    def __post_init__(self):
        for name in ("bandwidth_gbs", "dram_pj_per_bit", "fallback_clock_mhz"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"platform {self.name}: {name} must be positive, "
                                 f"not {value!r}")
        for name in ("lanes", "rows", "vector_ops_per_cycle", "attention_macs_per_cycle",
                     "head_macs_per_cycle"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"platform {self.name}: {name} must be a positive "
                                 f"integer, not {value!r}")

    def clock(self, reports=None):
        """``(MHz, source)``: the engine's Fmax from ``reports`` for this family, else
        the fallback."""
        reports = build_path("reports") if reports is None else reports
        if self.reports_family:
            found = reported_fmax(self.lanes, self.rows, reports)
            if found:
                return found, f"Fmax of engine{self.rows}x{self.lanes} from {reports}"
        return self.fallback_clock_mhz, self.clock_source

    def to_dict(self):
        return asdict(self)


PLATFORMS = {p.name: p for p in (
    Platform("ecp5-ddr3", "Lattice ECP5-85F board, DDR3-1600 x16", 3.2, 1300 / 64,
             _HOROWITZ_DRAM, lanes=32, rows=16, fallback_clock_mhz=47.4,
             clock_source="the engine 16 x 32 measured on LFE5U-45F (README, make "
                          "bench-area); no report in build/reports",
             reports_family="ecp5", vector_ops_per_cycle=16, attention_macs_per_cycle=16,
             head_macs_per_cycle=64),
    Platform("kv260", "AMD Kria KV260 (Zynq UltraScale+ K26), DDR4-2400 x64", 19.2, 15.0,
             "assumed: a typical DDR4 figure (no published source)",
             lanes=64, rows=32, fallback_clock_mhz=200.0,
             clock_source="assumed (no UltraScale+ flow here)",
             vector_ops_per_cycle=32, attention_macs_per_cycle=64, head_macs_per_cycle=256),
    Platform("hbm2", "HBM2 accelerator card (Alveo U280 class)", 460.0, 3.9,
             "assumed: HBM2 about 3.9 pJ/bit (O'Connor et al., MICRO 2017)",
             lanes=64, rows=64, fallback_clock_mhz=250.0,
             clock_source="assumed (no UltraScale+ flow here)",
             vector_ops_per_cycle=64, attention_macs_per_cycle=256, head_macs_per_cycle=2048),
)}


def get_platform(name):
    """The named :class:`Platform`; ``ValueError`` lists the known ones."""
    try:
        return PLATFORMS[name]
    except KeyError:
        raise ValueError(f"unknown platform {name!r}; known platforms: "
                         f"{', '.join(PLATFORMS)}") from None


def reported_fmax(lanes, rows, reports=None):
    """Fmax (MHz) of the layer engine ``engine{rows}x{lanes}`` from ``make bench-area``,
    else of the ternary ``unit{rows}x{lanes}`` (bench-area's ECP5-fabric build, or
    ``hw synth`` reports), or None."""
    reports = build_path("reports") if reports is None else reports
    found = {}
    for path in sorted(Path(reports).glob("*.json")) if Path(reports).exists() else ():
        try:
            results = json.loads(path.read_text())["results"]
        except (ValueError, KeyError, OSError, TypeError):
            continue
        for result in results:
            if isinstance(result, dict) and result.get("fmax_mhz"):
                found.setdefault(result.get("design", ""), float(result["fmax_mhz"]))
    for name in (f"engine{rows}x{lanes}", f"unit{rows}x{lanes}",
                 f"unit{rows}x{lanes}_ternary_ecp5", f"unit{rows}x{lanes}_ternary"):
        if name in found:
            return found[name]
    return None


@dataclass(frozen=True)
class Peer:
    """A published figure of another system, for comparison.

    ``metric`` is ``"tokens_per_s"`` or ``"joules_per_token"``; ``preset`` is the
    platform of ours it is compared with.
    """

    system: str
    hardware: str
    model: str
    metric: str
    value: float
    source: str
    preset: str
    note: str = ""


PEERS = (
    Peer("bitnet.cpp", "laptop CPU", "b1.58-2b4t", "tokens_per_s", 1 / 0.029,
         "BitNet b1.58 2B4T report (arXiv 2504.12285), Table 1: 29 ms per token", "kv260",
         "CPU with its own memory system; compared with the nearest board preset"),
    Peer("TeLLMe v2", "edge FPGA (KV260 class), 5 W", "b1.58-2b4t", "tokens_per_s", 25.0,
         "TeLLMe v2: up to 25 tokens/s decoding at 5 W", "kv260"),
    Peer("TeLLMe v2", "edge FPGA (KV260 class), 5 W", "b1.58-2b4t", "joules_per_token",
         5.0 / 25.0, "TeLLMe v2: 5 W / 25 tokens/s (board power)", "kv260",
         "board power; ours is the dynamic energy of datapath and memories only"),
    Peer("2B4T report estimate", "CPU (estimated)", "b1.58-2b4t", "joules_per_token", 0.028,
         "BitNet b1.58 2B4T report (arXiv 2504.12285), Table 1: estimated energy 0.028 J "
         "per token", "kv260", "the report's own estimate; ours at 7 nm arithmetic"),
    Peer("TerEffic", "FPGA with HBM", "2.7B (not 2B4T)", "tokens_per_s", 727.0,
         "TerEffic: 727 tokens/s for a 2.7B ternary model with HBM", "hbm2",
         "a different, larger model"),
)
