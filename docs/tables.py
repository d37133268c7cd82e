"""Tables from the committed benchmark JSON (standard library only: no torch, no functional_ast).

    python docs/tables.py                      # the map and the clean-data and text tables, as markdown
    python docs/tables.py --check              # exit 1 when a generated block differs from the JSON
    python docs/tables.py --write              # write every generated block into README.md and docs/results.md
    python docs/tables.py docs/results/savings-full/savings-full.json
                                               # one benchmark's tables: per budget, accuracy per seed,
                                               # mean ± std, epochs, throughput, FLOPs against full, the
                                               # headline lines, every rule's paired differences

Paired differences are recomputed from the per-seed rows of each JSON (selective minus baseline, same
seed) with a Student-t interval over the differences (n − 1 degrees of freedom, 95% two-sided), as the
benchmark computes them; `tests/test_results_table.py` checks them against the intervals the benchmark
wrote into the same files.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
RESULTS = DOCS / "results"
README = DOCS.parent / "README.md"
START, END = "<!-- results-table:start -->", "<!-- results-table:end -->"
TEXT_START, TEXT_END = "<!-- text-table:start -->", "<!-- text-table:end -->"
TEXT_KEY = "test_bits_per_byte"

# Student's t, 97.5% quantile (95% two-sided), df = 1 .. 30.
T975 = (12.7062, 4.30265, 3.18245, 2.77645, 2.57058, 2.44691, 2.36462, 2.30600, 2.26216, 2.22814,
        2.20099, 2.17881, 2.16037, 2.14479, 2.13145, 2.11991, 2.10982, 2.10092, 2.09302, 2.08596,
        2.07961, 2.07387, 2.06866, 2.06390, 2.05954, 2.05553, 2.05183, 2.04841, 2.04523, 2.04227)

BASELINES = ("full", "random")
EARLIER_DEFAULT = "sundew_remembered"  # the library's default rule until the regime map (now infobatch)

# The README's table: (result folder, budget key in its JSON, rule). Everything printed comes from the JSON.
HEADLINE = (
    ("savings-full", "short", "sundew_remembered"),
    ("savings-full", "short", "stale"),
    ("savings-full", "long", "sundew_remembered"),
    ("savings-full", "long", "stale"),
    ("savings-whole-infobatch", "6-epochs", "infobatch"),
    ("savings-quick-noise30-3seeds", "16-epochs", "small_loss"),
    ("savings-h100-noise30-short", "6-epochs", "small_loss"),
)
# The README's text table: (result folder, budget key, rule); "rho1" is the JSON's Rho-1 selective-LM entry.
TEXT_HEADLINE = (
    ("savings-lm-quick", "short", "sundew_remembered"),
    ("savings-lm-quick", "short", "small_loss"),
    ("savings-lm-quick", "short", "rho1"),
    ("savings-lm-quick", "long", "sundew_remembered"),
    ("savings-lm-quick", "long", "small_loss"),
    ("savings-lm-quick", "long", "rho1"),
)


def t975(df: int) -> float:
    if not 1 <= df <= len(T975):
        raise ValueError(f"t table covers df 1..{len(T975)}, got {df}")
    return T975[df - 1]


def mean_std(xs: list[float]) -> tuple[float, float]:
    mean = math.fsum(xs) / len(xs)
    if len(xs) < 2:
        return mean, 0.0
    return mean, math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


def interval(xs: list[float]) -> dict:
    """Mean of xs with its 95% t-interval (low and high are None for a single value)."""
    mean, std = mean_std(xs)
    if len(xs) < 2:
        return {"mean": mean, "low": None, "high": None, "n": len(xs)}
    half = t975(len(xs) - 1) * std / math.sqrt(len(xs))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(xs)}


def load(name: str) -> dict:
    return json.loads((RESULTS / name / f"{name}.json").read_text())


def by_strategy(rows: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["strategy"], []).append(row)
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in groups.items()}


def is_baseline(name: str) -> bool:
    return name.split(":")[0] in BASELINES


def paired(rows: list[dict], strategy: str, baseline: str, key: str = "test_accuracy", scale: float = 100.0
           ) -> dict | None:
    """strategy minus baseline over the seeds both ran, in percentage points (accuracy) or `scale` times `key`'s
    unit (None if no common seed)."""
    groups = by_strategy(rows)
    if strategy not in groups or baseline not in groups:
        return None
    base = {r["seed"]: r[key] for r in groups[baseline]}
    diffs = [scale * (r[key] - base[r["seed"]]) for r in groups[strategy] if r["seed"] in base]
    return interval(diffs) if diffs else None


def signed(v: float, digits: int = 2) -> str:
    return f"{v:+.{digits}f}".replace("-", "−")


def plain(v: float) -> str:
    return f"{v:.2f}".replace("-", "−")


def words(d: dict | None, digits: int = 2) -> str:
    if d is None:
        return "not run"
    if d["low"] is None:
        return f"{signed(d['mean'], digits)} (1 seed)"
    return f"{signed(d['mean'], digits)} ({signed(d['low'], digits)} to {signed(d['high'], digits)})"


def machine(result: dict) -> str:
    device = result.get("device", "")
    if device.startswith("cuda") and "(" in device:
        return device[device.index("(") + 1:device.rindex(")")].replace("NVIDIA ", "")
    threads = [p.strip() for p in result["machine"].split(",") if "thread" in p]
    if not threads:
        return result["machine"]
    return "CPU, 1 thread" if threads[0] == "1 threads" else f"CPU, {threads[0]}"


def setting(result: dict, entry: dict) -> str:
    data = "whole CIFAR-10" if result["mode"] == "full" else "CIFAR-10, 6,000-image subset"
    noise = f"{100 * result['label_noise']:g}% label noise" if result["label_noise"] else "clean"
    budget = (f"{entry['budget_epochs']:g} full epochs' FLOPs" if entry.get("budget_kind") == "flops" else
              f"{entry['budget_epochs']:g} full epochs' time ({entry['budget_s']:.0f} s)")
    return f"{noise}, {data}, {budget}"


def to_accuracy(entry: dict, strategy: str, key: str = "equal_accuracy") -> str:
    s = (entry.get(key) or {}).get("strategies", {}).get(strategy)
    if s is None:
        return "not measured"
    if s["time_ratio"] is None:
        return f"not in every seed ({s['reached_in'].replace(' seeds', '')})"
    low, high = s["ci95"]
    ci = "" if low is None else f" ({plain(low)} to {plain(high)})"
    return f"{s['time_ratio']:.2f}×{ci}"


def readme_table() -> str:
    """The clean-data headline table (docs/results.md, once the README's): one row per (setting, rule) in
    HEADLINE."""
    out = ["| setting | machine | rule | minus full data, pp (95% CI) | minus random subset, pp (95% CI) "
           "| time to full's final accuracy | seeds | result |",
           "|---|---|---|---|---|---|---|---|"]
    for name, budget, rule in HEADLINE:
        result = load(name)
        entry = result["by_budget"][budget]
        rows = entry["equal_time"]["rows"]
        full, rand = paired(rows, rule, "full"), paired(rows, rule, "random")
        seeds = len({r["seed"] for r in rows if r["strategy"] == rule})
        label = f"`{rule}` (the default then)" if rule == EARLIER_DEFAULT else f"`{rule}`"
        flops = entry.get("budget_kind") == "flops"  # its wall-clock need not be quiet: FLOPs to full's accuracy
        reached = to_full(entry, rule) if flops else to_accuracy(entry, rule)
        if flops and "×" in reached:
            reached += " of its FLOPs"
        out.append(f"| {setting(result, entry)} | {machine(result)} | {label} | {words(full)} | {words(rand)} "
                   f"| {reached} | {seeds} | [{name}](results/{name}/) |")
    return "\n".join(out)


def text_setting(result: dict, entry: dict) -> str:
    text = result["text"]
    budget = f"{entry['budget_epochs']:g} full epochs' time ({entry['budget_s']:.0f} s)"
    return f"{text['name']}, {text['train_bytes'] / 1e3:,.0f} KB of training text, {budget}"


def text_rows(entry: dict, rule: str) -> tuple[list[dict], str, dict]:
    """The equal-time rows with `rule`'s (Rho-1's rows added for "rho1"), the rule's name in them, and the
    equal-bits-per-byte entry that holds the rule."""
    rows, equal = entry["equal_time"]["rows"], entry.get("equal_metric") or {}
    if rule != "rho1":
        return rows, rule, equal
    rho1 = entry["selective_lm"]
    return rows + rho1["rows"], rho1["strategy"], {"strategies": {rho1["strategy"]: rho1["equal_metric"]}}


def text_table() -> str:
    """The text headline table (docs/results.md): one row per (setting, rule) in TEXT_HEADLINE, in bits per
    byte."""
    out = ["| setting | machine | rule | minus full data, bits/byte (95% CI) | minus random subset, bits/byte (95% CI) "
           "| time to full's final bits/byte | seeds | result |",
           "|---|---|---|---|---|---|---|---|"]
    for name, budget, rule in TEXT_HEADLINE:
        result = load(name)
        entry = result["by_budget"][budget]
        rows, strategy, equal = text_rows(entry, rule)
        full, rand = (paired(rows, strategy, base, TEXT_KEY, 1.0) for base in ("full", "random"))
        seeds = len({r["seed"] for r in rows if r["strategy"] == strategy})
        label = "Rho-1 token selection, keep " + f"{entry['selective_lm']['keep']:g}" if rule == "rho1" else f"`{rule}`"
        out.append(f"| {text_setting(result, entry)} | {machine(result)} | {label} | {words(full, 3)} "
                   f"| {words(rand, 3)} | {to_accuracy({'equal_metric': equal}, strategy, 'equal_metric')} "
                   f"| {seeds} | [{name}](results/{name}/) |")
    return "\n".join(out)


# --------------------------------------------------------------------------- the regime map

MAP_START, MAP_END = "<!-- map-table:start -->", "<!-- map-table:end -->"
DETAIL_START, DETAIL_END = "<!-- map-detail:start -->", "<!-- map-detail:end -->"
# The map's cells in the order the tables show them (functional_ast.pays.regimes); a cell whose JSON is not
# committed yet is left out of the tables (and named as missing beneath them).
MAP = ("clean", "noise20", "noise40", "lt10", "lt100", "dup50", "finetune", "text-clean", "text-junk30")
REGIMES = {"clean": "clean", "noise20": "20% label noise", "noise40": "40% label noise",
           "lt10": "long-tailed, ratio 10", "lt100": "long-tailed, ratio 100",
           "dup50": "50% near-duplicates of 1% of the images",
           "finetune": "fine-tuning: 4 vehicle classes from a net pretrained on the 6 animal ones",
           "text-clean": "text, clean", "text-junk30": "text, 30% junk files"}


def map_result(regime: str) -> dict | None:
    path = RESULTS / f"map-{regime}" / f"map-{regime}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def metric_of(result: dict) -> tuple[str, float, bool, str, int]:
    """(row key, scale, higher is better, unit, digits) of a result's headline metric."""
    if result.get("metric", "accuracy") == "accuracy":
        return "test_accuracy", 100.0, True, "pp", 2
    return f"test_{result['metric']}", 1.0, result.get("higher_is_better", False), "bits/byte", 3


