"""Workloads on the layer engine's RTL, checked or served to the golden model: one
BitLinear compared word for word with :func:`ternary_accel.model.bitlinear.bitlinear_fixed`
(:func:`run_layer`), and the integer core of :class:`ternary_accel.model.decoder.Decoder`
(:class:`EngineCore`), dense or through the sparse dataflow."""

from dataclasses import dataclass, field

import numpy as np

from ternary_accel.model.bitlinear import bitlinear_fixed

from ternary_accel.sim.build import MEMORY_BENCH
from ternary_accel.sim.session import EngineSession

__all__ = ["EngineCore", "LayerRun", "run_layer"]


@dataclass
class EngineCore:
    """The integer core of :class:`model.decoder.Decoder` on the RTL: every BitLinear
    runs on an :class:`EngineSession` built without the output stage, which returns the
    exact accumulators; on an engine with ``weight_order="columns"`` through the sparse
    dataflow (:func:`sim.sparse.run_sparse`: only each token's nonzero activations and
    their weight columns; ``kept`` in the call records).

    Attributes
    ----------
    session : EngineSession
    calls : list of dict
        One record per BitLinear: layer, projection, tokens, cycles, predicted cycles,
        wall seconds, seconds of simulation.
    """

    session: EngineSession
    calls: list = field(default_factory=list)
    name = "rtl"

    def __post_init__(self):
        if self.session.config.output_stage:
            raise ValueError("the decoder's core needs raw accumulators: an EngineParams "
                             "with output_stage=False")

    def __call__(self, weights, activations, *, layer=None, name=None):
        sparse = self.session.config.weight_order == "columns"
        if sparse:       # the sparse dataflow (sim.sparse): only the nonzero activations
            from ternary_accel.sim.sparse import run_sparse
            result = run_sparse(self.session, weights, activations)
        else:
            result = self.session.run(weights, activations)
        if result.error:
            raise RuntimeError(f"engine error flags {result.error:#x} on {name} of "
                               f"layer {layer}")
        self.calls.append({"layer": layer, "name": name, "tokens": len(activations),
                           "cycles": result.cycles, "predicted": result.predicted,
                           "wall_seconds": result.wall_seconds,
                           "simulate_seconds": result.timing.get("simulate", 0.0),
                           **({"kept": sum(result.mapping.kept)} if sparse else {})})
        return result.outputs


@dataclass
class LayerRun:
    """Outcome of one layer through the RTL, checked against the golden model."""

    name: str
    out_features: int
    in_features: int
    tokens: int
    cycles: int
    predicted: int
    exact: bool
    wall_seconds: float
    build_seconds: float
    mismatches: int
    error: int = 0
    timing: dict = field(default_factory=dict)

    @property
    def macs(self):
        return self.out_features * self.in_features * self.tokens

    @property
    def cycles_per_second(self):
        return self.cycles / self.wall_seconds if self.wall_seconds else float("nan")


def run_layer(name, result, config, *, frac_bits, idle=0.0, backpressure=0.0, seed=1,
              session=None, build_root=None, bench=MEMORY_BENCH, waves=False):
    """Run a :class:`model.bitlinear.BitLinearResult` through the engine (on ``session``,
    else a session of its own) and compare every output with
    :func:`model.bitlinear.bitlinear_fixed`. ``waves`` records the session's waveforms
    (:class:`~ternary_accel.sim.session.EngineSession`) when it makes its own.

    Returns
    -------
    LayerRun
    """
    fixed = bitlinear_fixed(result, frac_bits)
    own = session is None
    if own:
        session = EngineSession(config, build_root=build_root, idle=idle,
                                backpressure=backpressure, seed=seed, bench=bench,
                                waves=waves)
    try:
        session.start()
        run = session.run(result.weights, result.activations, fixed["scale"],
                          fixed["shift"])
    finally:
        if own:
            session.close()
    mismatches = int(np.sum(run.outputs != fixed["y_fixed"]))
    n_out, n_in = result.weights.shape
    return LayerRun(name, n_out, n_in, len(result.activations), run.cycles, run.predicted,
                    mismatches == 0 and run.error == 0, run.wall_seconds,
                    session.build_seconds, mismatches, run.error, run.timing)
