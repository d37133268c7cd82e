"""MLflow run tracking: the one stateful object, kept at the program's edge.

Default store: sqlite under ./mlruns (MLflow 3.x refuses the old file store by
default), artifacts under ./mlruns/artifacts. Metrics are buffered and written
with `log_batch` only when `flush()` is called (the trainer flushes at each
checkpoint, so the store never holds steps past the newest checkpoint).

Tracking never stops training: if the store is unreachable or fails mid-run, the
tracker warns once, keeps everything buffered and retries at the next flush. What
is still unwritten when the run ends is saved to `fallback_dir` (params, metrics as
JSON lines, artifacts as files) with a warning naming the command that uploads it:
`python -m functional_ast.tracking replay DIR --tracking-uri URI`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

DEFAULT_STORE_DIR = Path("mlruns")
DEFAULT_TRACKING_URI = f"sqlite:///{DEFAULT_STORE_DIR.as_posix()}/mlflow.db"
_MAX_BATCH = 1000  # MLflow's log_batch limit on metrics per call
_MAX_PARAMS = 100
# An HTTP store that is down must not block training for minutes of retries; users may override.
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                  "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def ui_command(tracking_uri: str = DEFAULT_TRACKING_URI) -> str:
    """The shell line that opens the MLflow UI on this store."""
    return f"mlflow ui --backend-store-uri {tracking_uri}"


def store_dir(tracking_uri: str) -> Path:
    """Local directory of the run store: the sqlite file's folder, else ./mlruns."""
    prefix = "sqlite:///"
    return Path(tracking_uri[len(prefix):]).parent if tracking_uri.startswith(prefix) else DEFAULT_STORE_DIR


