"""CIFAR-10 with Adaptive Sparse Training: the library's command with CIFAR-10's defaults.

    python -m experiments.cifar10 [--data PATH] [--strategy sundew] [--target-rate 0.1] ...
    python -m experiments.cifar10 --data PATH --compare full,random,stale --seeds 0,1,2 --time-budget 300

Without --data it downloads CIFAR-10 into --data-root (torchvision); offline, point --data at
torchvision's `cifar-10-batches-py`, an ImageFolder tree or a .tar.gz of either. Every flag of
`python -m functional_ast` works here; this program only sets the experiment name and allows the
download. Runs go to MLflow (sqlite under ./mlruns): `mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db`.
"""

from __future__ import annotations

import sys

from functional_ast.cli import main as cli

# CIFAR-10's defaults: everything else is the library's (functional_ast.config.TrainConfig).
DEFAULTS = dict(experiment="cifar10", download=True)


def build_parser():
    return cli.build_parser(prog="python -m experiments.cifar10", description=__doc__.split("\n\n")[0], **DEFAULTS)


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, build_parser)


if __name__ == "__main__":
    sys.exit(main())
