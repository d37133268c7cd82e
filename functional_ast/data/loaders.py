"""The data a run trains on, from a path or from objects: `load_images` (an image set, in its regime), `load_text` (a
corpus split by file, with junk if asked) and `as_data` (what `fit` makes of the train and test it is given).

Each is the data side of a task: `tasks.image_classification().load` is `load_images`, the language-modelling
task's is `load_text`; only this module and the data classes know which kind of data they hold.
"""

from __future__ import annotations

from pathlib import Path

import torch

from functional_ast.core.checks import ConfigError
from functional_ast.data import images as fdata
from functional_ast.data import regimes, text
from functional_ast.data.junk import with_junk
from functional_ast.data.source import DataSource, ImageData


def load_images(path: str | Path | None, *, root: str | Path | None = None, device: torch.device | str = "cpu",
              image_size: int | None = None, limit_train: int | None = None, limit_test: int | None = None,
              label_noise: float = 0.0, seed: int = 0, download: bool = False,
              data_in_memory: str = "auto", classes: tuple[str, ...] | None = None, imbalance: float = 1.0,
              duplicates: float = 0.0) -> ImageData:
    """The data set at `path` (None with `download`: CIFAR-10 from torchvision), decoded into `root`'s cache, cut to
    `classes` (both sides, relabelled in that order), subset to seeded class-balanced `limit_*` samples; then its
    training side only: long-tailed at `imbalance`, a `duplicates` share replaced by near-duplicates, its labels
    noised (`data.regimes`, `data.images.with_label_noise`); on `device`. The images stay memory-mapped or are
    copied into memory as `data_in_memory` says (`data.images.load_dataset`)."""
    train, test = fdata.load_dataset(path, root=root, image_size=image_size, download=download,
                                     data_in_memory=data_in_memory)
    if classes:
        train, test = regimes.only_classes(train, classes), regimes.only_classes(test, classes)
    if limit_train:
        train = fdata.balanced_subset(train, limit_train, seed=seed)
    if limit_test:
        test = fdata.balanced_subset(test, limit_test, seed=seed + 1)
    if imbalance != 1:
        train = regimes.long_tailed(train, imbalance, seed)
    if duplicates:
        train = regimes.with_near_duplicates(train, duplicates, seed)
    return ImageData.prepare(train, test, device, label_noise, seed, data_in_memory)


def load_text(path: str | Path | None, *, root: str | Path | None = None, context: int = 128,
              glob: str = text.DEFAULT_GLOB, test_fraction: float = 0.1, seed: int = 0,
              limit_train: int | None = None, limit_test: int | None = None, name: str | None = None,
              device: torch.device | str = "cpu", junk: float = 0.0, train_bytes: int | None = None,
              test_bytes: int | None = None) -> text.TextData:
    """The corpus at `path` (None: the running Python's standard library source) split by file (seeded) into
    windows of `context + 1` bytes; each side cut to a seeded choice of whole files of at most `train_bytes` /
    `test_bytes` (`text.file_subset`); junk files then make up a `junk` share of the training text (`data.junk`);
    `limit_*` keep the first N windows of the training (held-out) files."""
    corpus = text.stdlib_corpus(root) if path is None else text.load_corpus(path, glob, root=root,
                                                                             name=name or Path(path).name)
    train, test = text.split(corpus, context, test_fraction, seed)
    train, test = text.file_subset(train, train_bytes, seed + 1), text.file_subset(test, test_bytes, seed + 2)
    train = with_junk(train, junk, seed + 3)
    if limit_train and limit_train < len(train):
        train = train.select(torch.arange(limit_train))
    if limit_test and limit_test < len(test):
        test = test.select(torch.arange(limit_test))
    return text.TextData.of(train, test, device)


def as_data(train, test, device=None, label_noise: float = 0.0, seed: int = 0) -> DataSource:
    """The run's data: `train` itself when it is a `DataSource`, text windows (`data.text.Windows`) paired with
    the test windows, or images (LabelledImages or (images, labels) pairs) prepared on `device`."""
    if isinstance(train, DataSource):
        return train
    if isinstance(train, text.Windows):
        if label_noise:
            raise ConfigError("label_noise replaces image labels; a text corpus has none (set it to 0)")
        return text.TextData.of(train, test, device)
    return ImageData.prepare(train, test, device, label_noise, seed)
