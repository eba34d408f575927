"""``ternary-accel dse`` (``make dse``): design-space exploration of the layer engine.

A sweep over the engine's parameters (lanes, rows, tokens T sharing each weight beat,
weight-port width and packing) and the ECP5 device: each point is a
:class:`hw.engine.LayerEngine` (``fabric="ecp5"``) through the open flow
(:func:`hw.synth.run_flow`); its area and Fmax are combined with the engine's cycle model
(:meth:`EngineParams.mapping`) on the BitLinears of BitNet b1.58 2B4T into decode and
prefill tokens/s. Writes a table (Markdown and JSON) and a Pareto plot under
``--outdir``.

Points run in a local process pool (``--jobs``) or on a Dask distributed cluster
(``--scheduler``); a job is :func:`run_point`, a point dict in, a plain dict out. Each
result is cached as ``cache/<key>.json``, the key hashing the point, the flow options,
the tool versions and the point's Verilog, so a re-run runs only what changed.
"""

import concurrent.futures
import functools
import hashlib
import itertools
import json
import os
import time
from pathlib import Path

from ternary_accel.hw.paths import build_path
from ternary_accel.hw.perf.throughput import overlapped_seconds
from ternary_accel.hw.mapping import BASE3, CODES2, TRITS3_IN5
from ternary_accel.model.shapes import get_model

from ternary_accel.hw.rtl.engine import LayerEngine
from ternary_accel.hw.fpga.synth import (TARGETS, RegisteredHarness, ToolError, lut4_equivalent,
                                         run_flow, tool_versions)
from ternary_accel.hw.params import ECP5
from ternary_accel.hw.params import EngineParams

__all__ = ["run_point", "make_points", "bitlinear_throughput", "pareto_front",
           "write_table", "write_plot", "DEVICES", "BEAT_PORT", "MODEL"]

#: The model whose BitLinears the throughput columns project.
MODEL = "b1.58-2b4t"
#: ``--device`` names: the ECP5 targets of :data:`hw.synth.TARGETS` by their part's size
#: (``45f`` = LFE5U-45F, ``85f`` = LFE5U-85F).
DEVICES = {t.device.split("-")[-1].lower(): name for name, t in TARGETS.items()
           if t.family == "ecp5"}
#: ``--port-bits`` value of a port one whole beat wide (the engine's ``weight_port_bits``
#: left at None: today's engine).
BEAT_PORT = "beat"

#: The default sweep: 2 x 1 x 3 x 2 x 3 x 1 = 36 points, about 2.6 hours on two cores
#: (the run prints its estimate).
DEFAULT_LANES = (16, 32)
DEFAULT_ROWS = (8,)
DEFAULT_TOKENS = (1, 4, 16)
DEFAULT_PORT_BITS = (128, 256)
DEFAULT_PACKINGS = (BASE3, TRITS3_IN5, CODES2)
DEFAULT_DEVICES = ("45f",)
#: Rows a cycle of the pipelined output stage: 1, one stage shared by the rows (every
#: 2B4T BitLinear has at least rows beats a tile, so it never limits the engine).
DEFAULT_OUTPUT_ROWS = (1,)
DEFAULT_FREQ_MHZ = 300.0      # the P&R target of make bench-area (Fmax is what it reaches)
DEFAULT_BANDWIDTH_GBS = 3.2   # DDR3-1600 x16, a typical ECP5 board
DEFAULT_PROMPT = 128

#: Bumped when what a cache entry holds changes.
CACHE_VERSION = 1
#: Seconds to wait for a ``--scheduler`` before calling it unreachable.
SCHEDULER_TIMEOUT = 10
#: Flow seconds of a point, ``a + b * MACs``, with P&R and synthesis only, as measured
#: on the project's 2-core machines with other work beside: engine16x32 1209 s and the
#: batched engine4x8 (T = 4, 128-bit port) 180 s through P&R; engine8x16 75-110 s and
#: engine1x2 6-12 s synthesis only. Rescaled by the cached results of earlier runs when
#: there are some.
PNR_SECONDS = (100.0, 2.2)
SYNTH_SECONDS = (5.0, 0.6)

