"""The command line: train any labelled image folder with any model, or a language model on any text, tracked in
MLflow.

    python -m functional_ast --data PATH [--model cnn | --model package.module:function] [--strategy sundew] ...
    python -m functional_ast --data PATH --compare full,random,stale --seeds 0,1,2 --time-budget 300
    python -m functional_ast --task lm --data TEXT [--model gpt --gpt 2x64x4 --context 128] [--selective-lm 0.6]

PATH is an ImageFolder tree (`train/<class>/*`, `test/<class>/*`), a CIFAR-10 directory, or a
.tar.gz of either; any number of classes, any image size (`--image-size` resizes), 1 or 3
channels. `--model package.module:function` builds your own model: it is called with
`num_classes` and `in_channels` (and `image_size` if it accepts it) and returns an nn.Module.
With `--task lm`, TEXT is a text file, a folder of them (`--glob`) or a .tar.gz of one, split by file into
training and held-out windows of `--context` + 1 bytes; runs report bits per byte.
Every run is an MLflow run with checkpoints beside the store; `--resume` continues one.

Flags (`flags`) -> objects (`objects`) -> the library's tracked fit or comparison (`edges.tracked`) -> printed.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import warnings

from functional_ast.cli import objects
from functional_ast.cli.flags import (
    EXIT_USAGE,
    build_parser,
    experiment_parser,
    register_named_rules,
    seed_list,
    strategy_list,
)
from functional_ast.cli.objects import load_data, resolve_device, result_config, tracking_of, train_config
from functional_ast.core import distributed
from functional_ast.data import images as fdata
from functional_ast.edges import checkpoint, runs, store
from functional_ast.edges.tracked import tracked_compare, tracked_fit
from functional_ast.train.base import Result, Summary
from functional_ast.train.config import ConfigError, parse_variant
from functional_ast.train.loop import NonFiniteLossError
from functional_ast.train.prepare import model_builder, model_label
from functional_ast.train.selective import fit_selective

EXIT_FAILED = 1
# What the command's callers and tests reach through it (`from functional_ast.cli import main as cli`).
__all__ = ["ConfigError", "build_parser", "compare_strategies", "experiment_parser", "load_data", "main",
           "model_builder", "parse_variant", "print_summary", "seed_list", "strategy_list", "train", "train_config"]


def _explicit_budget(args: argparse.Namespace) -> None:
    """--time-budget/--flop-budget take precedence over --budget-epochs; the task's default model; the task's
    refusals."""
    if args.time_budget or args.flop_budget:
        args.budget_epochs = None
    objects.resolved(args)


def train(args: argparse.Namespace, collective: distributed.Collective = distributed.LOCAL) -> dict:
    """Run the configured strategy (or resume it); print and return its summary."""
    _explicit_budget(args)
    config = train_config(args)
    keep = getattr(args, "selective_lm", None)
    rate = "" if config.rate_target is None else f"-{config.rate_target:g}"
    name = args.run_name or f"{config.strategy}-{model_label(args.model)}{rate}" + (
        f"-rho1-{keep:g}" if keep is not None else "")
    where = tracking_of(args)
    if collective.is_main:
        runs.check_can_start(where.checkpoint_root, name, args.resume)  # before any data is read
    data = load_data(args)
    build = objects.build_model(args, data)
    selective = {} if keep is None else dict(fitter=functools.partial(fit_selective, keep=keep))
    out = tracked_fit(build, data, config, name, where, resume=args.resume,
                      settings=result_config(args, strategy=config.strategy), budget_epochs=args.budget_epochs,
                      budget_kind=args.budget_kind,
                      log_every=args.log_every, eval_every=args.eval_every, progress=not args.no_progress,
                      collective=collective, task=objects.run_task(args), joules_per_gflop=args.joules_per_gflop,
                      **selective)
    if out.already_finished or not collective.is_main:
        return out.result.summary
    print_summary(out.result.summary)
    print(f"Browse the run: {store.ui_command(args.tracking_uri, out.experiment_id)}")
    return out.result.summary


def compare_strategies(args: argparse.Namespace,
                       collective: distributed.Collective = distributed.LOCAL) -> list[Result]:
    """Run each strategy of --compare (for each of --seeds) as a nested MLflow run, taking turns; log the table
    and figures on the parent run. With --resume, finished runs are read back and the others continue."""
    _explicit_budget(args)
    configs = {spec: train_config(args, strategy=spec) for spec in args.compare}
    name, where = args.run_name or f"compare-{model_label(args.model)}-{args.target_rate:g}", tracking_of(args)
    if collective.is_main:
        runs.check_can_start(where.checkpoint_root, name, args.resume)  # before any data is read
    data = load_data(args)
    out = tracked_compare(objects.build_model(args, data), data, configs, name, where, seeds=args.seeds,
                          resume=args.resume, settings=result_config(args),
                          budget_epochs=args.budget_epochs, budget_kind=args.budget_kind,
                          interleave=not args.no_interleave,
                          log_every=args.log_every, eval_every=args.eval_every, model_label=model_label(args.model),
                          progress=not args.no_progress, collective=collective, task=objects.run_task(args),
                          joules_per_gflop=args.joules_per_gflop)
    if collective.is_main:
        print("\n" + out.table)
        print(f"Browse the runs: {store.ui_command(args.tracking_uri, out.experiment_id)}")
    return out.results


def print_summary(summary: Summary) -> None:
    """The run's summary as aligned lines: what ran (its phases as they ran), what it reached, what it cost; savings
    are stated against what they are measured against (a rule that picks its own rate has no target)."""
    gated = summary.warmup_epochs + summary.selective_epochs + summary.cooldown_epochs > 0  # phases: a gated rule
    phases = (f"{summary.epochs}: {summary.warmup_epochs} warm-up, {summary.selective_epochs} selective, "
              f"{summary.cooldown_epochs} cool-down" if gated else f"{summary.epochs}, all on all data")
    cut = f" ({summary.epochs_cut_short} cut short by the budget)" if summary.epochs_cut_short else ""
    rows = [("strategy", summary.strategy),
            ("epochs begun", phases + cut),
            *[(summary.labels.get(name, f"test {name.replace('_', ' ')}"), f"{value:.4f}")
              for name, value in _test_rows(summary)],
            ("train wall-clock", f"{summary.train_time_s:.1f} s (eval {summary.eval_time_s:.1f} s apart)"),
            ("throughput", f"{summary.samples_per_s:.0f} samples/s trained, {summary.flops_per_s:.3g} FLOP/s"),
            ("activation rate after warm-up", f"{summary.mean_activation_rate_after_warmup:.3f}"
             + (" (the rule's own rate)" if summary.target_rate is None
                else f" (target {summary.target_rate:g})" if gated else "")),
            ("FLOPs spent", f"{summary.flops_spent:.3e}"),
            ("FLOPs saved vs full data for the same epochs", f"{summary.flops_saved_pct:.1f}%"),
            ("samples scored / trained", f"{summary.samples_scored} / {summary.samples_trained}"),
            ("energy", f"{summary.energy_j:.0f} J ({summary.energy_kind})")]
    width = max(len(k) for k, _ in rows)
    print("\nsummary")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    if gated:
        print("  These savings are against full data for the same epochs, not against a fair baseline: for that,\n"
              "  run python -m functional_ast savings (full data on a schedule fitted to the same budget, and a\n"
              "  random subset, over seeds).")


def _test_rows(summary: Summary) -> list[tuple[str, float]]:
    """The test metrics, the task's headline first."""
    return sorted(summary.test.items(), key=lambda item: item[0] != summary.headline)


def quiet_libraries() -> None:
    """The program's console holds its own lines: MLflow's and its database migrations' INFO logs are set to
    warnings only ("Creating initial MLflow database tables..."). `import mlflow` sets its loggers' level from
    MLFLOW_LOGGING_LEVEL, so that is set for an import still to come, and the loggers of one already made are set
    too; a level the user set in MLFLOW_LOGGING_LEVEL is theirs."""
    if "MLFLOW_LOGGING_LEVEL" in os.environ:
        return
    os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"
    if "mlflow" in sys.modules:
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)


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
    quiet_libraries()
    try:
        timed = args.time_budget or (args.budget_epochs and args.budget_kind == "time")
        if distributed.launched_by_torchrun() and (timed
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
