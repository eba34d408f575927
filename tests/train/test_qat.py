"""Quantization-aware training (train.qat, train.loop) on a toy model: the loss falls,
the exported checkpoints compute in the golden model what the PyTorch model computes,
a resumed run ends where an uninterrupted one does, and bad settings are refused."""

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the [train] extra (PyTorch) is not installed")

from ternary_accel.model.checkpoint import load_checkpoint  # noqa: E402
from ternary_accel.model.config import TINY  # noqa: E402
from ternary_accel.model.decoder import A4_8, A_FLOAT, Decoder  # noqa: E402
from ternary_accel.model.quant import TORCH_FP32  # noqa: E402
from ternary_accel.train import loop  # noqa: E402
from ternary_accel.train.loop import (Run, TrainConfig, TrainError, lr_at,  # noqa: E402
                                      weight_decay_at)
from ternary_accel.train.qat import BitNetLM  # noqa: E402

#: The toy model: 107 k parameters, 512 tokens a step.
TOY = dict(hidden=64, ffn=128, layers=2, heads=4, kv_heads=2, vocab=512, context=64,
           batch=8)
STEP_TOKENS = 8 * 64
#: Windows of the validation split the round trip compares (64 tokens each).
WINDOWS = 6


def toy(steps, **settings):
    return TrainConfig(**TOY, tokens=steps * STEP_TOKENS, **settings)


@pytest.fixture(scope="module", autouse=True)
def fast_data():
    """One PyTorch thread (a resumed run must use the thread count of the run it is
    compared with), and the tokenizer and the encoded splits computed once for the
    module: every run here trains the same 512-token tokenizer on the same corpus."""
    threads = torch.get_num_threads()
    tokenizers, encoded = {}, {}
    real_train, real_encode = loop.train_tokenizer, loop.encode_split

    def train_tokenizer(corpus, vocab):
        if vocab not in tokenizers:
            tokenizers[vocab] = real_train(corpus, vocab)
        return tokenizers[vocab]

    def encode_split(corpus, split, tokenizer):
        key = (split, tokenizer.to_str())
        if key not in encoded:
            encoded[key] = real_encode(corpus, split, tokenizer)
        return encoded[key].copy()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "train_tokenizer", train_tokenizer)
        mp.setattr(loop, "encode_split", encode_split)
        yield
    torch.set_num_threads(threads)


def train(folder, config, **kwargs):
    run = Run(folder, config, threads=1).prepare().build()
    run.train(**kwargs)
    return run


def logged(folder):
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


def state(run):
    return {name: value.detach().clone() for name, value in run.model.state_dict().items()}


#: 200 steps (the longest run here): the tests on it are marked slow.
@pytest.fixture(scope="module")
def a8_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qat") / "a8"
    run = train(folder, toy(200))
    run.summary = run.export()
    return run


@pytest.fixture(scope="module", params=[
    pytest.param({"activations": A4_8}, id="a4.8"),
    pytest.param({"topk": 0.5}, id="topk-0.5", marks=pytest.mark.slow)])
