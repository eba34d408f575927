"""The accounting of a forward pass: every operation by kind and precision, every byte
moved by kind, and the unit that executes each operation.

It is not a second description of the model: :class:`model.decoder.Decoder` tells a
:class:`Ledger` of each operation as it runs (``Decoder(..., ledger=...)``), and
:func:`account` runs the decoder itself over weights that have shapes but no values
(zero-stride arrays, a core and an LM head that count instead of computing), so a
change to the decoder changes the figures. What each recorded operation costs (adds,
multiplies, special functions per element, bytes per element) is stated once, in
:data:`OP_RULES` below; the BitLinears' weight bytes come from the engine's tiling
(:class:`model.mapping.LayerTiling`).

Choices (the papers leave them open; each is a field of :class:`Precisions`):

* A BitLinear's ternary x int8 product is one int8 add per weight and token (the
  BitNet b1.58 paper's count); its rescale is one fp32 multiply per output.
* Attention scores and values use the KV cache's precision (bf16, the reference's,
  charged at the fp16 energies: the sources give no bf16 figure); softmax, norms, RoPE,
  squared ReLU, residual adds and the activation quantizer are fp32, as the golden model
  computes them. exp, rsqrt and divides are counted as "special" operations and charged
  as one fp32 multiply each (no source gives a figure; they are a negligible share).
* The LM head runs at its stored precision (bf16 for 2B4T, tied to the embedding); in
  the hardware numerics (``Precisions.hardware``) at its format's bytes
  (:func:`model.hwnum.head_bytes`), the embedding rows fetched in the same format.
* A prompt is one pass that computes the logits of its last position only.
* Bytes: ternary weights as the engine streams them (5 per byte, read once per token:
  the engine has no weight reuse across tokens yet), the LM head once per pass, the
  KV cache at ``kv_bits`` (each pass writes its tokens' keys and values and reads the
  positions cached before it once; its own keys and values are used on chip), the embedding rows and the norm weights (bf16) from DRAM;
  activations between operations on chip (SRAM).

Activation schemes (:mod:`model.schemes`; ``account(..., scheme=)``, default BitNet
b1.58, which gives the figures above):

* A BitLinear whose input has 4-bit activations does INT4 adds (``("int4", "add")``),
  otherwise INT8 adds; its activation bytes scale with the bits.
* A sparse input (density < 1) keeps ``scheme.kept(name, in_features)`` columns per
  token. On the sparse dataflow (:class:`hw.mapping.SparseTiling`) the BitLinear does
  ``kept x out_features`` adds per token, fetches the kept columns' weights
  (``SparseTiling.weight_bytes``) and streams ``SparseTiling.beats`` beats; the column
  indices are on-chip bytes (``"column_indices"``). The loop order is beat-major (the
  engine's accumulator bank holds every row tile, ``acc_tiles >= out_features / rows``),
  whose layer-column layout DRAM reads in whole bursts, so the kept columns' bytes are
  the bytes read; the tile-major order would read every burst holding a kept column
  (:func:`hw.mapping.burst_bytes`: about all of them at 80 % zeros). On the dense dataflow it does every
  add (the zeros included) and streams the dense tiling.
* Which dataflow a sparse projection uses (``dataflow=``): ``"auto"`` (default) the one
  that fetches fewer weight bytes, since weights are stored in one layout per
  projection and decode is memory-bound. A column-major tile column is
  ``ceil(rows / 5)`` bytes against ``ceil(rows * lanes / 5) / lanes`` per column in the
  dense beat, so the sparse layout pays off only below a density of 0.80 on the 16 x 32
  engine (0.91 on 32 x 64, 0.98 on 64 x 64). ``"sparse"`` or ``"dense"`` force one.
  Dense inputs always use the dense dataflow.
* The KV cache at the scheme's ``kv_bits`` (and position 0 at ``kv_bos_bits``), when it
  gives them.
* Not charged: the Top-K selection and the compaction (vector-unit work of a few
  compares per element, like the quantizer's), the KV quantizer's scales.
"""

