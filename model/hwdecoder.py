"""The decoder in hardware numerics: every operation of a token in integer or fixed-point
arithmetic (:mod:`model.hwnum`), the BitLinears' integer core unchanged.

:class:`HwDecoder` is a :class:`model.decoder.Decoder` whose hidden states are integers
in the residual format (``HwNumerics.resid_bits`` / ``resid_frac``) from the embedding
to the logits. One layer (``docs/numerics.md`` has the table of formats)::

    x     = embedding row, rounded to the residual format
    q,k,v = BitLinear(norm_quant(x, input_layernorm))      # fused RMSNorm + quantizer
    q,k   = RoPE from the Q-format cos/sin tables
    k8,v8 = absmax per head and position (the KV cache: codes + the max)
    a     = integer attention: q8 k8 dot products, log2-domain scores, integer softmax
            (exp2 table, one reciprocal per row), the weighted sum of v8
    x     = sat(x + BitLinear(norm_quant(a, attn_sub_norm)))
    f     = relu(gate)^2 * up                           # rounded, saturated
    x     = sat(x + BitLinear(norm_quant(f, ffn_sub_norm)))

then ``logits = head(norm_quant(x, norm))``: the tied embedding as int8 rows (absmax per
row) or five balanced trits, times the int8 input, rescaled per row and token. Each
BitLinear's accumulators are rescaled by one per-token factor (the norm's and the
quantizer's scale times the weight scale, a ``scale_bits`` mantissa) into the residual
format. The forward pass returns the logits as float32 (``logit / 2**resid_frac``,
exact); :attr:`HwDecoder.saturations` counts every clipped value by operation.

``make_decoder(weights, numerics="float"|"hw")`` builds either decoder.
"""

import numpy as np

from ternary_accel.model.decoder import A4_8, A8, A_FLOAT, Decoder
from ternary_accel.model.hwnum import (DEFAULT, HwNumerics, NumericsError,
                                       Saturations, attention_scores, attention_values,
                                       code_factor, exp2_table, fixed_constant, gate_product,
                                       norm_quant, output_factor, quantize_absmax,
                                       quantize_head, head_logits, relu2,
                                       rescale, residual_add, rope_rotate, rope_table,
                                       rsqrt_table, saturate, score_factor, softmax_weights,
                                       to_fixed)

__all__ = ["HwDecoder", "make_decoder", "NUMERICS", "FLOAT_NUMERICS", "HW_NUMERICS",
           "head_matrix"]

#: The float32 glue of :class:`model.decoder.Decoder`.
FLOAT_NUMERICS = "float"
#: :class:`HwDecoder`.
HW_NUMERICS = "hw"
NUMERICS = (FLOAT_NUMERICS, HW_NUMERICS)

#: The norms feeding each BitLinear input, and the projections that share it.
_INPUTS = {"input_layernorm": ("q", "k", "v"), "attn_sub_norm": ("o",),
           "post_attention_layernorm": ("gate", "up"), "ffn_sub_norm": ("down",)}


def make_decoder(weights, *, numerics=FLOAT_NUMERICS, hw=None, **kwargs):
    """A :class:`~model.decoder.Decoder` (``numerics="float"``) or a :class:`HwDecoder`
    (``"hw"``, with the widths ``hw``, default :data:`model.hwnum.DEFAULT`)."""
    if numerics not in NUMERICS:
        raise ValueError(f"numerics must be one of {NUMERICS}, not {numerics!r}")
    if numerics == HW_NUMERICS:
        return HwDecoder(weights, numerics=hw, **kwargs)
    if hw is not None:
        raise ValueError("hardware widths need numerics 'hw'")
    return Decoder(weights, **kwargs)


def head_matrix(embedding, numerics):
    """The LM head as the hardware holds it: integer rows and their scales,
    ``(rows, mant, exp)`` with ``E[j] ~= rows[j] * mant[j] * 2**exp[j]`` (the format's
    definition: :func:`model.hwnum.quantize_head`; a ``grouped`` head's rows are its
    codes times their group's multiplier)."""
    head = quantize_head(embedding, numerics)
    return head.rows, head.mant, head.exp


