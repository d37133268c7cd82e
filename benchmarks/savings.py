"""The honest savings benchmark: selection against budget-matched full data and a random subset, over seeds.

    python -m benchmarks.savings --data PATH [--quick] [--seeds 0,1,2] [--budget-epochs 6,16]
                                 [--budget-kind time|flops] [--json savings.json]
    python -m benchmarks.savings --task lm [--data PATH] [--quick] ...   (text: `savings_text`)

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

On text (`--task lm`: byte-level language modelling of the Python standard library's source, or --data) the
metric is held-out bits per byte, lower is better: "best" and "reached" follow the task's `higher_is_better`,
and the second question is equal bits per byte (`equal_metric`). There the strategies select from the first
step (no warm-up or cool-down epoch unless given), and Rho-1's selective LM (`fit_selective`, its reference epoch
paid inside the budget) runs beside them per seed (`selective_lm`), after each budget's comparison.

Writes the JSON (`equal_time`, `equal_accuracy` (text: `equal_metric`), one entry per budget under `by_budget`)
and a figure per budget (the metric against wall-clock, a band over seeds) beside it; the figures and
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
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks import regimes, savings_text
from functional_ast import io
from functional_ast.cli.flags import class_list, seed_list, strategy_list
from functional_ast.data.images import DataError
from functional_ast.edges import pretrained, store
from functional_ast.edges import runs as run_folders
from functional_ast.edges.tracked import Tracking, tracked_compare
from functional_ast.report import plots, stats
from functional_ast.report import tables as report
from functional_ast.tasks import image_classification, language_modelling
from functional_ast.train import budget as budget_rules
from functional_ast.train import prepare
from functional_ast.train.config import PRECISIONS, ConfigError, TrainConfig, parse_variant
from functional_ast.train.trainer import full_epoch_cost

FULL_STRATEGIES = ("full", "random", "stale", "sundew_remembered")
TEXT_STRATEGIES = ("full", "random", "small_loss", "sundew_remembered")
TARGET_RATE = 0.3  # at 10% a random subset is 14 points below full on CIFAR-10 (README); 30% leaves selection room


@dataclass(frozen=True)
class Metric:
    """The headline metric of a task: its key in a run's rows and summary ("test_<headline>"), its direction, and
    the unit (and scale from the metric) its differences are written in."""

    headline: str
    higher_is_better: bool
    unit: str = "pp"
    scale: float = 100.0
    from_record: object = None  # the task's `from_record`, for a headline an epoch record does not hold

    @property
    def key(self) -> str:
        return f"test_{self.headline}"

    def of(self, record: dict) -> float:
        """The metric in an epoch record (its test accuracy and loss) or a summary."""
        if self.key in record:
            return record[self.key]
        return self.from_record({"accuracy": record["test_accuracy"], "loss": record["test_loss"]})[self.headline]

    def better(self, a: float, b: float) -> bool:
        """Whether `a` is at least as good as `b`."""
        return a >= b if self.higher_is_better else a <= b


def metric_of(task) -> Metric:
    """A task's headline as a Metric: accuracy in percentage points, any other in its own units."""
    if task.headline == "accuracy":
        return Metric("accuracy", task.higher_is_better)
    return Metric(task.headline, task.higher_is_better, unit=task.headline.replace("_", " "), scale=1.0,
                  from_record=task.from_record)


ACCURACY = metric_of(image_classification())


def epoch_cost(data, build, batch_size: int, seed: int, kind: str = "time", task=None, precision: str = "32",
               compile: bool = False) -> float:
    """Seconds (kind "time") or FLOPs (kind "flops") of one full-data epoch on this machine (`full_epoch_cost`)."""
    return full_epoch_cost(build, data, batch_size, seed, kind, task=task, precision=precision, compile=compile)


def _device_name(device: torch.device) -> str:
    """The device the runs trained on, as a reader would name it ("cpu", "cuda:0 (NVIDIA H200)")."""
    return f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)