import functools
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ternary_accel.model.config import ModelConfig
from ternary_accel.model.decoder import Decoder, KVCache
from ternary_accel.hw.mapping import DEFAULT_LANES, DEFAULT_ROWS, LayerTiling
from ternary_accel.model.quant import ACT_WIDTH
from ternary_accel.model.schemes import B158, ActivationScheme, get_scheme
from ternary_accel.model.sparse import BEAT_MAJOR
from ternary_accel.hw.mapping import SparseTiling
from ternary_accel.model.weights import NORMS, LayerWeights, TernaryProjection

__all__ = ["Precisions", "Ledger", "OP_RULES", "UNITS", "MEMORIES", "OpCost", "Accounting",
           "account", "batched", "SHARED_PER_PASS", "ENGINE", "VECTOR", "ATTENTION", "HEAD",
           "DRAM", "SRAM", "DATAFLOWS", "AUTO", "DENSE", "SPARSE", "Pass"]

#: The units that execute the operations. Only the layer engine exists as RTL.
ENGINE, VECTOR, ATTENTION, HEAD = "engine", "vector", "attention", "head"
UNITS = {
    ENGINE: "the layer engine (RTL: hw.engine.LayerEngine; cycles from its cycle model)",
    VECTOR: "a vector unit for norms, RoPE, quantizers, squared ReLU, residuals (no RTL)",
    ATTENTION: "an attention unit for scores, softmax and values (no RTL)",
    HEAD: "an LM head unit: a matrix-vector product at the head's precision (no RTL)",
}
#: Where bytes live: off-chip DRAM or on-chip SRAM.
DRAM, SRAM = "dram", "sram"
#: Byte kinds and their memory.
MEMORIES = {"ternary_weights": DRAM, "head_weights": DRAM, "embedding": DRAM,
            "norm_weights": DRAM, "kv_cache": DRAM, "activations": SRAM,
            "column_indices": SRAM}
#: How a sparse BitLinear runs: the dataflow with fewer weight bytes, or one forced.
AUTO, DENSE, SPARSE = "auto", "dense", "sparse"
DATAFLOWS = (AUTO, DENSE, SPARSE)


@dataclass(frozen=True)
class Precisions:
    """The precisions of the operations and stored data that the model leaves open."""

    vector: str = "fp32"       # norms, RoPE, softmax, squared ReLU, residuals, quantizer
    attention: str = "fp16"    # q k^T and p v products (bf16 operands, fp16 energies)
    head: str = "fp16"         # the LM head's multiply-adds (bf16 weights)
    kv_bits: int = 16          # the KV cache (bf16 in the reference)
    head_bits: int = 16        # LM head and embedding weights (bf16)
    norm_bits: int = 16        # RMSNorm weights (bf16)
    #: The hardware numerics whose LM head format (:func:`model.hwnum.head_row_bytes`)
    #: gives the head's and the embedding rows' bytes; None: ``head_bits`` a weight.
    numerics: object = None

    @classmethod
    def hardware(cls, numerics=None):
        """The precisions of the hardware numerics (:mod:`model.hwnum`, default widths
        :data:`model.hwnum.DEFAULT`): the vector and attention units' element-wise work
        at the residual width, the q.k and p.v products at the Q/K code width, the LM
        head at its weight width, the KV cache as codes (the per-head maxima, 2 x 24
        bits a head and position, are left out: 0.2 bits an element at head_dim 128),
        the norm gains at their width; the head's and the embedding rows' bytes are
        its format's (codes, group multipliers and row scales)."""
        from ternary_accel.model.hwnum import DEFAULT
        n = DEFAULT if numerics is None else numerics
        head_bits = 8 if n.head == "trit5" else n.head_bits      # a base-3 byte a weight
        return cls(vector=f"int{n.resid_bits}", attention=f"int{max(n.qk_bits, 8)}",
                   head=f"int{max(head_bits, 8)}", kv_bits=max(n.qk_bits, n.v_bits),
                   head_bits=head_bits, norm_bits=n.gain_bits, numerics=n)

    def head_row_bytes(self, width):
        """Bytes of one row of the LM head (or of the tied embedding) of ``width``
        weights: the numerics' format with its row scale, else ``head_bits`` a weight."""
        if self.numerics is None:
            return width * self.head_bits // 8
        from ternary_accel.model.hwnum import head_row_bytes, head_scale_bytes
        return head_row_bytes(width, self.numerics) + head_scale_bytes(self.numerics)

    def __post_init__(self):
        for name in ("kv_bits", "head_bits", "norm_bits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive number of bits, not {value!r}")


