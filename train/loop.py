"""Training runs: the recipe, the data, resumable state, and the export to checkpoints.

A run lives in one folder: ``run.json`` (the :class:`TrainConfig`), ``tokenizer.json``
and ``corpus.json`` (the corpus manifest), ``state.pt`` (model, optimizer and step,
written every ``save_every`` steps and at the end, so a run stopped anywhere resumes
from its last save), ``log.jsonl`` (a line per logged step) and, when done,
``summary.json`` and the exported checkpoints ``packed/`` and ``master/``.

The recipe (``docs/training.md``): AdamW (beta 0.9/0.95) on float32 master weights;
for the ternary models the two-stage schedule of BitNet b1.58 2B4T: a linear warm-up,
a cosine decay from a high peak learning rate over the first half of the budget, then
an abrupt drop to a lower peak with a cosine decay to a tenth of it; weight decay 0.1
(cosine) in the first stage and 0 in the second. The full-precision baseline uses the
usual LLaMA-style recipe: one cosine decay from a lower peak to a tenth, weight decay
0.1 throughout. Decay applies to the matrices (embedding and projections), not to the
norms.
"""

import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ternary_accel.model.checkpoint import write_checkpoint
from ternary_accel.model.config import ModelConfig
from ternary_accel.model.corpus import (encode_split, load_corpus, load_tokenizer,
                                        train_tokenizer, write_manifest)
from ternary_accel.model.decoder import A4_8, A8
from ternary_accel.model.quant import topk_count
from ternary_accel.model.shapes import FFN_GATED, TransformerShape
from ternary_accel.train.qat import FLOAT_LINEAR, LINEARS, TERNARY_LINEAR, BitNetLM

#: The activation modes a model can be trained in (the decoder's "float" has no
#: quantizer to train with: that is --linear float).
TRAINED_ACTIVATIONS = (A8, A4_8)

__all__ = ["TRAINED_ACTIVATIONS", "TrainConfig", "TrainError", "Run", "lr_at", "weight_decay_at"]


