"""``ternary-accel perf``: decode tokens/s, time to first token, bytes and joules per token
of a whole model on a platform, per operation kind, beside the published peers
(:func:`hw.perf.model_report`); Markdown, CSV or JSON, and a roofline figure; with
``--scheme`` for BitNet a4.8 or Q-Sparse activations (:mod:`model.schemes`).

``ternary-accel schemes``: BitNet b1.58 vs a4.8 vs b1.58 + Q-Sparse across models
(:func:`hw.perf.scheme_rows`): BitLinear arithmetic energy, weight bytes per token and
decode tokens/s on every preset. With ``--trained`` (the shipped reference models) or
``--activations-from DIR``, each of b1.58, a4.8 and q-sparse gets a second row beside its
synthetic one (the presets' densities: dense, the a4.8 paper's 7B sparsities, the exact
Top-K ratio) charged with the densities measured on a trained model
(:mod:`model.activations`: the kept fraction of every BitLinear input on its test
split, the mean of its layers)."""

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from ternary_accel.model.schemes import PROJECTIONS, INPUTS, SCHEMES, get_scheme
from ternary_accel.model.shapes import MODELS

from ternary_accel.hw.perf.throughput import (NODES, batch_sweep, engine_for_ttft,
                                              model_report, scheme_rows)

#: TeLLMe v2's time to first token, the prefill target of ``perf``'s summary.
TELLME_TTFT_S = 0.96
TELLME_TTFT_SOURCE = "TeLLMe v2: 0.45-0.96 s for 64-128 prompt tokens on a KV260"
from ternary_accel.hw.perf.platforms import PLATFORMS, get_platform
from ternary_accel.cli.argtypes import (add_format, output_file, positive_float,
                                        positive_int, probability)

__all__ = ["add_parser", "render_markdown", "render_csv", "plot_roofline",
           "render_schemes", "DEFAULT_SCHEME_MODELS"]



