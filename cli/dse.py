"""``ternary-accel dse``: the design-space sweep of :mod:`ternary_accel.hw.dse` from the
command line, with progress on stderr."""

import argparse
import os
import sys
import time

from ternary_accel.hw.paths import build_path
from ternary_accel.cli.argtypes import output_dir, non_negative_int, positive_float, positive_int
from ternary_accel.hw.dse import (
    BEAT_PORT, DEFAULT_BANDWIDTH_GBS, DEFAULT_DEVICES, DEFAULT_FREQ_MHZ, DEFAULT_LANES,
    DEFAULT_OUTPUT_ROWS, DEFAULT_PACKINGS, DEFAULT_PORT_BITS, DEFAULT_PROMPT, DEFAULT_ROWS,
    DEFAULT_TOKENS, DEVICES, FAILED, OK, PANELS, SCHEDULER_TIMEOUT, bitlinear_throughput,
    estimate_seconds, failure_reason, flow_tools, format_figure, fronts,
    load_cache, make_points, mapping_params, outcome_of, run_dask, run_local, store,
    write_plot, write_table)
from ternary_accel.hw.fpga.synth import TARGETS
from ternary_accel.hw.mapping import PACKINGS


#: One line for ``ternary-accel --help``.
HELP = "engine design-space sweep on ECP5: area, Fmax, 2B4T tokens/s, Pareto plot"


def _list(convert):
    def parse(text):
        items = [item.strip() for item in text.split(",")]
        if not items or any(not item for item in items):
            raise argparse.ArgumentTypeError(f"expected a comma list, not {text!r}")
        return list(dict.fromkeys(convert(item) for item in items))
    return parse


def _port_bits(text):
    if text == BEAT_PORT:
        return BEAT_PORT
    value = positive_int(text)
    if value % 8:
        raise argparse.ArgumentTypeError(f"a port width must be a multiple of 8 bits, "
                                         f"not {value}")
    return value


def _choice(choices, what):
    def parse(text):
        if text not in choices:
            raise argparse.ArgumentTypeError(f"unknown {what} {text!r} (one of "
                                             f"{', '.join(choices)})")
        return text
    return parse


def _joined(values):
    return ",".join(map(str, values))


def add_arguments(p):
    """Add the sweep's flags to ``p``."""
    p.description = ("Design-space exploration of the layer engine on ECP5: every "
                    "combination of the comma lists below is a LayerEngine (fabric ecp5) "
                    "through Yosys and nextpnr; its LUT4s and Fmax, with the engine's "
                    "cycle model on the BitLinears of BitNet b1.58 2B4T, give decode and "
                    "prefill tokens/s. Writes dse.md, dse.json and pareto.png under "
                    "--outdir and caches each point's result under --outdir/cache.")
    p.epilog = ("Exit status: 0 when every point ran, 1 when a point failed (its row says "
               "why), 2 on a usage error.")
    p.add_argument("--lanes", type=_list(positive_int), default=list(DEFAULT_LANES),
                   metavar="K,..", help=f"lanes (default: {_joined(DEFAULT_LANES)})")
    p.add_argument("--rows", type=_list(positive_int), default=list(DEFAULT_ROWS),
                   metavar="M,..", help=f"rows (default: {_joined(DEFAULT_ROWS)})")
    p.add_argument("--tokens", type=_list(positive_int), default=list(DEFAULT_TOKENS),
                   metavar="T,..", help="tokens sharing each weight beat, the engine's "
                   f"weight reuse (default: {_joined(DEFAULT_TOKENS)})")
    p.add_argument("--port-bits", type=_list(_port_bits), default=list(DEFAULT_PORT_BITS),
                   metavar="P,..", help="weight-port width in bits, a multiple of 8, or "
                   f"'{BEAT_PORT}' for one whole beat per word (default: "
                   f"{_joined(DEFAULT_PORT_BITS)})")
    p.add_argument("--packing", type=_list(_choice(PACKINGS, "packing")),
                   default=list(DEFAULT_PACKINGS), metavar="NAME,..",
                   help=f"weight packings, of {', '.join(PACKINGS)} (default: "
                   f"{_joined(DEFAULT_PACKINGS)})")
    p.add_argument("--output-rows", type=_list(positive_int),
                   default=list(DEFAULT_OUTPUT_ROWS), metavar="R,..",
                   help="rows a cycle of the pipelined output stage, dividing the rows "
                   f"(default: {_joined(DEFAULT_OUTPUT_ROWS)})")
    p.add_argument("--device", type=_list(_choice(tuple(DEVICES), "device")),
                   default=list(DEFAULT_DEVICES), metavar="NAME,..",
                   help=", ".join(f"{k} = {TARGETS[v].device}" for k, v in DEVICES.items())
                   + f" (default: {_joined(DEFAULT_DEVICES)})")
    p.add_argument("--synth-only", action="store_true",
                   help="synthesis only: no P&R, so no Fmax and no throughput")
    p.add_argument("--seed", type=non_negative_int, default=1, help="P&R seed (default: %(default)s)")
    p.add_argument("--freq", type=positive_float, default=DEFAULT_FREQ_MHZ, metavar="MHZ",
                   help="P&R target frequency (default: %(default)s)")
    p.add_argument("--bandwidth", type=positive_float, default=DEFAULT_BANDWIDTH_GBS,
                   metavar="GBPS", help="DRAM bandwidth of the throughput figures, GB/s "
                   "(default: %(default)s)")
    p.add_argument("--prompt", type=positive_int, default=DEFAULT_PROMPT, metavar="N",
                   help="prefill length in tokens (default: %(default)s)")
    p.add_argument("--jobs", type=positive_int, default=None, metavar="N",
                   help="points run at once in a local process pool (default: the core "
                   f"count, {os.cpu_count()})")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the points on this Dask distributed scheduler (e.g. "
                   "tcp://host:8786) instead of a local pool")
    p.add_argument("--outdir", type=output_dir, default=None,
                   help="table, plot, cache and work folders (default: build/dse)")
    p.add_argument("--no-cache", action="store_true",
                   help="run every point, ignoring the cache (results are still stored)")


