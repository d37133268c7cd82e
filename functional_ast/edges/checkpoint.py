"""Checkpoints: the whole training state (one TensorDict) plus a JSON record, written atomically.

A checkpoint is one file `step-000001234.pt` holding every leaf of the state by its
key path, the batch size of every nested TensorDict, and `meta` (a JSON string: the
config, the run id, the loop's position and history). It is written to a hidden
temporary file, flushed to disk, then renamed: a reader (or a resume after SIGKILL)
sees either the previous complete checkpoint or the new complete one, never half of
one. `save` keeps the newest `keep` checkpoints of a directory and deletes older ones. A resume that finds the
newest unreadable (a disk that lost it) takes the one before (`edges.runs.resume_state`).
Files load with `torch.load(weights_only=True)`: nothing in them is executed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict

from functional_ast.core.state import StateError, check_compatible  # noqa: F401 (re-exported)
from functional_ast.io import atomic_save, temp_path

FORMAT = 1
_SEP = "/"  # key paths are joined with "/" (parameter names contain dots, never slashes)
_PATTERN = "step-*.pt"
_TEMPORARY = ".step-*.pt.tmp-*"  # `io.temp_path` of a checkpoint: a writer's, or one a killed writer left


CheckpointError = StateError  # a checkpoint cannot be written, read or used; the message names the file and the fix


def unwritable(path: Path, error: OSError) -> CheckpointError:
    """The error of a checkpoint file that could not be written (a full disk): the ones before it are intact."""
    return CheckpointError(f"cannot write checkpoint file {path}: {error.strerror or error}; free space there (or "
                           "make it writable) and run the same command with --resume: the checkpoints before it "
                           "are intact")


def _flatten(state: TensorDict) -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
    leaves, sizes = {}, {"": list(state.batch_size)}
    for key, value in state.items(include_nested=True):
        path = _SEP.join((key,) if isinstance(key, str) else key)
        if any(_SEP in part for part in ((key,) if isinstance(key, str) else key)):
            raise CheckpointError(f"state key {key!r} contains {_SEP!r}, which checkpoints use as a separator")
        if isinstance(value, TensorDict):
            sizes[path] = list(value.batch_size)
        else:
            leaves[path] = value.detach().to("cpu")
    return leaves, sizes


def _unflatten(leaves: dict[str, torch.Tensor], sizes: dict[str, list[int]], device) -> TensorDict:
    tree: dict = {}
    for path, value in leaves.items():
        node = tree
        *parents, name = path.split(_SEP)
        for part in parents:
            node = node.setdefault(part, {})
        node[name] = value.to(device) if device is not None else value

    def build(node: dict, path: str) -> TensorDict:
        fields = {k: build(v, f"{path}{_SEP}{k}" if path else k) if isinstance(v, dict) else v
                  for k, v in node.items()}
        return TensorDict(fields, batch_size=sizes.get(path, []), device=device)

    # Empty nested TensorDicts (e.g. a stateless optimiser transform) have no leaves: recreate them.
    for path in sorted(sizes, key=lambda p: p.count(_SEP)):
        if path:
            node = tree
            for part in path.split(_SEP):
                node = node.setdefault(part, {})
    return build(tree, "")


def path_for(directory: str | Path, step: int) -> Path:
    return Path(directory) / f"step-{int(step):09d}.pt"


def save(directory: str | Path, state: TensorDict, meta: dict[str, Any], keep: int = 3) -> Path:
    """Write `state` and `meta` atomically as `directory/step-<step>.pt`; keep the newest `keep` up to it. Newer
    ones (a resume passed them over as unreadable, or went back before them) and the temporary files of killed
    writers are deleted."""
    directory = Path(directory)
    if keep < 1:
        raise CheckpointError(f"keep must be >= 1, got {keep}")
    final = path_for(directory, int(state["step"]))
    try:
        directory.mkdir(parents=True, exist_ok=True)
        leaves, sizes = _flatten(state)
        payload = {"format": FORMAT, "leaves": leaves, "batch_sizes": sizes,
                   "meta": json.dumps(meta, default=str)}
        atomic_save(final, payload)  # via the hidden `.step-*.pt.tmp-<pid>`, which list_checkpoints never sees
    except OSError as error:
        raise unwritable(final, error) from None
    found = list_checkpoints(directory)
    before = [p for p in found if p.name <= final.name]  # names sort by step
    for old in before[:-keep] + [p for p in found if p.name > final.name]:
        old.unlink(missing_ok=True)
    for stale in directory.glob(_TEMPORARY):
        if stale != temp_path(final):
            stale.unlink(missing_ok=True)
    return final


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Complete checkpoints of `directory`, oldest first (temporary files are never listed)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(directory.glob(_PATTERN))


def latest(directory: str | Path) -> Path | None:
    """The newest complete checkpoint of `directory`, or None."""
    found = list_checkpoints(directory)
    return found[-1] if found else None


def load(path: str | Path, device: torch.device | str | None = None) -> tuple[TensorDict, dict[str, Any]]:
    """(state, meta) from a checkpoint file, the state's tensors on `device`."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(error).__name__}); delete it to resume "
                              "from the previous one") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a functional_ast checkpoint (format {FORMAT})")
    state = _unflatten(payload["leaves"], payload["batch_sizes"], device)
    return state, json.loads(payload["meta"])
