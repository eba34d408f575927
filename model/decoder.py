"""The BitNet b1.58 decoder (2B4T's architecture) in NumPy, with a KV cache and greedy
generation.

One layer (``docs/models.md``; x is T x hidden)::

    h = RMSNorm_in(x); q, k, v = BL_q(h), BL_k(h), BL_v(h); RoPE(q, k)
    a = softmax(q k^T / sqrt(head_dim) + causal mask) v       (grouped-query)
    x = x + BL_o(RMSNorm_attn_sub(a))
    h = RMSNorm_post(x); f = relu(BL_gate(h))^2 * BL_up(h)
    x = x + BL_down(RMSNorm_ffn_sub(f))

then ``logits = RMSNorm_final(x) E^T`` with the (tied) full-precision LM head.

Every BitLinear goes through :meth:`Decoder.bit_linear`, the one call site of "the
linear layer": quantize the activations per token, hand the int8 activations and the
ternary weights to the *integer core*, rescale the exact accumulators. The core is
:class:`GoldenCore` (:func:`model.arith.matmul_int`) by default; any object with the
same call (the RTL engine under Verilator, ``sim.session.EngineCore``) can replace it,
and since the core's result is an exact integer, the model's numbers stay bit-identical
whenever the core is right.

Numerics (float32 throughout unless stated):

* Hidden states, residual adds, norms, attention and the LM head are float32.
* RMSNorm: ``w * (x * 1/sqrt(mean(x^2) + eps))``, the mean and the reciprocal square
  root in float32 (the reference casts to the model dtype before multiplying by ``w``;
  here the model dtype is float32).
* RoPE: ``inv_freq = theta ** (-2i / head_dim)`` and the angles ``position * inv_freq``
  in float32, as transformers computes them; ``cos``/``sin`` come from one table per
  decoder, so a position gets the same values in a prefill and in a decode step.
* Softmax in float32 (max subtracted). Attention is evaluated per query position over
  its causal prefix only, and the LM head per token, so every reduction has the same
  length and order whether the token is part of a prompt or decoded alone: decoding with
  the KV cache gives bit-identical logits to recomputing the whole sequence.
* The KV cache holds post-RoPE keys and values in float32 (the reference holds bf16).
* Activation quantizer: float64 by default (the project's quantizer); ``act_quant``
  selects the float32 evaluation of PyTorch or bitnet.cpp (``docs/models.md``, "Reference
  numerics") to check the accelerator against a given runtime.
* BitLinear output: ``acc * (weight_scale / s)``, the factor in float64, the product
  rounded once to float32.

Activation modes (``docs/a48-qsparse.md``; :class:`Decoder` parameters):

* ``activations="a8"`` (default): every BitLinear input int8 absmax, as above.
* ``activations="a4.8"`` (BitNet a4.8): q/k/v and gate/up inputs INT4 absmean
  (:func:`model.quant.quantize_activations_int4`); the o input Top-K 50 % per token
  (``k = D // 2``, mask from the unquantized ``|x|``) then int8 absmax; the down input int8
  absmax. Gate first: ``up`` is only needed where ``relu(gate)^2 != 0``; the core still
  computes every output of up (the engine has no output skipping), the others are
  zeroed, which changes nothing (their product with the gate is 0), and the ledger
  counts the needed ones. The int4 values travel to the core as int8 in -8..7.
* ``activations="float"``: no activation quantizer and no integer core: each BitLinear
  is ``x @ (values * scale)^T`` in float32 (after any Top-K mask). With ternary weights
  this is the checkpoint "in float", the reference an evaluation compares the hardware's
  numerics with; with full-precision weights (:class:`model.weights.FloatProjection`,
  :meth:`model.checkpoint.Checkpoint.full_precision`) it is a float model's own forward
  pass. Full-precision weights need this mode.
* ``topk=r`` (Q-Sparse): every BitLinear input keeps its ``int((1 - r) D)`` largest ``|x|``
  per token (:func:`model.quant.topk_count`); ``block_topk=(N, M)`` keeps N of every M
  consecutive channels instead. The mask is taken on the full-precision input and
  applied *before* the projection's quantizer (for int8 absmax the order does not
  matter: the token's max survives; for INT4 absmean beta is the mean of the masked
  row). When masks combine (a4.8's o Top-K and a Q-Sparse mask) an entry survives only
  if every mask keeps it; for two Top-K masks that is the smaller K.
* ``kv_bits=3|4``: the KV cache holds keys (after RoPE) and values quantized
  (:func:`model.quant.quantize_kv`, per head and position); the cache arrays hold the
  dequantized codes, exactly what an unpacking read would give. With 3 bits position 0
  (the BOS token of a prompt that starts with one) stays at 4 bits unless
  ``kv_bos_4bit=False``.
"""

