"""Train a small BitNet b1.58 decoder on the Python standard library's source
(quantization-aware: ternary weights and int8 activations in the forward pass, the
straight-through estimator in the backward pass), then export it as Hugging Face
checkpoints in both layouts (FOLDER/packed and FOLDER/master).

The run's state is saved every --save-every steps: a stopped run goes on with
'ternary-accel train FOLDER --resume'. The defaults train the project's reference model
(docs/training.md); --linear float trains the full-precision baseline of the same
architecture and budget, --activations a4.8 and --topk R the BitNet a4.8 and Q-Sparse
variants. Needs PyTorch: pip install 'ternary-accel[train]'.
"""

import sys
from pathlib import Path

from ternary_accel.cli.argtypes import (FlagErrors, flag_names, name_flags,
                                        non_negative_int, positive_float, positive_int,
                                        sparsity_ratio)
from ternary_accel.model.decoder import A4_8, A8

HELP = "train a small BitNet b1.58 model (QAT) and export its checkpoints"


def add_arguments(parser):
    parser.add_argument("folder", type=Path, help="the run's folder (state, log, tokenizer, "
                        "and at the end the checkpoints packed/ and master/)")
    parser.add_argument("--resume", action="store_true",
                        help="go on with the run in FOLDER from its last save (its "
                             "settings are read from FOLDER/run.json; give no others)")
    variant = parser.add_argument_group("variant")
    variant.add_argument("--linear", choices=("ternary", "float"), default=None,
                         help="ternary BitLinears (default) or nn.Linear: the "
                              "full-precision baseline")
    variant.add_argument("--activations", choices=(A8, A4_8), default=None,
                         help=f"BitLinear inputs: a8 (default, int8 absmax) or a4.8 (INT4 "
                              f"q/k/v/gate/up, Top-K 50%% on o), default {A8}")
    variant.add_argument("--topk", type=sparsity_ratio, default=None, metavar="R",
                         help="Q-Sparse: every BitLinear input keeps its int((1 - R) D) "
                              "largest |x|")
    size = parser.add_argument_group("model and budget (defaults: the reference model)")
    for name, help_ in (("hidden", "hidden width"), ("layers", "decoder layers"),
                        ("heads", "attention heads"), ("kv-heads", "KV heads"),
                        ("ffn", "FFN width"), ("vocab", "BPE vocabulary"),
                        ("context", "tokens per training window"),
                        ("batch", "windows per step"),
                        ("tokens", "training budget in tokens")):
        size.add_argument(f"--{name}", type=positive_int, default=None, help=help_)
    size.add_argument("--lr", type=positive_float, default=None,
                      help="peak learning rate (default 3e-3 ternary, 1e-3 float)")
    size.add_argument("--seed", type=non_negative_int, default=None, help="seed (default 0)")
    run = parser.add_argument_group("running")
    run.add_argument("--threads", type=positive_int, default=None,
                     help="PyTorch CPU threads (default: PyTorch's choice)")
    run.add_argument("--save-every", type=positive_int, default=200, metavar="STEPS",
                     help="save the run's state every STEPS steps (default 200)")
    run.add_argument("--no-progress", dest="progress", action="store_false",
                     help="no progress bar on standard error")


_SETTINGS = ("linear", "activations", "topk", "hidden", "layers", "heads", "kv_heads",
             "ffn", "vocab", "context", "batch", "tokens", "lr", "seed")


def run(parser, args):
    errors = FlagErrors(parser)
    given = {name: getattr(args, name) for name in _SETTINGS if getattr(args, name) is not None}
    if args.resume and given:
        errors.error(f"--resume reads the run's settings from FOLDER/run.json; "
                     f"--{next(iter(given)).replace('_', '-')} cannot change them")
    if args.folder.exists() and not args.folder.is_dir():
        errors.error(f"{args.folder}: is a file, not a folder")
    try:
        import torch  # noqa: F401  (the extra's presence, before any work)
        import tqdm  # noqa: F401
    except ImportError as error:
        print(f"{parser.prog}: error: training needs {error.name}, which is not installed: "
              f"pip install 'ternary-accel[train]'", file=sys.stderr)
        return 2
    from ternary_accel.model.corpus import CorpusError
    from ternary_accel.train.loop import Run, TrainConfig, TrainError
    try:
        config = None if args.resume else TrainConfig(**given)
        if not args.resume and (args.folder / "run.json").exists():
            errors.error(f"{args.folder}: a run is already there; --resume it or choose "
                         "another folder")
        job = Run(args.folder, config, threads=args.threads)
        config = job.config
        job.prepare().build()
    except (TrainError, CorpusError) as error:
        print(f"{parser.prog}: error: {name_flags(str(error), flag_names(parser))}",
              file=sys.stderr)
        return 2
    print(f"{config.variant}: {job.parameters():,} parameters, {config.steps} steps of "
          f"{config.batch} x {config.context} tokens, {job.threads} threads"
          f"{f', resuming at step {job.step}' if job.step else ''}", file=sys.stderr)
    progress = _progress_bar(config.steps, job.step) if args.progress else None
    try:
        loss = job.train(progress=progress, save_every=args.save_every)
    except KeyboardInterrupt:
        job.save()
        print(f"\n{parser.prog}: stopped at step {job.step}; saved, go on with --resume",
              file=sys.stderr)
        return 1
    except TrainError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    finally:
        if progress is not None:
            progress.close()
    summary = job.export()
    print("test split: evaluating the exported checkpoint...", file=sys.stderr, flush=True)
    from ternary_accel.model.evaluate import checkpoint_quality
    layout = job.layouts[0]
    quality = checkpoint_quality(args.folder / layout, full_precision=not config.ternary)
    test = {"layout": layout, "tokens": quality.tokens,
            "perplexity": round(quality.perplexity, 3),
            "bits_per_byte": round(quality.bits_per_byte, 4)}
    job.record("test", test)
    print(f"variant {summary['variant']}, {summary['parameters']:,} parameters, "
          f"{summary['tokens']:,} tokens in {summary['seconds']:.0f} s "
          f"({summary['tokens'] / max(summary['seconds'], 1e-9):,.0f} tokens/s, "
          f"{summary['threads']} threads); last train loss {loss:.4f}, validation loss "
          f"{summary['validation_loss']:.4f}; test perplexity {test['perplexity']:.3f} "
          f"({test['bits_per_byte']:.4f} bits/byte, {test['tokens']} tokens)")
    print("checkpoints: " + " ".join(str(args.folder / layout) for layout in job.layouts))
    return 0


class _progress_bar:
    """tqdm on standard error: step, loss, tokens/s."""

    def __init__(self, steps, start):
        from tqdm import tqdm
        self.bar = tqdm(total=steps, initial=start, unit="step", file=sys.stderr,
                        mininterval=1.0 if sys.stderr.isatty() else 30.0,
                        dynamic_ncols=True)

    def __call__(self, step, steps, loss, rate):
        self.bar.set_postfix_str(f"loss {loss:.3f}, {rate:,.0f} tok/s", refresh=False)
        self.bar.update(step - self.bar.n)

    def close(self):
        self.bar.close()
