"""Quantizers of BitLinear: absmean ternary / sign binary weights, absmax int8 activations.

Conventions (``docs/arithmetic.md``):

* ``round`` is round-half-to-even (``numpy.rint``), as ``torch.round`` does.
* ``eps = 1e-5`` floors both scales so that an all-zero tensor or token never divides
  by zero.
* Activations are int8 for both weight modes (the original BitNet's Q_b = 128 is
  replaced by the int8 convention, as the reference page says).

BitNet a4.8 and Q-Sparse (``docs/a48-qsparse.md``) add:

* :func:`quantize_activations_int4`, the a4.8 INT4 absmean quantizer, with the paper's
  ``beta + eps`` (eps = 1e-5: the paper gives none).
* INT8 absmax is this module's :func:`quantize_activations` everywhere, a4.8 included.
  a4.8 writes ``127 X / (gamma + eps)``; the project floors instead,
  ``127 X / max(gamma, eps)``. The two differ only in the scale's last digits (a
  relative 1e-5 / gamma) and, rarely, by one step at a near-tie; we keep one int8
  quantizer for the whole project.
* :func:`topk_mask` and :func:`block_topk_mask` (Q-Sparse Top-K and N:M Block Top-K,
  ties to the lower index), :func:`topk_count` (a sparsity ratio to K, exactly).
* :func:`quantize_kv` / :func:`dequantize_kv`, the a4.8 KV cache's unsigned absmax
  codes (3 or 4 bits; the formula is ours, the paper gives none).
"""

from dataclasses import dataclass
from fractions import Fraction
from numbers import Integral, Real

import numpy as np

__all__ = [
    "ACT_WIDTH", "ACT_MIN", "ACT_MAX", "ACT_QMAX", "EPS",
    "TERNARY", "BINARY", "WEIGHT_MODES", "INT8", "HW_WEIGHT_MODES",
    "QuantizedWeights", "QuantizedActivations",
    "quantize_weights_ternary", "quantize_weights_binary", "quantize_weights",
    "quantize_activations", "ACT_QUANT_PATHS", "FLOAT64", "TORCH_FP32", "BITNET_CPP",
    "INT4_MIN", "INT4_MAX", "INT4_QMAX", "quantize_activations_int4",
    "topk_count", "topk_mask", "block_topk_mask",
    "KV_BITS", "QuantizedKV", "quantize_kv", "dequantize_kv",
]

#: Bits of one activation.
ACT_WIDTH = 8
ACT_MIN = -(1 << (ACT_WIDTH - 1))
ACT_MAX = (1 << (ACT_WIDTH - 1)) - 1
#: Bits of an int4 activation (BitNet a4.8's q/k/v/gate/up inputs, -8..7).
INT4_WIDTH = 4
#: Activation widths the hardware datapath can be built for (``act_width``).
ACT_WIDTHS = (INT4_WIDTH, ACT_WIDTH)
#: Absmax target of the activation quantizer (``|x * s|`` <= 127).
ACT_QMAX = ACT_MAX
#: Floor of the weight and activation scales.
EPS = 1e-5

#: Weight mode of BitNet b1.58: weights in {-1, 0, +1}.
TERNARY = "ternary"
#: Weight mode of the original BitNet: weights in {-1, +1}.
BINARY = "binary"
WEIGHT_MODES = (TERNARY, BINARY)
#: int8 weights with real multipliers: the comparison baseline of the FPGA benchmark,
#: not a BitNet mode (no quantizer here; the datapath takes any int8 weight).
INT8 = "int8"
#: Every weight mode the hardware can be built with.
HW_WEIGHT_MODES = WEIGHT_MODES + (INT8,)


@dataclass(frozen=True)
class QuantizedWeights:
    """Integer weights and their per-tensor scale: ``W ~= values * beta``."""

    values: np.ndarray
    beta: float
    mode: str


@dataclass(frozen=True)
class QuantizedActivations:
    """int8 activations and their per-token scale: ``X ~= values / scale[:, None]``."""

    values: np.ndarray
    scale: np.ndarray


def _check_float_matrix(array, name, ndim):
    a = np.asarray(array)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{name} must be a real numeric array, not dtype {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, not shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} must not be empty (shape {a.shape})")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def quantize_weights_ternary(weights):
    """Absmean ternary quantizer of BitNet b1.58.

    ``beta = max(mean(|W|), eps)``, ``W_q = clip(rint(W / beta), -1, 1)``.

    Parameters
    ----------
    weights : array_like, shape (out_features, in_features)

    Returns
    -------
    QuantizedWeights
        ``values`` is ``int8`` in {-1, 0, +1}.
    """
    w = _check_float_matrix(weights, "weights", 2)
    beta = max(float(np.mean(np.abs(w))), EPS)
    values = np.clip(np.rint(w / beta), -1, 1).astype(np.int8)
    return QuantizedWeights(values, beta, TERNARY)


