"""Train an image classifier with Adaptive Sparse Training and track it in MLflow.

    python -m experiments.cifar10 --data PATH [--strategy sundew] [--target-rate 0.1] ...
    python -m experiments.cifar10 --data PATH --compare full,random,sundew,stale,prioritized

Every run logs its config, per-step curves (loss, activation rate, threshold,
FLOPs saved), per-epoch test accuracy and train wall-clock (eval excluded), plots
and a summary into MLflow (default store: sqlite under ./mlruns). `--compare` runs
several strategies with the same seed, data and budget as nested runs under one
parent and writes a side-by-side table and plots.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from dataclasses import dataclass, field

import torch

from functional_ast import data as fdata
from functional_ast import meter as fmeter
from functional_ast import optim, plots, strategies, tracking
from functional_ast.config import ConfigError
from functional_ast.loop import NonFiniteLossError, SkipGuard, evaluate, run_steps
from functional_ast.losses import cross_entropy
from functional_ast.models import MODELS, build_model
from functional_ast.sampling import PrioritizedBatches
from functional_ast.step import init_state, make_eval_step, make_train_step

EXIT_USAGE = 2
EXIT_FAILED = 1


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _bounded(kind, low=None, high=None, low_open=False):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '>='} {low}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {text}")
        return value

    return parse


def _strategy_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in strategies.STRATEGIES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown strategy {', '.join(unknown) or '(none)'}; "
                                         f"choose from {','.join(strategies.STRATEGIES)}")
    return list(dict.fromkeys(names))


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m experiments.cifar10", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--data", default=None,
                   help="CIFAR-10 dir (cifar-10-batches-py or ImageFolder train/+test/), or a .tar.gz of either; "
                        "default: torchvision download into --data-root")
    d.add_argument("--data-root", default="./data", help="download target and decoded-data cache")
    d.add_argument("--limit-train", type=_bounded(int, 1), default=None,
                   help="train on a fixed, seeded, class-balanced subset of N samples")
    d.add_argument("--limit-test", type=_bounded(int, 1), default=None, help="same for the test set")
    d.add_argument("--no-augment", action="store_true", help="disable random crop + flip")
    t = p.add_argument_group("training")
    t.add_argument("--strategy", choices=strategies.STRATEGIES, default="sundew")
    t.add_argument("--target-rate", type=_bounded(float, 0.0, 1.0, low_open=True), default=0.1,
                   help="fraction of samples to train on after warm-up, in (0, 1]")
    t.add_argument("--epochs", type=_bounded(int, 1), default=10)
    t.add_argument("--warmup-epochs", type=_bounded(int, 0), default=1,
                   help="epochs on all data before selection starts (controller idle)")
    t.add_argument("--batch-size", type=_bounded(int, 2), default=128)
    t.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    t.add_argument("--lr", type=_bounded(float, 0.0, low_open=True), default=None,
                   help="peak learning rate (default: 0.05 for sgd, 1e-3 for adam), warm-up then cosine")
    t.add_argument("--weight-decay", type=_bounded(float, 0.0), default=5e-4)
    t.add_argument("--model", choices=sorted(MODELS), default="cnn")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps ...")
    t.add_argument("--compile", action="store_true", help="torch.compile the scoring pass and the update")
    c = p.add_argument_group("comparison")
    c.add_argument("--compare", type=_strategy_list, default=None, metavar="S1,S2,...",
                   help=f"run these strategies side by side (from {','.join(strategies.STRATEGIES)})")
    c.add_argument("--time-budget", type=_bounded(float, 0.0, low_open=True), default=None, metavar="SECONDS",
                   help="train each strategy for this wall-clock (eval excluded): epochs are planned from "
                        "measured step times and training stops at the budget")
    c.add_argument("--joules-per-gflop", type=_bounded(float, 0.0, low_open=True),
                   default=fmeter.DEFAULT_JOULES_PER_GFLOP,
                   help="assumed efficiency for the energy ESTIMATE where no meter (NVML/RAPL) is readable")
    r = p.add_argument_group("tracking")
    r.add_argument("--tracking-uri", default=tracking.DEFAULT_TRACKING_URI)
    r.add_argument("--experiment", default="cifar10")
    r.add_argument("--run-name", default=None)
    r.add_argument("--log-every", type=_bounded(int, 1), default=25,
                   help="gather step metrics (one host transfer) every N steps")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device: unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here; use --device cpu")
    return device


@dataclass
class Data:
    """Train/test sets on the device, plus the normalisation computed from the train set."""

    train: fdata.LabelledImages
    test: fdata.LabelledImages
    mean: torch.Tensor
    std: torch.Tensor
    device: torch.device


def load_data(args: argparse.Namespace) -> Data:
    device = resolve_device(args.device)
    train_set, test_set = fdata.load_dataset(args.data, root=args.data_root)
    if args.limit_train:
        train_set = fdata.balanced_subset(train_set, args.limit_train, seed=args.seed)
    if args.limit_test:
        test_set = fdata.balanced_subset(test_set, args.limit_test, seed=args.seed + 1)
    if len(train_set) < args.batch_size:
        raise ConfigError(f"--batch-size {args.batch_size} is larger than the training set ({len(train_set)} "
                          "samples); lower --batch-size or raise --limit-train")
    mean, std = fdata.channel_stats(train_set.data["image"])
    return Data(fdata.LabelledImages(train_set.data.to(device), train_set.classes),
                fdata.LabelledImages(test_set.data.to(device), test_set.classes), mean.to(device), std.to(device),
                device)


@dataclass
class History:
    """Per-step series (step -> value per metric) and per-epoch records of one run."""

    steps: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    epochs: list[dict[str, float]] = field(default_factory=list)

    def add_steps(self, first_step: int, chunk: dict[str, list[float]]) -> None:
        for key, values in chunk.items():
            self.steps.setdefault(key, []).extend(zip(range(first_step, first_step + len(values)), values))

    def series(self, key: str) -> tuple[list[int], list[float]]:
        pairs = self.steps.get(key, [])
        return [s for s, _ in pairs], [v for _, v in pairs]


@dataclass
class Result:
    summary: dict
    history: History


class _Job:
    """Everything one strategy's run needs: steps, state, schedule; built once from the config."""

    def __init__(self, args: argparse.Namespace, name: str, data: Data, epochs: int):
        self.args, self.name, self.data, self.epochs = args, name, data, epochs
        torch.manual_seed(args.seed)
        _, channels, height, _ = data.train.data["image"].shape
        self.model = build_model(args.model, num_classes=len(data.train.classes), in_channels=channels,
                                 image_size=height)
        self.steps_per_epoch = fdata.num_batches(len(data.train), args.batch_size, drop_last=True)
        total_steps = self.steps_per_epoch * epochs
        self.peak_lr = args.lr if args.lr is not None else (0.05 if args.optimizer == "sgd" else 1e-3)
        schedule = optim.warmup_cosine(self.peak_lr, total_steps,
                                       warmup_steps=min(self.steps_per_epoch, total_steps // 5))
        if args.optimizer == "sgd":
            self.optimizer = optim.sgd(schedule, momentum=0.9, nesterov=True, weight_decay=args.weight_decay)
        else:
            self.optimizer = optim.adam(schedule, weight_decay=args.weight_decay)
        self.strategy = strategies.by_name(name, args.target_rate, num_samples=len(data.train),
                                           batch_size=args.batch_size)
        gated = self.strategy.name != "full"
        self.warmup_epochs = min(args.warmup_epochs, epochs) if gated else 0
        self.target = args.target_rate if gated else None
        self.state = init_state(self.model, self.optimizer, self.strategy, key=args.seed, device=data.device)
        self.main_step = make_train_step(self.model, cross_entropy, self.optimizer, self.strategy,
                                         compile=args.compile)
        self.warmup_step = make_train_step(self.model, cross_entropy, self.optimizer,
                                           strategies.warmup(self.strategy), compile=args.compile)
        self.eval_step = make_eval_step(self.model)
        self.sampler = None
        if self.strategy.sampling is not None:
            self.sampler = PrioritizedBatches(len(data.train), self.strategy.sampling, seed=args.seed)

    def batches(self, epoch: int, in_warmup: bool):
        """This epoch's batches: the shuffled order, or prioritised draws for a sampling strategy."""
        d, a = self.data, self.args
        if in_warmup or self.sampler is None:
            return fdata.iterate_batches(d.train, a.batch_size, seed=a.seed, epoch=epoch, shuffle=True,
                                         drop_last=True, augment=not a.no_augment, mean=d.mean, std=d.std,
                                         device=d.device)
        k = self.strategy.sampling.k

        def draws():
            for b in range(self.steps_per_epoch):
                index, weight = self.sampler.draw(k)
                gen = None if a.no_augment else fdata.epoch_generator(a.seed, epoch, b)
                batch = fdata.batch_at(d.train, index, generator=gen, mean=d.mean, std=d.std, device=d.device)
                batch["weight"] = weight.to(d.device)
                yield batch

        return draws()

    def step_for(self, in_warmup: bool):
        step = self.warmup_step if in_warmup else self.main_step
        if self.sampler is None or in_warmup:
            return step

        def step_and_reprioritise(state, batch):
            state, metrics = step(state, batch)
            self.sampler.update(batch["index"], state["selector"]["priority"][batch["index"]])
            return state, metrics

        return step_and_reprioritise

    def seconds_per_step(self, in_warmup: bool, steps: int = 4) -> float:
        """Median wall-clock of a few steps on a throwaway copy of the state (steps are pure)."""
        if self.sampler is not None and not in_warmup:
            self.sampler.sync(self.state["selector"]["priority"])
        step, state, times = self.step_for(in_warmup), self.state, []
        for i, batch in zip(range(steps + 1), self.batches(0, in_warmup)):
            start = time.perf_counter()
            state, metrics = step(state, batch)
            float(metrics["loss"])
            if i:  # the first call measures FLOPs and warms caches
                times.append(time.perf_counter() - start)
        if self.sampler is not None:
            self.sampler.sync(self.state["selector"]["priority"])
        return sorted(times)[len(times) // 2]


def plan_epochs(args: argparse.Namespace, name: str, data: Data) -> int:
    """Epochs that fit --time-budget for this strategy, from measured step times."""
    probe = _Job(args, name, data, epochs=max(args.epochs, 1))
    full_epoch = probe.seconds_per_step(True) * probe.steps_per_epoch
    if probe.warmup_epochs == 0:
        return max(1, int(args.time_budget // full_epoch))
    main_epoch = probe.seconds_per_step(False) * probe.steps_per_epoch
    left = args.time_budget - probe.warmup_epochs * full_epoch
    return probe.warmup_epochs + max(0, int(left // main_epoch)) if left > 0 else probe.warmup_epochs


def _until(batches, deadline: float | None, spent_before: float, start: float):
    for batch in batches:
        if deadline is not None and spent_before + (time.perf_counter() - start) >= deadline:
            return
        yield batch


def run_strategy(args: argparse.Namespace, name: str, data: Data, *, parent_run_id: str | None = None,
                 run_name: str | None = None) -> Result:
    """Train one strategy on `data` as configured; returns its summary and history."""
    epochs = plan_epochs(args, name, data) if args.time_budget else args.epochs
    job = _Job(args, name, data, epochs)
    state = job.state
    meter = fmeter.open_meter(data.device)
    n_params = sum(p.numel() for p in state["params"].values())
    config = dict(vars(args), strategy=name, epochs=epochs, lr=job.peak_lr, device=str(data.device),
                  warmup_epochs=job.warmup_epochs, train_samples=len(data.train), test_samples=len(data.test),
                  classes=len(data.train.classes), steps_per_epoch=job.steps_per_epoch, model_params=n_params,
                  energy_meter=meter.name if meter else "none", torch=torch.__version__,
                  threads=torch.get_num_threads(), machine=platform.machine(), python=platform.python_version())
    config.pop("compare")
    history = History()
    guard = SkipGuard()
    train_time = eval_time = joules = 0.0
    run_name = run_name or args.run_name or f"{name}-{args.model}" + (f"-{args.target_rate:g}" if job.target else "")

    with tracking.RunTracker(args.tracking_uri, args.experiment, run_name, parent_run_id=parent_run_id) as tracker:
        tracker.log_params(config)
        print(f"MLflow run {tracker.run_id} ({run_name}); browse: {tracking.ui_command(args.tracking_uri)}",
              flush=True)
        for epoch in range(epochs):
            if args.time_budget and train_time >= args.time_budget:
                break
            in_warmup = epoch < job.warmup_epochs
            if job.sampler is not None and not in_warmup:
                job.sampler.sync(state["selector"]["priority"])
            before = _counters(state)
            bar = _progress(job.batches(epoch, in_warmup), job.steps_per_epoch,
                            f"{name} epoch {epoch + 1}/{epochs}" + (" (warm-up)" if in_warmup else ""),
                            args.no_progress)

            def on_metrics(first_step: int, chunk: dict[str, list[float]]) -> None:
                history.add_steps(first_step, chunk)
                for i in range(len(chunk["loss"])):
                    tracker.log_metrics({k: v[i] for k, v in chunk.items()}, step=first_step + i)
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(_postfix(chunk), refresh=False)

            start = time.perf_counter()
            energy_start = meter.read() if meter else 0.0
            state = run_steps(job.step_for(in_warmup), state, _until(bar, args.time_budget, train_time, start),
                              first_step=int(state["step"]), log_every=args.log_every, on_metrics=on_metrics,
                              guard=guard)
            float(state["step"])  # wait for queued device work before reading the clock
            train_time += time.perf_counter() - start
            if meter:
                joules += meter.joules(energy_start, meter.read())
            if hasattr(bar, "close"):
                bar.close()

            start = time.perf_counter()
            test = evaluate(job.eval_step, state, fdata.iterate_batches(
                data.test, 512, seed=0, epoch=0, shuffle=False, drop_last=False, mean=data.mean, std=data.std,
                device=data.device))
            eval_time += time.perf_counter() - start
            after = _counters(state)
            seen = after["samples_seen"] - before["samples_seen"]
            record = dict(epoch=epoch + 1, warmup=float(in_warmup), test_accuracy=test["accuracy"],
                          test_loss=test["loss"], train_time_s=train_time, eval_time_s=eval_time,
                          epoch_activation_rate=(after["samples_trained"] - before["samples_trained"]) / max(1, seen),
                          epoch_saved_pct=_saved(after, before), saved_pct=_saved(after),
                          flops_spent=after["flops_spent"], flops_full=after["flops_full"])
            history.epochs.append(record)
            tracker.log_metrics({f"epoch/{k}": v for k, v in record.items() if k != "epoch"}, step=int(state["step"]))
            tracker.flush()
            print(f"{name} epoch {epoch + 1}: test acc {test['accuracy']:.4f}, trained "
                  f"{record['epoch_activation_rate']:.3f} of samples, FLOPs saved {record['epoch_saved_pct']:.1f}% "
                  f"(cumulative {record['saved_pct']:.1f}%), train {train_time:.1f}s", flush=True)

        summary = _summary(name, args, job, history, state, train_time, eval_time, n_params, meter, joules, guard)
        _log_plots(tracker, history, job.target)
        tracker.log_dict(config, "config.json")
        tracker.log_dict(summary, "summary.json")
        tracker.log_metrics({f"final/{k}": v for k, v in summary.items()
                             if isinstance(v, (int, float)) and not isinstance(v, bool)}, step=int(state["step"]))
    return Result(summary, history)


def train(args: argparse.Namespace) -> dict:
    """Run the configured strategy; print and return its summary."""
    result = run_strategy(args, args.strategy, load_data(args))
    _print_summary(result.summary)
    print(f"Browse the run: {tracking.ui_command(args.tracking_uri)}")
    return result.summary


def compare(args: argparse.Namespace) -> list[Result]:
    """Run each strategy of --compare as a nested run; log the table and plots on the parent run."""
    data = load_data(args)
    names = args.compare
    parent_name = args.run_name or f"compare-{args.model}-{args.target_rate:g}"
    with tracking.RunTracker(args.tracking_uri, args.experiment, parent_name) as parent:
        parent.log_params(dict(vars(args), compare=",".join(names)))
        results = [run_strategy(args, name, data, parent_run_id=parent.run_id,
                                run_name=f"{name}-{args.model}") for name in names]
        rows = comparison_table(results)
        markdown = comparison_markdown(rows)
        print("\n" + markdown)
        parent.log_text(markdown, "comparison.md")
        parent.log_dict({"rows": rows}, "comparison.json")
        for fig_name, fig in _comparison_figures(results).items():
            parent.log_figure(fig, fig_name)
            plots.plt.close(fig)
        for row in rows:
            parent.log_metrics({f"{row['strategy']}/{k}": v for k, v in row.items()
                                if isinstance(v, (int, float)) and v is not None and not isinstance(v, bool)}, step=0)
    print(f"Browse the runs: {tracking.ui_command(args.tracking_uri)}")
    return results


def accuracy_at(history: History, seconds: float) -> float | None:
    """Test accuracy of the last epoch finished within `seconds` of train wall-clock (None if none was)."""
    done = [e for e in history.epochs if e["train_time_s"] <= seconds * (1 + 1e-9)]
    return done[-1]["test_accuracy"] if done else None


def comparison_table(results: list[Result]) -> list[dict]:
    """One row per strategy; ratios relative to the `full` run of the same command (when present)."""
    by_name = {r.summary["strategy"]: r for r in results}
    full = by_name.get("full")
    random_time = by_name["random"].summary["train_time_s"] if "random" in by_name else None
    rows = []
    for r in results:
        s = r.summary
        rows.append(dict(
            strategy=s["strategy"], epochs=s["epochs"], test_accuracy=s["test_accuracy"],
            train_time_s=s["train_time_s"],
            speedup_vs_full=(full.summary["train_time_s"] / s["train_time_s"]) if full else None,
            flops_ratio_vs_full=(s["flops_spent"] / full.summary["flops_spent"]) if full else None,
            samples_trained=s["samples_trained"], samples_scored=s["samples_scored"],
            energy_j=s["energy_j"], energy_kind=s["energy_kind"],
            acc_at_random_time=accuracy_at(r.history, random_time) if random_time is not None else None,
        ))
    return rows


def comparison_markdown(rows: list[dict]) -> str:
    def fmt(value, spec):
        return "n/a" if value is None else format(value, spec)

    lines = ["| strategy | epochs | test acc | train s | speed-up vs full | FLOPs vs full | samples trained "
             "| samples scored | energy (J) | acc at random's time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['strategy']} | {r['epochs']} | {fmt(r['test_accuracy'], '.4f')} | "
                     f"{fmt(r['train_time_s'], '.1f')} | {fmt(r['speedup_vs_full'], '.2f')}x | "
                     f"{fmt(r['flops_ratio_vs_full'], '.3f')} | {r['samples_trained']} | {r['samples_scored']} | "
                     f"{fmt(r['energy_j'], '.0f')} ({r['energy_kind']}) | {fmt(r['acc_at_random_time'], '.4f')} |")
    return "\n".join(lines)


def _comparison_figures(results: list[Result]) -> dict:
    curves = {r.summary["strategy"]: r.history.epochs for r in results}
    rates = {r.summary["strategy"]: (r.history.series("activation_rate"), r.history.series("threshold"))
             for r in results if r.summary["strategy"] != "full"}
    return {"compare_accuracy_vs_time.png": plots.compare_curves(curves, "train_time_s", "train wall-clock (s)"),
            "compare_accuracy_vs_flops.png": plots.compare_curves(curves, "flops_spent", "FLOPs executed"),
            "compare_rate_threshold.png": plots.compare_rates(rates)}


def _counters(state) -> dict[str, int]:
    return {k: int(v) for k, v in state["energy"].items()}


def _saved(after: dict[str, int], before: dict[str, int] | None = None) -> float:
    before = before or {"flops_spent": 0, "flops_full": 0}
    full = after["flops_full"] - before["flops_full"]
    return 100.0 * (1 - (after["flops_spent"] - before["flops_spent"]) / full) if full else 0.0


def _summary(name, args, job: _Job, history: History, state, train_time: float, eval_time: float, n_params: int,
             meter, joules: float, guard: SkipGuard) -> dict:
    final = history.epochs[-1]
    counters = _counters(state)
    post = history.epochs[job.warmup_epochs:] or history.epochs
    # Post-warm-up rate: samples trained / seen over the gated epochs, from the counters' per-epoch deltas.
    post_rate = sum(e["epoch_activation_rate"] for e in post) / len(post)
    if meter:
        energy_j, energy_kind = joules, f"measured, {meter.name}"
    else:
        energy_j = fmeter.estimate_joules(counters["flops_spent"], args.joules_per_gflop)
        energy_kind = f"estimate: FLOPs x {args.joules_per_gflop:g} J/GFLOP, no meter"
    return dict(strategy=name, model=args.model, epochs=len(history.epochs), warmup_epochs=job.warmup_epochs,
                target_rate=job.target if job.target is not None else 1.0,
                test_accuracy=final["test_accuracy"], train_time_s=train_time, eval_time_s=eval_time,
                mean_activation_rate_after_warmup=post_rate, flops_saved_pct=_saved(counters),
                flops_spent=counters["flops_spent"], flops_full=counters["flops_full"],
                samples_seen=counters["samples_seen"], samples_scored=counters["samples_scored"],
                samples_trained=counters["samples_trained"], model_params=n_params,
                skipped_nonfinite_updates=guard.total, energy_j=energy_j, energy_kind=energy_kind)


def _print_summary(summary: dict) -> None:
    rows = [("strategy", summary["strategy"]), ("model", summary["model"]),
            ("epochs (warm-up)", f"{summary['epochs']} ({summary['warmup_epochs']})"),
            ("test accuracy", f"{summary['test_accuracy']:.4f}"),
            ("train wall-clock", f"{summary['train_time_s']:.1f} s (eval {summary['eval_time_s']:.1f} s apart)"),
            ("activation rate after warm-up", f"{summary['mean_activation_rate_after_warmup']:.3f}"
             + (f" (target {summary['target_rate']:g})" if summary["strategy"] != "full" else "")),
            ("FLOPs spent / full", f"{summary['flops_spent']:.3e} / {summary['flops_full']:.3e}"),
            ("FLOPs saved vs full", f"{summary['flops_saved_pct']:.1f}%"),
            ("samples scored / trained", f"{summary['samples_scored']} / {summary['samples_trained']}"),
            ("energy", f"{summary['energy_j']:.0f} J ({summary['energy_kind']})")]
    width = max(len(k) for k, _ in rows)
    print("\nsummary")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")


def _log_plots(tracker: tracking.RunTracker, history: History, target: float | None) -> None:
    steps, rate = history.series("activation_rate")
    _, ema = history.series("rate_ema")
    _, threshold = history.series("threshold")
    figures = {
        "rate_threshold.png": plots.rate_and_threshold(steps, rate, ema, threshold, target),
        "energy_saved.png": plots.energy_saved(steps, history.series("step_saved_pct")[1],
                                               history.series("saved_pct")[1]),
        "accuracy_vs_time.png": plots.accuracy_vs_time([e["train_time_s"] for e in history.epochs],
                                                       [e["test_accuracy"] for e in history.epochs]),
    }
    for name, fig in figures.items():
        tracker.log_figure(fig, name)
        plots.plt.close(fig)


def _postfix(chunk: dict[str, list[float]]) -> dict[str, str]:
    out = {"loss": f"{chunk['loss'][-1]:.3f}", "rate": f"{sum(chunk['activation_rate']) / len(chunk['loss']):.2f}"}
    if "threshold" in chunk:
        out["thr"] = f"{chunk['threshold'][-1]:.3f}"
    out["saved"] = f"{chunk['saved_pct'][-1]:.1f}%"
    return out


def _progress(batches, total: int, desc: str, disabled: bool):
    if disabled:
        return batches
    from tqdm import tqdm

    return tqdm(batches, total=total, desc=desc, leave=False, dynamic_ncols=True, mininterval=1.0)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.compare:
            compare(args)
        else:
            train(args)
    except (fdata.DataError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted; the MLflow run is marked KILLED", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
