"""The command line: train any labelled image folder with any model, tracked in MLflow.

    python -m functional_ast --data PATH [--model cnn | --model package.module:function] [--strategy sundew] ...
    python -m functional_ast --data PATH --compare full,random,stale --seeds 0,1,2 --time-budget 300

PATH is an ImageFolder tree (`train/<class>/*`, `test/<class>/*`), a CIFAR-10 directory, or a
.tar.gz of either; any number of classes, any image size (`--image-size` resizes), 1 or 3
channels. `--model package.module:function` builds your own model: it is called with
`num_classes` and `in_channels` (and `image_size` if it accepts it) and returns an nn.Module.
Every run is an MLflow run with checkpoints beside the store; `--resume` continues one.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from functional_ast import io, strategies
from functional_ast.core import distributed, work
from functional_ast.data import images as fdata
from functional_ast.edges import checkpoint, tracking
from functional_ast.edges import meter as fmeter
from functional_ast.edges.callbacks import Checkpoints, Console, MLflowTracking
from functional_ast.models import MODELS, build_model
from functional_ast.report import tables as report
from functional_ast.train.config import MEMORY_FORMATS, PRECISIONS, ConfigError, TrainConfig, parse_variant, split_spec
from functional_ast.train.loop import NonFiniteLossError
from functional_ast.train.trainer import Data, History, Result, compare, fit, full_epoch_cost

EXIT_USAGE = 2
EXIT_FAILED = 1
_DEFAULTS = TrainConfig()


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _bounded(kind, low=None, high=None, low_open=False, high_open=False):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '>='} {low}, got {text}")
        if high is not None and (value >= high if high_open else value > high):
            raise argparse.ArgumentTypeError(f"must be {'<' if high_open else '<='} {high}, got {text}")
        return value

    return parse


def variant_label(spec: str) -> str:
    """A name for folders, MLflow run names and metric keys (no ':' or '='): "stale:cooldown=8" -> "stale-cooldown8"."""
    return spec.replace(":", "-").replace("=", "")


def strategy_list(text: str) -> list[str]:
    specs = [n.strip() for n in text.split(",") if n.strip()]
    if not specs:
        raise argparse.ArgumentTypeError(f"no strategy given; choose from {','.join(strategies.names())}")
    for spec in specs:
        try:
            parse_variant(spec)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return list(dict.fromkeys(specs))


def _strategy_name(text: str) -> str:
    try:
        strategies.get(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _rule_flags() -> dict[str, list[tuple[str, object]]]:
    """Each rule-option flag -> [(rule name, its options field)], over every registered rule."""
    flags: dict[str, list] = {}
    for rule in strategies.registry.rules():
        for f in dataclasses.fields(rule.options):
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            flags.setdefault(flag, []).append((rule.name, f))
    return flags


def _add_rule_flags(group) -> None:
    """One flag per rule option (a flag several rules share, such as --explore, is given once); each defaults to
    None: the rule's own default."""
    for flag, owners in _rule_flags().items():
        first = owners[0][1]
        kind = type(first.default)
        texts: dict[tuple, list[str]] = {}
        for name, f in owners:
            texts.setdefault((f.metadata.get("help", ""), f.default), []).append(name)
        helps = "; ".join(f"{', '.join(names)}: {text} (default {default})" for (text, default), names in texts.items())
        choices = first.metadata.get("choices")
        group.add_argument(flag, dest=_flag_dest(flag), default=None, choices=choices,
                           metavar=None if choices else kind.__name__.upper(),
                           type=None if choices else (_bounded(kind) if kind in (int, float) else kind), help=helps)


def _flag_dest(flag: str) -> str:
    return "rule_" + flag.lstrip("-").replace("-", "_")


def rule_options(args: argparse.Namespace, name: str) -> dict:
    """The options of rule `name` that the flags set (the others keep the rule's defaults)."""
    options = {}
    for f in dataclasses.fields(strategies.get(name).options):
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        value = getattr(args, _flag_dest(flag), None)
        if value is not None:
            options[f.name] = value
    return options


