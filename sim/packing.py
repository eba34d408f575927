"""Packing NumPy arrays into stream payload words and back, driven by Amaranth layouts.

The bit offsets come from the same ``amaranth.lib.data`` layouts the RTL uses
(:func:`hw.matmul.act_layout` and friends), so the testbench never restates them.
Everything is vectorized over beats: a whole transaction is packed before the
simulation starts, keeping the per-cycle Python loop small.
"""

import numpy as np
from amaranth.hdl import Shape
from amaranth.lib import data

__all__ = ["pack_array", "unpack_array", "pack_struct", "field_slices"]


def _bits(values, width):
    """(N, E) integers -> (N, E * width) bits, little-endian per element."""
    v = np.asarray(values, dtype=np.int64)
    mask = (1 << width) - 1
    u = v & mask
    return ((u[..., None] >> np.arange(width, dtype=np.int64)) & 1).astype(np.uint8) \
        .reshape(v.shape[0], -1)


def _words(bits):
    """(N, B) bits -> list of N Python ints."""
    packed = np.packbits(bits, axis=1, bitorder="little")
    return [int.from_bytes(row.tobytes(), "little") for row in packed]


def pack_array(values, width):
    """Pack rows of ``values`` ((N, E) integers, two's complement if negative) into N
    words, element ``e`` at bits ``[e * width, (e + 1) * width)``."""
    v = np.asarray(values, dtype=np.int64)
    v = v.reshape(v.shape[0], -1)
    return _words(_bits(v, width))


def unpack_array(words, count, width, signed):
    """Inverse of :func:`pack_array`: N words -> (N, count) ``int64``."""
    total = count * width
    nbytes = (total + 7) // 8
    raw = np.frombuffer(b"".join(int(w).to_bytes(nbytes, "little") for w in words),
                        dtype=np.uint8).reshape(len(words), nbytes)
    bits = np.unpackbits(raw, axis=1, bitorder="little")[:, :total]
    bits = bits.reshape(len(words), count, width).astype(np.int64)
    values = (bits << np.arange(width, dtype=np.int64)).sum(axis=2)
    if signed:
        values = np.where(values >= (1 << (width - 1)), values - (1 << width), values)
    return values


def field_slices(layout):
    """``{name: (offset, width)}`` of a ``StructLayout``'s fields."""
    return {name: (field.offset, field.width) for name, field in layout}


def pack_struct(layout, **fields):
    """Pack N beats of a ``StructLayout`` payload.

    Each keyword names a field; its value is an (N,) array for a scalar field or an
    (N, E) array for an ``ArrayLayout`` field of E elements.

    Returns
    -------
    list of int
    """
    if not isinstance(layout, data.StructLayout):
        raise TypeError(f"layout must be a StructLayout, not {layout!r}")
    slices = field_slices(layout)
    missing = set(slices) - set(fields)
    unknown = set(fields) - set(slices)
    if missing or unknown:
        raise ValueError(f"fields missing {sorted(missing)}, unknown {sorted(unknown)}")
    count = None
    bits = np.zeros((0, layout.size), dtype=np.uint8)
    for name, (offset, width) in slices.items():
        field = dict(layout)[name].shape
        v = np.asarray(fields[name], dtype=np.int64)
        if count is None:
            count = v.shape[0]
            bits = np.zeros((count, layout.size), dtype=np.uint8)
        if v.shape[0] != count:
            raise ValueError(f"field {name} has {v.shape[0]} beats, expected {count}")
        if isinstance(field, data.ArrayLayout):
            elem = Shape.cast(field.elem_shape).width
            bits[:, offset:offset + width] = _bits(v.reshape(count, -1), elem)
        else:
            bits[:, offset:offset + width] = _bits(v.reshape(count, 1), width)
    return _words(bits)
