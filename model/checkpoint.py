"""BitNet b1.58 checkpoints on disk: Hugging Face layout, read lazily, validated up front.

A checkpoint directory holds ``config.json`` and the weights, either in one
``model.safetensors`` or in shards ``model-0000K-of-0000N.safetensors`` listed by
``model.safetensors.index.json`` (``{"metadata": {...}, "weight_map": {tensor: file}}``).
Two layouts exist (``docs/models.md``, "Checkpoint formats"):

- **packed** (``quantization_mode: offline``): each projection ``weight`` is uint8
  ``[out/4, in]`` in the 2-bit layout of :func:`model.encoding.unpack_hf_2bit`, with a
  ``weight_scale`` of shape [1] that multiplies the output;
- **master** (``quantization_mode: online``): float projection weights, ternarized on
  use by :func:`model.weights.ternarize_master`.

:func:`load_checkpoint` reads ``config.json`` and the safetensors *headers* only, and
checks every tensor's presence, dtype and shape against the configuration, so a bad
checkpoint fails at once with one line naming the file and the tensor. Tensor data is
memory-mapped and read when a layer is asked for (:meth:`Checkpoint.layer`), so a model
runs without all its layers in memory.

bfloat16
--------
NumPy has no bfloat16 and the ``safetensors`` NumPy backend refuses to load BF16
tensors. So the ``safetensors`` package validates each file and reports names, dtypes
and shapes, while the data is memory-mapped here from the header's offsets
(:func:`read_safetensors_header`), BF16 arriving as raw ``uint16`` words that
:func:`bf16_to_float32` widens with a 16-bit shift (exact). For writing, the package's
``serialize_file`` accepts raw ``uint16`` words declared ``bfloat16``
(:func:`write_safetensors`).
"""

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from safetensors import SafetensorError, TensorSpec, safe_open, serialize_file

from ternary_accel.model.config import OFFLINE, ONLINE, TINY, ModelConfig
from ternary_accel.model.encoding import HF_CODES_PER_BYTE, pack_hf_2bit, unpack_hf_2bit
from ternary_accel.model.weights import (NORMS, PROJECTIONS, FloatProjection, LayerWeights,
                                         TernaryProjection, bf16_round,
                      model_tensor_names, random_master_weights, tensor_name,
                      ternarize_master)

__all__ = ["CheckpointError", "Checkpoint", "TensorInfo", "load_checkpoint",
           "write_checkpoint", "make_tiny", "inspect_checkpoint", "format_inspect",
           "read_safetensors_header", "write_safetensors", "bf16_to_float32",
           "float32_to_bf16", "PACKED", "MASTER", "LAYOUTS", "CONFIG_FILE",
           "WEIGHTS_FILE", "INDEX_FILE", "TENSOR_KINDS"]

#: Layout of a packed checkpoint (``quantization_mode: offline``).
PACKED = "packed"
#: Layout of a master-weight checkpoint (``quantization_mode: online``).
MASTER = "master"
LAYOUTS = (PACKED, MASTER)
_MODE_OF_LAYOUT = {PACKED: OFFLINE, MASTER: ONLINE}
_LAYOUT_OF_MODE = {mode: layout for layout, mode in _MODE_OF_LAYOUT.items()}

CONFIG_FILE = "config.json"
#: The weights of an unsharded checkpoint.
WEIGHTS_FILE = "model.safetensors"
#: The tensor-to-shard map of a sharded checkpoint.
INDEX_FILE = "model.safetensors.index.json"

#: What each tensor of a checkpoint is, for :func:`inspect_checkpoint`. "ternary" is a
#: projection weight (2-bit packed, or the float master weight in a master checkpoint).
TENSOR_KINDS = ("ternary", "scales", "norms", "embedding", "lm_head")

# Safetensors dtype code -> (little-endian NumPy storage dtype, ``TensorSpec`` name).
# BF16 is stored and memory-mapped as its raw 16-bit words.
_DTYPES = {"U8": (np.dtype("u1"), "uint8"), "I8": (np.dtype("i1"), "int8"),
           "BF16": (np.dtype("<u2"), "bfloat16"), "F16": (np.dtype("<f2"), "float16"),
           "F32": (np.dtype("<f4"), "float32"), "F64": (np.dtype("<f8"), "float64")}
