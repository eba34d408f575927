"""The project's reference models: small BitNet decoders trained here
(``ternary-accel train``, ``docs/training.md``) on the Python standard library's source,
shipped with the package under ``checkpoints/``.

=============  ====================================================================
name           what
=============  ====================================================================
``b1.58``      BitNet b1.58 (ternary weights, int8 activations): the reference model
``a4.8``       the same architecture and budget trained with BitNet a4.8 activations
``q-sparse``   trained with Q-Sparse Top-K on every BitLinear input
=============  ====================================================================

Each is a Hugging Face checkpoint folder with ``tokenizer.json``, ``corpus.json`` (the
corpus and split it was trained on) and ``training.json`` (the run's settings and
summary); ``b1.58`` is there in both layouts, ``packed`` and ``master``.
"""

from importlib import resources
from pathlib import Path

__all__ = ["REFERENCE_MODELS", "DEFAULT_MODEL", "reference_checkpoint"]

#: The shipped models and their layouts.
REFERENCE_MODELS = {"b1.58": ("packed", "master"), "a4.8": ("packed",),
                    "q-sparse": ("packed",)}
#: The default model of the examples and benches.
DEFAULT_MODEL = "b1.58"


def reference_checkpoint(name=DEFAULT_MODEL, layout="packed"):
    """The folder of a shipped reference checkpoint.

    Raises
    ------
    ValueError
        On an unknown name or a layout that is not shipped.
    FileNotFoundError
        If the package was installed without its checkpoints.
    """
    if name not in REFERENCE_MODELS:
        raise ValueError(f"unknown reference model {name!r}; shipped: "
                         f"{', '.join(REFERENCE_MODELS)}")
    if layout not in REFERENCE_MODELS[name]:
        raise ValueError(f"reference model {name} is shipped as "
                         f"{' and '.join(REFERENCE_MODELS[name])}, not {layout}")
    folder = Path(str(resources.files("ternary_accel.checkpoints"))) / name / layout
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: the reference checkpoint is missing (the "
                                "package was installed without its checkpoints)")
    return folder
