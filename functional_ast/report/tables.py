"""Comparison reports: one row per run, means over seeds, paired differences with 95% intervals, figures."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from functional_ast.report import plots, stats
from functional_ast.train.config import parse_variant
from functional_ast.train.trainer import History, Result

BASELINES = ("full", "random")


def is_baseline(spec: str) -> bool:
    """Whether a --compare entry is a baseline: full or random, with or without per-entry options
    ("random:cooldown=8", random subsets with the same all-data tail as the rule it is compared with)."""
    return parse_variant(spec)[0] in BASELINES


def accuracy_at(history: History, seconds: float) -> float | None:
    """Test accuracy of the last epoch finished within `seconds` of train wall-clock (None if none was)."""
    done = [e for e in _evaluated(history) if e["train_time_s"] <= seconds * (1 + 1e-9)]
    return done[-1]["test_accuracy"] if done else None


def time_to_accuracy(history: History, accuracy: float, axis: str = "train_time_s") -> float | None:
    """Train wall-clock (or another epoch record's `axis`, such as "flops_spent") at the end of the first epoch
    whose test accuracy reached `accuracy` (None if never)."""
    reached = [e for e in _evaluated(history) if e["test_accuracy"] >= accuracy]
    return reached[0][axis] if reached else None


def _evaluated(history: History) -> list[dict]:
    """The epoch records that carry a test accuracy (a run may evaluate only every so often)."""
    return [e for e in history.epochs if e["test_accuracy"] == e["test_accuracy"]]


def comparison_table(results: Sequence[Result]) -> list[dict]:
    """One row per run; ratios relative to the `full` run of the same seed (when present)."""
    full_by_seed = {r.summary.get("seed", 0): r for r in results if r.summary["strategy"] == "full"}
    random_by_seed = {r.summary.get("seed", 0): r for r in results if r.summary["strategy"] == "random"}
    rows = []
    for r in results:
        s = r.summary
        full = full_by_seed.get(s.get("seed", 0))
        rnd = random_by_seed.get(s.get("seed", 0))
        rows.append(dict(
            strategy=s["strategy"], seed=s.get("seed", 0), epochs=s["epochs"], test_accuracy=s["test_accuracy"],
            train_time_s=s["train_time_s"], flops_spent=s["flops_spent"],
            speedup_vs_full=(full.summary["train_time_s"] / s["train_time_s"]) if full and s["train_time_s"] else None,
            flops_ratio_vs_full=(s["flops_spent"] / full.summary["flops_spent"]) if full else None,
            samples_trained=s["samples_trained"], samples_scored=s["samples_scored"],
            samples_per_s=s.get("samples_per_s"), flops_per_s=s.get("flops_per_s"),
            energy_j=s["energy_j"], energy_kind=s["energy_kind"],
            acc_at_random_time=accuracy_at(r.history, rnd.summary["train_time_s"]) if rnd else None,
            **{k: s[k] for k in _SELECTOR_KEYS if k in s},
            **({"test_bits_per_byte": s["test_bits_per_byte"]} if "test_bits_per_byte" in s else {}),
        ))
    return rows


# What a strategy's own model cost (trainer's selector summary): rho_loss's reference, a proxy's FLOPs.
_SELECTOR_KEYS = ("reference_time_s", "reference_accuracy", "proxy_flops")


def by_strategy(rows: Sequence[dict]) -> dict[str, list[dict]]:
    """Rows grouped by strategy, in first-seen order, each group sorted by seed."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["strategy"]].append(row)
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in groups.items()}


def seed_summary(rows: Sequence[dict]) -> list[dict]:
    """Per strategy: mean and std over seeds of accuracy (and bits per byte where rows carry it), train time,
    FLOPs vs full and throughput."""
    out = []
    text = bool(rows) and all("test_bits_per_byte" in r for r in rows)
    for name, group in by_strategy(rows).items():
        entry = dict(strategy=name, seeds=len(group))
        for key in ("test_bits_per_byte",) * text + ("test_accuracy", "train_time_s", "flops_ratio_vs_full",
                                                     "samples_per_s", "flops_per_s"):
            values = [r[key] for r in group if r.get(key) is not None]
            entry[key], entry[f"{key}_std"] = stats.mean_std(values) if values else (None, None)
        out.append(entry)
    return out


