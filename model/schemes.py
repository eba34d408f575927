"""Activation schemes: the bits and the kept fraction of every BitLinear's input, and the
KV cache's bits, as the whole-model accounting (:func:`model.accounting.account`)
charges them.

A scheme says, per projection input, how many bits an activation has (4 or 8) and
which fraction of a token's activations is kept (its *density*: the rest are zero, and
the sparse dataflow of :mod:`model.sparse` skips them with their weight columns). The
inputs (``docs/a48-qsparse.md``) are those of :data:`INPUTS`: q/k/v share
the attention input, gate/up the FFN input. The presets (:data:`SCHEMES`):

* ``b1.58``: BitNet b1.58, int8 everywhere, dense (the accounting's figures before
  schemes existed).
* ``a4.8``: BitNet a4.8 (Wang, Ma, Wei, arXiv 2411.04965): INT4 absmean for q/k/v and
  gate/up, Top-K 50 % then INT8 for o, INT8 for down; the densities are the paper's
  reported sparsities at 7B (:data:`A48_DENSITY`); KV cache 3 bits, the BOS position
  4 bits.
* ``q-sparse``: BitNet b1.58 with Q-Sparse Top-K (Wang et al., arXiv 2407.10969) on
  every linear input at sparsity ratio r (default :data:`Q_SPARSE_RATIO`, the paper's
  inference-optimal 61.25 % for 1.58-bit models), int8.
* ``block-q-sparse``: Block Q-Sparse N:M = 16:32 (50 %), a static mask.

Measured densities replace the presets' with ``density=`` (e.g. from a real run's
``nonzero`` counts): a mapping from a projection (``"down"``) or an input (``"qkv"``)
to the kept fraction.

A token keeps ``floor(density * in_features)`` columns, the density read exactly (the
shortest decimal that prints as the float, as :func:`model.quant.topk_count` reads a
Q-Sparse ratio), so a Q-Sparse scheme keeps the official code's ``int((1 - r) D)``.
"""

from dataclasses import dataclass, replace
from fractions import Fraction
from math import floor
from numbers import Integral, Real

from ternary_accel.model.sparse import MASK, NONZERO, SCHEDULES

__all__ = ["PROJECTIONS", "INPUTS", "ACT_BITS", "ActivationScheme", "A48_SPARSITY",
           "A48_DENSITY", "A48_GATE_ZEROS", "Q_SPARSE_RATIO", "b158", "a48", "q_sparse",
           "block_q_sparse", "SCHEMES", "get_scheme", "B158"]

#: The BitLinears of a block, in the decoder's order.
PROJECTIONS = ("q", "k", "v", "o", "gate", "up", "down")
#: Projection inputs: the projections that read each (one quantizer per input).
INPUTS = {"qkv": ("q", "k", "v"), "o": ("o",), "gate_up": ("gate", "up"),
          "down": ("down",)}
_INPUT_OF = {p: name for name, group in INPUTS.items() for p in group}
#: Activation widths a scheme may give an input.
ACT_BITS = (4, 8)

#: BitNet a4.8 at 7B, "fraction of weights not needed per token" (arXiv 2411.04965,
#: as the Q-Sparse paper reports it): 44.5 % overall.
A48_SPARSITY = {"q": 0.121, "k": 0.121, "v": 0.121, "o": 0.5, "gate": 0.12,
                "up": 0.714, "down": 0.842}
#: Gate outputs that are zero at 7B (relu^2 of the gate; gate first: up is needed only
#: where the gate is not zero). up's 71.4 % is 1 - (1 - 0.12) x (1 - 0.675).
A48_GATE_ZEROS = 0.675
#: The a4.8 preset's densities: kept *input columns* (what the sparse dataflow can
#: skip). 1 - sparsity for every projection but up: up reads the gate's input, so its
#: columns are kept at the gate's 0.88; the rest of up's 71.4 % is gate-first *output*
#: skipping (rows of up whose gate is zero), which the engine does not do (its tiles are
#: ``rows`` outputs wide, and a tile of 16 up rows has all its gates zero 0.2 % of the
#: time; the decoder, too, computes every up output). ``a48(density={"up": 0.286})``
#: charges up as if the rows were skipped.
A48_DENSITY = {p: 1 - s for p, s in A48_SPARSITY.items()}
A48_DENSITY["up"] = A48_DENSITY["gate"]
#: Q-Sparse's inference-optimal sparsity ratio for 1.58-bit models (arXiv 2407.10969;
#: about 40 % matches the dense model of the same size).
Q_SPARSE_RATIO = 0.6125