def register_named_rules(argv: list[str]) -> None:
    """Import the rules of the user's that --strategy or --compare name as package.module:attribute, so that their
    options have flags before the parser is built (a name that does not import is reported by the parser)."""
    for i, arg in enumerate(argv):
        value = arg.partition("=")[2] if arg.startswith(("--strategy=", "--compare=")) else (
            argv[i + 1] if arg in ("--strategy", "--compare") and i + 1 < len(argv) else None)
        for spec in (value or "").split(","):
            name, _ = split_spec(spec)
            if ":" in name:
                try:
                    strategies.get(name)
                except ConfigError:
                    pass  # the parser reports it


def seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("give at least one seed")
    return list(dict.fromkeys(seeds))


def _model_name(text: str) -> str:
    if text in MODELS or ":" in text:
        return text
    raise argparse.ArgumentTypeError(f"unknown model {text!r}; use one of {', '.join(sorted(MODELS))} or "
                                     "package.module:function for your own")


def build_parser(prog: str = "python -m functional_ast", description: str | None = None,
                 **defaults) -> argparse.ArgumentParser:
    """The command's flags; `defaults` override them (e.g. experiments.cifar10 sets its experiment name)."""
    p = _Parser(prog=prog, description=description or __doc__.split("\n\n")[0],
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--data", default=None,
                   help="ImageFolder tree (train/<class>/*, test/<class>/*), CIFAR-10 dir, or a .tar.gz of either")
    d.add_argument("--data-root", default="./data", help="decoded-data cache (and download target where offered)")
    d.add_argument("--image-size", type=_bounded(int, 1), default=None,
                   help="resize every image to N x N (needed when a folder mixes sizes)")
    d.add_argument("--limit-train", type=_bounded(int, 1), default=None,
                   help="train on a fixed, seeded, class-balanced subset of N samples")
    d.add_argument("--limit-test", type=_bounded(int, 1), default=None, help="same for the test set")
    d.add_argument("--label-noise", type=_bounded(float, 0.0, 1.0, high_open=True), default=0.0,
                   help="replace this seeded share of training labels by a random other class (test labels kept)")
    d.add_argument("--no-augment", action="store_true", help="disable random crop + flip")
    t = p.add_argument_group("training")
    t.add_argument("--strategy", type=_strategy_name, default=_DEFAULTS.strategy, metavar="NAME",
                   help=f"the selection rule: {', '.join(strategies.names())}, or package.module:attribute "
                        "(a strategies.Rule of yours)")
    t.add_argument("--target-rate", type=_bounded(float, 0.0, 1.0, low_open=True), default=_DEFAULTS.target_rate,
                   help="fraction of samples to train on after warm-up, in (0, 1]")
    t.add_argument("--pool-size", type=_bounded(int, 1), default=None,
                   help="samples each step selects from after warm-up (default: batch size / target rate, so a "
                        "step trains about one --batch-size; give --batch-size to select within each batch)")
    _add_rule_flags(p.add_argument_group("selection rules' own options (each applies to the rules named)"))
    t.add_argument("--epochs", type=_bounded(int, 1), default=_DEFAULTS.epochs)
    t.add_argument("--warmup-epochs", type=_bounded(int, 0), default=_DEFAULTS.warmup_epochs,
                   help="epochs on all data before selection starts (controller idle)")
    t.add_argument("--cooldown-epochs", type=_bounded(int, 0), default=_DEFAULTS.cooldown_epochs,
                   help="last epochs on all data (the selector observes, the controller idles), as InfoBatch anneals")
    t.add_argument("--batch-size", type=_bounded(int, 2), default=_DEFAULTS.batch_size)
    t.add_argument("--optimizer", choices=("sgd", "adam"), default=_DEFAULTS.optimizer)
    t.add_argument("--lr", type=_bounded(float, 0.0, low_open=True), default=None,
                   help="peak learning rate (default: 0.05 for sgd, 1e-3 for adam), warm-up then cosine")
    t.add_argument("--weight-decay", type=_bounded(float, 0.0), default=_DEFAULTS.weight_decay)
    t.add_argument("--model", type=_model_name, default="cnn",
                   help=f"{', '.join(sorted(MODELS))}, or package.module:function building your nn.Module "
                        "(called with num_classes, in_channels and, if it takes it, image_size)")
    t.add_argument("--seed", type=int, default=_DEFAULTS.seed)
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps ...")
    t.add_argument("--compile", action="store_true", help="torch.compile the scoring pass and the update")
    t.add_argument("--memory-format", choices=MEMORY_FORMATS, default=_DEFAULTS.memory_format,
                   help="image layout in the forward passes: auto = channels_last on a CPU (faster cnn steps there) "
                        "when the model runs on it, contiguous elsewhere")
    t.add_argument("--precision", choices=PRECISIONS, default="32", help="autocast forward passes (32: none)")
    c = p.add_argument_group("budgets and comparisons")
    c.add_argument("--time-budget", type=_bounded(float, 0.0, low_open=True), default=None, metavar="SECONDS",
                   help="train for this wall-clock (eval excluded) instead of --epochs; the learning-rate schedule "
                        "is re-planned as it is spent, so it anneals fully at the budget")
    c.add_argument("--flop-budget", type=_bounded(float, 0.0, low_open=True), default=None, metavar="FLOPS",
                   help="the same with a budget of executed FLOPs (deterministic; immune to the machine's speed)")
    c.add_argument("--budget-epochs", type=_bounded(float, 0.0, low_open=True), default=None, metavar="N",
                   help="a time budget of N full-data epochs on this machine: one epoch's time is measured on a few "
                        "steps first, as the savings benchmark does (--time-budget/--flop-budget take precedence)")
    c.add_argument("--compare", type=strategy_list, default=None, metavar="S1,S2,...",
                   help=f"run these strategies side by side (from {','.join(strategies.names())}); NAME:cooldown=N or "
                        "NAME:warmup=N sets that entry's all-data epochs, e.g. stale,stale:cooldown=8")
    c.add_argument("--seeds", type=seed_list, default=None, metavar="0,1,2",
                   help="with --compare: run every strategy with each seed; the table gives mean ± std and paired "
                        "differences against each baseline (full, random and their variants) with 95%% intervals")
    c.add_argument("--no-interleave", action="store_true",
                   help="with --compare: run strategies one after another instead of taking turns (an epoch, or "
                        "a 20th of a time budget, each), which lets the machine's speed drift bias the times")
    c.add_argument("--eval-every", type=_bounded(float, 0.0, low_open=True), default=None, metavar="SECONDS",
                   help="evaluate at the first epoch end after this much train time since the last evaluation "
                        "(default: every epoch); the last epoch is always evaluated")
    c.add_argument("--joules-per-gflop", type=_bounded(float, 0.0, low_open=True),
                   default=work.DEFAULT_JOULES_PER_GFLOP,
                   help="assumed efficiency for the energy ESTIMATE where no meter (NVML/RAPL) is readable")
    r = p.add_argument_group("tracking")
    r.add_argument("--tracking-uri", default=tracking.DEFAULT_TRACKING_URI)
    r.add_argument("--experiment", default="functional_ast")
    r.add_argument("--run-name", default=None)
    r.add_argument("--log-every", type=_bounded(int, 1), default=25,
                   help="gather step metrics (one host transfer) every N steps")
    r.add_argument("--system-metrics", action="store_true",
                   help="log CPU/GPU/memory (and NVIDIA power) with MLflow's system metrics (needs psutil)")
    r.add_argument("--no-log-model", action="store_true", help="do not log the trained model to MLflow")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    k = p.add_argument_group("checkpoints")
    k.add_argument("--checkpoint-dir", default=None,
                   help="where runs keep their checkpoints (default: checkpoints/<experiment> beside the run store)")
    k.add_argument("--checkpoint-every", type=_bounded(int, 0), default=200,
                   help="also checkpoint every N steps (0: only at epoch ends)")
    k.add_argument("--keep-checkpoints", type=_bounded(int, 1), default=2, help="keep the newest K checkpoints")
    k.add_argument("--resume", action="store_true",
                   help="continue the newest run of the same name from its newest checkpoint, in the same MLflow "
                        "run; refused if a result-changing flag differs")
    p.set_defaults(**defaults)
    return p


