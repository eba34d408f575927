"""The layer system's host side (:mod:`hw.layer_host`): DRAM images, the result layout,
a checkpoint's BitLinear as the host hands it over."""

import numpy as np
import pytest

from ternary_accel.hw.layer_host import (checkpoint_layer, golden_layer, layer_images,
                                         unpack_outputs)
from ternary_accel.hw.params import EngineParams

PARAMS = EngineParams(lanes=8, rows=8, tokens=4, weight_port_bits=64)


def _layer(tokens=3, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(-1, 2, (16, 32)), rng.integers(-128, 128, (tokens, 32)),
            rng.integers(1, 1 << 16, tokens), rng.integers(0, 20, tokens))


def test_images_have_the_documented_layout():
    w, x, scale, shift = _layer()
    images = layer_images(PARAMS, w, x, scale, shift, bus_bits=64)
    assert (images.beats, images.tiles, images.tokens) == (4, 2, 3)
    act = np.frombuffer(images.images["ACT"], dtype=np.int8).reshape(-1, 8)
    # word k * tokens + t: token t's features k * lanes ..
    assert np.array_equal(act[1 * 3 + 2], x[2, 8:16])
    words = np.frombuffer(images.images["SCALE"], dtype="<u8")
    assert list(words) == [int(s) | int(n) << 16 for s, n in zip(scale, shift)]
    assert len(images.images["OUT"]) == 3 * 2 * images.out_stride
    layout = images.layout(0x1000)
    assert all(base % 4096 == 0 for base, _ in layout.values())


def test_outputs_unpack_token_major():
    w, x, scale, shift = _layer()
    images = layer_images(PARAMS, w, x, scale, shift, bus_bits=128)
    golden = golden_layer(w, x, scale, shift)
    raw = bytearray(len(images.images["OUT"]))
    for t in range(3):               # word t * tiles + j: rows 16-bit outputs
        for j in range(2):
            at = (t * 2 + j) * images.out_stride
            raw[at:at + 16] = golden[t, 8 * j:8 * j + 8].astype("<i2").tobytes()
    assert np.array_equal(unpack_outputs(raw, images), golden)


def test_bad_layers_are_refused():
    w, x, scale, shift = _layer(tokens=4)
    with pytest.raises(ValueError, match="5 tokens"):
        layer_images(PARAMS, w, np.vstack([x, x[:1]]), 1, 0)
    with pytest.raises(ValueError, match="shift"):
        layer_images(PARAMS, w, x, scale, 99)


def test_a_checkpoint_layer_is_the_float_bitlinear_within_its_bound():
    from ternary_accel.model.checkpoint import load_checkpoint
    checkpoint = load_checkpoint("checkpoints/b1.58/packed")
    data = checkpoint_layer(checkpoint, 0, "q", [1, 17, 40])
    golden = golden_layer(data["weights"], data["activations"], data["scale"],
                          data["shift"])
    error = np.abs(golden * 2.0 ** -data["frac_bits"] - data["float"])
    assert golden.shape == (3, checkpoint.config.hidden)
    assert np.all(error <= data["bound"]) and np.abs(golden).max() < 1 << 15
    with pytest.raises(ValueError, match="features"):
        checkpoint_layer(checkpoint, 0, "down", [1])
    with pytest.raises(ValueError, match="token ids"):
        checkpoint_layer(checkpoint, 0, "q", [10 ** 6])
