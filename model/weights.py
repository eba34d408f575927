"""The weights a BitNet b1.58 decoder runs on, whatever they were loaded from.

A source of weights (a checkpoint on disk, :class:`MasterWeights` in memory) hands the
decoder one :class:`LayerWeights` at a time, so a model can run without every layer
held at once. Tensor names follow the Hugging Face LLaMA layout (``docs/models.md``);
:func:`tensor_name` is the one place that spells them.
"""

from dataclasses import dataclass

import numpy as np

from ternary_accel.model.encoding import check_ternary
from ternary_accel.model.quant import quantize_weights_ternary

__all__ = ["PROJECTIONS", "ATTENTION_PROJECTIONS", "FFN_PROJECTIONS", "NORMS",
           "TernaryProjection", "FloatProjection", "LayerWeights", "MasterWeights", "tensor_name",
           "layer_tensor_names", "model_tensor_names", "ternarize_master",
           "random_master_weights", "RandomMasterWeights", "bf16_round"]

ATTENTION_PROJECTIONS = ("q", "k", "v", "o")
FFN_PROJECTIONS = ("gate", "up", "down")
#: The seven BitLinears of a layer, in execution order (``model.shapes`` names).
PROJECTIONS = ATTENTION_PROJECTIONS + FFN_PROJECTIONS
#: The four RMSNorm weight vectors of a layer.
NORMS = ("input_layernorm", "attn_sub_norm", "post_attention_layernorm", "ffn_sub_norm")