# --------------------------------------------------------------------------- from flags to library objects


def train_config(args: argparse.Namespace, strategy: str | None = None, seed: int | None = None) -> TrainConfig:
    """The TrainConfig the flags describe (for `strategy`, a name or a --compare variant, and `seed` when given)."""
    name, overrides = parse_variant(strategy or args.strategy)
    options = {**rule_options(args, name), **overrides.pop("options", {})}
    return TrainConfig(strategy=name, target_rate=args.target_rate, epochs=args.epochs,
                       warmup_epochs=args.warmup_epochs, cooldown_epochs=args.cooldown_epochs,
                       batch_size=args.batch_size, pool_size=args.pool_size, options=options,
                       optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
                       augment=not args.no_augment, seed=args.seed if seed is None else seed, compile=args.compile,
                       time_budget=args.time_budget, flop_budget=args.flop_budget, label_noise=args.label_noise,
                       memory_format=args.memory_format, precision=args.precision).replace(**overrides)


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


def load_data(args: argparse.Namespace) -> Data:
    """The flags' data set, subset, noised and on the device; one-line errors for what is wrong."""
    if args.data is None and not getattr(args, "download", False):
        raise ConfigError("--data is required: an ImageFolder tree (train/<class>/*, test/<class>/*) or a .tar.gz "
                          "of one")
    train, test = fdata.load_dataset(args.data, root=args.data_root, image_size=args.image_size,
                                     download=getattr(args, "download", False))
    if args.limit_train:
        train = fdata.balanced_subset(train, args.limit_train, seed=args.seed)
    if args.limit_test:
        test = fdata.balanced_subset(test, args.limit_test, seed=args.seed + 1)
    if len(train) < args.batch_size:
        raise ConfigError(f"--batch-size {args.batch_size} is larger than the training set ({len(train)} "
                          "samples); lower --batch-size or raise --limit-train")
    return Data.prepare(train, test, resolve_device(args.device), args.label_noise, args.seed)


