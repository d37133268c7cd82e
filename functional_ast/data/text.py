"""Byte corpora: text files stored once as a uint8 memmap, split by file, windows gathered by index.

`load_corpus(path)` reads a text file, a directory of them (`glob`, hidden paths skipped) or a .tar.gz/.tgz/.tar of
one, and stores the bytes of every file, concatenated, as `root/cache/text-<key>/bytes.u8` (np.memmap) beside
`meta.json` (file names, their boundaries, the content digest); `glob` is matched against each file's relative
path ('*' also crosses folders, a leading '**/' also matches at the top). `split(corpus, context, ...)` holds out a
seeded share of the files; `Windows` are the windows of `context + 1` bytes of some files, read from the memmap by index
(a corpus larger than RAM trains unchanged). `TextData` is the `data.source.DataSource` of a train/test pair.
Every user-facing failure is a `DataError` naming the problem and the fix.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import os
import shutil
import sys
import sysconfig
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tensordict import TensorDict

from functional_ast.data.errors import DataError
from functional_ast.io import default_data_root, portable_path

DEFAULT_GLOB = "**/*"
STDLIB_EXCLUDED = ("test", "tests", "idle_test", "site-packages", "__pycache__")  # folder names, at any depth
_CACHE_VERSION = 1
_CHUNK = 1 << 22  # bytes read at a time
_MAX_INVALID_UTF8 = 0.01  # a larger share of bytes that are not UTF-8 marks a binary file


@dataclass(frozen=True)
class Corpus:
    """Files' bytes, concatenated: `tokens` a read-only uint8 memmap, file i is tokens[bounds[i]:bounds[i+1]]."""

    tokens: np.ndarray
    bounds: np.ndarray  # int64 [F + 1]
    names: tuple[str, ...]
    digest: str  # sha256 of the files' names and bytes
    name: str
    info: dict = field(default_factory=dict)  # e.g. the Python version of the standard library's source

    def __len__(self) -> int:
        return int(self.bounds[-1])


# --------------------------------------------------------------------------- reading sources


def _short(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def _is_binary(head: bytes) -> bool:
    """NUL bytes, or more than 1% of the bytes not decodable as UTF-8 (read from the file's first chunk)."""
    if b"\x00" in head:
        return True
    invalid = len(head) - len(head.decode("utf-8", errors="ignore").encode("utf-8"))
    return invalid > _MAX_INVALID_UTF8 * max(1, len(head))


def _hidden(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") and p not in (".", "..") for p in parts)


def _matches(name: str, glob: str) -> bool:
    """`glob` against a relative path: fnmatch ('*' also crosses folders), a leading '**/' also matching at the top."""
    return fnmatch.fnmatch(name, glob) or (glob.startswith("**/") and fnmatch.fnmatch(name, glob[3:]))


def _files(path: Path, glob: str, exclude: tuple[str, ...]) -> list[tuple[str, Path]]:
    """(relative name, path) of the text candidates under a directory, sorted by name; hidden and excluded
    folders are not walked into."""
    found = []
    for folder, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in exclude]
        for name in names:
            file = Path(folder) / name
            rel = file.relative_to(path).as_posix()
            if not name.startswith(".") and _matches(rel, glob) and file.is_file():
                found.append((rel, file))
    return sorted(found)


def _read(path: Path) -> Iterator[bytes]:
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                yield chunk
    except OSError as error:
        raise DataError(f"cannot read {path} ({_short(error)}); check its permissions or remove it") from None


def _members(path: Path, glob: str, exclude: tuple[str, ...]) -> Iterator[tuple[str, Iterator[bytes]]]:
    try:
        archive = tarfile.open(path)
    except (OSError, tarfile.TarError) as error:
        raise DataError(f"{path} is not a readable tar archive ({_short(error)}); re-create it") from None
    with archive:
        members = sorted((m for m in archive.getmembers() if m.isfile()), key=lambda m: m.name)
        for member in members:
            parts = tuple(member.name.split("/"))
            if _hidden(parts) or any(p in exclude for p in parts[:-1]):
                continue
            if not _matches(member.name, glob):
                continue
            reader = archive.extractfile(member)
            yield member.name, iter(lambda: reader.read(_CHUNK), b"")


def _sources(path: Path, glob: str, exclude: tuple[str, ...]) -> tuple[Iterator[tuple[str, Iterator[bytes]]], bool]:
    """The named byte streams of `path` and whether it is a single file (whose binary content is an error)."""
    if path.is_dir():
        return ((name, _read(file)) for name, file in _files(path, glob, exclude)), False
    if path.name.endswith((".tar.gz", ".tgz", ".tar")):
        return _members(path, glob, exclude), False
    return iter([(path.name, _read(path))]), True


def _fingerprint(path: Path, glob: str, exclude: tuple[str, ...]) -> str:
    """The cache's key: the source's path, selection and every file's size and mtime (no content read)."""
    if path.is_dir():
        stats = [(name, f.stat().st_size, f.stat().st_mtime_ns) for name, f in _files(path, glob, exclude)]
    else:
        stat = path.stat()
        stats = [(path.name, stat.st_size, stat.st_mtime_ns)]
    info = dict(version=_CACHE_VERSION, path=str(path.resolve()), glob=glob, exclude=list(exclude), files=stats)
    return hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:20]


