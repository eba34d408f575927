"""The decoder in hardware numerics (model.hwdecoder): deterministic, the KV cache equal to
recomputation, close to the float decoder, clear errors on what its formats cannot hold."""

import numpy as np
import pytest

from ternary_accel.model.checkpoint import load_checkpoint
from ternary_accel.model.config import TINY
from ternary_accel.model.decoder import Decoder, generate
from ternary_accel.model.hwdecoder import HwDecoder, head_matrix, make_decoder
from ternary_accel.model import hwnum as H
from ternary_accel.model.reference import reference_checkpoint
from ternary_accel.model.weights import MasterWeights, random_master_weights

PROMPT = [1, 5, 9, 200, 33, 7, 7, 100]


@pytest.fixture(scope="module")
def weights():
    return MasterWeights(TINY, random_master_weights(TINY, seed=3))


def _cosine(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.sum(a * b, axis=-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_deterministic_and_cache_equals_recomputation(weights):
    decoder = HwDecoder(weights)
    full = decoder.forward(PROMPT)
    assert np.array_equal(full, HwDecoder(weights).forward(PROMPT))
    cache = decoder.new_cache()
    rows = [decoder.forward(PROMPT[:3], cache)]
    rows += [decoder.forward([t], cache) for t in PROMPT[3:]]
    assert np.array_equal(np.concatenate(rows), full)
    # the logits are the head's integers over 2**resid_frac
    ints = full.astype(np.float64) * decoder.numerics.one
    assert np.array_equal(ints, np.rint(ints))


@pytest.mark.parametrize("options", [{}, {"activations": "a4.8"}, {"kv_bits": 3},
                                     {"topk": 0.5}, {"block_topk": (8, 16)}])
def test_close_to_the_float_decoder(weights, options):
    float_logits = Decoder(weights, **options).forward(PROMPT)
    decoder = HwDecoder(weights, **options)
    logits = decoder.forward(PROMPT)
    # INT4 codes and Top-K masks make a random model chaotic: the float a4.8 decoder
    # itself, its embedding perturbed by 1e-4 (relative, random), moves to a cosine of
    # 0.990; the trained models are measured below.
    floor = 0.999 if not options or "kv_bits" in options else 0.97
    assert _cosine(logits, float_logits).min() > floor
    assert decoder.saturations.total == 0


def test_wide_widths_converge_to_float(weights):
    float_logits = Decoder(weights).forward(PROMPT)
    default = _cosine(HwDecoder(weights).forward(PROMPT), float_logits).mean()
    wide = _cosine(HwDecoder(weights, numerics=H.WIDE).forward(PROMPT), float_logits).mean()
    assert wide > default > 0.999


def test_generate_and_make_decoder(weights):
    decoder = make_decoder(weights, numerics="hw")
    out = generate(decoder, PROMPT[:4], 3)
    assert len(out.generated_ids) == 3
    assert type(make_decoder(weights)) is Decoder
    with pytest.raises(ValueError, match="numerics"):
        make_decoder(weights, numerics="fp8")
    with pytest.raises(ValueError, match="activations"):
        HwDecoder(weights, activations="float")
    with pytest.raises(ValueError, match="act_quant"):
        HwDecoder(weights, act_quant="torch-fp32")


def test_format_too_narrow_is_an_error(weights):
    # an embedding larger than the residual format can hold
    narrow = H.DEFAULT.replace(resid_bits=8, resid_frac=6)
    decoder = HwDecoder(weights, numerics=narrow)
    scale = np.abs(decoder.embedding).max()
    decoder._embedding = decoder.embedding * (4.0 / scale)
    with pytest.raises(H.NumericsError, match="embedding: value .* does not fit"):
        decoder.forward(PROMPT)


def test_saturation_is_counted(weights):
    narrow = H.DEFAULT.replace(resid_bits=12, resid_frac=8)
    decoder = HwDecoder(weights, numerics=narrow)
    decoder.forward(PROMPT)
    assert decoder.saturations.total > 0 and "saturat" not in str(decoder.saturations)


def test_trit5_head_is_five_ternary_passes(weights):
    numerics = H.DEFAULT.replace(head="trit5")
    rows, mant, exp = head_matrix(weights.embedding(), numerics)
    assert np.abs(rows).max() == H.TRIT5_MAX
    x = np.random.default_rng(0).integers(-127, 128, (3, rows.shape[1]))
    digits = H.head_trits(rows)                       # (5, vocab, hidden) ternary
    passes = sum(3 ** k * (x @ digits[k].astype(np.int64).T) for k in range(5))
    assert np.array_equal(passes, x @ rows.astype(np.int64).T)
    decoder = HwDecoder(weights, numerics=numerics)
    assert _cosine(decoder.forward(PROMPT), Decoder(weights).forward(PROMPT)).min() > 0.999


@pytest.mark.slow
@pytest.mark.parametrize("model,activations", [("b1.58", "a8"), ("a4.8", "a4.8")])
def test_reference_models_meet_the_targets(model, activations):
    """The shipped reference models, 255 test tokens: cosine and perplexity against the
    float decoder on the same ternary weights (docs/numerics.md has 4080 tokens)."""
    from ternary_accel.model.evaluate import evaluate, load_eval_text
    folder = reference_checkpoint(model, "packed")
    checkpoint = load_checkpoint(folder)
    text = load_eval_text(folder)
    ref = Decoder(checkpoint, activations=activations)
    base = evaluate(ref, text, tokens=255)
    hw = HwDecoder(checkpoint, activations=activations)
    quality = evaluate(hw, text, reference=ref, tokens=255)
    # a8 meets the issue's targets; a4.8's INT4 codes and Top-K flip under any change
    # (at the WIDE widths too: cosine 0.9998), docs/numerics.md
    cosine, top1 = (0.9999, 0.97) if activations == "a8" else (0.999, 0.93)
    assert quality.cosine >= cosine
    assert abs(quality.perplexity / base.perplexity - 1) < 0.01
    assert quality.top1 >= top1          # 255 tokens: 99 % over 4080 in the docs
    assert hw.saturations.total == 0
