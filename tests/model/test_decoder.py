"""The BitNet b1.58 decoder of the golden model, on the tiny configuration."""

import numpy as np
import pytest

from decoder_reference import reference_layer

from ternary_accel.model.arith import matmul_int
from ternary_accel.model.config import TINY, BITNET_2B4T, ConfigError, ModelConfig
from ternary_accel.model.decoder import (Decoder, GoldenCore, apply_rope, generate, rms_norm,
                           rope_tables, rotate_half)
from ternary_accel.model.quant import (ACT_QUANT_PATHS, BITNET_CPP, FLOAT64, TORCH_FP32,
                         quantize_activations, quantize_activations_as)
from ternary_accel.model.shapes import TransformerShape
from ternary_accel.model.weights import MasterWeights, random_master_weights, tensor_name

PROMPT = [1, 5, 9, 200, 33]


@pytest.fixture(scope="module")
def weights():
    return MasterWeights(TINY, random_master_weights(TINY, seed=3))


def test_forward_shapes_and_cache(weights):
    decoder = Decoder(weights)
    cache = decoder.new_cache()
    logits = decoder.forward(PROMPT, cache)
    assert logits.shape == (len(PROMPT), TINY.vocab) and logits.dtype == np.float32
    assert cache.length == len(PROMPT) and len(cache.keys) == TINY.layers
    assert cache.keys[0].shape == (TINY.kv_heads, len(PROMPT), TINY.head_dim)
    decoder.forward([7], cache)
    assert cache.values[1].shape == (TINY.kv_heads, len(PROMPT) + 1, TINY.head_dim)


def test_kv_cache_decode_equals_recomputation(weights):
    """Prefill + one-token decode steps give bit-identical logits to one pass over the
    whole sequence."""
    decoder = Decoder(weights)
    run = generate(decoder, PROMPT, 6)
    assert run.logits.shape == (len(PROMPT) + 6, TINY.vocab)
    full = decoder.forward(PROMPT + run.generated_ids)
    assert np.array_equal(full, run.logits)
    # and prefilling in two chunks gives the same as well
    cache = decoder.new_cache()
    chunks = np.concatenate([decoder.forward(PROMPT[:2], cache),
                             decoder.forward(PROMPT[2:], cache)])
    assert np.array_equal(chunks, full[:len(PROMPT)])


def test_generation_is_deterministic_and_greedy(weights):
    seen = []
    a = generate(Decoder(weights), PROMPT, 5, on_token=seen.append)
    b = generate(Decoder(weights), PROMPT, 5)
    assert a.generated_ids == b.generated_ids == seen
    assert np.array_equal(a.logits, b.logits)
    # each generated token is the argmax of the row before it
    rows = a.logits[len(PROMPT) - 1:-1]
    assert [int(np.argmax(r)) for r in rows] == a.generated_ids


def test_stop_at_eos(weights):
    run = generate(Decoder(weights), PROMPT, 3)
    eos = run.generated_ids[0]
    config = ModelConfig(TINY.shape, rope_theta=TINY.rope_theta,
                         max_position_embeddings=64, eos_token_id=eos,
                         tie_word_embeddings=True)
    source = MasterWeights(config, random_master_weights(TINY, seed=3))
    stopped = generate(Decoder(source), PROMPT, 3, stop_at_eos=True)
    assert stopped.generated_ids == [eos]


def test_rms_norm_by_hand():
    # mean(3^2, 4^2) = 12.5; 1/sqrt(12.5) = 0.28284271
    out = rms_norm(np.array([[3.0, 4.0]]), np.array([1.0, 2.0]), 0.0)
    np.testing.assert_allclose(out, [[3 * 0.28284271, 2 * 4 * 0.28284271]], rtol=1e-6)
    assert out.dtype == np.float32
    # eps keeps an all-zero row finite
    assert np.array_equal(rms_norm(np.zeros((1, 4)), np.ones(4), 1e-5), np.zeros((1, 4)))


def test_rope_by_hand():
    # head_dim 4, theta 10000: inv_freq = [1, 10000^-0.5] = [1, 0.01]
    cos, sin = rope_tables(4, 10000.0, 3)
    angles = np.array([1.0, 0.01, 1.0, 0.01])
    np.testing.assert_allclose(cos[1], np.cos(angles), rtol=1e-6)
    np.testing.assert_allclose(sin[2], np.sin(2 * angles), rtol=1e-6)
    assert np.array_equal(cos[0], np.ones(4)) and np.array_equal(sin[0], np.zeros(4))
    x = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    assert np.array_equal(rotate_half(x), [-3.0, -4.0, 1.0, 2.0])
    got = apply_rope(x[None, None, :], cos[1:2], sin[1:2])[0, 0]
    c, s = np.cos(1.0), np.sin(1.0)
    c2, s2 = np.cos(0.01), np.sin(0.01)
    np.testing.assert_allclose(got, [1 * c - 3 * s, 2 * c2 - 4 * s2, 3 * c + 1 * s,
                                     4 * c2 + 2 * s2], rtol=1e-6)