def model_builder(spec: str, data: Data):
    """A function building the model `spec` names for `data`'s classes, channels and image size."""
    _, channels, height, _ = data.train.data["image"].shape
    num_classes = len(data.train.classes)
    if ":" not in spec:
        return lambda: build_model(spec, num_classes=num_classes, in_channels=channels, image_size=height)
    module_name, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except ImportError as error:
        raise ConfigError(f"--model {spec}: cannot import {module_name} ({error}); put its folder on PYTHONPATH "
                          "or run from it") from None
    except AttributeError:
        raise ConfigError(f"--model {spec}: {module_name} has no {attr!r}; name a function that returns an "
                          "nn.Module") from None
    if not callable(fn):
        raise ConfigError(f"--model {spec}: {attr} is not callable; name a function that returns an nn.Module")
    try:
        takes = inspect.signature(fn).parameters
        accepts_size = "image_size" in takes or any(p.kind is p.VAR_KEYWORD for p in takes.values())
    except (TypeError, ValueError):
        accepts_size = False

    def build() -> nn.Module:
        kwargs = dict(num_classes=num_classes, in_channels=channels, **({"image_size": height} if accepts_size else {}))
        try:
            model = fn(**kwargs)
        except TypeError as error:
            raise ConfigError(f"--model {spec}: calling it with {', '.join(kwargs)} failed ({error}); it must take "
                              "num_classes and in_channels keyword arguments") from None
        if not isinstance(model, nn.Module):
            raise ConfigError(f"--model {spec}: it returned {type(model).__name__}, not an nn.Module")
        return model

    return build


# --------------------------------------------------------------------------- run folders


# Flags that do not change what is computed; every other flag must match for --resume.
_NOT_RESULT_FLAGS = {"tracking_uri", "experiment", "run_name", "log_every", "no_progress", "checkpoint_every",
                     "checkpoint_dir", "keep_checkpoints", "resume", "data_root", "joules_per_gflop",
                     "system_metrics", "no_log_model", "no_interleave", "download", "eval_every"}

# Result flags added after runs may have started: a run.json without one ran as this value would now.
_FLAGS_BEFORE_THEY_EXISTED = {"memory_format": "contiguous", "precision": "32"}


