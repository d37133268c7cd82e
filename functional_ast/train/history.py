"""The run's history: per-step metric series and per-epoch records, kept in the state's "history" part (its
layout is declared in `core.state.HISTORY`) by pure functions (state, ...) -> state, and read back as a `History`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from tensordict import TensorDict

from functional_ast.core.state import EPOCH_COLUMNS, STEP_SERIES, with_parts

STEP_KEYS = STEP_SERIES  # per-step metrics kept in the history's series
EPOCH_KEYS = EPOCH_COLUMNS  # fields of a per-epoch record, in the column order of the history's table
_INTEGER_FIELDS = ("epoch", "steps", "flops_spent", "flops_full", "samples_trained", "samples_scored")


@dataclass
class History:
    """Per-step series (step -> value per metric) and per-epoch records of one run."""

    steps: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    epochs: list[dict[str, float]] = field(default_factory=list)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        pairs = self.steps.get(key, [])
        return [s for s, _ in pairs], [v for _, v in pairs]

    def to_json(self) -> dict:
        return {"steps": {k: [list(p) for p in v] for k, v in self.steps.items()}, "epochs": self.epochs}

    @classmethod
    def from_json(cls, data: dict) -> "History":
        return cls({k: [tuple(p) for p in v] for k, v in data["steps"].items()}, list(data["epochs"]))

    @classmethod
    def from_state(cls, state: TensorDict) -> "History":
        table = state["history", "epochs"]
        rows = table[~table[:, 0].isnan()].tolist()
        epochs = [dict(zip(EPOCH_KEYS, row)) for row in rows]
        for record in epochs:
            for key in _INTEGER_FIELDS:
                record[key] = int(record[key])
        steps = {}
        for key, values in state["history", "steps"].items():
            known = (~values.isnan()).nonzero()[:, 0]
            if len(known):
                steps[key] = list(zip(known.tolist(), values[known].tolist()))
        return cls(steps, epochs)


def evaluated(record: dict) -> bool:
    """Whether an epoch record holds test metrics: its test loss is a number (a record without one: its accuracy,
    or its headline)."""
    key = next((k for k in ("test_loss", "test_accuracy", "test_headline") if k in record), None)
    value = record.get(key, math.nan) if key else math.nan
    return value == value


def headline_value(record: dict, from_record=None, headline: str = "accuracy") -> float:
    """The task's headline test metric of an epoch record: its `test_headline` column, or (a record from before that
    column) `from_record`'s value for `headline` from its accuracy and loss (accuracy itself without one)."""
    value = record.get("test_headline", math.nan)
    if value == value or not evaluated(record):
        return value
    if headline == "accuracy" or from_record is None:
        return record.get("test_accuracy", math.nan)
    return from_record({"accuracy": record.get("test_accuracy", math.nan), "loss": record["test_loss"]})[headline]


def phases_ran(epochs: list[dict], gated: bool) -> tuple[int, int, int]:
    """(warm-up, selective, cool-down) epochs as they ran: the all-data epochs before the first selective one, the
    selective ones, the all-data ones after; (0, 0, 0) for a rule that never selects."""
    if not gated:
        return 0, 0, 0
    flags = [bool(e.get("all_data")) for e in epochs]
    first = next((i for i, all_data in enumerate(flags) if not all_data), len(flags))
    selective = sum(1 for f in flags if not f)
    return first, selective, len(flags) - first - selective


def cut_short(epochs: list[dict], plan, cooldown_from: int) -> int:
    """How many epochs ran fewer steps than their phase plans (a budget ended them, or moved the cool-down in)."""
    count, before = 0, 0
    for record in epochs:
        count += record["steps"] - before < plan.steps_in(int(record["epoch"]) - 1, cooldown_from)
        before = record["steps"]
    return count


def grown(values: torch.Tensor, needed: int) -> torch.Tensor:
    """`values` padded with NaN rows to hold `needed` rows (doubling), or itself."""
    if needed <= values.shape[0]:
        return values
    pad = torch.full((max(needed, 2 * values.shape[0]) - values.shape[0], *values.shape[1:]), math.nan,
                     dtype=values.dtype, device=values.device)
    return torch.cat([values, pad])


