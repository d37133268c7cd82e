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
import itertools
import json
import logging
import math
import os
import platform
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tensordict import TensorDict

from functional_ast import checkpoint, distributed
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
    t.add_argument("--pool-size", type=_bounded(int, 1), default=None,
                   help="samples each step selects from after warm-up (default: batch size / target rate, so a "
                        "step trains about one --batch-size; give --batch-size to select within each batch)")
    t.add_argument("--stale-rule", choices=strategies.STALE_RULES, default="proportional",
                   help="stale: draw in proportion to remembered loss, or hard (above the pool mean) first")
    t.add_argument("--explore", type=_bounded(float, 0.0, 1.0), default=None,
                   help="stale: share of each step's picks drawn uniformly from the pool, which re-checks samples "
                        "whose remembered loss is out of date (default 0.2)")
    t.add_argument("--epochs", type=_bounded(int, 1), default=10)
    t.add_argument("--warmup-epochs", type=_bounded(int, 0), default=1,
                   help="epochs on all data before selection starts (controller idle)")
    t.add_argument("--cooldown-epochs", type=_bounded(int, 0), default=0,
                   help="last epochs on all data (the selector observes, the controller idles), as InfoBatch anneals")
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
    k = p.add_argument_group("checkpoints")
    k.add_argument("--checkpoint-dir", default=None,
                   help="where runs keep their checkpoints (default: checkpoints/<experiment> beside the run store, "
                        "i.e. ./mlruns/checkpoints/<experiment>)")
    k.add_argument("--checkpoint-every", type=_bounded(int, 0), default=200,
                   help="also checkpoint every N steps (0: only at epoch ends)")
    k.add_argument("--keep-checkpoints", type=_bounded(int, 1), default=2, help="keep the newest K checkpoints")
    k.add_argument("--resume", action="store_true",
                   help="continue the newest run of the same name from its newest checkpoint, in the same MLflow "
                        "run; refused if a result-changing flag differs")
    return p


def resolve_device(name: str) -> torch.device:
    """--device as a torch.device; under torchrun, `auto`/`cuda` mean this process's GPU (LOCAL_RANK)."""
    if distributed.launched_by_torchrun() and name in ("auto", "cuda") and torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        return device
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
    collective: distributed.Collective = distributed.LOCAL  # every rank holds the whole data set


def load_data(args: argparse.Namespace, collective: distributed.Collective = distributed.LOCAL) -> Data:
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
                device, collective)


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

    def to_json(self) -> dict:
        return {"steps": {k: [list(p) for p in v] for k, v in self.steps.items()}, "epochs": self.epochs}

    @classmethod
    def from_json(cls, data: dict) -> "History":
        return cls({k: [tuple(p) for p in v] for k, v in data["steps"].items()}, list(data["epochs"]))


@dataclass
class Result:
    summary: dict
    history: History


def pool_size(args: argparse.Namespace, name: str, num_samples: int) -> int:
    """Samples a step selects from after warm-up: --pool-size, or --batch-size / --target-rate (a step then trains
    about one batch, as a fresh random subset per epoch (RS2) does); --batch-size for `full`."""
    if name == "full":
        return args.batch_size
    size = args.pool_size if args.pool_size is not None else round(args.batch_size / args.target_rate)
    return max(1, min(size, num_samples))


