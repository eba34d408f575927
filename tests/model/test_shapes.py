"""Transformer shapes: validation and the named models."""

import pytest

from ternary_accel.model.shapes import MODELS, TransformerShape, get_model


def test_2b4t_projections():
    shape = get_model("b1.58-2b4t")
    assert [(p.name, p.out_features, p.in_features) for p in shape.projections()] == [
        ("q", 2560, 2560), ("k", 640, 2560), ("v", 640, 2560), ("o", 2560, 2560),
        ("gate", 6912, 2560), ("up", 6912, 2560), ("down", 2560, 6912)]


def test_paper_models_are_classic_4x():
    for name in ("bitnet-6.7b", "bitnet-13b", "bitnet-30b"):
        shape = MODELS[name]
        assert shape.ffn == 4 * shape.hidden and shape.ffn_kind == "classic"
        assert [p.name for p in shape.projections()][-2:] == ["up", "down"]


@pytest.mark.parametrize("kwargs, message", [
    ({"hidden": 0}, "hidden"), ({"layers": -1}, "layers"), ({"heads": 3}, "divide hidden"),
    ({"kv_heads": 3}, "divide heads"), ({"ffn_kind": "moe"}, "ffn_kind"),
    ({"ffn": 2.5}, "ffn"),
])
def test_invalid_shapes(kwargs, message):
    params = dict(name="x", hidden=64, ffn=128, layers=2, heads=4)
    params.update(kwargs)
    with pytest.raises(ValueError, match=message):
        TransformerShape(**params)


def test_unknown_model_lists_known():
    with pytest.raises(ValueError, match="llama-7b"):
        get_model("llama-8b")