def result_config(args: argparse.Namespace, **extra) -> dict:
    """The flags that determine a run's results (what --resume compares)."""
    config = {k: v for k, v in vars(args).items() if k not in _NOT_RESULT_FLAGS}
    if config.get("budget_epochs"):  # the seconds it stands for are measured per machine, kept in run.json
        config["time_budget"] = None
    for key in ("compare", "seeds"):
        if config.get(key):
            config[key] = ",".join(map(str, config[key]))
    return dict(config, **extra)


def checkpoint_root(args: argparse.Namespace) -> Path:
    """--checkpoint-dir, or checkpoints/<experiment> beside the run store (./mlruns by default)."""
    if args.checkpoint_dir:
        return Path(args.checkpoint_dir)
    return tracking.store_dir(args.tracking_uri) / "checkpoints" / args.experiment


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
        found = [f.parent for f in base.glob("*/run.json")] if base.is_dir() else []
        if not found:
            raise ConfigError(f"--resume: no run named {name!r} to resume under {base}; run the same command "
                              "without --resume to start it (or pass the --checkpoint-dir it used)")
        return max(found, key=lambda f: ((f / "run.json").stat().st_mtime, f.name)), True
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


def _adds_seeds(then: str | None, now: str | None) -> bool:
    """Whether a --seeds list (as run.json keeps it, "0,1") keeps every seed it had and adds some."""
    if not then or not now:
        return False
    return set(then.split(",")) < set(now.split(","))


def read_run_info(folder: Path, config: dict) -> dict | None:
    """run.json of a folder being resumed (None if absent); refuses a different result-changing config. A
    comparison may add seeds (its finished runs keep theirs): `--seeds 0` resumes as `--seeds 0,1,2`."""
    path = folder / "run.json"
    if not path.is_file():
        return None
    import json

    info = json.loads(path.read_text())
    old = {k: v for k, v in _FLAGS_BEFORE_THEY_EXISTED.items() if k in config} | info["config"]
    differ = [k for k in sorted(set(old) | set(config)) if old.get(k) != config.get(k)
              and not (k == "seeds" and _adds_seeds(old.get(k), config.get(k)))]
    if differ:
        diffs = "; ".join(f"{k}: {old.get(k)!r} then, {config.get(k)!r} now" for k in differ)
        flags = " ".join(f"--{k.replace('_', '-')} {old[k]}" for k in differ
                         if isinstance(old.get(k), str) and k in _FLAGS_BEFORE_THEY_EXISTED)
        seeds = "; --seeds may add seeds, not drop them" if "seeds" in differ else ""
        raise ConfigError(f"--resume: the run in {folder} was started with other settings ({diffs}); "
                          f"resume with the original flags{f' ({flags})' if flags else ''}{seeds}, or drop "
                          "--resume to start a new run")
    return info


def finished_result(folder: Path) -> Result | None:
    """The Result a finished run left in `folder` (result.json), or None."""
    import json

    path = folder / "result.json"
    if not path.is_file():
        return None
    done = json.loads(path.read_text())
    return Result(done["summary"], History.from_json(done["history"]))


# --------------------------------------------------------------------------- one run, and comparisons


def _data_params(args, data: Data) -> dict:
    """What the params say of the data: its name and digest (not a path on this machine), and `download` only where
    the data was downloaded (no --data)."""
    return dict(data=Path(args.data).name if args.data else "torchvision CIFAR10",
                data_digest=tracking.dataset_digest(data.train.data["image"], data.train.data["label"]),
                **({"download": bool(args.download and not args.data)} if "download" in vars(args) else {}))


def _run_params(args, config: TrainConfig, data: Data, folder: Path, name: str) -> dict:
    meter = fmeter.open_meter(data.device)
    return dict(vars(args), **dict(config.to_dict(), lr=config.peak_lr), **_data_params(args, data),
                device=str(data.device),
                train_samples=len(data.train), test_samples=len(data.test), classes=len(data.train.classes),
                image_shape="x".join(map(str, data.train.data["image"].shape[1:])),
                energy_meter=meter.name if meter else "none", torch=torch.__version__,
                threads=torch.get_num_threads(), machine=platform.machine(), python=platform.python_version(),
                checkpoint_folder=str(folder), run_name=name, compare=None, seeds=None)


