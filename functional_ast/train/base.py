"""The trainer's contract with everything above it: what a run returns (`Summary`, `Result`), the hooks it calls
(`Callback`) and the read-only view of a run the hooks get (`RunView`).

`Summary` is declared here and only here. Its fields are the same for every task and rule; the task contributes its
test metrics (`test`, read as `summary.test_<name>`) and the rule its own fields (`rule`, read by name), so
`summary.test_bits_per_byte` and `summary.reference_time_s` work where the task or rule has them and raise
AttributeError (an unknown field) elsewhere. `to_dict()` is the flat record written to result.json and MLflow;
`from_dict(record, task)` reads one back (a record from before the typed summary included).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from tensordict import TensorDict

from functional_ast.train.history import History

if TYPE_CHECKING:  # for the annotations only
    from torch import nn

    from functional_ast.core.task import Task
    from functional_ast.data.source import DataSource
    from functional_ast.train.config import TrainConfig
    from functional_ast.train.plan import Plan


@dataclass(frozen=True)
class Summary:
    """A run's result in plain numbers and strings: what ran, what it cost, what it reached."""

    strategy: str  # the rule's name, or the --compare entry ("stale:cooldown=8")
    seed: int
    epochs: int  # epochs begun (some may have been cut short by a budget: `epochs_cut_short`)
    warmup_epochs: int  # all-data epochs that ran before selection (0 for a rule that never selects)
    selective_epochs: int  # epochs that selected
    cooldown_epochs: int  # all-data epochs that ran after selection
    epochs_cut_short: int  # epochs that ran fewer steps than their phase plans (a budget ended or shortened them)
    target_rate: float | None  # the share the rule aimed at (1.0 for one that trains everything, None for a rule
    # that picks its own share, such as `infobatch`)
    budget: str  # "time 300", "flops 1e+12" or "epochs 10"
    headline: str  # the task's metric that names the result ("accuracy", "bits_per_byte")
    higher_is_better: bool
    test: Mapping[str, float]  # the task's test metrics at the end (NaN when never evaluated)
    train_time_s: float
    eval_time_s: float
    mean_activation_rate_after_warmup: float
    flops_saved_pct: float  # against training every sample seen, for the same epochs (not a fair baseline)
    flops_spent: int
    flops_full: int
    samples_seen: int
    samples_scored: int
    samples_trained: int
    samples_per_s: float
    flops_per_s: float
    steps: int
    model_params: int
    skipped_nonfinite_updates: int
    energy_j: float
    energy_kind: str  # "measured, <meter>" or "estimate: FLOPs x <J/GFLOP> J/GFLOP, no meter"
    rule: Mapping[str, float] = field(default_factory=dict)  # the rule's own fields (`Rule.summary`)
    labels: Mapping[str, str] = field(default_factory=dict)  # the task's words for its metrics (`Task.labels`)
    mlflow_run_id: str | None = None

    def __getattr__(self, name: str):
        """`test_<metric>` for the task's metrics, a rule's field by its name; AttributeError otherwise."""
        if name.startswith("__"):
            raise AttributeError(name)
        test, rule = self.__dict__.get("test", {}), self.__dict__.get("rule", {})
        if name.startswith("test_") and name[len("test_"):] in test:
            return test[name[len("test_"):]]
        if name in rule:
            return rule[name]
        raise AttributeError(f"Summary has no field {name!r} (task metrics: {', '.join(test) or 'none'}; rule "
                             f"fields: {', '.join(rule) or 'none'})")

    def __getitem__(self, name: str):
        """`summary["test_accuracy"]` as `summary.test_accuracy`: KeyError for an unknown field."""
        try:
            return getattr(self, name)
        except AttributeError as error:
            raise KeyError(str(error)) from None

    @property
    def result(self) -> float:
        """The headline test metric (NaN when never evaluated)."""
        return self.test.get(self.headline, math.nan)

    def replace(self, **changes) -> "Summary":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The flat record (result.json, MLflow): every field, the task's metrics as test_<name>, the rule's fields
        by name."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("test", "rule")}
        out.update({f"test_{k}": v for k, v in self.test.items()})
        out.update(self.rule)
        return out

    @classmethod
    def from_dict(cls, record: Mapping[str, Any], task: "Task | None" = None) -> "Summary":
        """A summary from its flat record; a record from before the typed summary (no "headline") takes the
        headline from `task` (default: image classification's) and counts its phases as planned."""
        names = {f.name for f in dataclasses.fields(cls)} - {"test", "rule"}
        headline = record.get("headline") or (task.headline if task is not None else "accuracy")
        higher = record.get("higher_is_better", task.higher_is_better if task is not None else True)
        test = {k[len("test_"):]: v for k, v in record.items() if k.startswith("test_")}
        rule = {k: v for k, v in record.items() if k not in names and not k.startswith("test_")}
        known = {k: v for k, v in record.items() if k in names}
        known.setdefault("selective_epochs", max(0, int(record.get("epochs", 0)) - int(record.get("warmup_epochs", 0))
                                                 - int(record.get("cooldown_epochs", 0))))
        known.setdefault("epochs_cut_short", 0)
        return cls(**dict(known, headline=headline, higher_is_better=higher, test=test, rule=rule))


@dataclass
class Result:
    """What a run returns: its summary, history and final state."""

    summary: Summary | None
    history: History
    state: TensorDict | None = None


class RunView:
    """What a callback may read of a run, and nothing it could change: its name, config, plan, task, data, model
    (a shape: the parameters live in `state`), the current state, the epoch being trained and whether its batches
    are augmented (the config's choice, or the task's default for the data)."""

    __slots__ = ("_run",)

    def __init__(self, run):
        object.__setattr__(self, "_run", run)

    def __setattr__(self, name, value):
        raise AttributeError(f"a RunView is read-only (tried to set {name})")

    name = property(lambda self: self._run.name, doc="The run's name.")
    config: "TrainConfig" = property(lambda self: self._run.config, doc="The run's TrainConfig.")
    plan: "Plan" = property(lambda self: self._run.plan, doc="Its plan (epochs, phases, steps, pool size).")
    task: "Task" = property(lambda self: self._run.task, doc="Its task.")
    data: "DataSource" = property(lambda self: self._run.data, doc="Its data.")
    model: "nn.Module" = property(lambda self: self._run.model, doc="The model as a shape (parameters: `state`).")
    state: TensorDict = property(lambda self: self._run.state, doc="The whole state now (read it, do not mutate).")
    epoch: int = property(lambda self: self._run.epoch, doc="The epoch being trained (0-based).")
    augment: bool = property(lambda self: self._run.augment, doc="Whether training batches are augmented.")


class Callback:
    """The trainer's edges. Every hook is optional; the clock is paused while hooks run; each gets a `RunView`.

    on_start(run) before the first step (of this process: also after a resume); on_metrics(run, first_step,
    chunk) every `log_every` steps; on_epoch_end(run, record); on_safe_point(run) every `safe_point_every`
    steps and at each epoch end, when the state (run.state) holds everything to resume from;
    on_end(run, result); on_failure(run, error) when training stops on an error.
    """

    def on_start(self, run: RunView) -> None: ...
    def on_metrics(self, run: RunView, first_step: int, chunk: dict[str, list[float]]) -> None: ...
    def on_epoch_end(self, run: RunView, record: dict) -> None: ...
    def on_safe_point(self, run: RunView) -> None: ...
    def on_end(self, run: RunView, result: Result) -> None: ...
    def on_failure(self, run: RunView, error: BaseException) -> None: ...
