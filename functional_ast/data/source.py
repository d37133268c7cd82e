"""The data seam: what the trainer asks of a run's data (`DataSource`), and its image implementation (`ImageData`).

The trainer, the reference fits and evaluation reach the data only through these methods, so a new kind of data
(`data.text.TextData`) is one class. Batches are TensorDicts on `device` whose keys the task takes apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Protocol, runtime_checkable

import torch
from tensordict import TensorDict

from functional_ast.core.checks import ConfigError
from functional_ast.data import images as fdata
from functional_ast.data.stats import dataset_digest


@runtime_checkable
class DataSource(Protocol):
    """A run's training and test data, as the trainer uses it."""

    device: torch.device

    @property
    def num_samples(self) -> int:
        """Training samples (what the rules' tables and the epochs count)."""

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one stored sample ([C, H, W] for an image, [context + 1] for a text window)."""

    @property
    def num_classes(self) -> int | None:
        """Classes of a classification task, None otherwise (what a rule's `Context` says)."""

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None,
              transform: Callable | None = None) -> TensorDict:
        """Training samples `index` as a batch on `device` (with "index"); augmented by `transform` with
        `generator` when one is given."""

    def test_batches(self, batch_size: int) -> Iterator[TensorDict]:
        """The whole test set in order, not augmented, in batches of at most `batch_size`."""

    def subset(self, train_index: torch.Tensor, test_index: torch.Tensor) -> "DataSource":
        """The same kind of data on training samples `train_index`, tested on training samples `test_index`
        (a reference model's own run)."""

    def describe(self) -> dict:
        """For tracking: name, digest (or None), sample counts and what the data holds."""

    def fingerprint(self) -> str:
        """A short stable digest (12 hex digits) of the training side: what a resume and MLflow compare."""

    def test_fingerprint(self) -> str:
        """The same of the test side (the dataset the logged model's test metrics are linked to)."""

    def facts(self) -> dict:
        """What a run records of the data beside its name and digest (params, the MLflow dataset's profile, the
        logged config): numbers, short strings and lists of numbers, never a machine's path."""

    def about(self) -> str:
        """The training data in a few words, for a run's description ("6,000 training images, 10 classes")."""


@dataclass
class ImageData:
    """Train and test images on the device, with the normalisation computed from the train set."""

    train: fdata.LabelledImages
    test: fdata.LabelledImages
    mean: torch.Tensor
    std: torch.Tensor
    device: torch.device

    @classmethod
    def prepare(cls, train, test, device=None, label_noise: float = 0.0, seed: int = 0,
                data_in_memory: str = "auto") -> "ImageData":
        """From LabelledImages or (images, labels) pairs; `label_noise` replaces a seeded share of train labels;
        memory-mapped images are copied to the device or left mapped as `data.images.placed` says."""
        train, test = labelled(train, "train"), labelled(test, "test")
        if label_noise:
            train = fdata.with_label_noise(train, label_noise, seed)
        device = torch.device(device) if device is not None else torch.device("cpu")
        mean, std = fdata.channel_stats(train.data["image"])
        return cls(fdata.placed(train, device, data_in_memory), fdata.placed(test, device, data_in_memory),
                   mean.to(device), std.to(device), device)

    @property
    def num_samples(self) -> int:
        return len(self.train)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.train.data["image"].shape[1:])

    @property
    def num_classes(self) -> int | None:
        return len(self.train.classes)

    def batch(self, index, generator=None, transform=None) -> TensorDict:
        return fdata.batch_at(self.train, index, generator=generator, mean=self.mean, std=self.std,
                              device=self.device, transform=transform)

    def test_batches(self, batch_size: int) -> Iterator[TensorDict]:
        return fdata.iterate_batches(self.test, batch_size, seed=0, epoch=0, shuffle=False, drop_last=False,
                                     mean=self.mean, std=self.std, device=self.device)

    def subset(self, train_index, test_index) -> "ImageData":
        where = self.train.data.device
        return ImageData(fdata.LabelledImages(self.train.data[train_index.to(where)], self.train.classes),
                         fdata.LabelledImages(self.train.data[test_index.to(where)], self.train.classes),
                         self.mean, self.std, self.device)

    def describe(self) -> dict:
        return dict(name="images", digest=None, train_samples=len(self.train), test_samples=len(self.test),
                    **{k: v for k, v in fdata.describe(self.train).items() if k != "num_samples"})

    def fingerprint(self) -> str:
        return dataset_digest(self.train.data["image"], self.train.data["label"])

    def test_fingerprint(self) -> str:
        return dataset_digest(self.test.data["image"], self.test.data["label"])

    def facts(self) -> dict:
        """Classes, image shape ("3x32x32") and the training normalisation (per-channel mean and std in [0, 1]
        units: what a user applies to raw images; the logged model applies it itself)."""
        return dict(classes=len(self.train.classes), image_shape="x".join(map(str, self.sample_shape)),
                    normalise_mean=[round(float(v), 6) for v in self.mean.tolist()],
                    normalise_std=[round(float(v), 6) for v in self.std.tolist()])

    def about(self) -> str:
        return f"{len(self.train)} training images ({len(self.train.classes)} classes)"


def labelled(ds, name: str) -> fdata.LabelledImages:
    """`ds` as LabelledImages (it, or an (images, labels) pair); ConfigError otherwise."""
    if isinstance(ds, fdata.LabelledImages):
        return ds
    if isinstance(ds, (tuple, list)) and len(ds) == 2:
        return fdata.from_tensors(*ds)
    raise ConfigError(f"{name} data must be a data.LabelledImages or an (images, labels) pair, got {type(ds).__name__}")