#: Dtypes accepted for float tensors (norms, embedding, scales, master weights).
_FLOAT_DTYPES = ("BF16", "F32", "F16")
_PACKED_DTYPES = ("U8",)
_HEADER_LENGTH_BYTES = 8


class CheckpointError(ValueError):
    """A problem with a checkpoint on disk.

    The message is one line that names the file (relative to the checkpoint directory)
    and, where there is one, the tensor: ``model.safetensors: tensor
    model.layers.0.mlp.up_proj.weight: packed code 3 at row 5, column 17``.
    """

    def __init__(self, message):
        super().__init__(" ".join(str(message).split()))


def _tensor_error(file, name, problem):
    return CheckpointError(f"{file}: tensor {name}: {problem}")


# bfloat16 ------------------------------------------------------------------------------

def bf16_to_float32(words):
    """Widen raw bfloat16 words (``uint16``) to float32: the bf16 bits are the top half
    of the float32 bits, so the conversion is a shift and is exact (signed zeros, inf and
    NaN included)."""
    words = np.asarray(words, dtype=np.uint16)
    return (words.astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16(values):
    """Round float values to bfloat16 (ties to even, :func:`model.weights.bf16_round`)
    and return the raw ``uint16`` words a safetensors ``BF16`` tensor stores."""
    rounded = np.ascontiguousarray(bf16_round(values))
    return (rounded.view(np.uint32) >> 16).astype(np.uint16)


# Safetensors files ---------------------------------------------------------------------

@dataclass(frozen=True)
class TensorInfo:
    """Where a tensor lives in a checkpoint, from the safetensors header.

    Attributes
    ----------
    name : str
    file : str
        File name relative to the checkpoint directory.
    dtype : str
        Safetensors dtype code (``"U8"``, ``"BF16"``, ``"F32"`` ...).
    shape : tuple of int
    offset : int
        Byte offset of the data from the start of the file.
    nbytes : int
    """

    name: str
    file: str
    dtype: str
    shape: tuple
    offset: int
    nbytes: int


def read_safetensors_header(path, file=None):
    """Read the header of a safetensors file (and no tensor data).

    The format: an 8-byte little-endian header length ``n``, ``n`` bytes of JSON mapping
    each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets
    into the data that follows the header) plus an optional ``__metadata__``.

    Parameters
    ----------
    path : path-like
    file : str, optional
        Name of the file in error messages (default: ``path``).

    Returns
    -------
    data_start : int
        Byte offset of the data section (``8 + n``).
    entries : dict of str to dict
        The header's tensor entries, without ``__metadata__``.

    Raises
    ------
    CheckpointError
        If the file is missing, shorter than its header, the header is not a JSON
        object of tensor entries, or a tensor's data runs past the end of the file.
    """
    path = Path(path)
    file = str(path) if file is None else file
    try:
        size = path.stat().st_size
        with open(path, "rb") as stream:
            prefix = stream.read(_HEADER_LENGTH_BYTES)
            if len(prefix) < _HEADER_LENGTH_BYTES:
                raise CheckpointError(f"{file}: truncated ({size} bytes, shorter than "
                                      f"the {_HEADER_LENGTH_BYTES}-byte header length)")
            (header_length,) = struct.unpack("<Q", prefix)
            data_start = _HEADER_LENGTH_BYTES + header_length
            if data_start > size:
                raise CheckpointError(f"{file}: truncated: the header claims "
                                      f"{header_length} bytes but the file has {size}")
            text = stream.read(header_length)
    except OSError as error:
        raise CheckpointError(f"{file}: cannot read ({error.strerror or error})") from None
    try:
        entries = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{file}: header is not valid JSON ({error})") from None
    if not isinstance(entries, dict):
        raise CheckpointError(f"{file}: header is not a JSON object")
    entries.pop("__metadata__", None)
    data_size = size - data_start
    for name, entry in entries.items():
        try:
            begin, end = (int(offset) for offset in entry["data_offsets"])
        except (TypeError, KeyError, ValueError):
            raise _tensor_error(file, name, "header entry has no valid data_offsets") \
                from None
        if not 0 <= begin <= end <= data_size:
            raise _tensor_error(file, name, f"data_offsets [{begin}, {end}] run past the "
                                f"end of the file (truncated? {data_size} data bytes)")
    return data_start, entries


def _scan_safetensors(path, file):
    """Every tensor of one safetensors file, as :class:`TensorInfo`.

    The ``safetensors`` package is the judge of a well-formed file (contiguous offsets,
    sizes matching dtype and shape, the file fully covered) and gives names, dtypes and
    shapes; the byte offsets for memory-mapping come from :func:`read_safetensors_header`.
    """
    data_start, entries = read_safetensors_header(path, file)
    try:
        with safe_open(path, framework="numpy") as handle:
            specs = {}
            for name in handle.keys():
                view = handle.get_slice(name)
                specs[name] = (view.get_dtype(), tuple(view.get_shape()))
    except SafetensorError as error:
        raise CheckpointError(f"{file}: not a valid safetensors file ({error})") from None
    infos = {}
    for name, (dtype, shape) in specs.items():
        begin, end = entries[name]["data_offsets"]
        infos[name] = TensorInfo(name, file, dtype, shape, data_start + begin, end - begin)
    return infos


def write_safetensors(path, tensors, *, metadata=None):
    """Write a safetensors file with the ``safetensors`` package.

    Parameters
    ----------
    path : path-like
    tensors : dict of str to (str, numpy.ndarray)
        By tensor name, the safetensors dtype code (``"U8"``, ``"I8"``, ``"BF16"``,
        ``"F16"``, ``"F32"``, ``"F64"``) and the data in its storage dtype: raw
        ``uint16`` words for ``BF16`` (:func:`float32_to_bf16`).
    metadata : dict of str to str, optional
        Default ``{"format": "pt"}``, as Hugging Face checkpoints carry.

    Raises
    ------
    ValueError
        On an unknown dtype code or data whose dtype does not store it.
    """
    arrays, specs = {}, {}
    for name, (dtype, data) in tensors.items():
        if dtype not in _DTYPES:
            raise ValueError(f"tensor {name}: dtype {dtype!r} is not one of "
                             f"{', '.join(_DTYPES)}")
        storage, spec_name = _DTYPES[dtype]
        data = np.asarray(data)
        if data.dtype.kind != storage.kind or data.dtype.itemsize != storage.itemsize:
            raise ValueError(f"tensor {name}: {dtype} is stored as {storage}, not "
                             f"{data.dtype}")
        # Contiguous little-endian copies, kept alive in ``arrays`` while the
        # serializer reads them through raw pointers.
        arrays[name] = np.ascontiguousarray(data, dtype=storage)
        specs[name] = TensorSpec(dtype=spec_name, shape=list(data.shape),
                                 data_ptr=arrays[name].ctypes.data,
                                 data_len=arrays[name].nbytes)
    serialize_file(specs, str(path),
                   metadata={"format": "pt"} if metadata is None else metadata)


# What a checkpoint must hold -----------------------------------------------------------

class _Expected(NamedTuple):
    shape: tuple
    dtypes: tuple
    kind: str


def _expected_tensors(config, layout):
    """Shape, accepted dtypes and kind of every tensor of a ``layout`` checkpoint of
    ``config``, for the names of :func:`model.weights.model_tensor_names`."""
    packed = layout == PACKED
    table = {"model.embed_tokens.weight":
             _Expected((config.vocab, config.hidden), _FLOAT_DTYPES, "embedding"),
             "lm_head.weight":
             _Expected((config.vocab, config.hidden), _FLOAT_DTYPES, "lm_head"),
             "model.norm.weight": _Expected((config.hidden,), _FLOAT_DTYPES, "norms")}
    widths = _norm_widths(config)
    for layer in range(config.layers):
        for projection in config.shape.projections():
            out_features, in_features = projection.out_features, projection.in_features
            weight = tensor_name(layer, projection.name)
            if not packed:
                table[weight] = _Expected((out_features, in_features), _FLOAT_DTYPES,
                                          "ternary")
                continue
            if out_features % HF_CODES_PER_BYTE:
                raise CheckpointError(
                    f"{CONFIG_FILE}: projection {projection.name} has {out_features} "
                    f"output features, not a multiple of {HF_CODES_PER_BYTE} as the "
                    "packed layout needs")
            table[weight] = _Expected((out_features // HF_CODES_PER_BYTE, in_features),
                                      _PACKED_DTYPES, "ternary")
            table[tensor_name(layer, projection.name, "weight_scale")] = \
                _Expected((1,), _FLOAT_DTYPES, "scales")
        for norm in NORMS:
            table[tensor_name(layer, norm)] = _Expected((widths[norm],), _FLOAT_DTYPES,
                                                        "norms")
    return {name: table[name] for name in model_tensor_names(config, packed=packed)}


def _norm_widths(config):
    return {"input_layernorm": config.hidden, "attn_sub_norm": config.hidden,
            "post_attention_layernorm": config.hidden, "ffn_sub_norm": config.ffn}


def _check_tensors(tensors, expected, layout, catalogue):
    """One line per problem of ``tensors`` (name -> :class:`TensorInfo`) against
    ``expected``; ``catalogue`` is the file that lists the tensors (names missing ones)."""
    mode = _MODE_OF_LAYOUT[layout]
    problems = [f"{catalogue}: tensor {name}: missing from a {layout} checkpoint "
                f"(quantization_mode {mode!r} in {CONFIG_FILE})"
                for name in expected if name not in tensors]
    for name, info in sorted(tensors.items()):
        if name not in expected:
            problems.append(f"{info.file}: tensor {name}: unexpected (not a tensor of "
                            f"a {layout} BitNet checkpoint of this config.json)")
            continue
        want = expected[name]
        if info.dtype not in want.dtypes:
            problems.append(f"{info.file}: tensor {name}: dtype {info.dtype}, expected "
                            f"{' or '.join(want.dtypes)}")
        if info.shape != want.shape:
            problems.append(f"{info.file}: tensor {name}: shape {list(info.shape)}, "
                            f"expected {list(want.shape)}")
    return problems


def _raise_first(problems):
    """Raise the first problem, counting the others, so that the message is one line."""
    if not problems:
        return
    message, more = problems[0], len(problems) - 1
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    raise CheckpointError(message)


# Reading -------------------------------------------------------------------------------

def _read_json(directory, file):
    path = directory / file
    if not path.is_file():
        raise CheckpointError(f"{file}: not found in {directory}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{file}: cannot be read as JSON ({error})") from None


def _read_config(directory):
    try:
        return ModelConfig.from_dict(_read_json(directory, CONFIG_FILE),
                                     name=directory.name or "checkpoint")
    except CheckpointError:
        raise
    except (ValueError, TypeError) as error:  # ConfigError, or a field of a wrong type
        raise CheckpointError(f"{CONFIG_FILE}: {error}") from None


def _read_weight_map(directory):
    """The weight files and the tensor-to-file map of the index (``None`` unsharded)."""
    if not (directory / INDEX_FILE).exists():
        if not (directory / WEIGHTS_FILE).is_file():
            raise CheckpointError(f"{WEIGHTS_FILE}: not found in {directory} (and no "
                                  f"{INDEX_FILE})")
        return [WEIGHTS_FILE], None
    index = _read_json(directory, INDEX_FILE)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
            isinstance(name, str) and isinstance(file, str)
            for name, file in weight_map.items()):
        raise CheckpointError(f"{INDEX_FILE}: no weight_map object of tensor names to "
                              "file names")
    for name, file in sorted(weight_map.items()):
        if Path(file).name != file or file in ("", ".", ".."):
            raise CheckpointError(f"{INDEX_FILE}: tensor {name}: shard {file!r} is not "
                                  "a file name in the checkpoint directory")
        if not (directory / file).is_file():
            raise CheckpointError(f"{INDEX_FILE}: tensor {name}: shard {file} does not "
                                  "exist")
    return sorted(set(weight_map.values())), weight_map


class Checkpoint:
    """A checkpoint directory, validated, with lazily read tensors.

    Use :func:`load_checkpoint`. Offers the decoder the interface of
    :class:`model.weights.MasterWeights` (:meth:`embedding`, :meth:`lm_head`,
    :meth:`final_norm`, :meth:`layer`), reading from disk on every call (nothing is
    cached), plus raw access to the tensors.

    Parameters
    ----------
    directory : path-like

    Attributes
    ----------
    directory : pathlib.Path
    config : model.config.ModelConfig
    layout : str
        ``"packed"`` or ``"master"``, from ``config.quantization_mode``.
    files : list of str
        The safetensors files, relative to ``directory``.

    Raises
    ------
    CheckpointError
        On a missing or invalid ``config.json``, a missing weight file or shard, a
        malformed or truncated safetensors file, or any tensor missing, unexpected, or
        of the wrong dtype or shape (only headers are read).
    """

    def __init__(self, directory):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise CheckpointError(f"{self.directory}: not a checkpoint directory")
        self.config = _read_config(self.directory)
        self.layout = _LAYOUT_OF_MODE[self.config.quantization_mode]
        self.files, weight_map = _read_weight_map(self.directory)
        self._tensors = {}
        problems = []
        for file in self.files:
            infos = _scan_safetensors(self.directory / file, file)
            if weight_map is not None:
                listed = {name for name, shard in weight_map.items() if shard == file}
                problems += [f"{file}: tensor {name}: missing (listed for this file in "
                             f"{INDEX_FILE})" for name in sorted(listed - set(infos))]
                problems += [f"{file}: tensor {name}: not listed for this file in "
                             f"{INDEX_FILE}" for name in sorted(set(infos) - listed)]
            self._tensors.update(infos)
        self._expected = _expected_tensors(self.config, self.layout)
        problems += _check_tensors(self._tensors, self._expected, self.layout,
                                   WEIGHTS_FILE if weight_map is None else INDEX_FILE)
        _raise_first(problems)

    def __repr__(self):
        return (f"Checkpoint({str(self.directory)!r}, layout={self.layout!r}, "
                f"tensors={len(self._tensors)}, files={len(self.files)})")

    # Tensors ---------------------------------------------------------------------------

    def tensor_names(self):
        """Every tensor name, sorted."""
        return sorted(self._tensors)

    def tensor_info(self, name):
        """The :class:`TensorInfo` (file, dtype, shape, offset, nbytes) of ``name``."""
        try:
            return self._tensors[name]
        except KeyError:
            raise KeyError(f"no tensor {name!r} in checkpoint {self.directory}") from None

    def tensor_kind(self, name):
        """What tensor ``name`` is: one of :data:`TENSOR_KINDS`."""
        self.tensor_info(name)
        return self._expected[name].kind

    def raw(self, name):
        """The stored data of ``name``, memory-mapped read-only: ``uint8`` for packed
        weights, raw ``uint16`` words for BF16, ``float16``/``float32`` otherwise."""
        info = self.tensor_info(name)
        storage = _DTYPES[info.dtype][0]
        if info.nbytes == 0:  # mmap cannot map an empty range
            return np.zeros(info.shape, dtype=storage)
        return np.memmap(self.directory / info.file, dtype=storage, mode="r",
                         offset=info.offset, shape=info.shape)

    def float_tensor(self, name):
        """The float tensor ``name`` as a float32 array (BF16 widened exactly).

        Raises
        ------
        ValueError
            For a packed (integer) tensor: read those with :meth:`projection`.
        """
        info = self.tensor_info(name)
        if info.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"tensor {name} is {info.dtype}, not a float tensor")
        raw = self.raw(name)
        if info.dtype == "BF16":
            return bf16_to_float32(raw)
        return np.array(raw, dtype=np.float32)

    # The decoder's interface (model.weights.MasterWeights) -----------------------------

    def embedding(self):
        """The token embedding, float32 (vocab, hidden)."""
        return self.float_tensor("model.embed_tokens.weight")

    def lm_head(self):
        """The LM head, float32 (vocab, hidden): the embedding when tied."""
        return self.float_tensor("model.embed_tokens.weight"
                                 if self.config.tie_word_embeddings else "lm_head.weight")

    def final_norm(self):
        """The final RMSNorm weight, float32 (hidden,)."""
        return self.float_tensor("model.norm.weight")

    def projection(self, layer, name):
        """One BitLinear's :class:`model.weights.TernaryProjection`, read from disk.

        Packed layout: the 2-bit weights unpacked, ``weight_scale`` as the scale. Master
        layout: the float weights ternarized by :func:`model.weights.ternarize_master`.

        Raises
        ------
        CheckpointError
            On a packed code 3 or a scale that is not positive and finite.
        """
        self._check_layer(layer)
        if name not in PROJECTIONS:
            raise ValueError(f"unknown projection {name!r}; known: "
                             f"{', '.join(PROJECTIONS)}")
        weight = tensor_name(layer, name)
        if self.layout == MASTER:
            return ternarize_master(self.float_tensor(weight))
        file = self._tensors[weight].file
        try:
            values = unpack_hf_2bit(self.raw(weight), name=f"{file}: tensor {weight}")
        except ValueError as error:
            raise CheckpointError(str(error)) from None
        scale_name = tensor_name(layer, name, "weight_scale")
        scale = float(self.float_tensor(scale_name)[0])
        if not (math.isfinite(scale) and scale > 0):
            raise _tensor_error(self._tensors[scale_name].file, scale_name,
                                f"weight scale must be positive and finite, not {scale}")
        return TernaryProjection(values, scale)

    def layer(self, index):
        """The :class:`model.weights.LayerWeights` of layer ``index``, read from disk."""
        self._check_layer(index)
        layer = LayerWeights(
            {name: self.projection(index, name) for name in PROJECTIONS},
            {norm: self.float_tensor(tensor_name(index, norm)) for norm in NORMS})
        layer.check(self.config, index)
        return layer

    def full_precision(self):
        """The master weights as they are, without the ternary quantizer: a source of
        weights whose projections are :class:`model.weights.FloatProjection` (for a
        decoder with ``activations="float"``: a full-precision model's forward pass, or
        a ternary model's master weights unquantized).

        Raises
        ------
        CheckpointError
            For a packed checkpoint (its float weights are gone).
        """
        if self.layout != MASTER:
            raise CheckpointError(f"{self.directory}: a packed checkpoint has no "
                                  "full-precision weights; use its master layout")
        return _FullPrecision(self)

    def _check_layer(self, index):
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) \
                or not 0 <= index < self.config.layers:
            raise IndexError(f"layer {index!r} out of range 0..{self.config.layers - 1}")