from dataclasses import dataclass, field
from numbers import Integral

import numpy as np

from ternary_accel.model.arith import matmul_int
from ternary_accel.model.quant import (ACT_QUANT_PATHS, FLOAT64, KV_BITS, block_topk_mask, dequantize_kv,
                    quantize_activations_as, quantize_activations_int4, quantize_kv,
                    topk_count, topk_mask)
from ternary_accel.model.weights import PROJECTIONS

__all__ = ["GoldenCore", "KVCache", "Decoder", "Generation", "generate", "rms_norm",
           "matvec_head",
           "rope_tables", "apply_rope", "rotate_half",
           "A8", "A4_8", "A_FLOAT", "ACTIVATION_MODES", "A48_INT4_INPUTS", "A48_TOPK_INPUTS"]

#: Every BitLinear input int8 absmax (BitNet b1.58).
A8 = "a8"
#: BitNet a4.8: INT4 absmean, Top-K 50 % + int8, int8 by projection.
A4_8 = "a4.8"
#: No activation quantizer: every BitLinear in float32 (the reference of an evaluation).
A_FLOAT = "float"
ACTIVATION_MODES = (A8, A4_8, A_FLOAT)
#: The projections whose input a4.8 quantizes to INT4 absmean.
A48_INT4_INPUTS = ("q", "k", "v", "gate", "up")
#: The projections whose input a4.8 sparsifies with Top-K 50 % before int8 absmax.
A48_TOPK_INPUTS = ("o",)


class GoldenCore:
    """The golden integer core of every BitLinear: :func:`model.arith.matmul_int`.

    A core is called as ``core(weights, activations, layer=L, name=P)`` with ternary
    ``weights`` (M, K) int8 and ``activations`` (T, K) int8, and returns the exact
    accumulators (T, M) int64. ``layer`` and ``name`` say which projection it is
    (for statistics; the golden core ignores them).
    """

    name = "golden"

    def __call__(self, weights, activations, *, layer=None, name=None):
        return matmul_int(weights, activations)


def matvec_head(matrix, x):
    """The default LM head product: ``matrix @ row`` for each row of ``x`` (T, hidden),
    one row at a time, so a prompt token and a decoded token get the same reduction."""
    return np.stack([matrix @ row for row in x]).astype(np.float32)


def rms_norm(x, weight, eps):
    """RMSNorm over the last axis in float32: ``w * (x / sqrt(mean(x^2) + eps))``."""
    x = np.asarray(x, dtype=np.float32)
    variance = np.mean(x * x, axis=-1, keepdims=True, dtype=np.float32)
    inv = np.float32(1) / np.sqrt(variance + np.float32(eps))
    return np.asarray(weight, dtype=np.float32) * (x * inv)


def rope_tables(head_dim, theta, positions):
    """``cos`` and ``sin`` tables, (positions, head_dim) float32, non-interleaved:
    column ``i`` and ``i + head_dim/2`` share the frequency ``theta ** (-2i/head_dim)``."""
    exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    inv_freq = np.float32(1) / (np.float32(theta) ** exponents)
    angles = np.arange(positions, dtype=np.float32)[:, None] * inv_freq[None, :]
    angles = np.concatenate([angles, angles], axis=1)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def rotate_half(x):
    """``[a, b] -> [-b, a]`` over the last axis."""
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x, cos, sin):
    """RoPE of ``x`` (heads, T, head_dim) with the tables' rows for its T positions."""
    return x * cos[None] + rotate_half(x) * sin[None]


