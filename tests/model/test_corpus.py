"""The text corpus (the running interpreter's standard library, split by file hash) and
its byte-level BPE tokenizer."""

import hashlib
import re
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from ternary_accel.model.corpus import (EOT, MIN_TRAIN_BYTES, SPLITS, Corpus, CorpusError,
                                        encode_split, load_corpus, load_tokenizer,
                                        split_of, train_tokenizer, write_manifest)

pytest.importorskip("tokenizers", reason="the tokenizers package is not installed")

VOCAB = 512


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return train_tokenizer(corpus, VOCAB)


def _names_covering_every_split():
    """Three file names, one in each split (found by trying ``m0.py``, ``m1.py``, ...)."""
    found = {}
    i = 0
    while len(found) < len(SPLITS):
        name = f"m{i}.py"
        found.setdefault(split_of(name), name)
        i += 1
    return found


# --- split_of -----------------------------------------------------------------------------

def test_split_of_is_a_hash_of_the_name_alone():
    for name in ("os.py", "typing.py", "a.py", "zzz_not_a_module.py", ""):
        bucket = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % 20
        want = "test" if bucket == 0 else "validation" if bucket == 1 else "train"
        assert split_of(name) == want
        assert split_of(name) == split_of(name)          # deterministic


def test_split_of_is_90_5_5_over_many_names():
    counts = {split: 0 for split in SPLITS}
    n = 20000
    for i in range(n):
        counts[split_of(f"module_{i}.py")] += 1
    assert set(counts) == set(SPLITS)
    assert counts["train"] / n == pytest.approx(0.90, abs=0.01)
    assert counts["validation"] / n == pytest.approx(0.05, abs=0.01)
    assert counts["test"] / n == pytest.approx(0.05, abs=0.01)


def test_stdlib_split_is_roughly_90_5_5(corpus):
    counts = {split: len(corpus.files[split]) for split in SPLITS}
    total = sum(counts.values())
    assert total > 100                      # Lib/*.py of any CPython 3.11+
    # a few hundred files: binomial spread of a few files around 5 %
    assert 0.84 <= counts["train"] / total <= 0.96, counts
    for split in ("validation", "test"):
        assert 0.01 <= counts[split] / total <= 0.10, counts


# --- load_corpus --------------------------------------------------------------------------

def test_default_root_is_the_running_stdlib(corpus):
    assert corpus.root == Path(sysconfig.get_paths()["stdlib"])


def test_splits_are_disjoint_sorted_and_cover_every_top_level_py(corpus):
    every = {p.name for p in corpus.root.glob("*.py") if p.is_file()}
    seen = set()
    for split in SPLITS:
        names = corpus.files[split]
        assert list(names) == sorted(names)
        assert all(split_of(name) == split for name in names)
        assert not seen & set(names)
        seen |= set(names)
    assert seen == every
    # top level only: no package modules, no tests
    assert all("/" not in name for name in seen)


def test_text_joins_documents_with_eot(corpus):
    text = corpus.text("test")
    documents = text.split(EOT)
    assert documents[-1] == ""              # every document is followed by EOT
    assert len(documents) - 1 == len(corpus.files["test"])
    first = corpus.root / corpus.files["test"][0]
    assert documents[0] == first.read_text(encoding="utf-8", errors="replace")


