"""Atomic writes: a reader, or a run resumed after a crash, sees the previous complete file or the new one, never half.

Each helper writes a hidden temporary sibling `.{name}.tmp-{pid}`, flushes and fsyncs it, `os.replace`s it
onto the target, then fsyncs the folder (best effort); on failure the temporary is removed and the error raised.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_save", "atomic_dir",
           "recovered_dir", "remove_dir", "temp_path", "fsync_dir", "portable_path", "default_data_root"]


def default_data_root() -> Path:
    """Where data is downloaded and decoded caches are kept unless a root is given: $FUNCTIONAL_AST_DATA, else
    $XDG_CACHE_HOME/functional_ast, else ~/.cache/functional_ast (never the working directory)."""
    given = os.environ.get("FUNCTIONAL_AST_DATA")
    if given:
        return Path(given).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "functional_ast"


def temp_path(path: str | Path) -> Path:
    """The hidden temporary sibling this process writes before renaming onto `path`."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def fsync_dir(directory: str | Path) -> None:
    """Flush a folder's entries (a rename) to disk; best effort: a no-op where folders cannot be opened."""
    _fsync_path(directory)


def _fsync_path(path: str | Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: str | Path, write: Callable[[BinaryIO], Any], fsync: bool) -> Path:
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = True) -> Path:
    """Write `data` to `path` atomically (the folder must exist); returns `path`."""
    return _atomic_write(path, lambda f: f.write(data), fsync)


def atomic_write_text(path: str | Path, text: str, *, fsync: bool = True) -> Path:
    """Write `text` as UTF-8 to `path` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def atomic_write_json(path: str | Path, obj: Any, *, fsync: bool = True) -> Path:
    """Write `obj` as JSON (indent=1, unknown types via str) to `path` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=1, default=str), fsync=fsync)


def atomic_save(path: str | Path, obj: Any, *, fsync: bool = True) -> Path:
    """`torch.save(obj)` to `path` atomically."""
    import torch

    return _atomic_write(path, lambda f: torch.save(obj, f), fsync)


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, replace: bool = False, fsync: bool = True) -> Iterator[Path]:
    """Build a folder atomically: fill the yielded hidden temporary sibling `.{name}.tmp-{pid}`; when the block
    succeeds its files are fsynced and it is renamed to `path`, else it is removed and the error raised.

    An existing non-empty `path` makes the rename fail (OSError: another writer won) unless `replace=True`,
    which first renames it aside to `.{name}.old-{pid}`, deleted once the new folder is in place: a crash between
    the two renames leaves no `path` but that whole copy, which `recovered_dir(path)` puts back.
    """
    path = Path(path)
    tmp, old, moved = temp_path(path), _aside(path, "old"), False
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed process that had this pid
    try:
        tmp.mkdir(parents=True)
        yield tmp
        if fsync:
            for file in sorted(p for p in tmp.rglob("*") if p.is_file()):
                _fsync_path(file)
        if replace and path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            moved = True
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if moved and not path.exists():
            os.replace(old, path)
        raise
    if moved:
        shutil.rmtree(old, ignore_errors=True)
    if fsync:
        fsync_dir(path.parent)


def _aside(path: Path, why: str, pid: int | str | None = None) -> Path:
    """The hidden sibling `.{name}.{why}-{pid}` a folder is renamed to before it is replaced or deleted."""
    return path.with_name(f".{path.name}.{why}-{os.getpid() if pid is None else pid}")


def recovered_dir(path: str | Path) -> Path:
    """`path`, put back from the copy `atomic_dir(replace=True)` renamed aside when a crash came before the new
    folder took its place; copies aside of a `path` that is in place are stale and deleted."""
    path = Path(path)
    copies = sorted(path.parent.glob(_aside(path, "old", "*").name), key=lambda p: p.stat().st_mtime)
    if copies and not path.exists():
        os.replace(copies.pop(), path)
    for stale in copies:
        shutil.rmtree(stale, ignore_errors=True)
    return path


def remove_dir(path: str | Path) -> None:
    """Delete the folder `path` so that a crash leaves it whole or gone (it is renamed to a hidden sibling before
    its files are deleted), and what `atomic_dir` left beside it: copies aside (first, so none is taken back) and
    the temporaries of killed writers (no other process may be writing `path`)."""
    path = Path(path)
    for stale in path.parent.glob(_aside(path, "old", "*").name):
        shutil.rmtree(stale, ignore_errors=True)
    doomed = _aside(path, "deleted")
    shutil.rmtree(doomed, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, doomed)
    for left in path.parent.glob(f".{path.name}.*-*"):
        shutil.rmtree(left, ignore_errors=True)


def portable_path(path: str | Path, root: str | Path | None = None) -> str:
    """A path as a param may hold it: relative to `root` when inside it, else as given when relative, else
    relative to the working directory when inside it, else its last two parts after ".../" (never a whole path
    of this machine)."""
    given, path = str(path), Path(path)
    if root is not None:
        try:
            return path.resolve().relative_to(Path(root).resolve()).as_posix() or "."
        except ValueError:
            pass
    if not path.is_absolute():
        return given
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix() or "."
    except ValueError:
        return ".../" + "/".join(path.parts[-2:])
