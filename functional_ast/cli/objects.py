"""From the command's flags to the library's objects: the TrainConfig, the device, the Data, the Tracking, and the
flags that decide a run's results (what a --resume compares)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from functional_ast.cli.flags import rule_options
from functional_ast.core import distributed
from functional_ast.edges.tracked import Tracking, portable_path
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
    data = prepare.load_data(args.data, root=args.data_root, device=resolve_device(args.device),
                             image_size=args.image_size, limit_train=args.limit_train, limit_test=args.limit_test,
                             label_noise=args.label_noise, seed=args.seed, download=getattr(args, "download", False),
                             data_in_memory=getattr(args, "data_in_memory", "auto"))
    if len(data.train) < args.batch_size:
        raise ConfigError(f"--batch-size {args.batch_size} is larger than the training set ({len(data.train)} "
                          "samples); lower --batch-size or raise --limit-train")
    return data


# Flags that do not change what is computed; every other flag must match for --resume.
_NOT_RESULT_FLAGS = {"tracking_uri", "experiment", "run_name", "log_every", "no_progress", "checkpoint_every",
                     "checkpoint_dir", "keep_checkpoints", "resume", "data_root", "joules_per_gflop",
                     "system_metrics", "no_log_model", "no_interleave", "download", "eval_every",
                     "data_in_memory"}

def result_config(args: argparse.Namespace, **extra) -> dict:
    """The flags that determine a run's results (what --resume compares)."""
    config = {k: v for k, v in vars(args).items() if k not in _NOT_RESULT_FLAGS}
    if config.get("budget_epochs"):  # the seconds it stands for are measured per machine, kept in run.json
        config["time_budget"] = None
    for key in ("compare", "seeds"):
        if config.get(key):
            config[key] = ",".join(map(str, config[key]))
    return dict(config, **extra)


def data_name(args: argparse.Namespace) -> str:
    """The data set's name in params and the run input: its folder's or archive's name (CIFAR-10 when downloaded)."""
    return Path(args.data).name if args.data else "cifar10"


def tracking_of(args: argparse.Namespace) -> Tracking:
    """Where the flags track and checkpoint runs, and the flags as every run's params (no machine path in them:
    the data by name, paths relative to the working directory)."""
    params = dict(vars(args), data=data_name(args), data_root=portable_path(args.data_root),
                  checkpoint_dir=portable_path(args.checkpoint_dir) if args.checkpoint_dir else None)
    if "download" in params:  # said only where the data was downloaded (no --data)
        params["download"] = bool(args.download and not args.data)
    for key in ("compare", "seeds"):
        if params.get(key):
            params[key] = ",".join(map(str, params[key]))
    return Tracking(uri=args.tracking_uri, experiment=args.experiment, checkpoint_dir=args.checkpoint_dir,
                    checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
                    system_metrics=args.system_metrics, log_model=not args.no_log_model, data_name=data_name(args),
                    params=params)