def _exact(value):
    """A density or ratio as a Fraction: a float read as its shortest decimal."""
    return Fraction(str(value)) if isinstance(value, float) else Fraction(value)


def _check_bits(name, value, allowed=None):
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1 \
            or (allowed is not None and value not in allowed):
        kind = f"one of {allowed}" if allowed else "a positive number of bits"
        raise ValueError(f"{name} must be {kind}, not {value!r}")
    return int(value)


def _check_fraction(name, value):
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a fraction in [0, 1], not {value!r}")
    return value


@dataclass(frozen=True)
class ActivationScheme:
    """The activations of a BitNet variant, as the accounting charges them.

    Parameters
    ----------
    name : str
    bits : mapping, optional
        ``{input: 4 or 8}`` over :data:`INPUTS` (``"qkv"``, ``"o"``, ``"gate_up"``,
        ``"down"``); unnamed inputs are 8 bits.
    density : mapping, optional
        Kept fraction of each projection's input columns, ``{projection or input:
        fraction in [0, 1]}``; an input name sets all its projections, a projection
        name overrides its input's. Unnamed projections are dense (1).
    kv_bits : int, optional
        Bits of a KV-cache element; None keeps the accounting's
        :attr:`model.accounting.Precisions.kv_bits` (bf16).
    kv_bos_bits : int, optional
        Bits of position 0's keys and values (a4.8 keeps the BOS token at 4 bits with a
        3-bit cache); None: as every position.
    schedule : str
        How the kept columns are chosen (:data:`model.sparse.SCHEDULES`): ``"nonzero"``
        (data dependent) or ``"mask"`` (static, Block Q-Sparse). The counts are the
        same; the schedule says whether they are known before the data.
    description : str

    Attributes
    ----------
    bits, density : tuple
        ``((input, bits), ...)`` in :data:`INPUTS` order and ``((projection, density),
        ...)`` in :data:`PROJECTIONS` order.

    Raises
    ------
    ValueError
        On an unknown input or projection, bits not 4 or 8, a density outside [0, 1],
        bad KV bits or an unknown schedule.
    """

    name: str
    bits: object = None
    density: object = None
    kv_bits: int = None
    kv_bos_bits: int = None
    schedule: str = NONZERO
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a scheme needs a name, not {self.name!r}")
        bits = dict.fromkeys(INPUTS, 8)
        for key, value in dict(self.bits or {}).items():
            if key not in INPUTS:
                raise ValueError(f"bits are given per input ({', '.join(INPUTS)}), "
                                 f"not {key!r}")
            bits[key] = _check_bits(f"bits of {key}", value, ACT_BITS)
        density = dict.fromkeys(PROJECTIONS, 1)
        given = dict(self.density or {})
        for key in sorted(given, key=lambda k: k in PROJECTIONS):   # inputs first
            if key not in INPUTS and key not in PROJECTIONS:
                raise ValueError(f"density is given per projection "
                                 f"({', '.join(PROJECTIONS)}) or input "
                                 f"({', '.join(INPUTS)}), not {key!r}")
            value = _check_fraction(f"density of {key}", given[key])
            for p in INPUTS.get(key, (key,)):
                density[p] = value
        for name in ("kv_bits", "kv_bos_bits"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _check_bits(name, getattr(self, name)))
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, not "
                             f"{self.schedule!r}")
        object.__setattr__(self, "bits", tuple(bits.items()))
        object.__setattr__(self, "density", tuple(density.items()))

    def _projection(self, projection):
        if projection not in _INPUT_OF:
            raise ValueError(f"unknown projection {projection!r}; known: "
                             f"{', '.join(PROJECTIONS)}")
        return projection

    def act_bits(self, projection):
        """Bits of ``projection``'s input activations (4 or 8)."""
        return dict(self.bits)[_INPUT_OF[self._projection(projection)]]

    def density_of(self, projection):
        """Kept fraction of ``projection``'s input columns."""
        return dict(self.density)[self._projection(projection)]

    def kept(self, projection, in_features):
        """Columns a token keeps of ``projection``'s ``in_features``:
        ``floor(density * in_features)``, exactly."""
        return floor(_exact(self.density_of(projection)) * in_features)

    @property
    def dense(self):
        """True if every input is kept whole."""
        return all(d == 1 for _, d in self.density)

    def with_density(self, density):
        """This scheme with some densities replaced (measured ones, say): ``density``
        as the constructor's, applied over the current ones."""
        merged = dict(self.density)
        merged.update({p: v for key, v in dict(density).items()
                       for p in INPUTS.get(key, (key,))})
        unknown = set(merged) - set(PROJECTIONS)
        if unknown:
            raise ValueError(f"density is given per projection "
                             f"({', '.join(PROJECTIONS)}) or input ({', '.join(INPUTS)}), "
                             f"not {sorted(unknown)[0]!r}")
        return replace(self, bits=dict(self.bits), density=merged)

    def to_dict(self):
        return {"name": self.name, "description": self.description,
                "bits": dict(self.bits), "density": {p: float(d) for p, d in self.density},
                "kv_bits": self.kv_bits, "kv_bos_bits": self.kv_bos_bits,
                "schedule": self.schedule}


