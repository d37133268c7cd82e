"""Should the data path use torchrl? Its memmap storage and prioritised sampler against this package's own.

    pip install torchrl==0.14.1 && python -m benchmarks.torchrl_choice [--sizes 50000,1000000,10000000] [--json PATH]

Two jobs torchrl's replay buffers are built for, each timed interleaved with this package's way of doing it,
on the same data, in one run (medians of `--repeats` alternating rounds; ratios are torchrl / ours):

1. Prioritised draws over n samples (windows of a corpus): draw k indices with P(i) ~ priority^alpha and their
   importance weights, then write k new priorities. Ours is `core.sampling.prioritized_draw` (a cumulative sum
   and a binary search over the priority tensor held in the state TensorDict: O(n) a step, pure, resumed by
   loading the state); torchrl's `PrioritizedSampler` keeps a C++ sum-tree (O(k log n) a step, a mutable object
   beside the state, saved through its own `state_dict`).
2. Gathering k windows of `context + 1` bytes from a uint8 memmap. Ours is a tensordict `MemoryMappedTensor`
   of the corpus gathered by window offsets; torchrl's `LazyMemmapStorage` stores the windows themselves
   ([n, context + 1], written once) and gathers rows.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from tensordict import MemoryMappedTensor, TensorDict

from functional_ast import io
from functional_ast.core import prng
from functional_ast.core.sampling import prioritized_draw


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(ours, theirs, repeats: int) -> tuple[float, float]:
    """Median seconds of `ours()` and `theirs()`, called alternately `repeats` times each (after one warm-up)."""
    ours(), theirs()
    a, b = [], []
    for _ in range(repeats):
        a.append(_timed(ours))
        b.append(_timed(theirs))
    return statistics.median(a), statistics.median(b)


def draws(n: int, k: int, repeats: int, alpha: float = 0.6, beta: float = 0.4) -> tuple[float, float]:
    """Seconds per step (draw k + update k priorities) of ours and torchrl's sampler over n samples."""
    from torchrl.data import LazyTensorStorage, PrioritizedSampler

    g = torch.Generator().manual_seed(0)
    priority = torch.rand(n, generator=g) + 0.1
    state = {"priority": priority.clone(), "key": prng.key(0)}

    def ours():
        key, sub = prng.split(state["key"])
        index, _weight = prioritized_draw(state["priority"], k, alpha, beta, sub)
        state["priority"] = state["priority"].index_put((index,), torch.rand(k, generator=g) + 0.1)
        state["key"] = key

    storage = LazyTensorStorage(n)
    storage.set(torch.arange(n), TensorDict(i=torch.arange(n), batch_size=[n]))
    sampler = PrioritizedSampler(n, alpha=alpha, beta=beta)
    sampler.update_priority(torch.arange(n), priority)

    def theirs():
        index, _info = sampler.sample(storage, k)
        sampler.update_priority(index, torch.rand(k, generator=g) + 0.1)

    return interleaved(ours, theirs, repeats)


def gathers(n: int, k: int, context: int, repeats: int, folder: Path) -> tuple[float, float]:
    """Seconds per gather of k windows of context + 1 bytes: ours (offsets into the corpus memmap) and torchrl's
    (rows of a LazyMemmapStorage of the windows)."""
    from torchrl.data import LazyMemmapStorage

    g = torch.Generator().manual_seed(0)
    corpus = MemoryMappedTensor.empty((n * context + 1,), dtype=torch.uint8, filename=folder / "corpus.memmap")
    for lo in range(0, corpus.numel(), 1 << 24):  # written in chunks, never whole in memory
        hi = min(lo + (1 << 24), corpus.numel())
        corpus[lo:hi] = torch.randint(0, 256, (hi - lo,), generator=g, dtype=torch.uint8)
    span = torch.arange(context + 1)

    storage = LazyMemmapStorage(n, scratch_dir=folder / "torchrl")
    for lo in range(0, n, 1 << 14):
        hi = min(lo + (1 << 14), n)
        rows = corpus[(torch.arange(lo, hi)[:, None] * context + span).reshape(-1)].view(hi - lo, context + 1)
        storage.set(torch.arange(lo, hi), TensorDict(tokens=rows, batch_size=[hi - lo]))

    def pick():
        return torch.randint(0, n, (k,), generator=g)

    def ours():
        corpus[(pick()[:, None] * context + span).reshape(-1)].view(k, context + 1).long()

    def theirs():
        storage.get(pick())["tokens"].long()

    return interleaved(ours, theirs, repeats)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.torchrl_choice", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="50000,1000000,10000000", help="numbers of samples (windows), comma-separated")
    p.add_argument("--k", type=int, default=384, help="samples drawn a step (the default pool of 1280 at 30%%)")
    p.add_argument("--context", type=int, default=128, help="window length in bytes, for the gather")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--gather-max", type=int, default=1_000_000, help="largest n whose windows are written for the "
                   "gather (torchrl's storage holds every window: n * (context + 1) bytes on disk)")
    p.add_argument("--json", default=None, help="also write the rows here (the committed figures' source)")
    args = p.parse_args(argv)
    try:
        import torchrl
    except ImportError:
        print("error: torchrl is not installed; run `pip install torchrl==0.14.1` first", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"torch {torch.__version__}, torchrl {torchrl.__version__}, {torch.get_num_threads()} threads, "
          f"k={args.k}, context={args.context}, {args.repeats} interleaved repeats")
    print("| job | n | ours ms | torchrl ms | torchrl / ours |\n|---|---|---|---|---|")
    rows = []

    def row(job: str, n: int, ours: float, theirs: float) -> None:
        rows.append({"job": job, "n": n, "ours_ms": ours * 1e3, "torchrl_ms": theirs * 1e3, "ratio": theirs / ours})
        print(f"| {job} | {n:,} | {ours * 1e3:.2f} | {theirs * 1e3:.2f} | {theirs / ours:.2f} |")

    for n in sizes:
        row("prioritised draw + update", n, *draws(n, args.k, args.repeats))
    for n in [s for s in sizes if s <= args.gather_max]:
        with tempfile.TemporaryDirectory() as folder:
            row("gather windows from memmap", n, *gathers(n, args.k, args.context, args.repeats, Path(folder)))
    if args.json:
        io.atomic_write_json(args.json, {
            "machine": platform.processor() or platform.machine(), "cpu_threads": torch.get_num_threads(),
            "torch": torch.__version__, "torchrl": torchrl.__version__, "k": args.k, "context": args.context,
            "repeats": args.repeats, "rows": rows})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