class HwDecoder(Decoder):
    """A BitNet decoder in hardware numerics (module docstring).

    Parameters
    ----------
    weights
        As for :class:`~model.decoder.Decoder`.
    numerics : model.hwnum.HwNumerics, optional
        The widths (default :data:`model.hwnum.DEFAULT`).
    **kwargs
        The :class:`~model.decoder.Decoder` options: ``activations`` (``"a8"`` or
        ``"a4.8"``), ``topk``, ``block_topk``, ``kv_bits``, ``core``, ``ledger``...
        ``act_quant`` and ``head`` do not apply (the quantizer and the head are this
        class's own).

    Raises
    ------
    NumericsError
        If a constant of the checkpoint (embedding, gains, weight scales) does not fit
        its format, naming it and the value.
    ValueError
        On ``activations="float"`` (nothing to quantize) or full-precision weights.
    """

    def __init__(self, weights, *, numerics=None, **kwargs):
        for option in ("act_quant", "head"):
            if option in kwargs:
                raise ValueError(f"{option} does not apply to hardware numerics")
        super().__init__(weights, **kwargs)
        if self.activations == A_FLOAT:
            raise ValueError("hardware numerics quantize every BitLinear input: "
                             f"activations must be {A8!r} or {A4_8!r}")
        numerics = DEFAULT if numerics is None else numerics
        if not isinstance(numerics, HwNumerics):
            raise TypeError(f"numerics must be an HwNumerics, not {type(numerics).__name__}")
        self.numerics = numerics
        self.saturations = Saturations()
        c = self.config
        n = numerics
        self._rsqrt = rsqrt_table(n.rsqrt_seed_bits, n.rsqrt_bits)
        self._exp2 = exp2_table(n.softmax_frac, n.exp_bits)
        self._cos, self._sin = rope_table(c.head_dim, c.rope_theta,
                                          c.max_position_embeddings, n.rope_bits)
        self._hw_layers = {}
        self._hw_embedding = None
        self._hw_head = None
        self._hw_final = None

    # -- constants the hardware holds -------------------------------------------------------
    def _fits(self, values, what):
        low, high = -(1 << (self.numerics.resid_bits - 1)), (1 << (self.numerics.resid_bits - 1)) - 1
        bad = (values < low) | (values > high)
        if np.any(bad):
            value = float(np.asarray(values)[bad].flat[0]) / self.numerics.one
            raise NumericsError(f"{what}: value {value:g} does not fit the residual format "
                                f"({self.numerics.resid_bits} bits, {self.numerics.resid_frac} "
                                "fractional: at most "
                                f"{high / self.numerics.one:g})")
        return values

    def _gain(self, weight, what):
        """A gain vector as signed ``gain_bits`` integers with one exponent."""
        g = np.asarray(weight, dtype=np.float64)
        if not np.all(np.isfinite(g)):
            raise NumericsError(f"{what}: gain is not finite")
        peak = float(np.max(np.abs(g)))
        bits = self.numerics.gain_bits
        if peak == 0:
            return np.zeros(g.shape, dtype=np.int64), 0
        frac = (bits - 1) - int(np.floor(np.log2(peak))) - 1
        gint = to_fixed(g, frac)
        if np.max(np.abs(gint)) >= 1 << (bits - 1):
            frac -= 1
            gint = to_fixed(g, frac)
        return gint, -frac

    def _eps_term(self, width):
        n = self.numerics
        return int(to_fixed(width * self.config.rms_norm_eps, 2 * n.resid_frac))

    def hw_layer(self, index):
        """Layer ``index``'s constants: gains (integers, exponent), eps terms and the
        projections' weight scales (mantissa, exponent)."""
        if index in self._hw_layers:
            return self._hw_layers[index]
        w = self.layer_weights(index)
        gains = {name: self._gain(w.norms[name], f"layer {index} {name}") for name in _INPUTS}
        eps = {name: self._eps_term(len(w.norms[name])) for name in _INPUTS}
        scales = {}
        for name, p in w.projections.items():
            if not p.ternary:
                raise ValueError(f"projection {name} of layer {index} has full-precision "
                                 "weights: hardware numerics need ternary weights")
            m, e = fixed_constant(p.scale, self.numerics.scale_bits,
                                  f"layer {index} {name} weight scale")
            scales[name] = (int(m), int(e))
        constants = {"gains": gains, "eps": eps, "scales": scales}
        if self.cache_layers:
            self._hw_layers[index] = constants
        return constants

    @property
    def hw_embedding(self):
        if self._hw_embedding is None:
            table = to_fixed(self.embedding, self.numerics.resid_frac)
            self._hw_embedding = self._fits(table, "embedding")
        return self._hw_embedding

    @property
    def hw_head(self):
        if self._hw_head is None:
            self._hw_head = quantize_head(self.lm_head, self.numerics)
            self._hw_final = (self._gain(self.final_norm, "final norm"),
                              self._eps_term(self.config.hidden))
        return self._hw_head

    # -- the operations ---------------------------------------------------------------------
    def embed(self, token_ids):
        super().embed(token_ids)                      # checks the ids, records
        return self.hw_embedding[np.asarray(token_ids)]

    def _norm_quant(self, x, layer, norm, constants):
        """The fused RMSNorm + quantizer feeding the projections of ``norm``."""
        first = _INPUTS[norm][0]
        self._record("rms_norm", layer, norm, tokens=x.shape[0], width=x.shape[-1])
        self._record("act_quant", layer, first, tokens=x.shape[0], width=x.shape[1])
        mask = None
        if self.activations == A4_8 and first in ("o",) or self.topk is not None \
                or self.block_topk is not None:
            z = x * constants["gains"][norm][0][None, :]
            mask = self.sparsity_mask(z.astype(np.float64), first)
        return norm_quant(x, constants["gains"][norm], constants["eps"][norm], self.numerics,
                          bits=self.act_bits(first), mask=mask, tally=self.saturations,
                          op=f"{norm} quantizer", table=self._rsqrt)

    def hw_linear(self, nq, layer, name, constants, needed=None):
        """One BitLinear on a :class:`model.hwnum.NormQuant` input: the integer core,
        then the output stage into the residual format."""
        projection = self.layer_weights(layer).projections[name]
        t = nq.values.shape[0]
        counts = {}
        if self.count_nonzero:
            counts["nonzero"] = int(np.count_nonzero(nq.values))
            if needed is not None:
                counts["needed_outputs"] = int(np.count_nonzero(needed))
        self._record("bitlinear", layer, name, tokens=t, out_features=projection.shape[0],
                     in_features=projection.shape[1], act_bits=self.act_bits(name), **counts)
        acc = np.asarray(self.core(projection.values, nq.values.astype(np.int8),
                                   layer=layer, name=name), dtype=np.int64)
        if acc.shape != (t, projection.shape[0]):
            raise ValueError(f"core returned shape {acc.shape} for {name} of layer {layer}, "
                             f"expected {(t, projection.shape[0])}")
        if needed is not None:
            acc = np.where(needed, acc, 0)
        pm, pe = constants["scales"][name]
        km, ke = output_factor(nq.mant, nq.exp, pm, pe, self.numerics)
        return rescale(acc, km[:, None], ke[:, None], self.numerics.resid_frac,
                       self.numerics.resid_bits, self.saturations, f"{name} output")

    def rope(self, x, start):
        """RoPE of ``x`` (heads, T, head_dim) in the residual format."""
        t = x.shape[1]
        return rope_rotate(x, self._cos[start:start + t][None], self._sin[start:start + t][None],
                           self.numerics, self.saturations)

    def kv_bits_at(self, which, start):
        """Code bits of the cached keys or values: ``kv_bits`` (with a4.8's 4-bit BOS)
        or the widths' ``qk_bits`` / ``v_bits``."""
        if self.kv_bits is not None:
            return self.kv_bits
        return self.numerics.qk_bits if which == "k" else self.numerics.v_bits

    def kv_store(self, x, start, which="k"):
        """Keys or values (kv_heads, T, head_dim) as the cache holds them: absmax codes
        per head and position and the maxima (residual format)."""
        qmax = (1 << (self.kv_bits_at(which, start) - 1)) - 1
        codes, peak = quantize_absmax(x, qmax, self.numerics.recip_bits)
        qmaxes = np.full(peak.shape, qmax, dtype=np.int64)
        if self.kv_bits == 3 and self.kv_bos_4bit and start == 0:
            c0, p0 = quantize_absmax(x[:, :1], 7, self.numerics.recip_bits)
            codes[:, :1], peak[:, :1], qmaxes[:, :1] = c0, p0, 7
        return codes, peak, qmaxes

    def attention(self, q, keys, values, start, layer=None):
        """Integer grouped-query attention of T queries (heads, T, head_dim), residual
        format, over the cache's codes: ``keys`` and ``values`` are (codes, maxima,
        qmax) triples (kv_heads, positions[, head_dim]). Returns (T, heads * head_dim)."""
        c = self.config
        n = self.numerics
        group = c.heads // c.kv_heads
        kc, km, kq = (np.repeat(a, group, axis=0) for a in keys)
        vc, vm, vq = (np.repeat(a, group, axis=0) for a in values)
        qmax = (1 << (n.qk_bits - 1)) - 1
        qc, qm = quantize_absmax(q, qmax, n.recip_bits)          # per head and token
        kf_m, kf_e = code_factor(km, kq, n)                      # per cached position
        rm, re_ = score_factor(qm, qmax, c.head_dim, n)          # per query row
        vf_m, vf_e = code_factor(vm, vq, n)
        pairs = sum(start + t + 1 for t in range(q.shape[1]))
        self._record("kv_read", layer, positions=start, width=2 * c.kv_heads * c.head_dim)
        self._record("attn_scores", layer, pairs=pairs, heads=c.heads, head_dim=c.head_dim)
        self._record("softmax", layer, pairs=pairs, heads=c.heads)
        self._record("attn_values", layer, pairs=pairs, heads=c.heads, head_dim=c.head_dim)
        out = np.empty((q.shape[1], c.heads, c.head_dim), dtype=np.int64)
        for t in range(q.shape[1]):
            m = start + t + 1
            dot = np.einsum("hd,hjd->hj", qc[:, t], kc[:, :m])          # exact integers
            scores = attention_scores(dot, kf_m[:, :m], kf_e[:, :m], rm[:, t:t + 1],
                                      re_[:, t:t + 1], n, self.saturations)
            w = softmax_weights(scores, n, self._exp2)                   # prob_bits
            out[t] = attention_values(w, vf_m[:, :m], vf_e[:, :m], vc[:, :m], n)
        out = saturate(out, n.resid_bits, self.saturations, "attention output")
        return out.reshape(q.shape[1], c.heads * c.head_dim)

    # -- the model ----------------------------------------------------------------------------
    def layer_forward(self, index, x, cache):
        """Layer ``index`` on residual-format rows ``x`` (T, hidden) int64; appends the
        layer's key and value codes to ``cache``."""
        c = self.config
        n = self.numerics
        constants = self.hw_layer(index)
        t = x.shape[0]
        start = cache.length
        h = self._norm_quant(x, index, "input_layernorm", constants)
        q = self.hw_linear(h, index, "q", constants)
        k = self.hw_linear(h, index, "k", constants)
        v = self.hw_linear(h, index, "v", constants)
        q = q.reshape(t, c.heads, c.head_dim).transpose(1, 0, 2)
        k = k.reshape(t, c.kv_heads, c.head_dim).transpose(1, 0, 2)
        v = v.reshape(t, c.kv_heads, c.head_dim).transpose(1, 0, 2)
        q, k = self.rope(q, start), self.rope(k, start)
        self._record("rope", index, tokens=t, heads=c.heads + c.kv_heads, head_dim=c.head_dim)
        self._record("kv_write", index, tokens=t, width=2 * c.kv_heads * c.head_dim)
        k, v = self.kv_store(k, start, "k"), self.kv_store(v, start, "v")
        if index not in cache.keys:
            cache.keys[index], cache.values[index] = k, v
        else:
            cache.keys[index] = tuple(np.concatenate([a, b], axis=1)
                                      for a, b in zip(cache.keys[index], k))
            cache.values[index] = tuple(np.concatenate([a, b], axis=1)
                                        for a, b in zip(cache.values[index], v))
        a = self.attention(q, cache.keys[index], cache.values[index], start, index)
        h = self._norm_quant(a, index, "attn_sub_norm", constants)
        x = residual_add(x, self.hw_linear(h, index, "o", constants), n, self.saturations)
        self._record("residual", index, "attention", tokens=t, width=c.hidden)
        h = self._norm_quant(x, index, "post_attention_layernorm", constants)
        gate = self.hw_linear(h, index, "gate", constants)
        squared = relu2(gate, n, self.saturations)
        needed = squared != 0 if self.activations == A4_8 and self.gate_first else None
        up = self.hw_linear(h, index, "up", constants, needed=needed)
        f = gate_product(squared, up, n, self.saturations)
        self._record("relu2", index, tokens=t, width=c.ffn)
        h = self._norm_quant(f, index, "ffn_sub_norm", constants)
        x = residual_add(x, self.hw_linear(h, index, "down", constants), n, self.saturations)
        self._record("residual", index, "ffn", tokens=t, width=c.hidden)
        return x

    def logits_int(self, x):
        """The LM head on residual rows ``x`` (T, hidden): the final norm fused with the
        int8 quantizer, the integer product with the head's rows (exact: float64 holds
        every sum), the per-row and per-token rescale into the residual format."""
        head = self.hw_head
        rows = head.rows
        (gain, eps) = self._hw_final
        n = self.numerics
        self._record("rms_norm", None, "norm", tokens=x.shape[0], width=x.shape[-1])
        nq = norm_quant(x, gain, eps, n, bits=n.head_act_bits, tally=self.saturations,
                        op="norm quantizer", table=self._rsqrt)
        self._record("lm_head", tokens=x.shape[0], vocab=self.config.vocab,
                     width=self.config.hidden)
        values = nq.values.astype(np.float64)
        group_bits = n.head_group_bits if n.head == "grouped" else 0
        if n.head_act_bits + n.head_bits + group_bits + np.log2(x.shape[-1]) > 52:
            raise NumericsError("LM head sums beyond 52 bits are not exact here")
        acc = np.empty((x.shape[0], rows.shape[0]), dtype=np.int64)
        for lo in range(0, rows.shape[0], 8192):
            block = rows[lo:lo + 8192].astype(np.float64)
            acc[:, lo:lo + 8192] = np.rint(values @ block.T).astype(np.int64)
        return head_logits(acc, nq.mant, nq.exp, head, n, self.saturations)

    def logits(self, x):
        """The head's residual-format integers (:meth:`logits_int`) over
        ``2**resid_frac``: float32, exact."""
        out = self.logits_int(x)
        return (out.astype(np.float64) / self.numerics.one).astype(np.float32)