def _dataset_input(args, data: Data) -> dict:
    images = data.train.data["image"]
    return dict(name=Path(args.data).name if args.data else "cifar10", source=str(args.data or "torchvision CIFAR10"),
                digest=tracking.dataset_digest(images, data.train.data["label"]), num_samples=len(data.train),
                num_classes=len(data.train.classes), image_shape=tuple(images.shape[1:]))


def _callbacks(args, config: TrainConfig, data: Data, folder: Path, name: str, config_key: dict, info: dict | None,
               parent_run_id: str | None = None, bar: bool = True, label: str | None = None):
    tracker = MLflowTracking(args.tracking_uri, args.experiment, name,
                             params=_run_params(args, config, data, folder, name),
                             run_id=info["run_id"] if info else None, parent_run_id=parent_run_id,
                             fallback_dir=folder, system_metrics=args.system_metrics,
                             log_model=not args.no_log_model, dataset=_dataset_input(args, data),
                             announce=lambda line: print(f"{line}; checkpoints: {folder}", flush=True))
    saver = Checkpoints(folder, keep=args.keep_checkpoints,
                        info=lambda: dict(config=config_key, run_id=tracker.run_id, run_name=name,
                                          **_budget_record(args)))
    return [tracker, saver, Console(bar=bar and not args.no_progress, label=label)]


def _resume_state(folder: Path, info: dict | None, device):
    newest = checkpoint.latest(folder) if info else None
    if newest is None:
        return None
    state, _ = checkpoint.load(newest, device=device)
    print(f"resuming from {newest}", flush=True)
    return state


def resolve_epoch_budget(args: argparse.Namespace, data: Data, build, info: dict | None) -> None:
    """--budget-epochs N as --time-budget: N times one full-data epoch's time here (measured once; a resumed run
    keeps the seconds its run.json recorded). Nothing to do without it or with an explicit budget."""
    if not args.budget_epochs or args.time_budget or args.flop_budget:
        args.budget_epochs = None if (args.time_budget or args.flop_budget) else args.budget_epochs
        return
    if info and info.get("budget_s"):
        args.time_budget = float(info["budget_s"])
        print(f"time budget {args.budget_epochs:g} full-data epochs = {args.time_budget:.0f} s (as first measured)",
              flush=True)
        return
    epoch_s = full_epoch_cost(build, data, args.batch_size, args.seed)
    args.time_budget = args.budget_epochs * epoch_s
    print(f"one full-data epoch takes about {epoch_s:.1f} s here: time budget {args.budget_epochs:g} epochs = "
          f"{args.time_budget:.0f} s", flush=True)


def _budget_record(args: argparse.Namespace) -> dict:
    """What run.json keeps of a --budget-epochs budget: the seconds it was measured to stand for."""
    return {"budget_s": args.time_budget} if args.budget_epochs else {}


def train(args: argparse.Namespace, collective: distributed.Collective = distributed.LOCAL) -> dict:
    """Run the configured strategy (or resume it); print and return its summary."""
    data = load_data(args)
    config = train_config(args)
    build = model_builder(args.model, data)
    name = args.run_name or f"{config.strategy}-{_model_label(args.model)}" + (
        f"-{config.target_rate:g}" if config.gated else "")
    folder, resuming = run_folder(args, name, collective)
    config_key = result_config(args, strategy=config.strategy)
    info = read_run_info(folder, config_key) if resuming else None
    resolve_epoch_budget(args, data, build, info)
    config = train_config(args)
    if info is not None and (done := finished_result(folder)) is not None:
        print(f"{name}: the run in {folder} already finished; nothing to resume", flush=True)
        return done.summary
    callbacks = _callbacks(args, config, data, folder, name, config_key, info) if collective.is_main else []
    meter = fmeter.open_meter(data.device)
    result = fit(build, data, None, config, callbacks=callbacks, state=_resume_state(folder, info, data.device),
                 log_every=args.log_every, safe_point_every=args.checkpoint_every, eval_every=args.eval_every,
                 collective=collective, name=name, meter=meter)
    if not collective.is_main:
        return result.summary
    print_summary(result.summary)
    tracker = next((c.tracker for c in callbacks if isinstance(c, MLflowTracking)), None)
    print(f"Browse the run: {tracking.ui_command(args.tracking_uri, tracker.experiment_id if tracker else None)}")
    return result.summary


