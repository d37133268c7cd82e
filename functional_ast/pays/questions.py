"""The savings question's two answers, as pure functions of a comparison's rows and results.

1. Equal budget (`equal_time`): at the budget, the best selective rule (by its mean over seeds, in the metric's
   direction) minus the better baseline (full data on a schedule fitted to the budget, or a random subset), paired
   by seed, with a 95% t-interval; the verdict is "pays" only when the interval excludes 0 in the rule's favour.
2. Equal metric (`equal_accuracy`): the train wall-clock, and the FLOPs, at which each selective rule first reaches
   the budget-matched full run's final metric (same seed), as fractions of full's; a ratio is claimed only when
   every seed reached it.

The metric is the task's headline (`Metric`): accuracy, written in percentage points, or any other in its own
units and direction (bits per byte, lower is better). Nothing here trains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from functional_ast.report import stats
from functional_ast.report import tables as report
from functional_ast.train.budget import smallest_budget_epochs
from functional_ast.train.history import evaluated


@dataclass(frozen=True)
class Metric:
    """A task's headline metric: its key in rows and summaries ("test_<headline>"), its direction, the unit (and
    scale from the metric) its differences are written in, and the task's `from_record` (for an epoch record from
    before the history kept the headline)."""

    headline: str
    higher_is_better: bool
    unit: str = "pp"
    scale: float = 100.0
    from_record: Callable | None = None

    @property
    def key(self) -> str:
        return f"test_{self.headline}"

    def of(self, record: dict) -> float:
        """The metric in an epoch record (NaN when it was not evaluated)."""
        if not evaluated(record):
            return math.nan
        value = record.get("test_headline", math.nan)
        if value == value:
            return value
        if self.key in record:
            return record[self.key]
        return self.from_record({"accuracy": record["test_accuracy"], "loss": record["test_loss"]})[self.headline]

    def better(self, a: float, b: float) -> bool:
        """Whether `a` is at least as good as `b`."""
        return a >= b if self.higher_is_better else a <= b


ACCURACY = Metric("accuracy", True)  # the image classifier's headline, in percentage points


def metric_of(task) -> Metric:
    """A task's headline as a Metric, in the units `report.tables.units` writes it in."""
    unit, scale = report.units(task.headline)
    return Metric(task.headline, task.higher_is_better, unit, scale, task.from_record)


def verdict(better: str) -> str:
    """The one word a cell gets: "pays" only when the interval excludes 0 in the rule's favour, "loses" when it
    excludes 0 against it, "ties" otherwise (and "too few seeds" below 3)."""
    return {"selective": "pays", "baseline": "loses", "not distinguishable": "ties"}.get(better, "too few seeds")


def better_side(d: dict, metric: Metric, first: str, second: str) -> str:
    """Which side of a paired difference (first minus second) is better by the metric's direction, if either."""
    if d["n"] < stats.MIN_SEEDS_FOR_VERDICT:
        return "too few seeds to call"
    if not d["excludes_zero"]:
        return "not distinguishable"
    return first if (d["ci"][0] > 0) == metric.higher_is_better else second


def equal_time(rows: list[dict], metric: Metric = ACCURACY) -> dict:
    """Best selective rule (mean metric over seeds, by its direction) minus the better baseline, paired by seed; the
    difference in the metric's unit (`diff`; for accuracy also `diff_pp`), `better` naming the side, `verdict`."""
    groups = report.by_strategy(rows)
    mean = {name: stats.mean_std([r[metric.key] for r in group])[0] for name, group in groups.items()}
    pick = max if metric.higher_is_better else min
    best = pick((n for n in groups if not report.is_baseline(n)), key=mean.get)
    baseline = pick(filter(report.is_baseline, groups), key=mean.get)
    base = {r["seed"]: r[metric.key] for r in groups[baseline]}
    pairs = [(r[metric.key], base[r["seed"]]) for r in groups[best] if r["seed"] in base]
    d = stats.paired_difference([a for a, _ in pairs], [b for _, b in pairs])
    better = better_side(d, metric, "selective", "baseline")
    out = dict(best=best, baseline=baseline, verdict=verdict(better), metric=metric.headline,
               higher_is_better=metric.higher_is_better, unit=metric.unit, diff=metric.scale * d["diff"],
               ci95=[None if x is None else metric.scale * x for x in d["ci"]], seeds=d["n"], better=better,
               words=stats.describe_difference(d, metric.unit, metric.scale), rows=list(rows))
    if metric.unit == "pp":
        out["diff_pp"] = out["diff"]
    return out


def time_to_reach(history, goal: float, metric: Metric = ACCURACY, axis: str = "train_time_s") -> float | None:
    """`axis` (train wall-clock, FLOPs) at the end of the first evaluated epoch whose metric is at least as good
    as `goal` in the metric's direction (None if never)."""
    for record in history.epochs:
        value = metric.of(record)
        if value == value and metric.better(value, goal):
            return record[axis]
    return None