class _FullPrecision:
    """A master checkpoint's weights without the ternary quantizer
    (:meth:`Checkpoint.full_precision`)."""

    def __init__(self, checkpoint):
        self.checkpoint = checkpoint
        self.config = checkpoint.config
        self.embedding = checkpoint.embedding
        self.lm_head = checkpoint.lm_head
        self.final_norm = checkpoint.final_norm

    def layer(self, index):
        ck = self.checkpoint
        ck._check_layer(index)
        layer = LayerWeights(
            {name: FloatProjection(ck.float_tensor(tensor_name(index, name)))
             for name in PROJECTIONS},
            {norm: ck.float_tensor(tensor_name(index, norm)) for norm in NORMS})
        layer.check(self.config, index)
        return layer


def load_checkpoint(directory):
    """Open and validate the checkpoint in ``directory`` (see :class:`Checkpoint`).

    Reads ``config.json``, the index if any, and the safetensors headers; no tensor data.

    Raises
    ------
    CheckpointError
        With one line naming the file, and the tensor where there is one.
    """
    return Checkpoint(directory)


# Writing -------------------------------------------------------------------------------

def _shard_file(shard, count):
    """Hugging Face name of shard ``shard`` (from 0) of ``count``."""
    return f"model-{shard + 1:05d}-of-{count:05d}.safetensors"


