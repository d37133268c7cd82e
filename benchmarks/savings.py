"""The honest savings benchmark: selection against budget-matched full data and a random subset, over seeds.

    python -m benchmarks.savings --data PATH [--quick] [--seeds 0,1,2] [--budget-epochs 6,16]
                                 [--budget-kind time|flops] [--json savings.json]

For each budget (the wall-clock of N full-data epochs, measured on this machine before the runs, or
with `--budget-kind flops` their FLOPs), every strategy and seed trains for exactly that budget with
its learning-rate schedule re-planned to anneal at the budget; the runs take turns in lockstep (the
run that has trained least goes next, a 20th of the budget), so the host's speed drift falls on all
of them alike. Two questions, each over seeds with a 95% t-interval:

1. Equal time (or equal FLOPs): at the budget, the best selective strategy minus the best baseline
   (the higher of budget-matched full data and a random subset per epoch; an entry such as
   `random:cooldown=8` is a baseline too), paired by seed.
2. Equal accuracy: the train wall-clock at which each selective strategy first reaches the
   budget-matched full run's final accuracy (same seed), as a fraction of that run's time; the
   FLOPs executed by then, as a fraction of full's, beside it.

Writes the JSON (`equal_time`, `equal_accuracy`, one entry per budget under `by_budget`) and a
figure per budget (accuracy against wall-clock, a band over seeds) beside it; the figures and
tables are also logged to a parent MLflow run per budget.

Every run checkpoints every 100 steps and at each epoch end (in --checkpoint-dir). A benchmark that was
stopped (killed, a machine handed back) continues with the same command plus `--resume`: the budgets
probed when it started are kept, finished runs are read back and the others continue from their newest
checkpoint, with their train clocks where the checkpoints left them; the JSON lists when each part ran.
A resume may add seeds (`--seeds 0` first, then `--seeds 0,1,2 --resume`): the finished seeds are read
back and the new ones run, each budget's in lockstep with each other. Seeds run in different parts are
paired within themselves (every strategy of a seed ran in the same lockstep), so the host's speed between
parts moves whole seeds, not differences; a part needs only the run.json and result.json files of the
finished runs, not their checkpoints, so a benchmark can continue on another machine of the same kind.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from functional_ast import io
from functional_ast.cli.flags import seed_list, strategy_list
from functional_ast.data.images import DataError
from functional_ast.edges import runs as run_folders
from functional_ast.edges import tracking
from functional_ast.edges.tracked import Tracking, tracked_compare
from functional_ast.report import plots, stats
from functional_ast.report import tables as report
from functional_ast.train import prepare
from functional_ast.train.config import ConfigError, TrainConfig, parse_variant
from functional_ast.train.trainer import full_epoch_cost

FULL_STRATEGIES = ("full", "random", "stale", "sundew_remembered")
TARGET_RATE = 0.3  # at 10% a random subset is 14 points below full on CIFAR-10 (README); 30% leaves selection room


def epoch_cost(data, model_spec: str, batch_size: int, seed: int, kind: str = "time") -> float:
    """Seconds (kind "time") or FLOPs (kind "flops") of one full-data epoch on this machine (`full_epoch_cost`)."""
    return full_epoch_cost(prepare.model_builder(model_spec, data), data, batch_size, seed, kind)


def _device_name(device: torch.device) -> str:
    """The device the runs trained on, as a reader would name it ("cpu", "cuda:0 (NVIDIA H200)")."""
    return f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)


def equal_time(rows: list[dict]) -> dict:
    """Best selective strategy (mean accuracy over seeds) minus the better baseline, paired by seed."""
    groups = report.by_strategy(rows)
    mean = {name: stats.mean_std([r["test_accuracy"] for r in group])[0] for name, group in groups.items()}
    best = max((n for n in groups if not report.is_baseline(n)), key=mean.get)
    baseline = max(filter(report.is_baseline, groups), key=mean.get)
    base = {r["seed"]: r["test_accuracy"] for r in groups[baseline]}
    pairs = [(r["test_accuracy"], base[r["seed"]]) for r in groups[best] if r["seed"] in base]
    d = stats.paired_difference([a for a, _ in pairs], [b for _, b in pairs])
    return dict(best=best, baseline=baseline, diff_pp=100 * d["diff"],
                ci95=[None if x is None else 100 * x for x in d["ci"]], seeds=d["n"],
                words=stats.describe_difference(d), rows=list(rows))


def equal_accuracy(results) -> dict:
    """For each selective strategy: time to reach full's final accuracy (same seed) / full's train time, and the
    FLOPs executed by then / full's FLOPs."""
    full = {r.summary["seed"]: r for r in results if r.summary["strategy"] == "full"}
    per_strategy: dict[str, list[dict]] = {}
    for r in results:
        name, seed = r.summary["strategy"], r.summary["seed"]
        if report.is_baseline(name) or seed not in full:
            continue
        goal, full_time = full[seed].summary["test_accuracy"], full[seed].summary["train_time_s"]
        full_flops = full[seed].summary["flops_spent"]
        reached = report.time_to_accuracy(r.history, goal)
        flops = report.time_to_accuracy(r.history, goal, axis="flops_spent")
        per_strategy.setdefault(name, []).append(dict(
            strategy=name, seed=seed, goal_accuracy=goal, full_time_s=full_time, reached_time_s=reached,
            time_ratio=None if reached is None else reached / full_time,
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
    reached = [s for s in summaries.values() if s["time_ratio"] is not None]
    best = min(reached, key=lambda s: s["time_ratio"]) if reached else (next(iter(summaries.values()), None))
    return dict(best=best["strategy"] if best else None, baseline="full",
                time_ratio=best["time_ratio"] if best else None, ci95=best["ci95"] if best else [None, None],
                flop_ratio=best["flop_ratio"] if best else None,
                reached_in=best["reached_in"] if best else None, seeds=len(full),
                strategies=summaries, rows=[row for s in summaries.values() for row in s["rows"]])


# The benchmark flags that decide its results: a --resume must give the same ones.
RESULT_FLAGS = ("data", "quick", "seeds", "budget_epochs", "budget_kind", "strategies", "model", "target_rate",
                "batch_size", "label_noise", "eval_points")


def _settings(args) -> dict:
    return {k: getattr(args, k) for k in RESULT_FLAGS}


def _started_budgets(checkpoints: Path, labels) -> set[str]:
    """The budgets whose comparison has run folders under `checkpoints` (what --resume continues)."""
    return {label for label in labels if any((checkpoints / f"savings-{label}").glob("*/run.json"))}


EXPERIMENT = "savings-benchmark"


def _configs(args, budget: float) -> dict[str, TrainConfig]:
    """Each entry of --strategies as the config it trains: 1 warm-up and 1 cool-down epoch (unless the entry
    names its own), for the budget in seconds or FLOPs; the seeds are the comparison's."""
    configs = {}
    for spec in args.strategies:
        name, overrides = parse_variant(spec)
        limit = {"time_budget" if args.budget_kind == "time" else "flop_budget": float(budget)}
        configs[spec] = TrainConfig(strategy=name, target_rate=args.target_rate, warmup_epochs=1, cooldown_epochs=1,
                                    batch_size=args.batch_size, label_noise=args.label_noise,
                                    options=overrides.pop("options", {}), **limit).replace(**overrides)
    return configs


def _tracking(args) -> Tracking:
    """Where the comparisons are tracked and checkpointed; the benchmark's settings as every run's params."""
    params = {k: ",".join(map(str, v)) if isinstance(v, list) else v for k, v in _settings(args).items()}
    return Tracking(uri=args.tracking_uri or tracking.DEFAULT_TRACKING_URI, experiment=EXPERIMENT,
                    checkpoint_dir=args.checkpoint_dir, checkpoint_every=args.checkpoint_every, log_model=False,
                    data_name=Path(args.data).name, params=dict(params, benchmark="savings"))


def _load_data(args):
    """The benchmark's data on the machine's accelerator (or CPU); --quick: 6,000 train / 2,000 test samples."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    quick = dict(limit_train=6000, limit_test=2000) if args.quick else {}
    return prepare.load_data(args.data, device=device, label_noise=args.label_noise, seed=0, **quick)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.savings", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="CIFAR-10 directory or .tar.gz (see python -m functional_ast --help)")
    p.add_argument("--quick", action="store_true",
                   help="6,000 train / 2,000 test samples, seeds 0,1 (24 min on this project's 2-core CPU machine)")
    p.add_argument("--seeds", type=seed_list, default=None, help="default 0,1,2 (quick: 0,1)")
    p.add_argument("--budget-epochs", default="6,16",
                   help="budgets in full-data epochs of this machine: short,long (one value: a single budget)")
    p.add_argument("--budget-kind", choices=("time", "flops"), default="time",
                   help="match wall-clock (default) or FLOPs executed; a FLOP budget is the FLOPs of N full epochs")
    p.add_argument("--strategies", type=strategy_list, default=list(FULL_STRATEGIES),
                   help="comma-separated; NAME:cooldown=N gives one entry its own cool-down (all-data epochs at "
                        "the end; every other entry has 1), e.g. full,stale,stale:cooldown=8")
    p.add_argument("--model", default="cnn")
    p.add_argument("--target-rate", type=float, default=TARGET_RATE)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--label-noise", type=float, default=0.0)
    p.add_argument("--eval-points", type=int, default=12, help="evaluations per run (about; the last is at the budget)")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--json", default="savings.json")
    p.add_argument("--checkpoint-dir", default=None,
                   help="where the runs keep their checkpoints (default: checkpoints/savings-benchmark/<json name> "
                        "beside the run store)")
    p.add_argument("--checkpoint-every", type=int, default=100,
                   help="each run also checkpoints every N steps (besides each epoch end); 0: at epoch ends only")
    p.add_argument("--resume", action="store_true",
                   help="continue a stopped benchmark (same flags): its budgets as first probed, finished runs read "
                        "back, the others from their newest checkpoint")
    args = p.parse_args(argv)
    args.seeds = args.seeds or ([0, 1] if args.quick else [0, 1, 2])
    if {report.is_baseline(s) for s in args.strategies} != {True, False}:
        print("error: --strategies needs a baseline (full or random) and a selective strategy", file=sys.stderr)
        return 2
    budgets = [float(b) for b in args.budget_epochs.split(",")]
    labels = ("short", "long") if len(budgets) == 2 else tuple(f"{b:g}-epochs" for b in budgets)
    args.checkpoint_dir = Path(args.checkpoint_dir or run_folders.checkpoint_root(
        args.tracking_uri or tracking.DEFAULT_TRACKING_URI, EXPERIMENT) / Path(args.json).stem)
    plan_path = args.checkpoint_dir / "benchmark.json"
    now = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    added = []  # seeds this --resume adds to the benchmark's
    try:
        if args.resume:
            if not plan_path.is_file():
                raise ConfigError(f"--resume: no benchmark to resume in {args.checkpoint_dir}; run the same command "
                                  "without --resume to start it (or pass the --checkpoint-dir it used)")
            plan = json.loads(plan_path.read_text())
            then = plan["settings"]
            differ = [f"{k}: {then.get(k)!r} then, {v!r} now" for k, v in _settings(args).items()
                      if then.get(k) != v and not (k == "seeds" and set(then[k]) < set(v))]
            if differ:
                raise ConfigError(f"--resume: the benchmark in {args.checkpoint_dir} was started with other flags "
                                  f"({'; '.join(differ)}); resume with the original flags (--seeds may add "
                                  "seeds, not drop them)")
            added = sorted(set(args.seeds) - set(then["seeds"]))
            if added:
                print(f"adding seeds {added} to the benchmark's {then['seeds']}", flush=True)
            plan["settings"], plan["parts"] = _settings(args), plan["parts"] + [now]
        data = _load_data(args)
        if not args.resume:
            plan = {"settings": _settings(args), "parts": [now],
                    "full_epoch_s": epoch_cost(data, args.model, args.batch_size, args.seeds[0]),
                    "full_epoch_flops": epoch_cost(data, args.model, args.batch_size, args.seeds[0], "flops")}
        args.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        io.atomic_write_json(plan_path, plan)
        epoch_s, epoch_flops = plan["full_epoch_s"], plan["full_epoch_flops"]
        resumable = _started_budgets(args.checkpoint_dir, labels) if args.resume else set()
        out = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
               "device": _device_name(data.device),
               "mode": "quick" if args.quick else "full", "seeds": args.seeds, "strategies": args.strategies,
               "target_rate": args.target_rate, "label_noise": args.label_noise, "budget_kind": args.budget_kind,
               "full_epoch_s": epoch_s, "full_epoch_flops": epoch_flops, "parts": plan["parts"], "by_budget": {}}
        if args.resume:
            print(f"resuming the benchmark started {plan['parts'][0]} (part {len(plan['parts'])}); budgets as "
                  "probed then", flush=True)
        print(f"one full-data epoch takes about {epoch_s:.1f} s and {epoch_flops:.3g} FLOPs here; budgets: "
              + ", ".join(f"{b:g} epochs = {b * epoch_s:.0f} s" for b in budgets)
              + ("" if args.budget_kind == "time" else " (matched in FLOPs)"), flush=True)
        runs, run_min = len(args.strategies) * len(args.seeds), sum(budgets) * epoch_s / 60
        this_part = f" ({len(args.strategies) * len(added) * run_min:.0f} min for the seeds added now)" if added else ""
        print(f"{runs} runs per budget ({len(args.strategies)} strategies x {len(args.seeds)} seeds): about "
              f"{runs * run_min:.0f} min of training in all{this_part}, plus evaluations", flush=True)
        for label, epochs in zip(labels, budgets):
            budget_s = epochs * epoch_s
            budget = budget_s if args.budget_kind == "time" else epochs * epoch_flops
            compared = tracked_compare(prepare.model_builder(args.model, data), data, _configs(args, budget),
                                       f"savings-{label}", _tracking(args), seeds=args.seeds,
                                       resume=label in resumable, eval_every=round(budget_s / args.eval_points, 3),
                                       model_label=prepare.model_label(args.model), progress=False)
            print("\n" + compared.table)
            print(f"Browse the runs: {tracking.ui_command(_tracking(args).uri, compared.experiment_id)}")
            results = compared.results
            rows = report.comparison_table(results)
            entry = {"budget_epochs": epochs, "budget_s": budget_s, "budget_kind": args.budget_kind,
                     "budget": budget, "equal_time": equal_time(rows),
                     "equal_accuracy": equal_accuracy(results) if "full" in args.strategies else None}
            figure = plots.compare_bands(
                {name: [report._evaluated(r.history) for r in results if r.summary["strategy"] == name]
                 for name in args.strategies},
                *(("train_time_s", "train wall-clock (s)") if args.budget_kind == "time"
                  else ("flops_spent", "training FLOPs executed")))
            path = Path(args.json).with_name(f"{Path(args.json).stem}-{label}.png")
            figure.savefig(path, dpi=120)
            plots.plt.close(figure)
            entry["figure"] = str(path)
            out["by_budget"][label] = entry
    except (DataError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    headline = out["by_budget"][labels[-1]]  # the longest budget given last
    out["equal_time"] = dict(headline["equal_time"], budget=labels[-1],
                             by_budget={k: v["equal_time"] for k, v in out["by_budget"].items()})
    out["equal_accuracy"] = dict(headline["equal_accuracy"] or {}, budget=out["equal_time"]["budget"],
                                 by_budget={k: v["equal_accuracy"] for k, v in out["by_budget"].items()})
    print(f"\nmachine: {out['machine']}; device {out['device']}; mode {out['mode']}; seeds {args.seeds}; "
          f"target rate {args.target_rate}; label noise {args.label_noise}; "
          f"one full epoch = {epoch_s:.1f} s, {epoch_flops:.3g} FLOPs")
    equal = "equal time" if args.budget_kind == "time" else "equal FLOPs"
    for label, entry in out["by_budget"].items():
        t = entry["equal_time"]
        size = f"{entry['budget_s']:.0f} s" if args.budget_kind == "time" else f"{entry['budget']:.3g} FLOPs"
        print(f"{label} budget ({entry['budget_epochs']:g} full epochs, {size}), {equal}: "
              f"{t['best']} minus {t['baseline']} = {t['words']}")
        a = entry["equal_accuracy"]
        if a and a["time_ratio"] is None:
            reached = ", ".join(f"{s['strategy']} {s['reached_in']}" for s in a["strategies"].values())
            print(f"{label} budget, equal accuracy: no selective strategy reached full's final accuracy in every "
                  f"seed ({reached})")
        elif a:
            ci = "" if a["ci95"][0] is None else f" (95% CI {a['ci95'][0]:.2f} to {a['ci95'][1]:.2f})"
            print(f"{label} budget, equal accuracy: {a['best']} reached full's final accuracy in {a['reached_in']}, "
                  f"at {a['time_ratio']:.2f}x of full's time{ci} and {a['flop_ratio']:.2f}x of its FLOPs")
    io.atomic_write_json(args.json, out)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
