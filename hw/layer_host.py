"""The host's side of :class:`~ternary_accel.hw.rtl.layer_system.LayerSystem`: a layer's
DRAM images (:func:`layer_images`), its golden result (:func:`golden_layer`), and runs
through the registers (:class:`LayerHost`).

The layout in DRAM (each channel's word ``i`` at ``base + i * stride``, little-endian,
zero-padded to its stride, the stride the word rounded up to whole bus beats; the
register map's ``*_STRIDE``):

- ``ACT``: word ``k * tokens + t`` holds token ``t``'s features ``k * lanes ..
  (k + 1) * lanes - 1`` (``act_width``-bit two's complement codes, feature 0 in the low
  bits);
- ``SCALE``: word ``t`` holds the output stage's scale (bits 15:0) and shift (21:16) of
  token ``t`` (:func:`ternary_accel.model.arith.round_fixed`);
- ``WGT``: the engine's port words of each row tile's beats, (tile, beat, word) order
  (:func:`pack_port_beats`);
- ``OUT``: word ``t * tiles + j`` holds token ``t``'s outputs ``j * rows .. (j + 1) *
  rows - 1``, 16-bit two's complement: a token's outputs are contiguous.

>>> images = layer_images(params, weights, activations, scale, shift, bus_bits=128)
>>> host = LayerHost(Registers(backend), memory)    # memory: write(addr, bytes)...
>>> outputs = host.run(images, bases)               # (tokens, out_features) int64
"""

from dataclasses import dataclass

import numpy as np

from ternary_accel.model.arith import (OUT_WIDTH, SCALE_WIDTH, matmul_int, round_fixed)
from ternary_accel.model.encoding import pack_words

from ternary_accel.hw.host import wait_done, write_layout
from ternary_accel.hw.mapping import port_codes_per_word
from ternary_accel.hw.regmap import stride_bytes

__all__ = ["LayerImages", "layer_images", "golden_layer", "checkpoint_layer", "pack_port_beats",
           "unpack_outputs", "LayerHost", "LayerError", "LAYER_ORDER"]

#: The channels with a base, in the order :meth:`LayerImages.layout` places them.
LAYER_ORDER = ("ACT", "SCALE", "WGT", "OUT")


class LayerError(RuntimeError):
    """A layer ended with an ERROR flag set, or did not end in time."""


