"""Image-classification data: load once, decode to uint8, cache as a tensordict memmap,
and feed normalised batches with vectorised augmentation (no per-sample Python when training)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import sys
import tarfile
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch
from tensordict import MemoryMappedTensor, TensorDict
from torch import Tensor
from tqdm import tqdm

from functional_ast.data.batches import augment, batch_at, iterate_batches, num_batches
from functional_ast.data.errors import DataError
from functional_ast.data.errors import one_line as _short
from functional_ast.data.labelled import LabelledImages, from_tensors
from functional_ast.data.placement import DATA_IN_MEMORY, MEMORY_FRACTION, is_mapped, placed
from functional_ast.data.seeds import epoch_generator
from functional_ast.data.stats import channel_stats, describe
from functional_ast.data.subsets import balanced_subset, with_label_noise
from functional_ast.io import atomic_write_json, fsync_dir

__all__ = [
    "ARCHIVE_SUFFIXES", "CIFAR_DIR", "CIFAR_META", "CIFAR_TEST", "CIFAR_TRAIN", "DATA_IN_MEMORY", "IMAGE_EXTENSIONS",
    "MEMORY_FRACTION", "DataError", "LabelledImages", "Sources", "augment", "balanced_subset", "batch_at",
    "channel_stats", "describe", "epoch_generator", "from_tensors", "is_mapped", "iterate_batches", "load_dataset",
    "load_image_folder", "num_batches", "placed", "with_label_noise",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"
CIFAR_META = "batches.meta"
CIFAR_DIR = "cifar-10-batches-py"
_CACHE_VERSION = 3  # 2: grayscale images decode to 1 channel; 3: raw memory-mapped files, decoded in chunks
_HOW_TO_PROVIDE = (
    "Pass --data PATH pointing to a CIFAR-10 directory (cifar-10-batches-py, or an ImageFolder "
    "tree with train/ and test/) or a .tar.gz of either."
)


# --------------------------------------------------------------------------- decoding


def _is_image_name(name: str) -> bool:
    base = PurePosixPath(name).name
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


def _is_palette_png(buf: Tensor) -> bool:
    """A PNG of colour type 3, whose UNCHANGED decoding would give palette indices instead of colours."""
    head = bytes(buf[:26].tolist())
    return len(head) == 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[25] == 3


def _normalise_decoded(img: Tensor, buf: Tensor) -> Tensor:
    """One decoded image → uint8 [1,H,W] (grayscale) or [3,H,W] (colour)."""
    from torchvision.io import ImageReadMode, decode_image

    if img.dim() == 4:  # animated GIF: its first frame
        img = img[0]
    if img.shape[0] == 2:  # grayscale + alpha: drop the alpha
        img = img[:1]
    elif img.shape[0] == 4:  # RGBA PNG or CMYK JPEG: let the decoder convert to RGB
        img = decode_image(buf, mode=ImageReadMode.RGB)
    if img.dtype != torch.uint8:  # 16-bit PNG: 0..65535 → 0..255
        img = ((img.to(torch.int32) + 128) // 257).clamp_(0, 255).to(torch.uint8)
    return img


def _decode_one(buf: Tensor, name: str) -> Tensor:
    """Decode one image to uint8 [1,H,W] (a grayscale file) or [3,H,W] (colour; palettes expanded, alpha
    dropped), falling back to Pillow for formats torchvision lacks (BMP)."""
    from torchvision.io import ImageReadMode, decode_image

    try:
        mode = ImageReadMode.RGB if _is_palette_png(buf) else ImageReadMode.UNCHANGED
        return _normalise_decoded(decode_image(buf, mode=mode), buf)
    except Exception as e:
        error = e
    try:
        import numpy as np
        from PIL import Image

        with Image.open(io.BytesIO(buf.numpy().tobytes())) as im:
            gray = im.mode in ("1", "L", "LA", "La")
            pixels = torch.from_numpy(np.array(im.convert("L" if gray else "RGB"), dtype=np.uint8))
            return (pixels[None] if gray else pixels.permute(2, 0, 1)).contiguous()
    except Exception:
        raise DataError(
            f"cannot decode image {name} ({_short(error)}); remove or replace this file and try again"
        ) from None


def _decode(files: list[tuple[str, bytes]], image_size: int | None, where: str) -> Tensor:
    """Decode (name, bytes) pairs to one uint8 [N,C,H,W] tensor (all JPEGs in one batched call): C is 1 if
    every image is grayscale, else 3 (grayscale images among colour ones are repeated to 3 channels)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not files:
        raise DataError(f"no images found in {where}; expected image files (.jpg, .png, ...) in class folders")
    bufs = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for _, data in files]
    out: list[Tensor | None] = [None] * len(files)
    jpeg = [i for i, (n, _) in enumerate(files) if n.lower().endswith((".jpg", ".jpeg"))]
    if jpeg:
        try:
            for i, img in zip(jpeg, decode_jpeg([bufs[i] for i in jpeg], mode=ImageReadMode.UNCHANGED)):
                if img.shape[0] in (1, 3):  # CMYK (4 channels) is converted one by one below
                    out[i] = img
        except Exception:  # a bad or mislabelled file: decoding one by one below names it
            pass
    for i, img in enumerate(out):
        if img is None:
            out[i] = _decode_one(bufs[i], files[i][0])
    return _same_size(_same_channels(out), [n for n, _ in files], image_size)


