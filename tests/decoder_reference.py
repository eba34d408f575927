"""An independent float64 evaluation of one decoder layer, the tests' yardstick for
:class:`ternary_accel.model.decoder.Decoder` (explicit per-head loops, the causal mask
by -inf)."""

import numpy as np

__all__ = ["reference_layer"]


def reference_layer(decoder, x, index, linear=None):
    """Layer ``index`` of ``decoder`` on ``x`` (T, hidden) over the whole sequence.

    ``linear(v, projection, name)`` computes one projection in float64 (default: the
    decoder's own :meth:`~ternary_accel.model.decoder.Decoder.bit_linear`)."""
    c = decoder.config
    w = decoder.layer_weights(index)
    t = x.shape[0]

    def norm(v, name):
        v = v.astype(np.float64)
        return w.norms[name] * v / np.sqrt(np.mean(v * v, axis=-1, keepdims=True)
                                           + c.rms_norm_eps)

    def lin(v, name):
        if linear is not None:
            return linear(v, w.projections[name], name)
        return decoder.bit_linear(v.astype(np.float32), w.projections[name], layer=index,
                                  name=name).astype(np.float64)

    h = norm(x, "input_layernorm")
    q, k, v = lin(h, "q"), lin(h, "k"), lin(h, "v")
    d = c.head_dim
    inv = c.rope_theta ** (-np.arange(0, d, 2) / d)
    ang = np.arange(t)[:, None] * np.concatenate([inv, inv])[None, :]

    def rope(m):
        return m * np.cos(ang) + np.concatenate([-m[:, d // 2:], m[:, :d // 2]], 1) \
            * np.sin(ang)

    out = np.zeros((t, c.hidden))
    for head in range(c.heads):
        kv = head // (c.heads // c.kv_heads)
        qh = rope(q[:, head * d:(head + 1) * d])
        kh = rope(k[:, kv * d:(kv + 1) * d])
        vh = v[:, kv * d:(kv + 1) * d]
        s = qh @ kh.T / np.sqrt(d)
        s[np.triu(np.ones((t, t), dtype=bool), 1)] = -np.inf
        p = np.exp(s - s.max(1, keepdims=True))
        out[:, head * d:(head + 1) * d] = (p / p.sum(1, keepdims=True)) @ vh
    x = x + lin(norm(out, "attn_sub_norm"), "o")
    h = norm(x, "post_attention_layernorm")
    f = np.maximum(lin(h, "gate"), 0) ** 2 * lin(h, "up")
    return x + lin(norm(f, "ffn_sub_norm"), "down")