def _model_label(spec: str) -> str:
    return spec.rpartition(":")[2] or spec


def _seed_folder(folder: Path, label: str, seed: int, seeded: bool) -> Path:
    """A compared run's folder: <label>-seed<N> under --seeds, <label> under --seed (and for a comparison that
    started with one --seeds value before folders always named their seed)."""
    if not seeded:
        return folder / label
    older = folder / label
    if not (folder / f"{label}-seed{seed}").exists() and (older / "run.json").is_file():
        import json

        if json.loads((older / "run.json").read_text())["config"].get("seed") == seed:
            return older
    return folder / f"{label}-seed{seed}"


def compare_strategies(args: argparse.Namespace,
                       collective: distributed.Collective = distributed.LOCAL) -> list[Result]:
    """Run each strategy of --compare (for each of --seeds) as a nested MLflow run, taking turns; log the table
    and figures on the parent run. With --resume, finished runs are read back and the others continue."""
    data = load_data(args)
    build = model_builder(args.model, data)
    seeds, seeded = args.seeds or [args.seed], args.seeds is not None
    jobs = [(name, seed) for seed in seeds for name in args.compare]
    parent_name = args.run_name or f"compare-{_model_label(args.model)}-{args.target_rate:g}"
    folder, resuming = run_folder(args, parent_name, collective)
    info = read_run_info(folder, result_config(args)) if resuming else None
    resolve_epoch_budget(args, data, build, info)
    main = collective.is_main
    tracker = (tracking.RunTracker if main else tracking.NullTracker)(
        args.tracking_uri, args.experiment, parent_name, fallback_dir=folder, run_id=info["run_id"] if info else None)
    with tracker as parent:
        parent.adopt(folder / "tracking-unsent")
        if info is None and main:
            parent.log_params(dict(vars(args), compare=",".join(args.compare), seeds=",".join(map(str, seeds)),
                                   **_data_params(args, data)))
        if main and (info is None or info["config"] != result_config(args)  # new, or seeds added,
                     or info["run_id"] != parent.run_id):  # or continued in another store
            io.atomic_write_json(folder / "run.json", dict(config=result_config(args), run_id=parent.run_id,
                                                           run_name=parent_name, **_budget_record(args)))
        done: dict[int, Result] = {}
        configs, states, callbacks = [], {}, {}
        for i, (name, seed) in enumerate(jobs):
            label = variant_label(name)
            sub = _seed_folder(folder, label, seed, seeded)
            if main:
                sub.mkdir(exist_ok=True)
            config = train_config(args, strategy=name, seed=seed)
            config_key = result_config(args, strategy=name, seed=seed)
            sub_info = read_run_info(sub, config_key) if resuming else None
            if sub_info is not None and (finished := finished_result(sub)) is not None:
                done[i] = finished
                continue
            run_name = f"{label}-{_model_label(args.model)}" + (f"-seed{seed}" if seeded else "")
            states[len(configs)] = _resume_state(sub, sub_info, data.device)
            callbacks[len(configs)] = (_callbacks(args, config, data, sub, run_name, config_key, sub_info,
                                                  parent_run_id=parent.run_id, bar=args.no_interleave,
                                                  label=run_name) if main else [])
            configs.append((i, config))
        order = iter(range(len(configs)))
        fresh = compare(build, data, None, [c for _, c in configs], callbacks_for=lambda c: callbacks[next(order)],
                        states=states, interleave=not args.no_interleave, log_every=args.log_every,
                        eval_every=args.eval_every,
                        safe_point_every=args.checkpoint_every, collective=collective,
                        meter=fmeter.open_meter(data.device)) if configs else []
        for (i, _), result in zip(configs, fresh):
            done[i] = result
        results = [done[i] for i in range(len(jobs))]
        for (name, _), result in zip(jobs, results):  # a variant's rows, curves and figures carry its spec
            result.summary["strategy"] = name
        if not main:
            return results
        rows = report.comparison_table(results)
        markdown = report.comparison_markdown(rows)
        print("\n" + markdown)
        parent.log_text(markdown, "comparison.md")
        parent.log_dict({"rows": rows, "over_seeds": report.seed_summary(rows),
                         "paired": report.paired_against_baselines(rows)}, "comparison.json")
        for fig_name, fig in report.comparison_figures(results).items():
            parent.log_figure(fig, fig_name)
            report.plots.plt.close(fig)
        for row in rows:
            prefix = variant_label(row["strategy"]) + (f"/seed{row['seed']}" if seeded else "")
            parent.log_metrics({f"{prefix}/{k}": v for k, v in row.items()
                                if isinstance(v, (int, float)) and v is not None and not isinstance(v, bool)}, step=0)
    print(f"Browse the runs: {tracking.ui_command(args.tracking_uri, tracker.experiment_id)}")
    return results


