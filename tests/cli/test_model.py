"""``ternary-accel model``: make-tiny, inspect, generate (golden and --rtl), and its errors."""


import numpy as np
import pytest

from cli_runner import invoke


def run(*args):
    return invoke("model", *args)


def generated(result):
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("generated: ")
    return [int(t) for t in last.split()[1:]]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    for layout, shards in (("packed", 1), ("master", 2)):
        result = run("make-tiny", str(root / layout), "--layout", layout,
                     "--shards", str(shards), "--seed", "4")
        assert result.returncode == 0, result.stderr
    return root


def test_inspect(tiny):
    result = run("inspect", str(tiny / "packed"))
    assert result.returncode == 0, result.stderr
    assert "tensors: 38" in result.stdout and "| down |" in result.stdout


def test_packed_and_master_layouts_generate_the_same(tiny, tmp_path):
    outs = []
    for layout in ("packed", "master"):
        out = tmp_path / f"{layout}.npz"
        ids = generated(run("generate", str(tiny / layout), "--prompt-ids", "1 5 9 200",
                            "--max-new-tokens", "3", "--logits-out", str(out)))
        outs.append((ids, np.load(out)))
    (a, fa), (b, fb) = outs
    assert a == b == list(fa["generated_ids"])
    assert list(fa["prompt_ids"]) == [1, 5, 9, 200]
    assert fa["logits"].shape == (4 + 3, 256) and fa["logits"].dtype == np.float32
    assert np.array_equal(fa["logits"], fb["logits"])


def test_prompt_text_with_a_tokenizer(tiny, tmp_path):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    import shutil
    directory = tmp_path / "with_tokenizer"
    shutil.copytree(tiny / "packed", directory)
    vocab = {"[UNK]": 0, **{f"w{i}": i for i in range(1, 256)}}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    tokenizer.save(str(directory / "tokenizer.json"))
    by_text = run("generate", str(directory), "--prompt", "w1 w5 w9", "--max-new-tokens", "2",
                  "--no-token-healing")
    by_ids = run("generate", str(directory), "--prompt-ids", "1 5 9", "--max-new-tokens", "2")
    assert generated(by_text) == generated(by_ids)
    assert "text: " in by_text.stdout
    # token healing: the prompt's last token is taken off, and the first generated token
    # is one whose text starts with it (w9, w90 .. w99)
    healed = run("generate", str(directory), "--prompt", "w1 w5 w9", "--max-new-tokens", "2")
    assert "prompt: 1 5\n" in healed.stdout
    assert generated(healed)[0] in [9] + list(range(90, 100))