def equal_time(rows: list[dict], metric: Metric = ACCURACY) -> dict:
    """Best selective strategy (mean metric over seeds, by its direction) minus the better baseline, paired by
    seed; the difference in the metric's unit (`diff`; for accuracy also `diff_pp`), `better` naming the side."""
    groups = report.by_strategy(rows)
    mean = {name: stats.mean_std([r[metric.key] for r in group])[0] for name, group in groups.items()}
    pick = max if metric.higher_is_better else min
    best = pick((n for n in groups if not report.is_baseline(n)), key=mean.get)
    baseline = pick(filter(report.is_baseline, groups), key=mean.get)
    base = {r["seed"]: r[metric.key] for r in groups[baseline]}
    pairs = [(r[metric.key], base[r["seed"]]) for r in groups[best] if r["seed"] in base]
    d = stats.paired_difference([a for a, _ in pairs], [b for _, b in pairs])
    better = _better(d, metric, "selective", "baseline")
    out = dict(best=best, baseline=baseline, verdict=verdict(better), metric=metric.headline,
               higher_is_better=metric.higher_is_better,
               unit=metric.unit, diff=metric.scale * d["diff"],
               ci95=[None if x is None else metric.scale * x for x in d["ci"]], seeds=d["n"], better=better,
               words=stats.describe_difference(d, metric.unit, metric.scale), rows=list(rows))
    if metric.headline == "accuracy":
        out["diff_pp"] = out["diff"]
    return out


def verdict(better: str) -> str:
    """The one word a map cell gets: "pays" only when the interval excludes 0 in the rule's favour, "loses" when it
    excludes 0 against it, "ties" otherwise (and "too few seeds" below 3)."""
    return {"selective": "pays", "baseline": "loses", "not distinguishable": "ties"}.get(better, "too few seeds")


def _better(d: dict, metric: Metric, first: str, second: str) -> str:
    """Which side of a paired difference (first minus second) is better by the metric's direction, if either."""
    if d["n"] < 3:
        return "too few seeds to call"
    if not d["excludes_zero"]:
        return "not distinguishable"
    return first if (d["ci"][0] > 0) == metric.higher_is_better else second


def time_to_reach(history, goal: float, metric: Metric = ACCURACY, axis: str = "train_time_s") -> float | None:
    """`axis` (train wall-clock, FLOPs) at the end of the first evaluated epoch whose metric is at least as good
    as `goal` in the metric's direction (None if never)."""
    for record in history.epochs:
        value = metric.of(record) if record["test_accuracy"] == record["test_accuracy"] else math.nan
        if value == value and metric.better(value, goal):
            return record[axis]
    return None


def _is_baseline(name: str) -> bool:
    """`report.is_baseline`, False for an entry that is no registered rule (Rho-1's "rho1:keep=0.6")."""
    try:
        return report.is_baseline(name)
    except ConfigError:
        return False


