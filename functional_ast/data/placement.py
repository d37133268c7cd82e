"""Where a set's images are read in training: moved to the device, or memory-mapped ones copied into memory or
left mapped, as DATA_IN_MEMORY's modes say."""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path

import torch
from tensordict import MemoryMappedTensor

from functional_ast.data.errors import DataError
from functional_ast.data.labelled import LabelledImages

DATA_IN_MEMORY = ("auto", "on", "off")
MEMORY_FRACTION = 0.25  # "auto" copies memory-mapped images into memory when they take less than this share of it


def check_data_in_memory(data_in_memory: str) -> None:
    """Raise DataError unless `data_in_memory` is one of DATA_IN_MEMORY."""
    if data_in_memory not in DATA_IN_MEMORY:
        raise DataError(f"data in memory must be one of {', '.join(DATA_IN_MEMORY)} (--data-in-memory), "
                        f"got {data_in_memory!r}")


def is_mapped(ds: LabelledImages) -> bool:
    """Whether `ds`'s images are memory-mapped from a file (a cached set) rather than held in memory."""
    images = ds.data["image"]
    return isinstance(images, MemoryMappedTensor) and images.filename is not None


def placed(ds: LabelledImages, device="cpu", data_in_memory: str = "auto") -> LabelledImages:
    """`ds` where training reads it. Images in memory move to `device`. Memory-mapped ones: "on" copies them to
    `device`, "off" leaves them mapped (batches are gathered from the file, then moved), "auto" copies them to a
    non-CPU device always and into CPU memory when they take under MEMORY_FRACTION of MemAvailable."""
    check_data_in_memory(data_in_memory)
    device = torch.device(device)
    if is_mapped(ds):
        if data_in_memory == "off" or (data_in_memory == "auto" and device.type == "cpu" and not _fits(ds)):
            return ds
        if device.type == "cpu":
            return LabelledImages(ds.data.clone(), ds.classes)
    return LabelledImages(ds.data.to(device), ds.classes)


def _fits(ds: LabelledImages) -> bool:
    return ds.data["image"].numel() < MEMORY_FRACTION * _available_memory()


def _available_memory() -> int:
    """Bytes of memory available without swapping: MemAvailable of /proc/meminfo, else free pages; 0 if unknown."""
    with suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    with suppress(OSError, ValueError, AttributeError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return 0