def _is_checkpoint_file(path):
    name = path.name
    return name in (CONFIG_FILE, WEIGHTS_FILE, INDEX_FILE) or (
        name.startswith("model-") and name.endswith(".safetensors") and "-of-" in name)


def _stale_checkpoint_files(directory, overwrite):
    """The checkpoint files already in ``directory``, to remove before writing (a stale
    index or shard would otherwise shadow or join the new checkpoint)."""
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"{directory}: exists and is not a directory")
    entries = list(directory.iterdir()) if directory.exists() else []
    if entries and not overwrite:
        raise CheckpointError(f"{directory}: not empty; pass overwrite=True to replace "
                              "the checkpoint in it")
    return [path for path in entries if path.is_file() and _is_checkpoint_file(path)]


def _stored_tensors(config, tensors, layout):
    """Safetensors ``(dtype, data)`` by name for master ``tensors`` in ``layout``."""
    expected = _expected_tensors(config, MASTER)
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        problem = f"tensor {missing[0]} is missing" if missing \
            else f"tensor {extra[0]} is not a tensor of this configuration"
        raise ValueError(f"master weights: {problem}")
    masters = {}
    for name, want in expected.items():
        masters[name] = np.asarray(tensors[name], dtype=np.float32)
        if masters[name].shape != want.shape:
            raise ValueError(f"master weights: tensor {name} has shape "
                             f"{list(masters[name].shape)}, expected {list(want.shape)}")
        if not np.all(np.isfinite(masters[name])):
            raise ValueError(f"master weights: tensor {name} contains NaN or inf")
    packed = layout == PACKED
    stored = {name: ("BF16", float32_to_bf16(master)) for name, master in masters.items()
              if not (packed and expected[name].kind == "ternary")}
    if packed:
        for layer in range(config.layers):
            for name in PROJECTIONS:
                projection = ternarize_master(masters[tensor_name(layer, name)])
                stored[tensor_name(layer, name)] = ("U8", pack_hf_2bit(projection.values))
                stored[tensor_name(layer, name, "weight_scale")] = (
                    "BF16", float32_to_bf16(np.array([projection.scale], np.float32)))
    return stored