def _same_channels(images: list[Tensor]) -> list[Tensor]:
    """All grayscale: unchanged ([1,H,W] each). Grayscale mixed with colour: all as 3 channels."""
    if any(img.shape[0] != 1 for img in images):
        return [img.expand(3, -1, -1) if img.shape[0] == 1 else img for img in images]
    return images


def _same_size(images: list[Tensor], names: list[str], image_size: int | None) -> Tensor:
    if image_size is not None:
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, img in enumerate(images):
            by_shape.setdefault(tuple(img.shape), []).append(i)
        for idx in by_shape.values():  # one batched resize per distinct input size
            for i, img in zip(idx, _resize(torch.stack([images[i] for i in idx]), image_size)):
                images[i] = img
        return torch.stack(images)
    first = images[0].shape
    for img, name in zip(images, names):
        if img.shape != first:
            raise DataError(
                f"images have different sizes ({first[2]}x{first[1]} in {names[0]}, "
                f"{img.shape[2]}x{img.shape[1]} in {name}); pass image_size (--image-size N) to resize them all"
            )
    return torch.stack(images)


def _check_image_size(image_size) -> None:
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise DataError(f"image size must be a positive number of pixels (--image-size N), got {image_size!r}")


def _resize(images: Tensor, image_size: int | None) -> Tensor:
    """Antialiased resize of uint8 [N,C,H,W] to [N,C,size,size] (non-square images are stretched, not cropped);
    a no-op if size is None or already met."""
    if image_size is None or images.shape[-2:] == (image_size, image_size):
        return images
    from torchvision.transforms.v2.functional import resize

    return resize(images, [image_size, image_size], antialias=True)


@dataclass(frozen=True)
class _Split:
    """One split before it is decoded: labels [N] and `rows(a, b)`, the uint8 [b-a,C,H,W] images of samples
    a..b-1 (C is 1 where those images are all grayscale, so it may differ between calls)."""

    labels: Tensor
    rows: Callable[[int, int], Tensor]
    names: Sequence[str] = ()  # the samples' file names, for error messages

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def name(self, i: int) -> str:
        return self.names[i] if i < len(self.names) else f"image {i}"


def _file_split(files: list[tuple[str, str, bytes | None]], classes: list[str], image_size, where: str) -> _Split:
    """(name, class, bytes) triples (bytes None: read from the path named when decoded) as a split whose
    `rows` decode only the files asked for; raises DataError if there are none."""
    if not files:
        raise DataError(f"no images found in {where}; expected image files (.jpg, .png, ...) in class folders")
    index = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([index[c] for _, c, _ in files], dtype=torch.int64)

    def rows(a: int, b: int) -> Tensor:
        return _decode([(n, _read_file(Path(n)) if data is None else data) for n, _, data in files[a:b]],
                       image_size, where)

    return _Split(labels, rows, [n for n, _, _ in files])


def _tensor_split(ds: LabelledImages) -> _Split:
    images = ds.data["image"]
    return _Split(ds.data["label"], lambda a, b: images[a:b])


def _decoded(split: _Split, classes) -> LabelledImages:
    """The whole split decoded in memory (one call: as one folder of images always decoded)."""
    return from_tensors(split.rows(0, len(split)), split.labels, classes)


# --------------------------------------------------------------------------- directories


