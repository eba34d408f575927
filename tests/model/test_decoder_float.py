"""The decoder's ``activations="float"`` mode (no quantizer, every BitLinear in float32)
and full-precision weights (``Checkpoint.full_precision``, ``FloatProjection``)."""

import numpy as np
import pytest

from decoder_reference import reference_layer

from ternary_accel.model.checkpoint import CheckpointError, load_checkpoint, make_tiny
from ternary_accel.model.config import TINY
from ternary_accel.model.decoder import A4_8, A8, A_FLOAT, ACTIVATION_MODES, Decoder, generate
from ternary_accel.model.weights import (PROJECTIONS, FloatProjection, MasterWeights,
                                         TernaryProjection, random_master_weights,
                                         tensor_name)

PROMPT = [1, 5, 9, 200, 33, 7]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("float")
    return {layout: make_tiny(root / layout, seed=7, layout=layout)
            for layout in ("packed", "master")}


@pytest.fixture(scope="module")
def master(folders):
    return load_checkpoint(folders["master"])


@pytest.fixture(scope="module")
def packed(folders):
    return load_checkpoint(folders["packed"])


class Ledger:
    def __init__(self):
        self.kinds = []

    def record(self, kind, **sizes):
        self.kinds.append(kind)


def _float_linear(v, projection, name):
    """``v @ W^T`` in float64 with the weights the decoder holds."""
    if projection.ternary:
        matrix = projection.values.astype(np.float64) * projection.scale
    else:
        matrix = np.asarray(projection.values, dtype=np.float64)
    return v @ matrix.T


def float_layer(decoder, x, index):
    """An independent float64 evaluation of one layer over a whole sequence: every
    projection ``x @ W^T`` with the weights the decoder holds."""
    return reference_layer(decoder, x, index, linear=_float_linear)


def test_float_is_an_activation_mode():
    assert A_FLOAT == "float" and A_FLOAT in ACTIVATION_MODES


@pytest.mark.parametrize("name", PROJECTIONS)
def test_float_bit_linear_is_x_times_the_scaled_ternary_weights(packed, name):
    decoder = Decoder(packed, activations=A_FLOAT)
    projection = decoder.layer_weights(1).projections[name]
    assert isinstance(projection, TernaryProjection)
    x = np.random.default_rng(2).normal(size=(5, projection.shape[1])).astype(np.float32)
    got = decoder.bit_linear(x, projection, layer=1, name=name)
    assert got.dtype == np.float32 and got.shape == (5, projection.shape[0])
    # float32, as the decoder computes it
    matrix = projection.values.astype(np.float32) * np.float32(projection.scale)
    np.testing.assert_allclose(got, x @ matrix.T, rtol=1e-6, atol=1e-6)
    # and in float64: only float32 rounding apart
    want = x.astype(np.float64) @ (projection.values.astype(np.float64)
                                   * projection.scale).T
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_float_mode_has_no_quantizer_and_no_core(packed):
    calls = []

    def core(w, x, *, layer, name):
        calls.append(name)
        raise AssertionError("the float mode does not call the integer core")

    ledger = Ledger()
    Decoder(packed, activations=A_FLOAT, core=core, ledger=ledger).forward(PROMPT)
    assert calls == []
    assert "act_quant" not in ledger.kinds and "bitlinear" not in ledger.kinds
    assert ledger.kinds.count("float_linear") == TINY.layers * len(PROJECTIONS)


def test_float_layer_against_an_independent_float64_layer(packed):
    decoder = Decoder(packed, activations=A_FLOAT)
    x = decoder.embed(PROMPT)
    got = decoder.layer_forward(0, x, decoder.new_cache())
    want = float_layer(decoder, x.astype(np.float64), 0)
    # no quantizer: float32 rounding only (the a8 test needs 2 % of the signal)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_float_forward_is_close_to_a8_but_not_equal(packed):
    a8 = Decoder(packed).forward(PROMPT)
    fl = Decoder(packed, activations=A_FLOAT).forward(PROMPT)
    assert not np.array_equal(a8, fl)
    cosine = np.sum(a8 * fl, -1) / np.linalg.norm(a8, axis=-1) / np.linalg.norm(fl, axis=-1)
    assert np.all(cosine > 0.9)


def test_packed_and_master_agree_in_float(packed, master):
    """Both layouts store the same ternary weights and bf16 scales."""
    np.testing.assert_array_equal(Decoder(packed, activations=A_FLOAT).forward(PROMPT),
                                  Decoder(master, activations=A_FLOAT).forward(PROMPT))