@pytest.mark.verilator
@pytest.mark.parametrize("args, message", [
    (["generate", "{ck}"], "one of the arguments --prompt-ids --prompt is required"),
    (["generate", "{ck}", "--prompt-ids", "1 x"], "token ids must be integers"),
    (["generate", "{ck}", "--prompt-ids", "1", "--max-new-tokens", "0"], "positive"),
    (["generate", "{ck}", "--prompt-ids", "1 999"], "outside the vocabulary"),
    (["generate", "{ck}", "--prompt-ids", "1", "--act-quant", "bf16"], "invalid choice"),
    (["generate", "{ck}", "--prompt-ids", "1", "--rtl", "--lanes", "48"],
     "does not tile onto the engine"),
    (["make-tiny", "{ck}", "--shards", "0"], "positive"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_flags_exit_2(tiny, args, message):
    result = run(*[a.format(ck=tiny / "packed") for a in args])
    assert result.returncode == 2
    assert message in result.stderr


def test_bad_checkpoint_is_one_line_and_exit_1(tiny, tmp_path):
    result = run("generate", str(tmp_path / "missing"), "--prompt-ids", "1")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "error:" in result.stderr
    result = run("generate", str(tiny / "packed"), "--prompt", "hello")
    assert result.returncode == 1 and "tokenizer.json" in result.stderr
    result = run("make-tiny", str(tiny / "packed"))      # not empty: refused
    assert result.returncode == 2 and "add --overwrite" in result.stderr


@pytest.mark.verilator
@pytest.mark.xdist_group("engine-acc")   # the build of tests/sim/test_session.py's ACC
def test_generate_with_rtl_equals_golden(tiny, tmp_path):
    golden_out, rtl_out = tmp_path / "golden.npz", tmp_path / "rtl.npz"
    args = ["generate", str(tiny / "packed"), "--prompt-ids", "7 3 99", "--max-new-tokens",
            "3"]
    golden = generated(run(*args, "--logits-out", str(golden_out)))
    result = run(*args, "--logits-out", str(rtl_out), "--rtl", "--lanes", "16", "--rows", "8")
    assert generated(result) == golden
    assert "rtl: 56 BitLinears on the engine" in result.stdout
    assert np.array_equal(np.load(golden_out)["logits"], np.load(rtl_out)["logits"])


@pytest.mark.verilator
@pytest.mark.xdist_group("token-core")
def test_generate_on_the_token_core_equals_golden(tiny, tmp_path):
    """``--rtl --numerics hw``: every operation of every token on the token core; the
    tokens and logits of the golden hardware-numerics run."""
    golden_out, rtl_out = tmp_path / "golden.npz", tmp_path / "rtl.npz"
    args = ["generate", str(tiny / "packed"), "--prompt-ids", "7 3", "--max-new-tokens",
            "2", "--numerics", "hw"]
    golden = generated(run(*args, "--logits-out", str(golden_out)))
    result = run(*args, "--logits-out", str(rtl_out), "--rtl", "--lanes", "8", "--rows", "8",
                 "--head-rows", "4")
    assert generated(result) == golden
    assert "rtl: 4 tokens on the token core, every operation in RTL" in result.stdout
    assert "identical to the golden hardware-numerics run" in result.stdout
    assert np.array_equal(np.load(golden_out)["logits"], np.load(rtl_out)["logits"])


def test_token_core_refusals(tiny):
    base = ["generate", str(tiny / "packed"), "--prompt-ids", "7", "--numerics", "hw"]
    result = run(*base, "--rtl", "--activations", "a4.8")
    assert result.returncode == 2 and "--rtl --numerics hw: the token program runs a8" \
        in result.stderr and result.stderr.count("\n") == 1
    result = run("generate", str(tiny / "packed"), "--prompt-ids", "7", "--rtl",
                 "--head-rows", "2")
    assert result.returncode == 2 and "--head-rows sizes the token core's LM head: it " \
        "applies only with --rtl and the hardware numerics" in result.stderr


@pytest.mark.verilator
@pytest.mark.xdist_group("engine-acc")
def test_bench_block_on_a_checkpoint_layer(tiny):
    result = invoke("bench", "block", "--checkpoint", tiny / "packed", "--layer", "1",
                    "--lanes", "16", "--rows", "8", "--prompt-tokens", "2",
                    "--decode-steps", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all steps bit-exact" in result.stdout
    assert result.stdout.count("| yes |") == 3


def run_in_process(capsys, *args):
    """``ternary-accel model`` in this process: (exit code, out, err)."""
    result = invoke("model", *args)
    return result.returncode, result.stdout, result.stderr


@pytest.mark.verilator
def test_generate_activation_modes(tiny, tmp_path, capsys):
    logits = {}
    for label, flags in [("default", []), ("a8", ["--activations", "a8"]),
                         ("a4.8", ["--activations", "a4.8", "--topk", "0.5",
                                   "--kv-bits", "3"]),
                         ("block", ["--block-topk", "16:32", "--kv-bits", "4"])]:
        out = tmp_path / f"{label}.npz"
        code, stdout, err = run_in_process(capsys, "generate", tiny / "packed", "--prompt-ids",
                                           "1 5 9", "--max-new-tokens", "2",
                                           "--logits-out", out, *flags)
        assert code == 0, err
        assert stdout.strip().splitlines()[-1].startswith("generated: ")
        logits[label] = np.load(out)["logits"]
    assert np.array_equal(logits["default"], logits["a8"])
    assert not np.array_equal(logits["default"], logits["a4.8"])
    assert not np.array_equal(logits["default"], logits["block"])


@pytest.mark.parametrize("flags, message", [
    (["--activations", "a4"], "invalid choice"),
    (["--topk", "1"], "sparsity ratio in [0, 1)"),
    (["--topk", "-0.2"], "sparsity ratio in [0, 1)"),
    (["--topk", "half"], "not a number"),
    (["--block-topk", "16"], "must be N:M"),
    (["--block-topk", "16:32:2"], "must be N:M"),
    (["--block-topk", "a:b"], "must be N:M"),
    (["--block-topk", "0:32"], "0 < N <= M"),
    (["--block-topk", "33:32"], "0 < N <= M"),
    (["--block-topk", "16:48"], "must divide the hidden width"),
    (["--topk", "0.5", "--block-topk", "16:32"], "not allowed with argument"),
    (["--kv-bits", "8"], "invalid choice"),
    (["--kv-bits", "x"], "invalid int value"),
])
def test_bad_activation_flags_exit_2(tiny, capsys, flags, message):
    code, _, err = run_in_process(capsys, "generate", tiny / "packed", "--prompt-ids", "1",
                                  *flags)
    assert code == 2 and message in err


def test_rtl_help_states_the_simulation_speed(capsys):
    code, out, _ = run_in_process(capsys, "generate", "--help")
    assert code == 0 and "100,000" in out and "7,000" not in out
