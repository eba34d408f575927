"""A BitNet b1.58 decoder in PyTorch for quantization-aware training.

The architecture is the golden model's (:mod:`ternary_accel.model.decoder`, 2B4T's):
RMSNorm, q/k/v/o BitLinears with grouped-query attention, non-interleaved RoPE, the
attention SubLN before o, a relu² gated FFN with the FFN SubLN before down, a tied
embedding, no biases. Each BitLinear's forward pass uses the hardware's quantizers in
float (:mod:`ternary_accel.model.quant`):

* weights: absmean ternary, ``beta = max(mean|W|, eps)``, ``clip(rint(W / beta), -1, 1)
  * beta``;
* activations (``"a8"``): per-token absmax int8, ``s = 127 / max(max|x|, eps)``,
  ``clip(rint(x s), -128, 127) / s``; ``"a4.8"``: INT4 absmean on the q/k/v and gate/up
  inputs, Top-K 50 % then int8 on the o input, int8 on the down input; ``topk=r``
  (Q-Sparse): every input keeps its ``int((1 - r) D)`` largest ``|x|`` before the
  quantizer;

and the straight-through estimator in the backward pass (the quantizer's gradient is
taken as the identity: ``x + (q(x) - x).detach()``; a Top-K mask passes the gradient of
the kept entries only). Master weights stay float32. ``linear="float"`` replaces every
BitLinear by a plain ``nn.Linear`` without bias: the full-precision baseline of the same
architecture.

With ``export=True`` the weight scale is rounded to bfloat16, as a checkpoint stores it
(:func:`ternary_accel.model.weights.ternarize_master`), so the module computes what the
exported checkpoint computes.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from ternary_accel.model.decoder import A4_8, A8, A48_INT4_INPUTS, A48_TOPK_INPUTS
from ternary_accel.model.quant import ACT_QMAX, EPS, topk_count
from ternary_accel.model.weights import NORMS, PROJECTIONS, tensor_name

__all__ = ["BitLinear", "BitNetLM", "LINEARS", "TERNARY_LINEAR", "FLOAT_LINEAR"]

TERNARY_LINEAR = "ternary"
FLOAT_LINEAR = "float"
LINEARS = (TERNARY_LINEAR, FLOAT_LINEAR)
_INT4_QMAX = math.sqrt(7)


def ste(x, q):
    """``q`` in the forward pass, the identity's gradient in the backward pass."""
    return x + (q - x).detach()


def ternary_weights(w, *, bf16_scale=False):
    """Absmean ternary weights times their scale (float)."""
    beta = w.abs().mean().clamp(min=EPS)
    values = (w / beta).round().clamp(-1, 1)
    if bf16_scale:
        beta = beta.to(torch.bfloat16).float()
    return values * beta


def int8_absmax(x):
    # (1 / peak) * 127 in float32: the model's "torch-fp32" quantizer path
    scale = (1 / x.abs().amax(dim=-1, keepdim=True).clamp(min=EPS)) * ACT_QMAX
    return (x * scale).round().clamp(-ACT_QMAX - 1, ACT_QMAX) / scale


def int4_absmean(x):
    scale = _INT4_QMAX / (x.abs().mean(dim=-1, keepdim=True) + EPS)
    return (x * scale).round().clamp(-8, 7) / scale


def topk_keep(x, k, *, stable=False):
    """Zero all but the ``k`` largest ``|x|`` of each row (the gradient flows through
    the kept entries). ``stable`` breaks ties towards the lower index, as the golden
    model does (:func:`ternary_accel.model.quant.topk_mask`): exact ties happen in an
    exported model (bf16 weights), hardly ever in training, where the fast
    ``torch.topk`` (ties unspecified) is used."""
    if k >= x.shape[-1]:
        return x
    if stable:
        index = torch.sort(x.abs(), dim=-1, descending=True, stable=True).indices[..., :k]
    else:
        index = x.abs().topk(k, dim=-1, sorted=False).indices
    mask = torch.zeros_like(x, dtype=torch.bool).scatter_(-1, index, True)
    return x * mask


