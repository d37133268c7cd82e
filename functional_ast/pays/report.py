"""What `savings` returns: a typed view of its record (the JSON it writes), one `Answer` per budget.

    report = fa.savings(build, data, budgets=(6, 16), seeds=(0, 1, 2))
    report.verdicts                # {"short": "ties", "long": "loses"}
    report.answers[0].words        # "+0.39 pp (95% CI -0.83 to +1.62): not distinguishable from 0"
    report.record                  # the JSON record (what --json writes; docs/tables.py reads)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Answer:
    """The savings question at one budget: the best selective rule against the better baseline at equal budget
    (its difference in the metric's unit with a 95% interval, and the verdict), and at equal metric (the share of
    full data's time and FLOPs it took to reach full's final metric, claimed only when every seed reached it)."""

    label: str  # "short", "long", or "<N>-epochs"
    budget_epochs: float  # the budget in full-data epochs of this machine
    budget: float  # in seconds or FLOPs
    budget_kind: str  # "time" or "flops"
    verdict: str  # "pays" (interval excludes 0 in the rule's favour), "ties", "loses", or "too few seeds"
    best: str
    baseline: str
    diff: float
    ci95: tuple[float | None, float | None]
    unit: str
    words: str
    time_ratio: float | None  # the best rule's time to full's final metric / full's time (None: not every seed)
    flop_ratio: float | None
    reached_in: str | None  # "3 of 3 seeds"
    refused: dict[str, str] = field(default_factory=dict)  # entries a budget could not pay for, and why
    figure: str | None = None

    @classmethod
    def of(cls, label: str, entry: dict, equal_key: str) -> "Answer":
        t, a = entry["equal_time"], entry.get(equal_key) or {}
        return cls(label, entry["budget_epochs"], entry["budget"], entry["budget_kind"], t["verdict"], t["best"],
                   t["baseline"], t["diff"], tuple(t["ci95"]), t["unit"], t["words"], a.get("time_ratio"),
                   a.get("flop_ratio"), a.get("reached_in"), dict(entry.get("refused") or {}), entry.get("figure"))

    def __str__(self) -> str:
        size = f"{self.budget:.0f} s" if self.budget_kind == "time" else f"{self.budget:.3g} FLOPs"
        line = (f"{self.label} budget ({self.budget_epochs:g} full-data epochs, {size}): {self.best} minus "
                f"{self.baseline} = {self.words}: selection {self.verdict.upper()}")
        if self.time_ratio is not None:
            ratio = self.flop_ratio if self.budget_kind == "flops" else self.time_ratio
            line += (f"; it reached full data's final metric in {self.reached_in} at {ratio:.2f}x of full's "
                     f"{'FLOPs' if self.budget_kind == 'flops' else 'time'}")
        return line


@dataclass(frozen=True)
class SavingsReport:
    """Every budget's `Answer`, the task's metric, and the whole record (`record`: what --json writes)."""

    metric: str
    higher_is_better: bool
    answers: tuple[Answer, ...]
    record: dict[str, Any]

    @property
    def verdicts(self) -> dict[str, str]:
        return {a.label: a.verdict for a in self.answers}

    def answer(self, label: str) -> Answer:
        return next(a for a in self.answers if a.label == label)

    def __str__(self) -> str:
        direction = "higher" if self.higher_is_better else "lower"
        head = f"metric: test {self.metric.replace('_', ' ')} ({direction} is better)"
        return "\n".join([head, *map(str, self.answers)])
