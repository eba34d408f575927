"""``--numerics hw`` of ``model generate`` / ``model eval``, ``--hw NAME=VALUE``, and
``bench numerics``."""

import json

import pytest

from cli_runner import usage_error

from ternary_accel.model.checkpoint import make_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {layout: make_tiny(root / layout, seed=2, layout=layout)
            for layout in ("packed", "master")}


@pytest.mark.parametrize("layout", ["packed", "master"])
def test_generate_hw_on_both_layouts(cli, tiny, layout):
    out = cli("model", "generate", tiny[layout], "--prompt-ids", "1 2 3", "--numerics", "hw",
              "--max-new-tokens", "3")
    assert out.returncode == 0, out.stderr
    assert "saturations: none" in out.stderr
    assert len(out.stdout.strip().splitlines()[-1].split()) == 4       # "generated:" + 3


def test_generate_hw_with_options(cli, tiny):
    out = cli("model", "generate", tiny["packed"], "--prompt-ids", "1 2 3", "--numerics", "hw",
              "--activations", "a4.8", "--kv-bits", "3", "--hw", "head=trit5",
              "--max-new-tokens", "2")
    assert out.returncode == 0, out.stderr


def test_eval_hw_against_float_numerics(cli):
    out = cli("model", "eval", "--numerics", "hw", "--tokens", "255", "--against",
              "float-numerics", "--format", "json")
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)[0]
    assert row["numerics"] == "a8, hw numerics" and row["saturations"] == 0
    assert row["cosine"] >= 0.9999 and row["max_error"] < 1


@pytest.mark.parametrize("args,fragments", [
    (["--hw", "resid_frac=14"], ["--hw", "--numerics hw"]),
    (["--numerics", "hw", "--hw", "resid_frac=40"], ["--hw", "resid_frac"]),
    (["--numerics", "hw", "--hw", "nonsense=1"], ["--hw", "NAME=VALUE"]),
    (["--numerics", "hw", "--hw", "qk_bits=eight"], ["--hw", "integer"]),
    (["--numerics", "hw", "--hw", "head=int4"], ["--hw", "head"]),
    (["--numerics", "hw", "--activations", "float"], ["--activations"]),
    (["--numerics", "hw", "--act-quant", "torch-fp32"], ["--act-quant"]),
    (["--numerics", "fp8"], ["--numerics"]),
    (["--against", "float-numerics"], ["--against", "--numerics hw"]),
])
def test_bad_numerics_flags(cli, tiny, args, fragments):
    usage_error(cli("model", "generate", tiny["packed"], "--prompt-ids", "1", *args)
                if "--against" not in args else cli("model", "eval", "--tokens", "255", *args),
                *fragments)


@pytest.mark.slow
def test_bench_numerics_small(cli):
    out = cli("bench", "numerics", "--model", "b1.58", "--tokens", "255", "--format", "json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert {r["op"] for r in report["operations"]} >= {"RMSNorm", "softmax", "LM head"}
    rows = report["rows"]
    labels = [r["row"] for r in rows]
    assert labels[:3] == ["float numerics", "wide", "residual format alone"]
    together = next(r for r in rows if r["row"] == "default (all)")
    assert together["cosine"] >= 0.9999 and abs(together["ppl_change"]) < 0.01
    assert {r["model"] for r in report["random"]} == {"tiny (tests)", "reference architecture"}
    assert all(r["saturations"] == 0 and r["cosine"] > 0.98 for r in report["random"])


@pytest.mark.slow
def test_bench_numerics_heads(cli):
    out = cli("bench", "numerics", "--heads", "--tokens", "255", "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["rows"]
    labels = [r["row"] for r in rows]
    assert labels[0] == "float numerics" and len(labels) == 9
    assert any("GROUPED_HEAD" in label and "4.20 bits a weight, 2B4T head 172.2 MB" in label
               for label in labels)
    int8 = next(r for r in rows if "int8 rows" in r["row"])
    int4 = next(r for r in rows if "int4 rows" in r["row"])
    assert int8["cosine"] > int4["cosine"] > 0.99


@pytest.mark.parametrize("args, fragment", [
    (["--heads", "--sweep"], "separate runs"),
    (["--heads", "--model", "a4.8"], "b1.58 model only"),
])
def test_bench_numerics_heads_refusals(cli, args, fragment):
    out = cli("bench", "numerics", *args)
    assert out.returncode == 2 and fragment in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
