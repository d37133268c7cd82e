"""Comparison reports: one row per run, means over seeds, paired differences with 95% intervals, figures.

A row carries its run's headline metric (`headline`, its direction `higher_is_better`) and every test metric of its
task as test_<name>, so nothing here knows the task: the tables lead with the headline and word its differences
in the metric's units (an accuracy in percentage points). Baselines are the rules registered as such
(`Rule.baseline`: full data, a random subset) with or without per-entry options ("random:cooldown=8").
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

from functional_ast.core.checks import ConfigError
from functional_ast.report import plots, stats
from functional_ast.strategies import registry
from functional_ast.train.base import Result
from functional_ast.train.config import parse_variant
from functional_ast.train.history import History, evaluated, headline_value


def is_baseline(spec: str) -> bool:
    """Whether a --compare entry is a baseline (`Rule.baseline`), with or without per-entry options; an entry
    that is no registered rule (Rho-1's "rho1:keep=0.6") is not."""
    try:
        return _rule(spec).baseline
    except ConfigError:
        return False


def _rule(spec: str) -> registry.Rule:
    return registry.get(parse_variant(spec)[0])


def _gated(spec: str) -> bool:
    """Whether an entry selects (an entry that is no registered rule, Rho-1's, counts as selecting)."""
    try:
        return _rule(spec).gated
    except ConfigError:
        return True


def is_full_data(spec: str) -> bool:
    """Whether an entry is plain full data (a baseline that trains every sample, no per-entry options): what the
    other rows' ratios are taken against."""
    return is_baseline(spec) and spec == parse_variant(spec)[0] and not _rule(spec).gated


def is_random_subset(spec: str) -> bool:
    """Whether an entry is the plain random-subset baseline (a baseline that selects, no per-entry options)."""
    return is_baseline(spec) and spec == parse_variant(spec)[0] and _rule(spec).gated


def headline_at(history: History, seconds: float) -> float | None:
    """The headline test metric of the last epoch finished within `seconds` of train wall-clock (None if none)."""
    done = [e for e in history.epochs if evaluated(e) and e["train_time_s"] <= seconds * (1 + 1e-9)]
    return headline_value(done[-1]) if done else None


def units(key: str) -> tuple[str, float]:
    """(unit, scale) a metric's differences are written in: percentage points for an accuracy, else its name."""
    name = key.removeprefix("test_")
    return ("pp", 100.0) if name.endswith("accuracy") else (name.replace("_", " "), 1.0)


def comparison_table(results: Sequence[Result]) -> list[dict]:
    """One row per run: its test metrics, cost, the rule's own fields, and ratios relative to the full-data run of
    the same seed (when present); `at_random_time` is its headline metric at the random subset's train time."""
    full_by_seed = {r.summary.seed: r for r in results if is_full_data(r.summary.strategy)}
    random_by_seed = {r.summary.seed: r for r in results if is_random_subset(r.summary.strategy)}
    rows = []
    for r in results:
        s = r.summary
        full, rnd = full_by_seed.get(s.seed), random_by_seed.get(s.seed)
        rows.append(dict(
            strategy=s.strategy, seed=s.seed, epochs=s.epochs, headline=s.headline,
            higher_is_better=s.higher_is_better, **{f"test_{k}": v for k, v in s.test.items()},
            train_time_s=s.train_time_s, flops_spent=s.flops_spent,
            speedup_vs_full=(full.summary.train_time_s / s.train_time_s) if full and s.train_time_s else None,
            flops_ratio_vs_full=(s.flops_spent / full.summary.flops_spent) if full else None,
            samples_trained=s.samples_trained, samples_scored=s.samples_scored,
            samples_per_s=s.samples_per_s, flops_per_s=s.flops_per_s, energy_j=s.energy_j, energy_kind=s.energy_kind,
            at_random_time=headline_at(r.history, rnd.summary.train_time_s) if rnd else None, labels=dict(s.labels),
            **s.rule))
    return rows


def by_strategy(rows: Sequence[dict]) -> dict[str, list[dict]]:
    """Rows grouped by strategy, in first-seen order, each group sorted by seed."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["strategy"]].append(row)
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in groups.items()}


def headline_key(rows: Sequence[dict]) -> str:
    """The rows' headline metric as a row key ("test_accuracy", "test_bits_per_byte")."""
    return f"test_{rows[0].get('headline', 'accuracy')}" if rows else "test_accuracy"


def metric_keys(rows: Sequence[dict]) -> list[str]:
    """The rows' test metrics, the headline first, then the others they all carry in their order."""
    head = headline_key(rows)
    others = [k for k in (rows[0] if rows else {}) if k.startswith("test_") and k != head
              and all(k in r for r in rows)]
    return [head, *others]


def seed_summary(rows: Sequence[dict]) -> list[dict]:
    """Per strategy: mean and std over seeds of its test metrics, train time, FLOPs vs full and throughput."""
    out = []
    keys = metric_keys(rows)
    for name, group in by_strategy(rows).items():
        entry = dict(strategy=name, seeds=len(group))
        for key in (*keys, "train_time_s", "flops_ratio_vs_full", "samples_per_s", "flops_per_s"):
            values = [r[key] for r in group if r.get(key) is not None]
            entry[key], entry[f"{key}_std"] = stats.mean_std(values) if values else (None, None)
        out.append(entry)
    return out


def paired_against_baselines(rows: Sequence[dict], key: str | None = None) -> list[dict]:
    """For each selective strategy and each baseline present: the paired difference of `key` (default: the rows'
    headline metric) over the seeds both ran, with its 95% t-interval (stats.paired_difference), worded in the
    metric's units (`units`)."""
    key = key or headline_key(rows)
    unit, scale = units(key)
    groups = by_strategy(rows)
    out = []
    for name, group in groups.items():
        if is_baseline(name):
            continue
        for base in filter(is_baseline, groups):
            base_by_seed = {r["seed"]: r[key] for r in groups[base]}
            pairs = [(r[key], base_by_seed[r["seed"]]) for r in group if r["seed"] in base_by_seed]
            if not pairs:
                continue
            d = stats.paired_difference([a for a, _ in pairs], [b for _, b in pairs])
            out.append(dict(strategy=name, baseline=base, **d, words=stats.describe_difference(d, unit, scale)))
    return out


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _label(key: str, labels: dict | None = None) -> str:
    """A metric's column label: the task's own words for it (`Task.labels`), else "test acc", "test bits/byte",
    "test <name>"."""
    name = key.removeprefix("test_")
    default = {"accuracy": "test acc", "bits_per_byte": "test bits/byte"}.get(name, f"test {name.replace('_', ' ')}")
    return (labels or {}).get(name) or default


def comparison_markdown(rows: Sequence[dict]) -> str:
    """The per-run table (the headline metric first, then the task's others); with several seeds, also mean ± std
    per strategy and the paired differences of the headline."""
    keys = metric_keys(rows)
    words = rows[0].get("labels") if rows else None
    label = lambda key: _label(key, words)  # noqa: E731
    columns = ["strategy", "seed", "epochs", *map(label, keys), "train s", "samples/s", "FLOPs vs full",
               "samples trained", "samples scored", "energy (J)", f"{label(keys[0])} at random's time"]
    lines = ["| " + " | ".join(columns) + " |",
             "|---|---|---|" + "---|" * len(keys) + "---|---|---|---|---|---|---|"]
    for r in rows:
        metrics = " | ".join(_fmt(r[k], ".4f") for k in keys)
        lines.append(f"| {r['strategy']} | {r['seed']} | {r['epochs']} | {metrics} | "
                     f"{_fmt(r['train_time_s'], '.1f')} | {_fmt(r['samples_per_s'], '.0f')} | "
                     f"{_fmt(r['flops_ratio_vs_full'], '.3f')} | {r['samples_trained']} | {r['samples_scored']} | "
                     f"{_fmt(r['energy_j'], '.0f')} ({r['energy_kind']}) | {_fmt(r['at_random_time'], '.4f')} |")
    if len({r["seed"] for r in rows}) < 2:
        return "\n".join(lines)
    lines += ["", "Over seeds (mean ± std):", "",
              "- " + "\n- ".join(
                  f"{s['strategy']}: "
                  + "".join(f"{label(k)} {_fmt(s[k], '.4f')} ± {_fmt(s[f'{k}_std'], '.4f')}, " for k in keys)
                  + f"train {_fmt(s['train_time_s'], '.1f')} ± {_fmt(s['train_time_s_std'], '.1f')} s, "
                  f"{_fmt(s['samples_per_s'], '.0f')} samples/s, {s['seeds']} seeds" for s in seed_summary(rows))]
    paired = paired_against_baselines(rows)
    if paired:
        direction = "higher" if rows[0].get("higher_is_better", True) else "lower"
        lines += ["", f"Paired differences in {label(keys[0])} ({direction} is better; selective minus baseline, "
                      "same seed):", ""]
        lines += [f"- {p['strategy']} vs {p['baseline']}: {p['words']}" for p in paired]
    return "\n".join(lines)


def comparison_figures(results: Sequence[Result], reference: float | None = None) -> dict:
    """The headline metric against train wall-clock and against FLOPs (a band over seeds), and rate and threshold."""
    runs: dict[str, list[list[dict]]] = defaultdict(list)
    for r in results:
        runs[r.summary.strategy].append([dict(e, test_headline=headline_value(e)) for e in r.history.epochs
                                         if evaluated(e)])
    first = results[0].summary if results else None
    label = f"test {first.headline.replace('_', ' ')}" if first else "test accuracy"
    rates = {r.summary.strategy: (r.history.series("activation_rate"), r.history.series("threshold"))
             for r in results if _gated(r.summary.strategy) and r.summary.seed == first.seed}
    return {"compare_accuracy_vs_time.png": plots.compare_bands(dict(runs), "train_time_s", "train wall-clock (s)",
                                                                reference=reference, y_key="test_headline",
                                                                y_label=label),
            "compare_accuracy_vs_flops.png": plots.compare_bands(dict(runs), "flops_spent", "FLOPs executed",
                                                                 reference=reference, y_key="test_headline",
                                                                 y_label=label),
            "compare_rate_threshold.png": plots.compare_rates(rates)}
