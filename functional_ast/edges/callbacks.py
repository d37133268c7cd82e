"""The trainer's edges as small callbacks: checkpoints, MLflow tracking, console progress.

Each reads the run (`run.state`, `run.config`, `run.plan`) and writes outside it; none changes
training. Give them to `fit(..., callbacks=[...])` in this order: tracking flushes before a
checkpoint is written, so the store never holds steps the newest checkpoint lacks.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Callable

import torch

from functional_ast import io
from functional_ast.edges import checkpoint, datasets, store, tracking
from functional_ast.report import plots
from functional_ast.train.loop import NonFiniteLossError
from functional_ast.train.trainer import Callback, History, Result, Run


class Checkpoints(Callback):
    """The whole state, atomically, into `folder` at every safe point (newest `keep` kept); `run.json` beside it
    (what `info()` returns) and `result.json` at the end. When a run diverges, its last good state is saved
    and named in the error (`error.saved_to`)."""

    def __init__(self, folder: str | Path, keep: int = 2, info: Callable[[], dict] | None = None):
        self.folder, self.keep, self.info = Path(folder), keep, info

    def save(self, run: Run) -> Path:
        if self.info is not None:
            io.atomic_write_json(self.folder / "run.json", self.info())
        return checkpoint.save(self.folder, run.state, {}, keep=self.keep)

    def on_start(self, run: Run) -> None:
        if self.info is not None:
            io.atomic_write_json(self.folder / "run.json", self.info())

    def on_safe_point(self, run: Run) -> None:
        self.save(run)

    def on_failure(self, run: Run, error: BaseException) -> None:
        if isinstance(error, NonFiniteLossError):  # the state holds the last good parameters: keep them
            error.saved_to = self.save(run)
        # Otherwise (Ctrl-C, a bug) the newest safe point stays the one to resume from.

    def on_end(self, run: Run, result: Result) -> None:
        io.atomic_write_json(self.folder / "result.json",
                             dict(summary=result.summary, history=result.history.to_json()))


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


def final_metrics(summary: dict, budgeted: bool) -> dict:
    """The summary's results as `final/*` metrics: numbers only, not the configuration (`CONFIG_FIELDS`; the epoch
    count too unless a budget decided it), FLOPs in GFLOP."""
    skip = set(CONFIG_FIELDS) | (set() if budgeted else {"epochs"})
    numbers = {k: v for k, v in summary.items()
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
    the last step, linked to the logged model (which takes raw uint8 images, or bytes for a language model:
    `model_export`). FLOPs are in GFLOP. A language model's run also gets a generated sample at each evaluation
    (`samples/epoch-NNN.txt`, `edges.samples`). The run's description says what it ran and which metrics never
    moved, and why."""

    # Curves of the runs of one comparison (parent run id -> (strategy, seed) -> epoch records), so that a
    # selective run's own accuracy figure can show full data's curve beside it.
    peers: dict[str, dict[tuple[str, int], list[dict]]] = {}

    def __init__(self, tracking_uri: str, experiment: str, run_name: str, *, params: dict | None = None,
                 run_id: str | None = None, parent_run_id: str | None = None, fallback_dir: str | Path | None = None,
                 system_metrics: bool = False, log_model: bool = True, dataset: dict | None = None,
                 announce: Callable[[str], None] | None = print):
        self.tracker = tracking.RunTracker(tracking_uri, experiment, run_name, parent_run_id=parent_run_id,
                                           run_id=run_id, fallback_dir=fallback_dir, system_metrics=system_metrics)
        self.params, self.resumed, self.dataset = params, run_id is not None, dataset
        self.log_model, self.fallback_dir, self.announce = log_model, fallback_dir, announce
        self.parent_run_id = parent_run_id
        self.ranges: dict[str, tuple[float, float]] = {}  # per-step metric -> (min, max) seen by this process
        self.epoch_start = 0  # the global step the current epoch started at
        self.sample: tuple[str, str] | None = None  # (artifact name, text) written at the next safe point

    @property
    def run_id(self) -> str | None:
        return self.tracker.run_id

    def on_start(self, run: Run) -> None:
        if self.fallback_dir is not None:
            self.tracker.adopt(Path(self.fallback_dir) / "tracking-unsent")
        done = History.from_state(run.state).epochs
        self.epoch_start = int(done[-1]["steps"]) if done else 0
        if self.parent_run_id is not None:
            self.peers.setdefault(self.parent_run_id, {})[(run.config.strategy, run.config.seed)] = list(done)
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
        if self.parent_run_id is not None:
            self.peers.setdefault(self.parent_run_id, {}).setdefault(
                (run.config.strategy, run.config.seed), []).append(dict(record))
        metrics = {k: v for k, v in record.items() if k not in ("epoch", "all_data")}
        phase = phase_of(run, int(record["epoch"]) - 1)
        if phase is not None:
            metrics["phase"] = phase
        self.tracker.log_metrics({f"epoch/{k}": v for k, v in readable(metrics).items()}, step=int(record["epoch"]))
        if run.task.kind == "sequences" and record.get("test_loss") == record.get("test_loss"):  # evaluated
            from functional_ast.edges import samples

            epoch = int(record["epoch"])
            text = samples.sample_text(run.model, run.state["params"], run.state["buffers"], run.data,
                                       seed=run.config.seed, epoch=epoch)
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
                                        title=f"{summary.get('strategy', run.config.strategy)}, run "
                                              f"{self.tracker.run_name or run.name}",
                                        warmup_epochs=run.plan.warmup_epochs, gated=run.plan.gated,
                                        references=self._references(run)).items():
            self.tracker.log_figure(figure, name)
            plots.plt.close(figure)
        normalisation = normalisation_facts(run)
        self.tracker.log_dict(dict(run.config.to_dict(), lr=run.config.peak_lr, pool_size=run.plan.pool_size,
                                   **normalisation), "config.json")
        self.tracker.log_dict(dict(summary, **normalisation), "summary.json")
        final = final_metrics(summary, budgeted=run.config.budget is not None)
        self.tracker.set_tags({tracking.NOTE_TAG: run_description(run, summary, self.ranges)})
        self.tracker.flush()
        if self.log_model:
            self._log_model(run, summary, final)
        else:
            self.tracker.log_metrics(final, step=summary["steps"])
        summary["mlflow_run_id"] = self.tracker.run_id
        self.tracker.finish("FINISHED")

    def _log_model(self, run: Run, summary: dict, final: dict) -> None:
        datasets = {}
        if self.dataset:
            test = test_dataset(self.dataset, run)
            for key in final:
                source = test if key.startswith("final/test_") else self.dataset
                datasets[key] = (source["name"], source["digest"])
        if run.task.kind == "sequences":
            self._log_text_model(run, summary, final, datasets)
        else:
            self._log_image_model(run, summary, final, datasets)

    def _log_text_model(self, run: Run, summary: dict, final: dict, datasets: dict) -> None:
        """The network itself: int64 bytes [B, context] in, next-byte logits [B, context, 256] out."""
        from functional_ast.edges import model_export

        context, bpb = run.data.test.context, summary.get("test_bits_per_byte")
        text = model_export.text_description(context, summary.get("strategy", run.config.strategy),
                                             self.tracker.run_name or run.name, bpb if bpb == bpb else None)
        example = run.data.test.gather(torch.arange(min(2, len(run.data.test))))[:, :context].contiguous()
        self.tracker.log_model(run.model, run.state["params"], run.state["buffers"], example, step=summary["steps"],
                               metrics=final, datasets=datasets, description=text,
                               metadata=dict(input=f"int64 bytes [B, {context}] 0-255", vocab=256, context=context,
                                             output=f"float32 logits [B, {context}, 256]"))

    def _log_image_model(self, run: Run, summary: dict, final: dict, datasets: dict) -> None:
        from functional_ast.edges import model_export

        images = run.data.train.data["image"]
        mean, std = run.data.mean.cpu(), run.data.std.cpu()
        classes = list(run.data.train.classes)
        accuracy = summary.get("test_accuracy")
        text = model_export.description(classes, mean.tolist(), std.tolist(), tuple(images.shape[1:]),
                                        summary.get("strategy", run.config.strategy), self.tracker.run_name or run.name,
                                        accuracy if accuracy == accuracy else None)
        self.tracker.log_model(run.model, run.state["params"], run.state["buffers"], images[:2].cpu(),
                               step=summary["steps"], metrics=final, datasets=datasets, normalisation=(mean, std),
                               description=text, metadata=dict(input="uint8 [B, C, H, W] 0-255, or float32 in [0, 1]",
                                                               classes=classes, mean=mean.tolist(), std=std.tolist()))

    def _references(self, run: Run) -> dict:
        """Full data's accuracy curve(s) of the same comparison and seed, for a selective run's own figure."""
        if self.parent_run_id is None or not run.plan.gated:
            return {}
        curves = {}
        for (strategy, seed), epochs in self.peers.get(self.parent_run_id, {}).items():
            shown = [e for e in epochs if e.get("test_accuracy") == e.get("test_accuracy")]
            if strategy == "full" and seed == run.config.seed and shown:
                curves[f"full data (same comparison, seed {seed})"] = (
                    [e["train_time_s"] for e in shown], [e["test_accuracy"] for e in shown])
        return curves

    def on_failure(self, run: Run, error: BaseException) -> None:
        self.tracker.finish("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")


