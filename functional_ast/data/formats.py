"""The layout of a data path (a CIFAR-10 batches directory, an ImageFolder tree with train/ and test/, or a
tar(.gz) of either) recognised and read as Sources, nothing decoded yet."""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath

from functional_ast.data.cifar import CIFAR_DIR, CIFAR_META, CIFAR_TEST, CIFAR_TRAIN, find_cifar_dir, load_cifar_pickles
from functional_ast.data.decode import file_split, is_image_name, read_file
from functional_ast.data.errors import DataError, one_line
from functional_ast.data.folders import folder_files
from functional_ast.data.splits import Sources, tensor_sources

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


HOW_TO_PROVIDE = (
    "Pass --data PATH pointing to a CIFAR-10 directory (cifar-10-batches-py, or an ImageFolder "
    "tree with train/ and test/) or a .tar.gz of either."
)


def check_source(path: Path) -> None:
    """Raise DataError unless `path` exists and is a directory or a tar(.gz) archive."""
    if not path.exists():
        raise DataError(f"data path {path} does not exist; check the path. {HOW_TO_PROVIDE}")
    if not path.is_dir() and not path.name.lower().endswith(ARCHIVE_SUFFIXES) and not tarfile.is_tarfile(path):
        raise DataError(f"data path {path} is neither a directory nor a .tar.gz/.tgz/.tar archive. {HOW_TO_PROVIDE}")


def read_sources(path: Path, image_size) -> Sources:
    """The classes and undecoded train/test splits of a directory or archive that `check_source` accepted."""
    return _directory_sources(path, image_size) if path.is_dir() else _archive_sources(path, image_size)


def _find_split_root(d: Path) -> Path | None:
    def has_splits(p: Path) -> bool:
        return (p / "train").is_dir() and (p / "test").is_dir()

    if has_splits(d):
        return d
    found = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".") and has_splits(p))
    if len(found) > 1:
        raise DataError(
            f"{d} holds several datasets ({', '.join(p.name for p in found)}); pass --data pointing to one of them"
        )
    return found[0] if found else None


def _check_classes(train: list[str], test: list[str], where: str) -> None:
    if list(train) != list(test):
        raise DataError(
            f"train and test class folders in {where} differ: train has {list(train)}, test has {list(test)}; "
            "make both splits contain the same class folders"
        )


def _directory_sources(d: Path, image_size) -> Sources:
    cifar = find_cifar_dir(d)
    if cifar is not None:
        return tensor_sources(load_cifar_pickles(lambda name: read_file(cifar / name), str(cifar), image_size))
    split_root = _find_split_root(d)
    if split_root is None:
        raise DataError(
            f"no images found in {d}: expected a {CIFAR_DIR} directory or an ImageFolder tree with train/ and "
            f"test/ class folders. {HOW_TO_PROVIDE}"
        )
    (classes, train), (test_classes, test) = folder_files(split_root / "train"), folder_files(split_root / "test")
    _check_classes(classes, test_classes, str(split_root))
    return classes, {s: file_split(files, classes, image_size, str(split_root / s))
                     for s, files in (("train", train), ("test", test))}


def _archive_sources(path: Path, image_size) -> Sources:
    """Read a tar(.gz) in memory: pickled CIFAR-10 batches, or images under .../{train,test}/<class>/ (their
    encoded bytes are held; each is decoded when its rows are)."""
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                base = PurePosixPath(m.name).name
                if m.isfile() and (is_image_name(m.name) or base in (*CIFAR_TRAIN, CIFAR_TEST, CIFAR_META)):
                    members[m.name] = tf.extractfile(m).read()
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        raise DataError(f"{path} is not a readable tar archive ({one_line(e)}); re-download or re-create it") from None
    by_parent: dict[str, set[str]] = {}
    for name in members:
        p = PurePosixPath(name)
        by_parent.setdefault(str(p.parent), set()).add(p.name)
    for parent, names in sorted(by_parent.items()):
        if {*CIFAR_TRAIN, CIFAR_TEST, CIFAR_META} <= names:
            def read(name, parent=parent):
                return members[str(PurePosixPath(parent) / name)]

            return tensor_sources(load_cifar_pickles(read, f"{path}:{parent}", image_size))
    splits: dict[str, list[tuple[str, str, bytes]]] = {"train": [], "test": []}
    for name, data in sorted(members.items()):
        parts = PurePosixPath(name).parts
        # the last "train"/"test" component that is followed by <class>/<...>/<file>
        pos = [i for i, part in enumerate(parts[:-2]) if part in splits]
        if is_image_name(name) and pos:
            i = pos[-1]
            splits[parts[i]].append((f"{path}:{name}", parts[i + 1], data))
    if not splits["train"] and not splits["test"]:
        raise DataError(
            f"no images found in archive {path}: expected {CIFAR_DIR} batches or images under train/<class>/ and "
            f"test/<class>/. {HOW_TO_PROVIDE}"
        )
    train_classes = sorted({c for _, c, _ in splits["train"]})
    test_classes = sorted({c for _, c, _ in splits["test"]})
    _check_classes(train_classes, test_classes, str(path))
    return train_classes, {s: file_split(splits[s], train_classes, image_size, f"{path} ({s}/)")
                           for s in ("train", "test")}
