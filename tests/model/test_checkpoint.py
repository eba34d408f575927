"""Checkpoints on disk: the Hugging Face 2-bit layout, bf16, loading, validation and
inspection."""

import json

import numpy as np
import pytest

from ternary_accel.model.checkpoint import (INDEX_FILE, WEIGHTS_FILE, CheckpointError, bf16_to_float32,
                              float32_to_bf16, format_inspect, inspect_checkpoint,
                              load_checkpoint, make_tiny, write_checkpoint,
                              write_safetensors)
from ternary_accel.model.config import TINY
from ternary_accel.model.encoding import pack_hf_2bit, unpack_hf_2bit
from ternary_accel.model.weights import (NORMS, PROJECTIONS, MasterWeights, model_tensor_names,
                           random_master_weights, tensor_name)

UP = tensor_name(0, "up")
FINAL_NORM = "model.norm.weight"


# The Hugging Face 2-bit layout ----------------------------------------------------------

@pytest.mark.parametrize("shape", [(4, 1), (8, 3), (128, 64), (64, 128)])
def test_hf_2bit_round_trip(shape):
    weights = np.random.default_rng(shape[0]).integers(-1, 2, size=shape)
    packed = pack_hf_2bit(weights)
    assert packed.dtype == np.uint8 and packed.shape == (shape[0] // 4, shape[1])
    assert np.array_equal(unpack_hf_2bit(packed, shape[0]), weights)


def test_hf_2bit_layout_by_hand():
    # out = 8, so the four rows sharing a byte are 2 apart: byte row 0 holds weight
    # rows 0, 2, 4, 6 (bits 0-1, 2-3, 4-5, 6-7) and byte row 1 holds rows 1, 3, 5, 7.
    weights = np.array([[1, 0, -1], [0, 1, 1], [-1, 0, 0], [1, -1, 1],
                        [0, 0, 1], [0, 1, -1], [1, -1, 0], [-1, 0, 1]])
    packed = pack_hf_2bit(weights)
    # Column 0: rows 0, 2, 4, 6 hold codes 2, 0, 1, 2; rows 1, 3, 5, 7 hold 1, 2, 1, 0.
    assert packed[0, 0] == 2 | 0 << 2 | 1 << 4 | 2 << 6
    assert packed[1, 0] == 1 | 2 << 2 | 1 << 4 | 0 << 6
    unpacked = unpack_hf_2bit(packed)
    for i in range(4):
        for j in range(2):
            codes = (packed[j] >> 2 * i) & 3
            assert np.array_equal(unpacked[i * 2 + j], codes.astype(int) - 1)
    assert np.array_equal(unpacked, weights)


def test_hf_2bit_code_3_names_position():
    packed = pack_hf_2bit(np.zeros((8, 3), dtype=np.int8))
    packed[1, 2] |= 3 << 4  # i = 2, j = 1: weight row 2 * 2 + 1 = 5, column 2
    with pytest.raises(ValueError, match=r"^up: packed code 3 at row 5, column 2$"):
        unpack_hf_2bit(packed, name="up")


def test_hf_2bit_shape_errors():
    with pytest.raises(ValueError, match="multiple of 4"):
        pack_hf_2bit(np.zeros((6, 3), dtype=np.int8))
    with pytest.raises(ValueError, match="ternary"):
        pack_hf_2bit([[2], [0], [0], [0]])
    with pytest.raises(ValueError, match="not 12"):
        unpack_hf_2bit(np.zeros((2, 3), dtype=np.uint8), 12)
    with pytest.raises(ValueError, match="2-D"):
        unpack_hf_2bit(np.zeros(3, dtype=np.uint8))


# bfloat16 -------------------------------------------------------------------------------

BF16_PATTERNS = {0x3F80: 1.0, 0xC000: -2.0, 0x0000: 0.0, 0x8000: -0.0}


def test_bf16_words():
    words = np.array(list(BF16_PATTERNS), dtype=np.uint16)
    values = bf16_to_float32(words)
    assert values.dtype == np.float32
    assert values.tolist() == list(BF16_PATTERNS.values())
    assert np.signbit(values).tolist() == [False, True, False, True]
    assert np.array_equal(float32_to_bf16(values), words)
    # float32 -> bf16 rounds to nearest even: 1 + 2**-8 is a tie between 1 and 1 + 2**-7.
    assert float32_to_bf16(np.float32(1 + 2 ** -8)) == 0x3F80


def rewrite(directory, file, edit):
    """Rewrite one safetensors file of a valid checkpoint after ``edit`` changes its
    ``{name: (dtype, storage array)}``."""
    checkpoint = load_checkpoint(directory)
    tensors = {name: (checkpoint.tensor_info(name).dtype, np.array(checkpoint.raw(name)))
               for name in checkpoint.tensor_names()
               if checkpoint.tensor_info(name).file == file}
    edit(tensors)
    write_safetensors(directory / file, tensors)


def test_bf16_read_from_file(tmp_path):
    words = np.resize(np.array(list(BF16_PATTERNS), dtype=np.uint16), TINY.hidden)
    make_tiny(tmp_path)
    rewrite(tmp_path, WEIGHTS_FILE, lambda t: t.update({FINAL_NORM: ("BF16", words)}))
    checkpoint = load_checkpoint(tmp_path)
    assert np.array_equal(checkpoint.raw(FINAL_NORM), words)
    norm = checkpoint.final_norm()
    assert norm.dtype == np.float32
    assert norm[:4].tolist() == [1.0, -2.0, 0.0, -0.0]
    assert np.array_equal(np.signbit(norm), (words & 0x8000) != 0)


def test_float32_tensor_accepted(tmp_path):
    values = np.linspace(0.5, 1.5, TINY.hidden, dtype=np.float32)
    make_tiny(tmp_path)
    rewrite(tmp_path, WEIGHTS_FILE, lambda t: t.update({FINAL_NORM: ("F32", values)}))
    assert np.array_equal(load_checkpoint(tmp_path).final_norm(), values)


# Loading both layouts -------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The tiny model (seed 0) in both layouts, one file and 3 shards."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {(layout, shards): load_checkpoint(make_tiny(root / f"{layout}-{shards}",
                                                        layout=layout, shards=shards))
            for layout in ("packed", "master") for shards in (1, 3)}


