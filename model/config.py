"""Configuration of a BitNet b1.58 decoder: a Hugging Face ``config.json``, validated.

The sizes live in a :class:`model.shapes.TransformerShape` (the one place for shapes);
this adds what a forward pass needs beyond them: RoPE, the RMSNorm epsilon, the
activation, the tied LM head, the special tokens and the checkpoint's quantization mode.
:data:`BITNET_2B4T` is the configuration of ``microsoft/bitnet-b1.58-2B-4T``.
"""

import math
import re
from dataclasses import dataclass, replace

from ternary_accel.model.shapes import FFN_GATED, TransformerShape, get_model

__all__ = ["ModelConfig", "ConfigError", "BITNET_2B4T", "TINY", "MODEL_TYPE",
           "HIDDEN_ACTS", "OFFLINE", "ONLINE", "QUANTIZATION_MODES", "model_config"]

#: The ``model_type`` of a BitNet checkpoint.
MODEL_TYPE = "bitnet"
#: Supported ``hidden_act`` values: squared ReLU, as BitNet b1.58 uses.
HIDDEN_ACTS = ("relu2",)
#: ``quantization_mode`` of a packed checkpoint: ternary weights stored, 2 bits each.
OFFLINE = "offline"
#: ``quantization_mode`` of a master checkpoint: float weights ternarized every pass.
ONLINE = "online"
QUANTIZATION_MODES = (OFFLINE, ONLINE)


class ConfigError(ValueError):
    """A configuration that this model cannot run; the message names the field."""


@dataclass(frozen=True)
class ModelConfig:
    """A BitNet b1.58 decoder-only Transformer.

    Parameters
    ----------
    shape : model.shapes.TransformerShape
        Sizes (hidden, FFN, layers, heads, KV heads, vocabulary); gated FFN.
    rope_theta : float
        RoPE base (``inv_freq_i = theta ** (-2 i / head_dim)``).
    rms_norm_eps : float
        Epsilon of every RMSNorm.
    hidden_act : str
        ``"relu2"``: ``relu(gate) ** 2 * up``.
    max_position_embeddings : int
        Longest sequence (prompt plus generated tokens).
    tie_word_embeddings : bool
        The LM head is the embedding matrix (2B4T); otherwise a separate
        ``lm_head.weight``.
    bos_token_id, eos_token_id : int or None
    quantization_mode : str
        ``"offline"`` (packed ternary weights with ``weight_scale``) or ``"online"``
        (float master weights, ternarized by the absmean quantizer).

    Raises
    ------
    ConfigError
        On any field out of range or unsupported.
    """

    shape: TransformerShape
    rope_theta: float = 500000.0
    rms_norm_eps: float = 1e-5
    hidden_act: str = "relu2"
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = True
    bos_token_id: int = None
    eos_token_id: int = None
    quantization_mode: str = OFFLINE

    def __post_init__(self):
        s = self.shape
        if not isinstance(s, TransformerShape):
            raise ConfigError(f"shape must be a TransformerShape, not {s!r}")
        if s.ffn_kind != FFN_GATED:
            raise ConfigError("a BitNet b1.58 decoder has a gated FFN (gate, up, down)")
        if s.head_dim % 2:
            raise ConfigError(f"head_dim ({s.head_dim}) must be even for RoPE")
        for field in ("rope_theta", "rms_norm_eps"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{field} must be a positive finite number, not {value!r}")
        if self.hidden_act not in HIDDEN_ACTS:
            raise ConfigError(f"hidden_act {self.hidden_act!r} is not supported "
                              f"(supported: {', '.join(HIDDEN_ACTS)})")
        mpe = self.max_position_embeddings
        if isinstance(mpe, bool) or not isinstance(mpe, int) or mpe < 1:
            raise ConfigError(
                f"max_position_embeddings must be a positive integer, not {mpe!r}")
        if not isinstance(self.tie_word_embeddings, bool):
            raise ConfigError(f"tie_word_embeddings must be true or false, not "
                              f"{self.tie_word_embeddings!r}")
        for field in ("bos_token_id", "eos_token_id"):
            value = getattr(self, field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 0 <= value < s.vocab):
                raise ConfigError(f"{field} must be a token id in 0..{s.vocab - 1}, "
                                  f"not {value!r}")
        if self.quantization_mode not in QUANTIZATION_MODES:
            raise ConfigError(f"quantization_mode {self.quantization_mode!r} is not "
                              f"supported (supported: {', '.join(QUANTIZATION_MODES)})")

    # Convenience views of the shape.
    @property
    def hidden(self):
        return self.shape.hidden

    @property
    def ffn(self):
        return self.shape.ffn

    @property
    def layers(self):
        return self.shape.layers

    @property
    def heads(self):
        return self.shape.heads

    @property
    def kv_heads(self):
        return self.shape.kv_heads

    @property
    def head_dim(self):
        return self.shape.head_dim

    @property
    def vocab(self):
        return self.shape.vocab

    @classmethod
    def from_dict(cls, d, *, name="checkpoint"):
        """Read a Hugging Face ``config.json`` dictionary.

        Parameters
        ----------
        d : dict
        name : str
            Name given to the :class:`TransformerShape`.

        Raises
        ------
        ConfigError
            For a ``model_type`` other than ``bitnet``, a missing or out-of-range size,
            an unsupported ``hidden_act``, ``quant_method`` or ``quantization_mode``.
            A config without ``quantization_config`` holds master weights (``online``).
        """
        if not isinstance(d, dict):
            raise ConfigError(f"config must be a JSON object, not {type(d).__name__}")
        if d.get("model_type") != MODEL_TYPE:
            raise ConfigError(f"model_type {d.get('model_type')!r} is not supported "
                              f"(expected {MODEL_TYPE!r})")
        sizes = {}
        for key, field in (("hidden_size", "hidden"), ("intermediate_size", "ffn"),
                           ("num_hidden_layers", "layers"),
                           ("num_attention_heads", "heads"), ("vocab_size", "vocab")):
            if key not in d:
                raise ConfigError(f"config field {key} is missing")
            sizes[field] = d[key]
        sizes["kv_heads"] = d.get("num_key_value_heads", sizes["heads"])
        if "head_dim" in d and d["head_dim"] != sizes["hidden"] // max(sizes["heads"], 1):
            raise ConfigError(f"head_dim {d['head_dim']!r} must equal hidden_size / "
                              "num_attention_heads")
        keys = {"hidden": "hidden_size", "ffn": "intermediate_size",
                "layers": "num_hidden_layers", "heads": "num_attention_heads",
                "kv_heads": "num_key_value_heads", "vocab": "vocab_size"}
        for field, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"config field {keys[field]} must be a positive integer, "
                                  f"not {value!r}")
        try:
            shape = TransformerShape(name, ffn_kind=FFN_GATED, **sizes)
        except ValueError as error:
            # the shape names its fields; the file's reader knows the config's keys
            message = str(error)
            for field, key in keys.items():
                message = re.sub(rf"\b{field}\b", key, message)
            raise ConfigError(message) from None
        quant = d.get("quantization_config")
        if quant is None:
            mode = ONLINE
        else:
            if not isinstance(quant, dict) or quant.get("quant_method") != MODEL_TYPE:
                method = quant.get("quant_method") if isinstance(quant, dict) else quant
                raise ConfigError(f"quantization_config.quant_method {method!r} is not "
                                  f"supported (expected {MODEL_TYPE!r})")
            mode = quant.get("quantization_mode", OFFLINE)
        if d.get("attention_bias") or d.get("mlp_bias"):
            raise ConfigError("biases are not supported (BitNet b1.58 has none)")
        if d.get("rope_scaling"):
            raise ConfigError("rope_scaling is not supported (default RoPE only)")
        return cls(shape,
                   rope_theta=d.get("rope_theta", 10000.0),
                   rms_norm_eps=d.get("rms_norm_eps", 1e-6),
                   hidden_act=d.get("hidden_act", "relu2"),
                   max_position_embeddings=d.get("max_position_embeddings", 2048),
                   tie_word_embeddings=d.get("tie_word_embeddings", False),
                   bos_token_id=d.get("bos_token_id"), eos_token_id=d.get("eos_token_id"),
                   quantization_mode=mode)

    def to_dict(self):
        """The ``config.json`` dictionary of this configuration (round-trips through
        :meth:`from_dict`)."""
        s = self.shape
        d = {"architectures": ["BitNetForCausalLM"], "model_type": MODEL_TYPE,
             "hidden_size": s.hidden, "intermediate_size": s.ffn,
             "num_hidden_layers": s.layers, "num_attention_heads": s.heads,
             "num_key_value_heads": s.kv_heads, "vocab_size": s.vocab,
             "hidden_act": self.hidden_act, "rope_theta": self.rope_theta,
             "rms_norm_eps": self.rms_norm_eps,
             "max_position_embeddings": self.max_position_embeddings,
             "tie_word_embeddings": self.tie_word_embeddings,
             "bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_id,
             "attention_bias": False, "rope_scaling": None}
        d["quantization_config"] = {"quant_method": MODEL_TYPE,
                                    "linear_class": "autobitlinear",
                                    "quantization_mode": self.quantization_mode}
        return d

    def with_mode(self, quantization_mode):
        """The same model with another ``quantization_mode``."""
        return replace(self, quantization_mode=quantization_mode)