@dataclass
class KVCache:
    """Post-RoPE keys and values of every processed position, by layer index:
    (kv_heads, length, head_dim) float32 each. ``length`` counts the positions that
    :meth:`Decoder.forward` has processed."""

    keys: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)
    length: int = 0


@dataclass
class Generation:
    """Outcome of :func:`generate`.

    Attributes
    ----------
    prompt_ids, generated_ids : list of int
    logits : numpy.ndarray of float32, (len(prompt) + len(generated), vocab)
        One row per processed position: the prompt's positions, then one per generated
        token (row ``i`` is the next-token distribution after position ``i``; the row
        before each generated token is the one it was chosen from).
    """

    prompt_ids: list
    generated_ids: list
    logits: np.ndarray


class Decoder:
    """A BitNet b1.58 decoder over a source of weights.

    Parameters
    ----------
    weights
        A source of weights with ``config``, ``embedding()``, ``lm_head()``,
        ``final_norm()`` and ``layer(i)`` (:class:`model.weights.MasterWeights`,
        :class:`model.checkpoint.Checkpoint`).
    core : callable, optional
        The integer core of every BitLinear (default :class:`GoldenCore`).
    act_quant : str
        Evaluation path of the activation quantizer (:data:`model.quant.ACT_QUANT_PATHS`).
    cache_layers : bool
        Keep each layer's weights (int8) after first use; otherwise read them from the
        source on every pass (bounded memory for large checkpoints).
    head : callable, optional
        The LM head's product, ``head(matrix, x) -> (T, vocab)`` (default
        :func:`matvec_head`).
    ledger : optional
        Told of every operation as it runs (``ledger.record(kind, layer=, name=,
        **sizes)``, :class:`model.accounting.Ledger`): the decoder's own account of a
        forward pass, from which the performance and energy figures are derived. A
        ``"bitlinear"`` record has ``tokens``, ``out_features``, ``in_features`` and
        ``act_bits`` (4 or 8); with ``count_nonzero`` also the data-dependent counts.
    activations : str
        ``"a8"`` (default, BitNet b1.58) or ``"a4.8"`` (:data:`ACTIVATION_MODES`; the
        module docstring says what each quantizes how). ``act_quant`` applies to the
        int8 quantizers only; the INT4 quantizer is float64.
    topk : float, optional
        Q-Sparse sparsity ratio r, 0 <= r < 1: every BitLinear input keeps
        ``int((1 - r) D)`` entries per token.
    block_topk : (int, int), optional
        Block Q-Sparse N:M (e.g. ``(16, 32)``) on every BitLinear input; M must divide
        the hidden and FFN widths. Exclusive with ``topk``.
    kv_bits : int, optional
        3 or 4: the KV cache holds quantized keys and values (default: float32).
    kv_bos_4bit : bool
        With ``kv_bits=3``, keep position 0 at 4 bits (a4.8's BOS rule; default True).
    gate_first : bool
        In a4.8, zero the up outputs where ``relu(gate)^2`` is 0 and count the needed
        ones (default True; exact, the result is the same as without).
    count_nonzero : bool
        Add data-dependent counts to the ``"bitlinear"`` records: ``nonzero``, the
        nonzero quantized activations over the call's tokens, and for a4.8's gate-first
        up ``needed_outputs``, the (token, output) pairs whose gate is nonzero. Off by
        default: a shape-only counting pass (:func:`model.accounting.account`) has no
        meaningful data, and its records must equal a real pass's.

    Raises
    ------
    ValueError
        On an unknown ``act_quant`` or ``activations``, a ratio outside [0, 1), an
        invalid N:M or one whose M does not divide the widths, both ``topk`` and
        ``block_topk``, or ``kv_bits`` not 3 or 4.
    """

    def __init__(self, weights, *, core=None, act_quant=FLOAT64, cache_layers=True,
                 head=None, ledger=None, activations=A8, topk=None, block_topk=None,
                 kv_bits=None, kv_bos_4bit=True, gate_first=True, count_nonzero=False):
        if act_quant not in ACT_QUANT_PATHS:
            raise ValueError(f"act_quant must be one of {ACT_QUANT_PATHS}, not {act_quant!r}")
        if activations not in ACTIVATION_MODES:
            raise ValueError(f"activations must be one of {ACTIVATION_MODES}, not "
                             f"{activations!r}")
        if topk is not None and block_topk is not None:
            raise ValueError("topk and block_topk are mutually exclusive: give one "
                             "Q-Sparse mask")
        if topk is not None:
            topk_count(1, topk)                 # checks the ratio (ValueError)
        if block_topk is not None:
            block_topk = self._check_block(block_topk, weights.config)
        if kv_bits is not None and (isinstance(kv_bits, bool) or kv_bits not in KV_BITS):
            raise ValueError(f"kv_bits must be one of {KV_BITS} or None, not {kv_bits!r}")
        self.activations = activations
        self.topk = topk
        self.block_topk = block_topk
        self.kv_bits = kv_bits
        self.kv_bos_4bit = bool(kv_bos_4bit)
        self.gate_first = bool(gate_first)
        self.count_nonzero = bool(count_nonzero)
        self.weights = weights
        self.config = weights.config
        self.core = GoldenCore() if core is None else core
        self.act_quant = act_quant
        self.cache_layers = cache_layers
        self.head = matvec_head if head is None else head
        self.ledger = ledger
        self._layers = {}
        self._embedding = None
        self._lm_head = None
        self._final_norm = None
        self._rope = rope_tables(self.config.head_dim, self.config.rope_theta,
                                 self.config.max_position_embeddings)

    # -- weights -------------------------------------------------------------------------
    def layer_weights(self, index):
        if index in self._layers:
            return self._layers[index]
        layer = self.weights.layer(index)
        layer.check(self.config, index)
        if self.cache_layers:
            self._layers[index] = layer
        return layer

    @property
    def embedding(self):
        if self._embedding is None:
            self._embedding = np.asarray(self.weights.embedding(), dtype=np.float32)
        return self._embedding

    @property
    def lm_head(self):
        if self._lm_head is None:
            self._lm_head = self.embedding if self.config.tie_word_embeddings \
                else np.asarray(self.weights.lm_head(), dtype=np.float32)
        return self._lm_head

    @property
    def final_norm(self):
        if self._final_norm is None:
            self._final_norm = np.asarray(self.weights.final_norm(), dtype=np.float32)
        return self._final_norm

    def _record(self, kind, layer=None, name=None, **sizes):
        if self.ledger is not None:
            self.ledger.record(kind, layer=layer, name=name, **sizes)

    @staticmethod
    def _check_block(block, config):
        try:
            n, m = block
        except (TypeError, ValueError):
            raise ValueError(f"block_topk must be a pair (N, M), not {block!r}") from None
        for v in (n, m):
            if isinstance(v, bool) or not isinstance(v, Integral):
                raise ValueError(f"block_topk N:M must be integers, not {block!r}")
        if not 0 < n <= m:
            raise ValueError(f"block_topk N:M needs 0 < N <= M, not {n}:{m}")
        for what, width in (("hidden", config.hidden), ("ffn", config.ffn)):
            if width % m:
                raise ValueError(f"block_topk M = {m} must divide the {what} width "
                                 f"({width})")
        return int(n), int(m)

    def act_bits(self, name):
        """Bits of the quantized input of projection ``name``: 4 or 8."""
        return 4 if self.activations == A4_8 and name in A48_INT4_INPUTS else 8

    def sparsity_mask(self, x, name):
        """The Top-K mask(s) of projection ``name``'s input ``x`` (T, D), combined (an
        entry kept only if every mask keeps it), or None when the input stays dense."""
        width = x.shape[1]
        ks = []
        if self.activations == A4_8 and name in A48_TOPK_INPUTS:
            ks.append(width // 2)                           # a4.8: Top-K 50 %
        if self.topk is not None:
            ks.append(topk_count(width, self.topk))
        mask = topk_mask(x, min(ks)) if ks else None        # nested: the smaller K wins
        if self.block_topk is not None:
            block = block_topk_mask(x, *self.block_topk)
            mask = block if mask is None else mask & block
        return mask

    def _norm(self, x, weight, layer, name):
        self._record("rms_norm", layer, name, tokens=x.shape[0], width=x.shape[-1])
        return rms_norm(x, weight, self.config.rms_norm_eps)

    # -- the linear layer ----------------------------------------------------------------
    def quantize_input(self, x, name):
        """Projection ``name``'s input ``x`` (T, D) as the core receives it: the
        sparsity mask (:meth:`sparsity_mask`) applied to the full-precision ``x``, then
        the mode's quantizer (:meth:`act_bits`). Returns
        :class:`model.quant.QuantizedActivations` (int8 values; -8..7 for INT4)."""
        mask = self.sparsity_mask(x, name)
        if mask is not None:
            x = np.where(mask, x, np.float32(0))
        if self.act_bits(name) == 4:
            return quantize_activations_int4(x)
        return quantize_activations_as(x, self.act_quant)

    def bit_linear(self, x, projection, *, layer, name, needed=None):
        """One BitLinear: per-token quantization (int8, or a4.8's INT4 / Top-K, Q-Sparse
        masks: :meth:`quantize_input`), the integer core, the rescale.

        Parameters
        ----------
        x : numpy.ndarray, (T, in_features) float32
        projection : model.weights.TernaryProjection
        layer : int
        name : str
            ``"q"`` ... ``"down"``.
        needed : numpy.ndarray of bool, (T, out_features), optional
            The outputs that will be used (gate-first up); the others are returned as 0.

        Returns
        -------
        numpy.ndarray, (T, out_features) float32
        """
        if self.activations == A_FLOAT:
            return self._float_linear(x, projection, layer=layer, name=name, needed=needed)
        if not projection.ternary:
            raise ValueError(f"projection {name} of layer {layer} has full-precision "
                             f"weights: they need activations {A_FLOAT!r}")
        self._record("act_quant", layer, name, tokens=x.shape[0], width=x.shape[1])
        q = self.quantize_input(x, name)
        counts = {}
        if self.count_nonzero:
            counts["nonzero"] = int(np.count_nonzero(q.values))
            if needed is not None:
                counts["needed_outputs"] = int(np.count_nonzero(needed))
        self._record("bitlinear", layer, name, tokens=x.shape[0],
                     out_features=projection.shape[0], in_features=projection.shape[1],
                     act_bits=self.act_bits(name), **counts)
        acc = np.asarray(self.core(projection.values, q.values, layer=layer, name=name))
        expected = (x.shape[0], projection.shape[0])
        if acc.shape != expected:
            raise ValueError(f"core returned shape {acc.shape} for {name} of layer {layer}, "
                             f"expected {expected}")
        if needed is not None:
            acc = np.where(needed, acc, 0)
        factor = projection.scale / q.scale                 # float64, per token
        return (acc * factor[:, None]).astype(np.float32)

    def _float_linear(self, x, projection, *, layer, name, needed):
        """A BitLinear without quantizer: ``x @ W^T`` in float32 (masks applied)."""
        mask = self.sparsity_mask(x, name)
        if mask is not None:
            x = np.where(mask, x, np.float32(0))
        self._record("float_linear", layer, name, tokens=x.shape[0],
                     out_features=projection.shape[0], in_features=projection.shape[1])
        # one row at a time (as matvec_head): a token's product is the same in a prompt
        # and decoded alone, so the KV cache stays bit-identical to recomputation
        matrix = projection.matrix()
        y = np.stack([matrix @ row for row in np.asarray(x, dtype=np.float32)])
        if needed is not None:
            y = np.where(needed, y, np.float32(0))
        return y.astype(np.float32)

    def kv_store(self, x, start):
        """Keys or values (kv_heads, T, head_dim) of positions ``start ..`` as the cache
        holds them with ``kv_bits``: quantized per head and position, dequantized
        (position 0 at 4 bits under the 3-bit BOS rule)."""
        out = dequantize_kv(quantize_kv(x, self.kv_bits))
        if self.kv_bits == 3 and self.kv_bos_4bit and start == 0:
            out[:, :1] = dequantize_kv(quantize_kv(x[:, :1], 4))
        return out

    # -- the model -----------------------------------------------------------------------
    def new_cache(self):
        return KVCache()

    def embed(self, token_ids):
        ids = np.asarray(token_ids)
        if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"token ids must be a non-empty 1-D integer sequence, "
                             f"not {token_ids!r}")
        bad = (ids < 0) | (ids >= self.config.vocab)
        if np.any(bad):
            raise ValueError(f"token id {int(ids[bad][0])} is outside the vocabulary "
                             f"(0..{self.config.vocab - 1})")
        self._record("embedding", tokens=ids.size, width=self.config.hidden)
        return self.embedding[ids]

    def attention(self, q, keys, values, start, layer=None):
        """Causal grouped-query attention of T queries at positions ``start ..`` over
        the cached ``keys``/``values`` (kv_heads, start + T, head_dim). Returns
        (T, heads * head_dim) float32."""
        c = self.config
        group = c.heads // c.kv_heads
        # Query head h reads KV head h // group.
        keys = np.repeat(keys, group, axis=0)
        values = np.repeat(values, group, axis=0)
        scale = np.float32(1 / np.sqrt(c.head_dim))
        out = np.empty((q.shape[1], c.heads, c.head_dim), dtype=np.float32)
        # Query t attends to its causal prefix of start + t + 1 positions.
        pairs = sum(start + t + 1 for t in range(q.shape[1]))
        # The cached positions are read once a pass; the pass's own keys and values
        # were just computed (on chip).
        self._record("kv_read", layer, positions=start, width=2 * c.kv_heads * c.head_dim)
        self._record("attn_scores", layer, pairs=pairs, heads=c.heads, head_dim=c.head_dim)
        self._record("softmax", layer, pairs=pairs, heads=c.heads)
        self._record("attn_values", layer, pairs=pairs, heads=c.heads, head_dim=c.head_dim)
        for t in range(q.shape[1]):
            n = start + t + 1                     # the causal prefix of this query
            scores = np.sum(q[:, t:t + 1, :] * keys[:, :n, :], axis=-1) * scale
            scores = scores - np.max(scores, axis=-1, keepdims=True)
            weights = np.exp(scores)
            weights = weights / np.sum(weights, axis=-1, keepdims=True)
            out[t] = np.sum(weights[:, :, None] * values[:, :n, :], axis=1)
        return out.reshape(q.shape[1], c.heads * c.head_dim)

    def layer_forward(self, index, x, cache):
        """Run layer ``index`` on hidden states ``x`` (T, hidden) at the positions after
        the cache's ``length``; appends the layer's keys and values to ``cache``."""
        c = self.config
        w = self.layer_weights(index)
        t = x.shape[0]
        start = cache.length
        h = self._norm(x, w.norms["input_layernorm"], index, "input_layernorm")
        q = self.bit_linear(h, w.projections["q"], layer=index, name="q")
        k = self.bit_linear(h, w.projections["k"], layer=index, name="k")
        v = self.bit_linear(h, w.projections["v"], layer=index, name="v")
        q = q.reshape(t, c.heads, c.head_dim).transpose(1, 0, 2)
        k = k.reshape(t, c.kv_heads, c.head_dim).transpose(1, 0, 2)
        v = v.reshape(t, c.kv_heads, c.head_dim).transpose(1, 0, 2)
        cos, sin = self._rope[0][start:start + t], self._rope[1][start:start + t]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        self._record("rope", index, tokens=t, heads=c.heads + c.kv_heads,
                     head_dim=c.head_dim)
        self._record("kv_write", index, tokens=t, width=2 * c.kv_heads * c.head_dim)
        if self.kv_bits is not None:
            k, v = self.kv_store(k, start), self.kv_store(v, start)
        if index not in cache.keys:
            cache.keys[index] = k
            cache.values[index] = v
        else:
            cache.keys[index] = np.concatenate([cache.keys[index], k], axis=1)
            cache.values[index] = np.concatenate([cache.values[index], v], axis=1)
        a = self.attention(q, cache.keys[index], cache.values[index], start, index)
        a = self._norm(a, w.norms["attn_sub_norm"], index, "attn_sub_norm")
        x = x + self.bit_linear(a, w.projections["o"], layer=index, name="o")
        self._record("residual", index, "attention", tokens=t, width=c.hidden)
        h = self._norm(x, w.norms["post_attention_layernorm"], index,
                       "post_attention_layernorm")
        gate = self.bit_linear(h, w.projections["gate"], layer=index, name="gate")
        relu2 = np.square(np.maximum(gate, np.float32(0)))
        # a4.8 gate first: up is needed only where relu(gate)^2 != 0 (0 * up elsewhere).
        needed = relu2 != 0 if self.activations == A4_8 and self.gate_first else None
        up = self.bit_linear(h, w.projections["up"], layer=index, name="up", needed=needed)
        f = relu2 * up
        self._record("relu2", index, tokens=t, width=c.ffn)
        f = self._norm(f, w.norms["ffn_sub_norm"], index, "ffn_sub_norm")
        x = x + self.bit_linear(f, w.projections["down"], layer=index, name="down")
        self._record("residual", index, "ffn", tokens=t, width=c.hidden)
        return x

    def forward(self, token_ids, cache=None, *, logits="all"):
        """Process ``token_ids`` at the positions after ``cache.length`` (a new cache when
        None) and return their logits, (T, vocab) float32 (``logits="all"``) or only the
        last position's, (1, vocab) (``"last"``: all that generation needs of a prompt);
        the cache grows by T."""
        if logits not in ("all", "last"):
            raise ValueError(f"logits must be 'all' or 'last', not {logits!r}")
        cache = self.new_cache() if cache is None else cache
        ids = np.asarray(token_ids)
        if cache.length + ids.size > self.config.max_position_embeddings:
            raise ValueError(f"sequence of {cache.length + ids.size} tokens is longer than "
                             f"max_position_embeddings ({self.config.max_position_embeddings})")
        x = self.embed(ids)
        for index in range(self.config.layers):
            x = self.layer_forward(index, x, cache)
        cache.length += ids.size
        if logits == "last":
            x = x[-1:]
        return self.logits(x)

    def logits(self, x):
        """The final norm and the LM head on the last layer's hidden states ``x``
        (T, hidden): (T, vocab) float32."""
        x = self._norm(x, self.final_norm, None, "norm")
        self._record("lm_head", tokens=x.shape[0], vocab=self.config.vocab,
                     width=self.config.hidden)
        # One row at a time (matvec_head): the same product for a prompt token and a
        # decoded token, so the KV-cache path stays bit-identical to recomputation.
        return np.asarray(self.head(self.lm_head, x), dtype=np.float32)


