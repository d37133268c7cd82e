"""From names to the trainer's objects: a model spec to a function building the model, a data set's path to Data.

    build = model_builder("cnn", data)          # or "package.module:function", your own nn.Module
    data = load_data("images/", device="cpu", limit_train=6000, seed=0)
    data = load_text("corpus/", context=128, glob="**/*.py", seed=0)   # text: a TextData (None: the stdlib)
    build = text_model_builder("gpt", context=128, gpt=(2, 64, 4))
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from functional_ast.data import images as fdata
from functional_ast.data import regimes, text
from functional_ast.data.junk import with_junk
from functional_ast.models import airbench94, build_model, gpt
from functional_ast.train.config import ConfigError
from functional_ast.train.trainer import Data

WHITENING_SAMPLES = 5000  # the training images airbench94's whitening is computed from (airbench's number)


def load_data(path: str | Path | None, *, root: str | Path = "./data", device: torch.device | str = "cpu",
              image_size: int | None = None, limit_train: int | None = None, limit_test: int | None = None,
              label_noise: float = 0.0, seed: int = 0, download: bool = False,
              data_in_memory: str = "auto", classes: tuple[str, ...] | None = None, imbalance: float = 1.0,
              duplicates: float = 0.0) -> Data:
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
    return Data.prepare(train, test, device, label_noise, seed, data_in_memory)


def load_text(path: str | Path | None, *, root: str | Path = "./data", context: int = 128,
              glob: str = text.DEFAULT_GLOB, test_fraction: float = 0.1, seed: int = 0,
              limit_train: int | None = None, limit_test: int | None = None, name: str | None = None,
              device: torch.device | str = "cpu", junk: float = 0.0) -> text.TextData:
    """The corpus at `path` (None: the running Python's standard library source) split by file (seeded) into
    windows of `context + 1` bytes; junk files make up a `junk` share of the training text (`data.junk`); `limit_*`
    keep the first N windows of the training (held-out) files."""
    corpus = text.stdlib_corpus(root) if path is None else text.load_corpus(path, glob, root=root,
                                                                             name=name or Path(path).name)
    train, test = text.split(corpus, context, test_fraction, seed)
    train = with_junk(train, junk, seed)
    if limit_train and limit_train < len(train):
        train = train.select(torch.arange(limit_train))
    if limit_test and limit_test < len(test):
        test = test.select(torch.arange(limit_test))
    return text.TextData.of(train, test, device)


def text_model_builder(spec: str, context: int, gpt_shape: tuple[int, int, int] = (2, 64, 4)
                       ) -> Callable[[], nn.Module]:
    """A function building the language model `spec` names: "gpt" (`models.gpt` of depth, width, heads
    `gpt_shape`), or package.module:function called with vocab=256 and context."""
    if spec == "gpt":
        depth, width, heads = gpt_shape
        return lambda: gpt(vocab=256, context=context, depth=depth, width=width, heads=heads)
    if ":" not in spec:
        raise ConfigError(f"--model {spec} is an image model; with --task lm use gpt or package.module:function")
    return _user_builder(spec, _imported(spec), dict(vocab=256, context=context), "vocab and context")


def _user_builder(spec: str, fn: Callable, kwargs: dict, must_take: str) -> Callable[[], nn.Module]:
    """A function calling the user's `fn(**kwargs)`, a one-line ConfigError when the call fails or returns no
    nn.Module."""

    def build() -> nn.Module:
        try:
            model = fn(**kwargs)
        except TypeError as error:
            raise ConfigError(f"--model {spec}: calling it with {', '.join(kwargs)} failed ({error}); it must take "
                              f"{must_take} keyword arguments") from None
        if not isinstance(model, nn.Module):
            raise ConfigError(f"--model {spec}: it returned {type(model).__name__}, not an nn.Module")
        return model

    return build


def _imported(spec: str) -> Callable:
    module_name, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except ImportError as error:
        raise ConfigError(f"--model {spec}: cannot import {module_name} ({error}); put its folder on PYTHONPATH "
                          "or run from it") from None
    except AttributeError:
        raise ConfigError(f"--model {spec}: {module_name} has no {attr!r}; name a function that returns an "
                          "nn.Module") from None
    if not callable(fn):
        raise ConfigError(f"--model {spec}: {attr} is not callable; name a function that returns an nn.Module")
    return fn


def model_builder(spec: str, data: Data) -> Callable[[], nn.Module]:
    """A function building the model `spec` names (a built-in, or package.module:function called with
    num_classes, in_channels and, if it takes it, image_size) for `data`'s classes, channels and image size."""
    if spec == "gpt":
        raise ConfigError("--model gpt is a language model; use it with --task lm (and a text --data)")
    _, channels, height, _ = data.train.data["image"].shape
    num_classes = len(data.train.classes)
    if spec == "airbench94":  # its first layer whitens the patches of the images training sees
        if min(data.train.data["image"].shape[-2:]) < 16:
            raise ConfigError(f"--model airbench94 needs images of at least 16 pixels, these are {height}; pass "
                              "--image-size 32, or use cnn")
        images = data.train.data["image"]  # a folder's are in class order: take them evenly through the set
        spread = torch.linspace(0, len(images) - 1, min(len(images), WHITENING_SAMPLES)).round().long()
        sample = images[spread.to(images.device)].cpu().float().div(255)
        whitening = (sample - data.mean.cpu().view(1, -1, 1, 1)) / data.std.cpu().view(1, -1, 1, 1)
        return lambda: airbench94(num_classes, channels, height, whitening_images=whitening)
    if ":" not in spec:
        return lambda: build_model(spec, num_classes=num_classes, in_channels=channels, image_size=height)
    fn = _imported(spec)
    try:
        takes = inspect.signature(fn).parameters
        accepts_size = "image_size" in takes or any(p.kind is p.VAR_KEYWORD for p in takes.values())
    except (TypeError, ValueError):
        accepts_size = False

    kwargs = dict(num_classes=num_classes, in_channels=channels, **({"image_size": height} if accepts_size else {}))
    return _user_builder(spec, fn, kwargs, "num_classes and in_channels")


def model_label(spec: str) -> str:
    """A model spec's short name for run names: "cnn" -> "cnn", "my.nets:wide" -> "wide"."""
    return spec.rpartition(":")[2] or spec
