"""``ternary-accel bench numerics`` (``make bench-numerics``): what the hardware numerics
(:mod:`model.hwnum`, ``docs/numerics.md``) cost the shipped reference models.

Every row is one evaluation on the test split (the same windows for every row) of the
decoder in hardware numerics (:class:`model.hwdecoder.HwDecoder`) against the same
checkpoint with the same activations, masks and KV bits in float numerics (the
``--numerics float`` decoder: float32 norms, RoPE, attention, softmax and LM head around
the same integer BitLinears), so the figures are the hardware numerics' alone:

* ``float numerics``: the reference itself (its perplexity);
* ``wide``: every operation at the :data:`model.hwnum.WIDE` widths, where each error is
  negligible: the floor the comparisons start from;
* one row per operation: that operation at its default widths, every other one wide
  (the error it adds alone);
* ``default (all)``: every operation at its default widths (the error together), then
  the options (a five-trit LM head, a 3-bit KV cache);
* ``--sweep``: the candidates each default was chosen from (the others at default).

For the b1.58 model under a8 and the a4.8 model under a4.8. The table of formats and
table sizes (:func:`model.hwnum.operations`) heads the output. A last table gives the
same agreement figures on random models (the tests' tiny configuration and the
reference model's architecture with random weights, :func:`model.weights.random_master_weights`)
over random token sequences: no perplexity (they are not language models), but the
numerics on weights and activations no training shaped.
"""

import sys
import time

import numpy as np

from ternary_accel.cli.argtypes import add_format, positive_int
from ternary_accel.model.decoder import A4_8, A8

HELP = "hardware numerics against float numerics, per operation and together"

#: Operations and the widths that make them (narrowed one group at a time).
GROUPS = (
    ("residual format", ("resid_frac",)),
    ("RMSNorm (rsqrt, gains)", ("rsqrt_bits", "rsqrt_seed_bits", "newton_steps",
                                "gain_bits")),
    ("quantizer reciprocals", ("recip_bits",)),
    ("output stage scales", ("scale_bits",)),
    ("RoPE tables", ("rope_bits",)),
    ("Q/K codes", ("qk_bits",)),
    ("softmax", ("softmax_frac", "exp_bits", "prob_bits")),
    ("V codes", ("v_bits",)),
    ("LM head (int8)", ("head_bits", "head_act_bits")),
)

#: Candidates of the sweep: (parameter, values).
SWEEP = (
    ("resid_frac", (8, 10, 12, 14)),
    ("rsqrt_seed_bits", (4, 6, 8)),
    ("recip_bits", (8, 12, 16)),
    ("scale_bits", (8, 12, 16)),
    ("rope_bits", (8, 12, 16)),
    ("softmax_frac", (4, 6, 8, 10)),
    ("qk_bits", (6, 8)),
    ("v_bits", (6, 8)),
)

#: The models and their numerics.
MODELS = (("b1.58", A8), ("a4.8", A4_8))


def add_arguments(parser):
    parser.add_argument("--tokens", type=positive_int, default=None, metavar="N",
                        help="tokens predicted per row (default 4080: 16 windows of 256)")
    parser.add_argument("--model", choices=[m for m, _ in MODELS], action="append",
                        help="a shipped model, repeatable (default: both)")
    parser.add_argument("--sweep", action="store_true",
                        help="also the candidates each default was chosen from (b1.58)")
    parser.add_argument("--heads", action="store_true",
                        help="only the LM head's formats (b1.58), each with its bits a "
                             "weight and the 2B4T head's bytes (docs/performance.md)")
    add_format(parser)


class _Memo:
    """A decoder whose logits per window are computed once (the reference of every
    row)."""

    def __init__(self, decoder):
        self.decoder = decoder
        self.config = decoder.config
        self._seen = {}

    def forward(self, window):
        key = np.asarray(window).tobytes()
        if key not in self._seen:
            self._seen[key] = self.decoder.forward(window)
        return self._seen[key]


def _rows(sweep):
    from ternary_accel.model import hwnum
    rows = [("wide", hwnum.WIDE, None)]
    for label, names in GROUPS:
        changes = {name: getattr(hwnum.DEFAULT, name) for name in names}
        rows.append((f"{label} alone", hwnum.WIDE.replace(**changes), None))
    rows.append(("default (all)", hwnum.DEFAULT, None))
    rows.append(("default, five-trit LM head", hwnum.DEFAULT.replace(head="trit5"), None))
    rows.append(("default, 3-bit KV cache", hwnum.DEFAULT, 3))
    if sweep:
        for name, values in SWEEP:
            for value in values:
                rows.append((f"sweep {name}={value}", hwnum.DEFAULT.replace(**{name: value}),
                             None))
    return rows


