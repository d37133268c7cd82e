"""What do the adapters cost a loop of your own? The same plain PyTorch loop with and without them, at rate 1.0.

    python -m benchmarks.adapter_overhead [--samples 8192] [--batch-size 128] [--repeats 7] [--image-size 32] [--quick]
                                          [--json PATH]

A user's loop as written without this library: a small CNN on generated 32x32 RGB images in memory, a
`DataLoader` of batches of 128 in a seeded shuffled order, cross-entropy, `torch.optim.SGD`. Three variants train the
same epochs from the same initial weights:

- `plain`: the loop itself (a mean loss);
- `selector`: the same DataLoader, per-sample losses and `Selector("stale", target_rate=1.0).loss(index, losses)`;
- `sampler`: `DataLoader(batch_sampler=Sampler("stale", target_rate=1.0))` and `sampler.loss(index, losses)`.

At rate 1.0 every sample is trained (stale selects all of each pool of one batch), so the model's work is the same
and what differs is the adapter: the draw, the rule's selection, the observation of the losses and the work counters.
Each repeat trains one epoch of every variant, in a rotated order, so the machine's drift falls on all alike; the
figure is the median over repeats of plain's epoch time over the variant's in the same repeat (throughput: > 1 is
faster; the target is >= 0.97), its spread over repeats, and the adapter's cost per step (from the medians).
Timings mean something only on a quiet machine: the load average is printed with them. `--quick` (96 16x16 images,
two repeats) only shows that the program runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from functional_ast import io
from functional_ast.adapters import Sampler, Selector

VARIANTS = ("plain", "selector", "sampler")


def images(n: int, size: int = 32, seed: int = 0) -> TensorDataset:
    """n normalised size x size RGB images whose class shifts their mean, their labels and their dataset indices."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    x = torch.randn(n, 3, size, size, generator=g) + labels.view(-1, 1, 1, 1) * 0.1
    return TensorDataset(x, labels, torch.arange(n))


def small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


class Variant:
    """One variant's model, optimiser and loader; `epoch()` trains one epoch and returns its steps."""

    def __init__(self, name: str, data: TensorDataset, batch_size: int, seed: int):
        torch.manual_seed(seed)
        self.name, self.model = name, small_cnn()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9)
        n = len(data)
        self.selector = Selector("stale", n, 1.0, seed=seed) if name == "selector" else None
        self.sampler = Sampler("stale", n, batch_size, 1.0, seed=seed) if name == "sampler" else None
        if self.sampler is not None:
            self.loader = DataLoader(data, batch_sampler=self.sampler)
        else:
            self.loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True,
                                     generator=torch.Generator().manual_seed(seed))

    def epoch(self) -> int:
        steps = 0
        for x, y, index in self.loader:
            if self.name == "plain":
                loss = F.cross_entropy(self.model(x), y)
            else:
                losses = F.cross_entropy(self.model(x), y, reduction="none")
                adapter = self.selector if self.selector is not None else self.sampler
                loss = adapter.loss(index, losses)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            steps += 1
        return steps


def measure(samples: int, batch_size: int, repeats: int, size: int = 32, seed: int = 0) -> dict[str, list[float]]:
    """Epoch seconds of every variant, `repeats` times, interleaved (the order rotates each repeat); one epoch of
    each first, untimed (allocator and caches warm)."""
    data = images(samples, size, seed)
    variants = [Variant(name, data, batch_size, seed) for name in VARIANTS]
    for v in variants:
        v.epoch()
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    steps: dict[str, int] = {}
    for r in range(repeats):
        for v in variants[r % len(variants):] + variants[:r % len(variants)]:
            start = time.perf_counter()
            steps[v.name] = v.epoch()
            times[v.name].append(time.perf_counter() - start)
    return {"times": times, "steps": steps}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.adapter_overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=8192)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--quick", action="store_true", help="96 16x16 images, two repeats: shows that it runs")
    p.add_argument("--json", default=None, help="write the figures here (default: print them only)")
    args = p.parse_args(argv)
    if args.quick:
        args.samples, args.batch_size, args.repeats, args.image_size = 96, 32, 2, 16
    measured = measure(args.samples, args.batch_size, args.repeats, args.image_size)
    times, steps = measured["times"], measured["steps"]
    plain = statistics.median(times["plain"])
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    size = f"{args.image_size}x{args.image_size}"
    print(f"{args.samples} samples 3x{size}, batch {args.batch_size}, {args.repeats} interleaved repeats of one epoch "
          f"each, {torch.get_num_threads()} threads, torch {torch.__version__}; load average {load[0]:.2f} "
          f"(timings mean something only on a quiet machine){' [--quick: not a measurement]' if args.quick else ''}")
    print("| variant | median epoch s | throughput vs plain, median of repeats (min to max) | adapter ms per step |\n"
          "|---|---|---|---|")
    rows = {}
    for name in VARIANTS:
        median = statistics.median(times[name])
        paired = [p / v for p, v in zip(times["plain"], times[name])]  # the same repeat: the same machine state
        rows[name] = dict(median_s=median, throughput_vs_plain=statistics.median(paired), paired=paired,
                          adapter_ms_per_step=(median - plain) / steps[name] * 1e3, steps=steps[name],
                          epoch_s=times[name])
        print(f"| {name} | {median:.3f} | {rows[name]['throughput_vs_plain']:.3f}x ({min(paired):.3f} to "
              f"{max(paired):.3f}) | {rows[name]['adapter_ms_per_step']:+.2f} |")
    if args.json:
        io.atomic_write_json(args.json, dict(
            command="python -m benchmarks.adapter_overhead" + (" --quick" if args.quick else ""),
            machine=platform.processor() or platform.machine(), cpus=os.cpu_count(), threads=torch.get_num_threads(),
            torch=torch.__version__, load_average=list(load), quick=args.quick, samples=args.samples,
            batch_size=args.batch_size, repeats=args.repeats, image_size=args.image_size, variants=rows))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
