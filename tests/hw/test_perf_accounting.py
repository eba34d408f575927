"""The accounting of a forward pass (model.accounting) and its energy (energy.system):
counts by hand on the tiny model, 2B4T's bytes per token from the 2B4T report's parameter
counts, and the counting run being the decoder's own run."""

import numpy as np
import pytest

from ternary_accel.energy.ops import op_energy
from ternary_accel.hw.perf.energy import fp16_reference, pass_energy
from ternary_accel.hw.perf.accounting import DRAM, Ledger, Precisions, account, batched
from ternary_accel.model.config import BITNET_2B4T, TINY, model_config
from ternary_accel.model.decoder import Decoder, KVCache
from ternary_accel.model.weights import MasterWeights, random_master_weights

# TINY: hidden 64, 4 heads of 16, 2 KV heads (kv width 32), FFN 128, 2 layers, vocab 256.
# On an engine of 16 lanes x 8 rows a beat holds 128 trits in ceil(128 / 5) = 26 bytes.
TILE = dict(lanes=16, rows=8)
# (out, in) of q, k, v, o, gate, up, down, and their beats per token: out/8 * in/16.
TINY_PROJECTIONS = [(64, 64), (32, 64), (32, 64), (64, 64), (128, 64), (128, 64), (64, 128)]
BEATS_PER_TOKEN = sum(o // 8 * i // 16 for o, i in TINY_PROJECTIONS)       # 288 a layer


def test_tiny_decode_step_by_hand():
    a = account(TINY, tokens=1, context=5, **TILE)
    ops, moved = a.ops(), a.bytes()
    adds_per_layer = sum(o * i for o, i in TINY_PROJECTIONS)                 # 36,864
    assert adds_per_layer == 36864
    assert ops[("int8", "add")] == 2 * adds_per_layer
    assert moved["ternary_weights"] == 2 * BEATS_PER_TOKEN * 26
    assert BEATS_PER_TOKEN * 26 == 7488
    # The query at position 5 reads 6 keys: 6 x 4 heads x 16 = 384 MACs a layer, twice
    # (scores and values), plus the LM head: 256 x 64.
    assert ops[("fp16", "mul")] == 2 * 2 * 384 + 256 * 64
    # KV cache: writes 1 x 2 x 32 bf16, reads the 5 cached positions.
    assert moved["kv_cache"] == 2 * (1 * 2 * 32 * 2 + 5 * 2 * 32 * 2)
    assert moved["head_weights"] == 256 * 64 * 2
    assert moved["embedding"] == 64 * 2
    # Norm weights: 3 of 64 and 1 of 128 a layer, the final 64; bf16.
    assert moved["norm_weights"] == 2 * (3 * 64 + 128) * 2 + 64 * 2
    # BitLinear rescale: one fp32 multiply per output.
    rescale = 2 * sum(o for o, _ in TINY_PROJECTIONS)
    # Vector fp32 multiplies: norms 3 a element; quantizer 1; RoPE 2 on q and k (6 heads
    # of 16); squared ReLU 2; softmax 2 per score (6 scores x 4 heads).
    norm_elems = 2 * (3 * 64 + 128) + 64
    quant_elems = 2 * sum(i for _, i in TINY_PROJECTIONS)
    vector_muls = 3 * norm_elems + quant_elems + 2 * 2 * 6 * 16 + 2 * 2 * 128 \
        + 2 * 2 * 6 * 4
    assert ops[("fp32", "mul")] == rescale + vector_muls
    assert a.by_kind()["bitlinear gate"].beats == 2 * (128 // 8) * (64 // 16)


def test_tiny_prefill_by_hand():
    a = account(TINY, tokens=3, context=0, **TILE)
    ops, moved = a.ops(), a.bytes()
    assert ops[("int8", "add")] == 3 * 2 * 36864
    assert moved["ternary_weights"] == 3 * 2 * 7488       # streamed once per token
    # Causal pairs 1 + 2 + 3 = 6; the LM head only for the last position.
    assert ops[("fp16", "mul")] == 2 * 2 * 6 * 4 * 16 + 256 * 64
    assert moved["kv_cache"] == 2 * 3 * 2 * 32 * 2         # writes only: nothing cached
    assert a.dram_bytes == sum(a.bytes(DRAM).values())


def test_2b4t_decode_bytes_at_context_0_from_the_parameter_counts():
    # the 2B4T report: 30 layers of 69,482,752 parameters, of which the norms are
    # 3 x 2560 + 6912; embedding 128256 x 2560 (= the tied LM head); KV 5 heads of 128.
    norms = 3 * 2560 + 6912
    trits = 30 * (69_482_752 - norms)
    assert trits % 512 == 0
    ternary = trits // 512 * 103          # the 16 x 32 engine: 512 trits in 103 bytes
    head = 328_335_360 * 2
    kv_writes = 30 * 2 * 5 * 128 * 2
    embedding_row = 2560 * 2
    norm_weights = (30 * norms + 2560) * 2
    a = account(BITNET_2B4T, tokens=1, context=0)
    moved = a.bytes(DRAM)
    assert moved == {"ternary_weights": ternary, "head_weights": head, "kv_cache": kv_writes,
                     "embedding": embedding_row, "norm_weights": norm_weights}
    assert a.dram_bytes == ternary + head + kv_writes + embedding_row + norm_weights
    assert 419e6 < ternary < 420e6 and head == 656_670_720


def test_the_counting_run_is_the_decoders_own_run():
    """The counting pass records exactly what a real decoder records on real weights."""
    real = Ledger()
    decoder = Decoder(MasterWeights(TINY, random_master_weights(TINY, seed=2)), ledger=real)
    cache = KVCache()
    decoder.forward([5, 9, 1, 7], cache)
    decoder.forward([3], cache)                            # one decode step at context 4
    counted = account(TINY, tokens=1, context=4, **TILE)
    step = real.records[-len(counted.costs):]
    assert [(c.kind, c.layer, c.name, c.sizes) for c in counted.costs] == \
        [(k, layer, name, sizes) for k, layer, name, sizes in step]


def test_logits_last_equals_the_last_row():
    decoder = Decoder(MasterWeights(TINY, random_master_weights(TINY, seed=2)))
    full = decoder.forward([5, 9, 1])
    last = decoder.forward([5, 9, 1], logits="last")
    assert last.shape == (1, TINY.vocab) and np.array_equal(full[-1:], last)
    with pytest.raises(ValueError, match="logits"):
        decoder.forward([5], logits="first")


def test_batched_shares_only_the_per_pass_weights():
    one = account(TINY, tokens=1, context=2, **TILE)
    four = batched(one, 4)
    assert four.tokens == 4
    for kind, n in one.bytes().items():
        shared = kind in ("head_weights", "norm_weights")
        assert four.bytes()[kind] == (n if shared else 4 * n), kind
    assert four.ops() == {k: 4 * v for k, v in one.ops().items()}
    with pytest.raises(ValueError, match="batch"):
        batched(one, 0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(tokens=0), "tokens"), (dict(context=-1), "context"),
    (dict(tokens=4096, context=1), "max_position_embeddings"),
    (dict(lanes=48), "lanes"),
])
def test_account_rejects(kwargs, message):
    with pytest.raises(ValueError, match=message):
        account(BITNET_2B4T if "lanes" not in kwargs else TINY, **kwargs)


