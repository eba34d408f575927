"""The shipped reference models: present, reproducible, and a language model of their
corpus."""

import json

import numpy as np
import pytest

from ternary_accel.model.checkpoint import load_checkpoint
from ternary_accel.model.decoder import Decoder, generate
from ternary_accel.model.evaluate import checkpoint_quality
from ternary_accel.model.reference import REFERENCE_MODELS, reference_checkpoint

pytest.importorskip("tokenizers", reason="the [checkpoints] extra is not installed")


@pytest.mark.parametrize("name,layout", [(name, layout)
                                         for name, layouts in REFERENCE_MODELS.items()
                                         for layout in layouts])
def test_reference_checkpoints_are_shipped_complete(name, layout):
    folder = reference_checkpoint(name, layout)
    for file in ("config.json", "model.safetensors", "tokenizer.json", "corpus.json",
                 "training.json"):
        assert (folder / file).is_file(), f"{folder} lacks {file}"
    checkpoint = load_checkpoint(folder)
    training = json.loads((folder / "training.json").read_text())
    run = training["run"]
    assert {"b1.58": run["activations"] == "a8" and run["topk"] is None,
            "a4.8": run["activations"] == "a4.8",
            "q-sparse": run["topk"] is not None}[name], training["variant"]
    assert checkpoint.config.hidden == training["run"]["hidden"]
    assert "perplexity" in training["test"]


def test_unknown_reference_names_are_refused():
    with pytest.raises(ValueError, match="unknown reference model 'b2'"):
        reference_checkpoint("b2")
    with pytest.raises(ValueError, match="shipped as packed, not master"):
        reference_checkpoint("a4.8", "master")


def test_both_layouts_of_the_reference_model_give_the_same_logits():
    ids = np.array([0, 11, 400, 1200, 7, 3000, 42])
    packed = Decoder(load_checkpoint(reference_checkpoint("b1.58", "packed"))).forward(ids)
    master = Decoder(load_checkpoint(reference_checkpoint("b1.58", "master"))).forward(ids)
    np.testing.assert_array_equal(packed, master)


@pytest.mark.slow
@pytest.mark.parametrize("name", REFERENCE_MODELS)
def test_recorded_test_perplexity_is_reproduced(name):
    """``ternary-accel train`` recorded the test perplexity of the exported checkpoint at
    the default budget; the golden model gives it again to the printed precision."""
    folder = reference_checkpoint(name)
    recorded = json.loads((folder / "training.json").read_text())["test"]
    quality = checkpoint_quality(folder)
    assert quality.tokens == recorded["tokens"]
    assert round(quality.perplexity, 3) == recorded["perplexity"]
    assert round(quality.bits_per_byte, 4) == recorded["bits_per_byte"]


@pytest.mark.parametrize("prompt,expect", [
    ("def ", "("),           # a function name, then its parameters
    ("\nimport ", None),     # a module name (a newline first: the line starts code,
    ("\nclass ", None),      # where a bare word at position 0 reads as prose)
])
def test_the_reference_model_continues_python(prompt, expect):
    """Greedy generation with token healing, as ``model generate --prompt`` does it."""
    import keyword
    from tokenizers import Tokenizer
    folder = reference_checkpoint()
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    decoder = Decoder(load_checkpoint(folder))
    ids = tokenizer.encode(prompt).ids
    healed = tokenizer.decode(ids[-1:])
    allowed = [tokenizer.decode([i]).startswith(healed) for i in range(decoder.config.vocab)]
    run = generate(decoder, ids[:-1], 8, first_allowed=allowed)
    text = tokenizer.decode(run.generated_ids)[len(healed):]
    name = text
    for stop in "(:.\n =,":
        name = name.split(stop)[0]
    assert name.isidentifier() and not keyword.iskeyword(name), \
        f"{prompt!r} continued with {text!r}: no name"
    if expect is not None:
        assert expect in text, f"{prompt!r} continued with {text!r}"
