"""From the command's flags to the library's objects: the TrainConfig, the device, the Data (images or a text corpus),
the task and the model, the Tracking, and the flags that decide a run's results (what a --resume compares)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from functional_ast import strategies
from functional_ast.cli.flags import build_parser, rule_options
from functional_ast.core import distributed
from functional_ast.core.task import Task
from functional_ast.data import text
from functional_ast.edges import pretrained
from functional_ast.edges.tracked import Tracking, portable_path
from functional_ast.tasks import image_classification, language_modelling
from functional_ast.tasks.models import imported, takes
from functional_ast.train.config import ConfigError, TrainConfig, parse_variant
from functional_ast.train.trainer import Data


def train_config(args: argparse.Namespace, strategy: str | None = None, seed: int | None = None) -> TrainConfig:
    """The TrainConfig the flags describe (for `strategy`, a name or a --compare variant, and `seed` when given)."""
    name, overrides = parse_variant(strategy or args.strategy)
    options = {**rule_options(args, name), **overrides.pop("options", {})}
    return TrainConfig(strategy=name, target_rate=args.target_rate, epochs=args.epochs,
                       warmup_epochs=args.warmup_epochs, cooldown_epochs=args.cooldown_epochs,
                       batch_size=args.batch_size, pool_size=args.pool_size, options=options,
                       optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
                       augment=False if args.no_augment else None, seed=args.seed if seed is None else seed,
                       compile=args.compile,
                       time_budget=args.time_budget, flop_budget=args.flop_budget, label_noise=args.label_noise,
                       label_smoothing=args.label_smoothing,
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


BUILT_IN_TASKS = {"images": image_classification, "lm": language_modelling}


def task_of(args: argparse.Namespace) -> Task:
    """The problem the flags train: --task images (with --label-smoothing), lm, or package.module:attribute (a
    Task, or a function of no arguments returning one)."""
    name = getattr(args, "task", "images") or "images"
    if name == "images":
        return image_classification(getattr(args, "label_smoothing", 0.0))
    if name in BUILT_IN_TASKS:
        return BUILT_IN_TASKS[name]()
    if ":" not in name:
        raise ConfigError(f"--task {name}: choose images, lm or package.module:attribute (a Task of yours)")
    found = imported(name, "--task", "a functional_ast Task (or a function returning one)", must_call=False)
    task = found if isinstance(found, Task) or not callable(found) else found()
    if not isinstance(task, Task):
        raise ConfigError(f"--task {name}: it gives a {type(task).__name__}, not a functional_ast Task")
    if task.load is None:
        raise ConfigError(f"--task {name}: its Task has no `load(path, **options)`, so the command line cannot read "
                          "--data for it; give it one, or train it from Python with fa.fit")
    return task


def run_task(args: argparse.Namespace) -> Task | None:
    """The task to hand the trainer: None for --task images, whose task the trainer builds itself from the
    config (its label smoothing), else `task_of`."""
    return None if (getattr(args, "task", "images") or "images") == "images" else task_of(args)


def _owner(flag: str) -> Task | None:
    """The built-in task whose option `flag` (an argparse dest) is, if one is."""
    return next((t() for t in BUILT_IN_TASKS.values() if flag in t().flags), None)


def resolved(args: argparse.Namespace) -> argparse.Namespace:
    """`args` with the task's default model, checked for options the task does not take (one of another task,
    given) and rules it cannot run (ConfigError, one line)."""
    task = task_of(args)
    if args.model is None:
        args.model = task.default_model or "model"
    elif task.build_model is not None:
        task.build_model(args.model, None)  # the spec alone: another task's model is refused first
    defaults = vars(build_parser().parse_args([]))
    for flag in (f for t in BUILT_IN_TASKS.values() for f in t().flags):
        given = getattr(args, flag, None)
        if flag != "task" and flag not in task.flags and given not in (None, False, defaults.get(flag)):
            owner = _owner(flag)
            raise ConfigError(f"--{flag.replace('_', '-')} is for {owner.kind}: the {task.name} task does not take "
                              "it (drop it)")
    for spec in args.compare or [args.strategy]:
        strategies.get(parse_variant(spec)[0]).check_kind(task.kind)
    if getattr(args, "selective_lm", None) is not None and args.compare:
        raise ConfigError("--selective-lm trains one run (its reference first): drop --compare, or --selective-lm")
    return args


def _taken(fn, args: argparse.Namespace, **given) -> dict:
    """The flags' values (and `given`) that `fn` takes as keyword arguments."""
    values = dict(vars(args), **given)
    return {k: v for k, v in values.items() if takes(fn, k) and not k.startswith("rule_")}