def write_checkpoint(directory, config, tensors, *, layout=PACKED, shards=1,
                     overwrite=False):
    """Write a checkpoint that :func:`load_checkpoint` reads back.

    Parameters
    ----------
    directory : path-like
        Created if needed; must be empty unless ``overwrite``.
    config : model.config.ModelConfig
        Written as ``config.json`` with the quantization mode of ``layout``.
    tensors : dict of str to array_like
        Float master weights by Hugging Face name
        (:func:`model.weights.random_master_weights`).
    layout : str
        ``"packed"``: each projection ternarized (:func:`model.weights.ternarize_master`)
        and stored as uint8 :func:`model.encoding.pack_hf_2bit` with its scale as BF16
        ``weight_scale`` [1], everything else BF16. ``"master"``: everything BF16. Both
        layouts of the same weights give identical :meth:`Checkpoint.layer` results.
    shards : int
        1 writes ``model.safetensors``; N > 1 splits the tensors (sorted by name, by
        count) over ``model-0000K-of-0000N.safetensors`` with
        ``model.safetensors.index.json``.
    overwrite : bool
        Allow a non-empty directory; checkpoint files already in it (``config.json``,
        ``model*.safetensors``, the index) are removed first, other files are kept.

    Returns
    -------
    pathlib.Path
        ``directory``.

    Raises
    ------
    ValueError
        On an unknown layout, a bad shard count, or master weights that miss a tensor,
        have an extra one, a wrong shape or a non-finite value.
    CheckpointError
        If ``directory`` is not empty and not ``overwrite``.
    """
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig, not {type(config).__name__}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    directory = Path(directory)
    stale = _stale_checkpoint_files(directory, overwrite)
    stored = _stored_tensors(config, tensors, layout)
    names = sorted(stored)
    if isinstance(shards, bool) or not isinstance(shards, int) \
            or not 1 <= shards <= len(names):
        raise ValueError(f"shards must be an integer in 1..{len(names)}, not {shards!r}")
    directory.mkdir(parents=True, exist_ok=True)
    for path in stale:
        path.unlink()
    config_dict = config.with_mode(_MODE_OF_LAYOUT[layout]).to_dict()
    (directory / CONFIG_FILE).write_text(json.dumps(config_dict, indent=2) + "\n",
                                         encoding="utf-8")
    if shards == 1:
        write_safetensors(directory / WEIGHTS_FILE, stored)
        return directory
    weight_map = {}
    for shard in range(shards):
        group = names[shard * len(names) // shards:(shard + 1) * len(names) // shards]
        file = _shard_file(shard, shards)
        write_safetensors(directory / file, {name: stored[name] for name in group})
        weight_map.update(dict.fromkeys(group, file))
    total_size = sum(data.nbytes for _, data in stored.values())
    index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n",
                                        encoding="utf-8")
    return directory


