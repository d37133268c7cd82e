"""The honest comparison from your own loop: full data, a random subset and the rule at the same budget, over seeds.

    def train(sampler, epochs, seed):                  # your loop, as it is, on DataLoader(..., batch_sampler=sampler)
        ...
        return test_accuracy

    print(compare(train, "stale", num_samples=len(data), batch_size=64, target_rate=0.3, budget_epochs=4).report())

The budget is a number of trained samples, `budget_epochs` full-data epochs' worth: `full` trains `budget_epochs`
epochs; `random` (a fresh random subset of each pool, RS2) and the rule train their warm-up epochs on all data and
then as many selective epochs as the rest affords at the target rate, rounded to whole epochs (a rule whose rate
varies, such as `infobatch`, is planned at the target rate). With no scoring forward (every rule a `Sampler` takes),
trained samples are also the FLOPs: each trained sample costs one forward and one backward. What each arm really
trained and spent is in its counters and in the report, so a budget missed by the rounding shows. Your loop plans
its learning-rate schedule over the `epochs` it is given, so every arm anneals at its budget. Differences are paired
by seed (`report.stats.paired_difference`: the rule minus each baseline, a 95% t-interval over the seeds), in the
words of `describe_difference`; fewer than 3 seeds give an interval but no verdict.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Sequence

from functional_ast.adapters.sampler import Sampler
from functional_ast.core.checks import ConfigError
from functional_ast.core.work import WorkCosts
from functional_ast.report.stats import describe_difference, paired_difference

BASELINES = ("full", "random")


class Arm(NamedTuple):
    """One run of your loop: the rule it ran, the seed, its epochs, your metric and the sampler's work counters."""

    rule: str
    seed: int
    epochs: int
    metric: float
    counters: dict[str, int]


class Comparison(NamedTuple):
    """Every arm's run, and the rule's paired differences from each baseline (`paired_difference` dicts)."""

    rule: str
    budget_samples: int
    arms: list[Arm]
    versus: dict[str, dict]
    metric: str = "accuracy"
    unit: str = "pp"
    scale: float = 100.0

    def report(self) -> str:
        """A few lines: each arm's mean metric, trained samples and FLOPs; the rule minus each baseline."""
        lines = [f"budget: {self.budget_samples} trained samples per run; seeds: "
                 f"{', '.join(str(a.seed) for a in self.arms if a.rule == 'full')}"]
        for name in (*BASELINES, self.rule):
            arms = [a for a in self.arms if a.rule == name]
            mean = sum(a.metric for a in arms) / len(arms)
            trained = sum(a.counters["samples_trained"] for a in arms) / len(arms)
            flops = sum(a.counters["flops_spent"] for a in arms) / len(arms)
            spent = f"{flops:.3g} FLOPs" if flops else "FLOPs not counted (costs=costs_of(...))"
            lines.append(f"{name}: {self.metric} {mean:.4f}, {arms[0].epochs} epochs, {trained:.0f} samples trained, "
                         f"{spent} (means over seeds)")
        for name, d in self.versus.items():
            lines.append(f"{self.rule} minus {name}: {describe_difference(d, self.unit, self.scale)}")
        return "\n".join(lines)


def plan_epochs(sampler: Sampler, budget_samples: int) -> int:
    """Epochs of `sampler`'s plan whose trained samples come nearest `budget_samples` (at least one): all-data epochs
    train every batch, selective ones `round(target_rate * pool)` of each pool."""
    plan, config = sampler.plan, sampler.config
    per_all = plan.all_data_steps * plan.batch_size
    if not plan.gated:
        return max(1, round(budget_samples / per_all))
    per_selective = plan.selective_steps * max(1, round(config.target_rate * plan.pool_size))
    warm = min(plan.warmup_epochs, max(0, budget_samples // per_all))
    left = budget_samples - warm * per_all - plan.cooldown_epochs * per_all
    return max(1, warm + max(0, round(left / per_selective)) + plan.cooldown_epochs)


def compare(train: Callable[[Sampler, int, int], float], rule: str, *, num_samples: int, batch_size: int,
            target_rate: float = 0.3, budget_epochs: float = 4.0, seeds: Sequence[int] = (0, 1, 2),
            warmup_epochs: int = 1, options: Mapping[str, Any] | None = None, costs: WorkCosts | None = None,
            metric: str = "accuracy", unit: str = "pp", scale: float = 100.0) -> Comparison:
    """Run `train(sampler, epochs, seed) -> metric` (your loop on `DataLoader(data, batch_sampler=sampler)`, `epochs`
    epochs from the seed) for `full`, `random` and `rule` on every seed, at the same budget of trained samples
    (`budget_epochs` full-data epochs' worth), and pair the rule's metric with each baseline's by seed. `costs`
    (`costs_of`) adds FLOPs to the counters; `unit` and `scale` are how the differences are written."""
    if rule in BASELINES:
        raise ConfigError(f"compare: {rule} is a baseline already; name the rule to compare with full and random")
    if not seeds:
        raise ConfigError("compare: give at least one seed (3 or more for a verdict)")
    budget = round(budget_epochs * (num_samples // batch_size) * batch_size)
    arms = []
    for seed in seeds:
        for name in (*BASELINES, rule):
            def sampler_of(epochs: int) -> Sampler:
                return Sampler(name, num_samples, batch_size, target_rate, seed=seed, epochs=epochs,
                               warmup_epochs=0 if name == "full" else warmup_epochs,
                               options=options if name == rule else None, costs=costs)
            epochs = plan_epochs(sampler_of(max(1, warmup_epochs)), budget)
            sampler = sampler_of(epochs)
            value = float(train(sampler, epochs, seed))
            arms.append(Arm(name, seed, epochs, value, sampler.counters))
    ours = [a.metric for a in arms if a.rule == rule]
    versus = {name: paired_difference(ours, [a.metric for a in arms if a.rule == name]) for name in BASELINES}
    return Comparison(rule, budget, arms, versus, metric, unit, scale)