def quantize_weights_binary(weights):
    """Sign quantizer of the original BitNet.

    ``alpha = mean(W)``, ``W_b = +1 if W - alpha > 0 else -1``, ``beta = mean(|W|)``
    (floored at ``eps`` like the ternary scale, so an all-zero tensor is harmless).
    """
    w = _check_float_matrix(weights, "weights", 2)
    alpha = float(np.mean(w))
    values = np.where(w - alpha > 0, 1, -1).astype(np.int8)
    beta = max(float(np.mean(np.abs(w))), EPS)
    return QuantizedWeights(values, beta, BINARY)


def quantize_weights(weights, mode=TERNARY):
    """Quantize ``weights`` in ``mode`` (:data:`TERNARY` or :data:`BINARY`)."""
    if mode == TERNARY:
        return quantize_weights_ternary(weights)
    if mode == BINARY:
        return quantize_weights_binary(weights)
    raise ValueError(f"weight mode must be one of {WEIGHT_MODES}, not {mode!r}")


def quantize_activations(activations):
    """Per-token absmax int8 quantizer.

    ``s = 127 / max(max|x|, eps)`` per row, ``x_q = clip(rint(x * s), -128, 127)``.

    Parameters
    ----------
    activations : array_like, shape (tokens, features)

    Returns
    -------
    QuantizedActivations
        ``values`` is ``int8``; ``scale`` is ``float64`` of shape (tokens,).
    """
    x = _check_float_matrix(activations, "activations", 2)
    scale = ACT_QMAX / np.maximum(np.max(np.abs(x), axis=1), EPS)
    values = np.clip(np.rint(x * scale[:, None]), ACT_MIN, ACT_MAX).astype(np.int8)
    return QuantizedActivations(values, scale)


#: The project's quantizer: ``s`` and ``x * s`` in float64 (the default everywhere).
FLOAT64 = "float64"
#: PyTorch in float32 (transformers, microsoft/BitNet's fp32 path): ``127 / m`` is
#: evaluated as ``reciprocal(m) * 127``, two float32 roundings, then ``x * s`` in float32.
TORCH_FP32 = "torch-fp32"
#: bitnet.cpp: ``s = (float)(127 / (double)m)``, one rounding, then ``x * s`` in float32.
BITNET_CPP = "bitnet.cpp"
#: Evaluation paths of the activation quantizer (``docs/models.md``, "Reference numerics").
ACT_QUANT_PATHS = (FLOAT64, TORCH_FP32, BITNET_CPP)


def quantize_activations_as(activations, path=FLOAT64):
    """Per-token absmax int8 quantizer evaluated as a given runtime evaluates it.

    The rule is :func:`quantize_activations`'; only the floating-point type and the order
    of operations differ, which moves about one activation in a million by +-1 (at
    near-ties of ``x * s``). Rounding is half-to-even on every path.

    Parameters
    ----------
    activations : array_like, shape (tokens, features)
    path : str
        One of :data:`ACT_QUANT_PATHS`.

    Returns
    -------
    QuantizedActivations
        ``scale`` is float64 holding the path's ``s`` exactly (a float32 value on the
        float32 paths).
    """
    if path == FLOAT64:
        return quantize_activations(activations)
    if path not in ACT_QUANT_PATHS:
        raise ValueError(f"activation quantizer path must be one of {ACT_QUANT_PATHS}, "
                         f"not {path!r}")
    x = _check_float_matrix(activations, "activations", 2).astype(np.float32)
    peak = np.maximum(np.max(np.abs(x), axis=1), np.float32(EPS))
    if path == TORCH_FP32:
        scale = (np.float32(1) / peak) * np.float32(ACT_QMAX)
    else:
        scale = (ACT_QMAX / peak.astype(np.float64)).astype(np.float32)
    scaled = x * scale[:, None]                      # float32 product
    values = np.clip(np.rint(scaled), ACT_MIN, ACT_MAX).astype(np.int8)
    return QuantizedActivations(values, scale.astype(np.float64))


# -- BitNet a4.8 and Q-Sparse ------------------------------------------------------------

