"""Bring your own model and data: does selection save wall-clock through the library's documented path?

    python -m benchmarks.byo_speed [--samples 12000] [--epochs 4] [--target-rate 0.2]

A generated 28x28 one-channel, 10-class image set (a digit-like brightness pattern per class) and a
small model defined here, as a user would write them, trained with `functional_ast.fit` for the
same epochs (1 warm-up epoch on all data) by full data and by each selective strategy. The runs
take turns an epoch each (`compare`), so the machine's speed drift falls on all alike. Prints each
strategy's train wall-clock as a ratio of full's, measured in this one run. This measures cost only:
accuracy at equal time is the savings benchmark's question.
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

import functional_ast as fa


def images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n 28x28 one-channel uint8 images; class c lights up a horizontal band at row 2c+4, plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    x = torch.rand(n, 1, 28, 28, generator=g) * 80
    rows = (2 * labels + 4).view(-1, 1, 1, 1)
    x = x + 150 * (torch.arange(28).view(1, 1, 28, 1) - rows).abs().le(1)
    return x.clamp(0, 255).to(torch.uint8), labels


def small_net(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 7 * 7, num_classes))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.byo_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=12000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--target-rate", type=float, default=0.2)
    p.add_argument("--strategies", default="random,stale,sundew")
    args = p.parse_args(argv)
    train, test = images(args.samples, 0), images(2000, 1)
    names = ["full"] + args.strategies.split(",")
    configs = [fa.TrainConfig(strategy=name, epochs=args.epochs, warmup_epochs=1, target_rate=args.target_rate)
               for name in names]
    results = fa.compare(small_net, train, test, configs, callbacks_for=lambda c: [fa.Console(bar=False)])
    full = results[0].summary
    print(f"\n{args.samples} samples 28x28x1, {args.epochs} epochs (1 warm-up), target rate {args.target_rate}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| strategy | train s | time vs full | FLOPs vs full | test acc |\n|---|---|---|---|---|")
    for r in results:
        s = r.summary
        print(f"| {s['strategy']} | {s['train_time_s']:.1f} | {s['train_time_s'] / full['train_time_s']:.2f} | "
              f"{s['flops_spent'] / full['flops_spent']:.2f} | {s['test_accuracy']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
