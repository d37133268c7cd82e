"""The trainer's edges as small callbacks: checkpoints, MLflow tracking, console progress.

Each reads the run through its read-only view (`train.base.RunView`: state, config, plan, task, data, model)
and writes outside it; none changes training. Nothing here knows the kind of task: it asks the task (its
headline, logged model and samples) and the data (its fingerprints and facts). Give them to
`fit(..., callbacks=[...])` in this order: tracking flushes before a checkpoint is written, so the store holds every
step the newest checkpoint has (and, after a kill between the two, some it lacks, which a resumed tracker does not
send again: `tracking.RunTracker`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from functional_ast import io
from functional_ast.core.task import default_export
from functional_ast.edges import checkpoint, store, tracking
from functional_ast.report import plots
from functional_ast.train.base import Callback, Result, RunView, Summary
from functional_ast.train.history import History, evaluated, headline_value
from functional_ast.train.loop import NonFiniteLossError

Run = RunView  # what every hook here is given


class Checkpoints(Callback):
    """The whole state, atomically, into `folder` at every safe point (newest `keep` kept); `run.json` beside it
    (what `info()` returns) and `result.json` at the end. When a run diverges, its last good state is saved
    and named in the error (`error.saved_to`)."""

    def __init__(self, folder: str | Path, keep: int = 2, info: Callable[[], dict] | None = None):
        self.folder, self.keep, self.info = Path(folder), keep, info

    def save(self, run: Run) -> Path:
        self._write_info()
        return checkpoint.save(self.folder, run.state, {}, keep=self.keep)

    def _write_info(self) -> None:
        if self.info is not None:
            path = self.folder / "run.json"
            try:
                io.atomic_write_json(path, self.info())
            except OSError as error:
                raise checkpoint.unwritable(path, error) from None

    def on_start(self, run: Run) -> None:
        self._write_info()

    def on_safe_point(self, run: Run) -> None:
        self.save(run)

    def on_failure(self, run: Run, error: BaseException) -> None:
        if isinstance(error, NonFiniteLossError):  # the state holds the last good parameters: keep them
            error.saved_to = self.save(run)
        # Otherwise (Ctrl-C, a bug) the newest safe point stays the one to resume from.

    def on_end(self, run: Run, result: Result) -> None:
        io.atomic_write_json(self.folder / "result.json",
                             dict(summary=result.summary.to_dict(), history=result.history.to_json()))


# Summary fields that restate the configuration or the model (they are the run's params): not `final/*` results.
CONFIG_FIELDS = ("seed", "warmup_epochs", "cooldown_epochs", "target_rate", "model_params")
PHASES = {"warm-up": 0, "selective": 1, "cool-down": 2}
# What a per-step metric means, for the run's description (the keys a rule's selection adds included).
GLOSSARY = {
    "loss": "mean training loss of the samples the step trained on (after warm-up only the selected ones, often "
            "the hardest: it rises at the warm-up/selective boundary without the model getting worse; "
            "epoch/test_loss is the objective on the whole test set; `loss_seen` is the continuous curve)",
    "loss_seen": "mean training loss over all samples the step saw (its whole pool): the fresh scores' mean for a "
                 "rule that scores the pool, the remembered losses' mean for one that remembers them (until a "
                 "pool sample was trained, the trained ones'), the trained samples' loss for full data and for a "
                 "uniform random subset (an unbiased estimate) or a proxy (the main model scores nothing else)",
    "activation_rate": "share of the step's samples trained",
    "n_trained": "samples trained in the step",
    "threshold": "the gate's significance threshold (exists only where the gate runs)",
    "rate_ema": "the controller's moving average of the activation rate",
    "step_saved_pct": "FLOPs saved by the step against training all of its samples (%)",
    "saved_pct": "FLOPs saved so far against training all samples seen (%)",
    "step_gflop": "GFLOP the step executed",
    "n_scored": "samples scored (forward only) in the step",
    "n_candidates": "samples the gate's draw admitted before the energy budget",
    "n_blocked": "admitted samples the gate's energy budget could not afford",
    "n_fallback": "samples added because fewer than the minimum passed the gate",
    "budget": "the gate's energy budget after the step, which sits at its capacity while regeneration covers "
              "every activation",
    "skipped_nonfinite": "1 where a non-finite loss or gradient made the step keep its old parameters",
    "phase": "0 warm-up (all data), 1 selective, 2 cool-down (all data)",
    "epoch": "epochs done, fractional: the x-axis that shows any per-step chart against the epoch",
}


def gflop_key(key: str) -> str | None:
    """The MLflow key of a FLOP count in GFLOP (flops_spent -> flops_spent_gflop, step_flops -> step_gflop,
    flops_per_s -> gflop_per_s); None for a key that is not a FLOP count (e.g. a saved percentage)."""
    if "flops" not in key or "pct" in key:
        return None
    if key.endswith("flops_per_s"):
        return key[: -len("flops_per_s")] + "gflop_per_s"
    if key.endswith("flops"):
        return key[: -len("flops")] + "gflop"
    return f"{key}_gflop"


def readable(metrics: dict) -> dict:
    """Metrics as MLflow shows them: FLOP counts in GFLOP under their `gflop_key`, the rest unchanged."""
    out = {}
    for key, value in metrics.items():
        renamed = gflop_key(key)
        out[renamed or key] = value / 1e9 if renamed and value is not None else value
    return out


def final_metrics(summary: Summary, budgeted: bool) -> dict:
    """The summary's results as `final/*` metrics: numbers only, not the configuration (`CONFIG_FIELDS`; the epoch
    count too unless a budget decided it), FLOPs in GFLOP."""
    skip = set(CONFIG_FIELDS) | (set() if budgeted else {"epochs"})
    numbers = {k: v for k, v in summary.to_dict().items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in skip}
    return {f"final/{k}": v for k, v in readable(numbers).items()}


def phase_of(run: Run, epoch: int) -> int | None:
    """0 warm-up, 1 selective, 2 cool-down for 0-based `epoch` of `run`; None for a strategy that never selects."""
    plan = run.plan
    if not plan.gated:
        return None
    if epoch < plan.warmup_epochs:
        return PHASES["warm-up"]
    return PHASES["cool-down"] if plan.all_data(epoch, int(run.state["loop", "cooldown_from"])) else PHASES["selective"]


class MLflowTracking(Callback):
    """One MLflow run per training run: params, per-step and per-epoch metrics, the data set as a run input,
    plots, config and summary, and the trained model (loadable with `mlflow.pytorch.load_model`).
    Survives an unreachable store (buffered, saved beside the checkpoints in `tracking-unsent/`).

    Per-step metrics are at the global step, with `phase` (gated strategies) and `epoch` (fractional, to chart
    them against the epoch); `epoch/*` metrics are at the epoch (1, 2, ...) as step; `final/*` hold the results at
    the last step, linked to the logged model (the task's `export`: raw uint8 images for an image classifier,
    bytes for a language model). FLOPs are in GFLOP. A task with a `sample` (a language model) also gets its text at
    each evaluation (`samples/epoch-NNN.txt`). The run's description says what it ran and which metrics never
    moved, and why. `peers` is the comparison's shared record of its runs' epochs ((strategy, seed) -> records), so
    that a selective run's own figure can show full data's curve beside it. `key` finds the run a process killed
    before its id was recorded had created (`tracking.RunTracker`)."""

    def __init__(self, tracking_uri: str, experiment: str, run_name: str, *, params: dict | None = None,
                 run_id: str | None = None, parent_run_id: str | None = None, fallback_dir: str | Path | None = None,
                 system_metrics: bool = False, log_model: bool = True, dataset: dict | None = None,
                 announce: Callable[[str], None] | None = print,
                 peers: dict[tuple[str, int], list[dict]] | None = None, key: str | None = None):
        self.tracker = tracking.RunTracker(tracking_uri, experiment, run_name, parent_run_id=parent_run_id,
                                           run_id=run_id, fallback_dir=fallback_dir, system_metrics=system_metrics,
                                           key=key)
        self.params, self.resumed, self.dataset = params, run_id is not None, dataset
        self.log_model, self.fallback_dir, self.announce = log_model, fallback_dir, announce
        self.parent_run_id = parent_run_id
        self.ranges: dict[str, tuple[float, float]] = {}  # per-step metric -> (min, max) seen by this process
        self.epoch_start = 0  # the global step the current epoch started at
        self.sample: tuple[str, str] | None = None  # (artifact name, text) written at the next safe point
        self.peers = {} if peers is None else peers

    @property
    def run_id(self) -> str | None:
        return self.tracker.run_id

    def on_start(self, run: Run) -> None:
        if self.fallback_dir is not None:
            self.tracker.adopt(Path(self.fallback_dir) / "tracking-unsent")
        done = History.from_state(run.state).epochs
        self.epoch_start = int(done[-1]["steps"]) if done else 0
        self.peers[(run.config.strategy, run.config.seed)] = list(done)
        if not self.resumed:
            self.tracker.log_params(dict(self.params or {}, **run_facts(run)))
            if self.dataset:
                self.tracker.log_dataset(**self.dataset)
        if self.announce:
            self.announce(f"MLflow run {self.tracker.run_id or '(not created yet: store unreachable)'} "
                          f"({self.tracker.run_name}); browse: "
                          f"{store.ui_command(self.tracker.tracking_uri, self.tracker.experiment_id)}")

    def on_metrics(self, run: Run, first_step: int, chunk: dict[str, list[float]]) -> None:
        epoch = run.epoch
        phase = phase_of(run, epoch)
        steps_in_epoch = max(1, run.plan.steps_in(epoch, int(run.state["loop", "cooldown_from"])))
        chunk = {gflop_key(k) or k: [v / 1e9 for v in values] if gflop_key(k) else values
                 for k, values in chunk.items()}
        for key, values in chunk.items():
            finite = [v for v in values if v == v]
            if finite:
                lo, hi = self.ranges.get(key, (math.inf, -math.inf))
                self.ranges[key] = (min(lo, *finite), max(hi, *finite))
        for i in range(len(chunk["loss"])):
            step = first_step + i
            extra = {"epoch": epoch + min(1.0, (step + 1 - self.epoch_start) / steps_in_epoch)}
            if phase is not None:
                extra["phase"] = phase
            self.tracker.log_metrics(dict({k: v[i] for k, v in chunk.items()}, **extra), step=step)

    def on_epoch_end(self, run: Run, record: dict) -> None:
        self.epoch_start = int(record["steps"])
        self.peers.setdefault((run.config.strategy, run.config.seed), []).append(dict(record))
        metrics = {k: v for k, v in record.items() if k not in ("epoch", "all_data")}
        phase = phase_of(run, int(record["epoch"]) - 1)
        if phase is not None:
            metrics["phase"] = phase
        self.tracker.log_metrics({f"epoch/{k}": v for k, v in readable(metrics).items()}, step=int(record["epoch"]))
        if run.task.sample is not None and evaluated(record):
            epoch = int(record["epoch"])
            text = run.task.sample(run.model, run.state["params"], run.state["buffers"], run.data, run.config.seed,
                                   epoch)
            self.sample = (f"samples/epoch-{epoch:03d}.txt", text)

    def on_safe_point(self, run: Run) -> None:
        if self.sample is not None:  # written with the epoch's metrics, just before the epoch's checkpoint
            self.tracker.log_text(self.sample[1], self.sample[0])
            self.sample = None
        if not self.tracker.flush():
            self.tracker.save_fallback()

    def on_end(self, run: Run, result: Result) -> None:
        summary = result.summary
        for name, figure in run_figures(result.history, run.config.target_rate if run.config.gated else None,
                                        title=f"{summary.strategy}, run {self.tracker.run_name or run.name}",
                                        warmup_epochs=run.plan.warmup_epochs, gated=run.plan.gated,
                                        references=self._references(run), metric=run.task.headline).items():
            self.tracker.log_figure(figure, name)
        facts = run.data.facts()
        self.tracker.log_dict(dict(run.config.to_dict(), lr=run.config.peak_lr, pool_size=run.plan.pool_size,
                                   **facts), "config.json")
        self.tracker.log_dict(dict(summary.to_dict(), **facts), "summary.json")
        final = final_metrics(summary, budgeted=run.config.budget is not None)
        self.tracker.set_tags({tracking.NOTE_TAG: run_description(run, summary, self.ranges, final)})
        self.tracker.flush()
        if self.log_model:
            self._log_model(run, summary, final)
        else:
            self.tracker.log_metrics(final, step=summary.steps)
        result.summary = summary.replace(mlflow_run_id=self.tracker.run_id)
        self.tracker.finish("FINISHED")

    def _log_model(self, run: Run, summary: Summary, final: dict) -> None:
        """The task's model (`Task.export`, or the network itself), its final metrics linked to the training set
        and, for the test metrics, to the test set."""
        datasets = {}
        if self.dataset:
            test = test_dataset(self.dataset, run)
            for key in final:
                source = test if key.startswith("final/test_") else self.dataset
                datasets[key] = (source["name"], source["digest"])
        network = tracking.cpu_module(run.model, run.state["params"], run.state["buffers"])
        export = (run.task.export or (lambda net, data: default_export(run.task, net, data)))(network, run.data)
        value = summary.result
        result = (f" Test {summary.headline.replace('_', ' ')} {value:.4f} (final/test_{summary.headline})."
                  if value == value else "")
        text = f"{summary.strategy} run {self.tracker.run_name or run.name}: {export.description}{result}"
        dtype = str(export.example.dtype).removeprefix("torch.")

        def described(serialization: str) -> str:  # what a user meets when loading it, by its saved format
            how = (" Loaded with mlflow.pytorch.load_model it is a torch.export program, already in eval mode: call "
                   "it directly (such a program takes no .eval() or .train())." if serialization == "pt2" else
                   " Loaded with mlflow.pytorch.load_model it is an nn.Module in eval mode.")
            return f"{text}{how} Its pyfunc flavour's signature takes {dtype} inputs, as its example."

        self.tracker.log_model(export.module, input_example=export.example, name=model_name(summary, run.task),
                               step=summary.steps, metrics=final, datasets=datasets, description=described,
                               metadata=export.metadata)

    def _references(self, run: Run) -> dict:
        """Full data's accuracy curve(s) of the same comparison and seed, for a selective run's own figure."""
        if self.parent_run_id is None or not run.plan.gated:
            return {}
        curves = {}
        for (strategy, seed), epochs in self.peers.items():
            shown = [e for e in epochs if evaluated(e)]
            if strategy == "full" and seed == run.config.seed and shown:
                curves[f"full data (same comparison, seed {seed})"] = (
                    [e["train_time_s"] for e in shown], [headline_value(e) for e in shown])
        return curves

    def on_failure(self, run: Run, error: BaseException) -> None:
        self.tracker.finish("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")


def model_name(summary: Summary, task) -> str:
    """The logged model's name: its rule and task ("sundew_remembered-image-classification")."""
    raw = f"{summary.strategy}-{task.name}"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in raw.replace(":", "-").replace("=", ""))