def make_tiny(directory, *, config=TINY, seed=0, layout=PACKED, shards=1,
              overwrite=False):
    """Write a checkpoint of random weights (:func:`model.weights.random_master_weights`)
    for ``config`` (default the tiny test model); see :func:`write_checkpoint`.

    Returns
    -------
    pathlib.Path
        ``directory``.

    Raises
    ------
    CheckpointError
        If ``directory`` is not empty and not ``overwrite``.
    """
    return write_checkpoint(directory, config, random_master_weights(config, seed=seed),
                            layout=layout, shards=shards, overwrite=overwrite)


# Inspection ----------------------------------------------------------------------------

def inspect_checkpoint(checkpoint):
    """Summarize a checkpoint: configuration, bytes by kind, zero weights per projection.

    Parameters
    ----------
    checkpoint : Checkpoint or path-like
        A path is opened with :func:`load_checkpoint`.

    Returns
    -------
    dict
        ``config`` (the ``config.json`` dictionary), ``directory``, ``layout``,
        ``files``, ``tensors`` (count), ``bytes`` (all tensor data), ``bytes_by_kind``
        (:data:`TENSOR_KINDS`; ``lm_head`` is 0 when tied) and ``zero_fraction`` (by
        projection: the fraction of its ternary weights, over all layers, that are 0).
        Projections are read one at a time, so memory stays bounded.
    """
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = load_checkpoint(checkpoint)
    bytes_by_kind = dict.fromkeys(TENSOR_KINDS, 0)
    for name in checkpoint.tensor_names():
        bytes_by_kind[checkpoint.tensor_kind(name)] += checkpoint.tensor_info(name).nbytes
    zeros, weights = dict.fromkeys(PROJECTIONS, 0), dict.fromkeys(PROJECTIONS, 0)
    for layer in range(checkpoint.config.layers):
        for name in PROJECTIONS:
            values = checkpoint.projection(layer, name).values
            zeros[name] += int(np.count_nonzero(values == 0))
            weights[name] += values.size
    return {"config": checkpoint.config.to_dict(),
            "directory": str(checkpoint.directory),
            "layout": checkpoint.layout,
            "files": list(checkpoint.files),
            "tensors": len(checkpoint.tensor_names()),
            "bytes": sum(bytes_by_kind.values()),
            "bytes_by_kind": bytes_by_kind,
            "zero_fraction": {name: zeros[name] / weights[name] for name in PROJECTIONS}}