def verdict(d: dict | None, higher: bool) -> str:
    """pays / ties / loses by the 95% interval of (rule minus baseline); too few seeds below 3."""
    if d is None or d["n"] < 3:
        return "too few seeds"
    if d["low"] > 0 or d["high"] < 0:
        return "**pays**" if (d["low"] > 0) == higher else "loses"
    return "ties"


def bonferroni(d: dict | None, rules: int) -> dict | None:
    """The interval of `d` at a 95% family-wise level over `rules` rules chosen from (Bonferroni), for 3 seeds
    (Student's t with 2 degrees of freedom has a closed-form quantile: t = u sqrt(2 / (1 - u^2)), u = 2q - 1)."""
    if d is None or d["n"] != 3 or d["low"] is None:
        return None
    u = 2 * (1 - 0.05 / (2 * rules)) - 1
    half = (d["high"] - d["mean"]) / t975(2) * u * math.sqrt(2 / (1 - u * u))
    return dict(d, low=d["mean"] - half, high=d["mean"] + half)


def map_data(result: dict) -> str:
    regime = result.get("regime") or {}
    if result.get("task") == "lm":
        text = result.get("text", {})
        return f"{text.get('name', 'text')}, {text.get('train_bytes', 0) / 1e3:,.0f} KB of training text"
    return f"CIFAR-10, {regime.get('train_samples', 0):,} train / {regime.get('test_samples', 0):,} test images"