def _batches(text):
    """``--batch-sweep``: a comma list of positive, increasing batch sizes."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of integers") from None
    if any(v < 1 for v in values) or values != sorted(set(values)):
        raise argparse.ArgumentTypeError(f"{text!r}: batch sizes must be positive and "
                                         "increasing")
    return values


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "perf", help="whole-model tokens/s, time to first token and joules per token",
        description="Projection of a whole model on the accelerator: every operation of "
                    "the decoder (BitLinears on the layer engine, attention, norms, LM "
                    "head...), its cycles and DRAM bytes, decode tokens/s, time to first "
                    "token, bytes and joules per token, beside published peers.")
    parser.add_argument("--model", default="b1.58-2b4t",
                        help=f"model ({', '.join(MODELS)}; default: %(default)s)")
    parser.add_argument("--platform", default="ecp5-ddr3",
                        help=f"board preset ({', '.join(PLATFORMS)}; default: %(default)s)")
    parser.add_argument("--prompt", type=int, default=128,
                        help="prompt tokens for the time to first token (default: 128)")
    parser.add_argument("--context", type=int, default=None,
                        help="cached positions of the decode step (default: the prompt)")
    parser.add_argument("--batch", type=int, default=1,
                        help="sequences decoded together (default: 1)")
    parser.add_argument("--clock-mhz", type=positive_float, default=None,
                        help="override the platform's clock")
    parser.add_argument("--bandwidth-gbs", type=positive_float, default=None,
                        help="override the platform's DRAM bandwidth")
    add_format(parser)
    parser.add_argument("--numerics", choices=("float", "hw"), default="float",
                        help="the precisions of the norms, quantizers, RoPE, attention and "
                             "LM head: float (fp32 glue, bf16 KV cache and head; default) "
                             "or hw (the hardware numerics' widths: int24 vector work, int8 "
                             "KV codes, the preset's LM head format, docs/numerics.md)")
    parser.add_argument("--head", choices=("int8", "trit5", "grouped"), default=None,
                        help="with --numerics hw: the LM head's format (default: the "
                             "preset's, grouped: 4-bit codes and a 6-bit multiplier a "
                             "32-group)")
    parser.add_argument("--batch-sweep", type=_batches, default=None, metavar="B,B,...",
                        help="also decode with each of these batch sizes: tokens/s and "
                             "J/token against B (a table; a plot with --batch-plot)")
    parser.add_argument("--batch-plot", metavar="PNG", type=output_file, default=None,
                        help="with --batch-sweep: the plot of tokens/s and J/token "
                             "against B")
    parser.add_argument("--roofline", metavar="PNG", type=output_file, default=None,
                        help="also write the roofline figure to this file")
    _add_scheme_arguments(parser)
    parser.set_defaults(func=lambda _main, args: run(parser, args))
    _add_schemes_parser(subparsers)
    return parser


def _add_scheme_arguments(parser, repeat=False):
    parser.add_argument("--scheme", choices=SCHEMES, action="append" if repeat else "store",
                        default=None if repeat else "b1.58",
                        help="activation scheme (model.schemes)" +
                             (", repeatable (default: all)" if repeat else
                              " (default: %(default)s)"))
    parser.add_argument("--sparsity", type=probability, default=None, metavar="R",
                        help="the q-sparse sparsity ratio (default: 0.6125)")
    if not repeat:
        parser.add_argument("--density", action="append", default=[], metavar="P=D",
                            help="measured kept fraction of a projection's or input's "
                                 f"activations ({', '.join(PROJECTIONS + tuple(INPUTS))}), "
                                 "repeatable")


def _scheme(parser, name, sparsity=None, density=(), strict=True):
    """The scheme ``name`` with the flags' parameters (``sparsity`` for q-sparse: an
    error with another scheme if ``strict``, else ignored); errors are usage errors."""
    parameters = {}
    if sparsity is not None:
        if name == "q-sparse":
            parameters["sparsity"] = sparsity
        elif strict:
            parser.error("--sparsity goes with --scheme q-sparse")
    try:
        scheme = get_scheme(name, **parameters)
        given = {}
        for item in density:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--density takes PROJECTION=FRACTION, not {item!r}")
            try:
                given[key] = float(value)
            except ValueError:
                raise ValueError(f"--density {key}: not a number: {value!r}") from None
        return scheme.with_density(given) if given else scheme
    except ValueError as error:
        parser.error(str(error))


#: Models of ``ternary-accel schemes``: the energy model's sweep (2B4T, the BitNet b1.58
#: paper's sizes and LLaMA's); the BitNet paper's Table 1 sizes have a two-matrix FFN
#: the decoder does not run.
DEFAULT_SCHEME_MODELS = ("b1.58-700m", "b1.58-1.3b", "b1.58-3b", "b1.58-2b4t",
                         "llama-7b", "llama-13b", "llama-30b", "llama-70b")


def _add_schemes_parser(subparsers):
    parser = subparsers.add_parser(
        "schemes", help="BitNet b1.58 vs a4.8 vs Q-Sparse: energy, weight bytes, tokens/s",
        description="A decode step of each model charged for each activation scheme "
                    "(model.schemes): the BitLinears' adds and arithmetic energy, weight "
                    "and DRAM bytes per token on the default 16 x 32 engine, and decode "
                    "tokens/s on every platform preset.")
    parser.add_argument("--model", action="append", metavar="NAME",
                        help="a named model, repeatable (default: "
                             f"{', '.join(DEFAULT_SCHEME_MODELS)})")
    _add_scheme_arguments(parser, repeat=True)
    parser.add_argument("--context", type=int, default=128,
                        help="cached positions of the decode step (default: %(default)s)")
    trained = parser.add_argument_group(
        "trained-model activations", "a row with densities measured on a trained model "
        "beside each synthetic one (model.activations)")
    source = trained.add_mutually_exclusive_group()
    source.add_argument("--trained", action="store_true",
                        help="the shipped reference model of each scheme (" +
                             ", ".join(TRAINED_SCHEMES) + "), under its training numerics")
    source.add_argument("--activations-from", type=_checkpoint_folder, default=None,
                        metavar="CHECKPOINT",
                        help="one checkpoint trained here, run under each scheme's "
                             "numerics (a8; a4.8; a8 + Top-K at the q-sparse ratio)")
    trained.add_argument("--trained-windows", type=positive_int, default=2, metavar="N",
                         help="windows of the test split each run reads (default "
                              "%(default)s)")
    add_format(parser)
    parser.set_defaults(func=lambda _main, args: run_schemes(parser, args))
    return parser


#: The schemes with a trained counterpart: the reference model of the same name
#: (model.reference), and the decoder numerics that measure it on any checkpoint.
TRAINED_SCHEMES = ("b1.58", "a4.8", "q-sparse")

#: What a preset's densities are, beside a trained row.
SYNTHETIC_LABELS = {"b1.58": "synthetic (dense)",
                    "a4.8": "synthetic (the paper's 7B sparsities)",
                    "q-sparse": "synthetic (Top-K ratio exactly)",
                    "block-q-sparse": "synthetic (16:32 mask)"}


def _checkpoint_folder(text):
    import argparse
    path = Path(text)
    if not (path / "config.json").is_file():
        raise argparse.ArgumentTypeError(f"{text}: not a checkpoint folder (no config.json)")
    return path


def trained_schemes(schemes, args):
    """``[(scheme, label)]``: each of ``schemes``, and after each with a trained
    counterpart its scheme with the measured densities (named ``"NAME trained"``), with
    the label of its activations. Raises ValueError (a bad checkpoint or corpus) or
    FileNotFoundError (a reference model not shipped)."""
    from dataclasses import replace
    from ternary_accel.model.activations import checkpoint_activations
    from ternary_accel.model.decoder import A4_8, A8
    from ternary_accel.model.schemes import Q_SPARSE_RATIO
    out = []
    for scheme in schemes:
        out.append((scheme, SYNTHETIC_LABELS.get(scheme.name, "synthetic")))
        if scheme.name not in TRAINED_SCHEMES:
            continue
        label = None
        if args.activations_from is not None:
            from ternary_accel.model.activations import checkpoint_label
            folder = args.activations_from
            label = f"{checkpoint_label(folder)} run {scheme.name}"
            numerics = {"b1.58": {"activations": A8},
                        "a4.8": {"activations": A4_8},
                        "q-sparse": {"activations": A8,
                                     "topk": args.sparsity if args.sparsity is not None
                                     else Q_SPARSE_RATIO}}[scheme.name]
        else:
            from ternary_accel.model.reference import reference_checkpoint
            folder, numerics = reference_checkpoint(scheme.name), None
        record = checkpoint_activations(folder, windows=args.trained_windows,
                                        numerics=numerics, label=label)
        label = record.layer_label()
        print(f"recorded {label}: {record.windows} window(s) of {record.context} tokens",
              file=sys.stderr, flush=True)
        measured = scheme.with_density(record.density())
        out.append((replace(measured, name=f"{scheme.name} trained",
                            bits=dict(measured.bits), density=dict(measured.density),
                            description=f"{scheme.description}; densities of {label}"),
                    label))
    return out


def run_schemes(parser, args):
    from ternary_accel.cli.argtypes import refuse_unless
    with_trained = args.trained or args.activations_from is not None
    refuse_unless(parser, args, with_trained, "with --trained or --activations-from",
                  "trained_windows")
    models = args.model or list(DEFAULT_SCHEME_MODELS)
    for name in models:
        if name not in MODELS:
            parser.error(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    if args.context < 0:
        parser.error("--context must be zero or more")
    for name in models:
        check_context(parser, name, args.context)
    names = args.scheme or list(SCHEMES)
    if args.sparsity is not None and "q-sparse" not in names:
        parser.error("--sparsity goes with the q-sparse scheme")
    schemes = [_scheme(parser, name, args.sparsity, strict=False) for name in names]
    labels = None
    if with_trained:
        try:
            pairs = trained_schemes(schemes, args)
        except (ValueError, FileNotFoundError) as error:
            print(f"{parser.prog}: error: {error}", file=sys.stderr)
            return 1
        schemes = [scheme for scheme, _ in pairs]
        labels = {scheme.name: label for scheme, label in pairs}
    try:
        rows, skipped = scheme_rows(models, schemes, context=args.context)
    except ValueError as error:
        parser.error(str(error))
    if labels is not None:
        for row in rows:
            row["activations"] = labels[row["scheme"]]
    if not rows:
        parser.error("no model runs on the default engine: " +
                     "; ".join(f"{m}: {why}" for m, why in skipped.items()))
    if args.format == "json":
        print(json.dumps({"context": args.context, "schemes": [s.to_dict() for s in schemes],
                          "rows": rows, "skipped": skipped}, indent=2))
    elif args.format == "csv":
        sys.stdout.write(_schemes_csv(rows))
    else:
        print(render_schemes(rows, skipped, schemes, args.context,
                             trained=labels is not None))
    return 0


def _schemes_csv(rows):
    buffer = io.StringIO()
    platforms = list(rows[0]["tokens_per_s"])
    fields = ["model", "scheme"] + (["activations"] if "activations" in rows[0] else []) + [
              "bitlinear_adds", "int4_adds", "bitlinear_joules_7nm",
              "bitlinear_joules_45nm", "ternary_weight_bytes", "kv_cache_bytes",
              "dram_bytes"] + [f"tokens_per_s_{p}" for p in platforms]
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, **{f"tokens_per_s_{p}": v
                                   for p, v in row["tokens_per_s"].items()}})
    return buffer.getvalue()


def render_schemes(rows, skipped, schemes, context, trained=False):
    """The scheme comparison as Markdown: the table, the schemes, what is assumed; with
    ``trained``, an activations column (the rows' ``"activations"`` labels)."""
    platforms = list(rows[0]["tokens_per_s"])
    out = [f"## BitNet b1.58 vs a4.8 vs Q-Sparse: a decode step at context {context}", "",
           f"| model | scheme | {'activations | ' if trained else ''}BitLinear adds/token "
           "(M) | INT4 share | BitLinear arithmetic "
           "7 nm (uJ/token) | 45 nm (uJ/token) | ternary weights MB/token | KV cache "
           "MB/token | DRAM MB/token | " +
           " | ".join(f"tokens/s {p}" for p in platforms) + " |",
           "|" + "---|" * (9 + len(platforms) + bool(trained))]
    for r in rows:
        speeds = " | ".join("-" if v is None else f"{v:,.2f}"
                            for v in r["tokens_per_s"].values())
        share = r["int4_adds"] / r["bitlinear_adds"] if r["bitlinear_adds"] else 0
        label = f"{r['activations']} | " if trained else ""
        out.append(f"| {r['model']} | {r['scheme']} | {label}"
                   f"{r['bitlinear_adds'] / 1e6:,.0f} | "
                   f"{share:.0%} | {r['bitlinear_joules_7nm'] * 1e6:,.2f} | "
                   f"{r['bitlinear_joules_45nm'] * 1e6:,.2f} | "
                   f"{_mb(r['ternary_weight_bytes'])} | {_mb(r['kv_cache_bytes'])} | "
                   f"{_mb(r['dram_bytes'])} | {speeds} |")
    out += ["", "Schemes (model.schemes):", ""]
    for scheme in schemes:
        d = scheme.to_dict()
        density = ", ".join(f"{k} {v:.3g}" for k, v in d["density"].items())
        kv = f"{d['kv_bits']}-bit" if d["kv_bits"] else "bf16"
        sparse = sorted({p for r in rows if r["scheme"] == d["name"]
                         for p in r["sparse_projections"]}, key=PROJECTIONS.index)
        out.append(f"- **{d['name']}**: {d['description']}. Kept fraction of each input: "
                   f"{density}; KV cache {kv}. On the sparse dataflow (16 x 32 engine): "
                   f"{', '.join(sparse) if sparse else 'none'}.")
    out += ["", "BitLinear arithmetic: the engine's adds (a ternary weight times an "
            "activation is one add, at INT4 for a 4-bit input; the INT4 add is derived as "
            "half the INT8 add, no source gives one) and its fp32 rescales. Bytes on the "
            "16 x 32 engine; tokens/s on each preset's own engine and clock (hw perf's "
            "model: each kernel max(compute, DRAM), kernels in sequence, DRAM at peak). A "
            "sparse projection runs on the sparse dataflow (model.sparse) only where its "
            "column-major weights are fewer bytes than the dense beats. a4.8's up keeps "
            "the gate's input columns (0.88): its reported 71.4 % includes gate-first "
            "output skipping, which the engine does not do. The LM head (bf16) and "
            "attention are the same in every scheme. Projection, not a measurement."]
    if skipped:
        out += ["", "Left out: " + "; ".join(f"{m} ({why})" for m, why in skipped.items())
                + "."]
    return "\n".join(out)


def check_context(parser, model, context, flag="--context", tokens=1):
    """Refuse a ``context`` past the model's ``max_position_embeddings`` (a usage error
    naming ``flag``) before anything is allocated for its KV cache."""
    from ternary_accel.model.config import model_config
    try:
        limit = model_config(model).max_position_embeddings
    except ValueError:
        return          # a model the decoder cannot run: the report says why
    if context + tokens > limit:
        parser.error(f"{flag} {context}: {model} holds at most {limit} positions "
                     f"(max_position_embeddings), so at most {limit - tokens}")


def _numerics_budget(model, context):
    """What the hardware numerics hold on chip for ``model``: their tables and the KV
    cache at ``context`` (:func:`model.hwnum.operations`)."""
    from ternary_accel.model.config import model_config
    from ternary_accel.model.hwnum import DEFAULT, kv_bytes_per_position, operations
    config = model_config(model)
    tables = {row["op"]: row["table_bytes"] for row in operations(DEFAULT, config)
              if row["table_bytes"]}
    per_position = kv_bytes_per_position(DEFAULT, config)
    return {"table_bytes": tables, "kv_bytes_per_position": per_position,
            "kv_bytes_at_context": per_position * context, "context": context}


def _head_numerics(name):
    """``--head``: the hardware numerics with that LM head format (model.hwnum)."""
    from ternary_accel.model.hwnum import DEFAULT, GROUPED_HEAD
    return {"int8": DEFAULT, "trit5": DEFAULT.replace(head="trit5"),
            "grouped": GROUPED_HEAD}[name]


def _precisions(numerics, platform, head=None):
    if numerics == "hw":
        from ternary_accel.hw.perf.accounting import Precisions
        return Precisions.hardware(platform.numerics if head is None
                                   else _head_numerics(head))
    return None


def run(parser, args):
    from ternary_accel.cli.argtypes import FlagErrors
    parser = FlagErrors(parser)     # the model's messages name the flags
    try:
        platform = get_platform(args.platform)
    except ValueError as error:
        parser.error(str(error))
    if args.model not in MODELS:
        parser.error(f"unknown model {args.model!r}; known models: {', '.join(MODELS)}")
    if args.prompt < 1:
        parser.error("--prompt must be a positive number of tokens")
    if args.context is not None and args.context < 0:
        parser.error("--context must be zero or more")
    if args.batch < 1:
        parser.error("--batch must be a positive integer")
    for flag in ("clock_mhz", "bandwidth_gbs"):
        value = getattr(args, flag)
        if value is not None and not value > 0:
            parser.error(f"--{flag.replace('_', '-')} must be positive")
    if args.context is None:
        check_context(parser, args.model, args.prompt, "--prompt", tokens=0)
    else:
        check_context(parser, args.model, args.context)
    scheme = _scheme(parser, args.scheme, args.sparsity, args.density)
    if args.batch_plot and not args.batch_sweep:
        parser.error("--batch-plot needs --batch-sweep")
    if args.batch_sweep and args.context is None:
        check_context(parser, args.model, args.prompt, "--prompt", tokens=1)
    if args.head is not None and args.numerics != "hw":
        parser.error("--head is a format of the hardware numerics: give --numerics hw")
    try:
        report = model_report(args.model, platform, prompt=args.prompt, context=args.context,
                              batch=args.batch, clock_mhz=args.clock_mhz,
                              bandwidth_gbs=args.bandwidth_gbs, scheme=scheme,
                              precisions=_precisions(args.numerics, platform, args.head))
    except ValueError as error:
        parser.error(str(error))
    if args.numerics == "hw":
        report["hardware_numerics"] = _numerics_budget(args.model, report["context"])
    precisions = _precisions(args.numerics, platform, args.head)
    if args.model == "b1.58-2b4t" and args.clock_mhz is None:
        found = engine_for_ttft(args.model, platform, TELLME_TTFT_S, prompt=args.prompt,
                                precisions=precisions)
        report["ttft_target"] = {"target_s": TELLME_TTFT_S, "source": TELLME_TTFT_SOURCE,
                                 **found}
    if args.batch_sweep:
        report["batch_sweep"] = batch_sweep(args.model, platform, args.batch_sweep,
                                            context=report["context"],
                                            clock_mhz=args.clock_mhz, precisions=precisions)
        if args.batch_plot:
            print(f"batch plot: {plot_batches(report, args.batch_plot)}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(report, indent=2))
    elif args.format == "csv":
        sys.stdout.write(render_csv(report))
    else:
        print(render_markdown(report))
    if args.roofline:
        path = plot_roofline(report, args.roofline)
        print(f"roofline: {path}", file=sys.stderr)
    return 0


def _mb(n):
    return f"{n / 1e6:,.2f}"


def _kernel_table(phase):
    lines = ["| operation | unit | RTL | MACs | other ops | cycles | DRAM MB | compute ms "
             "| memory ms | time ms | bound |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for k in phase["kernels"]:
        lines.append(f"| {k['kind']} | {k['unit']} | {'yes' if k['rtl'] else 'no'} | "
                     f"{k['macs']:,} | {k['ops']:,} | {k['cycles']:,} | "
                     f"{_mb(k['dram_bytes'])} | {k['compute_s'] * 1e3:.3f} | "
                     f"{k['memory_s'] * 1e3:.3f} | {k['seconds'] * 1e3:.3f} | {k['bound']} |")
    lines.append(f"| **pass** | | | | | {phase['cycles']:,} | {_mb(phase['dram_bytes'])} | "
                 f"| | {phase['seconds'] * 1e3:.3f} | |")
    return "\n".join(lines)


def _energy_line(joules):
    return ", ".join(f"{node}: {joules[node]['total']:.4f} J (arithmetic "
                     f"{joules[node]['arithmetic'] * 1e3:.3f} mJ, DRAM "
                     f"{joules[node]['dram'] * 1e3:.1f} mJ, SRAM "
                     f"{joules[node]['sram'] * 1e3:.2f} mJ)" for node in NODES)


def render_markdown(report):
    """The report as Markdown: header, decode and prefill tables, summary, peers."""
    p = report["platform"]
    dec, pre = report["decode"], report["prefill"]
    e = p["engine"]
    port = (f"{e['weight_port_bits']}-bit weight port" if e["weight_port_bits"]
            else "a whole beat a cycle")
    area = report.get("engine_area")
    area = (f"{area['lut4_per_mac']:.1f} LUT4 eq./MAC measured" if area
            else "area: no report of the flow under docs/results or build/reports holds "
                 "this engine" if p["reports_family"]
            else "area not placed (no open flow for this board)")
    out = [f"## {report['model']} on {p['name']}: {p['description']}", "",
           f"Engine `{p['engine_name']}`: K={e['lanes']} x M={e['rows']} "
           f"({report['engine_macs_per_cycle']} ternary MACs/cycle), weight reuse "
           f"T={e['tokens']}, {port}, {e['packing'] or 'default'} packing, output stage "
           f"{e['output_rows']} row(s) a cycle; {area}; at {report['clock_mhz']:.1f} MHz "
           f"({report['clock_source']}); DRAM {p['bandwidth_gbs']:g} GB/s at "
           f"{p['dram_pj_per_bit']:.1f} pJ/bit ({p['dram_source']}). Every unit is RTL, the "
           "token core (hw.rtl.token): the engine with its rescale, the vector unit "
           "(fused norm and quantizer, RoPE, element-wise), the attention unit (one query "
           "head at a time over the KV cache), the LM head (hw.rtl.head.HeadDot, "
           f"{p['head_rows']} rows of {p['head_lanes']} inputs a cycle) and the "
           "sequencer; each operation's cycles from the core's cycle model "
           "(hw.program.operation_cycles, equal to its counters in simulation). The "
           "prefill's BitLinears take the engine's weight reuse (T tokens a weight beat; "
           "the token core runs a prompt one token at a time today).", ""]
    pr = report["precisions"]
    hn = pr.get("numerics")
    head = (f"{pr['head']} MACs on 4-bit codes with a {hn['head_group_bits']}-bit multiplier "
            f"a {hn['head_group']}-group" if hn and hn["head"] == "grouped"
            else f"{pr['head']} MACs on five-trit codes" if hn and hn["head"] == "trit5"
            else f"{pr['head']} ({pr['head_bits']}-bit weights)")
    out += [f"Precisions: vector {pr['vector']}, attention {pr['attention']}, LM head "
            f"{head}, KV cache {pr['kv_bits']} bits, norm gains {pr['norm_bits']} bits.", ""]
    budget = report.get("hardware_numerics")
    if budget is not None:
        tables = ", ".join(f"{op} {n:,}" for op, n in budget["table_bytes"].items())
        out += [f"Hardware numerics on chip (docs/numerics.md): tables {tables} bytes; "
                f"KV cache {budget['kv_bytes_per_position']:,.0f} bytes a position "
                f"(codes and per-head factors), {budget['kv_bytes_at_context'] / 1e6:.2f} MB "
                f"at context {budget['context']}.", ""]
    scheme = report["scheme"]
    if scheme["name"] != "b1.58":
        density = ", ".join(f"{k} {v:.3g}" for k, v in scheme["density"].items())
        bits = ", ".join(f"{k} {v}" for k, v in scheme["bits"].items())
        kv = f"{scheme['kv_bits']} bits" if scheme["kv_bits"] else "bf16"
        out += [f"Activations: {scheme['description']} (model.schemes {scheme['name']}; "
                f"bits by input: {bits}; kept fraction by projection: {density}; KV cache "
                f"{kv}). The FP16 reference is dense.", ""]
    out += [f"### Decode: one step at context {dec['context']}, batch {report['batch']}", "",
            _kernel_table(dec), "",
            f"### Prefill: a {pre['tokens']}-token prompt", "", _kernel_table(pre), "",
            "### Summary", "",
            "| figure | value |", "|---|---|",
            f"| decode tokens/s | {report['decode_tokens_per_s']:.2f} |",
            f"| memory bound (bandwidth / bytes per token) | "
            f"{report['memory_bound_tokens_per_s']:.2f} tokens/s |",
            f"| time to first token ({pre['tokens']}-token prompt) | "
            f"{report['ttft_s'] * 1e3:,.1f} ms |",
            f"| prefill tokens/s | {report['prefill_tokens_per_s']:.1f} |",
            f"| DRAM bytes per decoded token | {_mb(report['bytes_per_token'])} MB |",
            f"| prefill DRAM bytes per prompt token | {_mb(pre['dram_bytes_per_token'])} MB |"]
    target = report.get("ttft_target")
    if target:
        engine = target["engine"]
        found = (f"K={engine['lanes']} x M={engine['rows']} ({engine['ttft_s'] * 1e3:,.0f} ms; "
                 "projection of the cycle model at this clock and bandwidth, the same T and "
                 "packing, the port widened with the beat)"
                 if engine else
                 "none of K x M up to {lanes} x {rows} (projection: {ttft_s:.2f} s there, "
                 "limited by {limits})".format(**{**target["largest"], "limits": ", ".join(
                     target["largest"]["limits"])}))
        out.append(f"| smallest engine with a {pre['tokens']}-token prefill within "
                   f"{target['target_s']} s ({target['source']}) | {found} |")
    for node in NODES:
        j, f = report["joules_per_token"][node], report["fp16_joules_per_token"][node]
        out.append(f"| J per decoded token, {node} arithmetic | {j['total']:.4f} (arithmetic "
                   f"{j['arithmetic'] * 1e3:.3f} mJ, DRAM {j['dram'] * 1e3:.1f} mJ, SRAM "
                   f"{j['sram'] * 1e3:.2f} mJ); FP16 reference {f['total']:.4f} |")
    if report["peers"]:
        out += ["", "### Beside the peers", "",
                f"Ours: this report's decode on {p['name']}; energies at 7 nm arithmetic "
                "plus DRAM and SRAM. A peer is compared like for like on its nearest "
                "preset (marked *).", "",
                "| system | hardware | model | figure | theirs | ours | ours vs theirs | "
                "nearest preset | source |", "|---|---|---|---|---|---|---|---|---|"]
        for r in report["peers"]:
            unit = "tokens/s" if r["metric"] == "tokens_per_s" else "J/token"
            if r["metric"] == "tokens_per_s":
                versus = f"{r['advantage']:.2f} x their speed"
            elif r["advantage"] >= 1:
                versus = f"{r['advantage']:.2f} x less energy"
            else:
                versus = f"{1 / r['advantage']:.2f} x more energy"
            note = f" ({r['note']})" if r["note"] else ""
            out.append(f"| {r['system']} | {r['hardware']} | {r['model']} | {unit} | "
                       f"{r['theirs']:.3g} | {r['ours']:.3g} | {versus} "
                       f"| {r['nearest_preset']}{' *' if r['like_for_like'] else ''} "
                       f"| {r['source']}{note} |")
    sweep = report.get("batch_sweep")
    if sweep:
        out += ["", f"### Batched decode at context {dec['context']}", "",
                "B sequences decode together; the engine applies each weight beat to up to "
                f"T = {e['tokens']} tokens, so the weights are read once per step while "
                "B <= T.", "",
                "| B | step ms | tokens/s | tokens/s a sequence | DRAM MB per token | "
                "J per token (7 nm) | compute ms | memory ms | bound |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in sweep:
            out.append(f"| {r['batch']} | {r['step_s'] * 1e3:,.2f} | {r['tokens_per_s']:,.2f} "
                       f"| {r['tokens_per_s_per_sequence']:.2f} "
                       f"| {_mb(r['dram_bytes_per_token'])} | {r['joules_per_token']:.4f} "
                       f"| {r['compute_s'] * 1e3:,.2f} | {r['memory_s'] * 1e3:,.2f} "
                       f"| {r['bound']} |")
    out += ["", "Projection, not a measurement. The RTL proves every operation of a decoded "
            "token: the token core (hw.rtl.token) runs the whole token from its program, "
            "bit-exact to the hardware numerics (and the golden decoder), and its cycle "
            "model, which gives every cycle count above, equals its counters in "
            "simulation operation by operation. On ECP5 the engine's Fmax is measured "
            "(the median over the report's seeds). It does not prove: the token core's "
            "own Fmax and area on this board (see docs/fpga.md for what is placed), the "
            "clock on boards without an open flow, a DRAM controller at peak bandwidth, "
            "the kernels' sequencing in time (each kernel overlaps its own compute and "
            "DRAM traffic; kernels do not overlap each other; the memories of the "
            "simulations answer a cycle after each command), or a prefill on the token "
            "core with weight reuse (the prefill's BitLinears are the layer engine's, T "
            "tokens a weight beat; its other operations are the token core's, a token at "
            "a time). Energies are dynamic energies of arithmetic, DRAM and SRAM only (no "
            "static power, clock tree, I/O or host)."]
    return "\n".join(out)


def render_csv(report):
    """One row per phase and operation kind."""
    buffer = io.StringIO()
    fields = ["phase", "kind", "unit", "rtl", "macs", "ops", "cycles", "dram_bytes",
              "sram_bytes", "compute_s", "memory_s", "seconds", "bound"]
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for phase in ("decode", "prefill"):
        for kernel in report[phase]["kernels"]:
            writer.writerow({"phase": phase, **kernel})
    return buffer.getvalue()


def plot_batches(report, path):
    """Decode tokens/s and J per token against the batch (``report["batch_sweep"]``),
    on log axes; returns the path written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = report["batch_sweep"]
    b = [r["batch"] for r in rows]
    fig, left = plt.subplots(figsize=(6, 4))
    left.plot(b, [r["tokens_per_s"] for r in rows], "o-", color="tab:blue")
    left.set_xscale("log", base=2)
    left.set_xlabel("sequences decoded together (B)")
    left.set_ylabel("decode tokens/s (all sequences)", color="tab:blue")
    right = left.twinx()
    right.plot(b, [r["joules_per_token"] for r in rows], "s--", color="tab:red")
    right.set_yscale("log")
    right.set_ylabel("J per token (7 nm arithmetic + DRAM + SRAM)", color="tab:red")
    for r in rows:
        if r["bound"] == "compute":
            left.axvline(r["batch"], color="grey", linestyle=":")
            left.annotate("compute-bound", (r["batch"], r["tokens_per_s"]),
                          textcoords="offset points", xytext=(4, -12), fontsize=8)
            break
    p = report["platform"]
    left.set_title(f"{report['model']} on {p['name']}: batched decode (projection)")
    return _save(fig, path)


def _save(fig, path):
    """Write ``fig`` to ``path`` (its folder made) and close it; returns the path."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_roofline(report, path):
    """The roofline of the platform (the engine's compute roof, the other units' roofs,
    the DRAM slope) with every kernel of decode and prefill at its operational
    intensity; kernels without DRAM traffic are left out (infinite intensity)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ternary_accel.model.config import model_config
    p, hz = report["platform"], report["clock_mhz"] * 1e6
    head_dim = model_config(report["model"]).head_dim
    bandwidth = p["bandwidth_gbs"] * 1e9
    roofs = {"engine (ternary adds)": 2 * report["engine_macs_per_cycle"] * hz,
             "LM head unit": 2 * p["head_lanes"] * p["head_rows"] * hz,
             "attention unit (a key a cycle)": 2 * head_dim * hz,
             "vector unit (an element a cycle)": hz}
    fig, ax = plt.subplots(figsize=(8, 5.5))
    x = [1e-2, 1e5]
    ax.plot(x, [bandwidth * v for v in x], color="black", lw=1.5,
            label=f"DRAM {p['bandwidth_gbs']:g} GB/s")
    for (name, peak), style in zip(roofs.items(), ("-", "--", "-.", ":")):
        ax.axhline(peak, color="grey", ls=style, lw=1)
        ax.text(x[1], peak, f" {name}", va="center", fontsize=7)
    markers = {"decode": "o", "prefill": "s"}
    for phase in ("decode", "prefill"):
        phase_data = report[phase]
        for k in phase_data["kernels"]:
            if not k["ops_per_dram_byte"] or not k["seconds"]:
                continue
            achieved = (2 * k["macs"] + k["ops"]) / k["seconds"]
            ax.scatter(k["ops_per_dram_byte"], achieved, marker=markers[phase], s=28,
                       color="tab:blue" if phase == "decode" else "tab:orange", zorder=3)
            ax.annotate(k["kind"].replace("bitlinear ", ""),
                        (k["ops_per_dram_byte"], achieved), fontsize=6,
                        xytext=(3, 2), textcoords="offset points")
    ax.scatter([], [], marker="o", color="tab:blue",
               label=f"decode (context {report['decode']['context']})")
    ax.scatter([], [], marker="s", color="tab:orange",
               label=f"prefill ({report['prefill']['tokens']} tokens)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(*x)
    ax.set_xlabel("operational intensity (ops per DRAM byte; a MAC is 2 ops)")
    ax.set_ylabel("ops/s")
    ax.set_title(f"{report['model']} on {p['name']} at {report['clock_mhz']:.0f} MHz "
                 "(projection)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(True, which="both", lw=0.3, alpha=0.5)
    return _save(fig, path)