def print_summary(summary: dict) -> None:
    """The run's summary as aligned lines; savings are stated against what they are measured against."""
    gated = summary["strategy"] != "full"
    rows = [("strategy", summary["strategy"]),
            ("epochs (warm-up, cool-down)",
             f"{summary['epochs']} ({summary['warmup_epochs']}, {summary.get('cooldown_epochs', 0)})"),
            ("test accuracy", f"{summary['test_accuracy']:.4f}"),
            ("train wall-clock", f"{summary['train_time_s']:.1f} s (eval {summary['eval_time_s']:.1f} s apart)"),
            ("throughput", f"{summary['samples_per_s']:.0f} samples/s trained, {summary['flops_per_s']:.3g} FLOP/s"),
            ("activation rate after warm-up", f"{summary['mean_activation_rate_after_warmup']:.3f}"
             + (f" (target {summary['target_rate']:g})" if gated else "")),
            ("FLOPs spent", f"{summary['flops_spent']:.3e}"),
            ("FLOPs saved vs full data for the same epochs", f"{summary['flops_saved_pct']:.1f}%"),
            ("samples scored / trained", f"{summary['samples_scored']} / {summary['samples_trained']}"),
            ("energy", f"{summary['energy_j']:.0f} J ({summary['energy_kind']})")]
    width = max(len(k) for k, _ in rows)
    print("\nsummary")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    if gated:
        print("  These savings are against full data for the same epochs, not against a fair baseline: for that,\n"
              "  run --compare full,random,<strategy> --time-budget SECONDS --seeds 0,1,2 (full data on a schedule\n"
              "  fitted to the same wall-clock, and a random subset).")


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: list[str] | None = None, parser=None) -> int:
    """Parse, train or compare, and return the exit code: 0, 1 (training failed), 2 (bad input), 130. `parser` is
    an argparse parser or a function building one (built after the rules named on the command line are
    registered, so their options have flags)."""
    register_named_rules(sys.argv[1:] if argv is None else list(argv))
    parser = parser() if callable(parser) and not isinstance(parser, argparse.ArgumentParser) else parser
    args = (parser or build_parser()).parse_args(argv)
    warnings.formatwarning = _one_line_warning  # the program's edge: warnings read as one line each
    try:
        if distributed.launched_by_torchrun() and (args.time_budget or args.budget_epochs
                                                   or (args.compare and not args.no_interleave)):
            raise ConfigError("--time-budget and interleaved --compare need one process (each rank's clock would "
                              "stop it at a different step); drop them under torchrun, or use --epochs")
        if args.seeds and not args.compare:
            raise ConfigError("--seeds needs --compare; for one run, use --seed")
        collective = distributed.setup(resolve_device(args.device))
        if args.compare:
            compare_strategies(args, collective)
        else:
            train(args, collective)
    except (fdata.DataError, ConfigError, checkpoint.CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except NonFiniteLossError as error:
        saved = getattr(error, "saved_to", None)
        print(f"error: {error}." + (f" The last good parameters are saved in {saved}" if saved else ""),
              file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted; the MLflow run is marked KILLED", file=sys.stderr)
        return 130
    finally:
        distributed.teardown()
    return 0
