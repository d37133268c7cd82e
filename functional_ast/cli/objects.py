"""From the command's flags to the library's objects: the TrainConfig, the device, the Data (images or a text corpus),
the task and the model, the Tracking, and the flags that decide a run's results (what a --resume compares)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from functional_ast import strategies
from functional_ast.cli.flags import rule_options
from functional_ast.core import distributed
from functional_ast.core.task import Task
from functional_ast.data import text
from functional_ast.edges import pretrained
from functional_ast.edges.tracked import Tracking, portable_path
from functional_ast.tasks import language_modelling
from functional_ast.train import prepare
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
                       augment=not args.no_augment, seed=args.seed if seed is None else seed, compile=args.compile,
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


def is_text(args: argparse.Namespace) -> bool:
    return getattr(args, "task", "images") == "lm"


def resolved(args: argparse.Namespace) -> argparse.Namespace:
    """`args` with the task's default model (gpt for lm, cnn for images), checked for flags the task cannot take
    (ConfigError, one line)."""
    text = is_text(args)
    if args.model is None:
        args.model = "gpt" if text else "cnn"
    if not text:
        if args.model == "gpt":
            raise ConfigError("--model gpt is a language model; use it with --task lm (and a text --data)")
        if getattr(args, "selective_lm", None) is not None:
            raise ConfigError("--selective-lm is Rho-1's token selection for --task lm; images have no tokens")
        if getattr(args, "junk", 0.0):
            raise ConfigError("--junk adds junk files to a text corpus (--task lm); for images use --label-noise or "
                              "--duplicates")
        return args
    for flag, given in (("--label-noise", args.label_noise), ("--label-smoothing", args.label_smoothing),
                        ("--image-size", args.image_size), ("--classes", args.classes),
                        ("--imbalance", args.imbalance != 1), ("--duplicates", args.duplicates)):
        if given:
            raise ConfigError(f"{flag} is for images; a text corpus has no labels or image size (drop it)")
    for spec in args.compare or [args.strategy]:
        strategies.get(parse_variant(spec)[0]).check_kind("sequences")
    if getattr(args, "selective_lm", None) is not None and args.compare:
        raise ConfigError("--selective-lm trains one run (its reference first): drop --compare, or --selective-lm")
    return args


def task_of(args: argparse.Namespace) -> Task | None:
    """The problem the flags train: language modelling for --task lm, None (image classification) otherwise."""
    return language_modelling() if is_text(args) else None


def build_model(args: argparse.Namespace, data):
    """A function building the flags' model for `data`, started from --init-from's saved tensors when given."""
    if is_text(args):
        build = prepare.text_model_builder(args.model, args.context, tuple(args.gpt))
    else:
        build = prepare.model_builder(args.model, data)
    return pretrained.starting_from(build, args.init_from) if args.init_from else build


def load_data(args: argparse.Namespace) -> Data:
    """The flags' data set, subset, noised and on the device; one-line errors for what is wrong."""
    if is_text(args):
        return _load_text(args)
    if args.data is None and not getattr(args, "download", False):
        raise ConfigError("--data is required: an ImageFolder tree (train/<class>/*, test/<class>/*) or a .tar.gz "
                          "of one")
    data = prepare.load_data(args.data, root=args.data_root, device=resolve_device(args.device),
                             image_size=args.image_size, limit_train=args.limit_train, limit_test=args.limit_test,
                             label_noise=args.label_noise, seed=args.seed, download=getattr(args, "download", False),
                             data_in_memory=getattr(args, "data_in_memory", "auto"), classes=args.classes,
                             imbalance=args.imbalance, duplicates=args.duplicates)
    if len(data.train) < args.batch_size:
        raise ConfigError(f"--batch-size {args.batch_size} is larger than the training set ({len(data.train)} "
                          "samples); lower --batch-size or raise --limit-train")
    return data


def _load_text(args: argparse.Namespace):
    if args.data is None and not getattr(args, "stdlib", False):
        raise ConfigError("--data is required with --task lm: a text file, a folder of them or a .tar.gz of one")
    data = prepare.load_text(args.data, root=args.data_root, context=args.context, glob=args.glob,
                             test_fraction=args.test_fraction, seed=args.seed, limit_train=args.limit_train,
                             limit_test=args.limit_test, device=resolve_device(args.device), junk=args.junk)
    if len(data.train) < args.batch_size:
        raise ConfigError(f"--batch-size {args.batch_size} is more than the {len(data.train)} training windows of "
                          f"{args.context + 1} bytes; lower --batch-size or --context, or give more text")
    return data


# Flags that do not change what is computed; every other flag must match for --resume.
_NOT_RESULT_FLAGS = {"tracking_uri", "experiment", "run_name", "log_every", "no_progress", "checkpoint_every",
                     "checkpoint_dir", "keep_checkpoints", "resume", "data_root", "joules_per_gflop",
                     "system_metrics", "no_log_model", "no_interleave", "download", "eval_every",
                     "data_in_memory"}

# The language model's flags: an image run's params and settings leave them out (as before they existed).
_TEXT_FLAGS = {"task", "context", "glob", "test_fraction", "gpt", "selective_lm", "stdlib", "junk"}


def _flags(args: argparse.Namespace) -> dict:
    """The flags of the run's task."""
    return {k: v for k, v in vars(args).items() if is_text(args) or k not in _TEXT_FLAGS}


def result_config(args: argparse.Namespace, **extra) -> dict:
    """The flags that determine a run's results (what --resume compares)."""
    config = {k: v for k, v in _flags(args).items() if k not in _NOT_RESULT_FLAGS}
    if config.get("budget_epochs"):  # the seconds it stands for are measured per machine, kept in run.json
        config["time_budget"] = None
    for key in ("compare", "seeds"):
        if config.get(key):
            config[key] = ",".join(map(str, config[key]))
    return dict(config, **extra)


def data_name(args: argparse.Namespace) -> str:
    """The data set's name in params and the run input: its folder's or archive's name (CIFAR-10 when downloaded,
    the standard library's source, python-X.Y.Z-stdlib, for text without --data)."""
    if args.data:
        return Path(args.data).name
    if is_text(args):
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
    params = dict(_flags(args), data=data_name(args), data_root=portable_path(args.data_root),
                  checkpoint_dir=portable_path(args.checkpoint_dir) if args.checkpoint_dir else None,
                  init_from=_portable_source(args.init_from))
    if "download" in params:  # said only where the data was downloaded (no --data)
        params["download"] = bool(args.download and not args.data)
    for key in ("compare", "seeds"):
        if params.get(key):
            params[key] = ",".join(map(str, params[key]))
    if is_text(args):
        params["gpt"] = "x".join(map(str, args.gpt))
        if "stdlib" in params:  # said only where the standard library's source was read (no --data)
            params["stdlib"] = bool(args.stdlib and not args.data)
    return Tracking(uri=args.tracking_uri, experiment=args.experiment, checkpoint_dir=args.checkpoint_dir,
                    checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
                    system_metrics=args.system_metrics, log_model=not args.no_log_model, data_name=data_name(args),
                    params=params)
