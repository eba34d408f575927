"""Trained-model activations beside the synthetic ones: ``ternary-accel schemes`` and
``ternary-accel bench sparse`` with ``--activations-from`` / ``--trained``
(:mod:`model.activations`)."""

import json
from dataclasses import replace

import pytest

from cli_runner import invoke, usage_error
from ternary_accel.model.checkpoint import make_tiny
from ternary_accel.model.config import TINY, ModelConfig


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny random checkpoint with what ``ternary-accel train`` writes beside it (a
    tokenizer of the corpus, the corpus manifest, training.json): no torch needed."""
    pytest.importorskip("tokenizers")
    from ternary_accel.model.corpus import load_corpus, train_tokenizer, write_manifest
    folder = tmp_path_factory.mktemp("trained") / "packed"
    config = ModelConfig(replace(TINY.shape, vocab=260), rope_theta=TINY.rope_theta,
                         rms_norm_eps=TINY.rms_norm_eps, max_position_embeddings=32,
                         tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)
    make_tiny(folder, config=config, seed=4)
    corpus = load_corpus()
    train_tokenizer(corpus, 260).save(str(folder / "tokenizer.json"))
    write_manifest(folder / "corpus.json", corpus.manifest())
    (folder / "training.json").write_text(json.dumps({
        "variant": "b1.58", "corpus": {"source": "Python standard library, Lib/*.py"},
        "run": {"activations": "a8", "topk": None}}))
    return folder



# --- schemes ----------------------------------------------------------------------------

def test_schemes_default_has_no_trained_rows():
    result = invoke("schemes", "--model", "b1.58-2b4t")
    assert result.returncode == 0, result.stderr
    assert "trained" not in result.stdout and "| activations |" not in result.stdout
    assert "| b1.58-2b4t | a4.8 | 1,539 |" in result.stdout


def test_schemes_trained_rows_beside_the_synthetic(trained):
    result = invoke("schemes", "--model", "b1.58-2b4t", "--activations-from", trained)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "| model | scheme | activations | BitLinear adds/token (M) |" in out
    assert "| b1.58-2b4t | a4.8 | synthetic (the paper's 7B sparsities) | 1,539 |" in out
    for name in ("b1.58", "a4.8", "q-sparse"):
        assert (f"| b1.58-2b4t | {name} trained | trained (stdlib b1.58 run {name}, mean "
                f"of 2 layers) |") in out
    assert "block-q-sparse trained" not in out           # a static mask: no trained row
    lines = [line for line in out.splitlines() if line.startswith("| b1.58-2b4t")]
    assert [line.split(" | ")[1] for line in lines] == [
        "b1.58", "b1.58 trained", "a4.8", "a4.8 trained", "q-sparse", "q-sparse trained",
        "block-q-sparse"]
    assert "densities of trained (stdlib b1.58 run a4.8" in out
    assert result.stderr.count("recorded trained") == 3


def test_schemes_trained_json_and_csv(trained):
    result = invoke("schemes", "--model", "b1.58-2b4t", "--scheme", "q-sparse",
                    "--sparsity", "0.5", "--activations-from", trained,
                    "--trained-windows", "1", "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [r["scheme"] for r in data["rows"]] == ["q-sparse", "q-sparse trained"]
    assert data["rows"][0]["activations"] == "synthetic (Top-K ratio exactly)"
    measured = data["schemes"][1]["density"]
    # Top-K 0.5 on every input: at most half of each kept (more zeros after int8)
    assert all(0 < d <= 0.5 for d in measured.values())
    csv = invoke("schemes", "--model", "b1.58-2b4t", "--scheme", "b1.58",
                 "--activations-from", trained, "--trained-windows", "1", "--format", "csv")
    assert csv.returncode == 0, csv.stderr
    header, synthetic, measured = csv.stdout.splitlines()
    assert header.startswith("model,scheme,activations,bitlinear_adds")
    assert synthetic.startswith("b1.58-2b4t,b1.58,synthetic (dense),")
    assert measured.startswith('b1.58-2b4t,b1.58 trained,"trained (stdlib b1.58 run b1.58')


def test_schemes_trained_errors(trained, monkeypatch, tmp_path):
    usage_error(invoke("schemes", "--trained-windows", "3"),
                "--trained-windows applies only with --trained or --activations-from")
    usage_error(invoke("schemes", "--trained", "--activations-from", trained),
                "not allowed with")
    usage_error(invoke("schemes", "--activations-from", tmp_path), "not a checkpoint folder")
    import ternary_accel.model.reference as reference

    def missing(name="b1.58", layout="packed"):
        raise FileNotFoundError(f"{name}: the reference checkpoint is missing")
    monkeypatch.setattr(reference, "reference_checkpoint", missing)
    result = invoke("schemes", "--model", "b1.58-2b4t", "--trained")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].endswith(
        "b1.58: the reference checkpoint is missing")
    bare = tmp_path / "bare"
    make_tiny(bare)
    result = invoke("schemes", "--model", "b1.58-2b4t", "--activations-from", bare)
    assert result.returncode == 1 and "no corpus.json" in result.stderr
    assert "Traceback" not in result.stderr


# --- bench sparse -----------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--only", "trained"], "--only trained needs --trained or --activations-from"),
    (["--trained-windows", "3"],
     "--trained-windows applies only with --trained or --activations-from"),
    (["--trained-windows", "0"], "must be a positive integer"),
    (["--activations-from", "/nonexistent"], "not a checkpoint folder"),
    (["--trained", "--activations-from", "{ck}"], "not allowed with"),
])
def test_bench_sparse_trained_flag_errors(trained, args, message, tmp_path):
    result = invoke("bench", "sparse", *[a.format(ck=trained) for a in args], cwd=tmp_path)
    usage_error(result, message)
    assert not any(tmp_path.iterdir())          # refused before anything was built


@pytest.mark.verilator
def test_bench_sparse_trained_rows_are_bit_exact(trained, tmp_path):
    """A trained model's own down_proj on its recorded inputs, both orders, through the
    RTL: bit-exact against the golden model, in the modelled cycles."""
    result = invoke("bench", "sparse", "--activations-from", trained, "--only", "trained",
                    "--lanes", "8", "--rows", "4", "--tokens", "3", "--trained-windows", "1",
                    "--build-dir", tmp_path / "build", "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["activations"], r["order"]) for r in rows] == [
        (f"trained (stdlib b1.58, layer {layer})", order)
        for layer in range(TINY.layers) for order in ("tiles", "beats")]
    for r in rows:
        assert r["scenario"] == "trained a8" and r["down_proj"] == "64 x 128"
        assert r["tokens"] == 3 and r["bit_exact"] and r["cycles"] == r["predicted"]
        assert r["zero_inputs"] > 0.3           # relu^2 zeros of the gate
    # the statistics table goes to stderr with --format json
    statistics = json.loads(result.stderr[result.stderr.index("["):
                                          result.stderr.index("]") + 1])
    assert [s["activations"] for s in statistics] == [
        f"trained (stdlib b1.58, layer {layer})" for layer in range(TINY.layers)]
    assert all(s["tokens"] == 32 and s["down_zeros"] >= s["down_exact_zeros"] > 0
               for s in statistics)
