"""Rho-1's selective language modelling beside a comparison: one tracked run per seed, its reference trained on a
small clean slice of the training files, its cost charged to the run's budget (`paid`) or given free (labelled).
Rho-1 selects tokens of sequences: `train.selective.fit_selective` refuses any other task."""

from __future__ import annotations

import functools

from functional_ast.data import junk
from functional_ast.data.text import TextData
from functional_ast.edges.tracked import Tracking, tracked_fit
from functional_ast.train.config import TrainConfig
from functional_ast.train.selective import fit_selective

KEEP = 0.6  # the share of each window's tokens its loss keeps
REFERENCE = 0.1  # its reference trains on this share of the clean training files (a small curated set) ...
REFERENCE_EPOCHS = 4  # ... this many epochs over it (0.4 full-data epochs at 0.1)


def reference_data(data: TextData, share: float, seed: int) -> TextData:
    """Rho-1's reference data: `junk.clean_slice` of the training windows; its test side is the run's (unused: the
    reference is not evaluated)."""
    return TextData.of(junk.clean_slice(data.train, share, seed + 4421), data.test, data.device)


def reference_epochs(data: TextData, share: float, seeds) -> float:
    """What the reference costs in full-data epochs, the largest over `seeds` (each seed's slice differs)."""
    return max(REFERENCE_EPOCHS * len(reference_data(data, share, seed).train) / len(data.train) for seed in seeds)


def name(keep: float, paid: bool) -> str:
    """The entry's name in tables: "rho1:keep=0.6", or "rho1-free:keep=0.6" for a reference given free."""
    return f"rho1{'' if paid else '-free'}:keep={keep:g}"


def rho1_runs(build, data, config: TrainConfig, run_name: str, where: Tracking, seeds, *, resume: bool,
              eval_every, keep: float = KEEP, paid: bool = True, share: float | None = REFERENCE, task=None) -> list:
    """Rho-1 (`fit_selective` at `keep`) once per seed, each its own tracked run `run_name`-seed<N>: its reference
    trains `REFERENCE_EPOCHS` epochs on a `share` slice of the clean training files (None: one epoch on all the
    training text), paid inside `config`'s budget or given free. With `resume`, finished runs are read back and
    started ones continue from their newest checkpoint."""
    results = []
    for seed in seeds:
        options = dict(keep=keep, charge_reference=paid)
        if share:
            options.update(reference_data=reference_data(data, share, seed), reference_epochs=REFERENCE_EPOCHS)
        fitter = functools.partial(fit_selective, **options)
        seed_name = f"{run_name}-seed{seed}"
        started = resume and any((where.checkpoint_root / seed_name).glob("*/run.json"))
        tracked = tracked_fit(build, data, config.replace(seed=seed), seed_name, where, resume=started,
                              eval_every=eval_every, progress=False, fitter=fitter, task=task)
        result = tracked.result
        result.summary = result.summary.replace(strategy=name(keep, paid), seed=seed)
        results.append(result)
    return results
