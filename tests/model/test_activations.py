"""Recording a model's activations per layer and BitLinear input (:mod:`model.activations`):
the recorder leaves the decoder's numbers alone, its counts are those of the inputs, its
sample is the core's own input, and a checkpoint is read on its corpus' test split."""

import json
from dataclasses import replace

import numpy as np
import pytest

from ternary_accel.model.activations import (ActivationRecorder, checkpoint_activations,
                                             checkpoint_label, record_activations,
                                             training_numerics)
from ternary_accel.model.checkpoint import load_checkpoint, make_tiny
from ternary_accel.model.config import TINY, ModelConfig
from ternary_accel.model.decoder import Decoder
from ternary_accel.model.quant import (quantize_activations, quantize_activations_int4,
                                       topk_count, topk_mask)
from ternary_accel.model.schemes import INPUTS, Q_SPARSE_RATIO

#: A hand-made token sequence of the tiny model (vocabulary 256).
TOKENS = [1, 17, 200, 5, 5, 99, 3, 128, 64, 250, 7, 31, 2, 88, 144, 9, 10, 11, 12, 13]

NUMERICS = [dict(activations="a8"), dict(activations="a4.8"),
            dict(activations="a8", topk=0.5), dict(activations="a8", block_topk=(16, 32))]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_checkpoint(make_tiny(tmp_path_factory.mktemp("tiny") / "ck", seed=5))


@pytest.mark.parametrize("options", NUMERICS, ids=lambda o: str(o))
def test_recording_leaves_the_logits_bit_identical(tiny, options):
    plain = Decoder(tiny, **options).forward(TOKENS)
    recorder = ActivationRecorder(tiny, **options)
    assert np.array_equal(recorder.forward(TOKENS), plain)
    assert recorder.record.windows == 1 and recorder.record.tokens == len(TOKENS)


@pytest.mark.parametrize("options", NUMERICS, ids=lambda o: str(o))
def test_counts_are_those_of_the_inputs(tiny, options):
    record = record_activations(tiny, [TOKENS], sample=len(TOKENS), **options)
    decoder = Decoder(tiny, **options)
    assert record.layers == TINY.layers
    assert set(record.stats) == {(l, n) for l in range(TINY.layers) for n in INPUTS}
    for (layer, name), stats in record.stats.items():
        first = INPUTS[name][0]
        rows = stats.rows
        width = TINY.hidden if name in ("qkv", "gate_up") else \
            TINY.ffn if name == "down" else TINY.heads * TINY.head_dim
        assert rows.shape == (len(TOKENS), width) and rows.dtype == np.float32
        assert stats.tokens == len(TOKENS) and stats.width == width
        # the sample is what the core received
        q = decoder.quantize_input(rows, first)
        assert np.array_equal(stats.values, q.values) and stats.values.dtype == np.int8
        assert np.array_equal(stats.scales, q.scale)
        assert stats.bits == decoder.act_bits(first)
        size = rows.size
        assert stats.counts["zeros"] == size - np.count_nonzero(q.values)
        assert stats.counts["exact_zeros"] == size - np.count_nonzero(rows)
        assert stats.counts["int8_zeros"] == \
            size - np.count_nonzero(quantize_activations(rows).values)
        assert stats.counts["int4_zeros"] == \
            size - np.count_nonzero(quantize_activations_int4(rows).values)
        k = topk_count(width, Q_SPARSE_RATIO)
        masked = np.where(topk_mask(rows, k), rows, np.float32(0))
        assert stats.counts["topk_zeros"] == \
            size - np.count_nonzero(quantize_activations(masked).values)
        assert stats.density == pytest.approx(1 - stats.zeros)
    for layer in range(TINY.layers):
        gate = record[layer, "gate_up"]
        down = record[layer, "down"]
        assert gate.gate_width == TINY.ffn
        # relu(gate)^2 = 0 makes the down input exactly 0 (the sub-norm keeps zeros)
        assert 0 < gate.counts["gate_zeros"] <= down.counts["exact_zeros"]
        assert record.share("gate_up", "gate_zeros", layer) == \
            gate.counts["gate_zeros"] / (len(TOKENS) * TINY.ffn)


def test_the_numerics_show_in_the_zero_shares(tiny):
    a8 = record_activations(tiny, [TOKENS])
    a48 = record_activations(tiny, [TOKENS], activations="a4.8")
    topk = record_activations(tiny, [TOKENS], topk=Q_SPARSE_RATIO)
    for layer in range(TINY.layers):
        assert a48.share("o", layer=layer) >= 0.5              # Top-K 50 % on o
        assert a48[layer, "qkv"].bits == 4 and a8[layer, "qkv"].bits == 8
        assert a48.share("qkv", layer=layer) == a48.share("qkv", "int4_zeros", layer)
        assert a8.share("qkv", layer=layer) == a8.share("qkv", "int8_zeros", layer)
        for name in INPUTS:
            assert topk.share(name, layer=layer) >= Q_SPARSE_RATIO - 1e-9
        # the run's own numerics do not move the layer-0 input statistics
        assert a48.share("qkv", "int8_zeros", 0) == a8.share("qkv", "int8_zeros", 0)
    density = a48.density()
    assert set(density) == set(INPUTS)
    assert density["o"] <= 0.5
    assert density["down"] == pytest.approx(
        1 - np.mean([a48.share("down", layer=l) for l in range(TINY.layers)]))


