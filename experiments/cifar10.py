"""Train an image classifier with Adaptive Sparse Training and track it in MLflow.

    python -m experiments.cifar10 --data PATH [--strategy sundew|random|full] [--target-rate 0.1] ...

Every run logs its config, per-step curves (loss, activation rate, threshold,
FLOPs saved), per-epoch test accuracy and train wall-clock (eval excluded), plots
and a summary into MLflow (default store: sqlite under ./mlruns).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from dataclasses import dataclass, field

import torch

from functional_ast import data as fdata
from functional_ast import optim, plots, strategies, tracking
from functional_ast.config import ConfigError
from functional_ast.loop import NonFiniteLossError, evaluate, run_steps
from functional_ast.losses import cross_entropy
from functional_ast.models import MODELS, build_model
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
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '>='} {low}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {text}")
        return value

    return parse


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
                   help="epochs on all data before gating starts (controller idle)")
    t.add_argument("--batch-size", type=_bounded(int, 2), default=128)
    t.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    t.add_argument("--lr", type=_bounded(float, 0.0, low_open=True), default=None,
                   help="peak learning rate (default: 0.05 for sgd, 1e-3 for adam), warm-up then cosine")
    t.add_argument("--weight-decay", type=_bounded(float, 0.0), default=5e-4)
    t.add_argument("--model", choices=sorted(MODELS), default="cnn")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps ...")
    t.add_argument("--compile", action="store_true", help="torch.compile the scoring pass and the update")
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


def _counters(state) -> dict[str, int]:
    return {k: int(v) for k, v in state["energy"].items()}


def train(args: argparse.Namespace) -> dict:
    """Run one training job as configured; returns the summary dict."""
    torch.manual_seed(args.seed)
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
    train_set = fdata.LabelledImages(train_set.data.to(device), train_set.classes)
    test_set = fdata.LabelledImages(test_set.data.to(device), test_set.classes)
    _, channels, height, width = train_set.data["image"].shape

    model = build_model(args.model, num_classes=len(train_set.classes), in_channels=channels, image_size=height)
    steps_per_epoch = fdata.num_batches(len(train_set), args.batch_size, drop_last=True)
    total_steps = steps_per_epoch * args.epochs
    peak_lr = args.lr if args.lr is not None else (0.05 if args.optimizer == "sgd" else 1e-3)
    schedule = optim.warmup_cosine(peak_lr, total_steps, warmup_steps=min(steps_per_epoch, total_steps // 5))
    if args.optimizer == "sgd":
        optimizer = optim.sgd(schedule, momentum=0.9, nesterov=True, weight_decay=args.weight_decay)
    else:
        optimizer = optim.adam(schedule, weight_decay=args.weight_decay)
    strategy = strategies.by_name(args.strategy, args.target_rate, num_samples=len(train_set))
    gated = strategy.name != "full"
    warmup_epochs = min(args.warmup_epochs, args.epochs) if gated else 0

    state = init_state(model, optimizer, strategy, key=args.seed, device=device)
    main_step = make_train_step(model, cross_entropy, optimizer, strategy, compile=args.compile)
    warmup_step = make_train_step(model, cross_entropy, optimizer, strategies.warmup(strategy),
                                  compile=args.compile) if warmup_epochs else None
    eval_step = make_eval_step(model)
    n_params = sum(p.numel() for p in state["params"].values())

    config = dict(vars(args), lr=peak_lr, device=str(device), warmup_epochs=warmup_epochs,
                  train_samples=len(train_set), test_samples=len(test_set), classes=len(train_set.classes),
                  steps_per_epoch=steps_per_epoch, model_params=n_params, torch=torch.__version__,
                  threads=torch.get_num_threads(), machine=platform.machine(), python=platform.python_version())
    history = History()
    train_time = eval_time = 0.0
    run_name = args.run_name or f"{args.strategy}-{args.model}" + (f"-{args.target_rate:g}" if gated else "")

    with tracking.RunTracker(args.tracking_uri, args.experiment, run_name) as tracker:
        tracker.log_params(config)
        print(f"MLflow run {tracker.run_id} ({run_name}); browse: {tracking.ui_command(args.tracking_uri)}",
              flush=True)
        for epoch in range(args.epochs):
            in_warmup = epoch < warmup_epochs
            step = warmup_step if in_warmup else main_step
            before = _counters(state)
            batches = fdata.iterate_batches(train_set, args.batch_size, seed=args.seed, epoch=epoch, shuffle=True,
                                            drop_last=True, augment=not args.no_augment, mean=mean, std=std,
                                            device=device)
            bar = _progress(batches, steps_per_epoch, f"epoch {epoch + 1}/{args.epochs}"
                            + (" (warm-up)" if in_warmup else ""), args.no_progress)

            def on_metrics(first_step: int, chunk: dict[str, list[float]]) -> None:
                history.add_steps(first_step, chunk)
                for i in range(len(chunk["loss"])):
                    tracker.log_metrics({k: v[i] for k, v in chunk.items()}, step=first_step + i)
                if bar is not None:
                    bar.set_postfix(_postfix(chunk), refresh=False)

            start = time.perf_counter()
            state = run_steps(step, state, bar if bar is not None else batches,
                              first_step=int(state["step"]), log_every=args.log_every, on_metrics=on_metrics)
            train_time += time.perf_counter() - start
            if bar is not None:
                bar.close()

            start = time.perf_counter()
            test = evaluate(eval_step, state, fdata.iterate_batches(
                test_set, 512, seed=0, epoch=0, shuffle=False, drop_last=False, mean=mean, std=std, device=device))
            eval_time += time.perf_counter() - start
            after = _counters(state)
            seen = after["samples_seen"] - before["samples_seen"]
            record = dict(epoch=epoch + 1, warmup=float(in_warmup), test_accuracy=test["accuracy"],
                          test_loss=test["loss"], train_time_s=train_time, eval_time_s=eval_time,
                          epoch_activation_rate=(after["samples_trained"] - before["samples_trained"]) / seen,
                          epoch_saved_pct=_saved(after, before), saved_pct=_saved(after),
                          flops_spent=after["flops_spent"], flops_full=after["flops_full"])
            history.epochs.append(record)
            tracker.log_metrics({f"epoch/{k}": v for k, v in record.items() if k != "epoch"}, step=int(state["step"]))
            tracker.flush()
            print(f"epoch {epoch + 1}: test acc {test['accuracy']:.4f}, trained {record['epoch_activation_rate']:.3f} "
                  f"of samples, FLOPs saved {record['epoch_saved_pct']:.1f}% (cumulative {record['saved_pct']:.1f}%), "
                  f"train {train_time:.1f}s", flush=True)

        summary = _summary(args, history, state, warmup_epochs, train_time, eval_time, n_params)
        _log_plots(tracker, history, args.target_rate if gated else None)
        tracker.log_dict(config, "config.json")
        tracker.log_dict(summary, "summary.json")
        tracker.log_metrics({f"final/{k}": v for k, v in summary.items() if isinstance(v, (int, float))},
                            step=int(state["step"]))
    _print_summary(summary)
    print(f"Browse the run: {tracking.ui_command(args.tracking_uri)}")
    return summary


def _saved(after: dict[str, int], before: dict[str, int] | None = None) -> float:
    before = before or {"flops_spent": 0, "flops_full": 0}
    full = after["flops_full"] - before["flops_full"]
    return 100.0 * (1 - (after["flops_spent"] - before["flops_spent"]) / full) if full else 0.0


def _summary(args, history: History, state, warmup_epochs: int, train_time: float, eval_time: float,
             n_params: int) -> dict:
    final = history.epochs[-1]
    counters = _counters(state)
    post = history.epochs[warmup_epochs:] or history.epochs
    # Post-warm-up rate: samples trained / seen over the gated epochs, from the counters' per-epoch deltas.
    post_rate = sum(e["epoch_activation_rate"] for e in post) / len(post)
    return dict(strategy=args.strategy, model=args.model, epochs=args.epochs, warmup_epochs=warmup_epochs,
                target_rate=args.target_rate if args.strategy != "full" else 1.0,
                test_accuracy=final["test_accuracy"], train_time_s=train_time, eval_time_s=eval_time,
                mean_activation_rate_after_warmup=post_rate, flops_saved_pct=_saved(counters),
                flops_spent=counters["flops_spent"], flops_full=counters["flops_full"],
                samples_seen=counters["samples_seen"], samples_scored=counters["samples_scored"],
                samples_trained=counters["samples_trained"], model_params=n_params,
                energy_joules="not measured (no NVML/RAPL meter read); FLOPs are counted")


def _print_summary(summary: dict) -> None:
    rows = [("strategy", summary["strategy"]), ("model", summary["model"]),
            ("epochs (warm-up)", f"{summary['epochs']} ({summary['warmup_epochs']})"),
            ("test accuracy", f"{summary['test_accuracy']:.4f}"),
            ("train wall-clock", f"{summary['train_time_s']:.1f} s (eval {summary['eval_time_s']:.1f} s apart)"),
            ("activation rate after warm-up", f"{summary['mean_activation_rate_after_warmup']:.3f}"
             + (f" (target {summary['target_rate']:g})" if summary["strategy"] != "full" else "")),
            ("FLOPs spent / full", f"{summary['flops_spent']:.3e} / {summary['flops_full']:.3e}"),
            ("FLOPs saved vs full", f"{summary['flops_saved_pct']:.1f}%"),
            ("samples scored / trained", f"{summary['samples_scored']} / {summary['samples_trained']}")]
    width = max(len(k) for k, _ in rows)
    print("\nsummary")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")


def _log_plots(tracker: tracking.RunTracker, history: History, target: float | None) -> None:
    steps, rate = history.series("activation_rate")
    ema_steps, ema = history.series("rate_ema")
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
        return None
    from tqdm import tqdm

    return tqdm(batches, total=total, desc=desc, leave=False, dynamic_ncols=True, mininterval=1.0)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
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