OK, FAILED = "ok", "failed"


# --- points -----------------------------------------------------------------------------

def design_name(engine):
    """The report name of a point's ``engine`` (:attr:`EngineParams.report_name`)."""
    return EngineParams(**engine).report_name


def make_points(*, lanes, rows, tokens, port_bits, packings, devices, seed=1,
                freq_mhz=DEFAULT_FREQ_MHZ, place=True, workdir=None,
                output_rows=(None,)):
    """The sweep: one point per combination, as plain dicts.

    A point's ``engine`` is the :class:`hw.engine.LayerEngine` keyword arguments; its
    ``max_beats`` is the fewest beats that hold the model's widest input (6912 / lanes for
    2B4T), which sizes the accumulators for the model and no more; ``output_rows``
    (None: the two-register output stage) sets the pipelined stage's rows a cycle.
    """
    widest = max(p.in_features for p in get_model(MODEL).projections())
    points = []
    for k, m, t, port, packing, device, stage in itertools.product(
            lanes, rows, tokens, port_bits, packings, devices, output_rows):
        engine = {"lanes": k, "rows": m, "tokens": t,
                  "weight_port_bits": None if port == BEAT_PORT else port,
                  "packing": packing, "max_beats": -(-widest // k), "fabric": ECP5}
        if stage is not None:
            engine["output_rows"] = stage
        name = design_name(engine)
        points.append({"design": name, "device": device, "target": DEVICES[device],
                       "engine": engine,
                       "flow": {"seed": seed, "freq_mhz": freq_mhz, "place": place,
                                "nodsp": False},
                       "workdir": str(Path(build_path("dse", "work") if workdir is None
                                            else workdir) / f"{name}_{device}")})
    return points


def build_engine(engine):
    """The :class:`LayerEngine` of a point's ``engine`` parameters
    (:class:`EngineParams` keywords).

    Raises
    ------
    ValueError, TypeError
        For values the engine's parameters refuse.
    """
    return LayerEngine(EngineParams(**engine))


def mapping_params(engine):
    """The :class:`EngineParams` of a point's ``engine`` keywords (its cycle model is
    :meth:`EngineParams.mapping`)."""
    return EngineParams(**engine)


# --- the cycle model --------------------------------------------------------------------

def bitlinear_throughput(params, fmax_mhz, *, bandwidth_gbs, prompt, projections=None,
                         layers=None):
    """Decode and prefill tokens/s of the model's BitLinears on an engine.

    Each layer takes ``max(cycles / Fmax, weight bytes / bandwidth)`` (its compute and
    weight stream overlap), the layers one after the other; cycles and bytes are
    :class:`hw.engine.LayerMapping`'s. Decode: one token (the weights read once for it);
    prefill: ``prompt`` tokens, the weights read once per batch of the engine's T.

    Parameters
    ----------
    params : EngineParams
        The engine; each layer's cycles and bytes are :meth:`EngineParams.mapping`'s.
    fmax_mhz : float
    bandwidth_gbs : float
        DRAM bandwidth, GB/s.
    projections : list of (out_features, in_features), optional
        One block's BitLinears (default: the model's seven).
    layers : int, optional
        Blocks (default: the model's 30).

    Returns
    -------
    dict
        ``decode_tokens_per_s``, ``prefill_tokens_per_s``.

    Raises
    ------
    ValueError
        If a layer does not tile onto the engine.
    """
    shape = get_model(MODEL)
    if projections is None:
        projections = [(p.out_features, p.in_features) for p in shape.projections()]
    layers = shape.layers if layers is None else layers
    hz, bytes_per_s = fmax_mhz * 1e6, bandwidth_gbs * 1e9

    def seconds(tokens):
        total = 0.0
        for out_features, in_features in projections:
            m = params.mapping(out_features, in_features, tokens)
            total += overlapped_seconds(m.cycles / hz, m.weight_bytes / bytes_per_s)
        return layers * total

    return {"decode_tokens_per_s": 1 / seconds(1),
            "prefill_tokens_per_s": prompt / seconds(prompt)}


# --- the job ----------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def flow_tools():
    return tool_versions()


def verilog_text(built):
    """The Verilog :func:`hw.synth.run_flow` synthesizes for ``built``."""
    from amaranth.back import verilog
    return verilog.convert(RegisteredHarness(built), name="top", emit_src=False)


def cache_key(point, text, tools):
    """Hash of what decides a point's result: its target and engine keywords, the flow
    options, the tool versions and its Verilog."""
    blob = json.dumps({"version": CACHE_VERSION, "target": point["target"],
                       "engine": point["engine"], "flow": point["flow"], "tools": tools,
                       "verilog": hashlib.sha256(text.encode()).hexdigest()},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def failure_reason(error):
    lines = str(error).strip().splitlines() or [""]
    text = lines[0] if isinstance(error, (ToolError, ValueError, TypeError)) else \
        f"{type(error).__name__}: {lines[0]}"
    return text[:300]


def run_point(point):
    """The job of one point: build its engine, key it, run the flow unless the key is in
    ``point["cached_keys"]``.

    Returns
    -------
    dict
        ``design``, ``device``, ``key``, ``status`` (``"ok"``, ``"cached"`` or
        ``"failed"``), ``reason`` (one line, when failed), ``synth`` (the
        :class:`hw.synth.SynthResult` as a dict with ``lut4_equivalent``, when run) and
        ``seconds``.
    """
    started = time.monotonic()
    out = {"design": point["design"], "device": point["device"], "key": None,
           "status": FAILED, "reason": None, "synth": None, "seconds": 0.0}
    try:
        engine = point["engine"]
        out["key"] = key = cache_key(point, verilog_text(build_engine(engine)), flow_tools())
        if key in point.get("cached_keys", ()):
            out["status"] = "cached"
        else:
            flow = point["flow"]
            result = run_flow(build_engine(engine), design=point["design"],
                              workdir=point["workdir"], target=point["target"],
                              seed=flow["seed"], freq_mhz=flow["freq_mhz"],
                              nodsp=flow["nodsp"], place=flow["place"],
                              macs=engine["lanes"] * engine["rows"],
                              config={"component": "LayerEngine", **engine})
            result.tools = flow_tools()
            out["synth"] = dict(result.to_dict(), lut4_equivalent=lut4_equivalent(result))
            out["status"] = OK
    except Exception as error:        # a failed point is a row of the table, not a crash
        out["reason"] = failure_reason(error)
    out["seconds"] = round(time.monotonic() - started, 1)
    return out


# --- running the points -----------------------------------------------------------------

def run_local(points, jobs):
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(run_point, p): i for i, p in enumerate(points)}
        for future in concurrent.futures.as_completed(futures):
            yield futures[future], future


def run_dask(points, client):
    from distributed import as_completed
    futures = {client.submit(run_point, p, pure=False): i for i, p in enumerate(points)}
    for future in as_completed(futures):
        yield futures[future], future


def outcome_of(point, future):
    try:
        return future.result()
    except Exception as error:        # the worker died or the pool broke
        return {"design": point["design"], "device": point["device"], "key": None,
                "status": FAILED, "reason": f"job lost: {failure_reason(error)}", "synth": None,
                "seconds": 0.0}


def load_cache(cache_dir):
    """``{key: entry}`` of the readable entries under ``cache_dir``."""
    entries = {}
    for path in sorted(Path(cache_dir).glob("*.json")):
        try:
            entry = json.loads(path.read_text())
            if entry.get("version") == CACHE_VERSION and entry.get("key") == path.stem:
                entries[path.stem] = entry
        except (OSError, ValueError, AttributeError):
            continue
    return entries


def store(cache_dir, point, outcome):
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    entry = {"version": CACHE_VERSION, "key": outcome["key"], "design": point["design"],
             "device": point["device"], "target": point["target"],
             "engine": point["engine"], "flow": point["flow"], "synth": outcome["synth"],
             "seconds": outcome["seconds"]}
    tmp = cache_dir / f".{outcome['key']}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(entry, indent=2) + "\n")
    tmp.replace(cache_dir / f"{outcome['key']}.json")
    return entry


def estimate_seconds(points, jobs, cache=()):
    """Wall-clock estimate of running ``points`` on ``jobs`` workers, none cached: each
    point ``a + b * MACs`` (:data:`PNR_SECONDS`, :data:`SYNTH_SECONDS`), rescaled by the
    cached results of the same kind, then placed longest first on the least loaded
    worker."""
    def model(place, macs):
        a, b = PNR_SECONDS if place else SYNTH_SECONDS
        return a + b * macs

    def macs(engine):
        return engine["lanes"] * engine["rows"]

    scale, seen = 1.0, [e for e in cache if e.get("synth")]
    if seen:
        predicted = sum(model(e["flow"]["place"], macs(e["engine"])) for e in seen)
        scale = sum(e["seconds"] for e in seen) / predicted
    loads = [0.0] * max(1, min(jobs, len(points)))
    for seconds in sorted((scale * model(p["flow"]["place"], macs(p["engine"]))
                           for p in points), reverse=True):
        loads[loads.index(min(loads))] += seconds
    return max(loads), len(seen)


# --- the table and the plot -------------------------------------------------------------

def format_figure(value):
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else \
        f"{value:.2f}"


COLUMNS = ("design", "device", "lanes", "rows", "T", "port bits", "packing", "LUT4",
           "LUT4 eq.", "LUT4 eq./MAC", "FF", "DSP", "BRAM", "Fmax MHz", "decode tokens/s",
           "prefill tokens/s", "status")


def table_row(row):
    """One Markdown row (:data:`COLUMNS`) of a result row."""
    ok = row["status"] == OK
    port = BEAT_PORT if row["port_bits"] is None else str(row["port_bits"])
    head = [row["design"], row["device"], str(row["lanes"]), str(row["rows"]),
            str(row["tokens"]), port, row["packing"]]
    if ok:
        fmax = row["fmax_mhz"]
        figures = [str(row["lut4"]), str(row["lut4_equivalent"]),
                   f"{row['lut4_equivalent'] / row['macs']:.1f}", str(row["ff"]),
                   str(row["dsp"]), str(row["bram"]), f"{fmax:.1f}" if fmax else "-",
                   format_figure(row["decode_tokens_per_s"]), format_figure(row["prefill_tokens_per_s"]),
                   OK]
    else:
        figures = ["-"] * 9 + [f"failed: {row['reason']}".replace("|", "/")]
    return "| " + " | ".join(head + figures) + " |"


def caption(options):
    """What the table's figures are."""
    return (f"Throughput columns: projections of the BitLinear layers only (the seven "
            f"projections of all {get_model(MODEL).layers} blocks of BitNet b1.58 2B4T; "
            "attention and the LM head not counted), from the engine's cycle model "
            "(hw.engine.LayerMapping) at the measured Fmax and "
            f"{options['bandwidth_gbs']:g} GB/s of DRAM bandwidth: each layer takes "
            "max(cycles / Fmax, weight bytes / bandwidth). Decode: one token, batch 1 "
            "(the weights read once per token). Prefill: a prompt of "
            f"{options['prompt']} tokens, the weights read once per T tokens. "
            "Synth-only points have no Fmax and hence no throughput.")


def header(options, tools):
    flow = ("synthesis only (no P&R)" if options["synth_only"] else
            f"out-of-context P&R, seed {options['seed']}, target {options['freq_mhz']:g} MHz")
    return (f"Tools: {', '.join(f'{k} {v}' for k, v in tools.items())}. "
            f"LayerEngine (fabric ecp5), {flow}; every port registered (harness FFs "
            "subtracted). LUT4 eq. = LUT4 + 2 per carry cell (CCU2C) + 6 per LUT RAM block "
            "(TRELLIS_DPR16X4).")


def markdown_table(rows, options, tools):
    lines = [header(options, tools), "", caption(options), "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += [table_row(r) for r in rows]
    return "\n".join(lines)


def write_table(rows, outdir, options, tools):
    """Write ``dse.md`` and ``dse.json`` under ``outdir``; return the Markdown."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    markdown = markdown_table(rows, options, tools)
    (outdir / "dse.md").write_text(markdown + "\n")
    (outdir / "dse.json").write_text(json.dumps(
        {"model": MODEL, "options": options, "tools": tools, "caption": caption(options),
         "rows": rows}, indent=2) + "\n")
    return markdown


def pareto_front(points):
    """Indices of the points ``(cost, value)`` that no other point dominates (as cheap or
    cheaper and as good or better, strictly one of the two), in input order."""
    front = []
    for i, (cost, value) in enumerate(points):
        if not any(c <= cost and v >= value and (c < cost or v > value)
                   for j, (c, v) in enumerate(points) if j != i):
            front.append(i)
    return front


#: The plot's panels: (result field, axis label).
PANELS = (("prefill_tokens_per_s", "prefill tokens/s"),
          ("decode_tokens_per_s", "decode tokens/s"))
MARKERS = "os^Dv"


def short_label(row):
    port = BEAT_PORT if row["port_bits"] is None else row["port_bits"]
    return f"{row['rows']}x{row['lanes']} T{row['tokens']} p{port} {row['packing']}"


def fronts(rows):
    """``{field: [row indices on the front]}`` over the rows with throughput figures."""
    out = {}
    for field, _ in PANELS:
        placed = [i for i, r in enumerate(rows) if r.get(field)]
        front = pareto_front([(rows[i]["lut4_equivalent"], rows[i][field]) for i in placed])
        out[field] = [placed[i] for i in front]
    return out


def write_plot(rows, path, options):
    """LUT4 eq. vs prefill and vs decode tokens/s, one marker per device, the Pareto
    front highlighted and labelled."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    on_front = fronts(rows)
    devices = sorted({r["device"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for ax, (field, label) in zip(axes, PANELS):
        placed = [i for i, r in enumerate(rows) if r.get(field)]
        if not placed:
            ax.text(0.5, 0.5, "no placed points\n(synth-only: no Fmax, no throughput)",
                    ha="center", va="center", transform=ax.transAxes)
        front = on_front[field]
        for d, device in enumerate(devices):
            marker = MARKERS[d % len(MARKERS)]
            mine = [i for i in placed if rows[i]["device"] == device]
            rest = [i for i in mine if i not in front]
            best = [i for i in mine if i in front]
            if rest:
                ax.scatter([rows[i]["lut4_equivalent"] for i in rest],
                           [rows[i][field] for i in rest], marker=marker, color="0.6",
                           label=f"{device}")
            if best:
                ax.scatter([rows[i]["lut4_equivalent"] for i in best],
                           [rows[i][field] for i in best], marker=marker, color="C3",
                           edgecolors="black", s=60, zorder=3,
                           label=f"{device}, Pareto front")
        if front:
            ordered = sorted(front, key=lambda i: rows[i]["lut4_equivalent"])
            ax.step([rows[i]["lut4_equivalent"] for i in ordered],
                    [rows[i][field] for i in ordered], where="post", color="C3", lw=1,
                    alpha=0.6)
            for i in ordered:
                ax.annotate(f"{short_label(rows[i])} ({rows[i]['device']})",
                            (rows[i]["lut4_equivalent"], rows[i][field]), fontsize=7,
                            xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel("LUT4 eq. (LUT4 + 2 per CCU2C)")
        ax.set_ylabel(f"{label} (BitLinears of 2B4T)")
        ax.set_title(f"LUT4 eq. vs {label}")
        ax.grid(alpha=0.3)
        ax.margins(x=0.25, y=0.1)      # room for the labels of the points at the edges
        if placed:
            ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Layer engine design space on ECP5: {options['bandwidth_gbs']:g} GB/s DRAM,"
                 f" prompt {options['prompt']}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --- the CLI ----------------------------------------------------------------------------