# --------------------------------------------------------------------------- the corpus


def load_corpus(path, glob: str = DEFAULT_GLOB, *, root=None, exclude: tuple[str, ...] = (),
                name: str | None = None, info: dict | None = None) -> Corpus:
    """The corpus of a text file, a directory of text files matching `glob` (hidden paths and folders named in
    `exclude` skipped, binary files skipped) or a tar archive of one, cached under root/cache/text-<key>/ (root:
    `io.default_data_root()` unless given).
    Raises DataError for a missing path, an unreadable file, a binary single file and an empty corpus."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"corpus path {path} does not exist; pass a text file, a folder of them or a .tar.gz")
    root = Path(root) if root is not None else default_data_root()
    folder = root / "cache" / f"text-{_fingerprint(path, glob, exclude)}"
    if not (folder / "meta.json").exists():
        _build(path, glob, exclude, folder)
    meta = json.loads((folder / "meta.json").read_text())
    bounds = np.asarray(meta["bounds"], dtype=np.int64)
    if bounds[-1] == 0:
        raise DataError(f"corpus {path} holds no text ({meta['skipped']} binary files skipped); point it at "
                        f"text files{' or change the glob ' + repr(glob) if path.is_dir() else ''}")
    tokens = np.memmap(folder / "bytes.u8", dtype=np.uint8, mode="r", shape=(int(bounds[-1]),))
    return Corpus(tokens, bounds, tuple(meta["names"]), meta["digest"], name or str(path), dict(info or {}))


def _build(path: Path, glob: str, exclude: tuple[str, ...], folder: Path) -> None:
    """Stream the source's files into a temporary sibling folder, then rename it into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    digest, names, bounds, skipped = hashlib.sha256(), [], [0], 0
    streams, single = _sources(path, glob, exclude)
    try:
        with open(tmp / "bytes.u8", "wb") as out:
            for file_name, chunks in streams:
                start, size, binary = out.tell(), 0, False
                for chunk in chunks:
                    if not size and _is_binary(chunk):
                        if single:
                            raise DataError(f"{path} is not text (NUL bytes or invalid UTF-8); pass a text file")
                        binary = True
                        break
                    size += len(chunk)
                    out.write(chunk)
                if binary:
                    skipped += 1
                    out.seek(start)
                    out.truncate()
                elif size:
                    names.append(file_name)
                    bounds.append(bounds[-1] + size)
                    digest.update(f"{file_name}\0{size}\0".encode())
        digest.update(_content_digest(tmp / "bytes.u8"))
        meta = dict(version=_CACHE_VERSION, source=str(path), names=names, bounds=bounds, skipped=skipped,
                    digest=digest.hexdigest())
        (tmp / "meta.json").write_text(json.dumps(meta))
        try:
            tmp.rename(folder)
        except OSError:  # another writer won the race: its cache is as good
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _content_digest(path: Path) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.digest()


