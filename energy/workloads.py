"""Operands of the gate-level energy measurements (:mod:`energy.gates`): the weights and
activations a matmul unit is fed, for the ternary unit and the int8-weight baseline, with
int8 and int4 activations.

=================  ======================================================================
name               what
=================  ======================================================================
``trained-qkv``    the shipped reference model b1.58 (:mod:`model.reference`): layer 1's
                   q_proj weights and its recorded int8 inputs on the model's test split
``trained-down``   the same model's layer 1 down_proj and its inputs (the squared-ReLU
                   outputs: most of them zero)
``2b4t``           synthetic tensors of BitNet b1.58 2B4T's widths (hidden 2560):
                   Gaussian weights and Gaussian activations, quantized as the model does
``uniform``        uniform random weights ({-1, 0, 1}; -128..127) and activations
``zero-weights``   all-zero weights, uniform activations (the weight corner)
``zero-acts``      uniform weights, all-zero activations (the activation corner)
``zeros-P``        ternary weights with a fraction P (0..1) of zeros, the rest +-1 at
                   random, on the trained-qkv activations (the zero-weight sweep)
=================  ======================================================================

Every workload carries both weight sets and both activation sets, derived from the same
tensors: the int8 weights of the baseline are the float weights quantized per row to
int8 (absmax), where there are float weights (the reference model's master layout, the
synthetic Gaussians), else uniform; the int4 activations are the same float inputs under
BitNet a4.8's INT4 absmean quantizer (:func:`model.quant.quantize_activations_int4`).
"""

from dataclasses import dataclass

import numpy as np

from ternary_accel.model.quant import (quantize_activations, quantize_activations_int4,
                                       quantize_weights_ternary)

__all__ = ["Workload", "WORKLOADS", "TRAINED_LAYER", "SWEEP_ZEROS", "make_workload",
           "zero_fraction_workload", "int8_rows"]

#: The reference model's layer the trained workloads take.
TRAINED_LAYER = 1
#: Zero-weight fractions of the default sweep.
SWEEP_ZEROS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: 2B4T's hidden width (BitNet b1.58 2B4T: hidden 2560, FFN 6912).
HIDDEN_2B4T = 2560

#: The named workloads and a line each.
WORKLOADS = {
    "trained-qkv": "reference model b1.58, layer 1 q_proj and its recorded inputs",
    "trained-down": "reference model b1.58, layer 1 down_proj and its recorded inputs",
    "2b4t": "synthetic Gaussian tensors of 2B4T's hidden width (2560)",
    "uniform": "uniform random weights and activations",
    "zero-weights": "all-zero weights, uniform activations",
    "zero-acts": "uniform weights, all-zero activations",
}


@dataclass
class Workload:
    """Operands of one measurement.

    Attributes
    ----------
    name, description : str
    ternary : numpy.ndarray, shape (N, D)
        Weights in {-1, 0, 1}.
    int8 : numpy.ndarray, shape (N, D)
        Weights in -128..127 for the int8-weight baseline.
    act8 : numpy.ndarray, shape (T, D)
        int8 activations.
    act4 : numpy.ndarray, shape (T, D)
        int4 activations (-8..7).
    """

    name: str
    description: str
    ternary: np.ndarray
    int8: np.ndarray
    act8: np.ndarray
    act4: np.ndarray

    @property
    def zero_weights(self):
        """Share of zero ternary weights."""
        return float(np.mean(self.ternary == 0))

    @property
    def zero_acts(self):
        """Share of zero int8 activations."""
        return float(np.mean(self.act8 == 0))

    def tiled(self, lanes, rows):
        """The workload cut to whole ``rows`` x ``lanes`` tiles (drops the remainder of
        the weight rows and of the input width)."""
        n = self.ternary.shape[0] // rows * rows
        d = self.ternary.shape[1] // lanes * lanes
        if n == 0 or d == 0:
            raise ValueError(f"workload {self.name}: {self.ternary.shape} weights hold no "
                             f"{rows} x {lanes} tile")
        return Workload(self.name, self.description, self.ternary[:n, :d],
                        self.int8[:n, :d], self.act8[:, :d], self.act4[:, :d])


def int8_rows(weights):
    """Float weights quantized to int8 per output row (absmax), the W8A8 baseline's."""
    w = np.asarray(weights, dtype=np.float64)
    scale = 127 / np.maximum(np.max(np.abs(w), axis=1, keepdims=True), 1e-12)
    return np.clip(np.rint(w * scale), -128, 127).astype(np.int64)


