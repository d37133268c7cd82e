"""The command line: train any labelled image folder with any model, or a language model on any text, tracked in MLflow.

The command's flags and their argparse types (`build_parser`, `strategy_list`, `seed_list`), and the rule options
the flags set (`rule_options`). Programs of their own (benchmarks) may use the types; nothing here trains.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys

from functional_ast import strategies
from functional_ast.core import work
from functional_ast.data import images as fdata
from functional_ast.edges import store
from functional_ast.models import MODELS
from functional_ast.train.config import MEMORY_FORMATS, PRECISIONS, ConfigError, TrainConfig, parse_variant, split_spec

EXIT_USAGE = 2
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


def class_list(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("give at least one class name, e.g. airplane,automobile,ship,truck")
    return names


def gpt_shape(text: str) -> tuple[int, int, int]:
    """--gpt DEPTHxWIDTHxHEADS, e.g. "2x64x4"; the width a multiple of the heads."""
    try:
        depth, width, heads = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected DEPTHxWIDTHxHEADS such as 2x64x4, got {text!r}") from None
    if min(depth, width, heads) < 1 or width % heads:
        raise argparse.ArgumentTypeError(f"depth, width and heads must be positive and the width a multiple of "
                                         f"the heads, got {text!r}")
    return depth, width, heads


def _model_name(text: str) -> str:
    if text in MODELS or text == "gpt" or ":" in text:
        return text
    raise argparse.ArgumentTypeError(f"unknown model {text!r}; use one of {', '.join(sorted(MODELS))} or "
                                     "package.module:function for your own")


def build_parser(prog: str = "python -m functional_ast", description: str | None = None,
                 **defaults) -> argparse.ArgumentParser:
    """The command's flags; `defaults` override them (e.g. experiments.cifar10 sets its experiment name)."""
    p = _Parser(prog=prog, description=description or __doc__.split("\n\n")[0],
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--task", default="images", metavar="images|lm|package.module:task",
                   help="images: an image classifier; lm: a byte-level language model on text; package.module:task: "
                        "a Task of yours with a `load(path, **options)` (its data) and a `build_model`")
    d.add_argument("--data", default=None,
                   help="ImageFolder tree (train/<class>/*, test/<class>/*), CIFAR-10 dir, or a .tar.gz of either; "
                        "with --task lm: a text file, a folder of them (--glob) or a .tar.gz of one")
    d.add_argument("--data-root", default=None,
                   help="decoded-data cache and download target (default: $FUNCTIONAL_AST_DATA or "
                        "~/.cache/functional_ast, never the working directory)")
    d.add_argument("--data-in-memory", choices=fdata.DATA_IN_MEMORY, default="auto",
                   help="copy decoded images into memory; auto: on a GPU, or if under 1/4 of free memory")
    d.add_argument("--image-size", type=_bounded(int, 1), default=None,
                   help="resize every image to N x N (needed when a folder mixes sizes)")
    d.add_argument("--limit-train", type=_bounded(int, 1), default=None,
                   help="train on a fixed, seeded, class-balanced subset of N samples (text: the first N windows "
                        "of the seeded training files)")
    d.add_argument("--limit-test", type=_bounded(int, 1), default=None,
                   help="same for the test set (text: the first N held-out windows)")
    d.add_argument("--label-noise", type=_bounded(float, 0.0, 1.0, high_open=True), default=0.0,
                   help="replace this seeded share of training labels by a random other class (test labels kept)")
    d.add_argument("--classes", type=class_list, default=None, metavar="A,B,...",
                   help="train and test on these classes only, labelled in this order (fine-tuning on part of a set)")
    d.add_argument("--imbalance", type=_bounded(float, 1.0), default=1.0, metavar="RATIO",
                   help="a long-tailed training set: class c keeps n_max * RATIO^(-c/(C-1)) samples, as CIFAR-10-LT "
                        "(test set kept: balanced, its accuracy is the class-balanced one)")
    d.add_argument("--duplicates", type=_bounded(float, 0.0, 1.0, high_open=True), default=0.0, metavar="SHARE",
                   help="replace this seeded share of training images by near-duplicates (crop and flip) of a few "
                        "sources of their class (1%% of the set)")
    d.add_argument("--no-augment", action="store_true", help="disable random crop + flip")
    d.add_argument("--label-smoothing", type=_bounded(float, 0.0, 1.0, high_open=True), default=0.0,
                   help="train (and rank, and evaluate) on cross-entropy against labels smoothed by this much")
    x = p.add_argument_group("language modelling (--task lm)")
    x.add_argument("--context", type=_bounded(int, 1), default=128,
                   help="bytes a window predicts (a sample is context + 1 bytes)")
    x.add_argument("--glob", default="**/*", help="which files of a --data folder or archive to read")
    x.add_argument("--test-fraction", type=_bounded(float, 0.0, 1.0, low_open=True, high_open=True), default=0.1,
                   help="seeded share of the files held out whole for validation")
    x.add_argument("--junk", type=_bounded(float, 0.0, 1.0, high_open=True), default=0.0, metavar="SHARE",
                   help="add junk files (random bytes, a repeated line, whitespace stripped) making up this share of "
                        "the training text (held-out text kept clean)")
    x.add_argument("--gpt", type=gpt_shape, default="2x64x4", metavar="DEPTHxWIDTHxHEADS",
                   help="the built-in --model gpt's depth, width and attention heads")
    x.add_argument("--selective-lm", type=_bounded(float, 0.0, 1.0, low_open=True), default=None, metavar="KEEP",
                   help="Rho-1: take the loss on each window's top KEEP share of tokens by excess loss over a "
                        "reference model trained first (inside the run's budget) on all data; saves no FLOPs")
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
    t.add_argument("--model", type=_model_name, default=None,
                   help=f"images: {', '.join(sorted(MODELS))} (default cnn), or package.module:function building your "
                        "nn.Module (called with num_classes, in_channels and, if it takes it, image_size); lm: gpt "
                        "(the default), or package.module:function called with vocab and context")
    t.add_argument("--init-from", default=None, metavar="CHECKPOINT_OR_MODEL",
                   help="start from a saved model: a checkpoint (file or run folder), a torch.save'd state dict or "
                        "an MLflow model URI (runs:/ID/model); tensors whose name and shape match are loaded, the "
                        "rest (a new head) keeps its fresh initialisation")
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
                   help="a budget of N full-data epochs, in FLOPs (the same steps on every machine) or, with "
                        "--budget-kind time, in this machine's wall-clock, one epoch measured on a few steps first "
                        "(--time-budget/--flop-budget take precedence)")
    c.add_argument("--budget-kind", choices=("flops", "time"), default="flops",
                   help="what --budget-epochs matches: FLOPs executed (deterministic) or wall-clock (load-dependent)")
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
    r.add_argument("--tracking-uri", default=store.DEFAULT_TRACKING_URI)
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


ENDS = ("--epochs", "--time-budget", "--flop-budget", "--budget-epochs")  # the flags that say when training ends


def experiment_parser(prog: str, description: str, defaults: dict, default_end: str, argv: list[str] | None = None):
    """`build_parser` with an experiment program's defaults; an end of training the user gives (`ENDS`, in `argv`,
    default sys.argv) replaces the default one, `defaults[default_end]`."""
    given = sys.argv[1:] if argv is None else argv
    if any(arg.split("=")[0] in ENDS for arg in given):
        defaults = {k: v for k, v in defaults.items() if k != default_end}
    return build_parser(prog=prog, description=description, **defaults)