def load_image_folder(root, image_size: int | None = None) -> LabelledImages:
    """Load an ImageFolder tree root/<class>/<image> (any number of classes = sorted folder names, images found
    recursively, hidden and non-image files skipped) as uint8 [N,1,H,W] if every image is grayscale, else
    [N,3,H,W] (grayscale images among colour ones are repeated to 3 channels). Images of different sizes need
    image_size, which resizes every image to image_size x image_size. Raises DataError if there are no images."""
    _check_image_size(image_size)
    root = Path(root)
    classes, files = _folder_files(root)
    return _decoded(_file_split(files, classes, image_size, str(root)), classes)


def _folder_files(root: Path) -> tuple[list[str], list[tuple[str, str, None]]]:
    """The class folders of an ImageFolder tree and its image files as (path, class, None), in load order."""
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a directory")
    classes = _class_dirs(root)
    files = []
    for c in classes:
        for dirpath, dirnames, filenames in os.walk(root / c):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files.extend((str(Path(dirpath) / f), c, None) for f in sorted(filenames) if _is_image_name(f))
    return classes, files


def _class_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path} ({_short(e)}); check its permissions or remove it") from None


def _find_cifar_dir(d: Path) -> Path | None:
    for cand in (d, d / CIFAR_DIR):
        if all((cand / f).is_file() for f in (*CIFAR_TRAIN, CIFAR_TEST, CIFAR_META)):
            return cand
    return None


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


Sources = tuple[list[str], dict[str, _Split]]  # the classes, and the splits "train" and "test" not yet decoded


def _directory_sources(d: Path, image_size) -> Sources:
    cifar = _find_cifar_dir(d)
    if cifar is not None:
        return _pickle_sources(_load_cifar_pickles(lambda name: _read_file(cifar / name), str(cifar), image_size))
    split_root = _find_split_root(d)
    if split_root is None:
        raise DataError(
            f"no images found in {d}: expected a {CIFAR_DIR} directory or an ImageFolder tree with train/ and "
            f"test/ class folders. {_HOW_TO_PROVIDE}"
        )
    (classes, train), (test_classes, test) = _folder_files(split_root / "train"), _folder_files(split_root / "test")
    _check_classes(classes, test_classes, str(split_root))
    return classes, {s: _file_split(files, classes, image_size, str(split_root / s))
                     for s, files in (("train", train), ("test", test))}


def _pickle_sources(splits: tuple[LabelledImages, LabelledImages]) -> Sources:
    return list(splits[0].classes), {"train": _tensor_split(splits[0]), "test": _tensor_split(splits[1])}


# --------------------------------------------------------------------------- CIFAR pickles


def _load_cifar_pickles(read, where: str, image_size) -> tuple[LabelledImages, LabelledImages]:
    """Load torchvision's pickled CIFAR-10 batches; `read(name)` returns the bytes of one file."""

    def unpickle(name):
        try:
            return pickle.loads(read(name), encoding="bytes")
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"cannot read {where}/{name} ({_short(e)}); remove or replace this file") from None

    def get(d, key):
        return d[key.encode()] if key.encode() in d else d[key]

    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in get(unpickle(CIFAR_META), "label_names")]

    def split(names):
        batches = [unpickle(n) for n in names]
        try:
            images = torch.cat([torch.as_tensor(get(b, "data")).reshape(-1, 3, 32, 32) for b in batches])
            labels = torch.cat([torch.as_tensor(get(b, "labels"), dtype=torch.int64) for b in batches])
        except Exception as e:
            raise DataError(f"CIFAR-10 batches in {where} are malformed ({_short(e)}); re-download them") from None
        return from_tensors(_resize(images.to(torch.uint8), image_size), labels, classes)

    return split(CIFAR_TRAIN), split([CIFAR_TEST])


# --------------------------------------------------------------------------- archives


