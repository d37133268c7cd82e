"""A byte-level language model on the Python standard library's source: the library's command with its defaults.

    python -m experiments.code_lm                        # the running Python's stdlib .py files, no download
    python -m experiments.code_lm --data PATH            # any text file, folder of them (--glob) or .tar.gz
    python -m experiments.code_lm --compare full,random,sundew_remembered --seeds 0,1,2

The default job trains on all data (`full`): on this corpus the LM savings benchmark measured every selection rule
behind budget-matched full data by about 0.09 bits per byte (3 seeds, both budgets; docs/results.md), so a selecting
default would contradict the results; `--strategy` or `--compare` tries a rule on yours. It trains a small gpt
(2 blocks, width 64, 4 heads, context 128) for 180 s (evaluation apart) on the first 8192 training windows (about
1 MB of code) and evaluates it on 1024 held-out windows, so that it ends within about 5 minutes on a 2-core CPU;
`--epochs`, `--time-budget`, `--flop-budget` or `--budget-epochs` replace the 180 s, and `--limit-train`/
`--limit-test` the subset. Every run records the corpus's digest and the Python version (the stdlib differs between
versions) in its params and MLflow input. Every flag of `python -m functional_ast` works here.
"""

from __future__ import annotations

import sys

from functional_ast.cli import main as cli

# `full`, because the LM savings benchmark measured selection losing on this corpus; a 30% target for `--strategy`.
DEFAULTS = dict(experiment="code_lm", task="lm", stdlib=True, model="gpt", context=128, gpt=(2, 64, 4),
                strategy="full", target_rate=0.3, warmup_epochs=0, cooldown_epochs=0,
                batch_size=64, optimizer="adam", time_budget=180.0, limit_train=8192, limit_test=1024)


def build_parser(argv: list[str] | None = None):
    """The program's parser: its DEFAULTS, and an end of training given in `argv` replaces the default time_budget."""
    return cli.experiment_parser("python -m experiments.code_lm", __doc__.split("\n\n")[0], DEFAULTS,
                                 "time_budget", argv)


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, lambda: build_parser(argv))


if __name__ == "__main__":
    sys.exit(main())
