"""Byte corpora: memmap cache, file boundaries, split by file, windows by index, bad inputs, the stdlib corpus."""

from __future__ import annotations

import os
import tarfile
import tracemalloc

import numpy as np
import pytest
import torch

from functional_ast.data import text
from functional_ast.data.images import DataError


def _corpus_dir(root, files=6, lines=40):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (root / f"mod{i}.py").write_text("".join(f"def f{i}_{j}(x):\n    return x + {j}\n" for j in range(lines)))
    return root


def test_a_directory_is_stored_once_as_a_memmap_with_file_boundaries(tmp_path):
    src = _corpus_dir(tmp_path / "src")
    (src / "pkg").mkdir()
    (src / "pkg" / "deep.py").write_text("x = 1\n" * 30)
    (src / ".hidden.py").write_text("hidden = True\n")
    corpus = text.load_corpus(src, root=tmp_path / "root")
    assert isinstance(corpus.tokens, np.memmap) and corpus.tokens.dtype == np.uint8
    assert ".hidden.py" not in corpus.names and "pkg/deep.py" in corpus.names
    for i, name in enumerate(corpus.names):
        assert bytes(corpus.tokens[corpus.bounds[i]:corpus.bounds[i + 1]]) == (src / name).read_bytes()
    again = text.load_corpus(src, root=tmp_path / "root")  # the cache: same digest, no second folder
    assert again.digest == corpus.digest and len(list((tmp_path / "root" / "cache").iterdir())) == 1
    (src / "mod0.py").write_text("changed\n" * 40)
    assert text.load_corpus(src, root=tmp_path / "root").digest != corpus.digest


def test_a_file_and_a_tar_gz_of_the_same_tree_load(tmp_path):
    src = _corpus_dir(tmp_path / "src")
    archive = tmp_path / "src.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="src")
    from_tar = text.load_corpus(archive, "**/*.py", root=tmp_path / "root")
    from_dir = text.load_corpus(src, "**/*.py", root=tmp_path / "root")
    assert len(from_tar) == len(from_dir) and len(from_tar.names) == 6
    single = text.load_corpus(src / "mod1.py", root=tmp_path / "root")
    assert len(single) == (src / "mod1.py").stat().st_size


def test_windows_are_gathered_by_index_across_the_split_s_files(tmp_path):
    corpus = text.load_corpus(_corpus_dir(tmp_path / "src"), root=tmp_path / "root")
    train, test = text.split(corpus, context=16, test_fraction=0.34, seed=1)
    assert set(train.files.tolist()).isdisjoint(test.files.tolist())
    assert sorted(train.files.tolist() + test.files.tolist()) == list(range(6))
    stream = b"".join(bytes(corpus.tokens[corpus.bounds[f]:corpus.bounds[f + 1]]) for f in train.files)
    assert len(train) == (len(stream) - 1) // 16
    got = train.gather(torch.tensor([0, 3, len(train) - 1]))
    assert got.dtype == torch.int64 and got.shape == (3, 17)
    for row, w in zip(got, (0, 3, len(train) - 1)):
        assert bytes(row.tolist()) == stream[16 * w:16 * w + 17]
    # a seeded split: the same seed the same files, another seed (in general) others
    assert text.split(corpus, 16, 0.34, seed=1)[1].files.tolist() == test.files.tolist()


def test_gathering_windows_never_copies_the_corpus(tmp_path):
    big = tmp_path / "big"
    big.mkdir()
    line = b"def function(argument):\n    return argument * 2  # a comment\n"
    for i in range(4):
        (big / f"part{i}.py").write_bytes(line * (2_000_000 // len(line)))  # 8 MB in all
    text.load_corpus(big, root=tmp_path / "root")  # the cache is built once (streamed in chunks)
    tracemalloc.start()
    corpus = text.load_corpus(big, root=tmp_path / "root")
    train, _ = text.split(corpus, context=128, test_fraction=0.25, seed=0)
    for b in range(20):
        train.gather(torch.randint(0, len(train), (64,), generator=torch.Generator().manual_seed(b)))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(corpus) == 4 * (2_000_000 // len(line)) * len(line)
    assert peak < 1_000_000, f"peak {peak} bytes while reading windows of a {len(corpus)}-byte corpus"


def test_bad_inputs_are_one_line_data_errors(tmp_path):
    root = tmp_path / "root"
    with pytest.raises(DataError, match="does not exist"):
        text.load_corpus(tmp_path / "missing", root=root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no text"):
        text.load_corpus(tmp_path / "empty", root=root)
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(DataError, match="is not text"):
        text.load_corpus(binary, root=root)
    mixed = _corpus_dir(tmp_path / "mixed", files=2)
    (mixed / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" * 10)
    assert text.load_corpus(mixed, root=root).names == ("mod0.py", "mod1.py")  # binary files skipped
    short = tmp_path / "short"
    short.mkdir()
    (short / "a.txt").write_text("tiny")
    (short / "b.txt").write_text("text")
    with pytest.raises(DataError, match="shorter than one window"):
        text.split(text.load_corpus(short, root=root), context=64)
    if os.geteuid() != 0:  # root reads anything
        locked = _corpus_dir(tmp_path / "locked", files=2)
        (locked / "mod0.py").chmod(0)
        with pytest.raises(DataError, match="cannot read .*mod0.py"):
            text.load_corpus(locked, root=root)
    for error in (DataError("x"),):
        assert "\n" not in str(error)


def test_the_standard_library_s_source_excludes_its_tests():
    names = text.stdlib_files()
    assert len(names) > 100 and all(n.endswith(".py") for n in names)
    assert not any(part in ("test", "tests", "idle_test", "site-packages") for n in names for part in n.split("/"))
    assert "os.py" in names
