"""MLflow run tracking: the one stateful object, kept at the program's edge.

Default store: sqlite under ./mlruns (MLflow 3.x refuses the old file store by
default), artifacts under ./mlruns/artifacts. Metrics are buffered and written
with `log_batch` (never one blocking call per step). Browse with `ui_command()`.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

DEFAULT_STORE_DIR = Path("mlruns")
DEFAULT_TRACKING_URI = f"sqlite:///{DEFAULT_STORE_DIR.as_posix()}/mlflow.db"
_MAX_BATCH = 1000  # MLflow's log_batch limit on metrics per call
_MAX_PARAMS = 100


def ui_command(tracking_uri: str = DEFAULT_TRACKING_URI) -> str:
    """The shell line that opens the MLflow UI on this store."""
    return f"mlflow ui --backend-store-uri {tracking_uri}"


def artifact_location(tracking_uri: str) -> str | None:
    """For an sqlite store, artifacts go in `artifacts/` beside the database file; else MLflow's default."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    return (Path(tracking_uri[len(prefix):]).parent / "artifacts").resolve().as_uri()


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> {"a.b": "value"} strings, as MLflow params want."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)
    return out


class RunTracker:
    """One MLflow run: params, buffered metrics, artifacts. Use as a context manager."""

    def __init__(self, tracking_uri: str | None = None, experiment: str = "functional_ast",
                 run_name: str | None = None, parent_run_id: str | None = None):
        import mlflow
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri or DEFAULT_TRACKING_URI
        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        self._mlflow = mlflow
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        experiment_id = self._experiment_id(experiment)
        tags = {"mlflow.parentRunId": parent_run_id} if parent_run_id else None
        self.run = self.client.create_run(experiment_id, run_name=run_name, tags=tags)
        self.run_id = self.run.info.run_id
        self._pending: list = []

    def _experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        return self.client.create_experiment(name, artifact_location=artifact_location(self.tracking_uri))

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log a (nested) config as flat string params."""
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in flatten(params).items()]
        for i in range(0, len(items), _MAX_PARAMS):
            self.client.log_batch(self.run_id, params=items[i:i + _MAX_PARAMS])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer metrics at `step`; non-finite values are skipped (MLflow rejects some)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending.extend(Metric(k, float(v), now, int(step)) for k, v in metrics.items()
                             if v is not None and math.isfinite(float(v)))
        if len(self._pending) >= _MAX_BATCH:
            self.flush()

    def flush(self) -> None:
        """Write buffered metrics."""
        while self._pending:
            chunk, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
            self.client.log_batch(self.run_id, metrics=chunk)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_figure(self, figure: Any, name: str) -> None:
        self.client.log_figure(self.run_id, figure, name)

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(json.dumps(data, indent=2, default=str))
            self.log_artifact(path)

    def finish(self, status: str = "FINISHED") -> None:
        """Flush and close the run with status FINISHED, FAILED or KILLED."""
        try:
            self.flush()
        finally:
            self.client.set_terminated(self.run_id, status=status)

    def __enter__(self) -> "RunTracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        status = "FINISHED" if exc_type is None else ("KILLED" if exc_type is KeyboardInterrupt else "FAILED")
        self.finish(status)