_PROJECTION_MODULE = {"q": "self_attn.q_proj", "k": "self_attn.k_proj",
                      "v": "self_attn.v_proj", "o": "self_attn.o_proj",
                      "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
_NORM_MODULE = {"input_layernorm": "input_layernorm",
                "attn_sub_norm": "self_attn.attn_sub_norm",
                "post_attention_layernorm": "post_attention_layernorm",
                "ffn_sub_norm": "mlp.ffn_sub_norm"}


def tensor_name(layer, part, suffix="weight"):
    """Hugging Face name of a layer's projection (``"q"`` ... ``"down"``) or norm
    (:data:`NORMS`) tensor, e.g. ``model.layers.3.self_attn.q_proj.weight``."""
    module = _PROJECTION_MODULE.get(part) or _NORM_MODULE.get(part)
    if module is None:
        raise ValueError(f"unknown layer part {part!r}; known: "
                         f"{', '.join(PROJECTIONS + NORMS)}")
    return f"model.layers.{layer}.{module}.{suffix}"


def layer_tensor_names(layer, *, packed):
    """Every tensor name of one layer (with ``weight_scale`` when ``packed``)."""
    names = [tensor_name(layer, p) for p in PROJECTIONS]
    if packed:
        names += [tensor_name(layer, p, "weight_scale") for p in PROJECTIONS]
    return names + [tensor_name(layer, n) for n in NORMS]


def model_tensor_names(config, *, packed):
    """Every tensor name of a checkpoint of ``config`` (a :class:`model.config.ModelConfig`)."""
    names = ["model.embed_tokens.weight", "model.norm.weight"]
    if not config.tie_word_embeddings:
        names.append("lm_head.weight")
    for layer in range(config.layers):
        names += layer_tensor_names(layer, packed=packed)
    return names


def bf16_round(values):
    """Round float32 values to the nearest bfloat16 (ties to even), returned as float32."""
    x = np.asarray(values, dtype=np.float32)
    flat = np.ascontiguousarray(x).reshape(-1)
    bits = flat.view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    out = rounded.astype(np.uint32).view(np.float32)
    return np.where(np.isnan(flat), flat, out).astype(np.float32).reshape(x.shape)


@dataclass(frozen=True)
class TernaryProjection:
    """One BitLinear's weights: ``W ~= values * scale``.

    Attributes
    ----------
    values : numpy.ndarray of int8, (out_features, in_features)
        Ternary weights.
    scale : float
        The per-tensor weight scale that *multiplies* the output (``weight_scale`` of a
        packed checkpoint, ``mean|W|`` of a master one).
    """

    values: np.ndarray
    scale: float

    def __post_init__(self):
        object.__setattr__(self, "values", check_ternary(self.values, "projection weights"))
        if self.values.ndim != 2:
            raise ValueError(f"projection weights must be 2-D, not shape "
                             f"{self.values.shape}")
        if not np.isfinite(self.scale) or self.scale <= 0:
            raise ValueError(f"weight scale must be positive and finite, not {self.scale!r}")

    @property
    def shape(self):
        return self.values.shape

    #: The values are ternary (an integer core can take them).
    ternary = True

    def matrix(self):
        """``values * scale`` as float32 (the weights a float BitLinear multiplies by)."""
        return self.values.astype(np.float32) * np.float32(self.scale)

    @classmethod
    def zeros(cls, out_features, in_features):
        """All-zero weights of this shape held as one zero-stride array (no memory, no
        per-element check): the weights of a counting pass (:mod:`model.accounting`)."""
        projection = cls(np.zeros((1, 1), dtype=np.int8), 1.0)
        object.__setattr__(projection, "values",
                           np.broadcast_to(np.int8(0), (out_features, in_features)))
        return projection


@dataclass(frozen=True)
class FloatProjection:
    """Full-precision weights of a linear layer (a master checkpoint read as it is, or
    a float model's): only a decoder with ``activations="float"`` multiplies by them.

    Attributes
    ----------
    values : numpy.ndarray of float32, (out_features, in_features)
    """

    values: np.ndarray
    scale = 1.0
    ternary = False

    def __post_init__(self):
        values = np.asarray(self.values, dtype=np.float32)
        if values.ndim != 2:
            raise ValueError(f"projection weights must be 2-D, not shape {values.shape}")
        object.__setattr__(self, "values", values)

    @property
    def shape(self):
        return self.values.shape

    def matrix(self):
        return self.values


@dataclass(frozen=True)
class LayerWeights:
    """Everything one decoder layer needs.

    Attributes
    ----------
    projections : dict of str to TernaryProjection
        ``"q"``, ``"k"``, ``"v"``, ``"o"``, ``"gate"``, ``"up"``, ``"down"``.
    norms : dict of str to numpy.ndarray of float32
        The RMSNorm weights named in :data:`NORMS`.
    """

    projections: dict
    norms: dict

    def check(self, config, layer=0):
        """Raise ``ValueError`` unless every tensor has the shape ``config`` needs."""
        shapes = {p.name: (p.out_features, p.in_features)
                  for p in config.shape.projections()}
        for name in PROJECTIONS:
            if name not in self.projections:
                raise ValueError(f"layer {layer}: projection {name} is missing")
            if self.projections[name].shape != shapes[name]:
                raise ValueError(f"layer {layer}: projection {name} has shape "
                                 f"{self.projections[name].shape}, expected {shapes[name]}")
        widths = {"input_layernorm": config.hidden, "attn_sub_norm": config.hidden,
                  "post_attention_layernorm": config.hidden, "ffn_sub_norm": config.ffn}
        for name, width in widths.items():
            if name not in self.norms:
                raise ValueError(f"layer {layer}: norm {name} is missing")
            if np.shape(self.norms[name]) != (width,):
                raise ValueError(f"layer {layer}: norm {name} has shape "
                                 f"{np.shape(self.norms[name])}, expected ({width},)")


def ternarize_master(master):
    """The online quantizer of a master weight (bf16 master weights, ``docs/models.md``):
    absmean ternary values (:func:`model.quant.quantize_weights_ternary`) and the scale
    ``mean|W|`` rounded to bfloat16, as the bf16 reference model holds it (and as a
    packed checkpoint stores ``weight_scale``), so both layouts of the same weights give
    the same numbers."""
    q = quantize_weights_ternary(master)
    return TernaryProjection(q.values, float(bf16_round(np.float32(q.beta))))


class MasterWeights:
    """Weights in memory, from float master tensors named as in a checkpoint.

    Parameters
    ----------
    config : model.config.ModelConfig
    tensors : dict of str to numpy.ndarray
        Float tensors by Hugging Face name (:func:`model_tensor_names` with
        ``packed=False``). Projections are ternarized by :func:`ternarize_master` on
        first use, once.
    """

    def __init__(self, config, tensors):
        missing = set(model_tensor_names(config, packed=False)) - set(tensors)
        if missing:
            raise ValueError(f"master weights miss {sorted(missing)[0]}")
        self.config = config
        self._tensors = tensors
        self._layers = {}

    def embedding(self):
        return np.asarray(self._tensors["model.embed_tokens.weight"], dtype=np.float32)

    def lm_head(self):
        name = "model.embed_tokens.weight" if self.config.tie_word_embeddings \
            else "lm_head.weight"
        return np.asarray(self._tensors[name], dtype=np.float32)

    def final_norm(self):
        return np.asarray(self._tensors["model.norm.weight"], dtype=np.float32)

    def layer(self, index):
        if not 0 <= index < self.config.layers:
            raise IndexError(f"layer {index} out of range 0..{self.config.layers - 1}")
        if index not in self._layers:
            t = self._tensors
            layer = LayerWeights(
                {p: ternarize_master(t[tensor_name(index, p)]) for p in PROJECTIONS},
                {n: np.asarray(t[tensor_name(index, n)], dtype=np.float32) for n in NORMS})
            layer.check(self.config, index)
            self._layers[index] = layer
        return self._layers[index]


def random_master_weights(config, seed=0):
    """Gaussian master weights for ``config``, bf16-representable, by tensor name.

    Projections ``N(0, 1/in_features)``; norms ``1 + N(0, 0.1)`` (so a test notices a
    norm weight applied in the wrong place); embedding ``N(0, 1)``.
    """
    rng = np.random.default_rng(seed)
    t = {"model.embed_tokens.weight": rng.normal(size=(config.vocab, config.hidden)),
         "model.norm.weight": 1 + 0.1 * rng.normal(size=config.hidden)}
    if not config.tie_word_embeddings:
        t["lm_head.weight"] = rng.normal(size=(config.vocab, config.hidden))
    shapes = {p.name: (p.out_features, p.in_features) for p in config.shape.projections()}
    widths = {"input_layernorm": config.hidden, "attn_sub_norm": config.hidden,
              "post_attention_layernorm": config.hidden, "ffn_sub_norm": config.ffn}
    for layer in range(config.layers):
        for p in PROJECTIONS:
            out_f, in_f = shapes[p]
            t[tensor_name(layer, p)] = rng.normal(size=(out_f, in_f)) / np.sqrt(in_f)
        for n, width in widths.items():
            t[tensor_name(layer, n)] = 1 + 0.1 * rng.normal(size=width)
    return {name: bf16_round(value) for name, value in t.items()}


def _random_segments(config):
    """The tensors of :func:`random_master_weights` in the order it draws them:
    ``(name, shape, kind)``, ``kind`` ``"normal"`` (``N(0, 1)``), ``"norm"``
    (``1 + N(0, 0.1)``) or ``"projection"`` (``N(0, 1/in_features)``)."""
    segments = [("model.embed_tokens.weight", (config.vocab, config.hidden), "normal"),
                ("model.norm.weight", (config.hidden,), "norm")]
    if not config.tie_word_embeddings:
        segments.append(("lm_head.weight", (config.vocab, config.hidden), "normal"))
    shapes = {p.name: (p.out_features, p.in_features) for p in config.shape.projections()}
    widths = {"input_layernorm": config.hidden, "attn_sub_norm": config.hidden,
              "post_attention_layernorm": config.hidden, "ffn_sub_norm": config.ffn}
    for layer in range(config.layers):
        segments += [(tensor_name(layer, p), shapes[p], "projection") for p in PROJECTIONS]
        segments += [(tensor_name(layer, n), (width,), "norm") for n, width in widths.items()]
    return segments


class RandomMasterWeights:
    """:func:`random_master_weights` drawn lazily: the same tensors (bit for bit), a
    tensor drawn only when asked for, so that a large model (2B4T: 10 GB of float64)
    runs without every float tensor held at once.

    The tensors come from one generator in :func:`random_master_weights`'s order; the
    generator's state at the start of each tensor is kept once reached (a few hundred
    bytes each), so a tensor is drawn again from its own state, and reaching one further
    on draws (and drops) those before it, in blocks. A large matrix is drawn in blocks
    of rows (a generator's normals in blocks equal its normals at once) and rounded to
    bfloat16 block by block. Projections are ternarized (:func:`ternarize_master`) as
    :class:`MasterWeights` does; the last ``cache`` layers asked for are kept (a
    decoder visiting the layers in order draws each once). Nothing else is cached: a
    decoder keeps its embedding itself.

    Parameters
    ----------
    config : model.config.ModelConfig
    seed : int
        :func:`random_master_weights`'s seed.
    cache : int
        Layers kept (:class:`LayerWeights`, int8 values), most recent first.
    progress : callable, optional
        Told of each tensor drawn (its name) and each layer ternarized (its index): a
        large model's drawing takes minutes.
    """

    #: Normals drawn at once (a block of rows of a large tensor).
    BLOCK = 1 << 22

    def __init__(self, config, seed=0, *, cache=1, progress=None):
        self.config = config
        self.progress = progress
        self.seed = seed
        self.cache = int(cache)
        self._segments = _random_segments(config)
        self._index = {name: k for k, (name, _, _) in enumerate(self._segments)}
        self._states = {0: np.random.default_rng(seed).bit_generator.state}
        self._layers = {}

    def _blocks(self, k):
        """Draw tensor ``k`` (from the nearest kept state at or before it, the tensors
        between drawn and dropped): yields its blocks of rows (float64, before
        bf16 rounding), keeping the states of the tensors it passes."""
        start = max(j for j in self._states if j <= k)
        rng = np.random.default_rng()
        rng.bit_generator.state = self._states[start]
        for j in range(start, k + 1):
            self._states.setdefault(j, rng.bit_generator.state)
            _, shape, kind = self._segments[j]
            rows = shape[0] if len(shape) == 2 else 1
            cols = shape[-1]
            step = max(1, self.BLOCK // cols)
            for a in range(0, rows, step):
                n = min(step, rows - a)
                x = rng.normal(size=(n, cols) if len(shape) == 2 else (cols,))
                if j == k:
                    if kind == "norm":
                        x = 1 + 0.1 * x
                    elif kind == "projection":
                        x = x / np.sqrt(shape[1])
                    yield a, x
            self._states.setdefault(j + 1, rng.bit_generator.state)

    def tensor(self, name):
        """One float tensor (bf16-representable float32), drawn now."""
        if name not in self._index:
            raise KeyError(name)
        k = self._index[name]
        shape = self._segments[k][1]
        if self.progress is not None and len(shape) == 2 and shape[0] > 100_000:
            self.progress(name)
        out = np.empty(shape, dtype=np.float32)
        for a, x in self._blocks(k):
            if x.ndim == 1:
                out[:] = bf16_round(x)
            else:
                out[a:a + x.shape[0]] = bf16_round(x)
        return out

    def tensors(self):
        """Every tensor by name: :func:`random_master_weights`'s dict (small models)."""
        return {name: self.tensor(name) for name, _, _ in self._segments}

    def embedding(self):
        return self.tensor("model.embed_tokens.weight")

    def lm_head(self):
        return self.embedding() if self.config.tie_word_embeddings \
            else self.tensor("lm_head.weight")

    def final_norm(self):
        return self.tensor("model.norm.weight")

    def layer(self, index):
        if not 0 <= index < self.config.layers:
            raise IndexError(f"layer {index} out of range 0..{self.config.layers - 1}")
        if index in self._layers:
            layer = self._layers.pop(index)
        else:
            layer = LayerWeights(
                {p: ternarize_master(self.tensor(tensor_name(index, p))) for p in PROJECTIONS},
                {n: self.tensor(tensor_name(index, n)) for n in NORMS})
            layer.check(self.config, index)
            if self.progress is not None:
                self.progress(index)
        if self.cache > 0:
            self._layers[index] = layer            # the most recent last
            while len(self._layers) > self.cache:
                del self._layers[next(iter(self._layers))]
        return layer