class _Job:
    """Everything one strategy's run needs: steps, state, schedule; built once from the config."""

    def __init__(self, args: argparse.Namespace, name: str, data: Data, epochs: int):
        self.args, self.name, self.data, self.epochs = args, name, data, epochs
        torch.manual_seed(args.seed)
        _, channels, height, _ = data.train.data["image"].shape
        self.model = build_model(args.model, num_classes=len(data.train.classes), in_channels=channels,
                                 image_size=height)
        gated = name != "full"
        self.warmup_epochs = min(args.warmup_epochs, epochs) if gated else 0
        self.cooldown_epochs = min(args.cooldown_epochs, epochs - self.warmup_epochs) if gated else 0
        self.target = args.target_rate if gated else None
        self.pool_size = pool_size(args, name, len(data.train))
        self.warmup_steps_per_epoch = fdata.num_batches(len(data.train), args.batch_size, drop_last=True)
        self.steps_per_epoch = fdata.num_batches(len(data.train), self.pool_size, drop_last=True)  # after warm-up
        # The learning-rate schedule runs over the steps this strategy actually takes.
        total_steps = sum(self.steps_in(epoch) for epoch in range(epochs))
        self.peak_lr = args.lr if args.lr is not None else (0.05 if args.optimizer == "sgd" else 1e-3)
        schedule = optim.warmup_cosine(self.peak_lr, total_steps,
                                       warmup_steps=min(self.steps_in(0), total_steps // 5))
        if args.optimizer == "sgd":
            self.optimizer = optim.sgd(schedule, momentum=0.9, nesterov=True, weight_decay=args.weight_decay)
        else:
            self.optimizer = optim.adam(schedule, weight_decay=args.weight_decay)
        self.strategy = strategies.by_name(name, args.target_rate, num_samples=len(data.train),
                                           batch_size=self.pool_size, explore=args.explore,
                                           stale_rule=args.stale_rule)
        self.state = init_state(self.model, self.optimizer, self.strategy, key=args.seed, device=data.device)
        self.main_step = make_train_step(self.model, cross_entropy, self.optimizer, self.strategy,
                                         compile=args.compile, score_chunk_size=args.batch_size,
                                         collective=data.collective)
        self.warmup_step = make_train_step(self.model, cross_entropy, self.optimizer,
                                           strategies.warmup(self.strategy), compile=args.compile,
                                           collective=data.collective)
        self.eval_step = make_eval_step(self.model)
        self.sampler = None
        if self.strategy.sampling is not None:
            self.sampler = PrioritizedBatches(len(data.train), self.strategy.sampling, seed=args.seed)

    def all_data(self, epoch: int) -> bool:
        """Whether `epoch` trains on every sample: a warm-up epoch (first) or a cool-down epoch (last)."""
        return epoch < self.warmup_epochs or epoch >= self.epochs - self.cooldown_epochs

    def steps_in(self, epoch: int) -> int:
        """Steps of `epoch`: batches of --batch-size in all-data epochs, pools in the others."""
        return self.warmup_steps_per_epoch if self.all_data(epoch) else self.steps_per_epoch

    def batches(self, epoch: int, all_data: bool, start_batch: int = 0):
        """This epoch's batches from `start_batch` on: the shuffled order in batches (all-data epochs) or
        pools, or prioritised draws for a sampling strategy. All depend only on (seed, epoch, batch) and the
        state, so a resume replays them."""
        d, a = self.data, self.args
        if all_data or self.sampler is None:
            size = a.batch_size if all_data else self.pool_size
            return fdata.iterate_batches(d.train, size, seed=a.seed, epoch=epoch, shuffle=True,
                                         drop_last=True, augment=not a.no_augment, mean=d.mean, std=d.std,
                                         device=d.device, start_batch=start_batch)
        k = self.strategy.sampling.k

        def draws():
            for b in range(start_batch, self.steps_per_epoch):
                index, weight = self.sampler.draw(k, fdata.epoch_generator(a.seed, epoch, b, stream=1))
                gen = None if a.no_augment else fdata.epoch_generator(a.seed, epoch, b)
                batch = fdata.batch_at(d.train, index, generator=gen, mean=d.mean, std=d.std, device=d.device)
                batch["weight"] = weight.to(d.device)
                yield batch

        return draws()

    def step_for(self, all_data: bool):
        step = self.warmup_step if all_data else self.main_step
        if self.sampler is None or all_data:
            return step

        def step_and_reprioritise(state, batch):
            state, metrics = step(state, batch)
            self.sampler.update(batch["index"], state["selector"]["priority"][batch["index"]])
            return state, metrics

        return step_and_reprioritise

    def seconds_per_step(self, all_data: bool, steps: int = 4) -> float:
        """Median wall-clock of a few steps on a throwaway copy of the state (steps are pure)."""
        if self.sampler is not None and not all_data:
            self.sampler.sync(self.state["selector"]["priority"])
        step, state, times = self.step_for(all_data), self.state, []
        batches = itertools.chain.from_iterable(self.batches(e, all_data) for e in itertools.count())  # epochs
        for i, batch in zip(range(steps + 1), batches):  # may hold fewer pools than `steps`
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
    full_epoch = probe.seconds_per_step(True) * probe.warmup_steps_per_epoch
    fixed = probe.warmup_epochs + probe.cooldown_epochs  # all-data epochs, kept whatever the budget
    if fixed == 0:
        return max(1, int(args.time_budget // (probe.seconds_per_step(False) * probe.steps_per_epoch)))
    main_epoch = probe.seconds_per_step(False) * probe.steps_per_epoch
    left = args.time_budget - fixed * full_epoch
    return fixed + max(0, int(left // main_epoch)) if left > 0 else fixed


class _Clock:
    """Train wall-clock: runs between start() and stop(), excluding pauses (checkpoint writes)."""

    def __init__(self, spent: float = 0.0):
        self.spent, self._start = spent, None

    def start(self) -> None:
        self._start = time.perf_counter()

    def stop(self) -> None:
        self.spent, self._start = self.now(), None

    def now(self) -> float:
        return self.spent + (time.perf_counter() - self._start if self._start is not None else 0.0)

    @contextmanager
    def paused(self):
        running = self._start is not None
        if running:
            self.stop()
        try:
            yield
        finally:
            if running:
                self.start()


def _until(batches, deadline: float | None, clock: _Clock):
    for batch in batches:
        if deadline is not None and clock.now() >= deadline:
            return
        yield batch


# Flags that do not change what is computed; every other flag must match for --resume.
_NOT_RESULT_FLAGS = {"tracking_uri", "experiment", "run_name", "log_every", "no_progress", "checkpoint_every",
                     "checkpoint_dir", "keep_checkpoints", "resume", "data_root", "joules_per_gflop"}


def result_config(args: argparse.Namespace, **extra) -> dict:
    """The flags that determine a run's results (what --resume compares)."""
    config = {k: v for k, v in vars(args).items() if k not in _NOT_RESULT_FLAGS}
    if config.get("compare"):
        config["compare"] = ",".join(config["compare"])
    return dict(config, **extra)


def checkpoint_root(args: argparse.Namespace) -> Path:
    """--checkpoint-dir, or checkpoints/<experiment> beside the run store (./mlruns by default)."""
    if args.checkpoint_dir:
        return Path(args.checkpoint_dir)
    return tracking.store_dir(args.tracking_uri) / "checkpoints" / args.experiment


def _newest_run_folder(base: Path) -> Path | None:
    folders = [f for f in base.glob("*/run.json")] if base.is_dir() else []
    return max(folders, key=lambda f: (f.stat().st_mtime, f.parent.name)).parent if folders else None


def run_folder(args: argparse.Namespace, name: str,
               collective: distributed.Collective = distributed.LOCAL) -> tuple[Path, bool]:
    """(folder, resuming): the newest run folder of `name` with --resume, else a new one (checked writable).
    Under torch.distributed rank 0 decides and every rank gets its answer (or its error)."""
    if collective.world > 1:
        answer = None
        if collective.is_main:
            try:
                answer = _run_folder(args, name)
            except ConfigError as error:
                answer = str(error)
        answer = distributed.broadcast_object(answer, collective)
        if isinstance(answer, str):
            raise ConfigError(answer)
        return answer
    return _run_folder(args, name)


def _run_folder(args: argparse.Namespace, name: str) -> tuple[Path, bool]:
    base = checkpoint_root(args) / name
    if args.resume:
        found = _newest_run_folder(base)
        if found is None:
            raise ConfigError(f"--resume: no run named {name!r} to resume under {base}; run the same command "
                              "without --resume to start it (or pass the --checkpoint-dir it used)")
        return found, True
    folder = base / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"cannot write checkpoints to {folder} ({error.strerror or error}); pass a writable "
                          "--checkpoint-dir (or a writable --tracking-uri location)") from None
    return folder, False


def _write_json(path: Path, data: dict) -> None:
    """Atomic JSON write (temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def _read_run_info(folder: Path, config: dict) -> dict:
    """run.json of a folder being resumed; refuses a different result-changing config."""
    info = json.loads((folder / "run.json").read_text())
    old = info["config"]
    diffs = [f"{k}: {old.get(k)!r} then, {config.get(k)!r} now" for k in sorted(set(old) | set(config))
             if old.get(k) != config.get(k)]
    if diffs:
        raise ConfigError(f"--resume: the run in {folder} was started with other settings ({'; '.join(diffs)}); "
                          "resume with the original flags, or drop --resume to start a new run")
    return info


@dataclass
class Progress:
    """The loop's position and measurements: saved in each checkpoint's meta, restored on resume."""

    epoch: int = 0  # the epoch being run (or next to run)
    batch: int = 0  # the next batch within it
    train_time: float = 0.0
    eval_time: float = 0.0
    joules: float = 0.0
    epoch_start_counters: dict = field(default_factory=dict)
    guard: dict = field(default_factory=dict)
    history: History = field(default_factory=History)

    def to_meta(self) -> dict:
        return dict(epoch=self.epoch, batch=self.batch, train_time=self.train_time, eval_time=self.eval_time,
                    joules=self.joules, epoch_start_counters=self.epoch_start_counters, guard=self.guard,
                    history=self.history.to_json())

    @classmethod
    def from_meta(cls, meta: dict) -> "Progress":
        fields_ = {k: meta[k] for k in ("epoch", "batch", "train_time", "eval_time", "joules",
                                        "epoch_start_counters", "guard")}
        return cls(**fields_, history=History.from_json(meta["history"]))


def run_strategy(args: argparse.Namespace, name: str, data: Data, *, folder: Path, resume: bool = False,
                 parent_run_id: str | None = None, run_name: str | None = None) -> Result:
    """Train one strategy on `data` as configured, checkpointing into `folder`; with `resume`, continue
    the run saved there (same MLflow run, from its newest checkpoint). Returns summary and history."""
    main = data.collective.is_main
    say = print if main else _silent
    config_key = result_config(args, strategy=name)
    info = _read_run_info(folder, config_key) if resume and (folder / "run.json").is_file() else None
    if info is not None and (folder / "result.json").is_file():
        done = json.loads((folder / "result.json").read_text())
        say(f"{name}: the run in {folder} already finished; nothing to resume", flush=True)
        return Result(done["summary"], History.from_json(done["history"]))
    epochs = info["epochs"] if info else (plan_epochs(args, name, data) if args.time_budget else args.epochs)
    job = _Job(args, name, data, epochs)
    state, progress = job.state, Progress()
    newest = checkpoint.latest(folder) if info else None
    if newest is not None:
        state, meta = checkpoint.load(newest, device=data.device)
        checkpoint.check_compatible(state, job.state, str(newest))
        progress = Progress.from_meta(meta["progress"])
        say(f"{name}: resuming from {newest.name} (epoch {progress.epoch + 1}, batch {progress.batch})", flush=True)
    meter = fmeter.open_meter(data.device)
    n_params = sum(p.numel() for p in state["params"].values())
    config = dict(vars(args), strategy=name, epochs=epochs, lr=job.peak_lr, device=str(data.device),
                  warmup_epochs=job.warmup_epochs, cooldown_epochs=job.cooldown_epochs,
                  train_samples=len(data.train), test_samples=len(data.test),
                  classes=len(data.train.classes), pool_size=job.pool_size,
                  steps_per_epoch=job.steps_per_epoch, warmup_steps_per_epoch=job.warmup_steps_per_epoch,
                  model_params=n_params,
                  energy_meter=meter.name if meter else "none", torch=torch.__version__,
                  threads=torch.get_num_threads(), machine=platform.machine(), python=platform.python_version(),
                  checkpoint_folder=str(folder))
    config.pop("compare")
    history = progress.history
    guard = SkipGuard()
    guard.__dict__.update(progress.guard)
    clock = _Clock(progress.train_time)
    run_name = run_name or args.run_name or f"{name}-{args.model}" + (f"-{args.target_rate:g}" if job.target else "")

    tracker_type = tracking.RunTracker if main else tracking.NullTracker  # only rank 0 writes
    with tracker_type(args.tracking_uri, args.experiment, run_name, parent_run_id=parent_run_id,
                      run_id=info["run_id"] if info else None, fallback_dir=folder) as tracker:
        tracker.adopt(folder / "tracking-unsent")
        if info is None:
            tracker.log_params(config)

        def save_checkpoint(current_state) -> Path | None:
            """Flush tracking (or save its buffer beside the checkpoint), then write the checkpoint (rank 0)."""
            if not main:
                return None
            with clock.paused():
                progress.train_time, progress.guard = clock.now(), dict(guard.__dict__)
                if not tracker.flush():
                    tracker.save_fallback()
                _write_json(folder / "run.json", dict(config=config_key, run_id=tracker.run_id, epochs=epochs,
                                                      run_name=run_name))
                return checkpoint.save(folder, current_state, {"progress": progress.to_meta()},
                                       keep=args.keep_checkpoints)

        if info is None and main:
            _write_json(folder / "run.json", dict(config=config_key, run_id=tracker.run_id, epochs=epochs,
                                                  run_name=run_name))
        say(f"MLflow run {tracker.run_id or '(not created yet: store unreachable)'} ({run_name}); browse: "
            f"{tracking.ui_command(args.tracking_uri)}; checkpoints: {folder}", flush=True)
        state = _train_epochs(args, name, job, state, progress, tracker, clock, guard, meter, save_checkpoint)
        if not main:
            return Result({}, history)

        summary = _summary(name, args, job, history, state, progress.train_time, progress.eval_time, n_params,
                           meter, progress.joules, guard)
        _log_plots(tracker, history, job.target)
        tracker.log_dict(config, "config.json")
        tracker.log_dict(summary, "summary.json")
        tracker.log_metrics({f"final/{k}": v for k, v in summary.items()
                             if isinstance(v, (int, float)) and not isinstance(v, bool)}, step=int(state["step"]))
        summary["mlflow_run_id"] = tracker.run_id
    _write_json(folder / "result.json", dict(summary=summary, history=history.to_json()))
    return Result(summary, history)


def _train_epochs(args, name, job: _Job, state, progress: Progress, tracker, clock: _Clock, guard: SkipGuard,
                  meter, save_checkpoint) -> TensorDict:
    """The epoch loop from `progress` on; checkpoints every --checkpoint-every steps and at each epoch end."""
    data, history, epochs = job.data, progress.history, job.epochs
    while progress.epoch < epochs:
        epoch = progress.epoch
        if args.time_budget and clock.now() >= args.time_budget:
            break
        all_data = job.all_data(epoch)
        if job.sampler is not None and not all_data:
            job.sampler.sync(state["selector"]["priority"])
        if progress.batch == 0:
            progress.epoch_start_counters = _counters(state)
        before = progress.epoch_start_counters
        start_batch = progress.batch
        bar = _progress(job.batches(epoch, all_data, start_batch), job.steps_in(epoch) - start_batch,
                        f"{name} epoch {epoch + 1}/{epochs}" + (" (all data)" if all_data else ""),
                        args.no_progress)

        def on_metrics(first_step: int, chunk: dict[str, list[float]]) -> None:
            history.add_steps(first_step, chunk)
            for i in range(len(chunk["loss"])):
                tracker.log_metrics({k: v[i] for k, v in chunk.items()}, step=first_step + i)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(_postfix(chunk), refresh=False)

        def on_checkpoint(current_state, steps_done: int) -> None:
            progress.batch = start_batch + steps_done
            save_checkpoint(current_state)

        energy_start = meter.read() if meter else 0.0
        clock.start()
        try:
            state = run_steps(job.step_for(all_data), state, _until(bar, args.time_budget, clock),
                              first_step=int(state["step"]), log_every=args.log_every, on_metrics=on_metrics,
                              guard=guard, checkpoint_every=args.checkpoint_every, on_checkpoint=on_checkpoint)
            float(state["step"])  # wait for queued device work before reading the clock
        except NonFiniteLossError as error:
            clock.stop()
            progress.batch = start_batch + error.steps_done
            saved = save_checkpoint(error.state)  # None on ranks other than 0, which write nothing
            raise NonFiniteLossError(f"{error}." + (f" The last good parameters are saved in {saved}" if saved
                                                    else "")) from None
        finally:
            clock.stop()
        progress.train_time = clock.spent
        if meter:
            progress.joules += meter.joules(energy_start, meter.read())
        if hasattr(bar, "close"):
            bar.close()

        if not data.collective.is_main:  # rank 0 evaluates, records and checkpoints
            progress.epoch, progress.batch = epoch + 1, 0
            continue
        start = time.perf_counter()
        test = evaluate(job.eval_step, state, fdata.iterate_batches(
            data.test, 512, seed=0, epoch=0, shuffle=False, drop_last=False, mean=data.mean, std=data.std,
            device=data.device))
        progress.eval_time += time.perf_counter() - start
        after = _counters(state)
        seen = after["samples_seen"] - before["samples_seen"]
        record = dict(epoch=epoch + 1, steps=int(state["step"]), all_data=float(all_data), test_accuracy=test["accuracy"],
                      test_loss=test["loss"], train_time_s=progress.train_time, eval_time_s=progress.eval_time,
                      epoch_activation_rate=(after["samples_trained"] - before["samples_trained"]) / max(1, seen),
                      epoch_saved_pct=_saved(after, before), saved_pct=_saved(after),
                      flops_spent=after["flops_spent"], flops_full=after["flops_full"])
        history.epochs.append(record)
        tracker.log_metrics({f"epoch/{k}": v for k, v in record.items() if k != "epoch"}, step=int(state["step"]))
        print(f"{name} epoch {epoch + 1}: test acc {test['accuracy']:.4f}, trained "
              f"{record['epoch_activation_rate']:.3f} of samples, FLOPs saved {record['epoch_saved_pct']:.1f}% "
              f"(cumulative {record['saved_pct']:.1f}%), train {progress.train_time:.1f}s", flush=True)
        progress.epoch, progress.batch = epoch + 1, 0
        save_checkpoint(state)
    return state


def train(args: argparse.Namespace, collective: distributed.Collective = distributed.LOCAL) -> dict:
    """Run the configured strategy (or resume it); print and return its summary."""
    data = load_data(args, collective)
    name = args.run_name or f"{args.strategy}-{args.model}" + (
        f"-{args.target_rate:g}" if args.strategy != "full" else "")
    folder, resuming = run_folder(args, name, collective)
    result = run_strategy(args, args.strategy, data, folder=folder, resume=resuming, run_name=name)
    if not collective.is_main:
        return result.summary
    _print_summary(result.summary)
    print(f"Browse the run: {tracking.ui_command(args.tracking_uri)}")
    return result.summary


def compare(args: argparse.Namespace, collective: distributed.Collective = distributed.LOCAL) -> list[Result]:
    """Run each strategy of --compare as a nested run; log the table and plots on the parent run.
    With --resume, finished strategies are read back and the unfinished one continues."""
    data = load_data(args, collective)
    main = collective.is_main
    names = args.compare
    parent_name = args.run_name or f"compare-{args.model}-{args.target_rate:g}"
    folder, resuming = run_folder(args, parent_name, collective)
    config_key = result_config(args)
    info = _read_run_info(folder, config_key) if resuming else None
    tracker_type = tracking.RunTracker if main else tracking.NullTracker  # only rank 0 writes
    with tracker_type(args.tracking_uri, args.experiment, parent_name, fallback_dir=folder,
                      run_id=info["run_id"] if info else None) as parent:
        parent.adopt(folder / "tracking-unsent")
        if info is None and main:
            parent.log_params(dict(vars(args), compare=",".join(names)))
            _write_json(folder / "run.json", dict(config=config_key, run_id=parent.run_id, epochs=args.epochs,
                                                  run_name=parent_name))
        results = []
        for name in names:
            sub = folder / name
            if main:
                sub.mkdir(exist_ok=True)
            results.append(run_strategy(args, name, data, folder=sub, resume=resuming,
                                        parent_run_id=parent.run_id, run_name=f"{name}-{args.model}"))
        if not main:
            return results
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
    post = [e for e in history.epochs if not e.get("all_data")] or history.epochs
    # Post-warm-up rate: samples trained / seen over the gated epochs, from the counters' per-epoch deltas.
    post_rate = sum(e["epoch_activation_rate"] for e in post) / len(post)
    if meter:
        energy_j, energy_kind = joules, f"measured, {meter.name}"
    else:
        energy_j = fmeter.estimate_joules(counters["flops_spent"], args.joules_per_gflop)
        energy_kind = f"estimate: FLOPs x {args.joules_per_gflop:g} J/GFLOP, no meter"
    return dict(strategy=name, model=args.model, epochs=len(history.epochs), warmup_epochs=job.warmup_epochs,
                cooldown_epochs=job.cooldown_epochs,
                target_rate=job.target if job.target is not None else 1.0,
                test_accuracy=final["test_accuracy"], train_time_s=train_time, eval_time_s=eval_time,
                mean_activation_rate_after_warmup=post_rate, flops_saved_pct=_saved(counters),
                flops_spent=counters["flops_spent"], flops_full=counters["flops_full"],
                samples_seen=counters["samples_seen"], samples_scored=counters["samples_scored"],
                samples_trained=counters["samples_trained"], model_params=n_params,
                skipped_nonfinite_updates=guard.total, energy_j=energy_j, energy_kind=energy_kind)


def _print_summary(summary: dict) -> None:
    rows = [("strategy", summary["strategy"]), ("model", summary["model"]),
            ("epochs (warm-up, cool-down)",
             f"{summary['epochs']} ({summary['warmup_epochs']}, {summary.get('cooldown_epochs', 0)})"),
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


def _silent(*args, **kwargs) -> None:
    return None


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _one_line_warning  # the program's edge: warnings read as one line each
    logging.getLogger("torchrl").setLevel(logging.WARNING)
    try:
        if distributed.launched_by_torchrun() and args.time_budget:
            raise ConfigError("--time-budget needs one process (each rank's clock would stop it at a different "
                              "step); drop it under torchrun, or use --epochs")
        collective = distributed.setup(resolve_device(args.device))
        if args.compare:
            compare(args, collective)
        else:
            train(args, collective)
    except (fdata.DataError, ConfigError, checkpoint.CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted; the MLflow run is marked KILLED", file=sys.stderr)
        return 130
    finally:
        distributed.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