def equal_accuracy(results, metric: Metric = ACCURACY) -> dict:
    """For each selective strategy: time to reach full's final metric (same seed; accuracy, or bits per byte from
    above) / full's train time, and the FLOPs executed by then / full's FLOPs."""
    full = {r.summary["seed"]: r for r in results if r.summary["strategy"] == "full"}
    per_strategy: dict[str, list[dict]] = {}
    for r in results:
        name, seed = r.summary["strategy"], r.summary["seed"]
        if _is_baseline(name) or seed not in full:
            continue
        goal, full_time = full[seed].summary[metric.key], full[seed].summary["train_time_s"]
        full_flops = full[seed].summary["flops_spent"]
        reached = time_to_reach(r.history, goal, metric)
        flops = time_to_reach(r.history, goal, metric, axis="flops_spent")
        per_strategy.setdefault(name, []).append(dict(
            strategy=name, seed=seed, **{f"goal_{metric.headline}": goal}, full_time_s=full_time,
            reached_time_s=reached,
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
    return dict(best=best["strategy"] if best else None, baseline="full", metric=metric.headline,
                higher_is_better=metric.higher_is_better, time_ratio=best["time_ratio"] if best else None,
                ci95=best["ci95"] if best else [None, None],
                flop_ratio=best["flop_ratio"] if best else None,
                reached_in=best["reached_in"] if best else None, seeds=len(full),
                strategies=summaries, rows=[row for s in summaries.values() for row in s["rows"]])


# The benchmark flags that decide its results: a --resume must give the same ones.
RESULT_FLAGS = ("task", "data", "quick", "seeds", "budget_epochs", "budget_kind", "strategies", "model", "target_rate",
                "batch_size", "label_noise", "eval_points", "warmup_epochs", "cooldown_epochs", "context", "depth",
                "width", "heads", "train_bytes", "test_bytes", "rho1_keep", "precision", "compile", "classes",
                "imbalance", "duplicates", "init_from", "junk", "limit_train", "limit_test", "rho1_reference")


def _settings(args) -> dict:
    return {k: getattr(args, k, None) for k in RESULT_FLAGS}


# What a benchmark started before these flags existed ran with (an image benchmark's), for its --resume.
_BEFORE_TEXT = dict(task="images", warmup_epochs=1, cooldown_epochs=1, context=None, depth=None, width=None,
                    heads=None, train_bytes=None, test_bytes=None, rho1_keep=None, precision="32", compile=False,
                    classes=None, imbalance=1.0, duplicates=0.0, init_from=None, junk=0.0, limit_train=None,
                    limit_test=None, rho1_reference=None)


def _differences(then: dict, now: dict) -> list[str]:
    """The result flags a resume changes ("name: X then, Y now"); added seeds are no change, nor a flag the
    started benchmark predates when it has the value it ran with."""
    then = dict(_BEFORE_TEXT, **then)
    return [f"{k}: {then.get(k)!r} then, {v!r} now" for k, v in now.items()
            if then.get(k) != v and not (k == "seeds" and set(then[k]) < set(v))]


def _started_budgets(checkpoints: Path, labels) -> set[str]:
    """The budgets whose comparison has run folders under `checkpoints` (what --resume continues)."""
    return {label for label in labels if any((checkpoints / f"savings-{label}").glob("*/run.json"))}


EXPERIMENT = "savings-benchmark"


def _configs(args, budget: float) -> dict[str, TrainConfig]:
    """Each entry of --strategies as the config it trains: --warmup-epochs and --cooldown-epochs (unless the entry
    names its own), for the budget in seconds or FLOPs; text trains with AdamW; the seeds are the comparison's."""
    configs = {}
    text = {"optimizer": "adam", "weight_decay": 0.0} if args.task == "lm" else {}
    for spec in args.strategies:
        name, overrides = parse_variant(spec)
        limit = {"time_budget" if args.budget_kind == "time" else "flop_budget": float(budget)}
        configs[spec] = TrainConfig(strategy=name, target_rate=args.target_rate, warmup_epochs=args.warmup_epochs,
                                    cooldown_epochs=args.cooldown_epochs, batch_size=args.batch_size,
                                    label_noise=args.label_noise, options=overrides.pop("options", {}), **text,
                                    precision=args.precision, compile=args.compile,
                                    **limit).replace(**overrides)
    return configs


def unaffordable(configs: dict[str, TrainConfig], budget_epochs: float) -> dict[str, str]:
    """The entries whose rule's preparation (reference models) and all-data epochs leave no selective training in
    a budget of `budget_epochs` full-data epochs, each with the one line that says so and the smallest budget that
    works (`train.budget.smallest_budget_epochs`); they are left out of the comparison and listed in the JSON."""
    out = {}
    for spec, config in configs.items():
        rule = config.rule
        if rule.prepare is None:
            continue
        cost = rule.prepare_epochs(rule.make_options(config.options))
        smallest = budget_rules.smallest_budget_epochs(cost, config.warmup_epochs + config.cooldown_epochs)
        if budget_epochs < smallest:
            out[spec] = (f"its reference models cost {cost:.2f} full-data epochs and it has "
                         f"{config.warmup_epochs + config.cooldown_epochs} all-data epoch(s): a budget of "
                         f"{budget_epochs:g} epochs leaves no selective training; the smallest that works is "
                         f"{smallest:g}")
    return out


def _tracking(args) -> Tracking:
    """Where the comparisons are tracked and checkpointed; the benchmark's settings as every run's params."""
    params = {k: ",".join(map(str, v)) if isinstance(v, list) else v for k, v in _settings(args).items()}
    data_name = Path(args.data).name if args.data else "python-stdlib"
    return Tracking(uri=args.tracking_uri or store.DEFAULT_TRACKING_URI, experiment=EXPERIMENT,
                    checkpoint_dir=args.checkpoint_dir, checkpoint_every=args.checkpoint_every, log_model=False,
                    data_name=data_name, params=dict(params, benchmark="savings"))


def _load_data(args):
    """The benchmark's data on the machine's accelerator (or CPU), in its regime (classes, long tail,
    near-duplicates, label noise); --quick: 6,000 train / 2,000 test samples (or --limit-train/--limit-test)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return prepare.load_data(args.data, device=device, label_noise=args.label_noise, seed=0,
                             limit_train=args.limit_train, limit_test=args.limit_test, classes=args.classes,
                             imbalance=args.imbalance, duplicates=args.duplicates)


class Setup:
    """What differs between the tasks: the data, the model builder and its label, the task and its metric."""

    def __init__(self, args):
        if args.task == "lm":
            self.data = savings_text.load(args)
            self.build, self.label, self.task = savings_text.builder(args), "gpt", language_modelling()
            self.describe = savings_text.describe(self.data)
        else:
            self.data = _load_data(args)
            self.build, self.label = prepare.model_builder(args.model, self.data), prepare.model_label(args.model)
            self.task, self.describe = image_classification(), None
        if args.init_from:
            self.build = pretrained.starting_from(self.build, args.init_from)
        self.metric = metric_of(self.task)


def _defaults(args, p: argparse.ArgumentParser) -> None:
    """Fill the flags whose default depends on the task (and --quick)."""
    if args.regime:
        regimes.apply(args, p)
    lm = args.task == "lm"
    if not lm and not args.data:
        p.error("--data is required for --task images (a CIFAR-10 directory or .tar.gz)")
    if lm and (args.classes or args.imbalance != 1 or args.duplicates or args.label_noise):
        p.error("--classes, --imbalance, --duplicates and --label-noise are image regimes; text has --junk")
    if not lm and args.junk:
        p.error("--junk adds junk files to a text corpus (--task lm)")
    if args.quick and not lm:
        args.limit_train, args.limit_test = args.limit_train or 6000, args.limit_test or 2000
    args.seeds = args.seeds or ([0, 1] if args.quick and not lm else [0, 1, 2])
    args.strategies = args.strategies or list(TEXT_STRATEGIES if lm else FULL_STRATEGIES)
    args.budget_epochs = args.budget_epochs or ("2,4" if lm else "6,16")
    args.warmup_epochs = (0 if lm else 1) if args.warmup_epochs is None else args.warmup_epochs
    args.cooldown_epochs = (0 if lm else 1) if args.cooldown_epochs is None else args.cooldown_epochs
    if lm:
        for key, value in savings_text.defaults(args.quick).items():
            if getattr(args, key) is None:
                setattr(args, key, value)
        args.model = "gpt"
        args.rho1_keep = savings_text.RHO1_KEEP if args.rho1_keep is None else args.rho1_keep
        args.rho1_reference = savings_text.RHO1_REFERENCE if args.rho1_reference is None else args.rho1_reference
    else:
        args.batch_size = args.batch_size or 128
        args.eval_points = args.eval_points or 12
        for key in ("context", "depth", "width", "heads", "train_bytes", "test_bytes", "rho1_keep", "rho1_reference"):
            setattr(args, key, None)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.savings", description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=("images", "lm"), default="images",
                   help="images (CIFAR-10, --data) or lm (bytes of text: the Python standard library's source, or "
                        "--data PATH)")
    p.add_argument("--data", default=None, help="images: CIFAR-10 directory or .tar.gz; lm: a text file, a folder "
                                                "of them or a .tar.gz (default: the standard library's source)")
    p.add_argument("--quick", action="store_true",
                   help="images: 6,000 train / 2,000 test samples, seeds 0,1 (24 min on this project's 2-core CPU "
                        "machine); lm: a small gpt on at most 0.5 MB of whole files (about 20 min there, quiet)")
    p.add_argument("--seeds", type=seed_list, default=None, help="default 0,1,2 (images --quick: 0,1)")
    p.add_argument("--budget-epochs", default=None,
                   help="budgets in full-data epochs of this machine: short,long (one value: a single budget); "
                        "default 6,16 (lm: 2,4)")
    p.add_argument("--budget-kind", choices=("time", "flops"), default="time",
                   help="match wall-clock (default) or FLOPs executed; a FLOP budget is the FLOPs of N full epochs")
    p.add_argument("--strategies", type=strategy_list, default=None,
                   help="comma-separated; NAME:cooldown=N gives one entry its own cool-down (all-data epochs at "
                        f"the end), e.g. full,stale,stale:cooldown=8; default {','.join(FULL_STRATEGIES)} "
                        f"(lm: {','.join(TEXT_STRATEGIES)})")
    p.add_argument("--warmup-epochs", type=int, default=None, help="all-data epochs at the start (default 1; lm 0)")
    p.add_argument("--cooldown-epochs", type=int, default=None, help="all-data epochs at the end (default 1; lm 0)")
    p.add_argument("--model", default="cnn", help="images: a built-in or package.module:function (lm: gpt)")
    p.add_argument("--target-rate", type=float, default=TARGET_RATE)
    p.add_argument("--precision", choices=PRECISIONS, default="32", help="autocast forward passes (32: none)")
    p.add_argument("--compile", action="store_true", help="torch.compile each run's scoring pass and update")
    p.add_argument("--batch-size", type=int, default=None, help="default 128 (lm: 32)")
    p.add_argument("--regime", choices=regimes.names(), default=None,
                   help="a regime of the map (docs/results.md#where-does-selection-pay): its flags, unless given")
    p.add_argument("--label-noise", type=float, default=0.0, help="replace this share of training labels")
    p.add_argument("--classes", type=class_list, default=None, metavar="A,B,...",
                   help="train and test on these classes only (fine-tuning on part of a set)")
    p.add_argument("--imbalance", type=float, default=1.0, metavar="RATIO",
                   help="a long-tailed training set, CIFAR-10-LT's profile (largest / smallest class)")
    p.add_argument("--duplicates", type=float, default=0.0, metavar="SHARE",
                   help="replace this share of training images by near-duplicates of a few (1%%) of them")
    p.add_argument("--init-from", default=None, metavar="CHECKPOINT_OR_MODEL",
                   help="start every run from this saved model (matching tensors loaded, a new head fresh)")
    p.add_argument("--limit-train", type=int, default=None, help="train samples (--quick: 6000)")
    p.add_argument("--limit-test", type=int, default=None, help="test samples (--quick: 2000)")
    p.add_argument("--eval-points", type=int, default=None,
                   help="evaluations per run (about; the last is at the budget); default 12 (lm: 8)")
    lm = p.add_argument_group("lm", "the text benchmark's corpus and gpt (defaults: quick / full mode)")
    lm.add_argument("--context", type=int, default=None, help="bytes a window predicts (128)")
    lm.add_argument("--depth", type=int, default=None, help="gpt blocks (2 / 4)")
    lm.add_argument("--width", type=int, default=None, help="gpt width (128)")
    lm.add_argument("--heads", type=int, default=None, help="attention heads (4)")
    lm.add_argument("--train-bytes", type=int, default=None,
                    help="training text: a seeded subset of whole files of at most this many bytes (500000 / 1000000)")
    lm.add_argument("--test-bytes", type=int, default=None,
                    help="held-out text (files apart from the training ones), at most this many bytes (50000 / 100000)")
    lm.add_argument("--rho1-keep", type=float, default=None,
                    help="Rho-1's selective LM at this token share beside the others (default 0.6; 0: none)")
    lm.add_argument("--rho1-reference", type=float, default=None, metavar="SHARE",
                    help="Rho-1's reference trains on this seeded share of the clean training files (default 0.1), "
                         "4 epochs; it runs twice: paid inside the budget, and given free (labelled)")
    lm.add_argument("--junk", type=float, default=0.0, metavar="SHARE",
                    help="junk files (random bytes, a repeated line, whitespace stripped) make up this share of the "
                         "training text")
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
    return p


def _with_metric(results, metric: Metric) -> list[dict]:
    """The comparison's rows, each with the run's headline metric (e.g. test_bits_per_byte) beside its accuracy."""
    rows = report.comparison_table(results)
    for row, r in zip(rows, results):
        row[metric.key] = r.summary.get(metric.key, row.get(metric.key))
    return rows


def _curves(results, names, metric: Metric) -> dict[str, list[list[dict]]]:
    """The evaluated epoch records of each entry's seeds, each with the metric under its key."""
    return {name: [[dict(e, **{metric.key: metric.of(e)}) for e in report._evaluated(r.history)]
                   for r in results if r.summary["strategy"] == name] for name in names}


def selective_lm(rho1, results, metric: Metric, equal: str, paid: bool = True) -> dict:
    """Rho-1's runs beside the comparison's: their metric minus full's (same seed, paired 95% interval) and the
    equal-metric question against full, as for the other strategies."""
    full = {r.summary["seed"]: r.summary[metric.key] for r in results if r.summary["strategy"] == "full"}
    mine = [(r.summary[metric.key], full[r.summary["seed"]]) for r in rho1 if r.summary["seed"] in full]
    d = stats.paired_difference([a for a, _ in mine], [b for _, b in mine])
    name = rho1[0].summary["strategy"]
    keys = (metric.key, "test_accuracy", "train_time_s", "flops_spent", "steps", "samples_trained")
    reached = equal_accuracy([r for r in results if r.summary["strategy"] == "full"] + list(rho1), metric)
    return dict(strategy=name, keep=float(name.split("=")[1]), baseline="full", metric=metric.headline,
                higher_is_better=metric.higher_is_better, unit=metric.unit, diff=metric.scale * d["diff"],
                ci95=[None if x is None else metric.scale * x for x in d["ci"]], seeds=d["n"],
                better=_better(d, metric, name, "full"), words=stats.describe_difference(d, metric.unit, metric.scale),
                **{equal: reached["strategies"][name]},
                rows=[dict(strategy=name, seed=r.summary["seed"], **{k: r.summary.get(k) for k in keys}) for r in rho1],
                paid=paid,
                note="trained after the comparison, one seed after another (not in its lockstep); the reference "
                     + ("is paid inside the budget" if paid else "is GIVEN FREE (its cost not charged)")
                     + "; masking tokens saves no FLOPs")


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    _defaults(args, p)
    lm = args.task == "lm"
    equal_key = "equal_metric" if lm else "equal_accuracy"
    if {report.is_baseline(s) for s in args.strategies} != {True, False}:
        print("error: --strategies needs a baseline (full or random) and a selective strategy", file=sys.stderr)
        return 2
    budgets = [float(b) for b in args.budget_epochs.split(",")]
    labels = ("short", "long") if len(budgets) == 2 else tuple(f"{b:g}-epochs" for b in budgets)
    args.checkpoint_dir = Path(args.checkpoint_dir or run_folders.checkpoint_root(
        args.tracking_uri or store.DEFAULT_TRACKING_URI, EXPERIMENT) / Path(args.json).stem)
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
            differ = _differences(then, _settings(args))
            if differ:
                raise ConfigError(f"--resume: the benchmark in {args.checkpoint_dir} was started with other flags "
                                  f"({'; '.join(differ)}); resume with the original flags (--seeds may add "
                                  "seeds, not drop them)")
            added = sorted(set(args.seeds) - set(then["seeds"]))
            if added:
                print(f"adding seeds {added} to the benchmark's {then['seeds']}", flush=True)
            plan["settings"], plan["parts"] = _settings(args), plan["parts"] + [now]
        setup = Setup(args)
        data, metric = setup.data, setup.metric
        if not args.resume:
            cost = lambda kind: epoch_cost(data, setup.build, args.batch_size, args.seeds[0], kind,  # noqa: E731
                                           task=setup.task, precision=args.precision, compile=args.compile)
            plan = {"settings": _settings(args), "parts": [now], "full_epoch_s": cost("time"),
                    "full_epoch_flops": cost("flops")}
        args.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        io.atomic_write_json(plan_path, plan)
        epoch_s, epoch_flops = plan["full_epoch_s"], plan["full_epoch_flops"]
        resumable = _started_budgets(args.checkpoint_dir, labels) if args.resume else set()
        out = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
               "device": _device_name(data.device), "task": args.task, "metric": metric.headline,
               "higher_is_better": metric.higher_is_better,
               "mode": "quick" if args.quick else "full", "seeds": args.seeds, "strategies": args.strategies,
               "target_rate": args.target_rate, "label_noise": args.label_noise, "budget_kind": args.budget_kind,
               "regime": dict(name=args.regime, classes=args.classes, imbalance=args.imbalance,
                              duplicates=args.duplicates, init_from=args.init_from, junk=args.junk,
                              label_noise=args.label_noise, train_samples=data.num_samples,
                              test_samples=data.describe()["test_samples"]),
               "warmup_epochs": args.warmup_epochs, "cooldown_epochs": args.cooldown_epochs,
               "full_epoch_s": epoch_s, "full_epoch_flops": epoch_flops, "parts": plan["parts"], "by_budget": {}}
        if lm:
            out["text"] = dict(setup.describe, model=dict(name="gpt", context=args.context, depth=args.depth,
                                                          width=args.width, heads=args.heads),
                               batch_size=args.batch_size, optimizer="adam (AdamW schedule of the trainer)")
            print(f"text: {setup.describe['name']} ({setup.describe['train_bytes']:,} training bytes in "
                  f"{setup.describe['train_files']} files, {setup.describe['test_bytes']:,} held-out bytes in "
                  f"{setup.describe['test_files']} files); gpt depth {args.depth}, width {args.width}, context "
                  f"{args.context}, batch {args.batch_size}", flush=True)
        if args.resume:
            print(f"resuming the benchmark started {plan['parts'][0]} (part {len(plan['parts'])}); budgets as "
                  "probed then", flush=True)
        print(f"one full-data epoch takes about {epoch_s:.1f} s and {epoch_flops:.3g} FLOPs here; budgets: "
              + ", ".join(f"{b:g} epochs = {b * epoch_s:.0f} s" for b in budgets)
              + ("" if args.budget_kind == "time" else " (matched in FLOPs)"), flush=True)
        entries = len(args.strategies) + (2 if lm and args.rho1_keep else 0)
        runs, run_min = entries * len(args.seeds), sum(budgets) * epoch_s / 60
        this_part = f" ({entries * len(added) * run_min:.0f} min for the seeds added now)" if added else ""
        rho1 = (f" (with Rho-1 selective LM at keep {args.rho1_keep:g}, its reference paid and free)"
                if lm and args.rho1_keep else "")
        print(f"{runs} runs per budget ({entries} strategies{rho1} x {len(args.seeds)} seeds): about "
              f"{runs * run_min:.0f} min of training in all ({runs} x {sum(budgets):g} epochs x {epoch_s:.1f} s)"
              f"{this_part}, plus evaluations", flush=True)
        for label, epochs in zip(labels, budgets):
            budget_s = epochs * epoch_s
            budget = budget_s if args.budget_kind == "time" else epochs * epoch_flops
            configs = _configs(args, budget)
            refused = unaffordable(configs, epochs)
            for spec, reason in refused.items():
                print(f"{label} budget: {spec} skipped: {reason}", flush=True)
                del configs[spec]
            eval_every = (round(budget_s / args.eval_points, 3) if args.budget_kind == "time"
                          else ("flops", budget / args.eval_points))
            compared = tracked_compare(setup.build, data, configs, f"savings-{label}", _tracking(args),
                                       seeds=args.seeds, resume=label in resumable, eval_every=eval_every,
                                       model_label=setup.label, progress=False, task=setup.task)
            print("\n" + compared.table)
            print(f"Browse the runs: {store.ui_command(_tracking(args).uri, compared.experiment_id)}")
            results = compared.results
            rows = _with_metric(results, metric)
            entry = {"budget_epochs": epochs, "budget_s": budget_s, "budget_kind": args.budget_kind, "refused": refused,
                     "budget": budget, "equal_time": equal_time(rows, metric),
                     equal_key: equal_accuracy(results, metric) if "full" in args.strategies else None}
            names = list(configs)
            if lm and args.rho1_keep:
                base = configs["full"] if "full" in configs else next(iter(configs.values()))
                entry["selective_lm"] = {}
                cost = savings_text.rho1_reference_epochs(data, args.rho1_reference, args.seeds)
                smallest = budget_rules.smallest_budget_epochs(cost, 0)
                for paid in (True, False):
                    if paid and epochs < smallest:
                        refused[f"rho1:keep={args.rho1_keep:g}"] = (
                            f"its reference model costs about {cost:.2f} full-data epochs: a budget of {epochs:g} "
                            f"epochs leaves no training; the smallest that works is {smallest:g}")
                        print(f"{label} budget: Rho-1 (reference paid) skipped: {refused[list(refused)[-1]]}",
                              flush=True)
                        continue
                    runs_rho1 = savings_text.rho1_runs(
                        setup.build, data, base.replace(strategy="full"),
                        f"savings-{label}-rho1" + ("" if paid else "-free"), _tracking(args), args.seeds,
                        resume=args.resume, eval_every=eval_every, keep=args.rho1_keep, paid=paid,
                        reference_share=args.rho1_reference)
                    if "full" in args.strategies:
                        entry["selective_lm"]["paid" if paid else "free"] = selective_lm(runs_rho1, results, metric,
                                                                                         equal_key, paid)
                    results, names = list(results) + runs_rho1, names + [runs_rho1[0].summary["strategy"]]
            figure = plots.compare_bands(
                _curves(results, names, metric),
                *(("train_time_s", "train wall-clock (s)") if args.budget_kind == "time"
                  else ("flops_spent", "training FLOPs executed")),
                y_key=metric.key, y_label=f"held-out {metric.unit}" if lm else "test accuracy")
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
    out[equal_key] = dict(headline[equal_key] or {}, budget=out["equal_time"]["budget"],
                          by_budget={k: v[equal_key] for k, v in out["by_budget"].items()})
    if any("selective_lm" in v for v in out["by_budget"].values()):
        out["selective_lm"] = {k: v.get("selective_lm") for k, v in out["by_budget"].items()}
    _print_summary(args, out, equal_key, metric)
    io.atomic_write_json(args.json, out)
    print(f"wrote {args.json}")
    return 0


def _print_summary(args, out: dict, equal_key: str, metric: Metric) -> None:
    """The two questions per budget in plain words (and Rho-1's line for text)."""
    print(f"\nmachine: {out['machine']}; device {out['device']}; mode {out['mode']}; seeds {args.seeds}; "
          f"target rate {args.target_rate}; label noise {args.label_noise}; "
          f"one full epoch = {out['full_epoch_s']:.1f} s, {out['full_epoch_flops']:.3g} FLOPs")
    direction = "higher" if metric.higher_is_better else "lower"
    if metric.headline != "accuracy":
        print(f"metric: held-out {metric.unit} ({direction} is better)")
    equal = "equal time" if args.budget_kind == "time" else "equal FLOPs"
    goal = "accuracy" if metric.headline == "accuracy" else metric.unit
    for label, entry in out["by_budget"].items():
        t = entry["equal_time"]
        size = f"{entry['budget_s']:.0f} s" if args.budget_kind == "time" else f"{entry['budget']:.3g} FLOPs"
        better = "" if metric.headline == "accuracy" else f" (better: {t['better']})"
        print(f"{label} budget ({entry['budget_epochs']:g} full epochs, {size}), {equal}: "
              f"{t['best']} minus {t['baseline']} = {t['words']}{better}: selection {t['verdict']}")
        a = entry[equal_key]
        if a and a["time_ratio"] is None:
            reached = ", ".join(f"{s['strategy']} {s['reached_in']}" for s in a["strategies"].values())
            print(f"{label} budget, equal {goal}: no selective strategy reached full's final {goal} in every "
                  f"seed ({reached})")
        elif a:
            ci = "" if a["ci95"][0] is None else f" (95% CI {a['ci95'][0]:.2f} to {a['ci95'][1]:.2f})"
            print(f"{label} budget, equal {goal}: {a['best']} reached full's final {goal} in {a['reached_in']}, "
                  f"at {a['time_ratio']:.2f}x of full's time{ci} and {a['flop_ratio']:.2f}x of its FLOPs")
        for s in (entry.get("selective_lm") or {}).values():
            how = "paid inside the budget" if s["paid"] else "given free"
            print(f"{label} budget, {s['strategy']} (Rho-1, reference {how}) minus full: "
                  f"{s['words']} (better: {s['better']})")


if __name__ == "__main__":
    sys.exit(main())
