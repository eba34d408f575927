"""``ternary-accel bench quality`` (``make bench-quality``): what each numerics choice
costs the shipped reference models (``docs/quality.md``).

Every row is one ``ternary-accel model eval`` on the test split of the corpus (the same
windows for every row): test perplexity, bits per byte, and top-1 / top-5 agreement and
logit cosine against the same checkpoint computed in float (``--activations float``: no
activation quantizer, no Top-K, a float KV cache). The rows:

* the b1.58 model's master weights unquantized (fp32 compute; the QAT model was never
  trained to run this way) and its ternary weights with float activations (the
  reference);
* the b1.58 model on the hardware's arithmetic (packed ternary weights, int8 absmax
  activations, exact integer products), then with BitNet a4.8, Q-Sparse and a 3-bit KV
  cache applied post hoc;
* the a4.8 and Q-Sparse models, trained with those numerics, under them;
* with ``--float-baseline DIR``, the full-precision model of the same architecture and
  budget (``ternary-accel train --linear float``; its master checkpoint), computed in
  float.
"""

import sys
import time

from ternary_accel.cli.argtypes import add_format, positive_int
from ternary_accel.cli.model import format_quality
from ternary_accel.model.decoder import A4_8, A8, A_FLOAT
from ternary_accel.model.schemes import Q_SPARSE_RATIO

HELP = "test perplexity and agreement of the reference models under each numerics"

#: The rows: (label, model, layout, full precision, decoder options).
ROWS = (
    ("b1.58 master weights unquantized, fp32", "b1.58", "master", True,
     dict(activations=A_FLOAT)),
    ("b1.58 ternary weights, float activations (reference)", "b1.58", "packed", False,
     dict(activations=A_FLOAT)),
    ("b1.58 packed, a8 (the hardware's arithmetic)", "b1.58", "packed", False,
     dict(activations=A8)),
    ("b1.58 packed, a4.8 post hoc", "b1.58", "packed", False, dict(activations=A4_8)),
    ("a4.8 trained, a4.8", "a4.8", "packed", False, dict(activations=A4_8)),
    (f"b1.58 packed, Q-Sparse {Q_SPARSE_RATIO:g} post hoc", "b1.58", "packed", False,
     dict(activations=A8, topk=Q_SPARSE_RATIO)),
    (f"q-sparse trained, Q-Sparse {Q_SPARSE_RATIO:g}", "q-sparse", "packed", False,
     dict(activations=A8, topk=Q_SPARSE_RATIO)),
    ("b1.58 packed, a8, 3-bit KV cache", "b1.58", "packed", False,
     dict(activations=A8, kv_bits=3)),
    ("a4.8 trained, a4.8, 3-bit KV cache", "a4.8", "packed", False,
     dict(activations=A4_8, kv_bits=3)),
)


def add_arguments(parser):
    parser.add_argument("--tokens", type=positive_int, default=None, metavar="N",
                        help="tokens predicted per row (default 4080: 16 windows of 256)")
    parser.add_argument("--float-baseline", type=_folder, default=None, metavar="DIR",
                        help="also evaluate the full-precision baseline's master "
                             "checkpoint (from 'ternary-accel train --linear float')")
    add_format(parser)


def _folder(text):
    import argparse
    from pathlib import Path
    path = Path(text)
    if not (path / "config.json").is_file():
        raise argparse.ArgumentTypeError(f"{text}: not a checkpoint folder (no config.json)")
    return path


def run(parser, args):
    from ternary_accel.model.checkpoint import load_checkpoint
    from ternary_accel.model.corpus import CorpusError
    from ternary_accel.model.decoder import Decoder
    from ternary_accel.model.evaluate import DEFAULT_TOKENS, evaluate, load_eval_text
    from ternary_accel.model.reference import reference_checkpoint
    tokens = DEFAULT_TOKENS if args.tokens is None else args.tokens
    rows = [(label, reference_checkpoint(name, layout), full, options)
            for label, name, layout, full, options in ROWS]
    if args.float_baseline is not None:
        rows.append(("float baseline (nn.Linear), fp32", args.float_baseline, True,
                     dict(activations=A_FLOAT)))
    texts = {}
    records = []
    started = time.monotonic()
    for index, (label, folder, full, options) in enumerate(rows, 1):
        try:
            checkpoint = load_checkpoint(folder)
            weights = checkpoint.full_precision() if full else checkpoint
            if folder not in texts:
                texts[folder] = load_eval_text(folder)
        except (CorpusError, ValueError) as error:
            print(f"{parser.prog}: error: {error}", file=sys.stderr)
            return 1
        decoder = Decoder(weights, **options)
        reference = Decoder(weights, activations=A_FLOAT)
        context = checkpoint.config.max_position_embeddings
        quality = evaluate(decoder, texts[folder], reference=reference, context=context,
                           tokens=tokens)
        records.append({"checkpoint": label, "numerics": _numerics(full, options),
                        **quality.to_dict()})
        print(f"[{index}/{len(rows)}] {label}: PPL {quality.perplexity:.3f} "
              f"({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
    print(format_quality(records, args.format))
    return 0


def _numerics(full, options):
    if full:
        return "fp32 weights and activations"
    parts = [options["activations"]]
    if options.get("topk") is not None:
        parts.append(f"top-k {options['topk']:g}")
    if options.get("kv_bits") is not None:
        parts.append(f"KV {options['kv_bits']}-bit")
    return ", ".join(parts)