def _archive_sources(path: Path, image_size) -> Sources:
    """Read a tar(.gz) in memory: pickled CIFAR-10 batches, or images under .../{train,test}/<class>/ (their
    encoded bytes are held; each is decoded when its rows are)."""
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                base = PurePosixPath(m.name).name
                if m.isfile() and (_is_image_name(m.name) or base in (*CIFAR_TRAIN, CIFAR_TEST, CIFAR_META)):
                    members[m.name] = tf.extractfile(m).read()
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        raise DataError(f"{path} is not a readable tar archive ({_short(e)}); re-download or re-create it") from None
    by_parent: dict[str, set[str]] = {}
    for name in members:
        p = PurePosixPath(name)
        by_parent.setdefault(str(p.parent), set()).add(p.name)
    for parent, names in sorted(by_parent.items()):
        if {*CIFAR_TRAIN, CIFAR_TEST, CIFAR_META} <= names:
            def read(name, parent=parent):
                return members[str(PurePosixPath(parent) / name)]

            return _pickle_sources(_load_cifar_pickles(read, f"{path}:{parent}", image_size))
    splits: dict[str, list[tuple[str, str, bytes]]] = {"train": [], "test": []}
    for name, data in sorted(members.items()):
        parts = PurePosixPath(name).parts
        # the last "train"/"test" component that is followed by <class>/<...>/<file>
        pos = [i for i, part in enumerate(parts[:-2]) if part in splits]
        if _is_image_name(name) and pos:
            i = pos[-1]
            splits[parts[i]].append((f"{path}:{name}", parts[i + 1], data))
    if not splits["train"] and not splits["test"]:
        raise DataError(
            f"no images found in archive {path}: expected {CIFAR_DIR} batches or images under train/<class>/ and "
            f"test/<class>/. {_HOW_TO_PROVIDE}"
        )
    train_classes = sorted({c for _, c, _ in splits["train"]})
    test_classes = sorted({c for _, c, _ in splits["test"]})
    _check_classes(train_classes, test_classes, str(path))
    return train_classes, {s: _file_split(splits[s], train_classes, image_size, f"{path} ({s}/)")
                           for s in ("train", "test")}


# --------------------------------------------------------------------------- cache

_CHUNK = 1024  # images decoded and written to the cache at a time: a killed decode loses at most one chunk's work
_PROGRESS = "progress.json"  # per split: {"n", "rows" done, "shape" [C,H,W], "file" of the images}


def _fingerprint(source: Path, image_size) -> str:
    """Cheap identity of a data source: absolute path, size and mtime (for a directory: its file count,
    total size and newest mtime), plus the load options."""
    st = source.stat()
    info = {"path": str(source.resolve()), "size": st.st_size, "mtime": st.st_mtime_ns, "image_size": image_size,
            "version": _CACHE_VERSION}
    if source.is_dir():
        count = total = 0
        newest = st.st_mtime_ns
        for dirpath, dirnames, filenames in os.walk(source):
            newest = max(newest, os.stat(dirpath).st_mtime_ns)
            for f in filenames:
                fst = os.stat(os.path.join(dirpath, f))
                count, total, newest = count + 1, total + fst.st_size, max(newest, fst.st_mtime_ns)
        info.update(count=count, total=total, newest=newest)
    return hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:20]


def _read_cache(folder: Path) -> tuple[LabelledImages, LabelledImages] | None:
    """The complete cache `folder` (it has classes.json) as memory-mapped sets, nothing copied; else None."""
    meta_path = folder / "classes.json"
    if not meta_path.is_file():
        return None
    try:
        classes = tuple(json.loads(meta_path.read_text())["classes"])
        progress = json.loads((folder / _PROGRESS).read_text())
        train, test = (_mapped(folder / s, progress[s]) for s in ("train", "test"))
        return LabelledImages(train, classes), LabelledImages(test, classes)
    except Exception as e:
        warnings.warn(f"ignoring unreadable data cache {folder} ({_short(e)}); delete it to rebuild", stacklevel=3)
        return None


def _mapped(folder: Path, entry: dict) -> TensorDict:
    n = entry["n"]
    images = MemoryMappedTensor.from_filename(folder / entry["file"], torch.uint8, torch.Size([n, *entry["shape"]]))
    labels = MemoryMappedTensor.from_filename(folder / "label.memmap", torch.int64, torch.Size([n]))
    return TensorDict({"image": images, "label": labels}, batch_size=[n])


def _write_cache(folder: Path, train: LabelledImages, test: LabelledImages) -> None:
    """Write decoded sets as the cache `folder` (as `_decode_into` does); warns and continues if it cannot."""
    _cached(folder, _pickle_sources((train, test)), str(folder))


def _cached(folder: Path, sources: Sources, where: str) -> tuple[LabelledImages, LabelledImages] | None:
    """`_decode_into`, or None with a warning if the cache cannot be written (e.g. a read-only folder)."""
    try:
        return _decode_into(folder, sources, where)
    except OSError as e:
        if not (folder / "classes.json").is_file():  # not merely lost a race to another writer
            warnings.warn(f"could not write data cache in {folder.parent} ({_short(e)}); continuing without it",
                          stacklevel=3)
        return None