def test_model_config_of_named_models():
    assert model_config("b1.58-2b4t") is BITNET_2B4T
    assert model_config("llama-7b").tie_word_embeddings is False
    with pytest.raises(ValueError, match="gated FFN"):
        model_config("bitnet-6.7b")
    with pytest.raises(ValueError, match="unknown model"):
        model_config("gpt-5")
    with pytest.raises(ValueError, match="bits"):
        Precisions(kv_bits=0)


def test_pass_energy_by_hand_and_the_fp16_reference():
    a = account(TINY, tokens=1, context=0, **TILE)
    e = pass_energy(a, node="7nm", dram_pj_per_bit=10.0, sram_pj_per_bit=0.5)
    arithmetic = sum(n * op_energy("7nm", p, "mul" if o == "special" else o)
                     for (p, o), n in a.ops().items()) * 1e-12
    assert e.arithmetic == pytest.approx(arithmetic)
    assert e.dram == pytest.approx(a.dram_bytes * 8 * 10.0e-12)
    assert e.per_token()["total"] == pytest.approx(e.total)
    ref = fp16_reference(a)
    assert ref.bytes()["ternary_weights"] == 2 * 36864 * 2      # two bytes a weight
    assert ref.ops()[("fp16", "mul")] == a.ops()[("fp16", "mul")] + 2 * 36864
    assert pass_energy(ref, node="7nm").total > pass_energy(a, node="7nm").total
    with pytest.raises(ValueError, match="non-negative"):
        pass_energy(a, dram_pj_per_bit=-1)