def to_full(entry: dict, rule: str) -> str:
    """FLOPs (a FLOP budget: what was matched) to full data's final metric, as a share of full's, over seeds."""
    equal = entry.get("equal_accuracy") or entry.get("equal_metric") or {}
    s = equal.get("strategies", {}).get(rule)
    if s is None:
        return "not measured"
    if s.get("flop_ratio") is None:
        return f"not in every seed ({s['reached_in'].replace(' seeds', '')})"
    low, high = s.get("flop_ci95") or (None, None)
    ci = "" if low is None else f" ({plain(low)} to {plain(high)})"
    return f"{s['flop_ratio']:.2f}×{ci}"


def map_table() -> str:
    """The README's map: per regime and budget, the best rule against the better baseline at equal FLOPs (95%
    interval, 3 seeds), its FLOPs to full data's final metric, the verdict."""
    out = ["| regime | data | budget, full-data epochs of FLOPs | best rule | minus the better baseline (95% CI) "
           "| FLOPs to full's final metric | verdict | result |",
           "|---|---|---|---|---|---|---|---|"]
    for regime, result, (key, scale, higher, unit, digits) in measured():
        for label, entry in result["by_budget"].items():
            t = entry["equal_time"]  # the best rule and the better baseline by their means, as the benchmark chose
            best, baseline, rows = t["best"], t["baseline"], t["rows"]
            d = paired(rows, best, baseline, key, scale)
            out.append(f"| {REGIMES[regime]} | {map_data(result)} | {entry['budget_epochs']:g} ({label}) | "
                       f"`{best}` − `{baseline}` | {words(d, digits)} {unit} | {to_full(entry, best)} | "
                       f"{verdict(d, higher)} | [map-{regime}](docs/results/map-{regime}/) |")
    missing = map_missing()
    if missing:
        out += ["", f"Not measured yet: {'; '.join(REGIMES[r] for r in missing)} (`python -m benchmarks.regime_map "
                f"--data PATH --only {','.join(missing)}`, which resumes where a stopped map left off)."]
    return "\n".join(out)