class Ledger:
    """Collects what the decoder tells of each operation: ``(kind, layer, name, sizes)``."""

    def __init__(self):
        self.records = []

    def record(self, kind, *, layer=None, name=None, **sizes):
        if kind not in OP_RULES:
            raise ValueError(f"unknown operation kind {kind!r}")
        self.records.append((kind, layer, name, sizes))


@dataclass
class OpCost:
    """One operation of a pass: its unit, arithmetic and bytes.

    Attributes
    ----------
    kind, layer, name : str, int or None, str or None
    unit : str
        A key of :data:`UNITS`.
    ops : dict
        ``{(precision, op): count}`` with op ``"add"``, ``"mul"`` or ``"special"``.
    bytes : dict
        ``{byte kind: bytes}`` (:data:`MEMORIES` says where each kind lives).
    macs : int
        Multiply-accumulates (for a BitLinear: ternary adds), the work of its unit.
    beats : int
        Engine beats (BitLinears only; 0 otherwise).
    sizes : dict
        The sizes the decoder recorded (tokens, widths, ...).
    kept : tuple of int or None
        A BitLinear on the sparse dataflow: the columns each token keeps
        (:class:`hw.mapping.SparseTiling`); None on the dense dataflow.
    """

    kind: str
    layer: object
    name: object
    unit: str
    sizes: dict = field(default_factory=dict)
    ops: dict = field(default_factory=dict)
    bytes: dict = field(default_factory=dict)
    macs: int = 0
    beats: int = 0
    kept: tuple = None


@dataclass(frozen=True)
class Pass:
    """What the rules need to know of the pass beyond a record's sizes: the engine
    (``lanes`` x ``rows``), the activation ``scheme``, the ``dataflow`` policy, the
    cached positions before the pass (``context``) and the KV cache's bits."""

    lanes: int = DEFAULT_LANES
    rows: int = DEFAULT_ROWS
    scheme: ActivationScheme = B158
    dataflow: str = AUTO
    context: int = 0
    kv_bits: int = 16
    #: The engine's weight reuse (T) and weight port (:class:`model.mapping.LayerTiling`).
    weight_reuse: int = 1
    port_bits: int = None
    packing: str = None

    def tiling(self, name, out_features, in_features, tokens):
        """The BitLinear ``name``'s tiling: a :class:`LayerTiling` (dense dataflow) or a
        :class:`SparseTiling` (sparse), per :data:`DATAFLOWS`."""
        dense = LayerTiling(out_features, in_features, tokens, self.lanes, self.rows,
                            batch=self.weight_reuse, port_bits=self.port_bits,
                            packing=self.packing)
        if self.scheme.density_of(name) == 1 or self.dataflow == DENSE:
            return dense
        kept = self.scheme.kept(name, in_features)
        sparse = SparseTiling(out_features, in_features, (kept,) * tokens, self.lanes,
                              self.rows, BEAT_MAJOR)
        if self.dataflow == SPARSE or sparse.weight_bytes < dense.weight_bytes:
            return sparse
        return dense


def _elementwise(unit, add=0, mul=0, special=0, per_row_special=0, on_chip=2):
    """Rule of an element-wise operation at the vector precision: per element ``add``,
    ``mul`` and ``special`` operations, ``per_row_special`` per token, and ``on_chip``
    fp32 reads and writes of activations per element."""
    def rule(sizes, p, run, name):
        n = sizes["tokens"] * sizes["width"]
        ops = {(p.vector, "add"): add * n, (p.vector, "mul"): mul * n,
               (p.vector, "special"): special * n + per_row_special * sizes["tokens"]}
        return unit, ops, {"activations": on_chip * 4 * n}, 0, 0
    return rule


def _rms_norm(sizes, p, run, name):
    # x*x, the sum, x*inv, w*: 3 multiplies and 1 add an element; rsqrt once a row.
    unit, ops, moved, _, _ = _elementwise(VECTOR, add=1, mul=3, per_row_special=1)(
        sizes, p, run, name)
    moved["norm_weights"] = sizes["width"] * p.norm_bits // 8
    return unit, ops, moved, 0, 0


