"""The README's tables from a savings benchmark JSON: per budget, accuracy per seed, mean ± std, epochs,
throughput and FLOPs against full; the headline lines; every rule's paired differences; equal accuracy.

    python docs/savings-table.py docs/savings-full.json
"""

import json
import sys

from functional_ast import report, stats


def budget_markdown(label: str, entry: dict) -> str:
    rows = entry["equal_time"]["rows"]
    seeds = sorted({r["seed"] for r in rows})
    out = [f"#### {label} budget ({entry['budget_epochs']:g} full epochs, {entry['budget_s']:.0f} s)", "",
           f"| strategy | test acc, seed{'s' if len(seeds) > 1 else ''} {' / '.join(map(str, seeds))} | mean ± std "
           "| epochs | samples trained/s | FLOPs vs full in the same time |", "|---|---|---|---|---|---|"]
    for name, group in report.by_strategy(rows).items():
        group = sorted(group, key=lambda r: r["seed"])
        acc = [100 * r["test_accuracy"] for r in group]
        mean, std = stats.mean_std(acc)
        epochs = sorted({r["epochs"] for r in group})
        spread = f"{mean:.2f} ± {std:.2f}%" if len(acc) > 1 else "(1 seed)"
        out.append(f"| {name} | {' / '.join(f'{a:.2f}' for a in acc)}% | {spread} | "
                   f"{epochs[0] if len(epochs) == 1 else f'{epochs[0]}–{epochs[-1]}'} | "
                   f"{stats.mean_std([r['samples_per_s'] for r in group])[0]:.0f} | "
                   f"{' / '.join(format(r['flops_ratio_vs_full'], '.3f') for r in group)} |")
    t, a = entry["equal_time"], entry["equal_accuracy"]
    out += ["", f"    {label} budget, equal time: {t['best']} minus {t['baseline']} = {t['words']}"]
    if a and a["time_ratio"] is not None:
        ci = "" if a["ci95"][0] is None else f" (95% CI {a['ci95'][0]:.2f} to {a['ci95'][1]:.2f})"
        out.append(f"    {label} budget, equal accuracy: {a['best']} reached full's final accuracy in "
                   f"{a['reached_in']}, at {a['time_ratio']:.2f}x of full's time{ci} and {a['flop_ratio']:.2f}x "
                   "of its FLOPs")
    if a:
        for s in a["strategies"].values():
            ratio = "" if s["time_ratio"] is None else f", {s['time_ratio']:.2f}x of full's time"
            out.append(f"    equal accuracy, {s['strategy']}: reached in {s['reached_in']}{ratio}")
    if len(seeds) > 1:
        out += [""] + [f"    {p['strategy']} vs {p['baseline']}: {p['words']}"
                       for p in report.paired_against_baselines(rows)]
    return "\n".join(out)


def main(path: str) -> None:
    result = json.loads(open(path).read())
    print(f"machine: {result['machine']}; device {result['device']}; seeds {result['seeds']}; one full epoch "
          f"{result['full_epoch_s']:.1f} s; parts {', '.join(result['parts'])}\n")
    print("\n\n".join(budget_markdown(label, entry) for label, entry in result["by_budget"].items()))


if __name__ == "__main__":
    main(sys.argv[1])
