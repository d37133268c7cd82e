"""Training sets for the regimes where selection is claimed to pay, made from a clean labelled set: a long tail
(`long_tailed`), near-duplicates of a few images (`with_near_duplicates`) and part of the classes (`only_classes`,
the two sides of a fine-tuning experiment). Label noise is `subsets.with_label_noise`. Each is seeded and returns
a new set; the input is untouched. Only the training side is changed by the callers: test sets stay as given."""

from __future__ import annotations

import math

import torch

from functional_ast.core.checks import ConfigError
from functional_ast.data.batches import augment
from functional_ast.data.labelled import LabelledImages
from functional_ast.data.seeds import seeded_generator
from functional_ast.data.subsets import take_rows


def long_tailed_counts(largest: int, num_classes: int, ratio: float) -> list[int]:
    """CIFAR-10-LT's exponential profile (Cao et al., 2019, as their code rounds it): class c keeps
    n_c = floor(largest * ratio ** (-c / (C - 1))) samples (at least 1), so class 0 keeps `largest` and the last
    class largest / ratio; CIFAR-10's 5,000 a class give its LT sets of 12,406 (ratio 100) and 20,431 (10)."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio < 1:
        raise ConfigError(f"imbalance must be a ratio >= 1 (largest class / smallest class), got {ratio!r}")
    if num_classes < 2:
        return [largest] * num_classes
    return [max(1, int(largest * ratio ** (-c / (num_classes - 1)) + 1e-9)) for c in range(num_classes)]


def long_tailed(ds: LabelledImages, ratio: float, seed: int) -> LabelledImages:
    """A seeded subset of `ds` whose class c (in the order of `ds.classes`) keeps `long_tailed_counts(n_max, C,
    ratio)[c]` samples, n_max the smallest class's size (so every class can give its count); kept in set order.
    Ratio 1 returns `ds` itself."""
    counts_now = torch.bincount(ds.data["label"].cpu(), minlength=len(ds.classes))
    if ratio == 1:
        long_tailed_counts(1, len(ds.classes), ratio)  # validates
        return ds
    targets = long_tailed_counts(int(counts_now.min()), len(ds.classes), ratio)
    g = seeded_generator(seed, "long_tailed")
    labels = ds.data["label"].cpu()
    picks = [torch.nonzero(labels == c).flatten()[torch.randperm(int(counts_now[c]), generator=g)[:n]]
             for c, n in enumerate(targets)]
    return LabelledImages(take_rows(ds.data, torch.cat(picks).sort().values), ds.classes)


def with_near_duplicates(ds: LabelledImages, share: float, seed: int, sources: float = 0.01) -> LabelledImages:
    """A copy of `ds` (same size, same labels, images in memory) in which round(share * N) samples are replaced by
    near-duplicates of a few others: max(1, round(sources * N / C)) seeded source images per class, and each
    replaced sample becomes a random crop (4 pixels of padding) and flip of a source of its own class, so the
    class counts are unchanged. "duplicate_of" holds each sample's source index (-1 for an original). Web-scale
    sets are like this (SemDeDup removes half of LAION with little loss): much of the data teaches little."""
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share < 1:
        raise ConfigError(f"duplicates must be a share of the training set in [0, 1), got {share!r}")
    if not 0 < sources <= 1:
        raise ConfigError(f"duplicate sources must be a share of the training set in (0, 1], got {sources!r}")
    if share == 0:
        return ds
    labels = ds.data["label"].cpu()
    n, num_classes = len(ds), len(ds.classes)
    per_class = max(1, round(sources * n / num_classes))
    g = seeded_generator(seed, "near_duplicates")
    source_of_class = {}
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        source_of_class[c] = members[torch.randperm(len(members), generator=g)[:per_class]]
    is_source = torch.zeros(n, dtype=torch.bool)
    for chosen in source_of_class.values():
        is_source[chosen] = True
    others = torch.nonzero(~is_source).flatten()
    replaced = others[torch.randperm(len(others), generator=g)[:round(share * n)]].sort().values
    duplicate_of = torch.full((n,), -1, dtype=torch.int64)
    for c, chosen in source_of_class.items():
        mine = replaced[labels[replaced] == c]
        if len(chosen) and len(mine):
            duplicate_of[mine] = chosen[torch.randint(len(chosen), (len(mine),), generator=g)]
    images = ds.data["image"].cpu().clone()
    done = duplicate_of >= 0
    copies = augment(images[duplicate_of[done]].float(), g).round().to(torch.uint8)
    images[done] = copies
    entries = dict(ds.data.cpu().items(), image=images, duplicate_of=duplicate_of)
    return LabelledImages(type(ds.data)(entries, batch_size=ds.data.batch_size), ds.classes)


def only_classes(ds: LabelledImages, names: list[str] | tuple[str, ...]) -> LabelledImages:
    """The samples of the classes `names` (in set order), relabelled 0..k-1 in the order the names are given.
    ConfigError naming the set's classes when one is not among them."""
    names = [str(n) for n in names]
    missing = [n for n in names if n not in ds.classes]
    if missing or not names or len(set(names)) != len(names):
        problem = f"no class {', '.join(missing)}" if missing else "the class list is empty or repeats a class"
        raise ConfigError(f"classes: {problem}; this set's classes are {', '.join(ds.classes)}")
    labels = ds.data["label"].cpu()
    old = torch.tensor([ds.classes.index(n) for n in names])
    keep = torch.isin(labels, old)
    index = torch.nonzero(keep).flatten()
    data = take_rows(ds.data, index)
    relabel = torch.full((len(ds.classes),), -1, dtype=torch.int64)
    relabel[old] = torch.arange(len(names))
    entries = dict(data.items(), label=relabel[data["label"].cpu()].to(data["label"].device))
    if "clean_label" in entries:
        entries["clean_label"] = relabel[entries["clean_label"].cpu()]
    return LabelledImages(type(data)(entries, batch_size=data.batch_size), tuple(names))
