"""The savings benchmark's text side: its corpus (a seeded subset of whole files), its gpt, its Rho-1 runs.

`load(args)` is the `TextData` the runs train on (the standard library's source unless `--data`), `builder(args)`
builds the gpt, `rho1_runs(...)` trains Rho-1's selective language modelling (`fit_selective`, its reference paid
inside the budget) for each seed at one budget, each run tracked and checkpointed on its own (`tracked_fit`).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from functional_ast.data import junk, text
from functional_ast.edges.tracked import Tracking, tracked_fit
from functional_ast.models import gpt
from functional_ast.train.config import TrainConfig
from functional_ast.train.selective import fit_selective

# --quick: gpt 2x128 (4 heads), context 128, batch 32, on at most 0.5 MB of training text (whole files): probed on
# the project's 2-core CPU machine while it was quiet, some 40,000 tokens/s, so one full epoch is about 12 s
# (under load it was several times slower). The full mode: a 4-block gpt on at most 1 MB (about 45 s an epoch).
QUICK = dict(context=128, depth=2, width=128, heads=4, train_bytes=500_000, test_bytes=50_000, batch_size=32,
             eval_points=8)
FULL = dict(context=128, depth=4, width=128, heads=4, train_bytes=1_000_000, test_bytes=100_000, batch_size=32,
            eval_points=8)
RHO1_KEEP = 0.6
RHO1_REFERENCE = 0.1  # Rho-1's reference: this share of the clean training files (a small curated set) ...
RHO1_REFERENCE_EPOCHS = 4  # ... trained this many epochs over it (0.4 full-data epochs at 0.1)


def defaults(quick: bool) -> dict:
    return dict(QUICK if quick else FULL)


def file_subset(windows: text.Windows, max_bytes: int | None, seed: int) -> text.Windows:
    """The windows of a seeded choice of whole files of `windows` holding at most `max_bytes` (at least one file);
    all of them when `max_bytes` is None or they already fit."""
    corpus, files = windows.corpus, windows.files
    sizes = corpus.bounds[files + 1] - corpus.bounds[files]
    if not max_bytes or sizes.sum() <= max_bytes:
        return windows
    order = np.random.default_rng(seed).permutation(len(files))
    taken = order[np.cumsum(sizes[order]) <= max_bytes]
    if len(taken) == 0:  # the first file alone is larger: take it
        taken = order[:1]
    return text.windows(corpus, windows.context, np.sort(files[taken]))


def load(args) -> text.TextData:
    """The corpus at args.data (default: the Python standard library's source), split by file (10% held out,
    seed 0), each side cut to a seeded subset of whole files of args.train_bytes / args.test_bytes."""
    corpus = text.load_corpus(args.data) if args.data else text.stdlib_corpus()
    train, test = text.split(corpus, args.context, test_fraction=0.1, seed=0)
    train, test = file_subset(train, args.train_bytes, seed=1), file_subset(test, args.test_bytes, seed=2)
    train = junk.with_junk(train, args.junk, seed=3)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return text.TextData.of(train, test, device)


def builder(args):
    """A function building the benchmark's gpt (byte vocabulary, args' context, depth, width and heads)."""
    return functools.partial(gpt, 256, args.context, args.depth, args.width, args.heads)


def describe(data: text.TextData) -> dict:
    """The text the runs train and evaluate on: corpus, digest, bytes and files of each side."""
    def size(w: text.Windows) -> int:
        return int((w.corpus.bounds[w.files + 1] - w.corpus.bounds[w.files]).sum())

    return dict(data.describe(), train_bytes=size(data.train), test_bytes=size(data.test))


def reference_slice(data: text.TextData, share: float, seed: int) -> text.TextData:
    """Rho-1's reference data: the windows of seeded whole clean (not junk) training files holding about `share` of
    the clean training bytes (`file_subset`); its test side is the run's (unused: the reference is not evaluated)."""
    clean = text.windows(data.train.corpus, data.train.context, junk.clean_files(data.train))
    size = int((clean.corpus.bounds[clean.files + 1] - clean.corpus.bounds[clean.files]).sum())
    return text.TextData.of(file_subset(clean, round(share * size), seed=seed + 4421), data.test, data.device)


def rho1_reference_epochs(data: text.TextData, share: float, seeds) -> float:
    """What Rho-1's reference costs in full-data epochs, the largest over `seeds` (each seed's slice differs):
    `RHO1_REFERENCE_EPOCHS` over its slice's share of the training windows."""
    return max(RHO1_REFERENCE_EPOCHS * len(reference_slice(data, share, seed).train) / len(data.train)
               for seed in seeds)


def rho1_runs(build, data, config: TrainConfig, name: str, where: Tracking, seeds, *, resume: bool,
              eval_every, keep: float = RHO1_KEEP, paid: bool = True, reference_share: float | None = None) -> list:
    """Rho-1 (`fit_selective` at `keep`) once per seed, each its own tracked run `name`-seed<N>: its reference trains
    `RHO1_REFERENCE_EPOCHS` epochs on a `reference_share` slice of the clean training files (`reference_slice`;
    None: one epoch on all training text, as before), paid inside `config`'s budget or, not `paid`, given free (the
    entry is then named "rho1-free"). With `resume`, finished runs are read back and started ones continue from
    their newest checkpoint."""
    results = []
    for seed in seeds:
        options = dict(keep=keep, charge_reference=paid)
        if reference_share:
            options.update(reference_data=reference_slice(data, reference_share, seed),
                           reference_epochs=RHO1_REFERENCE_EPOCHS)
        fitter = functools.partial(fit_selective, **options)
        run_name = f"{name}-seed{seed}"
        started = resume and any((where.checkpoint_root / run_name).glob("*/run.json"))
        tracked = tracked_fit(build, data, config.replace(seed=seed), run_name, where, resume=started,
                              eval_every=eval_every, progress=False, fitter=fitter)
        result = tracked.result
        result.summary["strategy"] = f"rho1{'' if paid else '-free'}:keep={keep:g}"
        result.summary["seed"] = seed
        results.append(result)
    return results