def _from_floats(name, weights, rows):
    return Workload(name, WORKLOADS.get(name, name),
                    quantize_weights_ternary(weights).values.astype(np.int64),
                    int8_rows(weights),
                    quantize_activations(rows).values.astype(np.int64),
                    quantize_activations_int4(rows).values.astype(np.int64))


_TRAINED_CACHE = {}


def _trained(projection, input_name, tokens):
    """Layer :data:`TRAINED_LAYER`'s ``projection`` of the shipped b1.58 model: master
    float weights, and ``tokens`` recorded inputs (full precision) of ``input_name``."""
    from ternary_accel.model.activations import checkpoint_activations
    from ternary_accel.model.checkpoint import load_checkpoint
    from ternary_accel.model.reference import reference_checkpoint
    from ternary_accel.model.weights import tensor_name
    if "record" not in _TRAINED_CACHE:
        _TRAINED_CACHE["record"] = checkpoint_activations(
            reference_checkpoint("b1.58"), windows=1, sample=max(tokens, 32))
    record = _TRAINED_CACHE["record"]
    master = load_checkpoint(reference_checkpoint("b1.58", "master"))
    weights = master.float_tensor(tensor_name(TRAINED_LAYER, projection))
    stats = record[TRAINED_LAYER, input_name]
    rows = np.asarray(stats.rows[-tokens:], dtype=np.float64)
    workload = _from_floats(f"trained-{'qkv' if input_name == 'qkv' else 'down'}",
                            weights, rows)
    # the ternary weights as the model stores them, the int8 inputs as the decoder
    # quantized them in the recorded run
    workload.ternary = master.projection(TRAINED_LAYER, projection).values.astype(np.int64)
    workload.act8 = np.asarray(stats.values[-tokens:], dtype=np.int64)
    return workload


def make_workload(name, *, seed=0, tokens=8, rows=64):
    """The operands of workload ``name`` (see the module docstring).

    Parameters
    ----------
    seed : int
        Random generator seed of the synthetic and random workloads.
    tokens : int
        Activation rows.
    rows : int
        Weight rows of the synthetic and random workloads.

    Raises
    ------
    ValueError
        On an unknown name.
    FileNotFoundError
        If the reference checkpoint is not installed (trained workloads).
    """
    rng = np.random.default_rng(seed)
    if name == "trained-qkv":
        return _trained("q", "qkv", tokens)
    if name == "trained-down":
        return _trained("down", "down", tokens)
    if name == "2b4t":
        return _from_floats(name, rng.standard_normal((rows, HIDDEN_2B4T)),
                            rng.standard_normal((tokens, HIDDEN_2B4T)))
    width = HIDDEN_2B4T // 10
    uniform = Workload(name, WORKLOADS.get(name, name),
                       rng.integers(-1, 2, (rows, width)), rng.integers(-128, 128, (rows, width)),
                       rng.integers(-128, 128, (tokens, width)),
                       rng.integers(-8, 8, (tokens, width)))
    if name == "uniform":
        return uniform
    if name == "zero-weights":
        uniform.ternary[:] = 0
        uniform.int8[:] = 0
        return uniform
    if name == "zero-acts":
        uniform.act8[:] = 0
        uniform.act4[:] = 0
        return uniform
    if name.startswith("zeros-"):
        return zero_fraction_workload(float(name[len("zeros-"):]), seed=seed, tokens=tokens)
    raise ValueError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}, zeros-P")


def zero_fraction_workload(fraction, *, seed=0, tokens=8):
    """Ternary weights with ``fraction`` zeros (exactly, rounded to whole weights), the
    rest +1 or -1 at random, on the trained-qkv activations; named ``zeros-P``."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"the zero fraction must be 0..1, not {fraction}")
    base = make_workload("trained-qkv", tokens=tokens)
    rng = np.random.default_rng(seed)
    n = base.ternary.size
    weights = rng.choice((-1, 1), size=n)
    weights[rng.permutation(n)[:round(fraction * n)]] = 0
    name = f"zeros-{fraction:g}"
    return Workload(name, f"ternary weights, {fraction:.0%} zeros, trained-qkv inputs",
                    weights.reshape(base.ternary.shape), base.int8, base.act8, base.act4)