def _decode_into(folder: Path, sources: Sources, where: str) -> tuple[LabelledImages, LabelledImages] | None:
    """Decode the splits `_CHUNK` images at a time into memory-mapped files of the hidden sibling
    `.{name}.partial/`, whose progress.json records the rows done (a killed decode resumes there), then rename it
    to `folder` with classes.json in it: a half-written cache is never read as complete. Locked per source."""
    classes, splits = sources
    partial = folder.with_name(f".{folder.name}.partial")
    partial.mkdir(parents=True, exist_ok=True)
    with _locked(partial / ".lock"):
        if (folder / "classes.json").is_file():  # another process completed it while this one waited
            _remove_empty(partial)
            return _read_cache(folder)
        progress = _progress(partial, splits)
        try:
            remaining = sum(e["n"] - e["rows"] for e in progress.values())
            with tqdm(total=remaining, unit="img", desc=f"decoding {where}", disable=remaining <= _CHUNK,
                      mininterval=2, leave=False) as bar:
                for name, split in splits.items():
                    _fill(partial, name, split, progress, bar)
            _same_channels_across(partial, progress)
            shapes = [progress[s]["shape"] for s in ("train", "test")]
            if shapes[0][1:] != shapes[1][1:]:
                raise DataError(f"train images are {shapes[0]} but test images are {shapes[1]} in {where}; "
                                "pass image_size (--image-size N) to resize both")
        except DataError:  # the source itself must change, and with it the fingerprint: this partial is dead
            shutil.rmtree(partial, ignore_errors=True)
            raise
        for name, entry in progress.items():  # images left behind by a grayscale split turned colour
            for f in (partial / name).iterdir():
                if f.name not in (entry["file"], "label.memmap"):
                    f.unlink()
        atomic_write_json(partial / "classes.json", {"classes": list(classes)})
        (partial / ".lock").unlink()
        os.replace(partial, folder)
    fsync_dir(folder.parent)
    return _read_cache(folder)