def test_the_sample_is_the_last_tokens(tiny):
    windows = [TOKENS, TOKENS[::-1]]
    whole = record_activations(tiny, windows, sample=2 * len(TOKENS))
    last = record_activations(tiny, windows, sample=5)
    assert whole.windows == last.windows == 2 and whole.tokens == 2 * len(TOKENS)
    for key, stats in last.stats.items():
        assert stats.rows.shape[0] == 5
        assert np.array_equal(stats.rows, whole[key].rows[-5:])
        assert np.array_equal(stats.values, whole[key].values[-5:])
        assert stats.counts == whole[key].counts


def test_labels_and_json(tiny):
    record = record_activations(tiny, [TOKENS], label="toy")
    assert record.layer_label(1) == "trained (toy, layer 1)"
    assert record.layer_label() == f"trained (toy, mean of {TINY.layers} layers)"
    data = json.loads(json.dumps(record.to_dict()))
    assert data["tokens"] == len(TOKENS) and len(data["inputs"]) == TINY.layers * len(INPUTS)
    assert data["inputs"][0]["input"] == "qkv" and "gate_zeros" in data["inputs"][2]
    with pytest.raises(KeyError, match="no record of input 'x'"):
        record[0, "x"]


def test_bad_options(tiny):
    with pytest.raises(ValueError, match="'float' has no quantizer"):
        ActivationRecorder(tiny, activations="float")
    with pytest.raises(ValueError, match="sample must be a positive"):
        ActivationRecorder(tiny, sample=0)
    with pytest.raises(ValueError, match="at least one window"):
        record_activations(tiny, [])


def test_training_numerics_and_label(tmp_path):
    assert training_numerics(tmp_path) == {"activations": "a8", "topk": None}
    assert checkpoint_label(tmp_path / "run" / "packed") == "run/packed"
    (tmp_path / "training.json").write_text(json.dumps({
        "variant": "q-sparse", "corpus": {"source": "Python standard library, Lib/*.py"},
        "run": {"activations": "a8", "topk": 0.6125}}))
    assert training_numerics(tmp_path) == {"activations": "a8", "topk": 0.6125}
    assert checkpoint_label(tmp_path) == "stdlib q-sparse"


# --- a checkpoint on its corpus (no torch: a tiny checkpoint, a tokenizer trained here) --

def corpus_checkpoint(folder, *, training=None):
    """A tiny random checkpoint with the files ``ternary-accel train`` writes beside it:
    a tokenizer of the corpus (260 tokens) and the corpus manifest."""
    pytest.importorskip("tokenizers")
    from ternary_accel.model.corpus import load_corpus, train_tokenizer, write_manifest
    config = ModelConfig(replace(TINY.shape, vocab=260), rope_theta=TINY.rope_theta,
                         rms_norm_eps=TINY.rms_norm_eps, max_position_embeddings=32,
                         tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)
    make_tiny(folder, config=config, seed=2)
    corpus = load_corpus()
    train_tokenizer(corpus, 260).save(str(folder / "tokenizer.json"))
    write_manifest(folder / "corpus.json", corpus.manifest())
    if training is not None:
        (folder / "training.json").write_text(json.dumps(training))
    return folder


@pytest.fixture(scope="module")
def on_corpus(tmp_path_factory):
    return corpus_checkpoint(tmp_path_factory.mktemp("corpus") / "ck", training={
        "variant": "a4.8", "corpus": {"source": "Python standard library, Lib/*.py"},
        "run": {"activations": "a4.8", "topk": None}})


def test_checkpoint_activations_on_the_test_split(on_corpus):
    from ternary_accel.model.evaluate import load_eval_text, window_starts
    record = checkpoint_activations(on_corpus, windows=3, sample=4)
    assert record.label == "stdlib a4.8" and record.source == str(on_corpus)
    assert record.numerics["activations"] == "a4.8"          # its training numerics
    assert record.windows == 3 and record.context == 32 and record.tokens == 96
    # the same windows through record_activations give the same record
    ids = np.asarray(load_eval_text(on_corpus).ids, dtype=np.int64)
    windows = [ids[s:s + 32] for s in window_starts(len(ids), 32, 3 * 31)]
    again = record_activations(load_checkpoint(on_corpus), windows, sample=4,
                               activations="a4.8")
    for key, stats in record.stats.items():
        assert stats.counts == again[key].counts
        assert np.array_equal(stats.rows, again[key].rows)
    # numerics given: another run of the same weights
    a8 = checkpoint_activations(on_corpus, windows=1, context=16, numerics={})
    assert a8.numerics["activations"] == "a8" and a8.context == 16
    with pytest.raises(ValueError, match="context must be 2..32"):
        checkpoint_activations(on_corpus, context=64)
    with pytest.raises(ValueError, match="windows must be a positive"):
        checkpoint_activations(on_corpus, windows=0)


def test_a_checkpoint_without_corpus_is_refused(tmp_path):
    make_tiny(tmp_path / "ck")
    with pytest.raises(ValueError, match="no corpus.json"):
        checkpoint_activations(tmp_path / "ck")