def measured():
    """(regime, its result, `metric_of` it) for every committed cell, in the map's order."""
    for regime in MAP:
        result = map_result(regime)
        if result is not None:
            yield regime, result, metric_of(result)


def map_missing() -> list[str]:
    return [r for r in MAP if map_result(r) is None]


def map_command(regime: str, result: dict) -> str:
    """The command that makes a cell's JSON (PATH: CIFAR-10; the fine-tuning start: `benchmarks.regime_map`'s
    network pretrained on the 6 animal classes)."""
    data = "" if result.get("task") == "lm" else " --data PATH"
    start = " --init-from PRETRAINED" if regime == "finetune" else ""
    return (f"python -m functional_ast savings --regime {regime} --quick --budget-kind flops --seeds 0,1,2 "
            f"--strategies {','.join(result['strategies'])}{data}{start} --json "
            f"docs/results/map-{regime}/map-{regime}.json")


def map_detail() -> str:
    """docs/results.md's map: per regime, every rule minus full data and minus the random subset at each budget
    (95% intervals over 3 seeds), Rho-1's runs (its reference paid, and given free), the entries a budget refused,
    and the best rule's interval at a family-wise 95% over all the regime's rules (Bonferroni)."""
    out = []
    for regime, result, (key, scale, higher, unit, digits) in measured():
        labels = list(result["by_budget"])
        out += [f"#### {REGIMES[regime]} ({map_data(result)}; {unit}, {'higher' if higher else 'lower'} is better)",
                "", f"`{map_command(regime, result)}`", "",
                "| rule | " + " | ".join(f"{lb}: minus full | {lb}: minus random" for lb in labels) + " |",
                "|---|" + "---|---|" * len(labels)]
        rows_by = {lb: list(e["equal_time"]["rows"]) for lb, e in result["by_budget"].items()}
        for lb, e in result["by_budget"].items():
            for how in (e.get("selective_lm") or {}).values():
                rows_by[lb] += [dict(r, strategy=how["strategy"]) for r in how["rows"]]
        names = list(dict.fromkeys(r["strategy"] for rows in rows_by.values() for r in rows))
        for name in filter(lambda n: not is_baseline(n), names):
            cells = []
            for lb in labels:
                rows = rows_by[lb]
                if not any(r["strategy"] == name for r in rows):
                    cells += ["refused: budget too small", ""] if name in result["by_budget"][lb].get("refused", {}) \
                        else ["not run", ""]
                    continue
                cells += [words(paired(rows, name, base, key, scale), digits) for base in ("full", "random")]
            out.append(f"| `{name}` | " + " | ".join(cells) + " |")
        out.append("")
        for lb, e in result["by_budget"].items():
            t = e["equal_time"]
            k = len([n for n in by_strategy(t["rows"]) if not is_baseline(n)])
            d = paired(t["rows"], t["best"], t["baseline"], key, scale)
            b = bonferroni(d, k)
            family = "" if b is None else (f"; over the {k} rules it was chosen from (Bonferroni): "
                                           f"{words(b, digits)}, {verdict(b, higher).strip('*')}")
            refused = "; refused: " + ", ".join(f"`{n}`" for n in e.get("refused", {})) if e.get("refused") else ""
            out.append(f"- {lb} ({e['budget_epochs']:g} epochs of FLOPs): best `{t['best']}` − `{t['baseline']}` = "
                       f"{words(d, digits)} {unit}, {verdict(d, higher).strip('*')}{family}{refused}.")
        out.append("")
    return "\n".join(out).rstrip()