def pack_port_beats(beats, mapping):
    """Each row of ``beats`` (a beat's row-major codes) as the beat's W port words, the
    last padded with zero weights: (beats * W, port bytes) uint8 (``mapping``: the
    layer's :class:`~ternary_accel.hw.timing.LayerMapping` on an engine with a port)."""
    port_bits = mapping.port_bits_used
    per_beat = mapping.port_words_per_beat * port_codes_per_word(mapping.packing, port_bits)
    padded = np.pad(beats, ((0, 0), (0, per_beat - beats.shape[1])))
    return np.asarray(pack_words(padded.reshape(-1), mapping.packing, port_bits),
                      dtype=np.uint8).reshape(-1, port_bits // 8)


def tile_beats(weights, lanes, rows):
    """The weights (N_out, N_in) as beats, (row tile, beat) order, each beat's ``rows``
    x ``lanes`` codes row-major."""
    n_out, n_in = weights.shape
    return (np.asarray(weights).reshape(n_out // rows, rows, n_in // lanes, lanes)
            .transpose(0, 2, 1, 3).reshape(-1, rows * lanes))


def _words(values, bits, stride):
    """Rows of ``values`` (unsigned, ``bits`` each, element 0 lowest) as little-endian
    words of ``stride`` bytes."""
    values = np.asarray(values, dtype=np.uint64)
    if bits % 8 == 0:
        raw = np.zeros((values.shape[0], stride), dtype=np.uint8)
        per = bits // 8
        for b in range(per):
            raw[:, b:values.shape[1] * per:per] = (values >> np.uint64(8 * b)) & np.uint64(255)
        return raw.tobytes()
    out = bytearray()
    for row in values:
        word = 0
        for i, v in enumerate(row):
            word |= int(v) << (i * bits)
        out += word.to_bytes(stride, "little")
    return bytes(out)


@dataclass
class LayerImages:
    """A layer's images (``{channel: bytes}``, ``OUT`` the size of the results) and the
    registers that describe it."""

    images: dict
    beats: int
    tiles: int
    tokens: int
    rows: int
    out_stride: int

    def layout(self, base=0x1000_0000, align=4096):
        """``{channel: (address, bytes)}``: the channels one after the other from
        ``base``, each at a multiple of ``align``."""
        layout, at = {}, base
        for name in LAYER_ORDER:
            at = -(-at // align) * align
            layout[name] = (at, self.images[name])
            at += len(self.images[name])
        return layout


def layer_images(params, weights, activations, scale, shift, *, bus_bits=128):
    """A quantized layer as a layer system's DRAM images (module docstring).

    Parameters
    ----------
    params : hw.params.EngineParams
        The engine (with a weight port).
    weights : array_like (N_out, N_in)
        Ternary weights.
    activations : array_like (T, N_in)
        Codes (int8, or int4 with ``act_width=4``); T at most ``params.tokens``.
    scale, shift : array_like (T,)
        The output stage's per token.
    bus_bits : int
        The DRAM bus's width (the strides).

    Returns
    -------
    LayerImages

    Raises
    ------
    ValueError
        On a shape that does not tile onto the engine, too many tokens, or values out of
        range.
    """
    w = np.asarray(weights)
    x = np.atleast_2d(np.asarray(activations))
    tokens = x.shape[0]
    if tokens > params.tokens:
        raise ValueError(f"{tokens} tokens: the engine takes {params.tokens} a run")
    mapping = params.mapping(w.shape[0], w.shape[1], tokens)
    lanes, rows, bits = params.lanes, params.rows, params.act_width
    scale, shift = (np.broadcast_to(np.asarray(v, dtype=np.int64), (tokens,))
                    for v in (scale, shift))
    round_fixed(np.zeros(tokens), scale, shift)          # checks their ranges
    beats, tiles = mapping.col_beats, mapping.row_tiles
    act = x.reshape(tokens, beats, lanes).transpose(1, 0, 2).reshape(-1, lanes)
    act = act.astype(np.int64) & ((1 << bits) - 1)
    words = pack_port_beats(tile_beats(w, lanes, rows), mapping)
    port_stride = stride_bytes(words.shape[1] * 8, bus_bits)
    wgt = np.zeros((words.shape[0], port_stride), dtype=np.uint8)
    wgt[:, :words.shape[1]] = words
    out_stride = stride_bytes(rows * OUT_WIDTH, bus_bits)
    images = {
        "ACT": _words(act, bits, stride_bytes(lanes * bits, bus_bits)),
        "SCALE": _words((scale | shift << SCALE_WIDTH)[:, None], 32,
                        stride_bytes(SCALE_WIDTH + 6, bus_bits)),
        "WGT": wgt.tobytes(),
        "OUT": bytes(tokens * tiles * out_stride),
    }
    return LayerImages(images, beats, tiles, tokens, rows, out_stride)


def golden_layer(weights, activations, scale, shift):
    """The layer's outputs by the golden model: ``round_fixed(W x, scale, shift)`` per
    token, (T, N_out) int64."""
    x = np.atleast_2d(np.asarray(activations))
    acc = matmul_int(np.asarray(weights), x)
    s = np.broadcast_to(np.asarray(scale, dtype=np.int64), (x.shape[0],))[:, None]
    n = np.broadcast_to(np.asarray(shift, dtype=np.int64), (x.shape[0],))[:, None]
    return round_fixed(acc, s, n)


def checkpoint_layer(checkpoint, layer, projection, token_ids):
    """A trained checkpoint's BitLinear on real activations, as the host hands it to the
    layer system: the packed ternary weights, the embedding rows of ``token_ids``
    quantized per token (``model.quant.quantize_activations``), and the output stage's
    ``(scale, shift)`` from the weight scale over each token's activation scale
    (:func:`ternary_accel.model.bitlinear.bitlinear_fixed`, with the most fractional bits
    that keep every output inside 16 bits).

    Parameters
    ----------
    checkpoint : model.checkpoint.Checkpoint
    layer : int
        The decoder layer.
    projection : str
        ``q``, ``gate``, ... (:data:`ternary_accel.model.weights.PROJECTIONS`)
    token_ids : sequence of int
        The tokens whose embedding rows are the activations.

    Returns
    -------
    dict
        ``weights`` (N_out, N_in) int8, ``activations`` (T, N_in) int8, ``scale``,
        ``shift`` (T,), ``frac_bits``, ``float`` (the float BitLinear's outputs, T x
        N_out) and ``bound`` (the output stage's error bound against them).
    """
    from ternary_accel.model.bitlinear import BitLinearResult, bitlinear_fixed
    from ternary_accel.model.quant import quantize_activations
    weights = checkpoint.projection(layer, projection)
    embedding = checkpoint.embedding()
    ids = np.asarray(token_ids, dtype=np.int64)
    if ids.ndim != 1 or ids.size == 0 or np.any((ids < 0) | (ids >= embedding.shape[0])):
        raise ValueError(f"token ids must be in 0..{embedding.shape[0] - 1}")
    if embedding.shape[1] != weights.values.shape[1]:
        raise ValueError(f"{projection} of layer {layer} takes {weights.values.shape[1]} "
                         f"features, not the embedding's {embedding.shape[1]} (pick a "
                         f"projection on the residual stream: q, k, v, gate, up)")
    qx = quantize_activations(embedding[ids].astype(np.float64))
    acc = matmul_int(weights.values, qx.values)
    y = acc / qx.scale[:, None] * weights.scale
    result = BitLinearResult(weights.values, qx.values, weights.scale, qx.scale, acc, y)
    peak = float(np.max(np.abs(y))) + 1e-12
    frac_bits = max(0, int(np.floor(np.log2((1 << (OUT_WIDTH - 2)) / peak))))
    fixed = bitlinear_fixed(result, frac_bits)
    return {"weights": weights.values, "activations": qx.values, "scale": fixed["scale"],
            "shift": fixed["shift"], "frac_bits": frac_bits, "float": y,
            "bound": fixed["bound"]}


def unpack_outputs(raw, images):
    """The OUT region's bytes as (tokens, out_features) int64."""
    words = np.frombuffer(bytes(raw), dtype=np.uint8).reshape(
        images.tokens * images.tiles, images.out_stride)
    values = words[:, :images.rows * OUT_WIDTH // 8].copy().view("<i2").astype(np.int64)
    return values.reshape(images.tokens, images.tiles * images.rows)


class LayerHost:
    """Layers on a :class:`~ternary_accel.hw.rtl.layer_system.LayerSystem`.

    Parameters
    ----------
    regs : hw.driver.Registers
        Over :data:`~ternary_accel.hw.regmap.LAYER_REGMAP`.
    memory : object
        ``write(addr, data)`` and ``read(addr, length)`` of DRAM at the PL's addresses.
    wait : callable, optional
        ``wait(regs)`` returns when the layer is done (an interrupt); by default
        :meth:`finish` polls ``STATUS.done``.
    """

    def __init__(self, regs, memory, *, wait=None):
        self.regs, self.memory, self.wait = regs, memory, wait

    def load(self, images, layout):
        """Write the images at ``layout`` (:meth:`LayerImages.layout`), the bases and the
        layer's shape."""
        write_layout(self.regs, self.memory, layout)
        self.describe(images.beats, images.tiles, images.tokens)

    def describe(self, beats, tiles, tokens):
        """Write LAYER_SHAPE and LAYER_TOKENS."""
        self.regs.LAYER_SHAPE = beats | tiles << 16
        self.regs.LAYER_TOKENS = tokens

    def start(self):
        """Clear the flags, pulse start."""
        self.regs.ERROR = 0xFFFF_FFFF
        self.regs.IRQ_STATUS = 0xFFFF_FFFF
        self.regs.CONTROL.start = 1

    def finish(self, *, timeout_s=60.0):
        """Wait for ``STATUS.done``; raise :class:`LayerError` on an ERROR flag (the
        flags and ERROR_ADDR in the message) or after ``timeout_s`` seconds."""
        wait_done(self.regs, self.wait, LayerError, "layer", timeout_s=timeout_s)

    def cycles(self):
        """``{"load", "run", "total", "stall"}`` of the last layer."""
        return {name: self.regs.read(f"CYCLES_{name.upper()}")
                for name in ("load", "run", "total", "stall")}

    def outputs(self, images):
        """The last layer's outputs (:func:`unpack_outputs` of the OUT region)."""
        raw = self.memory.read(self.regs.base("OUT"), len(images.images["OUT"]))
        return unpack_outputs(raw, images)

    def run(self, images, layout, **kwargs):
        """Load, start, finish; the outputs (tokens, out_features)."""
        self.load(images, layout)
        self.start()
        self.finish(**kwargs)
        return self.outputs(images)