#: microsoft/bitnet-b1.58-2B-4T (``docs/models.md``).
BITNET_2B4T = ModelConfig(get_model("b1.58-2b4t"), rope_theta=500000.0, rms_norm_eps=1e-5,
                          max_position_embeddings=4096, tie_word_embeddings=True,
                          bos_token_id=128000, eos_token_id=128001)

def model_config(name):
    """The :class:`ModelConfig` of a named model of :data:`model.shapes.MODELS`:
    :data:`BITNET_2B4T` for ``"b1.58-2b4t"``, otherwise the shape with this module's
    defaults and an untied LM head (the BitNet b1.58 paper's LLaMA-like sizes).

    Raises
    ------
    ValueError
        For an unknown name, or a shape the decoder cannot run (a classic two-matrix
        FFN: the BitNet paper's sizes).
    """
    shape = get_model(name)
    if shape == BITNET_2B4T.shape:
        return BITNET_2B4T
    try:
        return ModelConfig(shape, tie_word_embeddings=False)
    except ConfigError as error:
        raise ValueError(f"model {name!r} cannot run on the decoder: {error}") from None


#: The tiny model of the tests and ``ternary-accel model make-tiny``: hidden 64, 4 heads of
#: 16, 2 KV heads, FFN 128, 2 layers, vocabulary 256. Every projection tiles onto the
#: test engine (16 lanes, 8 rows).
TINY = ModelConfig(TransformerShape("tiny", 64, 128, 2, 4, kv_heads=2, vocab=256),
                   rope_theta=10000.0, rms_norm_eps=1e-5, max_position_embeddings=256,
                   tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