def test_float_mode_with_topk_masks_before_the_product(packed):
    decoder = Decoder(packed, activations=A_FLOAT, topk=0.5)
    projection = decoder.layer_weights(0).projections["gate"]
    x = np.random.default_rng(4).normal(size=(3, TINY.hidden)).astype(np.float32)
    keep = np.zeros_like(x, dtype=bool)
    order = np.argsort(-np.abs(x), axis=-1)[:, :TINY.hidden // 2]
    np.put_along_axis(keep, order, True, axis=-1)
    masked = np.where(keep, x, 0).astype(np.float64)
    want = masked @ (projection.values.astype(np.float64) * projection.scale).T
    got = decoder.bit_linear(x, projection, layer=0, name="gate")
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_float_mode_zeroes_the_outputs_not_needed(packed):
    decoder = Decoder(packed, activations=A_FLOAT)
    projection = decoder.layer_weights(0).projections["up"]
    x = np.random.default_rng(5).normal(size=(2, TINY.hidden)).astype(np.float32)
    needed = np.random.default_rng(6).random((2, TINY.ffn)) < 0.5
    full = decoder.bit_linear(x, projection, layer=0, name="up")
    got = decoder.bit_linear(x, projection, layer=0, name="up", needed=needed)
    assert np.array_equal(got, np.where(needed, full, 0))


def test_float_mode_generation_uses_the_cache_exactly(packed):
    decoder = Decoder(packed, activations=A_FLOAT)
    run = generate(decoder, PROMPT, 4)
    assert np.array_equal(decoder.forward(PROMPT + run.generated_ids), run.logits)


# --- full-precision weights ---------------------------------------------------------------

def test_full_precision_gives_the_master_tensors_as_float_projections(master):
    weights = master.full_precision()
    assert weights.config == master.config
    layer = weights.layer(1)
    for name in PROJECTIONS:
        projection = layer.projections[name]
        assert isinstance(projection, FloatProjection)
        assert projection.ternary is False and projection.scale == 1.0
        assert projection.values.dtype == np.float32
        stored = master.float_tensor(tensor_name(1, name))
        assert np.array_equal(projection.values, stored)
        assert np.array_equal(projection.matrix(), stored)
        # not ternary: the quantizer was not applied
        assert len(np.unique(projection.values)) > 3
    assert np.array_equal(weights.embedding(), master.embedding())
    assert np.array_equal(weights.lm_head(), master.lm_head())
    assert np.array_equal(weights.final_norm(), master.final_norm())
    for norm, value in layer.norms.items():
        assert np.array_equal(value, master.layer(1).norms[norm])


def test_full_precision_forward_is_the_float_model(master):
    weights = master.full_precision()
    decoder = Decoder(weights, activations=A_FLOAT)
    x = decoder.embed(PROMPT)
    got = decoder.layer_forward(1, x, decoder.new_cache())
    np.testing.assert_allclose(got, float_layer(decoder, x.astype(np.float64), 1),
                               rtol=0, atol=1e-5 * np.abs(got).max())
    logits = decoder.forward(PROMPT)
    ternary = Decoder(master, activations=A_FLOAT).forward(PROMPT)
    assert logits.shape == ternary.shape and not np.array_equal(logits, ternary)


def test_full_precision_equals_master_weights_in_memory(master):
    """The same tensors through MasterWeights, projections swapped for float ones."""
    tensors = random_master_weights(TINY, seed=7)
    decoder = Decoder(master.full_precision(), activations=A_FLOAT)
    layer = decoder.layer_weights(0)
    for name in PROJECTIONS:
        assert np.array_equal(layer.projections[name].values, tensors[tensor_name(0, name)])
    ternary = MasterWeights(TINY, tensors).layer(0)
    for name in PROJECTIONS:
        assert ternary.projections[name].ternary


def test_full_precision_refuses_a_packed_checkpoint(packed):
    with pytest.raises(CheckpointError, match="a packed checkpoint has no full-precision "
                                              "weights"):
        packed.full_precision()


def test_full_precision_layer_out_of_range(master):
    with pytest.raises(IndexError, match="out of range"):
        master.full_precision().layer(TINY.layers)


@pytest.mark.parametrize("activations", [A8, A4_8])
def test_full_precision_weights_need_the_float_mode(master, activations):
    decoder = Decoder(master.full_precision(), activations=activations)
    with pytest.raises(ValueError, match=r"full-precision weights: they need activations "
                                         r"'float'"):
        decoder.forward(PROMPT)


def test_float_projection_checks_its_shape():
    with pytest.raises(ValueError, match="must be 2-D"):
        FloatProjection(np.zeros(4))
    projection = FloatProjection(np.arange(6).reshape(2, 3))
    assert projection.shape == (2, 3) and projection.values.dtype == np.float32


def test_unknown_activation_mode():
    weights = MasterWeights(TINY, random_master_weights(TINY, seed=1))
    with pytest.raises(ValueError, match="activations must be one of"):
        Decoder(weights, activations="fp16")
