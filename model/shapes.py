"""Transformer shapes: the sizes that the energy model and the layer driver work on.

Pure data: a validated description of a decoder-only Transformer and the named models
used across the project (the BitNet paper's 6.7B/13B/30B, the BitNet b1.58 sizes, BitNet
b1.58 2B4T, and LLaMA 7B to 70B).
"""

from dataclasses import dataclass

__all__ = ["FFN_CLASSIC", "FFN_GATED", "FFN_KINDS", "TransformerShape", "MODELS",
           "get_model", "Projection"]

#: Two-matrix FFN (up, down) of the original Transformer and the BitNet paper.
FFN_CLASSIC = "classic"
#: Three-matrix gated FFN (gate, up, down) of LLaMA and BitNet b1.58.
FFN_GATED = "gated"
FFN_KINDS = (FFN_CLASSIC, FFN_GATED)


@dataclass(frozen=True)
class Projection:
    """One linear layer: ``out_features x in_features`` weights."""

    name: str
    out_features: int
    in_features: int

    @property
    def weights(self):
        return self.out_features * self.in_features


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value}")


@dataclass(frozen=True)
class TransformerShape:
    """A decoder-only Transformer.

    Parameters
    ----------
    name : str
    hidden : int
        Model width.
    ffn : int
        FFN inner width.
    layers : int
    heads : int
        Attention (query) heads; must divide ``hidden``.
    kv_heads : int, optional
        Key/value heads (grouped-query attention); must divide ``heads``. Default:
        ``heads``.
    ffn_kind : str
        ``"classic"`` (up, down) or ``"gated"`` (gate, up, down).
    vocab : int
        Vocabulary size (for the LM head).

    Raises
    ------
    ValueError
        On a non-positive size, heads that do not divide ``hidden``, KV heads that do
        not divide ``heads``, or an unknown FFN kind.
    """

    name: str
    hidden: int
    ffn: int
    layers: int
    heads: int
    kv_heads: int = None
    ffn_kind: str = FFN_GATED
    vocab: int = 32000

    def __post_init__(self):
        if self.kv_heads is None:
            object.__setattr__(self, "kv_heads", self.heads)
        for field in ("hidden", "ffn", "layers", "heads", "kv_heads", "vocab"):
            _positive(field, getattr(self, field))
        if self.hidden % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide hidden ({self.hidden})")
        if self.heads % self.kv_heads:
            raise ValueError(f"kv_heads ({self.kv_heads}) must divide heads ({self.heads})")
        if self.ffn_kind not in FFN_KINDS:
            raise ValueError(f"ffn_kind must be one of {FFN_KINDS}, not {self.ffn_kind!r}")

    @property
    def head_dim(self):
        return self.hidden // self.heads

    @property
    def kv_dim(self):
        """Width of the key and value projections: ``kv_heads * head_dim``."""
        return self.kv_heads * self.head_dim

    def projections(self):
        """The linear layers of one block, as :class:`Projection` (out x in)."""
        h, f = self.hidden, self.ffn
        layers = [Projection("q", h, h), Projection("k", self.kv_dim, h),
                  Projection("v", self.kv_dim, h), Projection("o", h, h)]
        if self.ffn_kind == FFN_GATED:
            layers.append(Projection("gate", f, h))
        layers += [Projection("up", f, h), Projection("down", h, f)]
        return layers

    def block_weights(self):
        """Weights of the linear layers of one block."""
        return sum(p.weights for p in self.projections())


def _paper(name, hidden, layers, heads):
    # BitNet paper section 2.3: FFN 4x hidden, classic FFN, 16K vocabulary.
    return TransformerShape(name, hidden, 4 * hidden, layers, heads,
                            ffn_kind=FFN_CLASSIC, vocab=16384)


#: Named models: the BitNet paper's Table 1 sizes and the BitNet b1.58 / LLaMA sizes.
MODELS = {shape.name: shape for shape in (
    _paper("bitnet-6.7b", 4096, 32, 32),
    _paper("bitnet-13b", 5120, 40, 40),
    _paper("bitnet-30b", 7168, 48, 56),
    TransformerShape("b1.58-700m", 1536, 4096, 24, 16),
    TransformerShape("b1.58-1.3b", 2048, 5460, 24, 32),
    TransformerShape("b1.58-3b", 3200, 8640, 26, 32),
    TransformerShape("b1.58-2b4t", 2560, 6912, 30, 20, kv_heads=5, vocab=128256),
    TransformerShape("llama-7b", 4096, 11008, 32, 32),
    TransformerShape("llama-13b", 5120, 13824, 40, 40),
    TransformerShape("llama-30b", 6656, 17920, 60, 52),
    TransformerShape("llama-70b", 8192, 28672, 80, 64, kv_heads=8),
)}


def get_model(name):
    """The named :class:`TransformerShape`.

    Raises
    ------
    ValueError
        For an unknown name; the message lists the known ones.
    """
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") \
            from None