def record_steps(state: TensorDict, first_step: int, chunk: dict[str, list[float]]) -> TensorDict:
    """The state with `chunk` (metric -> its values at the steps from `first_step` on) written into the history's
    series, every series grown to hold those steps; metrics without a series are left out. Nothing mutated."""
    end = first_step + max((len(v) for v in chunk.values()), default=0)
    steps = {}
    for key, values in state["history", "steps"].items():
        values = grown(values, end)
        if key in chunk:
            values = values.index_put((torch.arange(first_step, end, device=values.device),),
                                      torch.tensor(chunk[key], dtype=values.dtype, device=values.device))
        steps[key] = values
    return with_parts(state, history={"steps": TensorDict(steps)})


def counters(state: TensorDict) -> dict[str, int]:
    """The state's work counters as Python ints."""
    return {k: int(v) for k, v in state["work"].items()}


def saved_pct(after: dict[str, int], before: dict[str, int] | None = None) -> float:
    """FLOPs saved against full data between two readings of the counters (default: since the start), in %."""
    before = before or {"flops_spent": 0, "flops_full": 0}
    full = after["flops_full"] - before["flops_full"]
    return 100.0 * (1 - (after["flops_spent"] - before["flops_spent"]) / full) if full else 0.0


def epoch_record(state: TensorDict, epoch: int, all_data: bool, test: dict[str, float], train_time: float,
                 eval_time: float, headline: str = "accuracy") -> dict:
    """The record of `epoch` (0-based) at its end: its test metrics (accuracy where the task has one, its loss and
    its `headline` metric, NaN when not evaluated), clocks, activation rate and savings (from the counters noted at
    its start), and the counters so far."""
    before = {k: int(v) for k, v in state["loop", "epoch_start"].items()}
    after = counters(state)
    seen = after["samples_seen"] - before["samples_seen"]
    return dict(epoch=epoch + 1, steps=int(state["step"]), all_data=float(all_data),
                test_accuracy=test.get("accuracy", math.nan), test_loss=test["loss"],
                test_headline=test.get(headline, math.nan), train_time_s=train_time, eval_time_s=eval_time,
                epoch_activation_rate=(after["samples_trained"] - before["samples_trained"]) / max(1, seen),
                epoch_saved_pct=saved_pct(after, before), saved_pct=saved_pct(after),
                flops_spent=after["flops_spent"], flops_full=after["flops_full"],
                samples_trained=after["samples_trained"], samples_scored=after["samples_scored"])


def record_epoch(state: TensorDict, epoch: int, record: dict) -> TensorDict:
    """The state with `record` as row `epoch` (0-based) of the history's epoch table (grown to hold it), and the
    clock's eval time at the record's. Nothing mutated."""
    table = grown(state["history", "epochs"], epoch + 1)
    row = torch.tensor([float(record[k]) for k in EPOCH_KEYS], dtype=table.dtype, device=table.device)
    table = table.index_put((torch.tensor([epoch], device=table.device),), row[None])
    return with_parts(state, history={"epochs": table},
                      clock={"eval_time": torch.tensor(record["eval_time_s"], dtype=torch.float64)})


def evaluation_due(state: TensorDict, eval_every: float | tuple[str, float] | None) -> bool:
    """Whether to evaluate at this epoch's end: every epoch (`eval_every` None), or once the run is `eval_every`
    past the last evaluated epoch of the history: seconds of train time (a number, or ("time", seconds)) or FLOPs
    executed (("flops", FLOPs): evaluations at the same points on any machine, as a FLOP budget spends)."""
    if eval_every is None:
        return True
    kind, spacing = eval_every if isinstance(eval_every, tuple) else ("time", eval_every)
    column, now = (("train_time_s", float(state["clock", "train_time"])) if kind == "time"
                   else ("flops_spent", float(state["work", "flops_spent"])))
    table = state["history", "epochs"]
    evaluated = table[~table[:, EPOCH_KEYS.index("test_loss")].isnan()]
    last = float(evaluated[:, EPOCH_KEYS.index(column)].max()) if len(evaluated) else 0.0
    return now >= last + spacing
