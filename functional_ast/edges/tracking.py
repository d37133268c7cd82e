"""MLflow run tracking: the one stateful object, kept at the program's edge.

Default store: sqlite under ./mlruns (MLflow 3.x refuses the old file store by
default), artifacts under ./mlruns/artifacts. Metrics are buffered and written
with `log_batch` only when `flush()` is called (the trainer flushes at each
safe point, just before its checkpoint is written).

A process killed after a flush and before its checkpoint was written (or during the run's end) has sent steps the
newest checkpoint lacks, which the run resumed from that checkpoint logs again, with the same values: a continued run
skips every point of a metric at or before the newest step of it the store (or its buffer) holds, and every param the
store holds, so that each step is in the store once. A new run is tagged with the caller's `key` (`KEY_TAG`): a
process killed before it recorded its run's id is continued in that run, not a second one. A run holds one logged
model of a name: its end logged again keeps the finished one.

Tracking never stops training: if the store is unreachable or fails mid-run, the
tracker warns once, keeps everything buffered and retries at the next flush. What
is still unwritten when the run ends is saved to `fallback_dir` (params, metrics as
JSON lines, artifacts as files) with a warning naming the command that uploads it:
`python -m functional_ast.cli.tracking replay DIR --tracking-uri URI` (`edges.replay`).

Experiments carry the tag `mlflow.experimentKind=custom_model_development`, which says what they are, but
MLflow 3.17's UI does not read it to choose its view: the "GenAI / Model training" switch is kept in the
browser (localStorage `mlflow.workflowType`, GenAI by default), and only the page's `workflowType` parameter
overrides it. `store.browse_url` gives the address that opens the experiment's training runs in any browser
profile (`.../#/experiments/<id>/runs?workflowType=machine_learning`); `store.ui_command(uri, experiment_id)`
prints it after the `mlflow ui` command. New runs are tagged with their source, user and git commit
(`provenance`).

`log_dataset` records a run input (Overview tab: Datasets used; buffered like params); `log_model` logs the
trained network as an MLflow PyTorch model (the run's and experiment's Models tabs), loadable with
`mlflow.pytorch.load_model(uri)`, linked to the metrics of the step it is logged at (and their datasets); it
is never buffered: if the store is down it warns and skips (its metrics are still logged to the run).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import math
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch

from functional_ast.edges import provenance
from functional_ast.edges.datasets import dataset_input
from functional_ast.edges.store import DEFAULT_TRACKING_URI, artifact_location, store_dir, using_tracking_uri
from functional_ast.io import atomic_dir, recovered_dir, remove_dir

if TYPE_CHECKING:
    from tensordict import TensorDict

_MAX_BATCH = 1000  # MLflow's log_batch limit on metrics per call
_MAX_PARAMS = 100
# An HTTP store that is down must not block training for minutes of retries; users may override.
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                  "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
# What the experiment is (model training, not GenAI). MLflow 3.17's UI shows it but picks its view from the
# browser's own switch or the URL's `workflowType` (see `store.browse_url`), not from this tag.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
NOTE_TAG = "mlflow.note.content"  # a run's or logged model's description in the UI
KEY_TAG = "functional_ast.run_key"  # the caller's key of a run, to find it before its id is recorded


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


def cpu_module(model: torch.nn.Module, params: TensorDict | Mapping, buffers: TensorDict | Mapping) -> torch.nn.Module:
    """A CPU copy of `model` (whose own tensors may be on meta, another device or stale) holding `params` and
    `buffers` (flat dotted names, e.g. "0.weight"), in eval mode; `model` is untouched."""
    # Copy the structure only: the copy's tensors start on meta (no memory), then become empty CPU tensors.
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    module = copy.deepcopy(model, memo).to_empty(device="cpu")
    values = {**dict(params.items()), **dict(buffers.items())}
    persistent, named = set(module.state_dict()), dict(module.named_buffers())
    transient = {k: v for k, v in values.items() if k not in persistent and k in named}
    module.load_state_dict({k: v.detach() for k, v in values.items() if k not in transient}, strict=True)
    with torch.no_grad():
        for key, value in transient.items():  # non-persistent buffers: not in a state_dict
            named[key].copy_(value)
    return module.eval()


class RunTracker:
    """One MLflow run (new, or an existing `run_id` to continue): params, buffered metrics, artifacts.

    Use as a context manager; the run ends FINISHED, FAILED or KILLED. `online` says
    whether the last contact with the store succeeded. `system_metrics=True` has MLflow sample CPU, memory,
    disk, network (and GPU with pynvml) every 10 s into `system/*` metrics while the run is open (needs psutil).
    A new run is created with `tags`, by default its provenance (`provenance.run_tags()`: source, user, git), and
    `key` (`KEY_TAG`); without a `run_id`, the run created with `key` is continued if the store holds one.
    """

    def __init__(self, tracking_uri: str | None = None, experiment: str = "functional_ast",
                 run_name: str | None = None, parent_run_id: str | None = None, run_id: str | None = None,
                 fallback_dir: str | Path | None = None, system_metrics: bool = False,
                 tags: Mapping[str, str] | None = None, key: str | None = None):
        for name, value in _HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        self.tracking_uri = tracking_uri or DEFAULT_TRACKING_URI
        self.experiment, self.run_name, self.parent_run_id = experiment, run_name, parent_run_id
        self.run_id, self.experiment_id, self.key = run_id, None, key
        self.run_tags = dict(provenance.run_tags() if tags is None else tags)
        self.fallback_dir = Path(fallback_dir) if fallback_dir else None
        self.online = False
        self._warned = False
        self._params: list[tuple[str, str]] = []
        self._tags: list[tuple[str, str]] = []
        self._pending: list[tuple[str, float, int, int]] = []  # (key, value, timestamp ms, step)
        self._artifacts: list[tuple[str, Any]] = []  # ("text"|"figure"|"file", name, payload)
        self._inputs: list[dict[str, Any]] = []  # dataset inputs, as `dataset_input` takes them
        self._held: dict[str, int] = {}  # metric -> the newest step the store holds of it (a continued run)
        self._held_params: set[str] = set()  # the params it holds (MLflow refuses a changed value)
        self._last: dict[str, int] = {}  # metric -> the newest step held, buffered or sent
        self._adopted: Path | None = None
        self._model_warned = False
        self._monitor = None
        self.system_metrics = system_metrics
        if system_metrics and importlib.util.find_spec("psutil") is None:
            warnings.warn("system metrics need psutil: pip install psutil", stacklevel=2)
            self.system_metrics = False
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
            resumed = self._run_in_store() if self.run_id is not None else self._run_of_key()
            if not resumed:
                tags = dict(self.run_tags, **({"mlflow.parentRunId": self.parent_run_id} if self.parent_run_id
                                              else {}), **({KEY_TAG: self.key} if self.key else {}))
                self.experiment_id = self._experiment_id(self.experiment)
                run = self.client.create_run(self.experiment_id, run_name=self.run_name, tags=tags)
                if self.run_id is not None:
                    warnings.warn(f"MLflow run {self.run_id} is not in the store {self.tracking_uri} (its checkpoints "
                                  f"were moved?): continuing as the new run {run.info.run_id}", stacklevel=3)
                self.run_id = run.info.run_id
            else:
                self.client.update_run(self.run_id, status="RUNNING")
                run = self.client.get_run(self.run_id)
                self.experiment_id = run.info.experiment_id
                self._tag_kind(self.client.get_experiment(self.experiment_id))
                self._held, self._held_params = self._steps_held(run), set(run.data.params)
                for key, step in self._held.items():
                    self._last[key] = max(self._last.get(key, -1), step)
            self.online = True
        except Exception as error:  # any store failure: keep training, keep buffering
            self._offline(error)
            return False
        if self.system_metrics and self._monitor is None:
            self._start_monitor(resumed)
        return True

    def _start_monitor(self, resumed: bool) -> None:
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._monitor = SystemMetricsMonitor(self.run_id, resume_logging=resumed, tracking_uri=self.tracking_uri)
            self._monitor.start()
        except Exception as error:
            warnings.warn(f"MLflow system metrics not logged ({_short(error)})", stacklevel=3)
            self.system_metrics, self._monitor = False, None

    def _stop_monitor(self) -> None:
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            try:
                monitor.finish()
            except Exception:
                pass

    def _run_in_store(self) -> bool:
        """Whether the run to continue exists in the store (False: the store answered that it does not)."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(self.run_id)
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise
        return True

    def _run_of_key(self) -> bool:
        """Whether the store holds a run created with this tracker's `key` (its process was killed before the run's
        id was recorded); it becomes the run continued."""
        found = self.client.get_experiment_by_name(self.experiment) if self.key else None
        if found is None:
            return False
        runs = self.client.search_runs([found.experiment_id], f"tags.`{KEY_TAG}` = '{self.key}'", max_results=1)
        if not runs:
            return False
        self.run_id = runs[0].info.run_id
        return True

    def _steps_held(self, run) -> dict[str, int]:
        """The newest step of each metric the store holds of the run continued."""
        return {key: max(m.step for m in self.client.get_metric_history(self.run_id, key)) for key in run.data.metrics}

    def _offline(self, error: BaseException) -> None:
        self.online = False
        if not self._warned:
            warnings.warn(f"MLflow store {self.tracking_uri} unreachable ({_short(error)}); training continues, "
                          "tracking data is buffered and retried at each checkpoint", stacklevel=3)
            self._warned = True

    def _experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            self._tag_kind(found)
            return found.experiment_id
        return self.client.create_experiment(name, artifact_location=artifact_location(self.tracking_uri),
                                             tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})

    def _tag_kind(self, experiment) -> None:
        """Give an experiment created without it the kind tag (cosmetic: a refusal is ignored)."""
        if EXPERIMENT_KIND_TAG not in (experiment.tags or {}):
            try:
                self.client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            except Exception:
                pass

    # -- logging (buffered) ---------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log a (nested) config as flat string params (buffered until the next flush)."""
        self._params.extend((k, v[:6000]) for k, v in flatten(params).items())
        self.flush()

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags (e.g. `NOTE_TAG`, the run's description), buffered like params."""
        self._tags.extend((str(k), str(v)[:8000]) for k, v in tags.items())
        self.flush()

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer metrics at `step`; non-finite values are skipped (MLflow rejects some), and so is a metric the run
        already holds at `step` or later (a continued run logging again what its killed process had sent)."""
        now, step = int(time.time() * 1000), int(step)
        for key, value in self._new(metrics, step).items():
            self._pending.append((key, value, now, step))
            self._last[key] = step

    def _new(self, metrics: Mapping[str, float], step: int) -> dict[str, float]:
        """The finite `metrics` of which the run holds nothing at `step` or later."""
        return {k: float(v) for k, v in metrics.items()
                if v is not None and math.isfinite(float(v)) and step > self._last.get(k, -1)}

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

    def log_dataset(self, name: str, source: str, digest: str, *, context: str = "training",
                    num_samples: int | None = None, num_classes: int | None = None,
                    image_shape: tuple | None = None, profile: Mapping[str, Any] | None = None) -> None:
        """Record a dataset this run used (the UI's "Datasets used": name, digest, source, and the given
        facts, with `profile`'s, as its profile), `context` being e.g. "training" or "eval". Written at once if the
        store is reachable, else buffered like params: written at the next flush, or saved to `fallback_dir`."""
        given = dict(num_samples=num_samples, num_classes=num_classes,
                     image_shape=list(image_shape) if image_shape is not None else None)
        profile = {k: v for k, v in {**given, **dict(profile or {})}.items() if v is not None}
        self._inputs.append(dict(name=str(name), source=str(source), digest=str(digest), context=context,
                                 profile=profile))
        # Written now if the store is reachable, but alone: metrics still wait for the next checkpoint's flush.
        if self._connect():
            try:
                self._write_inputs()
            except Exception as error:
                self._offline(error)

    def _write_inputs(self) -> None:
        while self._inputs:
            self.client.log_inputs(self.run_id, datasets=[dataset_input(**self._inputs[0])])
            self._inputs.pop(0)

    def log_model(self, model: torch.nn.Module, params: TensorDict | None = None, buffers: TensorDict | None = None,
                  input_example: torch.Tensor | None = None, name: str = "model", *, step: int = 0,
                  metrics: Mapping[str, float] | None = None,
                  datasets: Mapping[str, tuple[str, str]] | None = None,
                  normalisation: tuple[torch.Tensor, torch.Tensor] | None = None,
                  description: str | Callable[[str], str] | None = None,
                  metadata: Mapping[str, Any] | None = None) -> str | None:
        """Log `model` holding `params` and `buffers` (a CPU copy, eval mode; without them, `model` as it is, such
        as a task's `Export.module`) as an MLflow PyTorch model of this run, with `input_example` (a small batch)
        giving its signature. Returns its URI (`models:/<id>`, for `mlflow.pytorch.load_model`), or None after one
        warning if the store is unreachable or logging fails: it never raises and is not buffered.

        `normalisation=(mean, std)` (per channel, [0, 1] units) logs `tasks.images.RawImageClassifier` around the
        network: it takes raw images (give a uint8 `input_example`) and normalises them itself. The model is the
        run's output at `step`, and `metrics` are logged to the run at `step` linked to it (the model page's
        Metrics), each with the dataset `datasets[key]` = (name, digest) if given (its "Datasets used"); if the
        model is not logged they are logged to the run alone. `description` (text, or a function of the format
        it was saved in, "pt2" or "pickle") is the model's description; `metadata` goes in its MLmodel file.
        A run holds one model of a `name`: a finished one already there (its end logged before the process was killed)
        is kept and given the `metrics` it lacks, an unfinished one (its upload killed) deleted."""
        metrics = {k: float(v) for k, v in (metrics or {}).items() if v is not None and math.isfinite(float(v))}
        uri = self._log_model(model, params, buffers, input_example, name, step, metrics, datasets or {},
                              normalisation, description, metadata)
        if uri is None and metrics:
            self.log_metrics(metrics, step=step)
        return uri

    def _log_model(self, model, params, buffers, input_example, name, step, metrics, datasets, normalisation,
                   description, metadata) -> str | None:
        if not self._connect():
            return self._model_not_logged(name, "the store is unreachable")
        try:
            import mlflow.pytorch

            module = model.eval() if params is None and buffers is None else cpu_module(model, params, buffers)
            if normalisation is not None:
                from functional_ast.tasks.images import RawImageClassifier

                mean, std = (torch.as_tensor(t).detach().to("cpu") for t in normalisation)
                module = RawImageClassifier(module, mean, std).eval()
            example = input_example.detach().to("cpu").numpy()
            run = self.client.get_run(self.run_id)
            logged = self._logged_model(run.info.experiment_id, name)
        except Exception as error:
            return self._model_not_logged(name, _short(error))
        if logged is not None:  # logged before this run's process was killed: keep it, link what it lacks
            self._log_model_metrics(logged.model_id, step, metrics, datasets)
            return logged.model_uri
        errors = []
        # "pt2" (torch.export: no pickle, loads without this package) first; "pickle" if the model won't export.
        for serialization in ("pt2", "pickle"):
            logged = None
            try:
                text = description(serialization) if callable(description) else description
                logged = self.client.create_logged_model(run.info.experiment_id, name=name,
                                                         source_run_id=self.run_id, params=dict(run.data.params),
                                                         tags={NOTE_TAG: text} if text else None)
                with using_tracking_uri(self.tracking_uri), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # MLflow's own notes on pip and signature inference
                    info = mlflow.pytorch.log_model(
                        module, name=name, input_example=example, model_id=logged.model_id, run_id=self.run_id,
                        serialization_format=serialization, step=int(step),
                        metadata=dict(metadata) if metadata else None,
                        pip_requirements=mlflow.pytorch.get_default_pip_requirements())
            except Exception as error:
                errors.append(f"{serialization}: {_short(error)}")
                if logged is not None:
                    with contextlib.suppress(Exception):
                        self.client.delete_logged_model(logged.model_id)
                continue
            self._log_model_metrics(logged.model_id, step, metrics, datasets)
            return info.model_uri
        return self._model_not_logged(name, "; ".join(errors))

    def _logged_model(self, experiment_id: str, name: str):
        """This run's finished model `name`, or None; an unfinished one (its upload was killed) is deleted."""
        from mlflow.entities import LoggedModelStatus

        found = self.client.search_logged_models(
            [experiment_id], filter_string=f"source_run_id = '{self.run_id}' AND name = '{name}'").to_list()
        for model in found:
            if model.status != LoggedModelStatus.READY:
                self.client.delete_logged_model(model.model_id)
        return next((m for m in found if m.status == LoggedModelStatus.READY), None)

    def _log_model_metrics(self, model_id: str, step: int, metrics: Mapping[str, float],
                           datasets: Mapping[str, tuple[str, str]]) -> None:
        """`metrics` at `step` the run lacks, in the run and linked to the logged model `model_id` (with their
        datasets); if the store refuses, logged to the run alone (buffered)."""
        from mlflow.entities import Metric

        metrics, now = self._new(metrics, int(step)), int(time.time() * 1000)
        linked = [Metric(k, v, now, int(step), model_id=model_id, run_id=self.run_id,
                         dataset_name=datasets.get(k, (None, None))[0], dataset_digest=datasets.get(k, (None, None))[1])
                  for k, v in metrics.items()]
        try:
            for i in range(0, len(linked), _MAX_BATCH):
                self.client.log_batch(self.run_id, metrics=linked[i:i + _MAX_BATCH])
        except Exception as error:
            self._offline(error)
            self.log_metrics(metrics, step=step)
            return
        self._last.update(dict.fromkeys(metrics, int(step)))

    def _model_not_logged(self, name: str, reason: str) -> None:
        if not self._model_warned:
            warnings.warn(f"MLflow model {name!r} not logged ({reason}); training continues", stacklevel=3)
            self._model_warned = True
        return None

    def flush(self) -> bool:
        """Write everything buffered; False (and everything kept) if the store is unreachable."""
        if not self._connect():
            return False
        from mlflow.entities import Metric, Param, RunTag

        try:
            self._write_inputs()
            while self._tags:
                self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in self._tags[:_MAX_PARAMS]])
                self._tags = self._tags[_MAX_PARAMS:]
            self._params = [p for p in self._params if p[0] not in self._held_params]  # sent by a killed process
            while self._params:
                self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in self._params[:_MAX_PARAMS]])
                self._params = self._params[_MAX_PARAMS:]
            self._pending = [m for m in self._pending if m[3] > self._held.get(m[0], -1)]  # sent by a killed process
            while self._pending:
                chunk = self._pending[:_MAX_BATCH]
                self.client.log_batch(self.run_id, metrics=[Metric(*m) for m in chunk])
                self._pending = self._pending[_MAX_BATCH:]
            while self._artifacts:
                kind, name, payload = self._artifacts[0]
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / name  # a name may hold folders: "samples/epoch-001.txt"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(payload)
                    folder = Path(name).parent.as_posix()
                    self.client.log_artifact(self.run_id, str(path), None if folder == "." else folder)
                self._artifacts.pop(0)
        except Exception as error:
            self._offline(error)
            return False
        if self._adopted is not None:
            remove_dir(self._adopted)
            self._adopted = None
        return True

    @property
    def buffered(self) -> int:
        """Number of params, tags, metric values, artifacts and dataset inputs not yet written to the store."""
        return len(self._params) + len(self._tags) + len(self._pending) + len(self._artifacts) + len(self._inputs)

    def save_fallback(self) -> Path | None:
        """Write everything still buffered to `fallback_dir/tracking-unsent` (replacing what an earlier
        call wrote there: the buffer holds it too); None if nothing is buffered or there is no fallback_dir."""
        if self.fallback_dir is None:
            return None
        folder = self.fallback_dir / "tracking-unsent"
        if not self.buffered:
            return None
        with atomic_dir(folder, replace=True) as tmp:
            (tmp / "artifacts").mkdir()
            meta = dict(tracking_uri=self.tracking_uri, experiment=self.experiment, run_name=self.run_name,
                        run_id=self.run_id, parent_run_id=self.parent_run_id, run_tags=self.run_tags)
            (tmp / "run.json").write_text(json.dumps(meta, indent=2))
            (tmp / "params.jsonl").write_text("".join(json.dumps({"key": k, "value": v}) + "\n"
                                                      for k, v in self._params))
            (tmp / "metrics.jsonl").write_text("".join(
                json.dumps({"key": k, "value": v, "timestamp": t, "step": s}) + "\n" for k, v, t, s in self._pending))
            (tmp / "tags.jsonl").write_text("".join(json.dumps({"key": k, "value": v}) + "\n"
                                                    for k, v in self._tags))
            (tmp / "inputs.jsonl").write_text("".join(json.dumps(i) + "\n" for i in self._inputs))
            for _, name, payload in self._artifacts:
                (tmp / "artifacts" / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp / "artifacts" / name).write_bytes(payload)
        self._adopted = folder
        return folder

    def adopt(self, folder: str | Path) -> None:
        """Take a `tracking-unsent` folder (saved by an earlier process of this run) into the buffer;
        the folder is removed once a flush has written it. A copy its writer moved aside and was killed before
        replacing (`io.recovered_dir`) is taken back."""
        folder = recovered_dir(folder)
        if not (folder / "run.json").is_file():
            return
        self._params[:0] = [(p["key"], p["value"]) for p in _jsonl(folder / "params.jsonl")]
        self._tags[:0] = [(t["key"], t["value"]) for t in _jsonl(folder / "tags.jsonl")]
        self._pending[:0] = [(m["key"], m["value"], m["timestamp"], m["step"])
                             for m in _jsonl(folder / "metrics.jsonl")]
        saved = folder / "artifacts"
        self._artifacts[:0] = [("bytes", path.relative_to(saved).as_posix(), path.read_bytes())
                               for path in sorted(saved.rglob("*")) if path.is_file()]
        self._inputs[:0] = _jsonl(folder / "inputs.jsonl")
        for key, _, _, step in self._pending:
            self._last[key] = max(self._last.get(key, -1), step)
        self._adopted = folder

    def finish(self, status: str = "FINISHED") -> None:
        """Flush and close the run; if the store is still unreachable, save the buffer to `fallback_dir`."""
        self._stop_monitor()
        if self.flush():
            try:
                self.client.set_terminated(self.run_id, status=status)
                return
            except Exception as error:
                self._offline(error)
        saved = self.save_fallback()
        if saved is not None:
            warnings.warn(f"MLflow store {self.tracking_uri} still unreachable at the end of the run; its tracking "
                          f"data is saved in {saved}. Upload it later with: python -m functional_ast.cli.tracking "
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

    experiment_id = None
    log_params = log_metrics = log_figure = log_text = log_dict = log_dataset = log_model = set_tags = _nothing
    adopt = save_fallback = finish = _nothing

    def flush(self) -> bool:
        return True

    def __enter__(self) -> "NullTracker":
        return self

    def __exit__(self, *exc) -> None:
        return None


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