DEFAULT_START, DEFAULT_END = "<!-- map-default:start -->", "<!-- map-default:end -->"


def map_cells() -> list[tuple[str, str, dict, bool, str, int]]:
    """Every measured cell of the map: (regime, budget label, {rule: its paired difference from full data}, higher is
    better, unit, digits)."""
    cells = []
    for regime, result, (key, scale, higher, unit, digits) in measured():
        for label, entry in result["by_budget"].items():
            rows = entry["equal_time"]["rows"]
            rules = [n for n in by_strategy(rows) if not is_baseline(n)]
            cells.append((regime, label, {n: paired(rows, n, "full", key, scale) for n in rules}, higher, unit, digits))
    return cells


def default_ranking() -> list[tuple[str, int, float, str]]:
    """The rules run in every measured cell, safest first: by the cells in which they lose to budget-matched full
    data (95% interval below it), then by their mean rank among the cell's rules by mean difference from full data
    (unitless, so text and image cells count alike). (rule, losses, mean rank, its worst cell against full data)."""
    cells = map_cells()
    if not cells:
        return []
    common = set.intersection(*(set(c[2]) for c in cells))
    ranked = []
    for rule in common:
        losses, ranks, worst = 0, [], None
        for regime, label, diffs, higher, unit, digits in cells:
            losses += verdict(diffs[rule], higher) == "loses"
            order = sorted(diffs, key=lambda n: -diffs[n]["mean"] if higher else diffs[n]["mean"])
            ranks.append(order.index(rule) + 1)
            toward = diffs[rule]["mean"] * (1 if higher else -1)  # positive: better than full data
            if worst is None or toward < worst[0]:
                worst = (toward, f"{signed(diffs[rule]['mean'], digits)} {unit} ({REGIMES[regime]}, {label})")
        ranked.append((rule, losses, sum(ranks) / len(ranks), worst[1]))
    return sorted(ranked, key=lambda r: (r[1], r[2], r[0]))


def default_table() -> str:
    """docs/results.md's ranking of the rules for the library's default (`default_ranking`)."""
    cells = map_cells()
    out = [f"Over the {len(cells)} measured cells:", "",
           "| rank | rule | cells it loses to full data in | mean rank by difference from full (1 = best) "
           "| its worst cell against full data (mean) |", "|---|---|---|---|---|"]
    for i, (rule, losses, rank, worst) in enumerate(default_ranking(), 1):
        out.append(f"| {i} | `{rule}` | {losses} of {len(cells)} | {rank:.1f} | {worst} |")
    return "\n".join(out)


# --------------------------------------------------------------------------- the speed figures the docs quote


def step_speed_row() -> str:
    """docs/results.md's row for the committed CPU quick step benchmark (step-speed-quick)."""
    d = load("step-speed-quick")
    r, ips = d["ratios"], d["images_per_s"]
    f, p = ips["functional_eager"], ips["plain_eager"]
    return (f"| CPU, quick ({d['repeats']} × {d['steps_per_block']}, paired per repeat), one quiet run "
            f"([JSON](results/step-speed-quick/)) | `python -m benchmarks.step_speed --quick --device cpu` | "
            f"functional eager / plain eager = **{r['functional_eager/plain_eager']:.3f}** ({f['median']:.0f} "
            f"against {p['median']:.0f} images/s; spread {f['min']:.0f}–{f['max']:.0f} and {p['min']:.0f}–"
            f"{p['max']:.0f}); compiled / plain eager = {r['functional_compiled/plain_eager']:.2f}; channels-last "
            f"/ NCHW = {r['functional_channels_last/functional_eager']:.2f}; memory functional / plain = "
            f"{r['memory functional_eager/plain_eager']:.2f} |")