def build_model(args: argparse.Namespace, data):
    """A function building the flags' model for `data` (the task's `build_model`), started from --init-from's saved
    tensors when given."""
    task = task_of(args)
    if task.build_model is None:
        raise ConfigError(f"the {task.name} task has no build_model(spec, data, **options): give it one to choose "
                          "--model from the command line")
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in _taken(task.build_model, args).items()
               if k not in ("spec", "data")}
    build = task.build_model(args.model, data, **options)
    return pretrained.starting_from(build, args.init_from) if args.init_from else build


def load_data(args: argparse.Namespace) -> Data:
    """The flags' data set (the task's `load`), in its regime and on the device; one-line errors for what is
    wrong."""
    task = task_of(args)
    if args.data is None and not (getattr(args, "download", False) or getattr(args, "stdlib", False)):
        raise ConfigError(f"--data is required: {task.data_help}")
    options = _taken(task.load, args, root=args.data_root, device=resolve_device(args.device))
    options.pop("path", None)
    data = task.load(args.data, **options)
    if data.num_samples < args.batch_size:
        raise ConfigError(f"--batch-size {args.batch_size} is larger than the training set ({data.num_samples} "
                          "samples); lower --batch-size or give more data (--limit-train)")
    return data


# Flags that do not change what is computed; every other flag must match for --resume.
_NOT_RESULT_FLAGS = {"tracking_uri", "experiment", "run_name", "log_every", "no_progress", "checkpoint_every",
                     "checkpoint_dir", "keep_checkpoints", "resume", "data_root", "joules_per_gflop",
                     "system_metrics", "no_log_model", "no_interleave", "download", "eval_every",
                     "data_in_memory"}

def _flags(args: argparse.Namespace) -> dict:
    """The flags of the run: language modelling's own are left out of another task's (as they were before tasks
    declared their options, so older runs resume)."""
    others = set(language_modelling().flags) - set(task_of(args).flags)
    return {k: v for k, v in vars(args).items() if k not in others}


def result_config(args: argparse.Namespace, **extra) -> dict:
    """The flags that determine a run's results (what --resume compares)."""
    config = {k: v for k, v in _flags(args).items() if k not in _NOT_RESULT_FLAGS}
    if config.get("budget_epochs"):  # what it stands for is measured once, kept in run.json
        config["time_budget"] = config["flop_budget"] = None
    for key in ("compare", "seeds"):
        if config.get(key):
            config[key] = ",".join(map(str, config[key]))
    return dict(config, **extra)


def data_name(args: argparse.Namespace) -> str:
    """The data set's name in params and the run input: its folder's or archive's name (CIFAR-10 when downloaded,
    the standard library's source, python-X.Y.Z-stdlib, for text without --data)."""
    if args.data:
        return Path(args.data).name
    if getattr(args, "stdlib", False):
        return text.stdlib_corpus_name()
    return "cifar10"


def _portable_source(source: str | None) -> str | None:
    """--init-from as a param: an MLflow URI as is, a path without this machine's part (`portable_path`)."""
    if source is None or source.startswith(("runs:/", "models:/")):
        return source
    return portable_path(source)


def tracking_of(args: argparse.Namespace) -> Tracking:
    """Where the flags track and checkpoint runs, and the flags as every run's params (no machine path in them:
    the data by name, paths relative to the working directory)."""
    params = dict(_flags(args), data=data_name(args),
                  data_root=portable_path(args.data_root) if args.data_root else "default",
                  checkpoint_dir=portable_path(args.checkpoint_dir) if args.checkpoint_dir else None,
                  init_from=_portable_source(args.init_from))
    if "download" in params:  # said only where the data was downloaded (no --data)
        params["download"] = bool(args.download and not args.data)
    for key in ("compare", "seeds"):
        if params.get(key):
            params[key] = ",".join(map(str, params[key]))
    if "gpt" in params:
        params["gpt"] = "x".join(map(str, args.gpt))
    if "stdlib" in params:  # said only where the standard library's source was read (no --data)
        params["stdlib"] = bool(args.stdlib and not args.data)
    return Tracking(uri=args.tracking_uri, experiment=args.experiment, checkpoint_dir=args.checkpoint_dir,
                    checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
                    system_metrics=args.system_metrics, log_model=not args.no_log_model, data_name=data_name(args),
                    params=params)
