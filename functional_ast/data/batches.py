"""Batches gathered by index: normalised float images with vectorised crop-and-flip augmentation, in an order
and with draws that depend only on (seed, epoch, batch)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import Tensor

from functional_ast.data.errors import DataError
from functional_ast.data.labelled import LabelledImages
from functional_ast.data.seeds import seeded_generator


def augment(images: Tensor, generator: torch.Generator, *, pad: int = 4, flip: bool = True,
            padding_mode: str = "constant") -> Tensor:
    """Per-sample random crop of float [B,C,H,W] images after `pad` pixels of zero ("constant") or
    "reflect" padding, plus a per-sample random horizontal flip; same shape out, one gather, no loop."""
    b, c, h, w = images.shape
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=generator.device).to(images.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=generator.device).to(images.device)
    flips = (torch.rand(b, generator=generator, device=generator.device) < 0.5).to(images.device)
    padded = F.pad(images, (pad, pad, pad, pad), mode=padding_mode) if pad else images
    rows = dy[:, None] + torch.arange(h, device=images.device)  # [B,H]
    cols = dx[:, None] + torch.arange(w, device=images.device)  # [B,W]
    if flip:
        cols = torch.where(flips[:, None], cols.flip(1), cols)
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    chan = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


_augment = augment  # iterate_batches has a flag of the same name


def num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    """Number of batches one epoch over n samples yields."""
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def iterate_batches(
    ds: LabelledImages,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    drop_last: bool = True,
    augment: bool = False,
    mean: Tensor | None = None,
    std: Tensor | None = None,
    device="cpu",
    start_batch: int = 0,
) -> Iterator[TensorDict]:
    """Yield TensorDicts [B] with "image" float32 ((x/255 - mean)/std), "label" and "index" (position in ds).
    Order and augmentation depend only on (seed, epoch, batch number), so `start_batch` resumes mid-epoch."""
    if batch_size < 1:  # checked here, not lazily at the first batch
        raise DataError(f"batch size must be positive, got {batch_size}")
    device = torch.device(device)
    shape = (1, -1, 1, 1)
    mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32, device=device).reshape(shape)
    std = None if std is None else torch.as_tensor(std, dtype=torch.float32, device=device).reshape(shape)
    return _batches(ds, batch_size, seed, epoch, shuffle, drop_last, augment, mean, std, device, start_batch)


def _batches(ds, batch_size, seed, epoch, shuffle, drop_last, augment, mean, std, device, start_batch):
    n = len(ds)
    order = torch.randperm(n, generator=seeded_generator(seed, epoch)) if shuffle else torch.arange(n)
    for k in range(start_batch, num_batches(n, batch_size, drop_last)):
        index = order[k * batch_size:(k + 1) * batch_size]
        yield batch_at(ds, index, generator=seeded_generator(seed, epoch, k) if augment else None,
                       mean=mean, std=std, device=device)


def batch_at(ds: LabelledImages, index: Tensor, *, generator: torch.Generator | None = None,
             mean: Tensor | None = None, std: Tensor | None = None, device="cpu", transform=None) -> TensorDict:
    """The samples at `index` as a batch TensorDict ("image" float normalised, "label", "index");
    augmented with `generator` when one is given, by `transform(images in [0, 1], generator)` (default: crop +
    flip, `augment`) before the normalisation. mean/std broadcast as [1,C,1,1]."""
    device = torch.device(device)
    batch = ds.data[index.to(ds.data["image"].device)]  # memory-mapped images: only these rows are read
    images = batch["image"].to(device, non_blocking=True).float().div_(255)
    if generator is not None:
        images = (transform or _augment)(images, generator)
    if mean is not None:
        images = images - mean.to(device).reshape(1, -1, 1, 1)
    if std is not None:
        images = images / std.to(device).reshape(1, -1, 1, 1)
    return TensorDict({"image": images, "label": batch["label"].to(device), "index": index.to(device)},
                      batch_size=[len(index)], device=device)