class BitLinear(nn.Linear):
    """A BitLinear without bias: the projection ``name`` (``"q"`` .. ``"down"``) under
    the activation mode and Q-Sparse ratio of its model."""

    def __init__(self, in_features, out_features, name, *, activations=A8, topk=None):
        super().__init__(in_features, out_features, bias=False)
        self.name = name
        self.activations = activations
        self.topk = topk
        self.export = False

    def forward(self, x):
        ks = []
        if self.activations == A4_8 and self.name in A48_TOPK_INPUTS:
            ks.append(x.shape[-1] // 2)
        if self.topk is not None:
            ks.append(topk_count(x.shape[-1], self.topk))
        if ks:
            x = topk_keep(x, min(ks), stable=self.export)
        if self.activations == A4_8 and self.name in A48_INT4_INPUTS:
            xq = ste(x, int4_absmean(x))
        else:
            xq = ste(x, int8_absmax(x))
        wq = ste(self.weight, ternary_weights(self.weight, bf16_scale=self.export))
        return F.linear(xq, wq)


class RMSNorm(nn.Module):
    def __init__(self, width, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Layer(nn.Module):
    def __init__(self, config, linear_of):
        super().__init__()
        c = config
        self.config = c
        eps = c.rms_norm_eps
        self.input_layernorm = RMSNorm(c.hidden, eps)
        self.attn_sub_norm = RMSNorm(c.heads * c.head_dim, eps)
        self.post_attention_layernorm = RMSNorm(c.hidden, eps)
        self.ffn_sub_norm = RMSNorm(c.ffn, eps)
        self.q = linear_of(c.hidden, c.heads * c.head_dim, "q")
        self.k = linear_of(c.hidden, c.kv_heads * c.head_dim, "k")
        self.v = linear_of(c.hidden, c.kv_heads * c.head_dim, "v")
        self.o = linear_of(c.heads * c.head_dim, c.hidden, "o")
        self.gate = linear_of(c.hidden, c.ffn, "gate")
        self.up = linear_of(c.hidden, c.ffn, "up")
        self.down = linear_of(c.ffn, c.hidden, "down")

    def forward(self, x, cos, sin):
        c = self.config
        b, t, _ = x.shape
        h = self.input_layernorm(x)
        q = self.q(h).view(b, t, c.heads, c.head_dim).transpose(1, 2)
        k = self.k(h).view(b, t, c.kv_heads, c.head_dim).transpose(1, 2)
        v = self.v(h).view(b, t, c.kv_heads, c.head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        a = a.transpose(1, 2).reshape(b, t, c.heads * c.head_dim)
        x = x + self.o(self.attn_sub_norm(a))
        h = self.post_attention_layernorm(x)
        f = F.relu(self.gate(h)).square() * self.up(h)
        return x + self.down(self.ffn_sub_norm(f))


class BitNetLM(nn.Module):
    """The decoder of :class:`ternary_accel.model.config.ModelConfig` ``config``.

    Parameters
    ----------
    config : ternary_accel.model.config.ModelConfig
        Tied embedding (``tie_word_embeddings``) required.
    linear : str
        ``"ternary"`` (BitLinear, default) or ``"float"`` (``nn.Linear``, the
        full-precision baseline).
    activations : str
        ``"a8"`` or ``"a4.8"`` (BitLinear only).
    topk : float, optional
        Q-Sparse ratio (BitLinear only).
    """

    def __init__(self, config, *, linear=TERNARY_LINEAR, activations=A8, topk=None):
        super().__init__()
        if linear not in LINEARS:
            raise ValueError(f"linear must be one of {LINEARS}, not {linear!r}")
        if not config.tie_word_embeddings:
            raise ValueError("the trained model ties its embedding and LM head")
        self.config = config
        self.linear = linear
        if linear == FLOAT_LINEAR:
            def linear_of(i, o, name):
                return nn.Linear(i, o, bias=False)
        else:
            def linear_of(i, o, name):
                return BitLinear(i, o, name, activations=activations, topk=topk)
        self.embed_tokens = nn.Embedding(config.vocab, config.hidden)
        self.layers = nn.ModuleList(Layer(config, linear_of) for _ in range(config.layers))
        self.norm = RMSNorm(config.hidden, config.rms_norm_eps)
        half = config.head_dim // 2
        inv_freq = config.rope_theta ** (-torch.arange(half, dtype=torch.float32) * 2
                                         / config.head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.reset_parameters()

    def reset_parameters(self, std=0.02):
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)

    def set_export(self, export):
        """Round the weight scales to bfloat16 as a checkpoint stores them."""
        for module in self.modules():
            if isinstance(module, BitLinear):
                module.export = export

    def forward(self, ids):
        """Logits (batch, T, vocab) of token ids (batch, T), positions 0..T-1."""
        t = ids.shape[1]
        angles = torch.arange(t, dtype=torch.float32, device=ids.device)[:, None] \
            * self.inv_freq[None, :]
        angles = torch.cat((angles, angles), dim=-1)
        cos, sin = angles.cos(), angles.sin()
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return F.linear(self.norm(x), self.embed_tokens.weight)

    def hf_parameters(self):
        """The parameters by Hugging Face name (:func:`ternary_accel.model.weights.tensor_name`)."""
        out = {"model.embed_tokens.weight": self.embed_tokens.weight,
               "model.norm.weight": self.norm.weight}
        for index, layer in enumerate(self.layers):
            for part in PROJECTIONS + NORMS:
                out[tensor_name(index, part)] = getattr(layer, part).weight
        return out

    def hf_tensors(self):
        """The weights as float32 NumPy arrays by Hugging Face name."""
        return {name: p.detach().float().cpu().numpy().copy()
                for name, p in self.hf_parameters().items()}

    def load_hf_tensors(self, tensors):
        """Set the weights from float arrays by Hugging Face name (:meth:`hf_tensors`)."""
        with torch.no_grad():
            for name, param in self.hf_parameters().items():
                value = torch.as_tensor(tensors[name], dtype=torch.float32)
                if value.shape != param.shape:
                    raise ValueError(f"tensor {name} has shape {list(value.shape)}, "
                                     f"expected {list(param.shape)}")
                param.copy_(value)