def test_dataset(dataset: dict, run: Run) -> dict:
    """The run's test set, named after the training set `dataset`, as `log_dataset` takes it: the dataset the
    logged model's final test metrics are linked to (by name and digest; the run's input is the training set)."""
    return dict(name=f"{dataset['name']}-test", source=dataset["source"], context="eval",
                digest=run.data.test_fingerprint(), num_samples=run.data.describe()["test_samples"])


def run_description(run: Run, summary: Summary, ranges: dict[str, tuple[float, float]],
                    final: dict | None = None) -> str:
    """The run's description (MLflow's run page, Description): what it trained, its phases as they ran, its results
    as one table (`final`: the `final/*` metrics, which MLflow would otherwise show only as one-point charts), the
    metric axes, and the per-step metrics that never moved in it, with what they count."""
    plan, value = run.plan, summary.result
    result = f"test {summary.headline.replace('_', ' ')} " + (f"{value:.4f}" if value == value else "not evaluated")
    lines = [f"**{summary.strategy}** on {run.data.about()}: {result}"
             f", {summary.flops_saved_pct:.1f}% of FLOPs saved against full data for the same epochs."]
    if final:  # first after the headline: what the page shows before "Show more"
        lines.append("| result (`final/*`) | value |\n|---|---|\n" + "\n".join(
            f"| {k.removeprefix('final/')} | {v:.6g} |" for k, v in sorted(final.items(), key=lambda kv: not
                                                                          kv[0].startswith("final/test_"))
            if v is not None))
    if plan.gated:
        cut = f" ({summary.epochs_cut_short} cut short by the budget)" if summary.epochs_cut_short else ""
        lines.append(f"Phases as they ran (metric `phase`): 0 warm-up on all data for {summary.warmup_epochs} "
                     f"epoch(s), 1 selection at " + (f"target rate {run.config.rate_target:g}" if
                     run.config.rate_target is not None else "the rule's own rate") + " for "
                     f"{summary.selective_epochs} epoch(s)"
                     + (f", 2 cool-down on all data for {summary.cooldown_epochs} epoch(s)" if summary.cooldown_epochs
                        else "") + f"{cut}.")
    lines.append("Per-step metrics are at the global step (chart them against the epoch with the `epoch` metric as "
                 "x-axis); `epoch/*` at the epoch; `final/*` are the results at the last step (the table at the top), "
                 "also on the logged model's page. FLOPs are in GFLOP (`*_gflop`).")
    flat = {k: lo for k, (lo, hi) in sorted(ranges.items()) if lo == hi}
    if flat:
        lines.append("Never moved in this run: " + "; ".join(
            f"`{k}` = {v:g}" + (f" ({GLOSSARY[k]})" if k in GLOSSARY else "") for k, v in flat.items()) + ".")
    if "loss" in ranges and plan.gated:
        lines.append(f"`loss`: {GLOSSARY['loss']}.")
        if "loss_seen" in ranges:
            lines.append(f"`loss_seen`: {GLOSSARY['loss_seen']}.")
    return "\n\n".join(lines)


