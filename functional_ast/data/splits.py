"""A split before it is decoded (Split: labels and the rows it decodes on demand), the Sources of a data set,
and their decoding whole in memory."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor

from functional_ast.data.errors import DataError
from functional_ast.data.labelled import LabelledImages, from_tensors


@dataclass(frozen=True)
class Split:
    """One split before it is decoded: labels [N] and `rows(a, b)`, the uint8 [b-a,C,H,W] images of samples
    a..b-1 (C is 1 where those images are all grayscale, so it may differ between calls)."""

    labels: Tensor
    rows: Callable[[int, int], Tensor]
    names: Sequence[str] = ()  # the samples' file names, for error messages

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def name(self, i: int) -> str:
        return self.names[i] if i < len(self.names) else f"image {i}"


Sources = tuple[list[str], dict[str, Split]]  # the classes, and the splits "train" and "test" not yet decoded


def tensor_sources(splits: tuple[LabelledImages, LabelledImages]) -> Sources:
    """Sources of two sets already decoded: their rows are slices of the images held."""
    return list(splits[0].classes), {"train": _tensor_split(splits[0]), "test": _tensor_split(splits[1])}


def _tensor_split(ds: LabelledImages) -> Split:
    images = ds.data["image"]
    return Split(ds.data["label"], lambda a, b: images[a:b])


def decoded(split: Split, classes) -> LabelledImages:
    """The whole split decoded in memory (one call: as one folder of images always decoded)."""
    return from_tensors(split.rows(0, len(split)), split.labels, classes)


def in_memory(sources: Sources, where) -> tuple[LabelledImages, LabelledImages]:
    """Both splits decoded whole in memory; a grayscale split next to a colour one is repeated to 3 channels."""
    classes, splits = sources
    train, test = decoded(splits["train"], classes), decoded(splits["test"], classes)
    train, test = _as_colour(train, test), _as_colour(test, train)
    if train.data["image"].shape[1:] != test.data["image"].shape[1:]:
        raise DataError(
            f"train images are {list(train.data['image'].shape[1:])} but test images are "
            f"{list(test.data['image'].shape[1:])} in {where}; pass image_size (--image-size N) to resize both"
        )
    return train, test


def _as_colour(ds: LabelledImages, other: LabelledImages) -> LabelledImages:
    """`ds` with its grayscale images repeated to 3 channels if `other` is in colour; else `ds` itself."""
    if ds.data["image"].shape[1] == 1 and other.data["image"].shape[1] == 3:
        return from_tensors(ds.data["image"].repeat(1, 3, 1, 1), ds.data["label"], ds.classes)
    return ds