def normalisation_facts(run: Run) -> dict:
    """The training normalisation, per channel in [0, 1] units: what a user applies to raw images (the logged
    model applies it itself)."""
    if not hasattr(run.data, "mean"):  # not images (a text corpus): nothing to normalise
        return {}
    return dict(normalise_mean=[round(float(v), 6) for v in run.data.mean.tolist()],
                normalise_std=[round(float(v), 6) for v in run.data.std.tolist()])


def test_dataset(dataset: dict, run: Run) -> dict:
    """The run's test set, named after the training set `dataset`, as `log_dataset` takes it: the dataset the
    logged model's final test metrics are linked to (by name and digest; the run's input is the training set)."""
    test = run.data.test
    if run.task.kind == "sequences":  # held-out files of a corpus: named by the corpus's digest and their numbers
        key = f"{test.corpus.digest}|{','.join(map(str, test.files.tolist()))}|{test.context}"
        return dict(name=f"{dataset['name']}-test", source=dataset["source"], context="eval",
                    digest=hashlib.sha256(key.encode()).hexdigest()[:12], num_samples=len(test))
    images = test.data["image"]
    return dict(name=f"{dataset['name']}-test", source=dataset["source"], context="eval",
                digest=datasets.dataset_digest(images, test.data["label"]), num_samples=len(test),
                num_classes=len(test.classes), image_shape=tuple(images.shape[1:]))


