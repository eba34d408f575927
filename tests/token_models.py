"""Models of the token core's tests (``tests/hw/test_rtl_token.py`` under amaranth.sim,
``tests/sim/test_token_session.py`` under Verilator)."""

from ternary_accel.model.config import ModelConfig
from ternary_accel.model.hwdecoder import HwDecoder
from ternary_accel.model.shapes import TransformerShape
from ternary_accel.model.weights import MasterWeights, random_master_weights

#: The smallest model the core takes: one layer, grouped-query heads, a 32-wide head.
MICRO = ModelConfig(TransformerShape("micro", 32, 64, 1, 2, kv_heads=1, vocab=48),
                    rope_theta=10000.0, rms_norm_eps=1e-5, max_position_embeddings=16,
                    tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
PROMPT = [1, 17, 40, 3]


def micro_decoder(numerics, seed=5):
    """:data:`MICRO` in hardware ``numerics`` with random weights of ``seed``."""
    return HwDecoder(MasterWeights(MICRO, random_master_weights(MICRO, seed=seed)),
                     numerics=numerics)
