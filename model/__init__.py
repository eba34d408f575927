"""NumPy golden model of BitLinear: the single source of truth for every number the
hardware produces (quantizers, encodings, exact integer matmul, fixed-point output)."""

from ternary_accel.model.arith import (OUT_WIDTH, SCALE_WIDTH, SHIFT_MAX, SHIFT_WIDTH, acc_width,
                    fixed_error_bound, matmul_int, round_fixed, scale_to_fixed, wrap_signed)
from ternary_accel.model.bitlinear import BitLinearResult, bitlinear_fixed, bitlinear_reference
from ternary_accel.model.encoding import (CODE_INVALID, CODE_NEG, CODE_POS, CODE_ZERO, TRITS_PER_BYTE,
                       code_width, decode_binary_codes, decode_lane_codes,
                       encode_binary_codes, encode_lane_codes, pack_trits, unpack_trits)
from ternary_accel.model.quant import (ACT_MAX, ACT_MIN, ACT_WIDTH, BINARY, TERNARY, WEIGHT_MODES,
                    quantize_activations, quantize_weights)
from ternary_accel.model.config import BITNET_2B4T, TINY, ConfigError, ModelConfig
from ternary_accel.model.decoder import Decoder, GoldenCore, generate
from ternary_accel.model.weights import LayerWeights, MasterWeights, TernaryProjection
