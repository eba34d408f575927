"""Model quality: a checkpoint's perplexity on the test split, and how far a choice of
numerics moves its predictions from a reference run.

The text is the corpus' test split (:mod:`model.corpus`), tokenized by the checkpoint's
own ``tokenizer.json``; the checkpoint's ``corpus.json`` must name the same corpus, so
a figure is never computed on other text than the one it is compared with. A fixed
number of tokens is read as evenly spaced windows of ``context`` tokens; each window is
one forward pass from position 0, and its first ``context - 1`` positions predict the
next token.

* **Perplexity** ``exp(mean NLL)`` over the predicted tokens (natural log), and **bits
  per byte**: the summed NLL in bits over the UTF-8 bytes of the predicted tokens'
  text, which compares models with different tokenizers.
* Against the **reference run** (the same weights, computed in float:
  ``activations="float"``, no Top-K, no KV quantization): **top-1 agreement** (the two
  runs' argmax tokens are equal), **top-5 agreement** (the reference's argmax is among the
  run's five highest logits), the mean **logit cosine** per position and the **max abs
  logit error** over all positions and tokens.
"""

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ternary_accel.model.corpus import CorpusError, encode_split, load_corpus, load_tokenizer

__all__ = ["Quality", "EvalText", "load_eval_text", "window_starts", "evaluate",
           "checkpoint_quality", "DEFAULT_TOKENS"]

#: Tokens an evaluation predicts by default (16 windows of 256).
DEFAULT_TOKENS = 4080


@dataclass(frozen=True)
class Quality:
    """One evaluation's figures (see the module docstring)."""

    tokens: int
    bytes: int
    nll: float
    perplexity: float
    bits_per_byte: float
    top1: float = None
    top5: float = None
    cosine: float = None
    max_error: float = None

    def to_dict(self):
        return asdict(self)


@dataclass(frozen=True)
class EvalText:
    """The test split's token ids and the tokenizer that made them."""

    ids: np.ndarray
    tokenizer: object


def load_eval_text(checkpoint_dir, split="test"):
    """The ``split`` of the corpus named by the checkpoint's ``corpus.json``, encoded by
    its ``tokenizer.json``.

    Raises
    ------
    CorpusError
        If either file is missing, or this interpreter's standard library is not the
        corpus the checkpoint names (another Python version).
    """
    folder = Path(checkpoint_dir)
    manifest_file = folder / "corpus.json"
    if not manifest_file.is_file():
        raise CorpusError(f"{folder}: no corpus.json: the checkpoint does not say which "
                          "text it was trained on (ternary-accel train writes one)")
    try:
        manifest = json.loads(manifest_file.read_text())
        recorded = manifest["splits"][split]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise CorpusError(f"{manifest_file}: not a corpus manifest") from None
    corpus = load_corpus()
    digest = corpus.digest(split)
    if digest != recorded.get("sha256"):
        python = manifest.get("python", "another")
        raise CorpusError(f"{folder}: the {split} split of this Python's standard library "
                          f"is not the one the checkpoint was made with (Python {python})")
    tokenizer = load_tokenizer(folder / "tokenizer.json")
    return EvalText(encode_split(corpus, split, tokenizer), tokenizer)