def run_description(run: Run, summary: dict, ranges: dict[str, tuple[float, float]]) -> str:
    """The run's description (MLflow's run page, Description): what it trained, its phases, the metric axes, and
    the per-step metrics that never moved in it, with what they count."""
    plan = run.plan
    accuracy = summary.get("test_accuracy", math.nan)
    if "test_bits_per_byte" in summary:  # a language model
        bpb = summary["test_bits_per_byte"]
        trained_on = f"{run.data.num_samples} training windows of {run.data.describe()['name']}"
        result = "test bits per byte " + (f"{bpb:.4f}" if bpb == bpb else "not evaluated")
    else:
        trained_on = f"{len(run.data.train)} training images ({len(run.data.train.classes)} classes)"
        result = "test accuracy " + (f"{accuracy:.4f}" if accuracy == accuracy else "not evaluated")
    lines = [f"**{summary.get('strategy', run.config.strategy)}** on {trained_on}: {result}"
             f", {summary.get('flops_saved_pct', 0.0):.1f}% of FLOPs saved against full data for the same epochs."]
    if plan.gated:
        cooldown = summary.get("cooldown_epochs", plan.cooldown_epochs)
        lines.append(f"Phases (metric `phase`): 0 warm-up on all data for {plan.warmup_epochs} epoch(s), 1 selection "
                     f"at target rate {run.config.target_rate:g}"
                     + (f", 2 cool-down on all data for {cooldown} epoch(s)." if cooldown else " to the end."))
    lines.append("Per-step metrics are at the global step (chart them against the epoch with the `epoch` metric as "
                 "x-axis); `epoch/*` at the epoch; `final/*` are the results at the last step, also on the logged "
                 "model's page. FLOPs are in GFLOP (`*_gflop`).")
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
    """What the trainer derived from the config: the plan, the peak learning rate, the model's size, and the
    training normalisation (per-channel mean and std of the training images, in [0, 1] units)."""
    plan = run.plan
    return dict(run.config.to_dict(), lr=run.config.peak_lr, pool_size=plan.pool_size,
                warmup_epochs=plan.warmup_epochs, cooldown_epochs=plan.cooldown_epochs,
                steps_per_epoch=plan.selective_steps, warmup_steps_per_epoch=plan.all_data_steps,
                model_params=sum(p.numel() for p in run.state["params"].values()),
                train_samples=run.data.num_samples, test_samples=run.data.describe()["test_samples"],
                classes=run.data.num_classes or 0, device=str(run.data.device),
                **{k: ",".join(f"{v:.6g}" for v in values) for k, values in normalisation_facts(run).items()})