#: The LM head candidates of ``--heads``: (label, HwNumerics changes from DEFAULT).
HEAD_CANDIDATES = (
    ("int8 rows (default)", {}),
    ("five-trit rows", {"head": "trit5"}),
    ("int6 rows", {"head_bits": 6}),
    ("int5 rows", {"head_bits": 5}),
    ("int4 rows", {"head_bits": 4}),
    ("int4, u6 a 32-group (GROUPED_HEAD)", {"head": "grouped", "head_bits": 4,
                                            "head_group": 32}),
    ("int4, u6 a 64-group", {"head": "grouped", "head_bits": 4, "head_group": 64}),
    ("int4, u6 a 128-group", {"head": "grouped", "head_bits": 4, "head_group": 128}),
)


def _head_rows():
    from ternary_accel.model import hwnum
    from ternary_accel.model.config import BITNET_2B4T as c
    rows = []
    for label, changes in HEAD_CANDIDATES:
        n = hwnum.DEFAULT.replace(**changes)
        total = hwnum.head_bytes(c.vocab, c.hidden, n)
        bits = 8 * total / (c.vocab * c.hidden)
        rows.append((f"LM head {label}: {bits:.2f} bits a weight, 2B4T head "
                     f"{total / 1e6:.1f} MB", n, None))
    return rows


def run(parser, args):
    from ternary_accel.model.checkpoint import load_checkpoint
    from ternary_accel.model.corpus import CorpusError
    from ternary_accel.model.decoder import Decoder
    from ternary_accel.model.evaluate import DEFAULT_TOKENS, evaluate, load_eval_text
    from ternary_accel.model.hwdecoder import HwDecoder
    from ternary_accel.model.hwnum import DEFAULT, kv_bytes_per_position, operations
    from ternary_accel.model.reference import reference_checkpoint
    tokens = DEFAULT_TOKENS if args.tokens is None else args.tokens
    if args.heads and args.sweep:
        parser.error("--heads and --sweep are separate runs")
    if args.heads and args.model and args.model != ["b1.58"]:
        parser.error("--heads runs the b1.58 model only")
    models = [(m, a) for m, a in MODELS if not args.model or m in args.model]
    if args.heads:
        models = [(m, a) for m, a in MODELS if m == "b1.58"]
    started = time.monotonic()
    records = []
    config = None
    for model, activations in models:
        folder = reference_checkpoint(model, "packed")
        try:
            checkpoint = load_checkpoint(folder)
            text = load_eval_text(folder)
        except (CorpusError, ValueError) as error:
            print(f"{parser.prog}: error: {error}", file=sys.stderr)
            return 1
        config = checkpoint.config
        context = config.max_position_embeddings
        references = {}
        rows = _head_rows() if args.heads else _rows(args.sweep and model == "b1.58")
        for index, (label, numerics, kv_bits) in enumerate(rows, 1):
            if kv_bits not in references:
                references[kv_bits] = _Memo(Decoder(checkpoint, activations=activations,
                                                    kv_bits=kv_bits))
                base = evaluate(references[kv_bits], text, context=context, tokens=tokens)
                records.append(_record(model, activations, kv_bits, "float numerics", base,
                                       base, None))
            decoder = HwDecoder(checkpoint, numerics=numerics, activations=activations,
                                kv_bits=kv_bits)
            quality = evaluate(decoder, text, reference=references[kv_bits], context=context,
                               tokens=tokens)
            base = next(r["_quality"] for r in records
                        if r["model"] == model and r["kv"] == kv_bits and r["_base"])
            records.append(_record(model, activations, kv_bits, label, quality, base,
                                   decoder.saturations.total))
            print(f"[{model} {index}/{len(rows)}] {label}: PPL {quality.perplexity:.3f}, "
                  f"cosine {quality.cosine:.6f} ({time.monotonic() - started:.0f} s)",
                  file=sys.stderr, flush=True)
    if args.heads:
        if args.format == "json":
            import json
            print(json.dumps({"rows": _plain(records)}, indent=2))
        else:
            print(format_numerics(records, args.format))
        return 0
    random_rows = random_agreement(config, progress=lambda label: print(
        f"[random] {label} ({time.monotonic() - started:.0f} s)", file=sys.stderr,
        flush=True))
    if args.format == "json":
        import json
        print(json.dumps({"operations": operations(DEFAULT, config),
                          "kv_bytes_per_position": kv_bytes_per_position(DEFAULT, config),
                          "rows": _plain(records), "random": random_rows}, indent=2))
        return 0
    print(format_operations(DEFAULT, config, args.format, kv_bytes_per_position))
    print()
    print(format_numerics(records, args.format))
    print()
    print(_table([h for _, h, _ in RANDOM_COLUMNS],
                 [[spec.format(r[k]) for k, _, spec in RANDOM_COLUMNS] for r in random_rows],
                 args.format))
    return 0


#: Columns of the random-model table.
RANDOM_COLUMNS = (("model", "random model", "{}"), ("activations", "activations", "{}"),
                  ("row", "numerics", "{}"), ("tokens", "tokens", "{}"),
                  ("top1", "top-1 agree", "{:.2%}"), ("top5", "top-5 agree", "{:.2%}"),
                  ("cosine", "logit cosine", "{:.6f}"),
                  ("max_error", "max abs logit error", "{:.4f}"),
                  ("saturations", "saturations", "{:,}"))


