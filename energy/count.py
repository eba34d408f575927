"""Operation counts of a Transformer's matrix products, following the BitNet paper.

For an (m x n) by (n x p) product the paper counts ``m * (n - 1) * p`` additions and
``m * n * p`` multiplications. BitNet keeps the additions (at low precision) and
multiplies only to rescale the result: ``m * p + m * n`` multiplications (by beta and
gamma / Q_b).

Which products are counted and at which precision BitNet's attention runs are not
spelled out by the paper; :class:`CountOptions` names each choice, and its defaults are
the reading that reproduces the paper's 6.7B row (see the README's Energy section):
projections, FFN and the attention score and value products are counted, the LM head is
not, and BitNet's attention products run in FP16.
"""

from dataclasses import dataclass

from ternary_accel.model.shapes import TransformerShape

from ternary_accel.energy.ops import DTYPES, op_energy

__all__ = ["CountOptions", "Product", "products", "count_ops", "energy_joules",
           "TRANSFORMER", "BITNET"]

TRANSFORMER = "transformer"
BITNET = "bitnet"


@dataclass(frozen=True)
class CountOptions:
    """Which products are counted and at which precision BitNet runs them.

    Attributes
    ----------
    projections : bool
        The attention projections q, k, v, o.
    ffn : bool
        The FFN matrices.
    attention : bool
        The attention score (Q K^T) and value (A V) products, per head.
    lm_head : bool
        The output embedding (LM head), hidden x vocab.
    bitnet_attention : str
        Precision of BitNet's attention products (they have no 1-bit weights).
    bitnet_add : str
        Precision of the additions of BitNet's 1-bit / ternary weight products.
    bitnet_rescale : str
        Precision of BitNet's rescaling multiplications.
    """

    projections: bool = True
    ffn: bool = True
    attention: bool = True
    lm_head: bool = False
    bitnet_attention: str = "fp16"
    bitnet_add: str = "int8"
    bitnet_rescale: str = "fp16"

    def __post_init__(self):
        for field in ("bitnet_attention", "bitnet_add", "bitnet_rescale"):
            if getattr(self, field) not in DTYPES:
                raise ValueError(f"{field} must be one of {DTYPES}, not "
                                 f"{getattr(self, field)!r}")


@dataclass(frozen=True)
class Product:
    """``count`` products of an (m x n) by (n x p) matrix pair.

    ``weighted`` products have a weight matrix (BitNet quantizes those); the
    attention products multiply two activations.
    """

    name: str
    m: int
    n: int
    p: int
    count: int
    weighted: bool

    @property
    def adds(self):
        return self.m * (self.n - 1) * self.p * self.count

    @property
    def muls(self):
        return self.m * self.n * self.p * self.count

    @property
    def rescale_muls(self):
        return (self.m * self.p + self.m * self.n) * self.count


def products(shape, seq_len, options=CountOptions()):
    """The matrix products of one forward pass over ``seq_len`` tokens.

    Raises
    ------
    ValueError
        If ``seq_len`` is not a positive integer.
    """
    if not isinstance(shape, TransformerShape):
        raise TypeError(f"shape must be a TransformerShape, not {shape!r}")
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len must be a positive integer, not {seq_len!r}")
    result = []
    ffn_names = {"gate", "up", "down"}
    for projection in shape.projections():
        is_ffn = projection.name in ffn_names
        if (is_ffn and options.ffn) or (not is_ffn and options.projections):
            result.append(Product(projection.name, seq_len, projection.in_features,
                                  projection.out_features, shape.layers, True))
    if options.attention:
        heads = shape.heads * shape.layers
        result.append(Product("scores", seq_len, shape.head_dim, seq_len, heads, False))
        result.append(Product("values", seq_len, seq_len, shape.head_dim, heads, False))
    if options.lm_head:
        result.append(Product("lm_head", seq_len, shape.hidden, shape.vocab, 1, True))
    return result


def count_ops(shape, seq_len, arch, dtype="fp16", options=CountOptions()):
    """Operation counts by precision: ``{dtype: {"add": n, "mul": n}}``.

    Parameters
    ----------
    arch : str
        ``"transformer"`` (every product at ``dtype``) or ``"bitnet"`` (weight products
        as adds at ``options.bitnet_add`` plus rescaling multiplies; attention at
        ``options.bitnet_attention``).
    dtype : str
        Precision of the full-precision Transformer.
    """
    counts = {}

    def add(precision, op, n):
        counts.setdefault(precision, {"add": 0, "mul": 0})[op] += n

    for product in products(shape, seq_len, options):
        if arch == TRANSFORMER:
            add(dtype, "add", product.adds)
            add(dtype, "mul", product.muls)
        elif arch == BITNET:
            if product.weighted:
                add(options.bitnet_add, "add", product.adds)
                add(options.bitnet_rescale, "mul", product.rescale_muls)
            else:
                add(options.bitnet_attention, "add", product.adds)
                add(options.bitnet_attention, "mul", product.muls)
        else:
            raise ValueError(f"arch must be {TRANSFORMER!r} or {BITNET!r}, not {arch!r}")
    return counts


def energy_joules(counts, node):
    """``{"add": J, "mul": J}`` of :func:`count_ops` counts at process ``node``."""
    total = {"add": 0.0, "mul": 0.0}
    for precision, ops in counts.items():
        for op, n in ops.items():
            if n:
                total[op] += n * op_energy(node, precision, op) * 1e-12
    return total