def assert_same_layer(a, b):
    assert set(a.projections) == set(b.projections) == set(PROJECTIONS)
    for name in PROJECTIONS:
        assert np.array_equal(a.projections[name].values, b.projections[name].values)
        assert a.projections[name].values.dtype == np.int8
        assert a.projections[name].scale == b.projections[name].scale
    assert set(a.norms) == set(b.norms) == set(NORMS)
    for name in NORMS:
        assert np.array_equal(a.norms[name], b.norms[name])


def test_layouts_agree(checkpoints):
    reference = MasterWeights(TINY, random_master_weights(TINY))
    for (layout, shards), checkpoint in checkpoints.items():
        assert checkpoint.layout == layout
        assert len(checkpoint.files) == shards
        assert checkpoint.tensor_names() == sorted(
            model_tensor_names(TINY, packed=layout == "packed"))
        assert np.array_equal(checkpoint.embedding(), reference.embedding())
        assert np.array_equal(checkpoint.lm_head(), reference.lm_head())
        assert np.array_equal(checkpoint.final_norm(), reference.final_norm())
        for index in range(TINY.layers):
            assert_same_layer(checkpoint.layer(index), reference.layer(index))


def test_packed_layout_on_disk(checkpoints):
    checkpoint = checkpoints["packed", 1]
    info = checkpoint.tensor_info(UP)
    assert (info.file, info.dtype, info.shape) == (WEIGHTS_FILE, "U8",
                                                   (TINY.ffn // 4, TINY.hidden))
    assert info.nbytes == TINY.ffn // 4 * TINY.hidden
    assert checkpoint.tensor_info(tensor_name(0, "up", "weight_scale")).dtype == "BF16"
    projection = checkpoint.projection(0, "up")
    assert np.array_equal(unpack_hf_2bit(checkpoint.raw(UP)), projection.values)
    with pytest.raises(IndexError):
        checkpoint.layer(TINY.layers)


def test_sharded_index(checkpoints):
    checkpoint = checkpoints["packed", 3]
    index = json.loads((checkpoint.directory / INDEX_FILE).read_text())
    assert sorted(index["weight_map"]) == checkpoint.tensor_names()
    assert sorted(set(index["weight_map"].values())) == checkpoint.files == [
        f"model-0000{k}-of-00003.safetensors" for k in (1, 2, 3)]
    assert index["metadata"]["total_size"] == sum(
        checkpoint.tensor_info(name).nbytes for name in checkpoint.tensor_names())


def test_config_mode_follows_layout(checkpoints):
    assert checkpoints["packed", 1].config.quantization_mode == "offline"
    assert checkpoints["master", 1].config.quantization_mode == "online"
    assert checkpoints["master", 1].config.with_mode("offline").to_dict() == TINY.to_dict()


# Writing --------------------------------------------------------------------------------

def test_make_tiny_refuses_non_empty_directory(tmp_path):
    make_tiny(tmp_path, shards=3)
    with pytest.raises(CheckpointError, match="not empty; pass overwrite=True"):
        make_tiny(tmp_path)
    make_tiny(tmp_path, layout="master", overwrite=True)  # the stale shards go
    checkpoint = load_checkpoint(tmp_path)
    assert (checkpoint.layout, checkpoint.files) == ("master", [WEIGHTS_FILE])
    assert not (tmp_path / INDEX_FILE).exists()


def test_write_checkpoint_checks_master_weights(tmp_path):
    tensors = random_master_weights(TINY)
    del tensors[FINAL_NORM]
    with pytest.raises(ValueError, match=f"tensor {FINAL_NORM} is missing"):
        write_checkpoint(tmp_path, TINY, tensors)
    tensors = random_master_weights(TINY)
    tensors[UP] = tensors[UP][:, :-1]
    with pytest.raises(ValueError, match=f"tensor {UP} has shape"):
        write_checkpoint(tmp_path, TINY, tensors)
    with pytest.raises(ValueError, match="layout"):
        write_checkpoint(tmp_path, TINY, random_master_weights(TINY), layout="gguf")


# Bad checkpoints ------------------------------------------------------------------------

def add_tensor(name, dtype, data):
    return lambda tensors: tensors.update({name: (dtype, data)})


@pytest.mark.parametrize("edit, tensor, problem", [
    (lambda t: t.pop(FINAL_NORM), FINAL_NORM, "missing"),
    (add_tensor("model.layers.0.self_attn.q_proj.bias", "BF16",
                np.zeros(TINY.hidden, np.uint16)),
     "model.layers.0.self_attn.q_proj.bias", "unexpected"),
    (add_tensor(FINAL_NORM, "BF16", np.zeros(TINY.hidden - 1, np.uint16)),
     FINAL_NORM, r"shape \[63\], expected \[64\]"),
    (add_tensor(FINAL_NORM, "F64", np.ones(TINY.hidden)),
     FINAL_NORM, "dtype F64, expected BF16 or F32 or F16"),
    (add_tensor(UP, "I8", np.zeros((TINY.ffn // 4, TINY.hidden), np.int8)),
     UP, "dtype I8, expected U8"),
    (add_tensor(UP, "U8", np.zeros((TINY.ffn, TINY.hidden), np.uint8)),
     UP, r"shape \[128, 64\], expected \[32, 64\]"),
], ids=["missing", "extra", "shape", "dtype", "packed-dtype", "packed-shape"])
def test_bad_tensor(tmp_path, edit, tensor, problem):
    make_tiny(tmp_path)
    rewrite(tmp_path, WEIGHTS_FILE, edit)
    with pytest.raises(CheckpointError,
                       match=f"^{WEIGHTS_FILE}: tensor {tensor}: {problem}"):
        load_checkpoint(tmp_path)


def test_bad_tensor_in_shard_names_shard(tmp_path):
    make_tiny(tmp_path, shards=3)
    shard = load_checkpoint(tmp_path).tensor_info(UP).file
    rewrite(tmp_path, shard, add_tensor(UP, "U8", np.zeros((4, 4), np.uint8)))
    with pytest.raises(CheckpointError, match=f"^{shard}: tensor {UP}: shape"):
        load_checkpoint(tmp_path)


def test_shard_tensor_not_in_index(tmp_path):
    make_tiny(tmp_path, shards=3)
    shard = load_checkpoint(tmp_path).tensor_info(UP).file
    rewrite(tmp_path, shard, add_tensor("extra.weight", "U8", np.zeros(1, np.uint8)))
    with pytest.raises(CheckpointError,
                       match=f"^{shard}: tensor extra.weight: not listed .* {INDEX_FILE}"):
        load_checkpoint(tmp_path)


def test_index_names_missing_shard(tmp_path):
    make_tiny(tmp_path, shards=3)
    shard = "model-00002-of-00003.safetensors"
    (tmp_path / shard).unlink()
    with pytest.raises(CheckpointError,
                       match=f"^{INDEX_FILE}: tensor .*: shard {shard} does not exist"):
        load_checkpoint(tmp_path)


def test_missing_weights_file(tmp_path):
    make_tiny(tmp_path)
    (tmp_path / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"^{WEIGHTS_FILE}: not found"):
        load_checkpoint(tmp_path)


def test_truncated_file(tmp_path):
    make_tiny(tmp_path)
    checkpoint = load_checkpoint(tmp_path)
    last = max(checkpoint.tensor_names(), key=lambda n: checkpoint.tensor_info(n).offset)
    path = tmp_path / WEIGHTS_FILE
    path.write_bytes(path.read_bytes()[:-10])
    past_the_end = f"^{WEIGHTS_FILE}: tensor {last}: data_offsets .* past the end"
    with pytest.raises(CheckpointError, match=past_the_end):
        load_checkpoint(tmp_path)
    path.write_bytes(path.read_bytes()[:100])  # the header itself is cut
    with pytest.raises(CheckpointError, match=f"^{WEIGHTS_FILE}: truncated"):
        load_checkpoint(tmp_path)


def test_packed_code_3(tmp_path):
    make_tiny(tmp_path)
    info = load_checkpoint(tmp_path).tensor_info(UP)
    quarter, columns = TINY.ffn // 4, TINY.hidden
    row, column = quarter + 5, 17  # i = 1, j = 5
    with open(tmp_path / WEIGHTS_FILE, "r+b") as stream:
        stream.seek(info.offset + 5 * columns + column)
        byte = stream.read(1)[0]
        stream.seek(-1, 1)
        stream.write(bytes([byte | 3 << 2]))
    checkpoint = load_checkpoint(tmp_path)  # headers only: the data is read on use
    message = f"{WEIGHTS_FILE}: tensor {UP}: packed code 3 at row {row}, column {column}"
    with pytest.raises(CheckpointError) as error:
        checkpoint.layer(0)
    assert str(error.value) == message
    checkpoint.layer(1)  # other layers are unaffected


@pytest.mark.parametrize("field, value, problem", [
    ("model_type", "llama", "model_type 'llama' is not supported"),
    ("hidden_act", "silu", "hidden_act 'silu' is not supported"),
    ("quantization_config", {"quant_method": "bitnet", "quantization_mode": "int4"},
     "quantization_mode 'int4' is not supported"),
    ("num_attention_heads", 5, "num_attention_heads .5. must divide hidden_size .64."),
    ("rms_norm_eps", -1e-5, "rms_norm_eps must be a positive finite number"),
    ("hidden_size", "64", "must be a positive integer"),
    ("hidden_size", -4, "config field hidden_size must be a positive integer, not -4"),
])
def test_bad_config(tmp_path, field, value, problem):
    make_tiny(tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    config[field] = value
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=f"^config.json: .*{problem}"):
        load_checkpoint(tmp_path)


def test_missing_or_broken_config(tmp_path):
    make_tiny(tmp_path)
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match="^config.json: cannot be read as JSON"):
        load_checkpoint(tmp_path)
    path.unlink()
    with pytest.raises(CheckpointError, match="^config.json: not found"):
        load_checkpoint(tmp_path)


def test_errors_are_one_line(tmp_path):
    make_tiny(tmp_path)
    (tmp_path / "config.json").write_text("{\n\n")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path)
    assert "\n" not in str(error.value)


# Inspection -----------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["packed", "master"])
def test_inspect(checkpoints, layout):
    checkpoint = checkpoints[layout, 3]
    info = inspect_checkpoint(checkpoint)
    assert info["layout"] == layout and info["files"] == checkpoint.files
    assert info["config"] == checkpoint.config.to_dict()
    assert info["tensors"] == len(model_tensor_names(TINY, packed=layout == "packed"))
    total = sum(checkpoint.tensor_info(name).nbytes for name in checkpoint.tensor_names())
    assert sum(info["bytes_by_kind"].values()) == info["bytes"] == total
    assert info["bytes_by_kind"]["lm_head"] == 0  # tied
    assert (info["bytes_by_kind"]["scales"] > 0) == (layout == "packed")
    assert set(info["zero_fraction"]) == set(PROJECTIONS)
    assert all(0 < fraction < 1 for fraction in info["zero_fraction"].values())
    report = format_inspect(info)
    assert "| ternary |" in report and "| gate |" in report and "hidden_size | 64" in report


def test_inspect_agrees_between_layouts(checkpoints):
    fractions = [inspect_checkpoint(checkpoints[layout, 1])["zero_fraction"]
                 for layout in ("packed", "master")]
    assert fractions[0] == fractions[1]
    packed = inspect_checkpoint(checkpoints["packed", 1])["bytes_by_kind"]["ternary"]
    weights = TINY.layers * TINY.shape.block_weights()
    assert packed * 4 == weights  # 2 bits per weight