def agreement(decoder, reference, sequences):
    """Top-1 / top-5 agreement, mean logit cosine and max abs logit error of
    ``decoder`` against ``reference`` over token ``sequences``."""
    top1 = top5 = count = 0
    cosine = 0.0
    worst = 0.0
    for ids in sequences:
        run = decoder.forward(ids).astype(np.float64)
        ref = reference.forward(ids).astype(np.float64)
        best = ref.argmax(axis=-1)
        top1 += int(np.sum(run.argmax(axis=-1) == best))
        five = np.argpartition(-run, 5, axis=-1)[:, :5]
        top5 += int(np.sum(np.any(five == best[:, None], axis=-1)))
        cosine += float(np.sum(np.sum(run * ref, axis=-1) / (np.linalg.norm(run, axis=-1)
                                                          * np.linalg.norm(ref, axis=-1))))
        worst = max(worst, float(np.max(np.abs(run - ref))))
        count += len(ids)
    return {"tokens": count, "top1": top1 / count, "top5": top5 / count,
            "cosine": cosine / count, "max_error": worst}


def random_agreement(reference_config, progress=None, sequences=4, length=128, seed=0):
    """Default and wide hardware numerics against float numerics on random models."""
    from ternary_accel.model.config import TINY
    from ternary_accel.model.decoder import Decoder
    from ternary_accel.model.hwdecoder import HwDecoder
    from ternary_accel.model.hwnum import DEFAULT, WIDE
    from ternary_accel.model.weights import MasterWeights, random_master_weights
    models = [("tiny (tests)", TINY)]
    if reference_config is not None:
        models.append(("reference architecture", reference_config))
    rows = []
    for label, config in models:
        weights = MasterWeights(config, random_master_weights(config, seed=seed))
        rng = np.random.default_rng(seed)
        n = min(length, config.max_position_embeddings)
        ids = [rng.integers(0, config.vocab, n) for _ in range(sequences)]
        for _, activations in MODELS:
            reference = _Memo(Decoder(weights, activations=activations))
            for name, numerics in (("wide", WIDE), ("default (all)", DEFAULT)):
                decoder = HwDecoder(weights, numerics=numerics, activations=activations)
                rows.append({"model": label, "activations": activations, "row": name,
                             **agreement(decoder, reference, ids),
                             "saturations": decoder.saturations.total})
                if progress is not None:
                    progress(f"{label}, {activations}, {name}")
    return rows


def _record(model, activations, kv_bits, label, quality, base, saturations):
    return {"model": model, "activations": activations, "kv": kv_bits, "row": label,
            "tokens": quality.tokens, "perplexity": quality.perplexity,
            "ppl_change": quality.perplexity / base.perplexity - 1,
            "top1": quality.top1, "top5": quality.top5, "cosine": quality.cosine,
            "max_error": quality.max_error, "saturations": saturations,
            "_base": saturations is None, "_quality": quality}


def format_operations(numerics, config, fmt, kv_bytes):
    """The table of operations (formats, widths, table bytes) at ``numerics``."""
    from ternary_accel.model.hwnum import operations
    rows = operations(numerics, config)
    headers = ("operation", "format at the default widths", "parameters", "table bytes")
    cells = [(r["op"], r["format"], r["parameters"], f"{r['table_bytes']:,}") for r in rows]
    note = (f"KV cache: {kv_bytes(numerics, config):,.0f} bytes a position over "
            f"{config.layers} layers (codes and two maxima a head); tables for "
            f"{config.max_position_embeddings} positions ({config.shape.name}).")
    return _table(headers, cells, fmt) + ("" if fmt == "csv" else "\n\n" + note)


#: Columns of the comparison: (key, header, format).
COLUMNS = (("model", "model", "{}"), ("activations", "activations", "{}"),
           ("kv", "KV cache", "{}"), ("row", "numerics", "{}"), ("tokens", "tokens", "{}"),
           ("perplexity", "test PPL", "{:.3f}"), ("ppl_change", "PPL change", "{:+.3%}"),
           ("top1", "top-1 agree", "{:.2%}"), ("top5", "top-5 agree", "{:.2%}"),
           ("cosine", "logit cosine", "{:.6f}"), ("max_error", "max abs logit error",
                                                   "{:.4f}"),
           ("saturations", "saturations", "{:,}"))


def _plain(records):
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in records]


def format_numerics(records, fmt):
    rows = _plain(records)
    for row in rows:
        row["kv"] = f"{row['kv']}-bit" if row["kv"] else "-"
    if fmt == "csv":
        return _table([h for _, h, _ in COLUMNS], [[r.get(k) for k, _, _ in COLUMNS]
                                                  for r in rows], fmt)
    cells = [[("-" if r.get(k) is None else spec.format(r[k])) for k, _, spec in COLUMNS]
             for r in rows]
    return _table([h for _, h, _ in COLUMNS], cells, fmt)


def _table(headers, cells, fmt):
    from ternary_accel.energy.report import render
    if fmt == "markdown":                       # a cell's | would split the row
        cells = [[str(c).replace("|", "\\|") for c in row] for row in cells]
    return render(list(headers), [list(row) for row in cells], fmt)
