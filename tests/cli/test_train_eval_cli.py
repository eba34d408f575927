"""``ternary-accel train`` and ``ternary-accel model eval``: a toy run end to end, the
evaluation table in every format, and their errors (one line, never a traceback)."""

import csv
import io
import json
import sys

import pytest

from cli_runner import invoke, usage_error
from ternary_accel.model.checkpoint import make_tiny
from ternary_accel.model.config import ModelConfig
from ternary_accel.model.corpus import load_corpus, train_tokenizer, write_manifest
from ternary_accel.model.shapes import TransformerShape

#: A toy run: 32 steps of 8 x 64 tokens, about 10 s with the data preparation.
TOY = ["--hidden", "64", "--ffn", "128", "--layers", "2", "--vocab", "512",
       "--context", "64", "--batch", "8", "--threads", "1", "--no-progress"]



def job_error(result, *fragments):
    """Status 1, one line naming every fragment, no traceback."""
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert ": error: " in lines[0], lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def threads():
    """Restore PyTorch's thread count after an in-process ``train --threads 1``."""
    yield
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(_THREADS)


try:
    import torch as _torch
    _THREADS = _torch.get_num_threads()
except ImportError:
    _torch, _THREADS = None, None


def needs_torch():
    pytest.importorskip("torch", reason="the [train] extra (PyTorch) is not installed")


# --- train: errors ------------------------------------------------------------------------

def test_resume_with_a_setting_is_refused(tmp_path):
    line = usage_error(invoke("train", tmp_path / "run", "--resume", "--hidden", "64"),
                       "--resume", "--hidden", "run.json")
    assert "cannot change them" in line
    assert not (tmp_path / "run").exists()


def test_resume_with_a_variant_setting_is_refused(tmp_path):
    usage_error(invoke("train", tmp_path / "run", "--resume", "--kv-heads", "2"),
                "--kv-heads")


def test_a_file_is_not_a_run_folder(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("not a folder\n")
    usage_error(invoke("train", path, "--tokens", "1000"), "is a file, not a folder")


def test_missing_torch_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)     # as if the extra were missing
    line = usage_error(invoke("train", tmp_path / "run", *TOY, "--tokens", "16384"),
                       "pip install 'ternary-accel[train]'", "torch")
    assert "training needs torch" in line
    assert not (tmp_path / "run").exists()


def test_missing_tqdm_names_the_install(tmp_path, monkeypatch):
    needs_torch()
    monkeypatch.setitem(sys.modules, "tqdm", None)
    usage_error(invoke("train", tmp_path / "run", *TOY, "--tokens", "16384"),
                "pip install 'ternary-accel[train]'", "tqdm")


def test_too_small_a_budget_is_one_line(tmp_path, threads):
    needs_torch()
    line = usage_error(invoke("train", tmp_path / "run", *TOY, "--tokens", "100"),
                       "100 tokens", "cannot finish one step", "8 x 64 = 512")
    assert "budget" in line
    assert not (tmp_path / "run").exists()           # refused before any work


@pytest.mark.parametrize("args,fragments", [
    (["--heads", "5"], ["--heads (5) must divide --hidden (64)"]),
    (["--linear", "float", "--activations", "a4.8"], ["--activations", "--linear"]),
    (["--linear", "float", "--topk", "0.5"], ["--topk"]),
])
def test_bad_settings_are_one_line(tmp_path, threads, args, fragments):
    needs_torch()
    usage_error(invoke("train", tmp_path / "run", *TOY, "--tokens", "16384", *args),
                *fragments)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag,value", [("--topk", "1"), ("--topk", "-0.5"),
                                        ("--lr", "0"), ("--lr", "inf"),
                                        ("--tokens", "0"), ("--hidden", "-64")])
def test_bad_values_are_refused_when_parsed(tmp_path, flag, value):
    usage_error(invoke("train", tmp_path / "run", flag, value), flag)


def test_an_existing_run_needs_resume(tmp_path, threads):
    needs_torch()
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.json").write_text("{}")
    usage_error(invoke("train", folder, *TOY, "--tokens", "16384"),
                "a run is already there", "--resume")
    assert sorted(p.name for p in folder.iterdir()) == ["run.json"]


def test_resume_without_a_run(tmp_path, threads):
    needs_torch()
    usage_error(invoke("train", tmp_path / "nothing", "--resume"), "no run to", "run.json")


def test_resume_of_a_broken_run_file(tmp_path, threads):
    needs_torch()
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"hidden": 64, "depth": 2}))
    usage_error(invoke("train", folder, "--resume"), "unknown run setting 'depth'")


def test_float_activations_are_refused(tmp_path, monkeypatch):
    """``--activations float`` (the evaluation's reference) is no training mode: the
    BitLinears would quantize to int8 anyway, and the run would call itself "float".
    Refused when parsed (PyTorch hidden: nothing may start)."""
    monkeypatch.setitem(sys.modules, "torch", None)
    line = usage_error(invoke("train", tmp_path / "run", *TOY, "--tokens", "512",
                              "--activations", "float"), "--activations", "float")
    assert "torch" not in line


