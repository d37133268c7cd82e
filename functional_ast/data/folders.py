"""ImageFolder trees root/<class>/<image>: their class folders and image files, and loading one whole."""

from __future__ import annotations

import os
from pathlib import Path

from functional_ast.data.decode import check_image_size, file_split, is_image_name
from functional_ast.data.errors import DataError
from functional_ast.data.labelled import LabelledImages
from functional_ast.data.splits import decoded


def load_image_folder(root, image_size: int | None = None) -> LabelledImages:
    """Load an ImageFolder tree root/<class>/<image> (any number of classes = sorted folder names, images found
    recursively, hidden and non-image files skipped) as uint8 [N,1,H,W] if every image is grayscale, else
    [N,3,H,W] (grayscale images among colour ones are repeated to 3 channels). Images of different sizes need
    image_size, which resizes every image to image_size x image_size. Raises DataError if there are no images."""
    check_image_size(image_size)
    root = Path(root)
    classes, files = folder_files(root)
    return decoded(file_split(files, classes, image_size, str(root)), classes)


def folder_files(root: Path) -> tuple[list[str], list[tuple[str, str, None]]]:
    """The class folders of an ImageFolder tree and its image files as (path, class, None), in load order."""
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a directory")
    classes = _class_dirs(root)
    files = []
    for c in classes:
        for dirpath, dirnames, filenames in os.walk(root / c):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files.extend((str(Path(dirpath) / f), c, None) for f in sorted(filenames) if is_image_name(f))
    return classes, files


def _class_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