def run_figures(history: History, target: float | None, *, title: str | None = None, warmup_epochs: int = 0,
                gated: bool | None = None, references: dict | None = None) -> dict:
    """The figures of one run, titled `title` (strategy and run) with its all-data phases marked: rate (on its own
    axis around the target) and threshold, FLOPs saved per step, the training loss (trained and seen), accuracy
    against train wall-clock (beside `references`' curves: name -> (train seconds, accuracy), e.g. full data's in
    the same comparison)."""
    steps, rate = history.series("activation_rate")
    _, ema = history.series("rate_ema")
    _, threshold = history.series("threshold")
    gated = target is not None if gated is None else gated
    spans = plots.phase_spans(history.epochs, warmup_epochs, gated)
    evaluated = [(i, e) for i, e in enumerate(history.epochs) if e["test_accuracy"] == e["test_accuracy"]]
    epoch_phase = {i: p for a, b, p in spans for i, e in enumerate(history.epochs) if a < e["steps"] <= b}
    return {
        "rate_threshold.png": plots.rate_and_threshold(steps, rate, ema, threshold, target, title=title,
                                                       phases=spans),
        "flops_saved.png": plots.flops_saved(steps, history.series("step_saved_pct")[1],
                                              history.series("saved_pct")[1], title=title, phases=spans),
        "loss.png": plots.training_loss(*history.series("loss"), *history.series("loss_seen"), title=title,
                                        phases=spans),
        "accuracy_vs_time.png": plots.accuracy_vs_time([e["train_time_s"] for _, e in evaluated],
                                                       [e["test_accuracy"] for _, e in evaluated], title=title,
                                                       references=references,
                                                       phases=[epoch_phase.get(i, 1) for i, _ in evaluated]),
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
    a tqdm bar."""

    def __init__(self, bar: bool = True, label: str | None = None):
        self.show_bar, self.label, self.bar = bar, label, None

    def _name(self, run: Run) -> str:
        return self.label or run.name

    def on_metrics(self, run: Run, first_step: int, chunk: dict[str, list[float]]) -> None:
        if not self.show_bar:
            return
        if self.bar is None:
            from tqdm import tqdm

            epoch, cooldown_from = run.epoch, int(run.state["loop", "cooldown_from"])
            all_data = run.plan.all_data(epoch, cooldown_from)
            total = run.plan.steps_in(epoch, cooldown_from)
            self.bar = tqdm(total=total - int(run.state["loop", "batch"]), leave=False,
                            desc=f"{self._name(run)} epoch {epoch + 1}" + (" (all data)" if all_data else ""),
                            dynamic_ncols=True, mininterval=1.0)
        self.bar.update(len(chunk["loss"]))
        postfix = {"loss": f"{chunk['loss'][-1]:.3f}",
                   "rate": f"{sum(chunk['activation_rate']) / len(chunk['loss']):.2f}"}
        if "threshold" in chunk:
            postfix["thr"] = f"{chunk['threshold'][-1]:.3f}"
        self.bar.set_postfix(postfix, refresh=False)

    def on_epoch_end(self, run: Run, record: dict) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        print(f"{self._name(run)} epoch {record['epoch']}: {headline(run.task.headline, record)}, trained "
              f"{record['epoch_activation_rate']:.3f} of samples, FLOPs saved {record['epoch_saved_pct']:.1f}% "
              f"(cumulative {record['saved_pct']:.1f}%), train {record['train_time_s']:.1f}s", flush=True)

    def on_failure(self, run: Run, error: BaseException) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

