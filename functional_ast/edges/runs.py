"""Run folders and resume compatibility.

A run keeps its checkpoints, `run.json` (the settings that decide its results, its MLflow run id) and, once
finished, `result.json` in `<root>/<name>/<stamp>-<pid>/` (a comparison: one sub-folder per entry and seed). A
resume takes the newest folder of the name and continues only under the same settings; a comparison may add
seeds, not drop them. A finished run needs only its .json files to be read back (on another machine too).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from functional_ast import io
from functional_ast.core import distributed
from functional_ast.edges import checkpoint, store
from functional_ast.train.base import Result, Summary
from functional_ast.train.config import ConfigError
from functional_ast.train.history import History

# Settings added after runs may have started: a run.json without one ran as this value would now.
BEFORE_THEY_EXISTED = {"memory_format": "contiguous", "precision": "32", "label_smoothing": 0.0, "classes": None,
                       "imbalance": 1.0, "duplicates": 0.0, "init_from": None, "junk": 0.0, "budget_kind": "time"}


def checkpoint_root(tracking_uri: str, experiment: str, checkpoint_dir: str | Path | None = None) -> Path:
    """`checkpoint_dir`, or checkpoints/<experiment> beside the run store (./mlruns by default)."""
    if checkpoint_dir:
        return Path(checkpoint_dir)
    return store.store_dir(tracking_uri) / "checkpoints" / experiment


def run_folder(root: Path, name: str, resume: bool = False,
               collective: distributed.Collective = distributed.LOCAL) -> tuple[Path, bool]:
    """(folder, resuming): the newest run folder of `name` under `root` when resuming, else a new one (checked
    writable). Under torch.distributed rank 0 decides and every rank gets its answer (or its error)."""
    if collective.world > 1:
        answer = None
        if collective.is_main:
            try:
                answer = _run_folder(root, name, resume)
            except ConfigError as error:
                answer = str(error)
        answer = distributed.broadcast_object(answer, collective)
        if isinstance(answer, str):
            raise ConfigError(answer)
        return answer
    return _run_folder(root, name, resume)


def _run_folder(root: Path, name: str, resume: bool) -> tuple[Path, bool]:
    base = Path(root) / name
    if resume:
        found = [f.parent for f in base.glob("*/run.json")] if base.is_dir() else []
        if not found:
            raise ConfigError(f"--resume: no run named {name!r} to resume under {base}; run the same command "
                              "without --resume to start it (or pass the --checkpoint-dir it used)")
        return max(found, key=lambda f: ((f / "run.json").stat().st_mtime, f.name)), True
    folder = base / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"cannot write checkpoints to {folder} ({error.strerror or error}); pass a writable "
                          "--checkpoint-dir (or a writable --tracking-uri location)") from None
    return folder, False


def check_can_start(root: Path, name: str, resume: bool) -> None:
    """Before any data is read: with `resume`, a run of `name` to resume exists under `root`; without, `root` can be
    written. ConfigError (one line) otherwise; nothing is left behind."""
    if resume:
        _run_folder(root, name, True)
        return
    root = Path(root)
    made = [p for p in (root, *root.parents) if not p.exists()]
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"cannot write checkpoints to {root} ({error.strerror or error}); pass a writable "
                          "--checkpoint-dir (or a writable --tracking-uri location)") from None
    finally:
        for folder in made:  # the folders this check made, deepest first, if still empty
            try:
                folder.rmdir()
            except OSError:
                pass


def seed_folder(folder: Path, label: str, seed: int, seeded: bool) -> Path:
    """A compared run's folder: <label>-seed<N> when the comparison names its seeds, else <label> (also for a
    comparison that started with one seed before folders always named their seed)."""
    if not seeded:
        return folder / label
    older = folder / label
    if not (folder / f"{label}-seed{seed}").exists() and (older / "run.json").is_file():
        if json.loads((older / "run.json").read_text())["config"].get("seed") == seed:
            return older
    return folder / f"{label}-seed{seed}"


def _adds_seeds(then: str | None, now: str | None) -> bool:
    """Whether a seeds list (as run.json keeps it, "0,1") keeps every seed it had and adds some."""
    if not then or not now:
        return False
    return set(then.split(",")) < set(now.split(","))


def _as_then(saved: dict, now: dict) -> dict:
    """`saved` settings with the flags added since filled in as the run ran before they existed
    (`BEFORE_THEY_EXISTED`), in a comparison's configs too."""
    def filled(then: dict, current: dict) -> dict:
        return {k: v for k, v in BEFORE_THEY_EXISTED.items() if k in current} | then

    then = filled(saved, now)
    if isinstance(then.get("configs"), dict) and isinstance(now.get("configs"), dict):
        then["configs"] = {spec: filled(c, now["configs"].get(spec, {})) if isinstance(c, dict) else c
                           for spec, c in then["configs"].items()}
    return then