@contextmanager
def _locked(path: Path):
    """An exclusive lock on the file `path` (created), held while the block runs; waits for another holder."""
    with open(path, "a") as f:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            yield
            return
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            print(f"waiting for another process decoding into {path.parent} ...", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _remove_empty(partial: Path) -> None:
    with suppress(OSError):
        (partial / ".lock").unlink()
        partial.rmdir()


def _progress(partial: Path, splits: dict[str, _Split]) -> dict:
    """The decode's progress record: an interrupted decode's (partial/progress.json), else a new one, with the
    labels written."""
    path = partial / _PROGRESS
    with suppress(Exception):
        progress = json.loads(path.read_text())
        if {s: e["n"] for s, e in progress.items()} == {s: len(split) for s, split in splits.items()}:
            return progress
    progress = {}
    for name, split in splits.items():
        (partial / name).mkdir(exist_ok=True)
        split.labels.numpy().tofile(partial / name / "label.memmap")
        _fsync_file(partial / name / "label.memmap")
        progress[name] = {"n": len(split), "rows": 0, "shape": None, "file": None}
    atomic_write_json(path, progress)
    return progress


def _fill(partial: Path, name: str, split: _Split, progress: dict, bar) -> None:
    """Decode split `name`'s remaining rows chunk by chunk into its images file, recording each chunk done."""
    entry, folder = progress[name], partial / name
    images = _images_file(folder, entry) if entry["file"] else None
    while entry["rows"] < entry["n"]:
        a, b = entry["rows"], min(entry["n"], entry["rows"] + _CHUNK)
        chunk = split.rows(a, b)
        if images is None:
            entry.update(shape=list(chunk.shape[1:]), file="image.memmap")
            images = _images_file(folder, entry, create=True)
        channels, height, width = entry["shape"]
        if tuple(chunk.shape[2:]) != (height, width):
            raise DataError(
                f"images have different sizes ({width}x{height} in {split.name(0)}, {chunk.shape[3]}x{chunk.shape[2]} "
                f"in {split.name(a)}); pass image_size (--image-size N) to resize them all")
        if chunk.shape[1] != channels and channels == 1 and chunk.shape[1] == 3:
            images = _to_colour(folder, entry, images, a)
        elif chunk.shape[1] not in (1, channels):
            raise DataError(f"images have {channels} and {chunk.shape[1]} channels in {split.name(a)}; "
                            "pass images with the same channels")
        images[a:b] = chunk.expand(-1, images.shape[1], -1, -1)
        _fsync_file(folder / entry["file"])
        entry["rows"] = b
        atomic_write_json(partial / _PROGRESS, progress)
        bar.update(b - a)


def _images_file(folder: Path, entry: dict, create: bool = False) -> MemoryMappedTensor:
    shape = torch.Size([entry["n"], *entry["shape"]])
    if create:  # over one a killed decode left before recording it
        (folder / entry["file"]).unlink(missing_ok=True)
        return MemoryMappedTensor.empty(shape, dtype=torch.uint8, filename=folder / entry["file"])
    return MemoryMappedTensor.from_filename(folder / entry["file"], torch.uint8, shape)


def _to_colour(folder: Path, entry: dict, images: MemoryMappedTensor, rows: int) -> MemoryMappedTensor:
    """A new 3-channel images file holding the first `rows` grayscale images repeated (chunk by chunk); `entry`
    names it from the next progress record on (the old file stays valid until then)."""
    entry.update(shape=[3, *entry["shape"][1:]], file="image.rgb.memmap")
    colour = _images_file(folder, entry, create=True)
    for a in range(0, rows, _CHUNK):
        colour[a:min(rows, a + _CHUNK)] = images[a:min(rows, a + _CHUNK)].expand(-1, 3, -1, -1)
    _fsync_file(folder / entry["file"])
    return colour


def _same_channels_across(partial: Path, progress: dict) -> None:
    """A grayscale split next to a colour one is repeated to 3 channels (as `_as_colour`)."""
    if sorted(progress[s]["shape"][0] for s in ("train", "test")) == [1, 3]:
        name = "train" if progress["train"]["shape"][0] == 1 else "test"
        entry = progress[name]
        _to_colour(partial / name, entry, _images_file(partial / name, entry), entry["n"])
        atomic_write_json(partial / _PROGRESS, progress)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- entry point


def load_dataset(
    source: str | Path | None,
    *,
    root: str | Path = "./data",
    download: bool = True,
    image_size: int | None = None,
    cache: bool = True,
    data_in_memory: str = "auto",
) -> tuple[LabelledImages, LabelledImages]:
    """Return (train, test) from torchvision CIFAR-10 in `root` (source None), a directory, or a tar(.gz);
    path sources are decoded once into root/cache/<fingerprint>/ (the fingerprint includes image_size) and
    memory-mapped from there, or copied into memory as `placed(..., "cpu", data_in_memory)` says.
    ImageFolder images load as in `load_image_folder`; a grayscale split next to a colour one is repeated to 3
    channels. Every user-facing failure is a DataError."""
    _check_image_size(image_size)
    if data_in_memory not in DATA_IN_MEMORY:
        raise DataError(f"data in memory must be one of {', '.join(DATA_IN_MEMORY)} (--data-in-memory), "
                        f"got {data_in_memory!r}")
    if source is None:
        return _load_torchvision_cifar(Path(root), download, image_size)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"data path {path} does not exist; check the path. {_HOW_TO_PROVIDE}")
    if not path.is_dir() and not path.name.lower().endswith(ARCHIVE_SUFFIXES) and not tarfile.is_tarfile(path):
        raise DataError(f"data path {path} is neither a directory nor a .tar.gz/.tgz/.tar archive. {_HOW_TO_PROVIDE}")
    folder = Path(root) / "cache" / _fingerprint(path, image_size) if cache else None
    cached = _read_cache(folder) if folder is not None else None
    if cached is None:
        sources = _directory_sources(path, image_size) if path.is_dir() else _archive_sources(path, image_size)
        cached = _cached(folder, sources, str(path)) if folder is not None else None
        if cached is None:
            return _in_memory(sources, path)
    return placed(cached[0], "cpu", data_in_memory), placed(cached[1], "cpu", data_in_memory)


def _in_memory(sources: Sources, where) -> tuple[LabelledImages, LabelledImages]:
    classes, splits = sources
    train, test = _decoded(splits["train"], classes), _decoded(splits["test"], classes)
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


def _load_torchvision_cifar(root: Path, download: bool, image_size) -> tuple[LabelledImages, LabelledImages]:
    from torchvision.datasets import CIFAR10

    try:
        splits = [CIFAR10(str(root), train=t, download=download) for t in (True, False)]
    except Exception as e:
        reason = _short(e) if download else "download=False"
        raise DataError(
            f"CIFAR-10 not found in {root} and it could not be downloaded ({reason}). {_HOW_TO_PROVIDE}"
        ) from None
    out = []
    for ds in splits:
        images = _resize(torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), image_size)
        out.append(from_tensors(images, torch.tensor(ds.targets), ds.classes))
    return out[0], out[1]