class TrainError(ValueError):
    """A run that cannot start or resume; the message says why."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (and so its result, with the corpus).

    Sizes follow :class:`ternary_accel.model.shapes.TransformerShape`; ``tokens`` is the
    budget: ``steps = tokens // (batch * context)``.
    """

    hidden: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 640
    vocab: int = 4096
    context: int = 256
    batch: int = 16
    tokens: int = 4_194_304
    linear: str = TERNARY_LINEAR
    activations: str = A8
    topk: float = None
    lr: float = None
    lr_stage2: float = None
    weight_decay: float = 0.1
    warmup: int = 100
    seed: int = 0
    rope_theta: float = 10000.0

    def __post_init__(self):
        for name in ("hidden", "layers", "heads", "kv_heads", "ffn", "vocab", "context",
                     "batch", "tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TrainError(f"{name} must be a positive integer, not {value!r}")
        if self.linear not in LINEARS:
            raise TrainError(f"linear must be one of {', '.join(LINEARS)}, not "
                             f"{self.linear!r}")
        if self.activations not in TRAINED_ACTIVATIONS:
            raise TrainError(f"activations must be one of {', '.join(TRAINED_ACTIVATIONS)}, "
                             f"not {self.activations!r}")
        if self.topk is not None:
            try:
                topk_count(1, self.topk)
            except ValueError as error:
                raise TrainError(f"topk: {error}") from None
        if self.linear == FLOAT_LINEAR and (self.activations != A8 or self.topk):
            raise TrainError("the full-precision baseline has no activation quantizer: "
                             "--activations and --topk need --linear ternary")
        if self.steps < 1:
            raise TrainError(f"a budget of {self.tokens} tokens cannot finish one step of "
                             f"{self.batch} x {self.context} = "
                             f"{self.batch * self.context} tokens")
        try:
            self.model_config()
        except ValueError as error:
            raise TrainError(str(error)) from None

    @property
    def steps(self):
        return self.tokens // (self.batch * self.context)

    @property
    def ternary(self):
        return self.linear == TERNARY_LINEAR

    @property
    def peak_lr(self):
        """Stage-1 peak (ternary) or the single peak (float)."""
        if self.lr is not None:
            return self.lr
        return 3e-3 if self.ternary else 1e-3

    @property
    def stage2_lr(self):
        if self.lr_stage2 is not None:
            return self.lr_stage2
        return self.peak_lr / 2

    @property
    def variant(self):
        """A short name: ``b1.58``, ``float``, ``a4.8``, ``q-sparse-0.6``, ..."""
        if not self.ternary:
            return "float"
        name = "b1.58" if self.activations == A8 else self.activations
        return name if self.topk is None else f"{name}+q-sparse-{self.topk:g}"

    def model_config(self):
        shape = TransformerShape(f"trained-{self.hidden}x{self.layers}", hidden=self.hidden,
                                 ffn=self.ffn, layers=self.layers, heads=self.heads,
                                 kv_heads=self.kv_heads, vocab=self.vocab,
                                 ffn_kind=FFN_GATED)
        return ModelConfig(shape, rope_theta=self.rope_theta,
                           max_position_embeddings=self.context,
                           bos_token_id=0, eos_token_id=0)

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise TrainError(f"unknown run setting {unknown[0]!r}")
        return cls(**d)


def lr_at(config, step):
    """Learning rate of ``step`` (0-based) of ``config``'s schedule."""
    steps = config.steps
    warmup = min(config.warmup, max(steps // 10, 1))
    if step < warmup:
        return config.peak_lr * (step + 1) / warmup
    if not config.ternary:
        progress = (step - warmup) / max(steps - warmup, 1)
        return config.peak_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
    half = steps // 2
    if step < half:
        progress = (step - warmup) / max(half - warmup, 1)
        # stage 1: cosine from the peak towards the stage-2 peak
        low = config.stage2_lr
        return low + (config.peak_lr - low) * 0.5 * (1 + math.cos(math.pi * progress))
    progress = (step - half) / max(steps - half, 1)
    low = config.stage2_lr / 10
    return low + (config.stage2_lr - low) * 0.5 * (1 + math.cos(math.pi * progress))


def weight_decay_at(config, step):
    """Weight decay of ``step``: cosine from ``weight_decay`` to 0 in stage 1 and 0 in
    stage 2 (ternary); constant (float)."""
    if not config.ternary:
        return config.weight_decay
    half = config.steps // 2
    if step >= half:
        return 0.0
    return config.weight_decay * 0.5 * (1 + math.cos(math.pi * step / max(half, 1)))


class Run:
    """A training run in ``folder``: start it from ``config``, or resume it.

    Parameters
    ----------
    folder : path-like
    config : TrainConfig, optional
        A new run's settings; None resumes the run in ``folder``.
    threads : int, optional
        PyTorch CPU threads (default: PyTorch's choice).
    """

    def __init__(self, folder, config=None, *, threads=None):
        self.folder = Path(folder)
        run_file = self.folder / "run.json"
        if config is None:
            if not run_file.is_file():
                raise TrainError(f"{self.folder}: no run to resume (no run.json)")
            try:
                config = TrainConfig.from_dict(json.loads(run_file.read_text()))
            except (json.JSONDecodeError, TypeError) as error:
                raise TrainError(f"{run_file}: not a run file ({error})") from None
            self.resuming = True
        else:
            if run_file.exists():
                raise TrainError(f"{self.folder}: a run is already there; resume it "
                                 "or choose another folder")
            self.resuming = False
        self.config = config
        if threads is not None:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()

    # -- data ----------------------------------------------------------------------------
    def prepare(self):
        """Load the corpus, train (or reload) the tokenizer, encode the splits."""
        corpus = load_corpus()
        manifest = corpus.manifest()
        tokenizer_file = self.folder / "tokenizer.json"
        corpus_file = self.folder / "corpus.json"
        if self.resuming:
            recorded = json.loads(corpus_file.read_text())
            if recorded["splits"] != manifest["splits"]:
                raise TrainError(f"{self.folder}: the corpus differs from the one the run "
                                 f"started on (Python {recorded['python']})")
            tokenizer = load_tokenizer(tokenizer_file)
        else:
            tokenizer = train_tokenizer(corpus, self.config.vocab)
            self.folder.mkdir(parents=True, exist_ok=True)
            tokenizer.save(str(tokenizer_file))
            write_manifest(corpus_file, manifest)
            (self.folder / "run.json").write_text(
                json.dumps(self.config.to_dict(), indent=2) + "\n")
        self.tokenizer = tokenizer
        self.manifest = manifest
        self.train_ids = torch.from_numpy(
            encode_split(corpus, "train", tokenizer).astype(np.int64))
        self.validation_ids = torch.from_numpy(
            encode_split(corpus, "validation", tokenizer).astype(np.int64))
        if self.train_ids.numel() <= self.config.context + 1:
            raise TrainError(f"corpus too small: {self.train_ids.numel()} train tokens for "
                             f"a context of {self.config.context}")
        return self

    def batch(self, step):
        """The ``step``'s batch: ``batch`` windows of ``context + 1`` tokens at offsets
        drawn from a generator seeded by (seed, step), so a resumed run sees the same
        data."""
        c = self.config
        rng = np.random.default_rng([c.seed, step])
        starts = rng.integers(0, self.train_ids.numel() - c.context - 1, size=c.batch)
        windows = torch.stack([self.train_ids[s:s + c.context + 1] for s in starts])
        return windows[:, :-1], windows[:, 1:]

    # -- the model -----------------------------------------------------------------------
    def build(self):
        c = self.config
        torch.manual_seed(c.seed)
        self.model = BitNetLM(c.model_config(), linear=c.linear,
                              activations=c.activations, topk=c.topk)
        decay = [p for n, p in self.model.named_parameters() if p.ndim == 2]
        rest = [p for n, p in self.model.named_parameters() if p.ndim != 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": c.weight_decay, "decayed": True},
             {"params": rest, "weight_decay": 0.0, "decayed": False}],
            lr=c.peak_lr, betas=(0.9, 0.95), eps=1e-8)
        self.step = 0
        self.elapsed = 0.0
        state_file = self.folder / "state.pt"
        if self.resuming and state_file.is_file():
            try:
                state = torch.load(state_file, weights_only=True)
                self.model.load_state_dict(state["model"])
                self.optimizer.load_state_dict(state["optimizer"])
            except Exception as error:          # torch raises many kinds
                raise TrainError(f"{state_file}: cannot resume from it ({error})") from None
            self.step = int(state["step"])
            self.elapsed = float(state["elapsed"])
        return self

    def parameters(self):
        return sum(p.numel() for p in self.model.parameters())

    def save(self):
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "step": self.step, "elapsed": self.elapsed}
        tmp = self.folder / "state.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.folder / "state.pt")

    @torch.no_grad()
    def validation_loss(self, windows=32):
        """Mean cross-entropy (nats/token) on ``windows`` fixed, evenly spaced windows
        of the validation split."""
        c = self.config
        ids = self.validation_ids
        count = min(windows, (ids.numel() - 1) // c.context)
        self.model.eval()
        total = 0.0
        for i in range(count):
            s = i * ((ids.numel() - c.context - 1) // max(count - 1, 1))
            window = ids[s:s + c.context + 1][None]
            logits = self.model(window[:, :-1])
            total += F.cross_entropy(logits[0], window[0, 1:]).item()
        self.model.train()
        return total / count

    def train(self, *, progress=None, save_every=200, log_every=10):
        """Train to the end of the budget from the current step.

        Parameters
        ----------
        progress : callable, optional
            ``progress(step, steps, loss, tokens_per_second)`` after each step.
        """
        c = self.config
        log = (self.folder / "log.jsonl").open("a")
        tokens_per_step = c.batch * c.context
        self.model.train()
        started = time.perf_counter()
        base_elapsed = self.elapsed
        loss_value = float("nan")
        while self.step < c.steps:
            lr, wd = lr_at(c, self.step), weight_decay_at(c, self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
                if group.get("decayed", group["weight_decay"] > 0):
                    # the shipped models were trained with this 1e-12 floor in stage 2
                    group["weight_decay"] = wd if wd > 0 else 1e-12
            x, y = self.batch(self.step)
            t0 = time.perf_counter()
            logits = self.model(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise TrainError(f"the loss diverged at step {self.step} (lr {lr:g})")
            self.step += 1
            self.elapsed = base_elapsed + time.perf_counter() - started
            rate = tokens_per_step / (time.perf_counter() - t0)
            if progress is not None:
                progress(self.step, c.steps, loss_value, rate)
            if self.step % log_every == 0 or self.step == c.steps:
                log.write(json.dumps({"step": self.step, "tokens": self.step * tokens_per_step,
                                      "loss": round(loss_value, 5), "lr": lr,
                                      "weight_decay": wd,
                                      "seconds": round(self.elapsed, 2)}) + "\n")
                log.flush()
            if self.step % save_every == 0:
                self.save()
        log.close()
        self.save()
        return loss_value

    # -- the result ----------------------------------------------------------------------
    @property
    def layouts(self):
        """The exported layouts: packed and master, or only master for a float model
        (packing would ternarize it)."""
        return ("packed", "master") if self.config.ternary else ("master",)

    def record(self, key, value):
        """Add ``key: value`` to ``summary.json`` and every layout's ``training.json``."""
        paths = [self.folder / "summary.json"] + [self.folder / layout / "training.json"
                                                  for layout in self.layouts]
        for path in paths:
            data = json.loads(path.read_text())
            data[key] = value
            path.write_text(json.dumps(data, indent=2) + "\n")

    def export(self, *, validation_windows=32):
        """Write ``summary.json`` and the checkpoints ``packed/`` and ``master/`` (the
        master weights rounded to bfloat16, which both layouts store; a float model
        only ``master/``), each with
        ``tokenizer.json``, ``corpus.json`` and ``training.json``.

        Returns
        -------
        dict
            The summary.
        """
        c = self.config
        tensors = self.model.hf_tensors()
        # bf16 is what both layouts hold of the masters: the model computes with these.
        rounded = {name: torch.from_numpy(value).to(torch.bfloat16).float().numpy()
                   for name, value in tensors.items()}
        self.model.load_hf_tensors(rounded)
        self.model.set_export(True)
        summary = {"variant": c.variant, "parameters": self.parameters(),
                   "steps": self.step, "tokens": self.step * c.batch * c.context,
                   "seconds": round(self.elapsed, 1), "threads": self.threads,
                   "validation_loss": round(self.validation_loss(validation_windows), 4),
                   "torch": torch.__version__, "run": c.to_dict(),
                   "corpus": self.manifest}
        (self.folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        config = c.model_config()
        for layout in self.layouts:
            out = write_checkpoint(self.folder / layout, config, rounded, layout=layout,
                                   overwrite=True)
            (out / "tokenizer.json").write_bytes((self.folder / "tokenizer.json").read_bytes())
            write_manifest(out / "corpus.json", self.manifest)
            (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