def torchrl_table() -> str:
    """docs/results.md's torchrl table (torchrl-choice): each job and size, both times and their ratio."""
    d = load("torchrl-choice")
    out = ["| job | windows | ours, ms a step | torchrl, ms a step | torchrl / ours |", "|---|---|---|---|---|"]
    out += [f"| {r['job']} | {r['n']:,} | {r['ours_ms']:.2f} | {r['torchrl_ms']:.2f} | {r['ratio']:.2f} |"
            for r in d["rows"]]
    return "\n".join(out)


def adapter_rows() -> str:
    """docs/results.md's rows for the adapters' overhead (adapter-overhead): each adapter against the plain loop."""
    d = load("adapter-overhead")["variants"]
    names = {"selector": "`Selector` (your DataLoader, `selector.loss(index, losses)`)",
             "sampler": "`Sampler` (`DataLoader(batch_sampler=sampler)`, `sampler.loss(index, losses)`)"}
    return "\n".join(f"| {names[k]} | **{d[k]['throughput_vs_plain']:.3f}×** ({min(d[k]['paired']):.3f} to "
                     f"{max(d[k]['paired']):.3f}) | {d[k]['adapter_ms_per_step']:+.2f} ms (plain's epoch "
                     f"{d['plain']['median_s']:.2f} s over {d['plain']['steps']} steps) |" for k in names)


def kill_figure() -> str:
    """The kill-anywhere benchmark's headline (kill-anywhere), as README.md and docs/results.md quote it."""
    d = load("kill-anywhere")
    return (f"{d['passed']} of {d['trials']} runs, {d['killed']} of them killed before their end, finished "
            f"bit-identical to the uninterrupted run ({d['killed_before_the_end']} SIGKILLs)")


def kill_table() -> str:
    """docs/results.md's table of where the kill-anywhere benchmark's kills landed, by kind."""
    d = load("kill-anywhere")
    out = ["| kill aimed at | kills | where they landed |", "|---|---|---|"]
    out += [f"| {kind} | {sum(c.values())} | " + ", ".join(f"{k} {n}" for k, n in sorted(c.items())) + " |"
            for kind, c in d["landed"].items()]
    return "\n".join(out)


def quoted_speeds() -> dict[str, list[str]]:
    """The speed figures README.md and docs/results.md quote, as each quotes them, from the committed JSON."""
    step = load("step-speed-quick")["ratios"]["functional_eager/plain_eager"]
    text = load("lm-speed-quick")["ratios"]["functional_eager/plain_eager"]["ratio"]
    bf16 = load("precision-speed-quick")["results"]["bf16-mixed"]["ratio"]
    draw = {r["n"]: r for r in load("torchrl-choice")["rows"] if r["job"].startswith("prioritised")}
    return {"README.md": [f"(images {step:.3f}, text {text:.3f}", f"bf16-mixed runs at {bf16:.2f}×",
                          f"{draw[1_000_000]['ours_ms']:.0f} ms a step at 1M windows and "
                          f"{draw[10_000_000]['ours_ms']:.0f} ms at 10M", kill_figure()],
            "docs/results.md": [step_speed_row(), torchrl_table(), f"functional/plain = {text:.3f}", adapter_rows(),
                                kill_figure(), kill_table()]}


def readme_block(text: str, start: str = START, end: str = END) -> str:
    """What README.md holds between a table's markers (stripped)."""
    if start not in text or end not in text:
        raise ValueError(f"README.md lacks the markers {start} and {end}")
    return text[text.index(start) + len(start):text.index(end)].strip()