#: Range of an a4.8 INT4 activation (held in an int8 array).
INT4_MIN = -8
INT4_MAX = 7
#: The INT4 absmean target: ``sqrt(7) X / beta`` (a4.8, Eq. 2).
INT4_QMAX = float(np.sqrt(7.0))


def quantize_activations_int4(activations):
    """Per-token INT4 absmean quantizer of BitNet a4.8 (q/k/v and gate/up inputs).

    ``beta = mean|x|`` per row, ``scale = sqrt(7) / (beta + eps)``,
    ``x_q = clip(rint(x * scale), -8, 7)``.

    ``beta + eps`` is the paper's form (not the ``max(., eps)`` floor of
    :func:`quantize_activations`); the paper gives no eps, we use :data:`EPS` = 1e-5 as
    everywhere else. An all-zero token gives ``beta = 0``, ``scale = sqrt(7) / eps`` and
    all-zero values, never NaN. For Gaussian rows about 12 % of the values are 0.

    Parameters
    ----------
    activations : array_like, shape (tokens, features)

    Returns
    -------
    QuantizedActivations
        ``values`` is ``int8`` in -8..7; ``scale`` is ``float64`` of shape (tokens,), so
        ``X ~= values / scale[:, None]`` as for the int8 quantizer (dequantize with
        ``(beta + eps) / sqrt(7)``).

    Raises
    ------
    ValueError
        If ``activations`` is not a finite, non-empty, real 2-D array.
    """
    x = _check_float_matrix(activations, "activations", 2)
    scale = INT4_QMAX / (np.mean(np.abs(x), axis=1) + EPS)
    values = np.clip(np.rint(x * scale[:, None]), INT4_MIN, INT4_MAX).astype(np.int8)
    return QuantizedActivations(values, scale)


def _check_count(value, name, low, high):
    if isinstance(value, bool) or not isinstance(value, Integral) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in {low}..{high}, not {value!r}")
    return int(value)


def topk_count(width, ratio):
    """K of a Q-Sparse Top-K at sparsity ``ratio``: ``k = floor((1 - ratio) * width)``.

    This is the official code's ``int((1 - r) * D)``, evaluated exactly: a float
    ``ratio`` is read as the shortest decimal that prints as it (``0.9`` is 9/10, not
    0.900000000000000022...), so float error never moves K by one (``int((1 - 0.9) *
    10)`` is 0 in floating point, 1 here). A 50 % ratio keeps ``width // 2``.

    Parameters
    ----------
    width : int
        Features of a token, D >= 1.
    ratio : float or fractions.Fraction
        Fraction of the entries zeroed, 0 <= ratio < 1.

    Returns
    -------
    int
        K in 1..width when ``width * (1 - ratio) >= 1``; 0 is possible for a tiny width
        and a ratio close to 1.

    Raises
    ------
    ValueError
        On a non-positive width or a ratio outside [0, 1).
    """
    if isinstance(width, bool) or not isinstance(width, Integral) or width < 1:
        raise ValueError(f"width must be a positive integer, not {width!r}")
    if isinstance(ratio, bool) or not isinstance(ratio, Real) \
            or not np.isfinite(float(ratio)) or not 0 <= ratio < 1:
        raise ValueError(f"sparsity ratio must be a number in [0, 1), not {ratio!r}")
    exact = ratio if isinstance(ratio, Fraction) else Fraction(repr(float(ratio)))
    return int((1 - exact) * int(width))          # floor: the value is non-negative


def _magnitude_order(x):
    """Per row of ``x`` (..., n), the indices by decreasing ``|x|``, ties to the lower index
    (a stable sort of ``-|x|``)."""
    return np.argsort(-np.abs(x), axis=-1, kind="stable")


def topk_mask(activations, k):
    """Q-Sparse Top-K mask: per token, True at the ``k`` largest ``|x|``.

    Ties are broken towards the lower index: of equal magnitudes the earlier channels are
    kept (a stable sort on ``-|x|``), so the mask is deterministic and has exactly ``k``
    True entries per row.

    Parameters
    ----------
    activations : array_like, shape (tokens, features)
        Full-precision activations (the mask is taken before quantization).
    k : int
        Entries kept per token, 0..features.

    Returns
    -------
    numpy.ndarray of bool, shape (tokens, features)

    Raises
    ------
    ValueError
        On a bad array or ``k`` outside 0..features.
    """
    x = _check_float_matrix(activations, "activations", 2)
    k = _check_count(k, "k", 0, x.shape[1])
    mask = np.zeros(x.shape, dtype=bool)
    np.put_along_axis(mask, _magnitude_order(x)[:, :k], True, axis=1)
    return mask


