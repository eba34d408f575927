"""Model quality figures (model.evaluate): the windows, perplexity and bits per byte,
agreement with a reference run, and the corpus checks of an evaluation's text."""

import json
import math

import numpy as np
import pytest

from ternary_accel.model.checkpoint import load_checkpoint, make_tiny
from ternary_accel.model.config import TINY
from ternary_accel.model.corpus import EOT, Corpus, CorpusError, encode_split, \
    load_corpus, train_tokenizer
from ternary_accel.model.decoder import A_FLOAT, Decoder
from ternary_accel.model.evaluate import EvalText, Quality, evaluate, load_eval_text, \
    window_starts


class FakeTokenizer:
    """Token ``t`` is the character ``chr(t)`` (two UTF-8 bytes from 128 on); token 0 is
    special (skipped when asked)."""

    def __init__(self):
        self.calls = []

    def decode(self, ids, skip_special_tokens=False):
        self.calls.append(list(ids))
        return "".join(chr(t) for t in ids if not (skip_special_tokens and t == 0))


def utf8_bytes(ids):
    return sum(len(chr(int(t)).encode("utf-8")) for t in ids if t != 0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = make_tiny(tmp_path_factory.mktemp("tiny") / "packed", seed=5)
    return load_checkpoint(folder)


@pytest.fixture(scope="module")
def text():
    rng = np.random.default_rng(11)
    ids = rng.integers(0, TINY.vocab, size=48).astype(np.uint16)
    ids[[5, 20]] = 0                                        # a special token or two
    return EvalText(ids, FakeTokenizer())


def log_softmax64(logits):
    x = logits.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))


# --- window_starts ------------------------------------------------------------------------

def test_window_starts_by_hand():
    # ceil(27 / 9) = 3 windows of 10 over 100 ids: stride (100 - 10) // 2 = 45
    assert window_starts(100, 10, 27) == [0, 45, 90]
    # 3 windows that fill the text exactly
    assert window_starts(30, 10, 27) == [0, 10, 20]
    # one window, however long the text
    assert window_starts(1000, 10, 9) == [0]
    assert window_starts(10, 10, 1) == [0]
    # 28 tokens need a 4th window
    assert window_starts(100, 10, 28) == [0, 30, 60, 90]


@pytest.mark.parametrize("length,context,tokens", [(100, 10, 27), (1000, 64, 630),
                                                    (5000, 256, 4080), (257, 2, 128)])
def test_window_starts_are_evenly_spaced_and_disjoint(length, context, tokens):
    starts = window_starts(length, context, tokens)
    assert len(starts) == math.ceil(tokens / (context - 1))
    assert starts[0] == 0 and starts[-1] + context <= length
    gaps = set(np.diff(starts).tolist())
    assert len(gaps) <= 1 and all(gap >= context for gap in gaps)


@pytest.mark.parametrize("args,message", [
    ((100, 1, 10), "context must be at least 2"),
    ((100, 0, 10), "context must be a positive integer"),
    ((100, True, 10), "context must be a positive integer"),
    ((100, 10.0, 10), "context must be a positive integer"),
    ((100, 10, 0), "tokens must be a positive integer"),
    ((100, 10, -3), "tokens must be a positive integer"),
    ((100, 10, None), "tokens must be a positive integer"),
    ((9, 10, 5), "the text has 9 tokens, fewer than one window of 10"),
    ((29, 10, 27), "tokens 27 needs 3 windows of 10"),
])
def test_window_starts_errors(args, message):
    with pytest.raises(ValueError, match=message):
        window_starts(*args)


# --- evaluate -----------------------------------------------------------------------------

def test_perplexity_is_exp_of_the_mean_nll(checkpoint, text):
    decoder = Decoder(checkpoint)
    context, tokens = 16, 45                # 3 windows of 16 over 48 ids: 0, 16, 32
    quality = evaluate(decoder, text, context=context, tokens=tokens)
    nll, count, nbytes = 0.0, 0, 0
    for start in (0, 16, 32):
        window = text.ids[start:start + context].astype(np.int64)
        logp = log_softmax64(decoder.forward(window))[:-1]
        targets = window[1:]
        nll -= sum(logp[i, t] for i, t in enumerate(targets))
        count += len(targets)
        nbytes += utf8_bytes(targets)
    assert isinstance(quality, Quality)
    assert quality.tokens == count == 45
    assert quality.bytes == nbytes
    assert quality.nll == pytest.approx(nll / count, rel=1e-9)
    assert quality.perplexity == pytest.approx(math.exp(nll / count), rel=1e-9)
    assert quality.bits_per_byte == pytest.approx(nll / math.log(2) / nbytes, rel=1e-9)
    assert quality.perplexity > 1
    # no reference run: no agreement figures
    assert quality.top1 is None and quality.top5 is None and quality.cosine is None
    assert quality.max_error is None
    assert set(quality.to_dict()) == {"tokens", "bytes", "nll", "perplexity",
                                      "bits_per_byte", "top1", "top5", "cosine",
                                      "max_error"}


def test_the_tokenizer_decodes_the_targets_without_special_tokens(checkpoint):
    tokenizer = FakeTokenizer()
    ids = np.arange(1, 33, dtype=np.uint16)
    evaluate(Decoder(checkpoint), EvalText(ids, tokenizer), context=16, tokens=30)
    # two windows (0 and 16), each decodes its 15 targets
    assert tokenizer.calls == [list(range(2, 17)), list(range(18, 33))]


