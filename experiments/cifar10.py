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


def build_parser(argv: list[str] | None = None):
    """The program's parser: its DEFAULTS, and an end of training given in `argv` replaces the default budget_epochs."""
    return cli.experiment_parser("python -m experiments.cifar10", __doc__.split("\n\n")[0], DEFAULTS,
                                 "budget_epochs", argv)


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, lambda: build_parser(argv))


if __name__ == "__main__":
    sys.exit(main())