# --- train and eval: a toy run ------------------------------------------------------------

#: A whole run of 32 steps: the tests on it are marked slow.
@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    needs_torch()
    folder = tmp_path_factory.mktemp("train") / "toy"
    try:
        result = invoke("train", folder, *TOY, "--tokens", "16384")
    finally:
        _torch.set_num_threads(_THREADS)
    assert result.returncode == 0, result.stderr
    return folder, result


@pytest.mark.slow
def test_train_a_toy(toy_run):
    folder, result = toy_run
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("variant b1.58, 107,200 parameters, 16,384 tokens in ")
    assert "test perplexity" in lines[0] and "1 threads" in lines[0]
    assert lines[1] == f"checkpoints: {folder / 'packed'} {folder / 'master'}"
    assert "Traceback" not in result.stderr
    assert "32 steps of 8 x 64 tokens, 1 threads" in result.stderr
    for layout in ("packed", "master"):
        for name in ("config.json", "model.safetensors", "tokenizer.json", "corpus.json",
                     "training.json"):
            assert (folder / layout / name).is_file(), (layout, name)
    training = json.loads((folder / "packed" / "training.json").read_text())
    assert training["steps"] == 32 and training["variant"] == "b1.58"
    assert training["test"]["layout"] == "packed" and training["test"]["tokens"] == 4095
    assert training == json.loads((folder / "summary.json").read_text())


@pytest.mark.slow
def test_eval_reproduces_the_recorded_test_perplexity(toy_run):
    folder, _ = toy_run
    test = json.loads((folder / "packed" / "training.json").read_text())["test"]
    result = invoke("model", "eval", folder / "packed", "--no-reference",
                    "--format", "json")
    assert result.returncode == 0, result.stderr
    row, = json.loads(result.stdout)
    assert row["tokens"] == test["tokens"]
    assert round(row["perplexity"], 3) == test["perplexity"]
    assert round(row["bits_per_byte"], 4) == test["bits_per_byte"]


@pytest.mark.slow
def test_a_finished_run_cannot_be_trained_again(toy_run, threads):
    folder, _ = toy_run
    usage_error(invoke("train", folder, *TOY, "--tokens", "16384"), "a run is already there")


# --- model eval on a checkpoint with a corpus ---------------------------------------------

