"""Lazily drawn random master weights (:class:`model.weights.RandomMasterWeights`): the
tensors of :func:`model.weights.random_master_weights` bit for bit, whatever the order
they are asked for in and the blocks they are drawn in, so that 2B4T's random weights
(``ternary-accel bench token --model b1.58-2b4t``) are the small models' recipe."""

import dataclasses

import numpy as np
import pytest

from ternary_accel.model.hwdecoder import HwDecoder
from ternary_accel.model.weights import (MasterWeights, RandomMasterWeights, bf16_round,
                                         random_master_weights)
from token_models import MICRO

#: MICRO with three layers and an untied head (every kind of tensor, layers in between).
UNTIED = dataclasses.replace(MICRO, shape=dataclasses.replace(MICRO.shape, layers=3),
                             tie_word_embeddings=False)


@pytest.mark.parametrize("config", [MICRO, UNTIED], ids=["micro", "untied-3-layers"])
def test_the_tensors_are_random_master_weights(config):
    reference = random_master_weights(config, seed=7)
    lazy = RandomMasterWeights(config, seed=7)
    lazy.BLOCK = 100                        # several blocks a tensor
    tensors = lazy.tensors()
    assert tensors.keys() == reference.keys()
    for name, value in reference.items():
        assert tensors[name].dtype == np.float32
        assert np.array_equal(tensors[name], value), name
        assert np.array_equal(bf16_round(tensors[name]), tensors[name]), name


def test_layers_in_any_order_are_master_weights():
    reference = MasterWeights(UNTIED, random_master_weights(UNTIED, seed=3))
    lazy = RandomMasterWeights(UNTIED, seed=3, cache=1)
    for index in (2, 0, 1, 2, 0):
        got, expected = lazy.layer(index), reference.layer(index)
        for name, p in expected.projections.items():
            assert np.array_equal(got.projections[name].values, p.values), (index, name)
            assert got.projections[name].scale == p.scale
        for name, w in expected.norms.items():
            assert np.array_equal(got.norms[name], w), (index, name)
    assert list(lazy._layers) == [0]                 # only the last layer kept
    assert np.array_equal(lazy.lm_head(), reference.lm_head())
    assert np.array_equal(lazy.final_norm(), reference.final_norm())
    with pytest.raises(IndexError):
        lazy.layer(3)


def test_a_decoder_without_its_layers_cached_has_the_same_constants():
    reference = HwDecoder(MasterWeights(MICRO, random_master_weights(MICRO, seed=5)))
    lazy = HwDecoder(RandomMasterWeights(MICRO, seed=5), cache_layers=False)
    assert np.array_equal(lazy.hw_embedding, reference.hw_embedding)
    got, expected = lazy.hw_layer(0), reference.hw_layer(0)
    assert got["eps"] == expected["eps"] and got["scales"] == expected["scales"]
    for name, (gint, gexp) in expected["gains"].items():
        assert np.array_equal(got["gains"][name][0], gint) and got["gains"][name][1] == gexp
    assert np.array_equal(lazy.hw_head.codes, reference.hw_head.codes)
    assert np.array_equal(lazy.hw_head.mant, reference.hw_head.mant)