def format_inspect(info):
    """A Markdown report of :func:`inspect_checkpoint`'s dictionary."""
    total = info["bytes"]
    lines = [f"# Checkpoint {info.get('directory', '')}".rstrip(), "",
             f"- layout: {info['layout']}",
             f"- files: {', '.join(info['files'])}",
             f"- tensors: {info['tensors']}, {total:,} bytes", "",
             "## Configuration", "", "| field | value |", "|---|---|"]
    for field, value in info["config"].items():
        plain = isinstance(value, (int, float, str)) and not isinstance(value, bool)
        shown = value if plain else json.dumps(value)
        lines.append(f"| {field} | {shown} |")
    lines += ["", "## Bytes by kind", "", "| kind | bytes | share |", "|---|---:|---:|"]
    tied = info["config"].get("tie_word_embeddings")
    for kind, nbytes in info["bytes_by_kind"].items():
        share = nbytes / total if total else 0.0
        label = "lm_head (tied: the embedding)" if kind == "lm_head" and tied else kind
        lines.append(f"| {label} | {nbytes:,} | {share:.1%} |")
    lines += [f"| total | {total:,} | 100.0% |", "",
              "## Zero weights per projection", "", "| projection | zero fraction |",
              "|---|---:|"]
    lines += [f"| {name} | {fraction:.3f} |"
              for name, fraction in info["zero_fraction"].items()]
    return "\n".join(lines) + "\n"