def generate(decoder, prompt_ids, max_new_tokens, *, stop_at_eos=False, on_token=None,
             first_allowed=None):
    """Greedy generation: prefill the prompt, then decode one token at a time.

    Parameters
    ----------
    decoder : Decoder
    prompt_ids : sequence of int
    max_new_tokens : int
        Tokens to generate (>= 1).
    stop_at_eos : bool
        Stop after the configuration's ``eos_token_id``.
    on_token : callable, optional
        Called with each generated token id as soon as it is known.
    first_allowed : array_like of bool, (vocab,), optional
        The tokens the first generated token may be (the argmax over these only): token
        healing, where the prompt's last token was taken off and the continuation must
        start with its text.

    Returns
    -------
    Generation
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
            or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, not {max_new_tokens!r}")
    prompt = [int(i) for i in prompt_ids]
    cache = decoder.new_cache()
    rows = [decoder.forward(prompt, cache)]
    generated = []
    if first_allowed is not None:
        first_allowed = np.asarray(first_allowed, dtype=bool)
        if first_allowed.shape != (decoder.config.vocab,) or not first_allowed.any():
            raise ValueError("first_allowed must be a non-empty mask over the vocabulary")
    while len(generated) < max_new_tokens:
        last = rows[-1][-1]
        if first_allowed is not None and not generated:
            last = np.where(first_allowed, last, -np.inf)
        token = int(np.argmax(last))           # ties: the lowest id
        generated.append(token)
        if on_token is not None:
            on_token(token)
        # Every generated token is processed too, so each has its row of logits.
        rows.append(decoder.forward([token], cache))
        if stop_at_eos and token == decoder.config.eos_token_id:
            break
    return Generation(prompt, generated, np.concatenate(rows).astype(np.float32))