def _connect(p, address):
    # without the [dse] extra the import fails and main names the pip install line
    from distributed import Client
    try:
        return Client(address, timeout=SCHEDULER_TIMEOUT)
    except Exception as error:       # OSError, TimeoutError, ValueError on a bad address
        p.error(f"cannot reach the Dask scheduler {address!r}: {failure_reason(error)}")


def _elapsed(seconds):
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"


def result_row(point, outcome, synth, options):
    """The table's row of a point: its parameters, area, Fmax and throughput."""
    engine = point["engine"]
    row = {"design": point["design"], "device": point["device"], "target": point["target"],
           "lanes": engine["lanes"], "rows": engine["rows"], "tokens": engine["tokens"],
           "port_bits": engine["weight_port_bits"], "packing": engine["packing"],
           "engine": engine, "macs": engine["lanes"] * engine["rows"],
           "status": outcome["status"] if outcome["status"] == FAILED else OK,
           "reason": outcome["reason"], "cached": outcome["status"] == "cached",
           "key": outcome["key"], "seconds": outcome["seconds"]}
    for name in ("lut4", "carry", "lut4_equivalent", "ff", "dsp", "bram", "logic_cells",
                 "fmax_mhz"):
        row[name] = synth[name] if synth else None
    row["decode_tokens_per_s"] = row["prefill_tokens_per_s"] = None
    if synth and synth["fmax_mhz"]:
        row.update(bitlinear_throughput(point["mapping"], synth["fmax_mhz"],
                                        bandwidth_gbs=options["bandwidth_gbs"],
                                        prompt=options["prompt"]))
    return row


def _progress(k, n, row, started):
    if row["status"] == FAILED:
        what = f"failed: {row['reason']}"
    else:
        what = (f"LUT4 eq. {row['lut4_equivalent']} ({row['lut4_equivalent'] / row['macs']:.1f}"
                f"/MAC), FF {row['ff']}, DSP {row['dsp']}, BRAM {row['bram']}")
        if row["fmax_mhz"]:
            what += (f", {row['fmax_mhz']:.1f} MHz, decode "
                     f"{format_figure(row['decode_tokens_per_s'])} tokens/s, prefill "
                     f"{format_figure(row['prefill_tokens_per_s'])} tokens/s")
        what += " [cached]" if row["cached"] else f" [{row['seconds']:.0f} s]"
    print(f"[{k}/{n} {_elapsed(time.monotonic() - started)}] {row['design']} "
          f"{row['device']}: {what}", file=sys.stderr, flush=True)


