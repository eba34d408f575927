"""The project's text corpus: the Python standard library's own source, split by file.

Every machine that runs the project has it: ``Lib/*.py`` of the running interpreter
(the top-level modules of :func:`sysconfig.get_paths` ``["stdlib"]``, no packages and no
tests), human-written code and prose (docstrings, comments). Each file goes to one split
by a hash of its name (deterministic, independent of the other files): about 90 % train,
5 % validation, 5 % test. :class:`Corpus` records each split's files, bytes and a SHA-256
of its content, so a checkpoint can say which corpus it was trained and evaluated on, and
an evaluation on another interpreter's library is refused rather than silently compared.

The documents of a split are joined in file-name order, each followed by the
end-of-text token (:data:`EOT`), and encoded by a byte-level BPE tokenizer trained on the
train split (:func:`train_tokenizer`, the ``tokenizers`` package).
"""

import hashlib
import json
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SPLITS", "EOT", "CorpusError", "Corpus", "load_corpus", "split_of",
           "train_tokenizer", "load_tokenizer", "encode_split", "MIN_TRAIN_BYTES"]

SPLITS = ("train", "validation", "test")
#: End of every document; token id 0 of the tokenizer (also BOS and EOS of the model).
EOT = "<|endoftext|>"
#: A train split smaller than this cannot teach a tokenizer or a model anything.
MIN_TRAIN_BYTES = 64 * 1024
#: Of 20 hash buckets: bucket 0 is test, 1 validation, the rest train.
_BUCKETS = 20


class CorpusError(ValueError):
    """A corpus or tokenizer that cannot be used; the message says why."""


def split_of(name):
    """The split of a file name: ``"train"``, ``"validation"`` or ``"test"``, from the
    first 8 bytes of the SHA-256 of the name (a file keeps its split whatever else is
    in the library)."""
    bucket = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % _BUCKETS
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


@dataclass(frozen=True)
class Corpus:
    """A corpus split by file.

    Parameters
    ----------
    root : pathlib.Path
        Folder of the files.
    files : dict of str to tuple of str
        File names (relative to ``root``) of each split, sorted.
    """

    root: Path
    files: dict

    def text(self, split):
        """The split's documents, each followed by :data:`EOT`."""
        _check_split(split)
        parts = []
        for name in self.files[split]:
            parts.append((self.root / name).read_text(encoding="utf-8", errors="replace"))
            parts.append(EOT)
        return "".join(parts)

    def digest(self, split):
        """SHA-256 (hex) of the split's text (:meth:`text`), UTF-8."""
        return hashlib.sha256(self.text(split).encode("utf-8")).hexdigest()

    def manifest(self):
        """What identifies the corpus: the interpreter, and each split's file count,
        bytes (UTF-8 of :meth:`text`) and SHA-256; JSON-ready."""
        splits = {}
        for split in SPLITS:
            data = self.text(split).encode("utf-8")
            splits[split] = {"files": len(self.files[split]), "bytes": len(data),
                             "sha256": hashlib.sha256(data).hexdigest()}
        return {"source": "Python standard library, Lib/*.py",
                "python": sys.version.split()[0], "splits": splits}


def _check_split(split):
    if split not in SPLITS:
        raise CorpusError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")


def load_corpus(root=None):
    """The corpus of ``root`` (default: the running interpreter's standard library),
    its ``*.py`` files at the top level.

    Raises
    ------
    CorpusError
        If the folder does not exist, or its train split is smaller than
        :data:`MIN_TRAIN_BYTES` or a split is empty.
    """
    root = Path(sysconfig.get_paths()["stdlib"] if root is None else root)
    if not root.is_dir():
        raise CorpusError(f"{root}: no such folder")
    files = {split: [] for split in SPLITS}
    for path in sorted(root.glob("*.py")):
        if path.is_file():
            files[split_of(path.name)].append(path.name)
    corpus = Corpus(root, {split: tuple(names) for split, names in files.items()})
    empty = [split for split in SPLITS if not corpus.files[split]]
    if empty:
        raise CorpusError(f"{root}: corpus too small: no file falls in the {empty[0]} "
                          f"split ({sum(map(len, files.values()))} *.py files)")
    size = sum((root / name).stat().st_size for name in corpus.files["train"])
    if size < MIN_TRAIN_BYTES:
        raise CorpusError(f"{root}: corpus too small: the train split has {size} bytes, "
                          f"at least {MIN_TRAIN_BYTES} are needed")
    return corpus


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise CorpusError("the tokenizer needs the tokenizers package: pip install "
                          "'ternary-accel[checkpoints]'") from None
    return tokenizers


def train_tokenizer(corpus, vocab):
    """A byte-level BPE tokenizer of ``vocab`` tokens trained on the train split, with
    :data:`EOT` as token 0.

    Raises
    ------
    CorpusError
        If the train split cannot fill the vocabulary (too few distinct pairs), or
        ``vocab`` is below the 256 byte tokens plus :data:`EOT`.
    """
    tk = _tokenizers()
    if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 258:
        raise CorpusError(f"vocab must be an integer >= 258 (256 bytes, the end-of-text "
                          f"token and one merge), not {vocab!r}")
    tokenizer = tk.Tokenizer(tk.models.BPE())
    tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=[EOT], show_progress=False,
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
    documents = corpus.text("train").split(EOT)
    tokenizer.train_from_iterator(documents, trainer=trainer)
    if tokenizer.get_vocab_size() < vocab:
        raise CorpusError(f"vocab {vocab} is larger than the train split supports "
                          f"({tokenizer.get_vocab_size()} tokens after every merge)")
    return tokenizer


def load_tokenizer(path):
    """A ``tokenizer.json``.

    Raises
    ------
    CorpusError
        If the file is missing or not a tokenizer.
    """
    tk = _tokenizers()
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: no such file")
    try:
        return tk.Tokenizer.from_file(str(path))
    except Exception as error:      # tokenizers raises plain Exception
        raise CorpusError(f"{path}: not a tokenizer.json ({error})") from None


def encode_split(corpus, split, tokenizer):
    """The split's token ids (uint16 when they fit, else int32), documents separated by
    :data:`EOT`."""
    _check_split(split)
    eot = tokenizer.token_to_id(EOT)
    if eot is None:
        raise CorpusError(f"the tokenizer has no {EOT} token")
    ids = []
    for document in corpus.text(split).split(EOT)[:-1]:
        ids.extend(tokenizer.encode(document).ids)
        ids.append(eot)
    dtype = np.uint16 if tokenizer.get_vocab_size() <= 65536 else np.int32
    return np.asarray(ids, dtype=dtype)


def write_manifest(path, manifest):
    """Write a corpus manifest (:meth:`Corpus.manifest`) as JSON."""
    Path(path).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