def stdlib_files(stdlib: str | Path | None = None) -> list[str]:
    """Relative names of the standard library's .py files that `stdlib_corpus` reads (tests excluded)."""
    stdlib = Path(stdlib or sysconfig.get_paths()["stdlib"])
    return [name for name, _ in _files(stdlib, "**/*.py", STDLIB_EXCLUDED)]


def stdlib_corpus_name() -> str:
    """The name `stdlib_corpus` gives its corpus: python-X.Y.Z-stdlib."""
    return f"python-{'.'.join(map(str, sys.version_info[:3]))}-stdlib"


def stdlib_corpus(root=None) -> Corpus:
    """The running Python's standard library source (.py files; test/, tests/, idlelib/idle_test, site-packages
    and caches excluded) as a corpus; its info records the Python version (the corpus differs between them)."""
    version = ".".join(map(str, sys.version_info[:3]))
    return load_corpus(sysconfig.get_paths()["stdlib"], "**/*.py", root=root, exclude=STDLIB_EXCLUDED,
                       name=stdlib_corpus_name(), info=dict(python_version=version))


# --------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Windows:
    """The windows of `context + 1` bytes over files `files` of a corpus, read as one stream (file after file):
    window w starts at byte w * context of that stream, so consecutive windows share one byte and every byte
    after the first is a target once. `ids` (optional) picks some of them: sample i is window ids[i]."""

    corpus: Corpus
    files: np.ndarray  # int64 file numbers, ascending
    context: int
    ids: np.ndarray | None = None

    @property
    def stream(self) -> np.ndarray:
        """Offsets of the files in the stream, int64 [len(files) + 1]."""
        lengths = self.corpus.bounds[self.files + 1] - self.corpus.bounds[self.files]
        return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    @property
    def num_windows(self) -> int:
        return max(0, (int(self.stream[-1]) - 1) // self.context)

    def __len__(self) -> int:
        return self.num_windows if self.ids is None else len(self.ids)

    def gather(self, index: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The windows of samples `index` as int64 [n, context + 1]: only their bytes are read from the memmap."""
        index = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index, dtype=np.int64)
        if self.ids is not None:
            index = self.ids[index]
        stream = self.stream
        at = index[:, None] * self.context + np.arange(self.context + 1)  # positions in the stream
        part = np.searchsorted(stream, at, side="right") - 1
        offsets = self.corpus.bounds[self.files[part]] + (at - stream[part])
        return torch.from_numpy(self.corpus.tokens[offsets].astype(np.int64))

    def select(self, index: torch.Tensor) -> "Windows":
        """These windows' samples `index` (in that order)."""
        index = np.asarray(index.cpu(), dtype=np.int64)
        ids = index if self.ids is None else self.ids[index]
        return Windows(self.corpus, self.files, self.context, ids)


def windows(corpus: Corpus, context: int, files=None) -> Windows:
    """The windows of `context + 1` bytes of `files` (default: all); DataError when not one window fits."""
    if not isinstance(context, int) or context < 1:
        raise DataError(f"context must be a positive number of bytes, got {context!r}")
    files = np.arange(len(corpus.names), dtype=np.int64) if files is None else np.asarray(files, dtype=np.int64)
    out = Windows(corpus, files, context)
    if out.num_windows < 1:
        size = int(out.stream[-1])
        raise DataError(f"corpus {corpus.name} has {size} bytes{' in these files' if files is not None else ''}, "
                        f"shorter than one window of {context + 1}; use more text or a smaller context")
    return out


def file_subset(source: Windows, max_bytes: int | None, seed: int) -> Windows:
    """The windows of a seeded choice of whole files of `source` holding at most `max_bytes` (at least one file);
    `source` itself when `max_bytes` is None or its files already fit."""
    corpus, files = source.corpus, source.files
    sizes = corpus.bounds[files + 1] - corpus.bounds[files]
    if not max_bytes or sizes.sum() <= max_bytes:
        return source
    order = np.random.default_rng(seed).permutation(len(files))
    taken = order[np.cumsum(sizes[order]) <= max_bytes]
    if len(taken) == 0:  # the first file alone is larger: take it
        taken = order[:1]
    return windows(corpus, source.context, np.sort(files[taken]))


def split(corpus: Corpus, context: int, test_fraction: float = 0.1, seed: int = 0) -> tuple[Windows, Windows]:
    """(train, test) windows: a seeded `test_fraction` of the files (at least one, and one left to train on)
    is held out whole, so near-duplicate windows of one file never fall on both sides."""
    n = len(corpus.names)
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test fraction must be in (0, 1), got {test_fraction}")
    if n < 2:
        raise DataError(f"corpus {corpus.name} has {n} file; the held-out text is split by file, so give it "
                        "at least two files")
    order = np.random.default_rng(seed).permutation(n)
    held = min(n - 1, max(1, math.ceil(test_fraction * n)))
    return windows(corpus, context, np.sort(order[held:])), windows(corpus, context, np.sort(order[:held]))


@dataclass
class TextData:
    """A `data.source.DataSource` over train and test windows: batches hold "tokens" int64 [B, context + 1]."""

    train: Windows
    test: Windows
    device: torch.device

    @classmethod
    def of(cls, train: Windows, test: Windows, device=None) -> "TextData":
        if not isinstance(test, Windows) or test.context != train.context:
            raise DataError("the test data of a text corpus must be Windows of the same context (`text.split`)")
        return cls(train, test, torch.device(device) if device is not None else torch.device("cpu"))

    @property
    def num_samples(self) -> int:
        return len(self.train)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.train.context + 1,)

    @property
    def num_classes(self) -> int | None:
        return None

    def batch(self, index, generator=None, transform=None) -> TensorDict:
        tokens = self.train.gather(index).to(self.device, non_blocking=True)
        if generator is not None and transform is not None:
            tokens = transform(tokens, generator)
        return TensorDict({"tokens": tokens, "index": index.to(self.device)}, batch_size=[len(index)],
                          device=self.device)

    def test_batches(self, batch_size: int) -> Iterator[TensorDict]:
        for start in range(0, len(self.test), batch_size):
            index = torch.arange(start, min(start + batch_size, len(self.test)))
            yield TensorDict({"tokens": self.test.gather(index).to(self.device), "index": index.to(self.device)},
                             batch_size=[len(index)], device=self.device)

    def subset(self, train_index, test_index) -> "TextData":
        return TextData(self.train.select(train_index), self.train.select(test_index), self.device)

    def describe(self) -> dict:
        corpus = self.train.corpus
        return dict(name=corpus.name, digest=corpus.digest, train_samples=len(self.train),
                    test_samples=len(self.test), train_files=len(self.train.files), test_files=len(self.test.files),
                    corpus_bytes=len(corpus), context=self.train.context, **corpus.info)

    def fingerprint(self) -> str:
        """The corpus's digest (its first 12 hex digits, as MLflow keeps them)."""
        return self.train.corpus.digest[:12]

    def test_fingerprint(self) -> str:
        """The held-out files of the corpus: its digest, their numbers and the context."""
        test = self.test
        key = f"{test.corpus.digest}|{','.join(map(str, test.files.tolist()))}|{test.context}"
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    def facts(self) -> dict:
        """The corpus's name (no machine path), digest, size, context and files, and its info (the standard
        library's Python version)."""
        facts = {k: v for k, v in self.describe().items() if k not in ("train_samples", "test_samples")}
        name, facts["corpus_digest"] = str(facts.pop("name")), facts.pop("digest")
        facts["corpus"] = portable_path(name) if "/" in name or "\\" in name else name
        return facts

    def about(self) -> str:
        return f"{len(self.train)} training windows of {self.train.corpus.name}"