def run_facts(run: Run) -> dict:
    """What the trainer derived from the config: the plan, the peak learning rate, the model's size, and the data's
    facts (`DataSource.facts`: an image set's classes, shape and training normalisation; a corpus's name, digest,
    context and files), lists of numbers written as "a,b,c"."""
    plan = run.plan
    facts = {k: ",".join(f"{v:.6g}" for v in value) if isinstance(value, (list, tuple)) else value
             for k, value in run.data.facts().items()}
    config = run.config.to_dict()
    if run.config.budget is not None:  # the epochs param is then a cap, not what ran (the summary says that)
        config["epochs"] = f"{run.config.epochs} (a cap: the {run.config.budget[0]} budget ends the run)"
    return dict(config, lr=run.config.peak_lr, pool_size=plan.pool_size,
                warmup_epochs=plan.warmup_epochs, cooldown_epochs=plan.cooldown_epochs,
                steps_per_epoch=plan.selective_steps, warmup_steps_per_epoch=plan.all_data_steps,
                model_params=sum(p.numel() for p in run.state["params"].values()),
                train_samples=run.data.num_samples, test_samples=run.data.describe()["test_samples"],
                classes=run.data.num_classes or 0, device=str(run.data.device)) | facts


def run_figures(history: History, target: float | None, *, title: str | None = None, warmup_epochs: int = 0,
                gated: bool | None = None, references: dict | None = None, metric: str = "accuracy") -> dict:
    """The figures of one run, titled `title` (strategy and run) with its all-data phases marked: rate (on its own
    axis around the target) and threshold, FLOPs saved per step, the training loss (trained and seen), the task's
    headline `metric` against train wall-clock (beside `references`' curves: name -> (train seconds, values), e.g.
    full data's in the same comparison)."""
    steps, rate = history.series("activation_rate")
    _, ema = history.series("rate_ema")
    _, threshold = history.series("threshold")
    gated = target is not None if gated is None else gated
    spans = plots.phase_spans(history.epochs, warmup_epochs, gated)
    shown = [(i, e) for i, e in enumerate(history.epochs) if evaluated(e)]
    epoch_phase = {i: p for a, b, p in spans for i, e in enumerate(history.epochs) if a < e["steps"] <= b}
    return {
        "rate_threshold.png": plots.rate_and_threshold(steps, rate, ema, threshold, target, title=title,
                                                       phases=spans),
        "flops_saved.png": plots.flops_saved(steps, history.series("step_saved_pct")[1],
                                              history.series("saved_pct")[1], title=title, phases=spans),
        "loss.png": plots.training_loss(*history.series("loss"), *history.series("loss_seen"), title=title,
                                        phases=spans),
        "accuracy_vs_time.png": plots.accuracy_vs_time([e["train_time_s"] for _, e in shown],
                                                       [headline_value(e) for _, e in shown], title=title,
                                                       references=references,
                                                       phases=[epoch_phase.get(i, 1) for i, _ in shown],
                                                       metric=f"test {metric.replace('_', ' ')}"),
    }


