"""A trained model's activations, recorded per layer and per BitLinear input: what the
a4.8, Q-Sparse and sparse-dataflow benches take instead of (beside) their synthetic
distributions (``docs/a48-qsparse.md``, "Trained-model activations").

:class:`ActivationRecorder` is a :class:`model.decoder.Decoder` that watches every
BitLinear input as the decoder computes it; nothing of the decoder's numerics changes
(it overrides :meth:`~model.decoder.Decoder.bit_linear` to look at the input, calls the
decoder's own method, and looks at the gate's output; its logits are bit-identical to a
plain decoder's). An input is one quantizer's input, named as in
:data:`model.schemes.INPUTS`: ``"qkv"`` (q, k and v read one), ``"o"``, ``"gate_up"``
(gate and up read one) and ``"down"``; each is recorded once per layer and forward pass,
at its first projection (q, o, gate, down).

Per layer and input (:class:`InputStats`), counted over every token of every window:

* ``zeros``: the zero share of the quantized values the integer core received, under
  the run's own numerics (a8, a4.8, a Q-Sparse mask: the decoder's
  :meth:`~model.decoder.Decoder.quantize_input`); ``density = 1 - zeros`` is the kept
  fraction :mod:`model.schemes` charges and the share of columns the sparse dataflow
  (:mod:`model.sparse`, ``"nonzero"`` schedule) fetches;
* ``exact_zeros``: entries of the full-precision input that are exactly 0 (at ``down``
  the squared-ReLU zeros, where the gate is not positive; elsewhere about none);
* ``int8_zeros``, ``int4_zeros``: the zero share of the unmasked input under int8
  absmax (the run's ``act_quant`` path) and under INT4 absmean, whatever the run used;
* ``topk_zeros``: under Q-Sparse Top-K at ``topk_ratio`` (default the paper's 0.6125)
  then int8 absmax: at least the ratio, more where kept entries round to 0;
* ``gate_zeros`` (``gate_up`` only): the gate outputs whose ``relu(gate)^2`` is 0, a4.8's
  "67.5 %" statistic (the up outputs gate-first skips);
* a bounded sample of real rows: the last ``sample`` tokens seen (those of the last
  window, at its latest positions): ``rows`` the full-precision input (T, D) float32
  *before* any mask, ``values`` and ``scales`` what the run's quantizer made of them
  (int8 values, -8..7 for INT4, and the per-token scale). ``values`` is exactly the
  integer core's input for those tokens, so a bench that runs them through the RTL is
  checked against the decoder's own numbers.

:func:`checkpoint_activations` runs a checkpoint over a few evenly spaced windows of its
corpus' test split (:func:`model.evaluate.load_eval_text`, :func:`model.evaluate.window_starts`),
each a forward pass from position 0, under the numerics it was trained with
(``training.json``) unless told otherwise; :func:`record_activations` does the same on
any weights and token windows.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ternary_accel.model.decoder import A4_8, A8, A_FLOAT, Decoder
from ternary_accel.model.quant import (FLOAT64, quantize_activations_as,
                                       quantize_activations_int4, topk_count, topk_mask)
from ternary_accel.model.schemes import INPUTS, Q_SPARSE_RATIO

__all__ = ["InputStats", "ActivationRecord", "ActivationRecorder", "record_activations",
           "checkpoint_activations", "training_numerics", "checkpoint_label",
           "FIRST_PROJECTION", "DEFAULT_SAMPLE", "DEFAULT_WINDOWS"]

#: The projection at which each input is recorded (the first that reads it).
FIRST_PROJECTION = {group[0]: name for name, group in INPUTS.items()}
#: Rows kept per layer and input by default.
DEFAULT_SAMPLE = 32
#: Windows of the test split run by default.
DEFAULT_WINDOWS = 2


@dataclass
class InputStats:
    """One BitLinear input of one layer: counts over every token seen, and the last
    ``sample`` rows (see the module docstring).

    Attributes
    ----------
    layer : int
    input : str
        ``"qkv"``, ``"o"``, ``"gate_up"`` or ``"down"``.
    width : int
        Columns of the input (the projections' ``in_features``).
    bits : int
        Width of the run's quantizer for this input (4 or 8).
    tokens : int
        Tokens seen.
    counts : dict
        Zero counts by statistic (``zeros``, ``exact_zeros``, ``int8_zeros``,
        ``int4_zeros``, ``topk_zeros``, each over ``tokens * width`` entries;
        ``gate_zeros`` for ``gate_up``, over ``tokens * gate_width``).
    gate_width : int
        Outputs of the gate (``gate_up`` only; 0 elsewhere).
    rows, values, scales : numpy.ndarray
        The sample: (N, width) float32, (N, width) int8, (N,) float64.
    """

    layer: int
    input: str
    width: int
    bits: int
    tokens: int = 0
    counts: dict = field(default_factory=dict)
    gate_width: int = 0
    rows: np.ndarray = None
    values: np.ndarray = None
    scales: np.ndarray = None

    def share(self, statistic="zeros"):
        """The zero share of ``statistic`` (a key of :attr:`counts`)."""
        if statistic not in self.counts:
            raise ValueError(f"no statistic {statistic!r} for input {self.input} "
                             f"(recorded: {', '.join(self.counts)})")
        width = self.gate_width if statistic == "gate_zeros" else self.width
        return self.counts[statistic] / (self.tokens * width) if self.tokens else 0.0

    @property
    def zeros(self):
        return self.share("zeros")

    @property
    def density(self):
        """Kept fraction of the input under the run's numerics: ``1 - zeros``."""
        return 1.0 - self.zeros

    def to_dict(self):
        out = {"layer": self.layer, "input": self.input, "width": self.width,
               "bits": self.bits, "tokens": self.tokens, "density": self.density}
        out.update({name: self.share(name) for name in self.counts})
        return out


@dataclass
class ActivationRecord:
    """Every layer's :class:`InputStats` of one run.

    Attributes
    ----------
    label : str
        What the activations are of (``"stdlib b1.58"``).
    numerics : dict
        The decoder options of the run (``activations``, ``topk``, ``block_topk``,
        ``act_quant``).
    layers : int
    windows : int
        Forward passes.
    context : int
        Tokens of the longest window.
    topk_ratio : float
        The ratio of the ``topk_zeros`` statistic.
    stats : dict
        ``{(layer, input): InputStats}``.
    source : str, optional
        The checkpoint folder.
    """

    label: str
    numerics: dict
    layers: int
    windows: int = 0
    context: int = 0
    topk_ratio: float = Q_SPARSE_RATIO
    stats: dict = field(default_factory=dict)
    source: str = None

    def __getitem__(self, key):
        layer, name = key
        if (layer, name) not in self.stats:
            raise KeyError(f"no record of input {name!r} of layer {layer} (inputs "
                           f"{', '.join(INPUTS)}, layers 0..{self.layers - 1})")
        return self.stats[layer, name]

    @property
    def tokens(self):
        """Tokens seen (every layer and input sees them all)."""
        return self.stats[0, "qkv"].tokens if self.stats else 0

    def share(self, name, statistic="zeros", layer=None):
        """Zero share of input ``name`` by ``statistic``, of one layer or (None) over
        every layer (the layers have the same widths and tokens: their mean)."""
        layers = range(self.layers) if layer is None else (layer,)
        return float(np.mean([self[l, name].share(statistic) for l in layers]))

    def density(self, layer=None):
        """Kept fraction of each input under the run's numerics, ``{input: fraction}``
        over :data:`model.schemes.INPUTS` (one layer, or the mean of every layer): what
        :meth:`model.schemes.ActivationScheme.with_density` takes."""
        return {name: 1.0 - self.share(name, "zeros", layer) for name in INPUTS}

    def layer_label(self, layer=None):
        """``"trained (stdlib b1.58, layer 2)"``, or for the mean of every layer
        ``"trained (stdlib b1.58, mean of 4 layers)"``."""
        where = f"layer {layer}" if layer is not None else \
            f"mean of {self.layers} layer{'s' if self.layers != 1 else ''}"
        return f"trained ({self.label}, {where})"

    def to_dict(self):
        """The figures without the sampled rows (JSON-ready)."""
        return {"label": self.label, "source": self.source, "numerics": self.numerics,
                "layers": self.layers, "windows": self.windows, "context": self.context,
                "tokens": self.tokens, "topk_ratio": self.topk_ratio,
                "inputs": [s.to_dict() for _, s in sorted(
                    self.stats.items(), key=lambda kv: (kv[0][0], list(INPUTS).index(kv[0][1])))]}


class ActivationRecorder(Decoder):
    """A :class:`model.decoder.Decoder` that records every BitLinear input into
    :attr:`record` (an :class:`ActivationRecord`) as it runs; same parameters, plus
    ``sample`` (rows kept per layer and input), ``topk_ratio`` and ``label``.

    The decoder's numerics are untouched: :meth:`bit_linear` looks at the input,
    calls :meth:`Decoder.bit_linear`, and (for the gate) looks at its output. The
    quantized values recorded are :meth:`Decoder.quantize_input` of the same input, the
    values the decoder hands its core (a deterministic function, evaluated once more).

    Raises
    ------
    ValueError
        Besides the decoder's: ``activations="float"`` (no quantizer to record), a
        ``sample`` below 1 or a ``topk_ratio`` outside [0, 1).
    """

    def __init__(self, weights, *, sample=DEFAULT_SAMPLE, topk_ratio=Q_SPARSE_RATIO,
                 label="", **options):
        super().__init__(weights, **options)
        if self.activations == A_FLOAT:
            raise ValueError("activations 'float' has no quantizer: record a8 or a4.8")
        if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
            raise ValueError(f"sample must be a positive number of rows, not {sample!r}")
        topk_count(1, topk_ratio)               # checks the ratio
        self.sample = sample
        self.record = ActivationRecord(
            label=label, layers=self.config.layers, topk_ratio=topk_ratio,
            numerics={"activations": self.activations, "topk": self.topk,
                      "block_topk": self.block_topk, "act_quant": self.act_quant})

    def forward(self, token_ids, cache=None, *, logits="all"):
        out = super().forward(token_ids, cache, logits=logits)
        if cache is None or cache.length == np.asarray(token_ids).size:
            self.record.windows += 1            # a pass from position 0
        self.record.context = max(self.record.context, int(np.asarray(token_ids).size))
        return out

    def bit_linear(self, x, projection, *, layer, name, needed=None):
        if name in FIRST_PROJECTION:
            self._observe(layer, FIRST_PROJECTION[name], name, x)
        y = super().bit_linear(x, projection, layer=layer, name=name, needed=needed)
        if name == "gate":
            stats = self.record.stats[layer, "gate_up"]
            relu2 = np.square(np.maximum(y, np.float32(0)))
            stats.gate_width = y.shape[1]
            stats.counts["gate_zeros"] = stats.counts.get("gate_zeros", 0) + \
                int(np.count_nonzero(relu2 == 0))
        return y

    def _observe(self, layer, input_name, projection, x):
        x = np.asarray(x, dtype=np.float32)
        key = (layer, input_name)
        stats = self.record.stats.get(key)
        if stats is None:
            stats = self.record.stats[key] = InputStats(
                layer, input_name, x.shape[1], self.act_bits(projection))
        q = self.quantize_input(x, projection)          # what the core receives
        k = topk_count(x.shape[1], self.record.topk_ratio)
        counts = {
            "zeros": q.values.size - np.count_nonzero(q.values),
            "exact_zeros": x.size - np.count_nonzero(x),
            "int8_zeros": _zeros(quantize_activations_as(x, self.act_quant).values),
            "int4_zeros": _zeros(quantize_activations_int4(x).values),
            "topk_zeros": _zeros(quantize_activations_as(
                np.where(topk_mask(x, k), x, np.float32(0)), self.act_quant).values),
        }
        for name, count in counts.items():
            stats.counts[name] = stats.counts.get(name, 0) + int(count)
        stats.tokens += x.shape[0]
        keep = self.sample
        stats.rows = _tail(stats.rows, x, keep)
        stats.values = _tail(stats.values, np.asarray(q.values, dtype=np.int8), keep)
        stats.scales = _tail(stats.scales, np.asarray(q.scale, dtype=np.float64), keep)


def _zeros(values):
    return values.size - np.count_nonzero(values)


def _tail(kept, new, n):
    joined = new if kept is None else np.concatenate([kept, new])
    return np.ascontiguousarray(joined[-n:])


def record_activations(weights, windows, *, sample=DEFAULT_SAMPLE,
                       topk_ratio=Q_SPARSE_RATIO, label="", source=None, **options):
    """Run ``weights`` over token ``windows`` and record every BitLinear input.

    Parameters
    ----------
    weights
        A source of weights (:class:`model.checkpoint.Checkpoint`,
        :class:`model.weights.MasterWeights`).
    windows : sequence of sequences of int
        Each one forward pass from position 0.
    sample, topk_ratio, label
        As for :class:`ActivationRecorder`.
    source : str, optional
        Stored in the record (the checkpoint folder).
    **options
        Decoder options: ``activations``, ``topk``, ``block_topk``, ``act_quant``, ...

    Returns
    -------
    ActivationRecord
    """
    windows = list(windows)
    if not windows:
        raise ValueError("record_activations needs at least one window of tokens")
    recorder = ActivationRecorder(weights, sample=sample, topk_ratio=topk_ratio, label=label,
                                  **options)
    for window in windows:
        recorder.forward(np.asarray(window, dtype=np.int64))
    recorder.record.source = None if source is None else str(source)
    return recorder.record


def _training(folder):
    path = Path(folder) / "training.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise ValueError(f"{path}: not a JSON file") from None
    return data if isinstance(data, dict) else {}


def training_numerics(folder):
    """The activation numerics a checkpoint was trained with (``training.json``'s
    ``run``): ``{"activations": "a8" or "a4.8", "topk": ratio or None}``; a8 without
    Top-K when the file says nothing."""
    run = _training(folder).get("run") or {}
    activations = run.get("activations") or A8
    if activations not in (A8, A4_8):
        raise ValueError(f"{folder}: trained with activations {activations!r}, which has "
                         "no quantizer to record")
    return {"activations": activations, "topk": run.get("topk")}


def checkpoint_label(folder):
    """A short name of what a checkpoint is: ``"stdlib b1.58"`` for a model trained
    here on the standard library (``training.json``'s variant and corpus), else the
    folder's name (its parent's too for a ``packed``/``master`` layout folder)."""
    data = _training(folder)
    folder = Path(folder)
    source = str((data.get("corpus") or {}).get("source", ""))
    variant = data.get("variant")
    if variant and "standard library" in source:
        return f"stdlib {variant}"
    if folder.name in ("packed", "master") and folder.parent.name:
        return f"{folder.parent.name}/{folder.name}"
    return folder.name or str(folder)


def checkpoint_activations(folder, *, windows=DEFAULT_WINDOWS, context=None,
                           sample=DEFAULT_SAMPLE, topk_ratio=Q_SPARSE_RATIO, numerics=None,
                           label=None, act_quant=FLOAT64):
    """Record a checkpoint's activations on its corpus' test split.

    Parameters
    ----------
    folder : path-like
        A checkpoint with ``corpus.json`` and ``tokenizer.json`` (``ternary-accel train``
        writes both).
    windows : int
        Evenly spaced windows of the test split, each a forward pass from position 0.
    context : int, optional
        Tokens a window (default the model's ``max_position_embeddings``).
    sample, topk_ratio
        As for :class:`ActivationRecorder`.
    numerics : dict, optional
        Decoder options (``activations``, ``topk``, ``block_topk``); default the
        checkpoint's training numerics (:func:`training_numerics`).
    label : str, optional
        Default :func:`checkpoint_label`.
    act_quant : str
        The int8 quantizer's evaluation path (:data:`model.quant.ACT_QUANT_PATHS`).

    Returns
    -------
    ActivationRecord

    Raises
    ------
    ValueError
        On a bad checkpoint (:class:`model.checkpoint.CheckpointError`), a missing or
        foreign corpus (:class:`model.corpus.CorpusError`), a window longer than the
        model holds or a split too short for the windows.
    """
    from ternary_accel.model.checkpoint import load_checkpoint
    from ternary_accel.model.evaluate import load_eval_text, window_starts
    if isinstance(windows, bool) or not isinstance(windows, int) or windows < 1:
        raise ValueError(f"windows must be a positive integer, not {windows!r}")
    checkpoint = load_checkpoint(folder)
    limit = checkpoint.config.max_position_embeddings
    context = limit if context is None else context
    if isinstance(context, bool) or not isinstance(context, int) or not 2 <= context <= limit:
        raise ValueError(f"context must be 2..{limit} tokens (max_position_embeddings), "
                         f"not {context!r}")
    options = training_numerics(folder) if numerics is None else dict(numerics)
    ids = np.asarray(load_eval_text(folder).ids, dtype=np.int64)
    starts = window_starts(len(ids), context, windows * (context - 1))
    return record_activations(checkpoint, [ids[s:s + context] for s in starts],
                              sample=sample, topk_ratio=topk_ratio,
                              label=checkpoint_label(folder) if label is None else label,
                              source=folder, act_quant=act_quant, **options)
