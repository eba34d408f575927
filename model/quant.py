"""Quantizers of BitLinear: absmean ternary / sign binary weights, absmax int8 activations.

Conventions (``shared/reference/bitlinear.md``):

* ``round`` is round-half-to-even (``numpy.rint``), as ``torch.round`` does.
* ``eps = 1e-5`` floors both scales so that an all-zero tensor or token never divides
  by zero.
* Activations are int8 for both weight modes (the original BitNet's Q_b = 128 is
  replaced by the int8 convention, as the reference page says).
"""

from dataclasses import dataclass

import numpy as np

__all__ = [
    "ACT_WIDTH", "ACT_MIN", "ACT_MAX", "ACT_QMAX", "EPS",
    "TERNARY", "BINARY", "WEIGHT_MODES", "INT8", "HW_WEIGHT_MODES",
    "QuantizedWeights", "QuantizedActivations",
    "quantize_weights_ternary", "quantize_weights_binary", "quantize_weights",
    "quantize_activations", "ACT_QUANT_PATHS", "FLOAT64", "TORCH_FP32", "BITNET_CPP",
]

#: Bits of one activation.
ACT_WIDTH = 8
ACT_MIN = -(1 << (ACT_WIDTH - 1))
ACT_MAX = (1 << (ACT_WIDTH - 1)) - 1
#: Absmax target of the activation quantizer (|x * s| <= 127).
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
#: Evaluation paths of the activation quantizer (``models.md``, "Reference numerics").
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
