"""load_dataset, the entry point: (train, test) from torchvision's CIFAR-10 or a data path, through the decoded
cache, placed as DATA_IN_MEMORY says."""

from __future__ import annotations

from pathlib import Path

import torch

from functional_ast.data.cache import cached, fingerprint, read_cache
from functional_ast.data.decode import check_image_size, resize_images
from functional_ast.data.errors import DataError, one_line
from functional_ast.data.formats import HOW_TO_PROVIDE, check_source, read_sources
from functional_ast.data.labelled import LabelledImages, from_tensors
from functional_ast.data.placement import check_data_in_memory, placed
from functional_ast.data.splits import in_memory
from functional_ast.io import default_data_root


def load_dataset(
    source: str | Path | None,
    *,
    root: str | Path | None = None,
    download: bool = True,
    image_size: int | None = None,
    cache: bool = True,
    data_in_memory: str = "auto",
) -> tuple[LabelledImages, LabelledImages]:
    """Return (train, test) from torchvision CIFAR-10 in `root` (source None), a directory, or a tar(.gz);
    `root` (default `io.default_data_root()`) holds the download and the decoded caches;
    path sources are decoded once into root/cache/<fingerprint>/ (the fingerprint includes image_size) and
    memory-mapped from there, or copied into memory as `placed(..., "cpu", data_in_memory)` says.
    ImageFolder images load as in `load_image_folder`; a grayscale split next to a colour one is repeated to 3
    channels. Every user-facing failure is a DataError."""
    check_image_size(image_size)
    check_data_in_memory(data_in_memory)
    root = Path(root) if root is not None else default_data_root()
    if source is None:
        return _load_torchvision_cifar(Path(root), download, image_size)
    path = Path(source).expanduser()
    check_source(path)
    folder = Path(root) / "cache" / fingerprint(path, image_size) if cache else None
    stored = read_cache(folder) if folder is not None else None
    if stored is None:
        sources = read_sources(path, image_size)
        stored = cached(folder, sources, str(path)) if folder is not None else None
        if stored is None:
            return in_memory(sources, path)
    return placed(stored[0], "cpu", data_in_memory), placed(stored[1], "cpu", data_in_memory)


def _load_torchvision_cifar(root: Path, download: bool, image_size) -> tuple[LabelledImages, LabelledImages]:
    from torchvision.datasets import CIFAR10

    try:
        splits = [CIFAR10(str(root), train=t, download=download) for t in (True, False)]
    except Exception as e:
        reason = one_line(e) if download else "download=False"
        raise DataError(
            f"CIFAR-10 not found in {root} and it could not be downloaded ({reason}). {HOW_TO_PROVIDE}"
        ) from None
    out = []
    for ds in splits:
        images = resize_images(torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), image_size)
        out.append(from_tensors(images, torch.tensor(ds.targets), ds.classes))
    return out[0], out[1]