def budget_markdown(label: str, entry: dict) -> str:
    """One budget of a benchmark JSON, as the old docs/savings-table.py printed it."""
    rows = entry["equal_time"]["rows"]
    seeds = sorted({r["seed"] for r in rows})
    out = [f"#### {label} budget ({entry['budget_epochs']:g} full epochs, {entry['budget_s']:.0f} s)", "",
           f"| strategy | test acc, seed{'s' if len(seeds) > 1 else ''} {' / '.join(map(str, seeds))} | mean ± std "
           "| epochs | samples trained/s | FLOPs vs full in the same time |", "|---|---|---|---|---|---|"]
    for name, group in by_strategy(rows).items():
        acc = [100 * r["test_accuracy"] for r in group]
        mean, std = mean_std(acc)
        epochs = sorted({r["epochs"] for r in group})
        spread = f"{mean:.2f} ± {std:.2f}%" if len(acc) > 1 else "(1 seed)"
        flops = " / ".join("n/a" if r.get("flops_ratio_vs_full") is None else f"{r['flops_ratio_vs_full']:.3f}"
                           for r in group)
        out.append(f"| {name} | {' / '.join(f'{a:.2f}' for a in acc)}% | {spread} | "
                   f"{epochs[0] if len(epochs) == 1 else f'{epochs[0]}–{epochs[-1]}'} | "
                   f"{mean_std([r['samples_per_s'] for r in group])[0]:.0f} | {flops} |")
    t, a = entry["equal_time"], entry.get("equal_accuracy")
    out += ["", f"    {label} budget, equal time: {t['best']} minus {t['baseline']} = {t['words']}"]
    if a and a.get("time_ratio") is not None:
        ci = "" if a["ci95"][0] is None else f" (95% CI {a['ci95'][0]:.2f} to {a['ci95'][1]:.2f})"
        flop = "" if a.get("flop_ratio") is None else f" and {a['flop_ratio']:.2f}x of its FLOPs"
        out.append(f"    {label} budget, equal accuracy: {a['best']} reached full's final accuracy in "
                   f"{a['reached_in']}, at {a['time_ratio']:.2f}x of full's time{ci}{flop}")
    for s in (a or {}).get("strategies", {}).values():
        ratio = "" if s["time_ratio"] is None else f", {s['time_ratio']:.2f}x of full's time"
        out.append(f"    equal accuracy, {s['strategy']}: reached in {s['reached_in']}{ratio}")
    if len(seeds) > 1:
        out.append("")
        groups = by_strategy(rows)
        for name in filter(lambda n: not is_baseline(n), groups):
            for base in filter(is_baseline, groups):
                d = paired(rows, name, base)
                ci = "no CI" if d["low"] is None else f"95% CI {signed(d['low'])} to {signed(d['high'])}"
                out.append(f"    {name} vs {base}: {signed(d['mean'])} pp ({ci}, {d['n']} seeds)")
    return "\n".join(out)


def benchmark_markdown(path: str) -> str:
    result = json.loads(Path(path).read_text())
    head = (f"machine: {result['machine']}; device {result.get('device', 'n/a')}; seeds {result['seeds']}; "
            f"label noise {result.get('label_noise', 0):g}; one full epoch {result['full_epoch_s']:.1f} s")
    return head + "\n\n" + "\n\n".join(budget_markdown(k, e) for k, e in result["by_budget"].items())


RESULTS_MD = DOCS / "results.md"
# Every generated block: (file, its generator, its markers). README.md holds the map; docs/results.md its detail and
# the clean-data and text tables the map's cells stand beside.
BLOCKS = ((README, lambda: map_table(), MAP_START, MAP_END),
          (RESULTS_MD, lambda: map_detail(), DETAIL_START, DETAIL_END),
          (RESULTS_MD, lambda: default_table(), DEFAULT_START, DEFAULT_END),
          (RESULTS_MD, lambda: readme_table(), START, END),
          (RESULTS_MD, lambda: text_table(), TEXT_START, TEXT_END))


def main(argv: list[str]) -> int:
    if not argv:
        print(map_table() + "\n\n" + map_detail() + "\n\n" + readme_table() + "\n\n" + text_table())
        return 0
    if argv == ["--check"]:
        for path, table, start, end in BLOCKS:
            if readme_block(path.read_text(), start, end) != table():
                print(f"{path.name}'s table between {start} and {end} differs from the JSON: run python "
                      "docs/tables.py --write", file=sys.stderr)
                return 1
        return 0
    if argv == ["--write"]:
        for path, table, start, end in BLOCKS:
            text = path.read_text()
            head, tail = text[:text.index(start) + len(start)], text[text.index(end):]
            path.write_text(f"{head}\n{table()}\n{tail}")
        return 0
    for path in argv:
        print(benchmark_markdown(path))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
