"""CIFAR-10 with Adaptive Sparse Training: the library's command with CIFAR-10's defaults.

    python -m experiments.cifar10 [--data PATH]
    python -m experiments.cifar10 --data PATH --compare full,random,infobatch --seeds 0,1,2

The default job is the library's default rule (`TrainConfig()`: `infobatch`, the regime map's safest rule, between
1 warm-up and 1 cool-down epoch on all data; docs/results.md, "The default rule follows the map") for the FLOPs of 6
full-data epochs: the same steps on every machine, loaded or not. `--strategy sundew_remembered` runs the Sundew
gate and PI controller on remembered scores at a 30% target, the default before the map. `--epochs`,
`--time-budget`, `--flop-budget` or `--budget-epochs N [--budget-kind time]` replace the 6-epoch budget. Without
--data it downloads CIFAR-10 into --data-root (torchvision); offline, point --data at torchvision's
`cifar-10-batches-py`, an ImageFolder tree or a .tar.gz of either. Every flag of `python -m functional_ast` works
here.
"""

from __future__ import annotations

import sys

from functional_ast.cli import main as cli

# The default job's length (docs/results.md, "Does selection pay at equal time?"); its rule is the library's
# default (TrainConfig), as every flag's is.
DEFAULTS = dict(experiment="cifar10", download=True, budget_epochs=6.0, budget_kind="flops")


def build_parser(argv: list[str] | None = None):
    """The program's parser: its DEFAULTS, and an end of training given in `argv` replaces the default budget_epochs."""
    return cli.experiment_parser("python -m experiments.cifar10", __doc__.split("\n\n")[0], DEFAULTS,
                                 "budget_epochs", argv)


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, lambda: build_parser(argv))


if __name__ == "__main__":
    sys.exit(main())