def window_starts(length, context, tokens):
    """Start positions of the evaluation's windows: ``ceil(tokens / (context - 1))``
    windows of ``context`` tokens, evenly spaced over ``length`` ids.

    Raises
    ------
    ValueError
        If the text is shorter than one window, or holds fewer tokens than asked for.
    """
    for name, value in (("context", context), ("tokens", tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    if context < 2:
        raise ValueError(f"context must be at least 2 tokens, not {context}")
    if length < context:
        raise ValueError(f"the text has {length} tokens, fewer than one window of {context}")
    count = math.ceil(tokens / (context - 1))
    if count * context > length:
        raise ValueError(f"tokens {tokens} needs {count} windows of {context}, more than "
                         f"the {length} tokens of the text hold")
    if count == 1:
        return [0]
    stride = (length - context) // (count - 1)
    return [i * stride for i in range(count)]


def _log_softmax(logits):
    x = logits.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def evaluate(decoder, text, *, reference=None, context=256, tokens=DEFAULT_TOKENS,
             progress=None):
    """Evaluate ``decoder`` on ``text`` (:class:`EvalText`).

    Parameters
    ----------
    decoder : model.decoder.Decoder
    text : EvalText
    reference : model.decoder.Decoder, optional
        The reference run: with it, the agreement figures are computed too.
    context : int
        Tokens per window (at most the model's ``max_position_embeddings``).
    tokens : int
        Tokens predicted in all (rounded up to whole windows of ``context - 1``).
    progress : callable, optional
        ``progress(done, total)`` after each window.

    Returns
    -------
    Quality
    """
    if context > decoder.config.max_position_embeddings:
        raise ValueError(f"context {context} is longer than the model's "
                         f"max_position_embeddings ({decoder.config.max_position_embeddings})")
    starts = window_starts(len(text.ids), context, tokens)
    nll = 0.0
    count = 0
    text_bytes = 0
    top1 = top5 = 0
    cosine = 0.0
    max_error = 0.0
    for done, start in enumerate(starts, 1):
        window = np.asarray(text.ids[start:start + context], dtype=np.int64)
        targets = window[1:]
        logits = decoder.forward(window)[:-1]
        logp = _log_softmax(logits)
        nll -= float(logp[np.arange(targets.size), targets].sum())
        count += targets.size
        text_bytes += len(text.tokenizer.decode([int(t) for t in targets],
                                                skip_special_tokens=True).encode("utf-8"))
        if reference is not None:
            ref = reference.forward(window)[:-1].astype(np.float64)
            best = ref.argmax(axis=-1)
            top1 += int(np.sum(logits.argmax(axis=-1) == best))
            five = np.argpartition(-logits, 5, axis=-1)[:, :5]
            top5 += int(np.sum(np.any(five == best[:, None], axis=-1)))
            run = logits.astype(np.float64)
            max_error = max(max_error, float(np.max(np.abs(run - ref))))
            cosine += float(np.sum(np.sum(run * ref, axis=-1)
                                   / (np.linalg.norm(run, axis=-1)
                                      * np.linalg.norm(ref, axis=-1))))
        if progress is not None:
            progress(done, len(starts))
    figures = {}
    if reference is not None:
        figures = {"top1": top1 / count, "top5": top5 / count, "cosine": cosine / count,
                   "max_error": max_error}
    return Quality(tokens=count, bytes=text_bytes, nll=nll / count,
                   perplexity=math.exp(nll / count),
                   bits_per_byte=nll / math.log(2) / text_bytes, **figures)


def checkpoint_quality(checkpoint_dir, *, full_precision=False, tokens=DEFAULT_TOKENS,
                 progress=None):
    """The checkpoint's own figures on the test split at the default budget: its
    training numerics (``training.json``'s ``run``: activations and Top-K) on its
    weights (full-precision weights in float for ``full_precision``), no reference run.
    Written into ``training.json`` by ``ternary-accel train``; the tests reproduce it.

    Returns
    -------
    Quality
    """
    from ternary_accel.model.checkpoint import load_checkpoint
    from ternary_accel.model.decoder import A_FLOAT, Decoder
    folder = Path(checkpoint_dir)
    checkpoint = load_checkpoint(folder)
    run = _training(folder).get("run", {})
    if full_precision:
        decoder = Decoder(checkpoint.full_precision(), activations=A_FLOAT)
    else:
        decoder = Decoder(checkpoint, activations=run.get("activations", "a8"),
                          topk=run.get("topk"))
    context = checkpoint.config.max_position_embeddings
    return evaluate(decoder, load_eval_text(folder), context=context, tokens=tokens,
                    progress=progress)


def _training(folder):
    path = Path(folder) / "training.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise CorpusError(f"{path}: not a JSON file") from None