def run(p, args):
    """Run the sweep; return the exit status."""
    if args.scheduler is not None and args.jobs is not None:
        p.error("--jobs and --scheduler exclude each other (the cluster's workers set how "
                "many points run at once)")
    from ternary_accel.cli.perf import check_context
    from ternary_accel.hw.dse import MODEL
    check_context(p, MODEL, args.prompt, "--prompt", tokens=0)
    client = _connect(p, args.scheduler) if args.scheduler is not None else None
    outdir = (args.outdir or build_path("dse")).resolve()
    options = {"synth_only": args.synth_only, "seed": args.seed, "freq_mhz": args.freq,
               "bandwidth_gbs": args.bandwidth, "prompt": args.prompt}
    points = make_points(lanes=args.lanes, rows=args.rows, tokens=args.tokens,
                         port_bits=args.port_bits, packings=args.packing,
                         devices=args.device, seed=args.seed, freq_mhz=args.freq,
                         place=not args.synth_only, workdir=outdir / "work",
                         output_rows=args.output_rows)
    cache_dir = outdir / "cache"
    cache = {} if args.no_cache else load_cache(cache_dir)
    started = time.monotonic()

    # Cheap checks first, without building anything: the engine's keywords and the
    # model's layers on its cycle model; a point that fails them is a row and no job.
    outcomes, runnable = {}, []
    for i, point in enumerate(points):
        try:
            point["mapping"] = mapping_params(point["engine"])
            bitlinear_throughput(point["mapping"], 1.0, bandwidth_gbs=args.bandwidth,
                                 prompt=args.prompt)
        except (TypeError, ValueError) as error:
            outcomes[i] = {"design": point["design"], "device": point["device"],
                           "key": None, "status": FAILED, "reason": failure_reason(error),
                           "synth": None, "seconds": 0.0}
            continue
        runnable.append(i)
    jobs = (sum(client.nthreads().values()) if client is not None else
            args.jobs or os.cpu_count() or 1)
    estimate, calibrated = estimate_seconds([points[i] for i in runnable], jobs,
                                            cache.values())
    where = (f"the Dask cluster at {args.scheduler}" if client is not None else
             f"a local pool of {min(jobs, max(1, len(runnable)))}")
    basis = (f"flow times scaled by {calibrated} cached results" if calibrated else
             "flow times of today's engine")
    print(f"{len(points)} points ({len(runnable)} to build and look up in the cache, "
          f"{len(points) - len(runnable)} refused up front) on {where}; estimate if none "
          f"is cached: about "
          f"{_elapsed(estimate)} ({basis})", file=sys.stderr, flush=True)

    rows = [None] * len(points)
    done = 0
    for i in outcomes:
        done += 1
        rows[i] = result_row(points[i], outcomes[i], None, options)
        _progress(done, len(points), rows[i], started)
    known = sorted(cache)
    submitted = [dict(points[i], cached_keys=known) for i in runnable]
    run = run_dask(submitted, client) if client is not None else \
        run_local(submitted, min(jobs, len(submitted)))
    try:
        for j, future in (run if submitted else ()):
            i = runnable[j]
            outcome = outcome_of(points[i], future)
            synth = None
            if outcome["status"] == "cached":
                synth = cache[outcome["key"]]["synth"]
            elif outcome["status"] == OK:
                synth = store(cache_dir, points[i], outcome)["synth"]
            rows[i] = result_row(points[i], outcome, synth, options)
            done += 1
            _progress(done, len(points), rows[i], started)
    finally:
        if client is not None:
            client.close()

    tools = flow_tools()
    print(write_table(rows, outdir, options, tools))
    plot = write_plot(rows, outdir / "pareto.png", options)
    for field, label in PANELS:
        front = fronts(rows)[field]
        print(f"\nPareto front, LUT4 eq. vs {label}: " +
              ("; ".join(f"{rows[i]['design']} {rows[i]['device']} "
                         f"({rows[i]['lut4_equivalent']} LUT4 eq., {format_figure(rows[i][field])})"
                         for i in sorted(front, key=lambda i: rows[i]["lut4_equivalent"]))
               or "none (no placed points)"))
    failed = sum(r["status"] == FAILED for r in rows)
    cached = sum(r["cached"] for r in rows)
    print(f"\n{len(rows)} points: {len(rows) - failed - cached} ran, {cached} from the "
          f"cache, {failed} failed ({_elapsed(time.monotonic() - started)}); wrote "
          f"{outdir / 'dse.md'}, dse.json and {plot.name}", file=sys.stderr)
    return 1 if failed else 0

