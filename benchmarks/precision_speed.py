"""Step throughput of each precision against float32, measured interleaved in one run.

    python -m benchmarks.precision_speed [--quick] [--device cpu|cuda] [--compile] [--precisions bf16-mixed,16-mixed]

The functional step (`make_train_step`, all samples trained) of one model on the same in-memory batches, once per
precision; blocks of steps run round-robin, repeated, so machine noise hits every precision alike. Prints one
line per precision: `bf16-mixed/32 = R` (the median over the repeats of the ratio of images/s within one repeat)
and the spread of those ratios; writes them to --json. No figure is written into the code or docs: run it on a
quiet machine (on a CPU without bfloat16 units bf16-mixed may be slower than float32).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from tensordict import TensorDict

import functional_ast as fa
from functional_ast import io, strategies
from functional_ast.core.precision import PRECISIONS
from functional_ast.models import build_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Variant:
    """One precision's step and state; `run(batches)` trains on them and returns seconds."""

    def __init__(self, precision: str, model: str, device: torch.device, compile: bool):
        torch.manual_seed(0)
        net = build_model(model, num_classes=10).to(device)
        tx, strategy = fa.sgd(0.05, momentum=0.9), strategies.full()
        self.state = fa.init_state(net, tx, strategy, key=0, device=device)
        self.step = fa.make_train_step(net, fa.cross_entropy, tx, strategy, compile=compile, precision=precision)
        self.device = device

    def run(self, batches) -> float:
        _sync(self.device)
        start = time.perf_counter()
        for batch in batches:
            self.state, metrics = self.step(self.state, batch)
        float(metrics["loss"])
        _sync(self.device)
        return time.perf_counter() - start


def measure(precisions: list[str], *, model: str, device: torch.device, batch_size: int, steps: int, repeats: int,
            compile: bool) -> dict:
    """{precision: {"images_per_s": median, "ratio": median ratio to "32", "ratio_spread": (min, max)}}."""
    g = torch.Generator().manual_seed(0)
    batches = [TensorDict(image=torch.randn(batch_size, 3, 32, 32, generator=g),
                             label=torch.randint(0, 10, (batch_size,), generator=g),
                             batch_size=[batch_size]).to(device) for _ in range(steps)]
    names = ["32"] + [p for p in precisions if p != "32"]
    variants = {p: Variant(p, model, device, compile) for p in names}
    for v in variants.values():  # warm-up: compile, caches, the FLOP count
        v.run(batches[:2])
    rates: dict[str, list[float]] = {p: [] for p in names}
    for _ in range(repeats):
        for p, v in variants.items():
            rates[p].append(batch_size * steps / v.run(batches))
    out = {}
    for p in names:
        ratios = [r / base for r, base in zip(rates[p], rates["32"])]
        out[p] = dict(images_per_s=statistics.median(rates[p]), ratio=statistics.median(ratios),
                      ratio_spread=(min(ratios), max(ratios)))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="6 repeats of 2-step blocks at batch 64 (a minute or two)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="cnn")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--compile", action="store_true", help="torch.compile the step's scoring pass and update")
    p.add_argument("--precisions", default="bf16-mixed", help=f"comma-separated, of {', '.join(PRECISIONS)}")
    p.add_argument("--json", default="precision_speed.json")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    batch_size = args.batch_size or (64 if args.quick else 128)
    steps, repeats = args.steps or (2 if args.quick else 5), args.repeats or (6 if args.quick else 15)
    precisions = [s for s in args.precisions.split(",") if s]
    for name in precisions:
        if name not in PRECISIONS:
            p.error(f"--precisions: {name!r} is not one of {', '.join(PRECISIONS)}")
    results = measure(precisions, model=args.model, device=device, batch_size=batch_size, steps=steps,
                      repeats=repeats, compile=args.compile)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"# {args.model}, batch {batch_size}, {'compiled' if args.compile else 'eager'}, {device.type} ({card}), "
          f"torch {torch.__version__}, {repeats} repeats of {steps} steps, interleaved")
    for name, r in results.items():
        if name != "32":
            lo, hi = r["ratio_spread"]
            print(f"{name}/32 = {r['ratio']:.3f}  (per-repeat ratios {lo:.3f}-{hi:.3f}; "
                  f"{r['images_per_s']:.0f} vs {results['32']['images_per_s']:.0f} images/s)")
    io.atomic_write_json(args.json, dict(device=device.type, card=card, model=args.model, batch_size=batch_size,
                                         compiled=args.compile, torch=torch.__version__, results=results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