def test_layer_against_independent_reference(weights):
    decoder = Decoder(weights)
    x = decoder.embed(PROMPT)
    got = decoder.layer_forward(0, x, decoder.new_cache())
    want = reference_layer(decoder, x.astype(np.float64), 0)
    # BitLinear inputs are re-quantized, so a float32/float64 difference can move an
    # activation by one step: compare loosely, but far tighter than the signal.
    np.testing.assert_allclose(got, want, rtol=0, atol=0.02 * np.abs(want).max())


def test_bit_linear_is_the_integer_core_rescaled(weights):
    decoder = Decoder(weights)
    proj = decoder.layer_weights(0).projections["up"]
    x = np.random.default_rng(0).normal(size=(3, TINY.hidden)).astype(np.float32)
    q = quantize_activations(x)
    want = matmul_int(proj.values, q.values) * (proj.scale / q.scale)[:, None]
    np.testing.assert_array_equal(decoder.bit_linear(x, proj, layer=0, name="up"),
                                  want.astype(np.float32))


def test_swapped_core_sees_every_bitlinear(weights):
    calls = []

    def core(w, x, *, layer, name):
        calls.append((layer, name, x.shape[0]))
        return GoldenCore()(w, x)

    golden = Decoder(weights).forward(PROMPT)
    assert np.array_equal(Decoder(weights, core=core).forward(PROMPT), golden)
    assert [c[:2] for c in calls] == [(layer, p) for layer in range(TINY.layers)
                                      for p in ("q", "k", "v", "o", "gate", "up", "down")]
    assert {c[2] for c in calls} == {len(PROMPT)}


def test_core_with_wrong_shape_is_an_error(weights):
    decoder = Decoder(weights, core=lambda w, x, **_: np.zeros((1, 1), dtype=np.int64))
    with pytest.raises(ValueError, match="core returned shape"):
        decoder.forward(PROMPT)


@pytest.mark.parametrize("ids, message", [([], "non-empty"), ([1, 256], "outside the vocab"),
                                          ([-1], "outside the vocab")])
def test_bad_token_ids(weights, ids, message):
    with pytest.raises(ValueError, match=message):
        Decoder(weights).forward(ids)


def test_bad_generation_arguments(weights):
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(Decoder(weights), PROMPT, 0)
    with pytest.raises(ValueError, match="act_quant"):
        Decoder(weights, act_quant="bf16")
    with pytest.raises(ValueError, match="max_position_embeddings"):
        Decoder(weights).forward(list(range(TINY.vocab)) + [0])


def test_quantizer_paths_by_hand():
    x = np.array([[0.5, -1.0, 0.25, 0.003], [0.0, 0.0, 0.0, 0.0]])
    for path in ACT_QUANT_PATHS:
        q = quantize_activations_as(x, path)
        assert q.values.dtype == np.int8
        assert np.array_equal(q.values[0], [64, -127, 32, 0])   # 63.5 -> 64, ties to even
        assert np.array_equal(q.values[1], [0, 0, 0, 0])      # all-zero token, eps floor
    torch = quantize_activations_as(x, TORCH_FP32).scale[0]
    assert torch == np.float32(np.float32(1) / np.float32(1.0)) * np.float32(127)
    cpp = quantize_activations_as(np.array([[3.0, 1.0]]), BITNET_CPP).scale[0]
    assert cpp == np.float32(127 / 3.0)
    assert quantize_activations_as(x, FLOAT64).scale[0] == 127.0
    with pytest.raises(ValueError, match="path"):
        quantize_activations_as(x, "bf16")


def test_quantizer_paths_differ_only_at_near_ties():
    x = np.random.default_rng(1).normal(size=(200, 2560)).astype(np.float32)
    base = quantize_activations_as(x, FLOAT64).values.astype(int)
    for path in (TORCH_FP32, BITNET_CPP):
        diff = quantize_activations_as(x, path).values.astype(int) - base
        assert np.abs(diff).max() <= 1
        assert np.count_nonzero(diff) <= 5     # about one in a million (docs/models.md)


def test_config_round_trip_and_errors():
    assert ModelConfig.from_dict(BITNET_2B4T.to_dict(), name="b1.58-2b4t") == BITNET_2B4T
    assert BITNET_2B4T.shape.projections() == \
        TransformerShape("x", 2560, 6912, 30, 20, kv_heads=5).projections()
    good = TINY.to_dict()
    for change, message in [({"model_type": "llama"}, "model_type"),
                            ({"hidden_act": "silu"}, "hidden_act"),
                            ({"num_attention_heads": 5}, "heads"),
                            ({"rms_norm_eps": -1.0}, "rms_norm_eps"),
                            ({"quantization_config": {"quant_method": "gptq"}},
                             "quant_method"),
                            ({"quantization_config": {"quant_method": "bitnet",
                                                      "quantization_mode": "dynamic"}},
                             "quantization_mode")]:
        with pytest.raises(ConfigError, match=message):
            ModelConfig.from_dict({**good, **change})
    bad = dict(good)
    del bad["vocab_size"]
    with pytest.raises(ConfigError, match="vocab_size"):
        ModelConfig.from_dict(bad)


def test_master_weights_need_every_tensor():
    tensors = random_master_weights(TINY)
    del tensors[tensor_name(1, "down")]
    with pytest.raises(ValueError, match="layers.1.mlp.down_proj"):
        MasterWeights(TINY, tensors)