def b158():
    """BitNet b1.58: int8 activations everywhere, dense, the KV cache at the
    accounting's precision."""
    return ActivationScheme("b1.58", description="BitNet b1.58: int8, dense")


def a48(*, density=None, kv_bits=3):
    """BitNet a4.8 (arXiv 2411.04965): INT4 q/k/v and gate/up inputs, Top-K 50 % + INT8
    o input, INT8 down input; densities :data:`A48_DENSITY` (the paper's 7B sparsities)
    updated by ``density``; KV cache at ``kv_bits`` (3 or 4; with 3 the BOS position
    stays at 4 bits, as the paper's). The KV quantizer's scales are not charged (the
    paper gives no format; one 16-bit scale per head and position would add 16 bits per
    128 elements, 4 % of a 3-bit cache)."""
    kv_bits = _check_bits("kv_bits", kv_bits, (3, 4))
    scheme = ActivationScheme(
        "a4.8", bits={"qkv": 4, "o": 8, "gate_up": 4, "down": 8}, density=A48_DENSITY,
        kv_bits=kv_bits, kv_bos_bits=4 if kv_bits == 3 else None,
        description=f"BitNet a4.8: INT4 q/k/v/gate/up, Top-K 50 % + INT8 o, INT8 down; "
                    f"{kv_bits}-bit KV cache")
    return scheme.with_density(density) if density else scheme


def q_sparse(sparsity=Q_SPARSE_RATIO, *, density=None):
    """BitNet b1.58 + Q-Sparse (arXiv 2407.10969): Top-K on every linear input at
    sparsity ratio ``sparsity`` (0 <= r < 1; every input keeps ``int((1 - r) D)``
    columns), int8. The down input of a squared-ReLU model is sparser than that by
    itself; pass a measured ``density`` for it if known."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, Real) \
            or not 0 <= sparsity < 1:
        raise ValueError(f"the Q-Sparse sparsity ratio must be in [0, 1), not {sparsity!r}")
    kept = 1 - _exact(sparsity)
    scheme = ActivationScheme("q-sparse", density=dict.fromkeys(INPUTS, kept),
                              description=f"BitNet b1.58 + Q-Sparse Top-K, "
                                          f"r = {float(sparsity):g}")
    return scheme.with_density(density) if density else scheme


def block_q_sparse(n=16, m=32):
    """BitNet b1.58 + Block Q-Sparse N:M (default 16:32): a static mask keeping ``n``
    of every ``m`` consecutive channels of every linear input, int8."""
    for name, value in (("n", n), ("m", m)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise ValueError(f"Block Q-Sparse {name} must be a positive integer, not "
                             f"{value!r}")
    if n > m:
        raise ValueError(f"Block Q-Sparse N:M needs N <= M, not {n}:{m}")
    return ActivationScheme("block-q-sparse",
                            density=dict.fromkeys(INPUTS, Fraction(n, m)), schedule=MASK,
                            description=f"BitNet b1.58 + Block Q-Sparse {n}:{m}")


#: The presets by name, each a function of its parameters.
SCHEMES = {"b1.58": b158, "a4.8": a48, "q-sparse": q_sparse,
           "block-q-sparse": block_q_sparse}
#: The default scheme.
B158 = b158()


def get_scheme(name, **parameters):
    """The preset ``name`` of :data:`SCHEMES` with its ``parameters`` (``sparsity=`` for
    q-sparse, ``density=`` and ``kv_bits=`` for a4.8, ...).

    Raises
    ------
    ValueError
        For an unknown name, a parameter the preset does not take, or a bad value.
    """
    try:
        make = SCHEMES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation scheme {name!r}; known schemes: "
                         f"{', '.join(SCHEMES)}") from None
    try:
        return make(**parameters)
    except TypeError:
        raise ValueError(f"scheme {name!r} takes no parameter "
                         f"{', '.join(sorted(parameters))}") from None
