"""CIFAR-10 with Adaptive Sparse Training: the library's command with CIFAR-10's defaults.

    python -m experiments.cifar10 [--data PATH]
    python -m experiments.cifar10 --data PATH --compare full,random,sundew_remembered --seeds 0,1,2

The default job is the Sundew gate and PI controller on remembered scores (`sundew_remembered`) at a 30% target,
1 warm-up and 1 cool-down epoch on all data, for the time of 6 full-data epochs on this machine: the form, rate
and length at which the savings benchmark measured it not to lose to budget-matched full data (3 seeds, README).
`--epochs`, `--time-budget` or `--flop-budget` replace the 6-epoch budget. Without --data it downloads CIFAR-10
into --data-root (torchvision); offline, point --data at torchvision's `cifar-10-batches-py`, an ImageFolder tree
or a .tar.gz of either. Every flag of `python -m functional_ast` works here.
"""

from __future__ import annotations

import sys

from functional_ast.cli import main as cli

# The measured default (docs/results.md, "Does selection pay at equal time?"); the rest is the library's.
DEFAULTS = dict(experiment="cifar10", download=True, strategy="sundew_remembered", target_rate=0.3,
                warmup_epochs=1, cooldown_epochs=1, budget_epochs=6.0)
ENDS = ("--epochs", "--time-budget", "--flop-budget", "--budget-epochs")  # flags that say when training ends


def build_parser(argv: list[str] | None = None):
    given = sys.argv[1:] if argv is None else argv
    defaults = dict(DEFAULTS)
    if any(arg.split("=")[0] in ENDS for arg in given):  # the user's end of training replaces the 6-epoch budget
        defaults.pop("budget_epochs")
    return cli.build_parser(prog="python -m experiments.cifar10", description=__doc__.split("\n\n")[0], **defaults)


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, lambda: build_parser(argv))


if __name__ == "__main__":
    sys.exit(main())
