"""Boards the accelerator is projected on, as data, and the published figures of peers.

To add a board, add a :class:`Platform` to :data:`PLATFORMS`; ``ternary-accel perf
--platform NAME`` and ``make perf`` pick it up. Each figure says where it comes from;
what is assumed (no RTL or no flow behind it) says so.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

from ternary_accel.hw.paths import build_path
from ternary_accel.hw.fpga.counts import lut4_equivalent
from ternary_accel.hw.params import BITNET_ENGINE, EngineParams
from ternary_accel.model.hwnum import GROUPED_HEAD, HwNumerics

__all__ = ["Platform", "PLATFORMS", "get_platform", "Peer", "PEERS", "Measured",
           "measured_engine", "preset_engine", "RESULTS_DIR"]


_HOROWITZ_DRAM = "Horowitz, ISSCC 2014: DRAM 1.3 nJ per 64-bit access (low end)"

#: The committed measurements (``--results docs/results`` of the benchmark commands).
RESULTS_DIR = Path(__file__).resolve().parents[2] / "docs" / "results"

#: Parameters of a measured engine that a preset's engine must equal to take its figures
#: (all of :meth:`EngineParams.to_dict`).
_ENGINE_KEYS = tuple(EngineParams().to_dict())


def preset_engine(lanes, rows, port_bits=128, packing="3in5"):
    """A preset's engine at ``lanes`` x ``rows``: weight reuse T = 16, the pipelined
    output stage shared by the rows (one a cycle), accumulators for 1024 beats, and by
    default a 128-bit weight port in 3in5 (1.75 bits a weight on 16 x 32): the
    configuration ``make bench-area`` places (``engine16x32_T16_p128_3in5_o1``).
    ``port_bits=None`` streams a whole beat a cycle (base3: 1.60 bits a weight)."""
    return EngineParams(lanes=lanes, rows=rows, max_beats=1024, tokens=16,
                        weight_port_bits=port_bits, packing=packing, output_rows=1,
                        fabric="ecp5")


@dataclass(frozen=True)
class Measured:
    """An engine's figures from a report of the project's flow (:func:`measured_engine`)."""

    design: str
    device: str
    fmax_mhz: float
    lut4_per_mac: float
    seeds: tuple
    fmax_mhz_seeds: tuple
    source: str

    def describe(self):
        seeds = (f"median of seeds {', '.join(map(str, self.seeds))}: "
                 f"{', '.join(f'{f:.1f}' for f in self.fmax_mhz_seeds)} MHz"
                 if len(self.seeds) > 1 else f"seed {self.seeds[0] if self.seeds else '?'}")
        return f"{self.design} on {self.device}, {seeds} ({self.source})"


def _records(path):
    try:
        results = json.loads(Path(path).read_text())["results"]
    except (ValueError, KeyError, OSError, TypeError):
        return []
    return [r for r in results if isinstance(r, dict)] if isinstance(results, list) else []


def _shown(path):
    """``path`` relative to the checkout when it is inside it (docs/results/...)."""
    root = RESULTS_DIR.parents[1]
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)


def measured_engine(engine, results=None, reports=None):
    """The figures of a placed engine equal to ``engine`` (every
    :class:`EngineParams` field): from the committed tables under ``results`` (default
    ``docs/results``, written with ``--results``), else ``reports`` (default
    ``build/reports`` of this machine's runs); None when neither holds it."""
    wanted = engine.to_dict()
    folders = [(RESULTS_DIR if results is None else Path(results)),
               (build_path("reports") if reports is None else Path(reports))]
    for folder in folders:
        for path in sorted(folder.glob("*.json")) if folder.exists() else ():
            for r in _records(path):
                config = r.get("config") or {}
                if config.get("component") != "LayerEngine" or not r.get("fmax_mhz"):
                    continue
                if any(config.get(k) != wanted[k] for k in _ENGINE_KEYS):
                    continue
                macs = r.get("macs") or engine.lanes * engine.rows
                lut4 = lut4_equivalent(SimpleNamespace(lut4=r.get("lut4", 0),
                                                       carry=r.get("carry", 0),
                                                       lutram=r.get("lutram", 0)))
                seeds = tuple(r.get("seeds") or ([r["seed"]] if "seed" in r else []))
                return Measured(r.get("design", engine.report_name), r.get("device", "?"),
                                float(r["fmax_mhz"]), lut4 / macs, seeds,
                                tuple(r.get("fmax_mhz_seeds") or [r["fmax_mhz"]]),
                                _shown(path))
    return None


@dataclass(frozen=True)
class Platform:
    """A board: its memory, the engine built on it and the LM head unit.

    Attributes
    ----------
    name, description : str
    bandwidth_gbs : float
        Peak DRAM bandwidth (GB/s); the projection assumes all of it is usable.
    dram_pj_per_bit : float
        DRAM access energy per bit, with ``dram_source``.
    engine : hw.params.EngineParams
        The layer engine the preset models (lanes, rows, weight reuse T, port, packing,
        output rows): :func:`preset_engine`.
    fallback_clock_mhz : float
        Clock when no report of the project's flow holds the engine (``clock_source``
        cites where the figure comes from, or says it is assumed); ``reports_family``
        names the FPGA family whose reports give the measured Fmax
        (:func:`measured_engine`; None: no open flow for this board, the clock is
        assumed).
    head_lanes, head_rows : int
        The LM head unit (:class:`hw.rtl.head.HeadDot`): inputs and rows a beat; its
        cycles come from its cycle model (:func:`hw.timing.head_cycles`).
    numerics : model.hwnum.HwNumerics
        The hardware numerics charged with ``perf --numerics hw``: their widths and the
        LM head's format (default :data:`model.hwnum.GROUPED_HEAD`, 4.2 bits a weight:
        decode is bound by the bytes per token).
    """

    name: str
    description: str
    bandwidth_gbs: float
    dram_pj_per_bit: float
    dram_source: str
    engine: EngineParams
    fallback_clock_mhz: float
    clock_source: str
    reports_family: str = None
    head_lanes: int = 32
    head_rows: int = 2
    numerics: HwNumerics = GROUPED_HEAD

    @property
    def lanes(self):
        return self.engine.lanes

    @property
    def rows(self):
        return self.engine.rows

    @property
    def weight_reuse(self):
        return self.engine.tokens

    @property
    def weight_port_bits(self):
        return self.engine.weight_port_bits

    @property
    def packing(self):
        return self.engine.packing

    @property
    def head_macs_per_cycle(self):
        return self.head_lanes * self.head_rows

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
        if not isinstance(self.engine, EngineParams):
            raise ValueError(f"platform {self.name}: engine must be an EngineParams, not "
                             f"{self.engine!r}")
        for name in ("head_lanes", "head_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"platform {self.name}: {name} must be a positive "
                                 f"integer, not {value!r}")

    def measured(self, results=None, reports=None):
        """The :class:`Measured` figures of this preset's engine, or None (no open flow
        for the board, or no report holds the engine)."""
        if not self.reports_family:
            return None
        return measured_engine(self.engine, results, reports)

    def clock(self, reports=None, results=None):
        """``(MHz, source)``: the measured Fmax of the preset's engine (median over the
        seeds of the report), else the fallback with its citation."""
        found = self.measured(results, reports)
        if found:
            return found.fmax_mhz, f"Fmax of {found.describe()}"
        return self.fallback_clock_mhz, self.clock_source

    def to_dict(self):
        out = asdict(self)
        out["engine"] = self.engine.to_dict()
        out["numerics"] = self.numerics.to_dict()
        out["engine_name"] = self.engine.report_name
        return out


PLATFORMS = {p.name: p for p in (
    Platform("ecp5-ddr3", "Lattice ECP5-85F board, DDR3-1600 x16", 3.2, 1300 / 64,
             _HOROWITZ_DRAM, engine=preset_engine(BITNET_ENGINE.lanes, BITNET_ENGINE.rows),
             fallback_clock_mhz=105.3,
             clock_source="engine16x32 T=16, 128-bit port, 3in5, output rows 1 on "
                          "LFE5U-45F, seed 1, as docs/fpga.md cites it (ternary-accel "
                          "bench area --only 'engine16x32_T16_p128_3in5_o1')",
             reports_family="ecp5", head_lanes=32, head_rows=2),
    Platform("kv260", "AMD Kria KV260 (Zynq UltraScale+ K26), DDR4-2400 x64", 19.2, 15.0,
             "assumed: a typical DDR4 figure (no published source)",
             engine=preset_engine(64, 32, port_bits=None, packing="base3"),
             fallback_clock_mhz=200.0,
             clock_source="assumed (no UltraScale+ flow here)",
             head_lanes=32,
             head_rows=8),
    Platform("hbm2", "HBM2 accelerator card (Alveo U280 class)", 460.0, 3.9,
             "assumed: HBM2 about 3.9 pJ/bit (O'Connor et al., MICRO 2017)",
             engine=preset_engine(64, 64, port_bits=None, packing="base3"),
             fallback_clock_mhz=250.0,
             clock_source="assumed (no UltraScale+ flow here)",
             head_lanes=32,
             head_rows=64),
)}


def get_platform(name):
    """The named :class:`Platform`; ``ValueError`` lists the known ones."""
    try:
        return PLATFORMS[name]
    except KeyError:
        raise ValueError(f"unknown platform {name!r}; known platforms: "
                         f"{', '.join(PLATFORMS)}") from None


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