#: The toy's shape, with random weights.
CONFIG = ModelConfig(TransformerShape("toy", 64, 128, 2, 4, kv_heads=2, vocab=512),
                     rope_theta=10000.0, max_position_embeddings=64, bos_token_id=0,
                     eos_token_id=0)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Random packed and master checkpoints of the toy's shape with this Python's
    corpus manifest and a 512-token tokenizer: what ``train`` writes, without PyTorch."""
    pytest.importorskip("tokenizers", reason="the tokenizers package is not installed")
    root = tmp_path_factory.mktemp("eval")
    corpus = load_corpus()
    tokenizer = train_tokenizer(corpus, 512)
    for layout in ("packed", "master"):
        folder = make_tiny(root / layout, config=CONFIG, seed=2, layout=layout)
        tokenizer.save(str(folder / "tokenizer.json"))
        write_manifest(folder / "corpus.json", corpus.manifest())
    return root


def eval_(checkpoint, *args):
    """Two windows of 64 tokens (126 predicted)."""
    return invoke("model", "eval", checkpoint, "--tokens", "126", *args)


def test_eval_markdown(checkpoints):
    result = eval_(checkpoints / "packed")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == ("| checkpoint | numerics | tokens | test PPL | bits/byte | "
                        "top-1 agree | top-5 agree | logit cosine | max abs logit error |")
    assert lines[1] == "|---|---|---|---|---|---|---|---|---|"
    assert len(lines) == 3
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[0] == str(checkpoints / "packed") and cells[1:3] == ["a8", "126"]
    assert float(cells[3]) > 1 and float(cells[4]) > 0
    assert cells[5].endswith("%") and cells[6].endswith("%")
    assert 0 < float(cells[7]) <= 1 and float(cells[8]) > 0
    assert "window 2/2" in result.stderr and "Traceback" not in result.stderr


def test_eval_csv_and_json_agree(checkpoints):
    as_csv = eval_(checkpoints / "packed", "--format", "csv")
    as_json = eval_(checkpoints / "packed", "--format", "json")
    assert as_csv.returncode == as_json.returncode == 0, as_csv.stderr + as_json.stderr
    header, row = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert header == ["checkpoint", "numerics", "tokens", "test PPL", "bits/byte",
                      "top-1 agree", "top-5 agree", "logit cosine", "max abs logit error"]
    data, = json.loads(as_json.stdout)
    assert set(data) == {"checkpoint", "numerics", "tokens", "bytes", "nll", "perplexity",
                         "bits_per_byte", "top1", "top5", "cosine", "max_error"}
    assert float(row[8]) == pytest.approx(data["max_error"], abs=1e-4)
    assert data["tokens"] == 126 and data["numerics"] == "a8"
    assert data["perplexity"] > 1 and data["bytes"] > 0
    assert 0 <= data["top1"] <= data["top5"] <= 1 and 0 < data["cosine"] <= 1
    assert float(row[3]) == pytest.approx(data["perplexity"])
    assert float(row[5]) == pytest.approx(data["top1"])
    assert int(row[2]) == 126


def test_eval_without_the_reference_run(checkpoints):
    result = eval_(checkpoints / "packed", "--no-reference", "--format", "json")
    data, = json.loads(result.stdout)
    assert data["top1"] is None and data["top5"] is None and data["cosine"] is None
    result = eval_(checkpoints / "packed", "--no-reference")
    assert result.stdout.strip().splitlines()[2].endswith("| - | - | - |")


def test_eval_float_agrees_with_its_reference(checkpoints):
    result = eval_(checkpoints / "packed", "--activations", "float", "--format", "json")
    data, = json.loads(result.stdout)
    assert data["numerics"] == "float"
    assert data["top1"] == 1.0 and data["top5"] == 1.0
    assert data["cosine"] == pytest.approx(1.0, abs=1e-9)


def test_eval_numerics_are_named(checkpoints):
    result = eval_(checkpoints / "packed", "--activations", "a4.8", "--topk", "0.5",
                   "--kv-bits", "4", "--format", "json")
    assert result.returncode == 0, result.stderr
    data, = json.loads(result.stdout)
    assert data["numerics"] == "a4.8, top-k 0.5, KV 4-bit"
    result = eval_(checkpoints / "packed", "--block-topk", "16:32", "--format", "json")
    assert json.loads(result.stdout)[0]["numerics"] == "a8, block top-k 16:32"


def test_eval_full_precision_on_a_master_checkpoint(checkpoints):
    result = eval_(checkpoints / "master", "--full-precision", "--format", "json")
    assert result.returncode == 0, result.stderr
    data, = json.loads(result.stdout)
    assert data["numerics"] == "full-precision weights"
    assert data["top1"] == 1.0 and data["cosine"] == pytest.approx(1.0, abs=1e-9)
    ternary = json.loads(eval_(checkpoints / "master", "--activations", "float",
                               "--format", "json").stdout)[0]
    assert ternary["perplexity"] != data["perplexity"]


def test_eval_packed_and_master_agree(checkpoints):
    a, b = (json.loads(eval_(checkpoints / layout, "--format", "json").stdout)[0]
            for layout in ("packed", "master"))
    for key in ("tokens", "bytes", "nll", "perplexity", "top1", "top5", "cosine"):
        assert a[key] == b[key], key


def test_eval_validation_split(checkpoints):
    test, validation = (json.loads(eval_(checkpoints / "packed", "--split", split,
                                         "--no-reference", "--format", "json").stdout)[0]
                        for split in ("test", "validation"))
    assert test["tokens"] == validation["tokens"] == 126
    assert test["nll"] != validation["nll"]


def test_eval_full_precision_of_a_packed_checkpoint(checkpoints):
    result = eval_(checkpoints / "packed", "--full-precision")
    assert result.returncode in (1, 2), result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "packed checkpoint has no full-precision weights" in lines[0]


def test_eval_full_precision_needs_float_activations(checkpoints):
    usage_error(eval_(checkpoints / "master", "--full-precision", "--activations", "a4.8"),
                "--full-precision", "--activations must be float")


def test_eval_context_longer_than_the_model(checkpoints):
    usage_error(eval_(checkpoints / "packed", "--context", "65"),
                "--context 65 is longer than the model's max_position_embeddings (64)")


def test_eval_context_of_one_token(checkpoints):
    result = eval_(checkpoints / "packed", "--context", "1")
    assert result.returncode in (1, 2), result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--context must be at least 2" in lines[0], result.stderr


def test_eval_shorter_context(checkpoints):
    result = eval_(checkpoints / "packed", "--context", "16", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["tokens"] == 135      # 9 windows of 15


def test_eval_more_tokens_than_the_split(checkpoints):
    job_error(invoke("model", "eval", checkpoints / "packed", "--tokens", "10000000"),
              "--tokens 10000000 needs", "more than the")


def test_eval_needs_a_corpus_manifest(tmp_path):
    folder = make_tiny(tmp_path / "tiny", seed=1)
    job_error(invoke("model", "eval", folder), "no corpus.json", "ternary-accel train")


def test_eval_on_another_python_s_corpus(checkpoints, tmp_path):
    import shutil
    folder = tmp_path / "other"
    shutil.copytree(checkpoints / "packed", folder)
    manifest = json.loads((folder / "corpus.json").read_text())
    manifest["python"] = "3.9.1"
    manifest["splits"]["test"]["sha256"] = "0" * 64
    (folder / "corpus.json").write_text(json.dumps(manifest))
    job_error(invoke("model", "eval", folder), "Python 3.9.1", "test split")


def test_eval_without_tokenizers(checkpoints, monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    job_error(eval_(checkpoints / "packed"), "pip install 'ternary-accel[checkpoints]'")


def test_eval_of_a_missing_checkpoint(tmp_path):
    job_error(invoke("model", "eval", tmp_path / "nowhere"), "not a checkpoint directory")
