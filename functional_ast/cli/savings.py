"""`python -m functional_ast savings`: does selection pay on your data, model and task?

    python -m functional_ast savings --data PATH [--model mymodule:net] [--quick] [--seeds 0,1,2]
                                     [--budget-epochs 6,16] [--budget-kind time|flops] [--json savings.json]
    python -m functional_ast savings --task lm [--data TEXT --glob '**/*.c'] [--quick] ...
    python -m functional_ast savings --task package.module:task --data PATH ...      (a task of yours)
    python -m functional_ast savings --regime noise40 --data PATH --quick            (a cell of the regime map)

Every rule of --strategies trains for each budget (N full-data epochs of this machine, in wall-clock or FLOPs)
against budget-matched full data and a random subset, with each seed; it prints one verdict per budget (pays /
ties / loses, "pays" only when the 95% interval excludes 0 in the rule's favour), writes the JSON and a figure per
budget, and logs a parent MLflow run per budget whose page shows the chart and the verdict (`savings.run`). A
stopped question continues with the same command and --resume. The task's recipe (`Task.recipe`) gives the
defaults a flag leaves open: images train with SGD at batch 128 with one all-data epoch at each end, text with
AdamW at batch 32 from the first step, beside Rho-1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from functional_ast.cli.flags import EXIT_USAGE, class_list, seed_list, strategy_list
from functional_ast.cli.main import quiet_libraries
from functional_ast.cli.objects import task_of
from functional_ast.core.checks import ConfigError
from functional_ast.data.errors import DataError
from functional_ast.edges import checkpoint, pretrained, store
from functional_ast.edges import runs as run_folders
from functional_ast.edges.tracked import Tracking
from functional_ast.pays import regimes, run
from functional_ast.report import tables as report
from functional_ast.tasks.models import model_label, takes
from functional_ast.train.config import PRECISIONS, TrainConfig

EXPERIMENT = "savings-benchmark"
# The flags that decide the results: a --resume must give the same ones.
RESULT_FLAGS = ("task", "data", "glob", "quick", "seeds", "budget_epochs", "budget_kind", "strategies", "model",
                "target_rate", "batch_size", "label_noise", "eval_points", "warmup_epochs", "cooldown_epochs",
                "context", "depth", "width", "heads", "train_bytes", "test_bytes", "rho1_keep", "precision",
                "compile", "classes", "imbalance", "duplicates", "init_from", "junk", "limit_train", "limit_test",
                "rho1_reference")
# What a question started before a flag existed ran with (an image question's), for its --resume.
BEFORE_THEY_EXISTED = dict(task="images", warmup_epochs=1, cooldown_epochs=1, context=None, depth=None, width=None,
                           heads=None, train_bytes=None, test_bytes=None, rho1_keep=None, precision="32",
                           compile=False, classes=None, imbalance=1.0, duplicates=0.0, init_from=None, junk=0.0,
                           limit_train=None, limit_test=None, rho1_reference=None, glob=None)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def parser(prog: str = "python -m functional_ast savings") -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="images",
                   help="images (an image classifier), lm (a byte-level language model) or package.module:attribute "
                        "(a Task of yours, with a `load`)")
    p.add_argument("--data", default=None, help="the task's data (images: an ImageFolder tree, CIFAR-10 or a "
                                                ".tar.gz; lm: a text file, a folder of them or a .tar.gz; default the "
                                                "standard library's source)")
    p.add_argument("--data-root", default=None, help="decoded-data cache (default: $FUNCTIONAL_AST_DATA or "
                                                       "~/.cache/functional_ast)")
    p.add_argument("--glob", default=None, help="lm: which files of a --data folder or archive to read (**/*)")
    p.add_argument("--quick", action="store_true",
                   help="images: 6,000 train / 2,000 test samples, seeds 0,1 (24 min on this project's 2-core CPU "
                        "machine); lm: a small gpt on at most 0.5 MB of whole files (about 20 min there, quiet)")
    p.add_argument("--regime", choices=regimes.names(), default=None,
                   help="a regime of the map (docs/results.md#where-does-selection-pay): its flags, unless given; "
                   + "; ".join(f"{name}: {what}" for name, what in regimes.DESCRIPTIONS.items()).replace("%", "%%"))
    p.add_argument("--seeds", type=seed_list, default=None, help="default 0,1,2 (images --quick: 0,1)")
    p.add_argument("--budget-epochs", default=None,
                   help="budgets in full-data epochs of this machine: short,long (one value: a single budget); "
                        "default 6,16 (lm: 2,4)")
    p.add_argument("--budget-kind", choices=("time", "flops"), default="time",
                   help="match wall-clock (default) or FLOPs executed (the same on any machine, load or not)")
    p.add_argument("--strategies", type=strategy_list, default=None,
                   help="comma-separated rules, a baseline (full, random) among them; NAME:cooldown=N gives one its "
                        "own cool-down; default full,random,stale,infobatch (lm: small_loss for stale)")
    p.add_argument("--warmup-epochs", type=int, default=None, help="all-data epochs at the start (default 1; lm 0)")
    p.add_argument("--cooldown-epochs", type=int, default=None, help="all-data epochs at the end (default 1; lm 0)")
    p.add_argument("--model", default=None, help="a built-in of the task (images: cnn; lm: gpt) or "
                                                 "package.module:function")
    p.add_argument("--init-from", default=None, metavar="CHECKPOINT_OR_MODEL",
                   help="start every run from this saved model (matching tensors loaded, a new head fresh)")
    p.add_argument("--target-rate", type=float, default=run.TARGET_RATE)
    p.add_argument("--precision", choices=PRECISIONS, default="32", help="autocast forward passes (32: none)")
    p.add_argument("--compile", action="store_true", help="torch.compile each run's scoring pass and update")
    p.add_argument("--batch-size", type=int, default=None, help="default 128 (lm: 32)")
    p.add_argument("--eval-points", type=int, default=None,
                   help="evaluations per run (about; the last is at the budget); default 12 (lm: 8)")
    g = p.add_argument_group("images", "the image regimes")
    g.add_argument("--label-noise", type=float, default=0.0, help="replace this share of training labels")
    g.add_argument("--classes", type=class_list, default=None, metavar="A,B,...",
                   help="train and test on these classes only (fine-tuning on part of a set)")
    g.add_argument("--imbalance", type=float, default=1.0, metavar="RATIO",
                   help="a long-tailed training set, CIFAR-10-LT's profile (largest / smallest class)")
    g.add_argument("--duplicates", type=float, default=0.0, metavar="SHARE",
                   help="replace this share of training images by near-duplicates of a few (1%%) of them")
    g.add_argument("--limit-train", type=int, default=None, help="train samples (--quick: 6000)")
    g.add_argument("--limit-test", type=int, default=None, help="test samples (--quick: 2000)")
    lm = p.add_argument_group("lm", "the text question's corpus and gpt (defaults: quick / full mode)")
    lm.add_argument("--context", type=int, default=None, help="bytes a window predicts (128)")
    lm.add_argument("--depth", type=int, default=None, help="gpt blocks (2 / 4)")
    lm.add_argument("--width", type=int, default=None, help="gpt width (128)")
    lm.add_argument("--heads", type=int, default=None, help="attention heads (4)")
    lm.add_argument("--train-bytes", type=int, default=None,
                    help="training text: a seeded subset of whole files of at most this many bytes (500000 / 1000000)")
    lm.add_argument("--test-bytes", type=int, default=None,
                    help="held-out text (files apart from the training ones), at most this many bytes (50000 / 100000)")
    lm.add_argument("--junk", type=float, default=0.0, metavar="SHARE",
                    help="junk files (random bytes, a repeated line, whitespace stripped) make up this share of the "
                         "training text")
    lm.add_argument("--rho1-keep", type=float, default=None,
                    help="Rho-1's selective LM at this token share beside the others (default 0.6; 0: none)")
    lm.add_argument("--rho1-reference", type=float, default=None, metavar="SHARE",
                    help="Rho-1's reference trains on this seeded share of the clean training files (default 0.1), "
                         "4 epochs; it runs twice: paid inside the budget, and given free (labelled)")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--json", default="savings.json", help="the record, with a figure per budget beside it")
    p.add_argument("--checkpoint-dir", default=None,
                   help="where the runs keep their checkpoints (default: checkpoints/savings-benchmark/<json name> "
                        "beside the run store)")
    p.add_argument("--checkpoint-every", type=int, default=100,
                   help="each run also checkpoints every N steps (besides each epoch end); 0: at epoch ends only")
    p.add_argument("--resume", action="store_true",
                   help="continue a stopped question (same flags): its budgets as first probed, finished runs read "
                        "back, the others from their newest checkpoint")
    return p


def defaults(args: argparse.Namespace, p: argparse.ArgumentParser):
    """The task the flags name, with the flags it leaves open filled from its recipe (and --quick's sizes); a
    regime's flags first. One-line ConfigError for what cannot run."""
    if args.regime:
        regimes.apply(args, vars(p.parse_args([])))
    task = task_of(args)
    recipe = task.recipe or {}
    chosen = dict(recipe.get("savings", {}), **recipe.get("quick" if args.quick else "full", {}))
    for key, value in chosen.items():
        if getattr(args, key, None) is None:
            setattr(args, key, list(value) if isinstance(value, list) else value)
    args.seeds = args.seeds or [0, 1, 2]
    args.strategies = args.strategies or strategy_list("full,random,stale,infobatch")
    if isinstance(args.strategies, str):
        args.strategies = strategy_list(args.strategies)
    args.budget_epochs = args.budget_epochs or "6,16"
    args.eval_points = args.eval_points or 12
    args.batch_size = args.batch_size or 128
    args.warmup_epochs = 1 if args.warmup_epochs is None else args.warmup_epochs
    args.cooldown_epochs = 1 if args.cooldown_epochs is None else args.cooldown_epochs
    args.model = args.model or task.default_model
    if args.data is None and not getattr(args, "stdlib", False):
        raise ConfigError(f"--data is required for the {task.name} task: {task.data_help}")
    for flag in ("label_noise", "classes", "duplicates", "junk", "train_bytes", "test_bytes", "glob", "context"):
        given = getattr(args, flag, None)
        if given not in (None, 0.0, False) and task.load is not None and not takes(task.load, flag):
            raise ConfigError(f"--{flag.replace('_', '-')}: the {task.name} task's data does not take it (drop it)")
    if args.imbalance != 1 and task.load is not None and not takes(task.load, "imbalance"):
        raise ConfigError(f"--imbalance: the {task.name} task's data does not take it (drop it)")
    if {report.is_baseline(s) for s in args.strategies} != {True, False}:
        raise ConfigError("--strategies needs a baseline (full or random) and a selective strategy")
    return task


def load(task, args: argparse.Namespace):
    """The task's data as the flags describe it (only the options its `load` takes)."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    given = dict(vars(args), root=args.data_root, device=device, seed=0, glob=args.glob or "**/*")
    options = {k: v for k, v in given.items() if takes(task.load, k) and v is not None and k != "path"}
    return task.load(args.data, **options)


def build(task, args: argparse.Namespace, data):
    """The task's model as the flags describe it, started from --init-from's model when given."""
    options = dict(context=args.context)
    if args.depth:
        options["gpt"] = (args.depth, args.width, args.heads)
    chosen = {k: v for k, v in options.items() if v is not None and takes(task.build_model, k)}
    builder = task.build_model(args.model, data, **chosen)
    return pretrained.starting_from(builder, args.init_from) if args.init_from else builder


def settings(args: argparse.Namespace) -> dict:
    """The result-deciding flags (what --resume compares)."""
    return {k: getattr(args, k, None) for k in RESULT_FLAGS}


def main(argv: list[str] | None = None, prog: str = "python -m functional_ast savings") -> int:
    p = parser(prog)
    args = p.parse_args(argv)
    quiet_libraries()
    try:
        task = defaults(args, p)
        uri = args.tracking_uri or store.DEFAULT_TRACKING_URI
        folder = Path(args.checkpoint_dir or run_folders.checkpoint_root(uri, EXPERIMENT) / Path(args.json).stem)
        data = load(task, args)
        recipe = (task.recipe or {}).get("train", {})
        config = TrainConfig(target_rate=args.target_rate, warmup_epochs=args.warmup_epochs,
                             cooldown_epochs=args.cooldown_epochs, batch_size=args.batch_size,
                             label_noise=args.label_noise, precision=args.precision, compile=args.compile, **recipe)
        params = {k: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v for k, v in settings(args).items()}
        where = Tracking(uri=uri, experiment=EXPERIMENT, checkpoint_dir=folder,
                         checkpoint_every=args.checkpoint_every, log_model=False,
                         data_name=Path(args.data).name if args.data else data.describe()["name"],
                         params=dict(params, benchmark="savings"))
        rho1_keep = args.rho1_keep or None
        outcome = run.savings(
            build(task, args, data), data, task=task, rules=args.strategies,
            budgets=[float(b) for b in str(args.budget_epochs).split(",")], seeds=args.seeds,
            budget_kind=args.budget_kind, config=config, eval_points=args.eval_points, rho1_keep=rho1_keep,
            rho1_reference=args.rho1_reference if rho1_keep else None, where=where, json_path=args.json,
            resume=args.resume, settings=settings(args), settings_before=BEFORE_THEY_EXISTED,
            record=dict(mode="quick" if args.quick else "full", task=args.task, model=model_label(args.model),
                        **_text_record(args, data),
                        regime=dict(name=args.regime, classes=args.classes, imbalance=args.imbalance,
                                    duplicates=args.duplicates, init_from=args.init_from, junk=args.junk,
                                    label_noise=args.label_noise)))
    except (DataError, ConfigError, checkpoint.CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print_answers(args, outcome)
    print(f"wrote {args.json}")
    return 0


def _text_record(args: argparse.Namespace, data) -> dict:
    """A byte model's corpus and gpt, as the JSON records them ("text"), where the flags name a context."""
    if args.context is None:
        return {}
    train, test = data.train, data.test
    size = lambda w: int((w.corpus.bounds[w.files + 1] - w.corpus.bounds[w.files]).sum())  # noqa: E731
    return {"text": dict(data.describe(), train_bytes=size(train), test_bytes=size(test),
                         model=dict(name=args.model, context=args.context, depth=args.depth, width=args.width,
                                    heads=args.heads),
                         batch_size=args.batch_size, optimizer="adam (AdamW schedule of the trainer)")}


def print_answers(args: argparse.Namespace, outcome) -> None:
    """The two questions per budget in plain words, with the verdict (and Rho-1's lines for text)."""
    out, metric = outcome.record, outcome.metric
    equal_key = "equal_accuracy" if metric == "accuracy" else "equal_metric"
    print(f"\nmachine: {out['machine']}; device {out['device']}; mode {out['mode']}; seeds {args.seeds}; "
          f"target rate {args.target_rate}; label noise {args.label_noise}; "
          f"one full epoch = {out['full_epoch_s']:.1f} s, {out['full_epoch_flops']:.3g} FLOPs")
    unit = report.units(metric)[0]
    if metric != "accuracy":
        print(f"metric: held-out {unit} ({'higher' if outcome.higher_is_better else 'lower'} is better)")
    equal = "equal time" if args.budget_kind == "time" else "equal FLOPs"
    goal = "accuracy" if metric == "accuracy" else unit
    for label, entry in out["by_budget"].items():
        t = entry["equal_time"]
        size = f"{entry['budget_s']:.0f} s" if args.budget_kind == "time" else f"{entry['budget']:.3g} FLOPs"
        better = "" if metric == "accuracy" else f" (better: {t['better']})"
        print(f"{label} budget ({entry['budget_epochs']:g} full epochs, {size}), {equal}: "
              f"{t['best']} minus {t['baseline']} = {t['words']}{better}: selection {t['verdict'].upper()}")
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