def equal_accuracy(results, metric: Metric = ACCURACY, by: str = "time") -> dict:
    """For each selective rule: the time to reach full's final metric (same seed) / full's train time, and the FLOPs
    executed by then / full's FLOPs; the best is the rule with the smallest ratio `by` ("time", or "flops": under
    a FLOP budget, where the wall-clock is not what was matched)."""
    full = {r.summary.seed: r for r in results if report.is_full_data(r.summary.strategy)}
    per_strategy: dict[str, list[dict]] = {}
    for r in results:
        name, seed = r.summary.strategy, r.summary.seed
        if report.is_baseline(name) or seed not in full:
            continue
        goal, full_time = full[seed].summary.test[metric.headline], full[seed].summary.train_time_s
        full_flops = full[seed].summary.flops_spent
        reached = time_to_reach(r.history, goal, metric)
        flops = time_to_reach(r.history, goal, metric, axis="flops_spent")
        per_strategy.setdefault(name, []).append(dict(
            strategy=name, seed=seed, **{f"goal_{metric.headline}": goal}, full_time_s=full_time,
            reached_time_s=reached, time_ratio=None if reached is None else reached / full_time,
            flop_ratio=None if flops is None else flops / full_flops))
    summaries = {}
    for name, rows in per_strategy.items():
        ratios = [r["time_ratio"] for r in rows if r["time_ratio"] is not None]
        entry = dict(strategy=name, reached_in=f"{len(ratios)} of {len(rows)} seeds", rows=rows,
                     time_ratio=None, ci95=[None, None], flop_ratio=None, flop_ci95=[None, None])
        if len(ratios) == len(rows) and ratios:
            d = stats.paired_difference(ratios, [0.0] * len(ratios))
            f = stats.paired_difference([r["flop_ratio"] for r in rows], [0.0] * len(rows))
            entry.update(time_ratio=d["diff"], ci95=d["ci"], flop_ratio=f["diff"], flop_ci95=f["ci"])
        summaries[name] = entry
    key = "flop_ratio" if by == "flops" else "time_ratio"
    reached = [s for s in summaries.values() if s[key] is not None]
    best = min(reached, key=lambda s: s[key]) if reached else next(iter(summaries.values()), None)
    return dict(best=best["strategy"] if best else None, baseline="full", metric=metric.headline,
                higher_is_better=metric.higher_is_better, by=by, time_ratio=best["time_ratio"] if best else None,
                ci95=best["ci95"] if best else [None, None], flop_ratio=best["flop_ratio"] if best else None,
                flop_ci95=best["flop_ci95"] if best else [None, None],
                reached_in=best["reached_in"] if best else None, seeds=len(full),
                strategies=summaries, rows=[row for s in summaries.values() for row in s["rows"]])


def rows_with_metric(results, metric: Metric) -> list[dict]:
    """The comparison's rows (`report.tables.comparison_table`), each with the run's headline under its key."""
    rows = report.comparison_table(results)
    for row, r in zip(rows, results):
        row[metric.key] = r.summary.test.get(metric.headline, row.get(metric.key))
    return rows


def curves(results, names, metric: Metric) -> dict[str, list[list[dict]]]:
    """The evaluated epoch records of each entry's seeds, each with the metric under its key."""
    return {name: [[dict(e, **{metric.key: metric.of(e)}) for e in r.history.epochs if evaluated(e)]
                   for r in results if r.summary.strategy == name] for name in names}


def selective_lm(rho1, results, metric: Metric, equal: str, paid: bool = True, by: str = "time") -> dict:
    """Rho-1's runs beside the comparison's: their metric minus full's (same seed, paired 95% interval) and the
    equal-metric question against full, as for the other rules."""
    full = {r.summary.seed: r.summary.test[metric.headline] for r in results
            if report.is_full_data(r.summary.strategy)}
    mine = [(r.summary.test[metric.headline], full[r.summary.seed]) for r in rho1 if r.summary.seed in full]
    d = stats.paired_difference([a for a, _ in mine], [b for _, b in mine])
    name = rho1[0].summary.strategy
    keys = ("train_time_s", "flops_spent", "steps", "samples_trained")
    reached = equal_accuracy([r for r in results if report.is_full_data(r.summary.strategy)] + list(rho1), metric,
                             by)
    return dict(strategy=name, keep=float(name.split("=")[1]), baseline="full", metric=metric.headline,
                higher_is_better=metric.higher_is_better, unit=metric.unit, diff=metric.scale * d["diff"],
                ci95=[None if x is None else metric.scale * x for x in d["ci"]], seeds=d["n"],
                better=better_side(d, metric, name, "full"),
                words=stats.describe_difference(d, metric.unit, metric.scale), **{equal: reached["strategies"][name]},
                rows=[dict(strategy=name, seed=r.summary.seed, **{metric.key: r.summary.test[metric.headline]},
                           test_accuracy=r.summary.test.get("accuracy"),
                           **{k: getattr(r.summary, k) for k in keys}) for r in rho1],
                paid=paid,
                note="trained after the comparison, one seed after another (not in its lockstep); the reference "
                     + ("is paid inside the budget" if paid else "is GIVEN FREE (its cost not charged)")
                     + "; masking tokens saves no FLOPs")


def unaffordable(configs: dict, budget_epochs: float) -> dict[str, str]:
    """The entries whose rule's preparation (reference models) and all-data epochs leave no selective training in
    a budget of `budget_epochs` full-data epochs, each with the one line that says so and the smallest budget that
    works (`train.budget.smallest_budget_epochs`)."""
    out = {}
    for spec, config in configs.items():
        rule = config.rule
        if rule.prepare is None:
            continue
        cost = rule.prepare_epochs(rule.make_options(config.options))
        all_data = config.warmup_epochs + config.cooldown_epochs
        smallest = smallest_budget_epochs(cost, all_data)
        if budget_epochs < smallest:
            out[spec] = (f"its reference models cost {cost:.2f} full-data epochs and it has {all_data} all-data "
                         f"epoch(s): a budget of {budget_epochs:g} epochs leaves no selective training; the smallest "
                         f"that works is {smallest:g}")
    return out
