"""New sets from a set: a seeded class-balanced subset (mapped images stay mapped) and seeded label noise."""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import torch
from tensordict import MemoryMappedTensor, TensorDict
from torch import Tensor

from functional_ast.core.checks import ConfigError
from functional_ast.data.errors import DataError
from functional_ast.data.labelled import LabelledImages, rows_per_chunk
from functional_ast.data.seeds import seeded_generator


def balanced_subset(ds: LabelledImages, n: int, seed: int) -> LabelledImages:
    """A seeded, class-balanced random subset of n samples (per-class counts differ by at most 1 where
    class sizes allow), kept in dataset order; n >= len(ds) returns ds unchanged."""
    if n < 1:
        raise DataError(f"subset size must be a positive number of samples, got {n}")
    if n >= len(ds):
        return ds
    labels = ds.data["label"]
    sizes = torch.bincount(labels, minlength=len(ds.classes)).tolist()
    counts, left = [0] * len(sizes), n
    for k, c in enumerate(sorted(range(len(sizes)), key=lambda c: sizes[c])):  # water-filling, smallest first
        counts[c] = min(sizes[c], left // (len(sizes) - k))
        left -= counts[c]
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c, count in enumerate(counts):
        members = torch.nonzero(labels == c).flatten()
        picks.append(members[torch.randperm(len(members), generator=g)[:count]])
    index = torch.cat(picks).sort().values
    return LabelledImages(take_rows(ds.data, index), ds.classes)


def take_rows(data: TensorDict, index: Tensor) -> TensorDict:
    """data[index]; memory-mapped images are gathered chunk by chunk into a new file-backed map (its file beside
    the source's, unlinked at once: the mapping keeps it until the process ends), never into memory."""
    images = data["image"]
    if not (isinstance(images, MemoryMappedTensor) and images.filename is not None):
        return data[index]
    name = Path(images.filename).parent / f".subset-{uuid.uuid4().hex}.memmap"
    try:
        out = MemoryMappedTensor.empty((len(index), *images.shape[1:]), dtype=images.dtype, filename=name)
        step = rows_per_chunk(images)
        for a in range(0, len(index), step):
            out[a:a + step] = images[index[a:a + step]]
    finally:
        name.unlink(missing_ok=True)
    rest = {key: value[index] for key, value in data.items() if key != "image"}
    return TensorDict({"image": out, **rest}, batch_size=[len(index)])


def with_label_noise(ds: LabelledImages, fraction: float, seed: int) -> LabelledImages:
    """A copy of `ds` in which exactly round(fraction * N) samples, picked by a generator seeded from `seed`, have
    their label replaced by a uniformly random *other* class; "clean_label" keeps the labels from before (from
    before the first call, if noise is added twice). The input is untouched (the images are shared, not copied).
    fraction 0 returns `ds` itself; fraction must be in [0, 1) (else ConfigError)."""
    if (isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not math.isfinite(fraction)
            or not 0 <= fraction < 1):
        raise ConfigError(f"label_noise must be a fraction in [0, 1), got {fraction!r}")
    if fraction == 0:
        return ds
    num_classes = len(ds.classes)
    if num_classes < 2:
        raise ConfigError(f"label_noise needs at least 2 classes to pick a wrong label from, got {num_classes}")
    labels = ds.data["label"]
    g = seeded_generator(seed, "label_noise")
    picked = torch.randperm(len(ds), generator=g)[:round(fraction * len(ds))]
    shift = torch.randint(1, num_classes, (len(picked),), generator=g)  # (label + 1..C-1) mod C: any other class
    noisy = labels.cpu().clone()
    noisy[picked] = (noisy[picked] + shift) % num_classes
    entries = dict(ds.data.items())
    entries.setdefault("clean_label", labels.clone())
    entries["label"] = noisy.to(labels.device)
    return LabelledImages(TensorDict(entries, batch_size=ds.data.batch_size, device=ds.data.device), ds.classes)
