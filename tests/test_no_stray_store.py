"""Nothing that uses MLflow leaves a store (./mlflow.db, ./mlruns) in the working directory it was not told of.

MLflow 3 opens `sqlite:///mlflow.db` in the current directory when no tracking URI is set. Logging a model
has to point MLflow's global URI at the run's store for the call; it must then leave the process exactly as it
found it, or the user's next MLflow call (say `mlflow.pytorch.load_model(model_uri)`) opens a stray store.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import mlflow
import mlflow.pytorch
import pytest
import torch
from conftest import REPO
from mlflow.exceptions import MlflowException
from mlflow.tracking._tracking_service import utils as mlflow_state
from tensordict import TensorDict
from test_cli import _image_folder
from torch import nn

from functional_ast.cli import tracking as tracking_cli
from functional_ast.edges import tracking

UNREACHABLE = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the module (creating its tables costs seconds); tests use their own experiments."""
    return f"sqlite:///{tmp_path_factory.mktemp('store')}/mlruns/mlflow.db"


@pytest.fixture
def place(tmp_path, monkeypatch, store):
    """An empty working directory, MLflow's global URI unset, and the store somewhere else."""
    monkeypatch.setattr(mlflow_state, "_tracking_uri", None, raising=False)  # put back after the test
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd, store


def _log_a_model(uri: str, experiment: str) -> str:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    params = TensorDict({n: p.detach() for n, p in model.named_parameters()})
    with tracking.RunTracker(uri, experiment) as tracker:
        model_uri = tracker.log_model(model, params, TensorDict({}), torch.randn(2, 3, 2, 2))
    assert model_uri is not None
    return model_uri


def test_logging_a_model_keeps_the_users_tracking_uri(place, monkeypatch):
    """A user who points MLflow at a store with MLFLOW_TRACKING_URI logs a model through the tracker, then
    loads it as the docs say: it comes from that store, and no ./mlflow.db appears."""
    cwd, uri = place
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    model_uri = _log_a_model(uri, "user-variable")
    try:
        loaded = mlflow.pytorch.load_model(model_uri)
    except MlflowException as error:  # the model is not in the store MLflow went to
        loaded = error
    assert sorted(p.name for p in cwd.iterdir()) == [], f"a stray store; load_model: {loaded!r}"
    assert isinstance(loaded, nn.Module) and os.environ.get("MLFLOW_TRACKING_URI") == uri


@pytest.mark.parametrize("helper", ["present", "gone"])
def test_logging_a_model_leaves_an_unset_tracking_uri_unset(place, monkeypatch, helper):
    """Nothing set before: nothing set after (not the default ./mlflow.db pinned for the rest of the process and
    exported to its children), whether or not this MLflow has its private helper for a temporary URI."""
    cwd, uri = place
    if helper == "gone":  # MLflow's private _use_tracking_uri
        monkeypatch.delattr(mlflow_state, "_use_tracking_uri", raising=False)
    _log_a_model(uri, f"unset-{helper}")
    assert getattr(mlflow_state, "_tracking_uri", None) is None and "MLFLOW_TRACKING_URI" not in os.environ
    mlflow.set_tracking_uri(uri)  # as the docs say, to load from this store
    assert mlflow.search_experiments(filter_string=f"name = 'unset-{helper}'")
    assert sorted(p.name for p in cwd.iterdir()) == []


def test_a_global_tracking_uri_is_restored(place, tmp_path):
    cwd, uri = place
    mine = f"sqlite:///{tmp_path}/mine/mlflow.db"
    mlflow.set_tracking_uri(mine)
    _log_a_model(uri, "global")
    assert mlflow.get_tracking_uri() == mine and os.environ.get("MLFLOW_TRACKING_URI") == mine
    assert sorted(p.name for p in cwd.iterdir()) == []


def test_the_command_line_and_the_replay_write_only_where_they_are_told(place, tmp_path):
    cwd, uri = place
    images = _image_folder(tmp_path / "images", per_class_train=8, per_class_test=2)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-m", "functional_ast", "--data", str(images), "--epochs", "1",
                          "--warmup-epochs", "1", "--batch-size", "16", "--data-root", str(tmp_path / "cache"),
                          "--tracking-uri", uri, "--no-progress"],
                         cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(p.name for p in cwd.iterdir()) == []

    # Tracking data saved while the store was down, then uploaded with the replay command (in this process:
    # a second interpreter would cost seconds more).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tracking.RunTracker(UNREACHABLE, "no-stray-replay", fallback_dir=tmp_path / "unsent") as tracker:
            tracker.log_metrics({"loss": 1.0}, step=0)
    folder = tmp_path / "unsent" / "tracking-unsent"
    assert folder.is_dir()
    assert tracking_cli.main(["replay", str(folder), "--tracking-uri", uri]) == 0
    assert not folder.exists()  # uploaded
    assert sorted(p.name for p in cwd.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "cwd", "images", "unsent"]