def _changes(then, now, path: str) -> list[tuple[str, object, object]]:
    """Where two settings differ, leaf by leaf: (dotted path, then, now); dicts are compared key by key, so a
    comparison's configs name the one field that changed, not the whole of every config."""
    if isinstance(then, dict) and isinstance(now, dict):
        return [change for k in sorted(set(then) | set(now), key=str)
                for change in _changes(then.get(k), now.get(k), f"{path}.{k}")]
    return [] if then == now else [(path, then, now)]


def read_run_info(folder: Path, config: dict) -> dict | None:
    """run.json of a folder being resumed (None if absent); refuses a different result-deciding `config`. A
    comparison may add seeds (its finished runs keep theirs): seeds "0" resumes as "0,1,2"."""
    path = Path(folder) / "run.json"
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    old = _as_then(info["config"], config)
    differ = [k for k in sorted(set(old) | set(config)) if old.get(k) != config.get(k)
              and not (k == "seeds" and _adds_seeds(old.get(k), config.get(k)))]
    if differ:
        changes = [change for k in differ for change in _changes(old.get(k), config.get(k), k)]
        diffs = "; ".join(f"{path}: {then!r} then, {now!r} now" for path, then, now in changes)
        flags = " ".join(dict.fromkeys(f"--{leaf.replace('_', '-')} {then}" for leaf, then in (
            (path.rsplit(".", 1)[-1], then) for path, then, _ in changes)
            if isinstance(then, str) and leaf in BEFORE_THEY_EXISTED))
        seeds = "; --seeds may add seeds, not drop them" if "seeds" in differ else ""
        raise ConfigError(f"--resume: the run in {folder} was started with other settings ({diffs}); "
                          f"resume with the original flags{f' ({flags})' if flags else ''}{seeds}, or drop "
                          "--resume to start a new run")
    return info


def write_run_info(folder: Path, config: dict, run_id: str | None, run_name: str, **extra) -> None:
    """Write run.json: the result-deciding `config` a resume compares, the MLflow run id and name, `extra`."""
    io.atomic_write_json(Path(folder) / "run.json", dict(config=config, run_id=run_id, run_name=run_name, **extra))


def new_run_info(folder: Path, config: dict, run_name: str, **extra) -> dict:
    """Write a new run's run.json before its MLflow run exists: no run id yet and a new `run_key`, the tag the
    tracker gives that run, so that a resume finds both however early the run was killed. Returns what it wrote."""
    key = uuid.uuid4().hex
    write_run_info(folder, config, None, run_name, run_key=key, **extra)
    return dict(config=config, run_id=None, run_name=run_name, run_key=key, **extra)


def finished_result(folder: Path, task=None) -> Result | None:
    """The Result a finished run of `task` left in `folder` (result.json), or None."""
    path = Path(folder) / "result.json"
    if not path.is_file():
        return None
    done = json.loads(path.read_text())
    return Result(Summary.from_dict(done["summary"], task), History.from_json(done["history"]))


def resume_state(folder: Path, info: dict | None, device):
    """The state of the newest readable checkpoint of a run being resumed (`info`: its run.json), or None to start
    afresh; newer unreadable ones (truncated, not checkpoints) are passed over, and said so in the one line."""
    found = checkpoint.list_checkpoints(folder) if info else []
    for newer, path in enumerate(reversed(found)):
        try:
            state, _ = checkpoint.load(path, device=device)
        except checkpoint.CheckpointError:
            if newer == len(found) - 1:
                raise checkpoint.CheckpointError(f"no checkpoint in {folder} is readable (truncated, or not "
                                                 "checkpoints); delete them to start the run over") from None
            continue
        passed = ", ".join(p.name for p in found[len(found) - newer:])
        print(f"resuming from {path}" + (f" (passed over the unreadable {passed})" if passed else ""), flush=True)
        return state
    return None