def variant_run(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("qat") / "variant"
    run = train(folder, toy(30, **request.param))
    run.summary = run.export()
    return run


def windows(run, count=WINDOWS):
    """``count`` windows of ``context`` tokens spread over the validation split."""
    c = run.config.context
    ids = run.validation_ids.numpy()
    step = (len(ids) - c) // (count - 1)
    return [ids[i * step:i * step + c].astype(np.int64) for i in range(count)]


def torch_logits(run, ids):
    run.model.eval()
    with torch.no_grad():
        return run.model(torch.from_numpy(ids)[None])[0].numpy()


def assert_same_logits(run, layout, **numerics):
    decoder = Decoder(load_checkpoint(run.folder / layout), act_quant=TORCH_FP32,
                      **numerics)
    worst = []
    for ids in windows(run):
        theirs = torch_logits(run, ids)
        ours = decoder.forward(ids)
        assert ours.shape == theirs.shape == (len(ids), run.config.vocab)
        worst.append(float(np.abs(ours - theirs).max()))
    assert max(worst) < 1e-4, worst


# --- training -----------------------------------------------------------------------------

@pytest.mark.slow
def test_the_loss_falls(a8_run):
    lines = logged(a8_run.folder)
    assert [line["step"] for line in lines] == list(range(10, 201, 10))
    losses = [line["loss"] for line in lines]
    assert all(math.isfinite(loss) for loss in losses)
    # ln(512) = 6.24 at the start
    assert np.mean(losses[-10:]) < losses[0] - 0.5, losses
    assert a8_run.summary["validation_loss"] < math.log(512) - 0.8
    assert a8_run.step == 200


@pytest.mark.slow
def test_the_run_folder(a8_run):
    folder = a8_run.folder
    for name in ("run.json", "tokenizer.json", "corpus.json", "state.pt", "log.jsonl",
                 "summary.json"):
        assert (folder / name).is_file(), name
    assert TrainConfig.from_dict(json.loads((folder / "run.json").read_text())) \
        == a8_run.config
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["variant"] == "b1.58" and summary["steps"] == 200
    assert summary["tokens"] == 200 * STEP_TOKENS
    assert summary["parameters"] == a8_run.parameters() == sum(
        p.numel() for p in a8_run.model.parameters())
    assert summary["corpus"]["splits"] == json.loads(
        (folder / "corpus.json").read_text())["splits"]
    for layout in a8_run.layouts:
        out = folder / layout
        for name in ("config.json", "tokenizer.json", "corpus.json", "training.json"):
            assert (out / name).is_file(), (layout, name)
        checkpoint = load_checkpoint(out)
        assert checkpoint.layout == layout
        assert checkpoint.config.vocab == 512 and checkpoint.config.hidden == 64
        assert checkpoint.config.max_position_embeddings == 64
        assert json.loads((out / "training.json").read_text()) == summary
    assert a8_run.layouts == ("packed", "master")


@pytest.mark.slow
def test_record_adds_a_key_to_the_summaries(a8_run):
    a8_run.record("extra", {"x": 1})
    for path in [a8_run.folder / "summary.json"] + [a8_run.folder / layout / "training.json"
                                                    for layout in a8_run.layouts]:
        assert json.loads(path.read_text())["extra"] == {"x": 1}


# --- export round trip --------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("layout", ["packed", "master"])
def test_export_round_trip_a8(a8_run, layout):
    assert_same_logits(a8_run, layout)


def test_export_round_trip_variants(variant_run):
    """a4.8 and Q-Sparse: the golden model's INT4 quantizer is float64 (PyTorch's float32)
    and a Top-K mask can meet a near-tie, so a rare window may differ by a flipped
    rounding; most windows agree to float32 rounding."""
    c = variant_run.config
    numerics = dict(activations=c.activations, topk=c.topk, act_quant=TORCH_FP32)
    decoder = Decoder(load_checkpoint(variant_run.folder / "packed"), **numerics)
    master = Decoder(load_checkpoint(variant_run.folder / "master"), **numerics)
    worst = []
    for i, ids in enumerate(windows(variant_run, 12)):
        ours = decoder.forward(ids)
        if i < 2:
            assert np.array_equal(ours, master.forward(ids))
        worst.append(float(np.abs(ours - torch_logits(variant_run, ids)).max()))
    agree = sum(w < 1e-4 for w in worst)
    assert agree >= 8, worst


def test_topk_keep_breaks_ties_like_the_golden_model():
    """Of equal magnitudes the golden model keeps the lower channels
    (model.quant.topk_mask); the exported model (``stable=True``, which BitLinear uses
    after ``set_export``) must keep the same ones, or its Top-K masks differ from the
    checkpoint's wherever |x| ties (bf16 embeddings and norm weights make ties common:
    the first BitLinear's input is ``w * e / rms``). Training uses the fast unstable
    ``torch.topk``: float32 master weights hardly ever tie."""
    from ternary_accel.model.quant import topk_mask
    from ternary_accel.train.qat import topk_keep
    rng = np.random.default_rng(0)
    x = rng.choice([0.5, 1.0, -1.0, 2.0, -0.25], size=(8, 64)).astype(np.float32)
    for k in (1, 16, 32, 63):
        kept = topk_keep(torch.from_numpy(x), k, stable=True).numpy() != 0
        assert np.array_equal(kept, topk_mask(x, k)), k
    kept = topk_keep(torch.ones(1, 64), 32, stable=True).numpy()[0] != 0
    assert np.flatnonzero(kept).tolist() == list(range(32))


@pytest.mark.slow
def test_export_rounds_the_masters_to_bf16(a8_run):
    for name, value in a8_run.model.hf_tensors().items():
        bits = value.view(np.uint32)
        assert np.all(bits & 0xFFFF == 0), name
    master = load_checkpoint(a8_run.folder / "master")
    tensors = a8_run.model.hf_tensors()
    assert np.array_equal(master.embedding(), tensors["model.embed_tokens.weight"])


def test_a_float_model_exports_its_master_only(tmp_path):
    run = train(tmp_path / "float", toy(20, linear="float"))
    summary = run.export()
    assert summary["variant"] == "float" and run.layouts == ("master",)
    assert not (tmp_path / "float" / "packed").exists()
    weights = load_checkpoint(tmp_path / "float" / "master").full_precision()
    decoder = Decoder(weights, activations=A_FLOAT)
    for ids in windows(run, 3):
        assert np.abs(decoder.forward(ids) - torch_logits(run, ids)).max() < 1e-4


# --- resume -------------------------------------------------------------------------------

class Stop(Exception):
    pass


def stop_at(step):
    def progress(done, steps, loss, rate):
        if done == step:
            raise Stop
    return progress


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    steps = 40
    whole = train(tmp_path / "whole", toy(steps))
    first = Run(tmp_path / "halves", toy(steps), threads=1).prepare().build()
    half = steps // 2 + 1          # (the step a progress call stops at is not logged)
    with pytest.raises(Stop):
        first.train(progress=stop_at(half))
    first.save()                                    # what the CLI does on Ctrl-C
    assert first.step == half
    resumed = Run(tmp_path / "halves", threads=1)
    assert resumed.resuming and resumed.config == toy(steps)
    resumed.prepare().build()
    assert resumed.step == half
    resumed.train()
    assert resumed.step == whole.step == steps
    a, b = state(whole), state(resumed)
    assert a.keys() == b.keys()
    differ = [name for name in a if not torch.equal(a[name], b[name])]
    assert not differ, differ
    # the optimizer's moments too, and the same losses logged
    sa, sb = whole.optimizer.state_dict(), resumed.optimizer.state_dict()
    for key in sa["state"]:
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(sa["state"][key][name], sb["state"][key][name])
    assert [line["loss"] for line in logged(tmp_path / "whole")] == \
        [line["loss"] for line in logged(tmp_path / "halves")]


def test_a_run_stopped_without_saving_resumes_from_its_last_save(tmp_path):
    steps = 30
    whole = train(tmp_path / "whole", toy(steps))
    first = Run(tmp_path / "stopped", toy(steps), threads=1).prepare().build()
    with pytest.raises(Stop):
        first.train(progress=stop_at(25), save_every=10)    # killed at 25: saved 20
    resumed = Run(tmp_path / "stopped", threads=1).prepare().build()
    assert resumed.step == 20
    resumed.train(save_every=10)
    a, b = state(whole), state(resumed)
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_resume_checks_the_corpus(tmp_path):
    run = Run(tmp_path / "run", toy(2), threads=1).prepare()
    manifest = json.loads((tmp_path / "run" / "corpus.json").read_text())
    manifest["python"] = "3.9.0"
    manifest["splits"]["train"]["sha256"] = "0" * 64
    (tmp_path / "run" / "corpus.json").write_text(json.dumps(manifest))
    with pytest.raises(TrainError, match=r"corpus differs .*\(Python 3\.9\.0\)"):
        Run(tmp_path / "run", threads=1).prepare()
    assert run.config == toy(2)


def test_run_folder_errors(tmp_path):
    with pytest.raises(TrainError, match="no run to resume"):
        Run(tmp_path / "nothing")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.json").write_text("{}")
    with pytest.raises(TrainError, match="a run is already there"):
        Run(folder, toy(2))
    (folder / "run.json").write_text("{not json")
    with pytest.raises(TrainError, match="not a run file"):
        Run(folder)
    (folder / "run.json").write_text(json.dumps({"hidden": 64, "depth": 3}))
    with pytest.raises(TrainError, match="unknown run setting 'depth'"):
        Run(folder)


def test_a_broken_state_file_is_a_train_error(tmp_path):
    Run(tmp_path / "run", toy(2), threads=1).prepare()
    (tmp_path / "run" / "state.pt").write_bytes(b"not a torch file")
    with pytest.raises(TrainError, match="cannot resume from it"):
        Run(tmp_path / "run", threads=1).prepare().build()


# --- the settings -------------------------------------------------------------------------

def test_steps_and_variants():
    assert toy(7).steps == 7 and TrainConfig(**TOY, tokens=7 * STEP_TOKENS + 511).steps == 7
    assert toy(1).variant == "b1.58"
    assert toy(1, activations=A4_8).variant == "a4.8"
    assert toy(1, topk=0.6).variant == "b1.58+q-sparse-0.6"
    assert toy(1, activations=A4_8, topk=0.5).variant == "a4.8+q-sparse-0.5"
    assert toy(1, linear="float").variant == "float"
    assert TrainConfig.from_dict(toy(3, topk=0.5).to_dict()) == toy(3, topk=0.5)


@pytest.mark.parametrize("settings,message", [
    (dict(tokens=STEP_TOKENS - 1), "a budget of 511 tokens cannot finish one step of "
                                   "8 x 64 = 512 tokens"),
    (dict(tokens=0), "tokens must be a positive integer"),
    (dict(linear="float", activations=A4_8), "the full-precision baseline has no "
                                             "activation quantizer"),
    (dict(linear="float", topk=0.5), "the full-precision baseline has no activation"),
    (dict(linear="binary"), "linear must be one of ternary, float"),
    (dict(activations="a2"), "activations must be one of"),
    (dict(hidden=0), "hidden must be a positive integer"),
    (dict(layers=-1), "layers must be a positive integer"),
    (dict(batch=True), "batch must be a positive integer"),
    (dict(context=64.0), "context must be a positive integer"),
    (dict(vocab="512"), "vocab must be a positive integer"),
    (dict(heads=5), r"heads \(5\) must divide hidden \(64\)"),
    (dict(kv_heads=3), r"kv_heads \(3\) must divide heads \(4\)"),
])
def test_bad_settings_are_train_errors(settings, message):
    config = {**TOY, "tokens": 4 * STEP_TOKENS, **settings}
    with pytest.raises(TrainError, match=message):
        TrainConfig(**config)


@pytest.mark.parametrize("topk", [1.0, 1.5, -0.1, True])
def test_a_bad_topk_is_a_train_error(topk):
    """Like every other setting (a run.json edited by hand reaches the CLI's resume,
    which reports TrainError in one line)."""
    with pytest.raises(TrainError, match="ratio"):
        toy(4, topk=topk)


def test_float_activations_are_not_a_training_mode():
    """``activations="float"`` is the evaluation's reference, not something a BitLinear
    trains with: BitNetLM has no such mode (it would quantize to int8 and call the
    result the "float" variant, the name of the full-precision baseline)."""
    with pytest.raises(TrainError):
        toy(4, activations=A_FLOAT)


def test_schedule():
    config = toy(100, warmup=10)
    lrs = [lr_at(config, step) for step in range(100)]
    assert lrs[0] == pytest.approx(config.peak_lr / 10)
    assert lrs[9] == pytest.approx(config.peak_lr)
    assert max(lrs) == pytest.approx(config.peak_lr)
    # stage 1 decays towards the stage-2 peak, then stage 2 decays to a tenth of it
    assert lrs[49] > config.stage2_lr and lrs[50] == pytest.approx(config.stage2_lr)
    assert lrs[99] == pytest.approx(config.stage2_lr / 10, rel=0.01)
    assert all(a >= b for a, b in zip(lrs[9:50], lrs[10:50]))
    assert all(a >= b for a, b in zip(lrs[50:], lrs[51:]))
    assert weight_decay_at(config, 0) == pytest.approx(0.1)
    assert weight_decay_at(config, 50) == 0.0 == weight_decay_at(config, 99)
    baseline = toy(100, warmup=10, linear="float")
    assert baseline.peak_lr == 1e-3 and weight_decay_at(baseline, 99) == 0.1
    assert lr_at(baseline, 99) == pytest.approx(1e-4, rel=0.01)


def test_bitnet_lm_needs_a_tied_embedding_and_a_known_linear():
    from ternary_accel.model.config import ModelConfig
    untied = ModelConfig(TINY.shape, tie_word_embeddings=False)
    with pytest.raises(ValueError, match="ties its embedding"):
        BitNetLM(untied)
    with pytest.raises(ValueError, match="linear must be one of"):
        BitNetLM(TINY, linear="int8")


def test_bitnet_lm_loads_its_own_tensors():
    torch.manual_seed(0)
    model = BitNetLM(TINY)
    tensors = model.hf_tensors()
    other = BitNetLM(TINY)
    other.load_hf_tensors(tensors)
    ids = torch.tensor([[1, 5, 9, 200]])
    with torch.no_grad():
        assert torch.equal(model(ids), other(ids))
    bad = dict(tensors, **{"model.norm.weight": np.ones(3, dtype=np.float32)})
    with pytest.raises(ValueError, match=r"model.norm.weight has shape \[3\]"):
        other.load_hf_tensors(bad)