def test_a_reference_identical_to_the_run_agrees_fully(checkpoint, text):
    quality = evaluate(Decoder(checkpoint), text, reference=Decoder(checkpoint),
                       context=16, tokens=45)
    assert quality.top1 == 1.0 and quality.top5 == 1.0
    assert quality.cosine == pytest.approx(1.0, abs=1e-12)
    assert quality.max_error == 0.0


def test_agreement_figures_against_the_float_run(checkpoint, text):
    run, reference = Decoder(checkpoint), Decoder(checkpoint, activations=A_FLOAT)
    quality = evaluate(run, text, reference=reference, context=16, tokens=45)
    top1 = top5 = 0
    cosines = []
    worst = 0.0
    for start in (0, 16, 32):
        window = text.ids[start:start + 16].astype(np.int64)
        a = run.forward(window)[:-1].astype(np.float64)
        b = reference.forward(window)[:-1].astype(np.float64)
        best = b.argmax(axis=-1)
        top1 += int(np.sum(a.argmax(axis=-1) == best))
        five = np.argsort(-a, axis=-1, kind="stable")[:, :5]
        top5 += sum(int(best[i] in five[i]) for i in range(len(best)))
        cosines += [float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))
                    for x, y in zip(a, b)]
        worst = max(worst, float(np.abs(a - b).max()))
    assert quality.top1 == pytest.approx(top1 / 45)
    assert quality.max_error == worst > 0
    assert quality.top5 == pytest.approx(top5 / 45)
    assert quality.cosine == pytest.approx(np.mean(cosines), rel=1e-9)
    # int8 activations move the logits a little, not much
    assert quality.top1 <= quality.top5
    assert 0.5 < quality.top1 and 0.9 < quality.cosine < 1.0


def test_progress_is_told_of_every_window(checkpoint, text):
    seen = []
    evaluate(Decoder(checkpoint), text, context=16, tokens=45,
             progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_tokens_round_up_to_whole_windows(checkpoint, text):
    quality = evaluate(Decoder(checkpoint), text, context=16, tokens=16)
    assert quality.tokens == 30                 # 2 windows of 15 predictions


def test_evaluate_errors(checkpoint, text):
    decoder = Decoder(checkpoint)
    with pytest.raises(ValueError, match="context 257 is longer than the model's "
                                         r"max_position_embeddings \(256\)"):
        evaluate(decoder, text, context=257, tokens=10)
    with pytest.raises(ValueError, match="more than the 48 tokens"):
        evaluate(decoder, text, context=16, tokens=46)
    with pytest.raises(ValueError, match="fewer than one window"):
        evaluate(decoder, EvalText(text.ids[:10], FakeTokenizer()), context=16, tokens=5)


# --- load_eval_text -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_tokenizer(tmp_path_factory):
    """A tokenizer trained in no time (a two-file corpus), saved as tokenizer.json."""
    pytest.importorskip("tokenizers", reason="the tokenizers package is not installed")
    root = tmp_path_factory.mktemp("text")
    (root / "a.py").write_text("def f(x):\n    return x + 1\n" * 50)
    tokenizer = train_tokenizer(Corpus(root, {"train": ("a.py",), "validation": (),
                                              "test": ()}), 260)
    path = root / "tokenizer.json"
    tokenizer.save(str(path))
    return tokenizer, path


def _eval_folder(path, manifest, tokenizer_file=None):
    path.mkdir()
    (path / "corpus.json").write_text(json.dumps(manifest))
    if tokenizer_file is not None:
        (path / "tokenizer.json").write_bytes(tokenizer_file.read_bytes())
    return path


def test_load_eval_text(tmp_path, small_tokenizer):
    tokenizer, tokenizer_file = small_tokenizer
    corpus = load_corpus()
    folder = _eval_folder(tmp_path / "ok", corpus.manifest(), tokenizer_file)
    for split in ("test", "validation"):
        text = load_eval_text(folder, split)
        assert np.array_equal(text.ids, encode_split(corpus, split, tokenizer))
        assert text.tokenizer.token_to_id(EOT) == 0
    assert load_eval_text(folder).ids.size == load_eval_text(folder, "test").ids.size


def test_load_eval_text_needs_corpus_json(tmp_path):
    with pytest.raises(CorpusError, match="no corpus.json"):
        load_eval_text(tmp_path)


@pytest.mark.parametrize("content", ["{not json", "[]", '{"splits": {}}', '"text"'])
def test_load_eval_text_refuses_a_bad_manifest(tmp_path, content):
    (tmp_path / "corpus.json").write_text(content)
    with pytest.raises(CorpusError, match="not a corpus manifest"):
        load_eval_text(tmp_path)


def test_another_python_s_corpus_is_refused(tmp_path, small_tokenizer):
    manifest = load_corpus().manifest()
    manifest["python"] = "3.9.1"
    manifest["splits"]["test"]["sha256"] = "0" * 64
    folder = _eval_folder(tmp_path / "other", manifest, small_tokenizer[1])
    with pytest.raises(CorpusError) as error:
        load_eval_text(folder)
    message = str(error.value)
    assert "Python 3.9.1" in message and "test split" in message
    assert "\n" not in message
    # the validation split still matches: only the split asked for is checked
    assert load_eval_text(folder, "validation").ids.size > 0


def test_load_eval_text_needs_the_tokenizer(tmp_path):
    folder = _eval_folder(tmp_path / "no_tokenizer", load_corpus().manifest())
    with pytest.raises(CorpusError, match="tokenizer.json: no such file"):
        load_eval_text(folder)
