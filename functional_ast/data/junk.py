"""Text with junk: a training corpus in which a share of the bytes is noise, the regime where reference-model
selection (RHO-LOSS, Rho-1) is claimed to pay. The held-out text stays clean.

`with_junk(train, share, seed)` returns the training windows of `train`'s files plus junk files that make up
`share` of the training bytes, in equal parts of three kinds: random bytes (nothing to learn), one line of a
training file repeated (learnt at once, then nothing more) and a training file with its whitespace removed
(minified: text in an unseen form). Junk files are named "junk/<kind>-NNNN"; `is_junk(name)` tells them apart.
"""

from __future__ import annotations

import hashlib

import numpy as np

from functional_ast.core.checks import ConfigError
from functional_ast.data.text import Corpus, Windows, file_subset, windows

KINDS = ("random", "repeated", "minified")
_WHITESPACE = np.frombuffer(b" \t\n\r", dtype=np.uint8)


def is_junk(name: str) -> bool:
    return name.startswith("junk/")


def _file(corpus: Corpus, i: int) -> np.ndarray:
    return np.asarray(corpus.tokens[corpus.bounds[i]:corpus.bounds[i + 1]])


def _junk_bytes(kind: str, size: int, source: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`size` bytes of junk of `kind`, made from a training file's bytes `source`."""
    if kind == "random":
        return rng.integers(0, 256, size, dtype=np.uint8)
    if kind == "repeated":
        lines = [line for line in bytes(source).split(b"\n") if len(line.strip()) >= 8] or [bytes(source[:64])]
        line = lines[int(rng.integers(len(lines)))] + b"\n"
        unit = np.frombuffer(line, dtype=np.uint8)
    else:
        unit = source[~np.isin(source, _WHITESPACE)]
        if len(unit) == 0:
            unit = source
    return np.resize(unit, size)


def with_junk(train: Windows, share: float, seed: int) -> Windows:
    """`train`'s files (clean) plus junk files making up `share` of the training bytes (see the module), as windows
    of the same context over a new in-memory corpus ("<name>+junk<share>"); share 0 returns `train` itself."""
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share < 1:
        raise ConfigError(f"junk must be a share of the training text in [0, 1), got {share!r}")
    if share == 0:
        return train
    if train.ids is not None:
        raise ConfigError("junk is added to whole training files: add it before selecting windows (limit_train)")
    corpus, files = train.corpus, train.files
    sizes = corpus.bounds[files + 1] - corpus.bounds[files]
    clean = int(sizes.sum())
    target = round(share / (1 - share) * clean)
    rng = np.random.default_rng([seed, 7129])
    parts, names, made = [_file(corpus, int(i)) for i in files], [corpus.names[int(i)] for i in files], 0
    while made < target:
        kind = KINDS[(len(names) - len(files)) % len(KINDS)]
        source = _file(corpus, int(files[rng.integers(len(files))]))
        size = min(target - made, int(sizes[rng.integers(len(sizes))]))
        parts.append(_junk_bytes(kind, size, source, rng))
        names.append(f"junk/{kind}-{len(names) - len(files):04d}")
        made += size
    tokens = np.concatenate(parts)
    bounds = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
    digest = hashlib.sha256(f"{corpus.digest}|{','.join(map(str, files.tolist()))}|junk={share}|seed={seed}"
                            .encode()).hexdigest()
    info = dict(corpus.info, junk_share=share, junk_files=len(names) - len(files))
    mixed = Corpus(tokens, bounds, tuple(names), digest, f"{corpus.name}+junk{share:g}", info)
    return windows(mixed, train.context)


def clean_files(train: Windows) -> np.ndarray:
    """The file numbers of `train` that are not junk."""
    return np.asarray([f for f in train.files if not is_junk(train.corpus.names[int(f)])], dtype=np.int64)


def clean_slice(train: Windows, share: float, seed: int) -> Windows:
    """Windows of seeded whole clean (not junk) files of `train` holding about `share` of its clean bytes
    (`text.file_subset`): a small curated set, such as Rho-1's reference model trains on."""
    clean = windows(train.corpus, train.context, clean_files(train))
    size = int((clean.corpus.bounds[clean.files + 1] - clean.corpus.bounds[clean.files]).sum())
    return file_subset(clean, round(share * size), seed=seed)
