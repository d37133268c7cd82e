"""A tracked fit or comparison, from objects: a run folder with checkpoints and run.json, an MLflow run per
training run, and a resume that continues where it stopped.

    out = tracked_fit(build, data, TrainConfig(strategy="stale"), "stale-cnn", Tracking(uri, "exp"))
    out = tracked_compare(build, data, {"full": TrainConfig(strategy="full"), ...}, "cmp", Tracking(uri, "exp"),
                          seeds=[0, 1, 2], resume=True)

A comparison is a parent MLflow run (its table, figures and per-entry metrics) over one nested run per entry and
seed, each in its own sub-folder; resumed, finished runs are read back from their result.json and the others
continue from their newest checkpoint. `settings` is what a resume must find unchanged (default: every entry's
config and the data's digest); a comparison's may add seeds, not drop them. Params name no machine path.
Images or text (`data.text.TextData` with `task=tasks.language_modelling()`): the params and the run input say
what the data is (a corpus: its name, digest, context, counts and, for the standard library, the Python version).
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from functional_ast.core import distributed
from functional_ast.core.task import Task
from functional_ast.core.work import DEFAULT_JOULES_PER_GFLOP
from functional_ast.edges import meter as fmeter
from functional_ast.edges import runs, store, tracking
from functional_ast.edges.callbacks import Checkpoints, Console, MLflowTracking
from functional_ast.io import portable_path  # noqa: F401  (re-exported: where it lived before)
from functional_ast.report import tables as report
from functional_ast.train.base import Result
from functional_ast.train.config import TrainConfig
from functional_ast.train.trainer import Data, compare, fit, full_epoch_cost


@dataclass(frozen=True)
class Tracking:
    """Where runs are tracked and checkpointed, and what every run logs besides its config (`params`, e.g. the
    command line's flags; `data_name` names the data in the params and the MLflow run input)."""

    uri: str = store.DEFAULT_TRACKING_URI
    experiment: str = "functional_ast"
    checkpoint_dir: str | Path | None = None  # default: checkpoints/<experiment> beside the run store
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    system_metrics: bool = False
    log_model: bool = True
    data_name: str = "data"
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def checkpoint_root(self) -> Path:
        return runs.checkpoint_root(self.uri, self.experiment, self.checkpoint_dir)


@dataclass
class Tracked:
    """What a tracked fit or comparison left: its results (one per entry and seed), its run folder, its MLflow
    experiment and (parent) run, the comparison's table as markdown, and whether it had already finished."""

    results: list[Result]
    folder: Path
    experiment_id: str | None = None
    run_id: str | None = None
    table: str | None = None
    already_finished: bool = False

    @property
    def result(self) -> Result:
        return self.results[0]


def portable_uri(uri: str) -> str:
    """A tracking URI as a param may hold it: a server's address as is, a local store's path `portable_path`."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return uri
    return prefix + portable_path(uri[len(prefix):])


def _plain(value):
    """`value` as run.json gives it back (tuples as lists, other objects as text)."""
    return json.loads(json.dumps(value, default=str))


def _plain_facts(data: Data) -> dict:
    """The data's facts as params take them: lists of numbers written as "a,b,c"."""
    return {k: ",".join(f"{v:.6g}" for v in value) if isinstance(value, (list, tuple)) else value
            for k, value in data.facts().items()}


def _data_params(where: Tracking, data: Data) -> dict:
    return dict(data=where.data_name, data_digest=data.fingerprint(), **_plain_facts(data))


def run_params(where: Tracking, config: TrainConfig, data: Data, folder: Path, name: str) -> dict:
    """A training run's params: `where.params`, the resolved config, the data by name, digest and facts, the
    machine's facts, and the run folder relative to the checkpoint root."""
    meter = fmeter.open_meter(data.device)
    params = dict(where.params)
    params.update(config.to_dict(), lr=config.peak_lr, **_data_params(where, data), device=str(data.device),
                  train_samples=data.num_samples, test_samples=data.describe()["test_samples"],
                  energy_meter=meter.name if meter else "none", torch=torch.__version__,
                  threads=torch.get_num_threads(), machine=platform.machine(), python=platform.python_version(),
                  tracking_uri=portable_uri(where.uri), checkpoint_folder=portable_path(folder, where.checkpoint_root),
                  run_name=name, compare=None, seeds=None)
    return params


def dataset_input(where: Tracking, data: Data) -> dict:
    """The training set as the run's MLflow input: its name, as source its name and digest (not a path), and its
    facts as the profile."""
    digest = data.fingerprint()
    return dict(name=where.data_name, source=f"{where.data_name}@{digest}", digest=digest,
                num_samples=data.num_samples, profile=data.facts())


def _callbacks(where: Tracking, config: TrainConfig, data: Data, folder: Path, name: str, settings: dict,
               info: dict | None, budget: dict, parent_run_id: str | None = None, bar: bool = True,
               label: str | None = None, peers: dict | None = None, key: str | None = None) -> list:
    tracker = MLflowTracking(where.uri, where.experiment, name, params=run_params(where, config, data, folder, name),
                             run_id=info["run_id"] if info else None, parent_run_id=parent_run_id,
                             fallback_dir=folder, system_metrics=where.system_metrics, log_model=where.log_model,
                             dataset=dataset_input(where, data),
                             announce=lambda line: print(f"{line}; checkpoints: {folder}", flush=True), peers=peers,
                             key=key)
    keyed = {"run_key": key} if key else {}
    saver = Checkpoints(folder, keep=where.keep_checkpoints,
                        info=lambda: dict(config=settings, run_id=tracker.run_id, run_name=name, **keyed, **budget))
    return [tracker, saver, Console(bar=bar, label=label)]


def _epoch_budget(build: Callable[[], nn.Module], data: Data, config: TrainConfig, budget_epochs: float | None,
                  info: dict | None, task: Task | None = None, kind: str = "time") -> dict:
    """A budget of `budget_epochs` full-data epochs: their wall-clock here (kind "time") or their FLOPs (kind
    "flops": the same on every machine), measured once (a resumed run keeps what its run.json recorded), as the
    config's change and the run.json record ({"time_budget": s, "budget_s": s} or {"flop_budget": f,
    "budget_flops": f}); {} without one or when `config` has its own budget."""
    if not budget_epochs or config.time_budget or config.flop_budget:
        return {}
    field, record = ("time_budget", "budget_s") if kind == "time" else ("flop_budget", "budget_flops")
    unit = "s" if kind == "time" else "FLOPs"
    if info and info.get(record):
        value = float(info[record])
        print(f"budget {budget_epochs:g} full-data epochs = {value:.4g} {unit} (as first measured)", flush=True)
        return {field: value, record: value}
    per_epoch = full_epoch_cost(build, data, config.batch_size, config.seed, kind, task=task)
    value = budget_epochs * per_epoch
    where = "here" if kind == "time" else "on any machine"
    print(f"one full-data epoch takes about {per_epoch:.4g} {unit} {where}: budget {budget_epochs:g} epochs = "
          f"{value:.4g} {unit}", flush=True)
    return {field: value, record: value}


def tracked_fit(build: Callable[[], nn.Module], data: Data, config: TrainConfig, name: str,
                where: Tracking = Tracking(), *, resume: bool = False, settings: dict | None = None,
                budget_epochs: float | None = None, budget_kind: str = "time", log_every: int = 25,
                eval_every: float | None = None,
                progress: bool = True, collective: distributed.Collective = distributed.LOCAL,
                task: Task | None = None, fitter: Callable[..., Result] = fit,
                joules_per_gflop: float = DEFAULT_JOULES_PER_GFLOP) -> Tracked:
    """Train `config` as the MLflow run `name`, checkpointed in a new folder of `name`, or, with `resume`, continue
    its newest folder (refused if `settings` differ; a finished run is read back). `budget_epochs`: a budget of that
    many full-data epochs, in wall-clock here or (`budget_kind` "flops") in FLOPs, measured once and kept in
    run.json. `task`: the problem (default
    image classification); `fitter`: what trains, `fit` or one taking its arguments (`train.selective.fit_selective`
    with its `keep` bound, which selects the task's tokens)."""
    settings = _plain(settings if settings is not None else dict(config=config.to_dict(), data=data.fingerprint()))
    folder, resuming = runs.run_folder(where.checkpoint_root, name, resume, collective)
    info = runs.read_run_info(folder, settings) if resuming else None
    limit = _epoch_budget(build, data, config, budget_epochs, info, task, budget_kind)
    config = config.replace(**{k: v for k, v in limit.items() if k.endswith("_budget")})
    if info is not None and (done := runs.finished_result(folder, task)) is not None:
        print(f"{name}: the run in {folder} already finished; nothing to resume", flush=True)
        return Tracked([done], folder, already_finished=True)
    budget = {k: v for k, v in limit.items() if k.startswith("budget_")}
    if info is None and collective.is_main:
        info = runs.new_run_info(folder, settings, name, **budget)
    callbacks = _callbacks(where, config, data, folder, name, settings, info, budget, bar=progress,
                           key=info.get("run_key") if info else None) if collective.is_main else []
    result = fitter(build, data, None, config, callbacks=callbacks,
                    state=runs.resume_state(folder, info, data.device), log_every=log_every,
                    safe_point_every=where.checkpoint_every, eval_every=eval_every, collective=collective, name=name,
                    meter=fmeter.open_meter(data.device), task=task, joules_per_gflop=joules_per_gflop)
    tracker = next((c.tracker for c in callbacks if isinstance(c, MLflowTracking)), None)
    return Tracked([result], folder, tracker.experiment_id if tracker else None, tracker.run_id if tracker else None)


def variant_label(spec: str) -> str:
    """A name for folders, MLflow run names and metric keys (no ':' or '='): "stale:cooldown=8" -> "stale-cooldown8"."""
    return spec.replace(":", "-").replace("=", "")


def _entries(configs: Mapping[str, TrainConfig] | Sequence[TrainConfig]) -> dict[str, TrainConfig]:
    if isinstance(configs, Mapping):
        return dict(configs)
    named = {c.strategy: c for c in configs}
    if len(named) != len(configs):
        raise ValueError("configs of one strategy need names: pass {name: config}")
    return named


def tracked_compare(build: Callable[[], nn.Module], data: Data,
                    configs: Mapping[str, TrainConfig] | Sequence[TrainConfig], name: str,
                    where: Tracking = Tracking(), *, seeds: Sequence[int] | None = None, resume: bool = False,
                    settings: dict | None = None, budget_epochs: float | None = None, budget_kind: str = "time",
                    interleave: bool = True,
                    log_every: int = 25, eval_every: float | None = None, model_label: str = "model",
                    progress: bool = True, collective: distributed.Collective = distributed.LOCAL,
                    task: Task | None = None, joules_per_gflop: float = DEFAULT_JOULES_PER_GFLOP) -> Tracked:
    """Run every entry of `configs` (a name, e.g. a variant spec "stale:cooldown=8", -> its config), with each of
    `seeds` (default: each config's own seed), as nested MLflow runs under the parent run `name`, taking turns
    with `interleave`; log the comparison's table, figures and per-entry metrics on the parent. Nested runs are
    named <label>-<model_label>[-seed<N>]. With `resume`, finished runs are read back and the others continue.
    `task`: the problem (default image classification)."""
    entries = _entries(configs)
    seeded, seeds = seeds is not None, list(seeds) if seeds is not None else [None]
    jobs = [(spec, seed) for seed in seeds for spec in entries]
    first = next(iter(entries.values()))
    if settings is None:
        settings = dict(data=data.fingerprint(), seeds=",".join(map(str, seeds)) if seeded else None,
                        configs={spec: c.replace(seed=0).to_dict() for spec, c in entries.items()})
    settings = _plain(settings)
    folder, resuming = runs.run_folder(where.checkpoint_root, name, resume, collective)
    info = runs.read_run_info(folder, settings) if resuming else None
    limit = _epoch_budget(build, data, first, budget_epochs, info, task, budget_kind)
    changes = {k: v for k, v in limit.items() if k.endswith("_budget")}
    budget = {k: v for k, v in limit.items() if k.startswith("budget_")}
    main = collective.is_main
    if info is None and main:
        info = runs.new_run_info(folder, settings, name, **budget)
    key = info.get("run_key") if info else None
    tracker = (tracking.RunTracker if main else tracking.NullTracker)(
        where.uri, where.experiment, name, fallback_dir=folder, run_id=info["run_id"] if info else None, key=key)
    with tracker as parent:
        parent.adopt(folder / "tracking-unsent")
        if main and not info["run_id"]:  # new, or killed before its run's id was recorded (params re-logged alike)
            params = dict(where.params)
            params.update(compare=",".join(entries), seeds=",".join(map(str, seeds)) if seeded else str(first.seed),
                          tracking_uri=portable_uri(where.uri), **_data_params(where, data),
                          **changes)
            parent.log_params(params)
        if main and (info["config"] != settings  # seeds added,
                     or info["run_id"] != parent.run_id):  # or new, or continued in another store
            runs.write_run_info(folder, settings, parent.run_id, name, **({"run_key": key} if key else {}), **budget)
        done: dict[int, Result] = {}
        todo, states, callbacks, peers = [], {}, {}, {}  # peers: the comparison's epoch records, shared
        for i, (spec, seed) in enumerate(jobs):
            label = variant_label(spec)
            config = entries[spec] if seed is None else entries[spec].replace(seed=seed)
            config = config.replace(**changes)
            sub = runs.seed_folder(folder, label, config.seed, seeded)
            if main:
                sub.mkdir(exist_ok=True)
            job_settings = dict(settings, strategy=spec, seed=config.seed)
            sub_info = runs.read_run_info(sub, job_settings) if resuming else None
            if sub_info is not None and (finished := runs.finished_result(sub, task)) is not None:
                done[i] = finished
                continue
            run_name = f"{label}-{model_label}" + (f"-seed{seed}" if seeded else "")
            states[len(todo)] = runs.resume_state(sub, sub_info, data.device)
            sub_key = (sub_info or {}).get("run_key") or (f"{key}/{sub.name}" if key else None)
            callbacks[len(todo)] = (_callbacks(where, config, data, sub, run_name, job_settings, sub_info, budget,
                                               parent_run_id=parent.run_id, bar=progress and not interleave,
                                               label=run_name, peers=peers, key=sub_key) if main else [])
            todo.append((i, config))
        order = iter(range(len(todo)))
        fresh = compare(build, data, None, [c for _, c in todo], callbacks_for=lambda c: callbacks[next(order)],
                        states=states, interleave=interleave, log_every=log_every, eval_every=eval_every,
                        safe_point_every=where.checkpoint_every, collective=collective,
                        meter=fmeter.open_meter(data.device), task=task,
                        joules_per_gflop=joules_per_gflop) if todo else []
        for (i, _), result in zip(todo, fresh):
            done[i] = result
        results = [done[i] for i in range(len(jobs))]
        for (spec, _), result in zip(jobs, results):  # a variant's rows, curves and figures carry its spec
            result.summary = result.summary.replace(strategy=spec)
        if not main:
            return Tracked(results, folder)
        markdown = _log_comparison(parent, results, seeded)
    return Tracked(results, folder, tracker.experiment_id, tracker.run_id, markdown)


def _log_comparison(parent, results: list[Result], seeded: bool) -> str:
    """The comparison on its parent run: the table (markdown and JSON), the figures, each row's numbers as
    metrics <label>[/seed<N>]/<key>; returns the markdown table."""
    rows = report.comparison_table(results)
    markdown = report.comparison_markdown(rows)
    parent.log_text(markdown, "comparison.md")
    parent.log_dict({"rows": rows, "over_seeds": report.seed_summary(rows),
                     "paired": report.paired_against_baselines(rows)}, "comparison.json")
    for fig_name, fig in report.comparison_figures(results).items():
        parent.log_figure(fig, fig_name)
    for row in rows:
        prefix = variant_label(row["strategy"]) + (f"/seed{row['seed']}" if seeded else "")
        parent.log_metrics({f"{prefix}/{k}": v for k, v in row.items()
                            if isinstance(v, (int, float)) and v is not None and not isinstance(v, bool)}, step=0)
    return markdown

