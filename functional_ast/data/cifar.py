"""CIFAR-10 in torchvision's pickled batches: where a directory holds them, and loading them from any reader."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from functional_ast.data.decode import resize_images
from functional_ast.data.errors import DataError, one_line
from functional_ast.data.labelled import LabelledImages, from_tensors

CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"
CIFAR_META = "batches.meta"
CIFAR_DIR = "cifar-10-batches-py"


def find_cifar_dir(d: Path) -> Path | None:
    for cand in (d, d / CIFAR_DIR):
        if all((cand / f).is_file() for f in (*CIFAR_TRAIN, CIFAR_TEST, CIFAR_META)):
            return cand
    return None


def load_cifar_pickles(read, where: str, image_size) -> tuple[LabelledImages, LabelledImages]:
    """Load torchvision's pickled CIFAR-10 batches; `read(name)` returns the bytes of one file."""

    def unpickle(name):
        try:
            return pickle.loads(read(name), encoding="bytes")
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"cannot read {where}/{name} ({one_line(e)}); remove or replace this file") from None

    def get(d, key):
        return d[key.encode()] if key.encode() in d else d[key]

    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in get(unpickle(CIFAR_META), "label_names")]

    def split(names):
        batches = [unpickle(n) for n in names]
        try:
            images = torch.cat([torch.as_tensor(get(b, "data")).reshape(-1, 3, 32, 32) for b in batches])
            labels = torch.cat([torch.as_tensor(get(b, "labels"), dtype=torch.int64) for b in batches])
        except Exception as e:
            raise DataError(f"CIFAR-10 batches in {where} are malformed ({one_line(e)}); re-download them") from None
        return from_tensors(resize_images(images.to(torch.uint8), image_size), labels, classes)

    return split(CIFAR_TRAIN), split([CIFAR_TEST])