def _bitlinear(sizes, p, run, name):
    t, m, k = sizes["tokens"], sizes["out_features"], sizes["in_features"]
    mapping = run.tiling(name, m, k, t)
    bits = run.scheme.act_bits(name)
    sparse = isinstance(mapping, SparseTiling)
    adds = m * sum(mapping.kept) if sparse else t * m * k
    ops = {("int4" if bits == 4 else "int8", "add"): adds, ("fp32", "mul"): t * m}
    moved = {"ternary_weights": mapping.weight_bytes,
             "activations": mapping.activation_bytes * bits // ACT_WIDTH + t * m * 4}
    if sparse:
        moved["column_indices"] = mapping.index_bytes
    return ENGINE, ops, moved, adds, mapping.beats


def _rope(sizes, p, run, name):
    n = sizes["tokens"] * sizes["heads"] * sizes["head_dim"]
    return VECTOR, {(p.vector, "mul"): 2 * n, (p.vector, "add"): n}, \
        {"activations": 2 * 4 * n}, 0, 0


def _kv(sizes_key):
    def rule(sizes, p, run, name):
        n = sizes[sizes_key] * sizes["width"]
        bits = n * run.kv_bits
        # Position 0 (BOS) at its own bits: read by every pass after the first, written
        # by a pass that starts at 0.
        has_bos = sizes["positions"] > 0 if sizes_key == "positions" else run.context == 0
        if run.scheme.kv_bos_bits is not None and has_bos and n:
            bits += sizes["width"] * (run.scheme.kv_bos_bits - run.kv_bits)
        return ATTENTION, {}, {"kv_cache": bits // 8}, 0, 0
    return rule


def _attention_product(sizes, p, run, name):
    macs = sizes["pairs"] * sizes["heads"] * sizes["head_dim"]
    return ATTENTION, {(p.attention, "mul"): macs, (p.attention, "add"): macs}, {}, macs, 0


def _softmax(sizes, p, run, name):
    # the 1/sqrt(d) scale, minus the max, exp, the sum, the normalising multiply
    n = sizes["pairs"] * sizes["heads"]
    return ATTENTION, {(p.vector, "mul"): 2 * n, (p.vector, "add"): 2 * n,
                       (p.vector, "special"): n}, {"activations": 2 * 4 * n}, 0, 0


def _embedding(sizes, p, run, name):
    return VECTOR, {}, {"embedding": sizes["tokens"] * p.head_row_bytes(sizes["width"]),
                        "activations": sizes["tokens"] * sizes["width"] * 4}, 0, 0


def _lm_head(sizes, p, run, name):
    macs = sizes["tokens"] * sizes["vocab"] * sizes["width"]
    return HEAD, {(p.head, "mul"): macs, (p.head, "add"): macs}, \
        {"head_weights": sizes["vocab"] * p.head_row_bytes(sizes["width"]),
         "activations": sizes["tokens"] * (sizes["width"] + sizes["vocab"]) * 4}, macs, 0


#: What one recorded operation costs, by kind: ``rule(sizes, precisions, run, name) ->
#: (unit, ops, bytes, macs, beats)`` (``run`` a :class:`Pass`, ``name`` the record's).
OP_RULES = {
    "embedding": _embedding,
    "rms_norm": _rms_norm,
    # absmax (a compare an element), the scale (one divide a token), x*s and round/clip
    "act_quant": _elementwise(VECTOR, add=2, mul=1, per_row_special=1, on_chip=1),
    "bitlinear": _bitlinear,
    "rope": _rope,
    "kv_write": _kv("tokens"),
    "kv_read": _kv("positions"),
    "attn_scores": _attention_product,
    "softmax": _softmax,
    "attn_values": _attention_product,
    "relu2": _elementwise(VECTOR, add=1, mul=2, on_chip=3),   # max(g, 0), g*g, *up
    "residual": _elementwise(VECTOR, add=1, on_chip=3),
    "lm_head": _lm_head,
}


@dataclass
class Accounting:
    """The operations of one pass (:func:`account`) and their totals.

    Attributes
    ----------
    config : ModelConfig
    tokens, context : int
        The pass processed ``tokens`` new tokens after ``context`` cached ones.
    lanes, rows : int
        The engine whose tiling gave the ternary weight bytes.
    precisions : Precisions
    costs : list of OpCost
    scheme : ActivationScheme
        The activations the BitLinears and the KV cache were charged for.
    dataflow : str
        The dataflow policy of sparse BitLinears (:data:`DATAFLOWS`).
    batch : int
        Sequences of the pass (:func:`batched`).
    """

    config: ModelConfig
    tokens: int
    context: int
    lanes: int
    rows: int
    precisions: Precisions
    costs: list
    scheme: ActivationScheme = B158
    dataflow: str = AUTO
    batch: int = 1
    #: The engine's weight reuse, port width and packing (:func:`account`).
    weight_reuse: int = 1
    port_bits: int = None
    packing: str = None

    def with_scheme(self, scheme, dataflow=None):
        """The same pass charged for another activation ``scheme`` (an
        :class:`~model.schemes.ActivationScheme` or a preset's name) and ``dataflow``
        (default: this one's): the decoder's records re-costed, without running it
        again.

        Raises
        ------
        ValueError
            On a batched accounting (re-cost before :func:`batched`), an unknown scheme
            or dataflow.
        """
        if self.batch != 1:
            raise ValueError("re-cost a pass before batching it")
        records = [(c.kind, c.layer, c.name, c.sizes) for c in self.costs]
        return _costed(self.config, self.tokens, self.context, self.lanes, self.rows,
                       self.precisions, records, scheme,
                       self.dataflow if dataflow is None else dataflow, self.engine_port)

    def on_engine(self, lanes, rows, weight_reuse=1, port_bits=None, packing=None):
        """The same pass charged on another engine (its tiling's weight bytes and
        beats), without running the decoder again.

        Raises
        ------
        ValueError
            On a batched accounting, or projections that do not tile onto the engine.
        """
        if self.batch != 1:
            raise ValueError("re-cost a pass before batching it")
        port = {"weight_reuse": weight_reuse, "port_bits": port_bits, "packing": packing}
        for p in self.config.shape.projections():
            LayerTiling(p.out_features, p.in_features, 1, lanes, rows, batch=weight_reuse,
                        port_bits=port_bits, packing=packing)
        records = [(c.kind, c.layer, c.name, c.sizes) for c in self.costs]
        return _costed(self.config, self.tokens, self.context, lanes, rows,
                       self.precisions, records, self.scheme, self.dataflow, port)

    @property
    def engine_port(self):
        """The engine's weight reuse, port width and packing, as :func:`account` takes
        them."""
        return {"weight_reuse": self.weight_reuse, "port_bits": self.port_bits,
                "packing": self.packing}

    def ops(self, unit=None):
        """``{(precision, op): count}`` summed over the pass (or one unit's operations)."""
        total = defaultdict(int)
        for cost in self.costs:
            if unit is None or cost.unit == unit:
                for key, n in cost.ops.items():
                    total[key] += n
        return {k: v for k, v in total.items() if v}

    def bytes(self, memory=None):
        """``{byte kind: bytes}`` summed over the pass (or those of one memory)."""
        total = defaultdict(int)
        for cost in self.costs:
            for kind, n in cost.bytes.items():
                if memory is None or MEMORIES[kind] == memory:
                    total[kind] += n
        return dict(total)

    @property
    def dram_bytes(self):
        return sum(self.bytes(DRAM).values())

    def by_kind(self):
        """Costs merged by operation kind (BitLinears by projection name):
        ``{label: OpCost}`` in the order of the pass."""
        merged = {}
        for cost in self.costs:
            label = f"bitlinear {cost.name}" if cost.kind == "bitlinear" else cost.kind
            if label not in merged:
                merged[label] = OpCost(cost.kind, None, cost.name if cost.kind == "bitlinear"
                                       else None, cost.unit, dict(cost.sizes))
            target = merged[label]
            for key, n in cost.ops.items():
                target.ops[key] = target.ops.get(key, 0) + n
            for key, n in cost.bytes.items():
                target.bytes[key] = target.bytes.get(key, 0) + n
            target.macs += cost.macs
            target.beats += cost.beats
        return merged

    def to_dict(self):
        return {"model": self.config.shape.name, "tokens": self.tokens,
                "context": self.context, "lanes": self.lanes, "rows": self.rows,
                "precisions": asdict(self.precisions), "scheme": self.scheme.to_dict(),
                "dataflow": self.dataflow, "batch": self.batch,
                "ops": [{"precision": p, "op": o, "count": n}
                        for (p, o), n in sorted(self.ops().items())],
                "bytes": self.bytes()}


class _ShapeOnlyWeights:
    """Weights with the configuration's shapes and no values: zero-stride arrays."""

    def __init__(self, config):
        self.config = config
        projections = {p.name: TernaryProjection.zeros(p.out_features, p.in_features)
                       for p in config.shape.projections()}
        widths = {"input_layernorm": config.hidden, "attn_sub_norm": config.hidden,
                  "post_attention_layernorm": config.hidden, "ffn_sub_norm": config.ffn}
        norms = {name: np.broadcast_to(np.float32(1), (widths[name],)) for name in NORMS}
        self._layer = LayerWeights(projections, norms)
        self._table = np.broadcast_to(np.float32(0), (config.vocab, config.hidden))

    def layer(self, index):
        return self._layer

    def embedding(self):
        return self._table

    def lm_head(self):
        return self._table

    def final_norm(self):
        return np.broadcast_to(np.float32(1), (self.config.hidden,))


def _counting_core(weights, activations, *, layer=None, name=None):
    return np.zeros((activations.shape[0], weights.shape[0]), dtype=np.int64)


def _counting_head(matrix, x):
    return np.zeros((x.shape[0], matrix.shape[0]), dtype=np.float32)


def _positive(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        kind = "a positive" if minimum == 1 else "a non-negative"
        raise ValueError(f"{name} must be {kind} integer, not {value!r}")


def account(config, *, tokens=1, context=0, lanes=DEFAULT_LANES, rows=DEFAULT_ROWS,
            precisions=Precisions(), scheme=B158, dataflow=AUTO, weight_reuse=1,
            port_bits=None, packing=None):
    """Run the decoder over ``tokens`` new tokens after ``context`` cached positions
    (a prompt: ``tokens=T, context=0``; a decode step at context L: ``tokens=1,
    context=L``), counting instead of computing, and cost every operation.

    Parameters
    ----------
    config : ModelConfig
    tokens, context : int
    lanes, rows : int
        The engine the BitLinears are tiled onto (their weight bytes and beats).
    precisions : Precisions
        The scheme's ``kv_bits``, when it gives them, replace ``precisions.kv_bits``.
    scheme : ActivationScheme or str
        The activations (:mod:`model.schemes`; a preset's name gives its defaults).
        Default BitNet b1.58: int8, dense.
    dataflow : str
        Sparse BitLinears on the dataflow with fewer weight bytes (``"auto"``), or on
        ``"sparse"`` or ``"dense"`` (:data:`DATAFLOWS`).
    weight_reuse, port_bits, packing
        The engine's weight reuse T (a dense BitLinear's weights are read once per T
        tokens), weight port and packing (:class:`model.mapping.LayerTiling`'s
        ``batch``, ``port_bits`` and ``packing``).

    Returns
    -------
    Accounting

    Raises
    ------
    ValueError
        On a non-positive ``tokens``, a negative ``context``, a sequence longer than
        ``max_position_embeddings``, projections that do not tile onto the engine, an
        unknown scheme or dataflow.
    """
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig, not {type(config).__name__}")
    _positive("tokens", tokens)
    _positive("context", context, minimum=0)
    # checked here, before the cache of `context` positions is allocated
    if context + tokens > config.max_position_embeddings:
        raise ValueError(f"context + tokens ({context} + {tokens}) exceed the model's "
                         f"max_position_embeddings ({config.max_position_embeddings})")
    scheme = _checked_scheme(scheme, dataflow)
    port = {"weight_reuse": weight_reuse, "port_bits": port_bits, "packing": packing}
    for p in config.shape.projections():        # a clear error before the run
        LayerTiling(p.out_features, p.in_features, 1, lanes, rows, batch=weight_reuse,
                    port_bits=port_bits, packing=packing)
    return _costed(config, tokens, context, lanes, rows, precisions, _records(config, tokens, context),
                   scheme, dataflow, port)


@functools.lru_cache(maxsize=16)
def _records(config, tokens, context):
    """The decoder's records of a pass of ``tokens`` after ``context`` positions: they
    depend on the model's shape alone, so a pass charged on several engines, precisions
    or schemes runs the decoder once (a tuple; each record's sizes are copied by
    :func:`_costed`)."""
    ledger = Ledger()
    decoder = Decoder(_ShapeOnlyWeights(config), core=_counting_core, head=_counting_head,
                      ledger=ledger)
    cache = KVCache()
    if context:
        kv_shape = (config.kv_heads, context, config.head_dim)
        empty = np.zeros(kv_shape, dtype=np.float32)
        cache = KVCache({i: empty for i in range(config.layers)},
                        {i: empty for i in range(config.layers)}, context)
    decoder.forward(np.zeros(tokens, dtype=np.int64), cache, logits="last")

    return tuple(ledger.records)


def _checked_scheme(scheme, dataflow):
    if isinstance(scheme, str):
        scheme = get_scheme(scheme)
    if not isinstance(scheme, ActivationScheme):
        raise ValueError(f"scheme must be an ActivationScheme or a preset's name, not "
                         f"{scheme!r}")
    if dataflow not in DATAFLOWS:
        raise ValueError(f"dataflow must be one of {', '.join(DATAFLOWS)}, not "
                         f"{dataflow!r}")
    return scheme


def _costed(config, tokens, context, lanes, rows, precisions, records, scheme, dataflow,
            port=None):
    """The :class:`Accounting` of the decoder's ``records`` of a pass (``port``: the
    engine's ``weight_reuse``, ``port_bits``, ``packing``)."""
    scheme = _checked_scheme(scheme, dataflow)
    kv_bits = precisions.kv_bits if scheme.kv_bits is None else scheme.kv_bits
    port = port or {}
    run = Pass(lanes, rows, scheme, dataflow, context, kv_bits, **port)
    costs = []
    for kind, layer, name, sizes in records:
        unit, ops, moved, macs, beats = OP_RULES[kind](sizes, precisions, run, name)
        kept = None
        if kind == "bitlinear":
            tiling = run.tiling(name, sizes["out_features"], sizes["in_features"],
                                sizes["tokens"])
            kept = tiling.kept if isinstance(tiling, SparseTiling) else None
        costs.append(OpCost(kind, layer, name, unit, dict(sizes),
                            {k: v for k, v in ops.items() if v},
                            {k: v for k, v in moved.items() if v}, macs, beats, kept))
    return Accounting(config, tokens, context, lanes, rows, precisions, costs, scheme,
                      dataflow, **port)


#: Byte kinds read once per pass however many sequences it carries.
SHARED_PER_PASS = ("head_weights", "norm_weights")


def batched(accounting, batch):
    """``batch`` sequences decoded in one pass, each as ``accounting``'s pass: their work
    and their own bytes (KV cache, embedding rows, activations; ternary weights too,
    once per the engine's weight reuse ``weight_reuse`` tokens: with none, per token)
    times ``batch``, the bytes in :data:`SHARED_PER_PASS` once. ``tokens`` becomes
    ``tokens * batch``."""
    _positive("batch", batch)
    if batch == 1:
        return accounting
    costs = []
    for cost in accounting.costs:
        sizes = dict(cost.sizes)
        if "tokens" in sizes:
            sizes["tokens"] *= batch
        moved = {k: v if k in SHARED_PER_PASS else v * batch for k, v in cost.bytes.items()}
        if cost.kind == "bitlinear" and cost.kept is None and "ternary_weights" in moved:
            # the engine's weight reuse: the batch's tokens share each weight beat
            moved["ternary_weights"] = LayerTiling(
                sizes["out_features"], sizes["in_features"], sizes["tokens"],
                accounting.lanes, accounting.rows, batch=accounting.weight_reuse,
                port_bits=accounting.port_bits, packing=accounting.packing).weight_bytes
        costs.append(OpCost(cost.kind, cost.layer, cost.name, cost.unit, sizes,
                            {k: v * batch for k, v in cost.ops.items()}, moved,
                            cost.macs * batch, cost.beats * batch,
                            None if cost.kept is None else cost.kept * batch))
    return replace(accounting, tokens=accounting.tokens * batch, costs=costs,
                   batch=accounting.batch * batch)
