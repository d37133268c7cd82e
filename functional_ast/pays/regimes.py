"""The regimes of the map (docs/results.md, "Where does selection pay?"): each a name for a set of the savings
command's flags, so `python -m functional_ast savings --regime NAME ...` reproduces a cell on any data.

Images: CIFAR-10's quick subset (6,000 / 2,000, class-balanced), clean, with symmetric label noise, long-tailed
(CIFAR-10-LT's profile over the subset's 600 a class), half near-duplicates, and fine-tuning on the 4 vehicle
classes from a network pretrained on the 6 animal ones. Text: the standard library's source, clean and with 30%
junk (200 KB of clean training text, so 12 entries x 3 seeds fit the CPU). Every rule runs at equal FLOPs
(deterministic on any machine) against budget-matched full data and a random subset, 3 seeds.
"""

from __future__ import annotations

import argparse

from functional_ast.core.checks import ConfigError

ANIMALS = ("bird", "cat", "deer", "dog", "frog", "horse")
VEHICLES = ("airplane", "automobile", "ship", "truck")

# Every registered rule, plus reducible loss with a small holdout reference (RHO-LOSS's own setting).
IMAGE_RULES = ("full,random,sundew,stale,small_loss,prioritized,sundew_remembered,infobatch,rho_loss,"
               "rho_loss:holdout=0.1:reference=8,proxy")
TEXT_RULES = ("full,random,sundew,stale,small_loss,prioritized,sundew_remembered,infobatch,rho_loss,"
              "rho_loss:holdout=0.1:reference=8")

REGIMES: dict[str, dict] = {
    "clean": dict(task="images"),
    "noise20": dict(task="images", label_noise=0.2),
    "noise40": dict(task="images", label_noise=0.4),
    "lt10": dict(task="images", imbalance=10.0),
    "lt100": dict(task="images", imbalance=100.0),
    "dup50": dict(task="images", duplicates=0.5),
    "finetune": dict(task="images", classes=VEHICLES),  # with --init-from a model pretrained on ANIMALS
    "text-clean": dict(task="lm", train_bytes=200_000),
    "text-junk30": dict(task="lm", train_bytes=200_000, junk=0.3),
}

DESCRIPTIONS = {
    "clean": "clean",
    "noise20": "20% symmetric label noise",
    "noise40": "40% symmetric label noise",
    "lt10": "long-tailed, ratio 10",
    "lt100": "long-tailed, ratio 100",
    "dup50": "50% near-duplicates of 1%",
    "finetune": "fine-tuning: 4 vehicle classes from 6 animal ones",
    "text-clean": "text, clean",
    "text-junk30": "text, 30% junk files",
}


def names() -> tuple[str, ...]:
    return tuple(REGIMES)


def apply(args: argparse.Namespace, defaults: dict) -> None:
    """Set the regime's task, and its flags where the command line left them at their `defaults`; fine-tuning
    needs --init-from (ConfigError)."""
    for key, value in REGIMES[args.regime].items():
        if key == "task" or getattr(args, key) == defaults.get(key):
            setattr(args, key, value)
    if args.regime == "finetune" and not args.init_from:
        raise ConfigError("--regime finetune needs --init-from: a model pretrained on the 6 animal classes "
                          "(python -m benchmarks.regime_map --data PATH --only finetune makes one)")