def paired_against_baselines(rows: Sequence[dict], key: str = "test_accuracy") -> list[dict]:
    """For each selective strategy and each baseline present: the paired difference of `key` over the seeds
    both ran, with its 95% t-interval (stats.paired_difference); worded in percentage points for accuracy, in
    the metric's own units otherwise."""
    unit, scale = ("pp", 100.0) if key == "test_accuracy" else (key.removeprefix("test_").replace("_", " "), 1.0)
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
    return "n/a" if value is None else format(value, spec)


def comparison_markdown(rows: Sequence[dict]) -> str:
    """The per-run table; with several seeds, also mean ± std per strategy and the paired differences (of bits per
    byte for a language model, whose rows carry test_bits_per_byte)."""
    lines = ["| strategy | seed | epochs | test acc | train s | samples/s | FLOPs vs full | samples trained "
             "| samples scored | energy (J) | acc at random's time |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    text = bool(rows) and all("test_bits_per_byte" in r for r in rows)  # a language model: bits per byte first
    if text:
        lines[0] = lines[0].replace("| test acc |", "| test bits/byte | next-byte acc |")
        lines[1] += "---|"
    for r in rows:
        bpb = f"{_fmt(r['test_bits_per_byte'], '.4f')} | " if text else ""
        lines.append(f"| {r['strategy']} | {r['seed']} | {r['epochs']} | {bpb}{_fmt(r['test_accuracy'], '.4f')} | "
                     f"{_fmt(r['train_time_s'], '.1f')} | {_fmt(r['samples_per_s'], '.0f')} | "
                     f"{_fmt(r['flops_ratio_vs_full'], '.3f')} | {r['samples_trained']} | {r['samples_scored']} | "
                     f"{_fmt(r['energy_j'], '.0f')} ({r['energy_kind']}) | {_fmt(r['acc_at_random_time'], '.4f')} |")
    if len({r["seed"] for r in rows}) < 2:
        return "\n".join(lines)
    lines += ["", "Over seeds (mean ± std):", "",
              "- " + "\n- ".join(
                  f"{s['strategy']}: "
                  + (f"test bits/byte {_fmt(s['test_bits_per_byte'], '.4f')} "
                     f"± {_fmt(s['test_bits_per_byte_std'], '.4f')}, " if text else "")
                  + f"test acc {_fmt(s['test_accuracy'], '.4f')} "
                  f"± {_fmt(s['test_accuracy_std'], '.4f')}, "
                  f"train {_fmt(s['train_time_s'], '.1f')} ± {_fmt(s['train_time_s_std'], '.1f')} s, "
                  f"{_fmt(s['samples_per_s'], '.0f')} samples/s, {s['seeds']} seeds" for s in seed_summary(rows))]
    paired = paired_against_baselines(rows, "test_bits_per_byte" if text else "test_accuracy")
    if paired:
        what = "test bits per byte (lower is better)" if text else "test accuracy"
        lines += ["", f"Paired differences in {what} (selective minus baseline, same seed):", ""]
        lines += [f"- {p['strategy']} vs {p['baseline']}: {p['words']}" for p in paired]
    return "\n".join(lines)


def comparison_figures(results: Sequence[Result], reference: float | None = None) -> dict:
    """Accuracy against train wall-clock and against FLOPs (a band over seeds), and rate and threshold."""
    runs: dict[str, list[list[dict]]] = defaultdict(list)
    for r in results:
        runs[r.summary["strategy"]].append(_evaluated(r.history))
    rates = {r.summary["strategy"]: (r.history.series("activation_rate"), r.history.series("threshold"))
             for r in results
             if r.summary["strategy"] != "full" and r.summary.get("seed", 0) == results[0].summary.get("seed", 0)}
    return {"compare_accuracy_vs_time.png": plots.compare_bands(dict(runs), "train_time_s", "train wall-clock (s)",
                                                                reference=reference),
            "compare_accuracy_vs_flops.png": plots.compare_bands(dict(runs), "flops_spent", "FLOPs executed",
                                                                 reference=reference),
            "compare_rate_threshold.png": plots.compare_rates(rates)}
