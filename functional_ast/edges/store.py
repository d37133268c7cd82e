"""Where runs are stored and how to browse them: the default sqlite store under ./mlruns, its artifacts folder, the
`mlflow ui` command and the address that opens an experiment's training runs, and MLflow's global tracking URI
pointed at a store for one call."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DEFAULT_STORE_DIR = Path("mlruns")
DEFAULT_TRACKING_URI = f"sqlite:///{DEFAULT_STORE_DIR.as_posix()}/mlflow.db"
UI_PORT = 5000  # `mlflow ui`'s default


def browse_url(experiment_id: str | None = None, port: int = UI_PORT, host: str = "127.0.0.1",
               server: str | None = None) -> str:
    """The address of an experiment's training runs in `mlflow ui` (the experiments list without an id), in the
    "Model training" view whatever the browser's GenAI/Model training switch says. `server`: a tracking server's
    own address (http[s]://...), else `mlflow ui` on host:port."""
    page = f"experiments/{experiment_id}/runs" if experiment_id is not None else "experiments"
    base = server.rstrip("/") if server else f"http://{host}:{port}"
    return f"{base}/#/{page}?workflowType=machine_learning"


def ui_command(tracking_uri: str = DEFAULT_TRACKING_URI, experiment_id: str | None = None) -> str:
    """What opens this store's runs: the `mlflow ui` command and the address to open then (the experiment's
    training runs when `experiment_id` is given); for a tracking server, its address alone."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {browse_url(experiment_id, server=tracking_uri)}"
    return f"mlflow ui --backend-store-uri {tracking_uri} and open {browse_url(experiment_id)}"


def store_dir(tracking_uri: str) -> Path:
    """Local directory of the run store: the sqlite file's folder, else ./mlruns."""
    prefix = "sqlite:///"
    return Path(tracking_uri[len(prefix):]).parent if tracking_uri.startswith(prefix) else DEFAULT_STORE_DIR


def artifact_location(tracking_uri: str) -> str | None:
    """For an sqlite store, artifacts go in `artifacts/` beside the database file; else MLflow's default."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return (store_dir(tracking_uri) / "artifacts").resolve().as_uri()


@contextlib.contextmanager
def using_tracking_uri(uri: str):
    """MLflow's model logging reads the global tracking URI: point it at this store for the call only, then put
    back exactly what was there, the process's URI and the MLFLOW_TRACKING_URI variable. (MLflow's own
    `_use_tracking_uri` deletes that variable, and `get_tracking_uri()` answers `sqlite:///<cwd>/mlflow.db` when
    nothing is set: restoring either way sends the process's next MLflow call to a stray ./mlflow.db.)"""
    import mlflow
    from mlflow.tracking._tracking_service import utils as state

    previous, variable = getattr(state, "_tracking_uri", None), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)  # None: "not set", not the default store
        if variable is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = variable