def artifact_location(tracking_uri: str) -> str | None:
    """For an sqlite store, artifacts go in `artifacts/` beside the database file; else MLflow's default."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return (store_dir(tracking_uri) / "artifacts").resolve().as_uri()


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


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200] if text else ''}"


class RunTracker:
    """One MLflow run (new, or an existing `run_id` to continue): params, buffered metrics, artifacts.

    Use as a context manager; the run ends FINISHED, FAILED or KILLED. `online` says
    whether the last contact with the store succeeded.
    """

    def __init__(self, tracking_uri: str | None = None, experiment: str = "functional_ast",
                 run_name: str | None = None, parent_run_id: str | None = None, run_id: str | None = None,
                 fallback_dir: str | Path | None = None):
        for key, value in _HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        self.tracking_uri = tracking_uri or DEFAULT_TRACKING_URI
        self.experiment, self.run_name, self.parent_run_id = experiment, run_name, parent_run_id
        self.run_id = run_id
        self.fallback_dir = Path(fallback_dir) if fallback_dir else None
        self.online = False
        self._warned = False
        self._params: list[tuple[str, str]] = []
        self._pending: list[tuple[str, float, int, int]] = []  # (key, value, timestamp ms, step)
        self._artifacts: list[tuple[str, Any]] = []  # ("text"|"figure"|"file", name, payload)
        self._adopted: Path | None = None
        self.client = None
        self._connect()

    # -- the store, reached lazily and retried --------------------------------------------------------
    def _connect(self) -> bool:
        if self.online:
            return True
        try:
            from mlflow.tracking import MlflowClient

            if self.tracking_uri.startswith("sqlite:///"):
                store_dir(self.tracking_uri).mkdir(parents=True, exist_ok=True)
            self.client = MlflowClient(tracking_uri=self.tracking_uri)
            if self.run_id is None:
                tags = {"mlflow.parentRunId": self.parent_run_id} if self.parent_run_id else None
                run = self.client.create_run(self._experiment_id(self.experiment), run_name=self.run_name, tags=tags)
                self.run_id = run.info.run_id
            else:
                self.client.update_run(self.run_id, status="RUNNING")
            self.online = True
        except Exception as error:  # any store failure: keep training, keep buffering
            self._offline(error)
        return self.online

    def _offline(self, error: BaseException) -> None:
        self.online = False
        if not self._warned:
            warnings.warn(f"MLflow store {self.tracking_uri} unreachable ({_short(error)}); training continues, "
                          "tracking data is buffered and retried at each checkpoint", stacklevel=3)
            self._warned = True

    def _experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        return self.client.create_experiment(name, artifact_location=artifact_location(self.tracking_uri))

    # -- logging (buffered) ---------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log a (nested) config as flat string params (buffered until the next flush)."""
        self._params.extend((k, v[:6000]) for k, v in flatten(params).items())
        self.flush()

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer metrics at `step`; non-finite values are skipped (MLflow rejects some)."""
        now = int(time.time() * 1000)
        self._pending.extend((k, float(v), now, int(step)) for k, v in metrics.items()
                             if v is not None and math.isfinite(float(v)))

    def log_figure(self, figure: Any, name: str) -> None:
        import io

        buf = io.BytesIO()
        figure.savefig(buf, format=Path(name).suffix.lstrip(".") or "png")
        self._artifacts.append(("bytes", name, buf.getvalue()))
        self.flush()

    def log_text(self, text: str, name: str) -> None:
        self._artifacts.append(("bytes", name, text.encode()))
        self.flush()

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        self.log_text(json.dumps(data, indent=2, default=str), name)

    def flush(self) -> bool:
        """Write everything buffered; False (and everything kept) if the store is unreachable."""
        if not self._connect():
            return False
        from mlflow.entities import Metric, Param

        try:
            while self._params:
                self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in self._params[:_MAX_PARAMS]])
                self._params = self._params[_MAX_PARAMS:]
            while self._pending:
                chunk = self._pending[:_MAX_BATCH]
                self.client.log_batch(self.run_id, metrics=[Metric(*m) for m in chunk])
                self._pending = self._pending[_MAX_BATCH:]
            while self._artifacts:
                kind, name, payload = self._artifacts[0]
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / name
                    path.write_bytes(payload)
                    self.client.log_artifact(self.run_id, str(path))
                self._artifacts.pop(0)
        except Exception as error:
            self._offline(error)
            return False
        if self._adopted is not None:
            shutil.rmtree(self._adopted, ignore_errors=True)
            self._adopted = None
        return True

    @property
    def buffered(self) -> int:
        """Number of params, metric values and artifacts not yet written to the store."""
        return len(self._params) + len(self._pending) + len(self._artifacts)

    def save_fallback(self) -> Path | None:
        """Write everything still buffered to `fallback_dir/tracking-unsent` (replacing what an earlier
        call wrote there: the buffer holds it too); None if nothing is buffered or there is no fallback_dir."""
        if self.fallback_dir is None:
            return None
        folder = self.fallback_dir / "tracking-unsent"
        if not self.buffered:
            return None
        tmp = self.fallback_dir / f".tracking-unsent.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "artifacts").mkdir(parents=True)
        meta = dict(tracking_uri=self.tracking_uri, experiment=self.experiment, run_name=self.run_name,
                    run_id=self.run_id, parent_run_id=self.parent_run_id)
        (tmp / "run.json").write_text(json.dumps(meta, indent=2))
        (tmp / "params.jsonl").write_text("".join(json.dumps({"key": k, "value": v}) + "\n" for k, v in self._params))
        (tmp / "metrics.jsonl").write_text("".join(
            json.dumps({"key": k, "value": v, "timestamp": t, "step": s}) + "\n" for k, v, t, s in self._pending))
        for _, name, payload in self._artifacts:
            (tmp / "artifacts" / name).write_bytes(payload)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        self._adopted = folder
        return folder

    def adopt(self, folder: str | Path) -> None:
        """Take a `tracking-unsent` folder (saved by an earlier process of this run) into the buffer;
        the folder is removed once a flush has written it."""
        folder = Path(folder)
        if not (folder / "run.json").is_file():
            return
        self._params[:0] = [(p["key"], p["value"]) for p in _jsonl(folder / "params.jsonl")]
        self._pending[:0] = [(m["key"], m["value"], m["timestamp"], m["step"]) for m in _jsonl(folder / "metrics.jsonl")]
        self._artifacts[:0] = [("bytes", path.name, path.read_bytes())
                               for path in sorted((folder / "artifacts").iterdir())]
        self._adopted = folder

    def finish(self, status: str = "FINISHED") -> None:
        """Flush and close the run; if the store is still unreachable, save the buffer to `fallback_dir`."""
        if self.flush():
            try:
                self.client.set_terminated(self.run_id, status=status)
                return
            except Exception as error:
                self._offline(error)
        saved = self.save_fallback()
        if saved is not None:
            warnings.warn(f"MLflow store {self.tracking_uri} still unreachable at the end of the run; its tracking "
                          f"data is saved in {saved}. Upload it later with: python -m functional_ast.tracking "
                          f"replay {saved} --tracking-uri {self.tracking_uri}", stacklevel=2)

    def __enter__(self) -> "RunTracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        status = "FINISHED" if exc_type is None else ("KILLED" if exc_type is KeyboardInterrupt else "FAILED")
        self.finish(status)


class NullTracker:
    """RunTracker's interface doing nothing: for the processes of a distributed run other than rank 0."""

    run_id = None
    online = True
    buffered = 0

    def __init__(self, *args, **kwargs):
        pass

    def _nothing(self, *args, **kwargs):
        return None

    log_params = log_metrics = log_figure = log_text = log_dict = adopt = save_fallback = finish = _nothing

    def flush(self) -> bool:
        return True

    def __enter__(self) -> "NullTracker":
        return self

    def __exit__(self, *exc) -> None:
        return None


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def replay(folder: str | Path, tracking_uri: str | None = None) -> str:
    """Upload a `tracking-unsent` folder into its run (or a new run); returns the run id."""
    folder = Path(folder)
    if not (folder / "run.json").is_file():
        raise ValueError(f"{folder} is not a tracking-unsent folder (no run.json)")
    meta = json.loads((folder / "run.json").read_text())
    tracker = RunTracker(tracking_uri or meta["tracking_uri"], meta["experiment"], meta["run_name"],
                         parent_run_id=meta["parent_run_id"], run_id=meta["run_id"])
    if not tracker.online:
        raise RuntimeError(f"MLflow store {tracker.tracking_uri} is still unreachable; nothing was uploaded")
    tracker.adopt(folder)
    if not tracker.flush():
        raise RuntimeError("the upload failed part-way; the folder is kept, run the command again")
    tracker.client.set_terminated(tracker.run_id, status="FINISHED")
    return tracker.run_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m functional_ast.tracking")
    sub = parser.add_subparsers(dest="command", required=True)
    rp = sub.add_parser("replay", help="upload tracking data saved while the store was unreachable")
    rp.add_argument("folder")
    rp.add_argument("--tracking-uri", default=None)
    args = parser.parse_args(argv)
    try:
        run_id = replay(args.folder, args.tracking_uri)
    except (OSError, RuntimeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"uploaded into run {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