def block_topk_mask(activations, n, m):
    """Block Q-Sparse N:M mask: in every block of ``m`` consecutive channels of a token,
    True at the ``n`` largest ``|x|`` (ties to the lower index, as :func:`topk_mask`).

    Parameters
    ----------
    activations : array_like, shape (tokens, features)
        ``features`` must be a multiple of ``m``.
    n, m : int
        ``0 < n <= m`` (16:32 is Q-Sparse's 50 %).

    Returns
    -------
    numpy.ndarray of bool, shape (tokens, features)
        Exactly ``n`` True entries in each block.

    Raises
    ------
    ValueError
        On a bad array, an invalid N:M, or features not a multiple of ``m``.
    """
    x = _check_float_matrix(activations, "activations", 2)
    if isinstance(m, bool) or not isinstance(m, Integral) or m < 1:
        raise ValueError(f"block size m must be a positive integer, not {m!r}")
    n = _check_count(n, "n of N:M", 1, int(m))
    tokens, features = x.shape
    if features % m:
        raise ValueError(f"features ({features}) must be a multiple of the block size "
                         f"m = {m}")
    blocks = x.reshape(tokens, features // m, m)
    mask = np.zeros(blocks.shape, dtype=bool)
    np.put_along_axis(mask, _magnitude_order(blocks)[..., :n], True, axis=2)
    return mask.reshape(tokens, features)


#: KV cache widths of BitNet a4.8.
KV_BITS = (3, 4)


@dataclass(frozen=True)
class QuantizedKV:
    """Unsigned KV codes and their scales: ``x ~= (codes - zero_point) * scale[..., None]``.

    Attributes
    ----------
    codes : numpy.ndarray of uint8, shape (..., head_dim)
        In ``1 .. 2**bits - 1`` (code 0 is never produced: the grid is symmetric).
    scale : numpy.ndarray of float32, shape (...)
        One per vector (per head and position).
    bits : int
    """

    codes: np.ndarray
    scale: np.ndarray
    bits: int

    @property
    def zero_point(self):
        return 1 << (self.bits - 1)


def quantize_kv(x, bits):
    """Unsigned absmax quantizer of the a4.8 KV cache (keys after RoPE, values).

    The paper says only "directly quantized to unsigned integers using absmax". Our
    choices:

    * Granularity: one scale per vector of the last axis, i.e. per (head, position) of a
      (heads, positions, head_dim) cache, so a new position never rescales the old ones.
    * A symmetric grid with the zero point in the middle: ``z = 2**(bits-1)``,
      ``qmax = 2**(bits-1) - 1`` (7 for 4 bits, 3 for 3 bits),
      ``s = max(max|x|, eps) / qmax`` rounded to float32 (the stored scale),
      ``code = clip(rint(x / s) + z, 0, 2**bits - 1)``. 0 is exact (code ``z``), the
      grid is symmetric (codes 1 .. 2**bits - 1), the largest ``|x|`` is exact up to the
      scale's rounding, and code 0 is unused. Rounding half to even.

    Parameters
    ----------
    x : array_like, shape (..., head_dim)
    bits : int
        3 or 4 (:data:`KV_BITS`).

    Returns
    -------
    QuantizedKV

    Raises
    ------
    ValueError
        On ``bits`` not in :data:`KV_BITS` or a non-finite, empty or 0-D array.
    """
    if isinstance(bits, bool) or bits not in KV_BITS:
        raise ValueError(f"KV bits must be one of {KV_BITS}, not {bits!r}")
    a = np.asarray(x)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"KV values must be a real numeric array, not dtype {a.dtype}")
    if a.ndim < 1 or a.size == 0:
        raise ValueError(f"KV values must be a non-empty array with a last axis, not "
                         f"shape {a.shape}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError("KV values contain NaN or inf")
    zero, qmax = 1 << (bits - 1), (1 << (bits - 1)) - 1
    scale = (np.maximum(np.max(np.abs(a), axis=-1), EPS) / qmax).astype(np.float32)
    steps = np.rint(a / scale.astype(np.float64)[..., None])
    codes = np.clip(steps + zero, 0, (1 << bits) - 1).astype(np.uint8)
    return QuantizedKV(codes, scale, bits)


def dequantize_kv(quantized):
    """``(codes - zero_point) * scale`` in float32 (exact: at most 4-bit integers times
    a float32 scale)."""
    steps = quantized.codes.astype(np.float32) - np.float32(quantized.zero_point)
    return steps * quantized.scale[..., None]
