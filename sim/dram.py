"""A :class:`~ternary_accel.hw.program.TokenProgram`'s channel images in DRAM's byte
layout for :class:`~ternary_accel.hw.rtl.system.TokenSystem` and the host driver
(:mod:`ternary_accel.hw.host`): word ``i`` at ``i * stride``, little-endian, zero-padded
to the stride (the word rounded up to whole bus beats)."""

from ternary_accel.hw.host import CHANNEL_ORDER, LOGIT_BYTES

__all__ = ["channel_images"]


def channel_images(program, *, bus_bits=128):
    """``{channel: bytes}``: each channel's DRAM image (words at their stride, KV
    zeros for ``kv_entries`` entries, LOGITS zeros for the vocabulary)."""
    import numpy as np

    from ternary_accel.hw.regmap import stride_bytes
    from ternary_accel.hw.rtl.token import TokenCore
    from ternary_accel.sim.token import memory_arrays
    from ternary_accel.sim.token_harness import _mark_used
    core = TokenCore(program)                    # for its layouts only
    _mark_used(core)
    images = {}
    for name in CHANNEL_ORDER[:5]:
        ch = name.lower()
        stride = stride_bytes(core.word_bits[ch], bus_bits)
        raw = np.asarray(memory_arrays(program, core, ch), dtype=np.uint8)
        padded = np.zeros((raw.shape[0], stride), dtype=np.uint8)
        padded[:, :raw.shape[1]] = raw
        images[name] = padded.tobytes()
    images["LOGITS"] = bytes(LOGIT_BYTES * program.config.vocab)
    return images