def headline(metric: str, record: dict) -> str:
    """The task's headline test metric of an epoch record or summary as the console prints it ("test acc 0.8123",
    "test bits per byte 2.3456"), or "not evaluated"."""
    value = record.get(f"test_{metric}", math.nan)
    if value != value:
        return "not evaluated"
    return f"test {'acc' if metric == 'accuracy' else metric.replace('_', ' ')} {value:.4f}"


class Console(Callback):
    """A line per epoch (the task's headline test metric, share trained, FLOPs saved, train time) and, with `bar`,
    a tqdm bar per epoch, opened as the epoch starts (its elapsed time and rate count from the epoch's first step)."""

    def __init__(self, bar: bool = True, label: str | None = None):
        self.show_bar, self.label, self.bar = bar, label, None

    def _name(self, run: Run) -> str:
        return self.label or run.name

    def _open(self, run: Run) -> None:
        """The bar of the epoch the run is at (from its batch: a resumed epoch counts what is left of it)."""
        self._close()
        if not self.show_bar or bool(run.state["loop", "finished"]):
            return
        from tqdm import tqdm

        epoch, cooldown_from = run.epoch, int(run.state["loop", "cooldown_from"])
        all_data = run.plan.all_data(epoch, cooldown_from)
        total = run.plan.steps_in(epoch, cooldown_from)
        self.bar = tqdm(total=total - int(run.state["loop", "batch"]), leave=False,
                        desc=f"{self._name(run)} epoch {epoch + 1}" + (" (all data)" if all_data else ""),
                        dynamic_ncols=True, mininterval=1.0)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_start(self, run: Run) -> None:
        """Say once, at the first step, how training batches are augmented and whether that is the task's default;
        open the first epoch's bar."""
        if run.task.transform is not None and not int(run.state["step"]):
            how = run.task.describe_augment if run.augment else "none"
            why = (f"the {run.task.name} task's default for this data" if run.config.augment is None
                   else "as configured")
            print(f"{self._name(run)}: augmentation: {how} ({why})", flush=True)
        self._open(run)

    def on_metrics(self, run: Run, first_step: int, chunk: dict[str, list[float]]) -> None:
        if self.bar is None:
            return
        self.bar.update(len(chunk["loss"]))
        postfix = {"loss": f"{chunk['loss'][-1]:.3f}",
                   "rate": f"{sum(chunk['activation_rate']) / len(chunk['loss']):.2f}"}
        if "threshold" in chunk:
            postfix["thr"] = f"{chunk['threshold'][-1]:.3f}"
        self.bar.set_postfix(postfix, refresh=False)

    def on_epoch_end(self, run: Run, record: dict) -> None:
        self._close()
        print(f"{self._name(run)} epoch {record['epoch']}: {headline(run.task.headline, record)}, trained "
              f"{record['epoch_activation_rate']:.3f} of samples, FLOPs saved {record['epoch_saved_pct']:.1f}% "
              f"(cumulative {record['saved_pct']:.1f}%), train {record['train_time_s']:.1f}s", flush=True)
        self._open(run)  # the next epoch's, from its first step

    def on_end(self, run: Run, result: Result) -> None:
        self._close()

    def on_failure(self, run: Run, error: BaseException) -> None:
        self._close()
