"""BitLinear end to end: the float reference and the integer model of the accelerator."""

from dataclasses import dataclass

import numpy as np

from ternary_accel.model.arith import OUT_WIDTH, fixed_error_bound, matmul_int, round_fixed, scale_to_fixed
from ternary_accel.model.quant import TERNARY, quantize_activations, quantize_weights

__all__ = ["BitLinearResult", "bitlinear_reference", "bitlinear_fixed"]


@dataclass(frozen=True)
class BitLinearResult:
    """Every intermediate of one BitLinear evaluation.

    Attributes
    ----------
    weights, activations : numpy.ndarray
        Quantized integer weights (M, K) and int8 activations (T, K).
    beta : float
        Weight scale.
    act_scale : numpy.ndarray
        Per-token activation scale ``s`` (T,).
    acc : numpy.ndarray
        Exact integer accumulators (T, M).
    y : numpy.ndarray
        Float output ``acc / s * beta`` (T, M).
    """

    weights: np.ndarray
    activations: np.ndarray
    beta: float
    act_scale: np.ndarray
    acc: np.ndarray
    y: np.ndarray


def bitlinear_reference(weights, activations, mode=TERNARY):
    """Float BitLinear ``y = X W^T`` through the quantizers of ``mode``.

    Parameters
    ----------
    weights : array_like of float, shape (M, K)
    activations : array_like of float, shape (T, K)
    mode : str
        ``"ternary"`` (BitNet b1.58) or ``"binary"`` (BitNet).

    Returns
    -------
    BitLinearResult
    """
    qw = quantize_weights(weights, mode)
    x = np.asarray(activations)
    if x.ndim != 2:
        raise ValueError(f"activations must be 2-D (T, K), not shape {x.shape}")
    if x.shape[1] != qw.values.shape[1]:
        raise ValueError(
            f"activations have {x.shape[1]} features but weights have "
            f"{qw.values.shape[1]} columns")
    qx = quantize_activations(x)
    acc = matmul_int(qw.values, qx.values, mode)
    y = acc / qx.scale[:, None] * qw.beta
    return BitLinearResult(qw.values, qx.values, qw.beta, qx.scale, acc, y)


def bitlinear_fixed(result, frac_bits, out_width=OUT_WIDTH):
    """The hardware's fixed-point view of a :class:`BitLinearResult`.

    Returns
    -------
    dict
        ``scale`` and ``shift`` (per token, what the host hands the hardware),
        ``y_fixed`` (T, M) integers as the output stage produces them, and ``bound``
        (T, M), the documented bound on ``|y_fixed * 2**-frac_bits - y|``.
    """
    scale, shift = scale_to_fixed(result.beta / result.act_scale, frac_bits)
    y_fixed = round_fixed(result.acc, scale[:, None], shift[:, None], out_width)
    bound = fixed_error_bound(result.acc, shift[:, None], frac_bits)
    return {"scale": scale, "shift": shift, "y_fixed": y_fixed, "bound": bound}
