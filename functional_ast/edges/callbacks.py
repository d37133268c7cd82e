"""The trainer's edges as small callbacks: checkpoints, MLflow tracking, console progress.

Each reads the run (`run.state`, `run.config`, `run.plan`) and writes outside it; none changes
training. Give them to `fit(..., callbacks=[...])` in this order: tracking flushes before a
checkpoint is written, so the store never holds steps the newest checkpoint lacks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from functional_ast.edges import checkpoint
from functional_ast import io
from functional_ast.report import plots
from functional_ast.edges import tracking
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


class MLflowTracking(Callback):
    """One MLflow run per training run: params, per-step and per-epoch metrics, the data set as a run input,
    plots, config and summary, and the trained model (loadable with `mlflow.pytorch.load_model`).
    Survives an unreachable store (buffered, saved beside the checkpoints in `tracking-unsent/`)."""

    def __init__(self, tracking_uri: str, experiment: str, run_name: str, *, params: dict | None = None,
                 run_id: str | None = None, parent_run_id: str | None = None, fallback_dir: str | Path | None = None,
                 system_metrics: bool = False, log_model: bool = True, dataset: dict | None = None,
                 announce: Callable[[str], None] | None = print):
        self.tracker = tracking.RunTracker(tracking_uri, experiment, run_name, parent_run_id=parent_run_id,
                                           run_id=run_id, fallback_dir=fallback_dir, system_metrics=system_metrics)
        self.params, self.resumed, self.dataset = params, run_id is not None, dataset
        self.log_model, self.fallback_dir, self.announce = log_model, fallback_dir, announce

    @property
    def run_id(self) -> str | None:
        return self.tracker.run_id

    def on_start(self, run: Run) -> None:
        if self.fallback_dir is not None:
            self.tracker.adopt(Path(self.fallback_dir) / "tracking-unsent")
        if not self.resumed:
            self.tracker.log_params(dict(self.params or {}, **run_facts(run)))
            if self.dataset:
                self.tracker.log_dataset(**self.dataset)
        if self.announce:
            self.announce(f"MLflow run {self.tracker.run_id or '(not created yet: store unreachable)'} "
                          f"({self.tracker.run_name}); browse: {tracking.ui_command(self.tracker.tracking_uri)}")

    def on_metrics(self, run: Run, first_step: int, chunk: dict[str, list[float]]) -> None:
        for i in range(len(chunk["loss"])):
            self.tracker.log_metrics({k: v[i] for k, v in chunk.items()}, step=first_step + i)

    def on_epoch_end(self, run: Run, record: dict) -> None:
        self.tracker.log_metrics({f"epoch/{k}": v for k, v in record.items() if k != "epoch"}, step=record["steps"])

    def on_safe_point(self, run: Run) -> None:
        if not self.tracker.flush():
            self.tracker.save_fallback()

    def on_end(self, run: Run, result: Result) -> None:
        summary = result.summary
        for name, figure in run_figures(result.history, run.config.target_rate if run.config.gated else None).items():
            self.tracker.log_figure(figure, name)
            plots.plt.close(figure)
        self.tracker.log_dict(run.config.to_dict(), "config.json")
        self.tracker.log_dict(summary, "summary.json")
        self.tracker.log_metrics({f"final/{k}": v for k, v in summary.items()
                                  if isinstance(v, (int, float)) and not isinstance(v, bool)}, step=summary["steps"])
        if self.log_model:
            example = run.data.train.data["image"][:2].float().div(255)
            example = (example - run.data.mean.reshape(1, -1, 1, 1)) / run.data.std.reshape(1, -1, 1, 1)
            self.tracker.log_model(run.model, run.state["params"], run.state["buffers"], example.cpu())
        summary["mlflow_run_id"] = self.tracker.run_id
        self.tracker.finish("FINISHED")

    def on_failure(self, run: Run, error: BaseException) -> None:
        self.tracker.finish("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")


def run_facts(run: Run) -> dict:
    """What the trainer derived from the config: the plan, the peak learning rate, the model's size."""
    plan = run.plan
    return dict(run.config.to_dict(), lr=run.config.peak_lr, pool_size=plan.pool_size,
                warmup_epochs=plan.warmup_epochs, cooldown_epochs=plan.cooldown_epochs,
                steps_per_epoch=plan.selective_steps, warmup_steps_per_epoch=plan.all_data_steps,
                model_params=sum(p.numel() for p in run.state["params"].values()),
                train_samples=len(run.data.train), test_samples=len(run.data.test),
                classes=len(run.data.train.classes), device=str(run.data.device))


def run_figures(history: History, target: float | None) -> dict:
    """The figures of one run: rate and threshold, FLOPs saved per step, accuracy against train wall-clock."""
    steps, rate = history.series("activation_rate")
    _, ema = history.series("rate_ema")
    _, threshold = history.series("threshold")
    return {
        "rate_threshold.png": plots.rate_and_threshold(steps, rate, ema, threshold, target),
        "flops_saved.png": plots.flops_saved(steps, history.series("step_saved_pct")[1],
                                              history.series("saved_pct")[1]),
        "accuracy_vs_time.png": plots.accuracy_vs_time([e["train_time_s"] for e in history.epochs],
                                                       [e["test_accuracy"] for e in history.epochs]),
    }


class Console(Callback):
    """A line per epoch (accuracy, share trained, FLOPs saved, train time) and, with `bar`, a tqdm bar."""

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
        accuracy = record["test_accuracy"]
        print(f"{self._name(run)} epoch {record['epoch']}: "
              + (f"test acc {accuracy:.4f}" if accuracy == accuracy else "not evaluated") + ", trained "
              f"{record['epoch_activation_rate']:.3f} of samples, FLOPs saved {record['epoch_saved_pct']:.1f}% "
              f"(cumulative {record['saved_pct']:.1f}%), train {record['train_time_s']:.1f}s", flush=True)

    def on_failure(self, run: Run, error: BaseException) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

