"""The decoded cache: splits decoded chunk by chunk into uint8 memory-mapped files under a fingerprint of the
source, resumable after a kill, locked per source, and read back mapped (nothing copied)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import warnings
from contextlib import contextmanager, suppress
from pathlib import Path

import torch
from tensordict import MemoryMappedTensor, TensorDict
from tqdm import tqdm

from functional_ast.data.errors import DataError, one_line
from functional_ast.data.labelled import LabelledImages
from functional_ast.data.splits import Sources, Split, tensor_sources
from functional_ast.io import atomic_write_json, fsync_dir

_CACHE_VERSION = 3  # 2: grayscale images decode to 1 channel; 3: raw memory-mapped files, decoded in chunks
_CHUNK = 1024  # images decoded and written to the cache at a time: a killed decode loses at most one chunk's work
_PROGRESS = "progress.json"  # per split: {"n", "rows" done, "shape" [C,H,W], "file" of the images}


def fingerprint(source: Path, image_size) -> str:
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


def read_cache(folder: Path) -> tuple[LabelledImages, LabelledImages] | None:
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
        warnings.warn(f"ignoring unreadable data cache {folder} ({one_line(e)}); delete it to rebuild", stacklevel=3)
        return None


def _mapped(folder: Path, entry: dict) -> TensorDict:
    n = entry["n"]
    images = MemoryMappedTensor.from_filename(folder / entry["file"], torch.uint8, torch.Size([n, *entry["shape"]]))
    labels = MemoryMappedTensor.from_filename(folder / "label.memmap", torch.int64, torch.Size([n]))
    return TensorDict({"image": images, "label": labels}, batch_size=[n])


def _write_cache(folder: Path, train: LabelledImages, test: LabelledImages) -> None:
    """Write decoded sets as the cache `folder` (as `_decode_into` does); warns and continues if it cannot."""
    cached(folder, tensor_sources((train, test)), str(folder))


def cached(folder: Path, sources: Sources, where: str) -> tuple[LabelledImages, LabelledImages] | None:
    """`_decode_into`, or None with a warning if the cache cannot be written (e.g. a read-only folder)."""
    try:
        return _decode_into(folder, sources, where)
    except OSError as e:
        if not (folder / "classes.json").is_file():  # not merely lost a race to another writer
            warnings.warn(f"could not write data cache in {folder.parent} ({one_line(e)}); continuing without it",
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
            return read_cache(folder)
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
    return read_cache(folder)


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


def _progress(partial: Path, splits: dict[str, Split]) -> dict:
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


def _fill(partial: Path, name: str, split: Split, progress: dict, bar) -> None:
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
    """A grayscale split next to a colour one is repeated to 3 channels (as `splits.in_memory` does)."""
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
