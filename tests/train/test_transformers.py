"""The shipped reference model loads in transformers' ``BitNetForCausalLM`` in both
layouts and predicts what the golden model predicts."""

import warnings

import numpy as np
import pytest

from ternary_accel.model.checkpoint import load_checkpoint
from ternary_accel.model.decoder import Decoder
from ternary_accel.model.quant import TORCH_FP32
from ternary_accel.model.reference import reference_checkpoint

torch = pytest.importorskip("torch", reason="the [train] extra (PyTorch) is not installed")
transformers = pytest.importorskip("transformers",
                                   reason="transformers is not installed (the dev extra)")
pytest.importorskip("accelerate", reason="accelerate is not installed (the dev extra)")


@pytest.mark.parametrize("layout", ["packed", "master"])
def test_transformers_loads_the_reference_model(layout):
    folder = reference_checkpoint("b1.58", layout)
    # transformers unpacks a packed checkpoint into bfloat16 weights; the master one it
    # runs in float32, ternarizing online with a float32 scale (we store it in bf16)
    dtype = torch.bfloat16 if layout == "packed" else torch.float32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.BitNetForCausalLM.from_pretrained(folder, dtype=dtype)
    model.eval()
    ids = np.array([0, 9, 305, 17, 2048, 77, 1500, 3, 640, 4000, 12, 88])
    with torch.no_grad():
        theirs = model(torch.tensor(ids)[None]).logits[0].float().numpy()
    ours = Decoder(load_checkpoint(folder), act_quant=TORCH_FP32).forward(ids)
    assert theirs.shape == ours.shape
    spread = float(np.abs(ours).max())
    # packed: transformers computes in bfloat16; master: it ternarizes with a float32
    # scale where a checkpoint (and so the golden model) holds a bfloat16 one: each
    # projection's output differs by up to 2^-9 relative, over 28 projections
    assert np.abs(theirs - ours).max() < 0.02 * spread
    assert np.mean(theirs.argmax(-1) == ours.argmax(-1)) >= 11 / 12
