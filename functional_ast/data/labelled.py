"""LabelledImages, a labelled uint8 image set held in a TensorDict (in memory or memory-mapped); from_tensors
builds one from tensors, checked."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tensordict import TensorDict
from torch import Tensor

from functional_ast.data.errors import DataError


@dataclass(frozen=True)
class LabelledImages:
    """A labelled image set: `data` has batch_size [N], keys "image" (uint8 [N,C,H,W]) and "label" (int64 [N]),
    plus "clean_label" (int64 [N]) after `with_label_noise`. "image" may be memory-mapped (e.g. a
    tensordict.MemoryMappedTensor or torch.from_file): batches gather only the rows they need."""

    data: TensorDict
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.data.batch_size[0])


def from_tensors(images: Tensor, labels: Tensor, classes=None) -> LabelledImages:
    """Wrap uint8 [N,C,H,W] images (float in [0,1] is converted) and integer labels [N];
    raises DataError on bad shapes, dtypes or labels outside range(len(classes))."""
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise DataError(f"images must be a tensor of shape [N,C,H,W], got {_describe(images)}")
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(f"labels must be a 1-D tensor of length {images.shape[0]}, got {_describe(labels)}")
    if images.dtype.is_floating_point:
        if images.numel() and (images.min() < 0 or images.max() > 1):
            raise DataError("float images must be in [0, 1]; pass uint8 images or rescale them")
        images = (images * 255).round().to(torch.uint8)
    elif images.dtype != torch.uint8:
        raise DataError(f"images must be uint8 (or float in [0, 1]), got {images.dtype}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise DataError(f"labels must be an integer tensor, got {labels.dtype}")
    labels = labels.to(torch.int64)
    if classes is None:
        classes = [str(i) for i in range(int(labels.max()) + 1 if labels.numel() else 0)]
    classes = tuple(str(c) for c in classes)
    if labels.numel() and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DataError(
            f"labels must lie in [0, {len(classes) - 1}] for {len(classes)} classes, "
            f"got range [{int(labels.min())}, {int(labels.max())}]"
        )
    data = TensorDict({"image": images.contiguous(), "label": labels}, batch_size=[images.shape[0]])
    return LabelledImages(data, classes)


def _describe(x) -> str:
    return f"{x.dtype} {list(x.shape)}" if isinstance(x, Tensor) else type(x).__name__


def rows_per_chunk(images: Tensor) -> int:
    """Rows of `images` per chunk of a streamed pass: 4096 (as always for small images), else 2**20 values."""
    per_image = max(1, math.prod(images.shape[1:]))
    return 4096 if per_image <= 4096 else max(1, 2**20 // per_image)
