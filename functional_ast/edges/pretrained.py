"""Start from a saved model (fine-tuning): `starting_from(build, source)` is `build` with the saved parameters and
buffers loaded wherever a name and shape match; the rest (a new classifier head) keeps its fresh initialisation.

`source` is a checkpoint of this framework (a `step-*.pt` file, or a folder: its newest checkpoint, searched in
its run folders too), a file saved with `torch.save` (a state dict, or an nn.Module), or an MLflow model URI
(`runs:/<id>/model`, `models:/<name>/<version>`; the logged model's normalisation wrapper is looked through).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

import torch
from torch import nn

from functional_ast.core.checks import ConfigError
from functional_ast.edges import checkpoint

_WRAPPER = "network."  # the logged image model's prefix (`model_export.RawImageClassifier.network`)


def _newest_checkpoint(folder: Path) -> Path | None:
    found = checkpoint.list_checkpoints(folder) or sorted(
        (p for p in folder.rglob("step-*.pt") if p.is_file()), key=lambda p: (p.stat().st_mtime, p.name))
    return found[-1] if found else None


def _from_module_or_dict(loaded, what: str) -> dict[str, torch.Tensor]:
    if isinstance(loaded, nn.Module):
        return dict(loaded.state_dict())
    if isinstance(loaded, dict) and loaded and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        return dict(loaded)
    raise ConfigError(f"--init-from {what}: holds a {type(loaded).__name__}, not a model, a state dict or a "
                      "functional_ast checkpoint")


def saved_tensors(source: str | Path) -> dict[str, torch.Tensor]:
    """The named parameters and buffers (on the CPU) saved at `source` (see the module); ConfigError, one line,
    when it cannot be read."""
    text = str(source)
    if text.startswith(("runs:/", "models:/")):
        import mlflow

        try:
            model = mlflow.pytorch.load_model(text, map_location="cpu")
        except Exception as error:  # mlflow raises several types for an unknown run, model or store
            raise ConfigError(f"--init-from {text}: cannot load the MLflow model ({type(error).__name__}); check "
                              "the URI and MLFLOW_TRACKING_URI") from None
        tensors = _from_module_or_dict(model, text)
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            found = _newest_checkpoint(path)
            if found is None:
                raise ConfigError(f"--init-from {path}: no checkpoint (step-*.pt) in this folder; give a checkpoint, "
                                  "a saved state dict or an MLflow model URI")
            path = found
        if not path.is_file():
            raise ConfigError(f"--init-from {path}: no such file or folder; give a checkpoint, a saved state dict "
                              "or an MLflow model URI (runs:/ID/model)")
        try:
            state, _ = checkpoint.load(path)
            return {k: v for part in ("params", "buffers") for k, v in state[part].items()}
        except checkpoint.CheckpointError:
            pass
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:  # torch raises several types for foreign files
            raise ConfigError(f"--init-from {path}: unreadable ({type(error).__name__}); give a checkpoint, a file "
                              "saved with torch.save or an MLflow model URI") from None
        tensors = _from_module_or_dict(loaded, str(path))
    if tensors and all(k.startswith(_WRAPPER) or k in ("mean", "std") for k in tensors):
        tensors = {k[len(_WRAPPER):]: v for k, v in tensors.items() if k.startswith(_WRAPPER)}
    return tensors


class Loaded(NamedTuple):
    """What `load_matching` did: the names loaded, and each name kept fresh with why."""

    loaded: tuple[str, ...]
    fresh: tuple[tuple[str, str], ...]

    def describe(self, source: str) -> str:
        kept = "; kept fresh: " + ", ".join(f"{n} ({why})" for n, why in self.fresh) if self.fresh else ""
        return f"init from {source}: loaded {len(self.loaded)} of {len(self.loaded) + len(self.fresh)} tensors{kept}"


def load_matching(model: nn.Module, tensors: dict[str, torch.Tensor], source: str = "the saved model") -> Loaded:
    """Copy `tensors` into `model`'s parameters and buffers of the same name and shape (in place, under no_grad);
    ConfigError when none matches (a different architecture)."""
    own = dict(model.named_parameters()) | dict(model.named_buffers())
    loaded, fresh = [], []
    with torch.no_grad():
        for name, target in own.items():
            saved = tensors.get(name)
            if saved is None:
                fresh.append((name, "not saved"))
            elif saved.shape != target.shape:
                fresh.append((name, f"saved {list(saved.shape)}, model {list(target.shape)}"))
            else:
                target.copy_(saved.to(target.dtype))
                loaded.append(name)
    if not loaded:
        raise ConfigError(f"--init-from {source}: none of its {len(tensors)} tensors matches the model's names and "
                          "shapes; start from a model of the same architecture")
    return Loaded(tuple(loaded), tuple(fresh))


def starting_from(build: Callable[[], nn.Module], source: str | Path,
                  announce: Callable[[str], None] | None = print) -> Callable[[], nn.Module]:
    """`build` whose models start from the tensors saved at `source` (read once, now: a bad source fails here);
    what was loaded is announced once."""
    tensors = saved_tensors(source)
    told = []

    def build_pretrained() -> nn.Module:
        model = build()
        loaded = load_matching(model, tensors, str(source))
        if announce and not told:
            announce(loaded.describe(str(source)))
            told.append(True)
        return model

    build_pretrained()  # a shape mismatch everywhere fails before any training
    return build_pretrained