def test_manifest(corpus):
    manifest = corpus.manifest()
    assert manifest["python"] == sys.version.split()[0]
    assert "Python standard library" in manifest["source"]
    assert set(manifest["splits"]) == set(SPLITS)
    for split in SPLITS:
        entry = manifest["splits"][split]
        assert set(entry) == {"sha256", "bytes", "files"}
        data = corpus.text(split).encode("utf-8")
        assert entry["files"] == len(corpus.files[split])
        assert entry["bytes"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() == corpus.digest(split)
    assert manifest["splits"]["train"]["bytes"] >= MIN_TRAIN_BYTES


def test_manifest_is_written_as_json(corpus, tmp_path):
    import json
    path = tmp_path / "corpus.json"
    write_manifest(path, corpus.manifest())
    assert json.loads(path.read_text()) == corpus.manifest()


def test_a_file_keeps_its_split_in_another_folder(corpus, tmp_path):
    """The split of a file does not depend on the other files of the folder."""
    for split in SPLITS:
        name = corpus.files[split][0]
        (tmp_path / name).write_bytes((corpus.root / name).read_bytes())
    # pad the train split past MIN_TRAIN_BYTES with train-split names
    names = [n for n in corpus.files["train"]]
    size = sum((tmp_path / n).stat().st_size for n in names[:1])
    for name in names[1:]:
        if size >= MIN_TRAIN_BYTES:
            break
        (tmp_path / name).write_bytes((corpus.root / name).read_bytes())
        size += (tmp_path / name).stat().st_size
    small = load_corpus(tmp_path)
    for split in SPLITS:
        assert set(small.files[split]) <= set(corpus.files[split])
        assert corpus.files[split][0] in small.files[split]


def test_missing_folder(tmp_path):
    with pytest.raises(CorpusError, match="no such folder"):
        load_corpus(tmp_path / "nowhere")


def test_a_file_is_not_a_folder(tmp_path):
    path = tmp_path / "a.py"
    path.write_text("x = 1\n")
    with pytest.raises(CorpusError, match="no such folder"):
        load_corpus(path)


def test_too_small_a_corpus_names_the_train_bytes(tmp_path):
    for name in _names_covering_every_split().values():
        (tmp_path / name).write_text("x = 1\n")
    with pytest.raises(CorpusError) as error:
        load_corpus(tmp_path)
    message = str(error.value)
    assert "corpus too small" in message and "train split" in message
    assert f"at least {MIN_TRAIN_BYTES}" in message
    assert "\n" not in message


def test_too_few_files_names_the_empty_split(tmp_path):
    names = _names_covering_every_split()
    (tmp_path / names["train"]).write_text("x = 1\n" * 20000)     # bytes enough
    with pytest.raises(CorpusError) as error:
        load_corpus(tmp_path)
    message = str(error.value)
    assert "corpus too small" in message
    assert "validation split" in message and "1 *.py files" in message


def test_an_empty_folder_is_too_small(tmp_path):
    with pytest.raises(CorpusError, match="corpus too small"):
        load_corpus(tmp_path)


def test_unknown_split(corpus, tokenizer):
    with pytest.raises(CorpusError, match="split must be one of train, validation, test"):
        corpus.text("dev")
    with pytest.raises(CorpusError, match="split must be one of"):
        encode_split(corpus, "training", tokenizer)


# --- the tokenizer ------------------------------------------------------------------------

def test_tokenizer_has_the_vocab_and_eot_is_token_0(tokenizer):
    assert tokenizer.get_vocab_size() == VOCAB
    assert tokenizer.token_to_id(EOT) == 0
    assert tokenizer.id_to_token(0) == EOT


def test_encode_split_round_trips_every_document(corpus, tokenizer):
    for split in ("validation", "test"):
        ids = encode_split(corpus, split, tokenizer)
        assert ids.dtype == np.uint16 and ids.ndim == 1
        assert int(ids.max()) < VOCAB
        assert int(ids[-1]) == 0
        ends = np.flatnonzero(ids == 0)
        assert len(ends) == len(corpus.files[split])
        documents = corpus.text(split).split(EOT)[:-1]
        starts = np.concatenate([[0], ends[:-1] + 1])
        for document, start, end in zip(documents, starts, ends):
            assert tokenizer.decode([int(i) for i in ids[start:end]]) == document


def test_encoding_compresses(corpus, tokenizer):
    """BPE with 255 merges: fewer tokens than bytes."""
    ids = encode_split(corpus, "test", tokenizer)
    assert len(ids) < 0.8 * len(corpus.text("test").encode("utf-8"))


def test_tokenizer_training_is_deterministic(corpus, tokenizer):
    again = train_tokenizer(corpus, VOCAB)
    assert again.get_vocab() == tokenizer.get_vocab()


def test_tokenizer_save_and_load(tokenizer, corpus, tmp_path):
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    loaded = load_tokenizer(path)
    assert np.array_equal(encode_split(corpus, "test", loaded),
                          encode_split(corpus, "test", tokenizer))


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(CorpusError, match="no such file"):
        load_tokenizer(tmp_path / "tokenizer.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CorpusError, match="not a tokenizer.json"):
        load_tokenizer(bad)


def test_a_tokenizer_without_eot_is_refused(corpus):
    import tokenizers
    bare = tokenizers.Tokenizer(tokenizers.models.BPE())
    with pytest.raises(CorpusError, match=re.escape(f"no {EOT} token")):
        encode_split(corpus, "test", bare)


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    """A corpus big enough for load_corpus but of very few distinct words."""
    root = tmp_path_factory.mktemp("tiny_corpus")
    names = _names_covering_every_split()
    for split, name in names.items():
        repeat = 20000 if split == "train" else 10
        (root / name).write_text("x = 1\n" * repeat)
    return load_corpus(root)


def test_vocab_too_large_for_the_corpus(tiny_corpus):
    with pytest.raises(CorpusError) as error:
        train_tokenizer(tiny_corpus, 4096)
    message = str(error.value)
    assert "vocab 4096 is larger than the train split supports" in message


@pytest.mark.parametrize("vocab", [257, 0, -5, True, 512.0, "512", None])
def test_vocab_must_be_an_integer_of_at_least_258(tiny_corpus, vocab):
    with pytest.raises(CorpusError, match="vocab must be an integer >= 258"):
        train_tokenizer(tiny_corpus, vocab)


def test_smallest_vocab_trains(tiny_corpus):
    tokenizer = train_tokenizer(tiny_corpus, 258)
    assert tokenizer.get_vocab_size() == 258 and tokenizer.token_to_id(EOT) == 0
    ids = encode_split(tiny_corpus, "test", tokenizer)
    assert tokenizer.decode([int(i) for i in ids[:-1]]) == "x = 1\n" * 10


def test_corpus_error_is_a_value_error():
    assert issubclass(CorpusError, ValueError)


def test_corpus_can_be_built_by_hand(tmp_path):
    (tmp_path / "a.py").write_text("é = 1\n")
    corpus = Corpus(tmp_path, {"train": ("a.py",), "validation": (), "test": ()})
    assert corpus.text("train") == "é = 1\n" + EOT
    assert corpus.text("test") == ""
    assert corpus.manifest()["splits"]["train"]["bytes"] == len(("é = 1\n" + EOT).encode())
