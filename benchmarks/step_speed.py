"""Step speed: the functional step against a plain PyTorch loop, measured in one run.

    python -m benchmarks.step_speed [--quick] [--device cpu|cuda] [--malloc-fixed] [--json PATH]

Gated variants (random, sundew, stale, prioritized at a 10% rate) run as the CLI runs them:
each step selects from a pool of batch-size / rate samples (1280) and trains about one
batch of them; their images/s count every image of the pool.

Every variant but functional_channels_last (the step with `channels_last=True`, NHWC images) keeps
the images NCHW, as the trainer does off a CPU. Variants run interleaved (round-robin, repeated) on
the same in-memory data so that machine noise hits them alike; each reports median images/s and
its spread, and the page faults per step (minor faults of the process while that variant ran). Prints one
line per ratio (e.g. `functional_eager/plain_eager = 0.97`; the median over the repeats of the two variants'
ratio within one repeat, so that one block hit by noise moves one pair, not a median), the share of a gated
step spent outside the model's forward/backward (from torch.profiler scopes), the
number of compiled graphs, and peak memory per variant (each in its own process).

On CPU the variants share one glibc heap, whose dynamic mmap/trim thresholds follow
the allocations of every variant: one variant's pattern can make the next fault in
fresh pages for its activations every step (measured here: up to 20,000 faults and
a quarter of a cnn step). `--malloc-fixed` fixes both thresholds (mallopt) for the
whole run, so that no variant pays for another's allocations; the default leaves the
allocator as a user's process has it. Compare ratios only between runs alike in this.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch
from tensordict import TensorDict
from torch.profiler import record_function

import functional_ast as fa
from functional_ast import io, strategies
from functional_ast.core import sampling
from functional_ast.models import build_model

RATE = 0.1
VARIANTS = ("plain_eager", "functional_eager", "functional_channels_last", "functional_compiled", "random", "sundew",
            "stale", "prioritized")
GATED = ("random", "sundew", "stale", "prioritized")


def make_data(n: int, batch: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 3, 32, 32, generator=g).to(device), torch.randint(0, 10, (n,), generator=g).to(device))


def fix_malloc() -> bool:
    """glibc only: fixed mmap (32 MiB) and trim (1 GiB) thresholds, which turns off their dynamic
    adjustment; freed memory then stays in the heap instead of being returned and faulted in again."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):
        return False


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    """One variant: `run(steps)` performs that many training steps and returns seconds."""

    def __init__(self, name: str, args: argparse.Namespace, images: torch.Tensor, labels: torch.Tensor):
        self.name, self.args, self.images, self.labels = name, args, images, labels
        self.device = images.device
        self.n = images.shape[0]
        self.cursor = 0
        self.sampler = None
        self.faults_per_step: list[float] = []
        self.pool = round(args.batch_size / RATE) if name in GATED else args.batch_size  # images per step
        model = build_model(args.model, num_classes=10).to(self.device)
        if name == "plain_eager":
            self.model = model.train()
            self.opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
            return
        tx = fa.sgd(0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
        name_of_strategy = name if name in GATED else "full"
        strategy = strategies.build(name_of_strategy, strategies.Context(num_samples=self.n, target_rate=RATE,
                                                                           pool_size=self.pool))
        self.strategy = strategy
        self.state = fa.init_state(model, tx, strategy, key=0, device=self.device)
        self.step = fa.make_train_step(model, fa.cross_entropy, tx, strategy, compile=name == "functional_compiled",
                                       score_chunk_size=args.batch_size,
                                       channels_last=name == "functional_channels_last")
        self.sampler = strategy.sampling  # prioritised draws: a pure function of the state's table and a key

    def _batch(self) -> TensorDict:
        b = self.pool
        if self.cursor + b > self.n:
            self.cursor = 0
        index = torch.arange(self.cursor, self.cursor + b, device=self.device)
        self.cursor += b
        if self.sampler is not None:
            key = fa.prng.key(self.cursor)
            index, weight = sampling.prioritized_draw(self.state["selector"]["priority"], self.sampler.k,
                                                      self.sampler.alpha, self.sampler.beta, key)
            index = index.to(self.device)
            return TensorDict(image=self.images[index], label=self.labels[index], index=index,
                              weight=weight.to(self.device), batch_size=[index.shape[0]])
        return TensorDict(image=self.images[index], label=self.labels[index], index=index, batch_size=[b])

    def one_step(self) -> None:
        batch = self._batch()
        with record_function("bench::step"):
            self._train(batch)

    def _train(self, batch: TensorDict) -> None:
        if self.name == "plain_eager":
            self.opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(self.model(batch["image"]), batch["label"])
            loss.backward()
            self.opt.step()
            return
        self.state, metrics = self.step(self.state, batch)

    def run(self, steps: int) -> float:
        _sync(self.device)
        faults = _minor_faults()
        start = time.perf_counter()
        for _ in range(steps):
            self.one_step()
        _sync(self.device)
        elapsed = time.perf_counter() - start
        self.faults_per_step.append((_minor_faults() - faults) / steps)
        return elapsed


def breakdown(runner: Runner, steps: int) -> dict[str, float]:
    """Share of the step's time (batch preparation excluded) per profiler scope (fa::*), plus the
    rest of the step ('bookkeeping': key split, state assembly, metrics, the sampler update)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if runner.device.type == "cuda" else [])
    _sync(runner.device)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            runner.one_step()
        _sync(runner.device)
    scopes: dict[str, float] = {}
    for e in prof.key_averages():  # on CUDA a scope is listed twice (host, and a GPU annotation with no host time)
        if e.key.startswith(("fa::", "bench::")):
            scopes[e.key] = max(scopes.get(e.key, 0.0), e.cpu_time_total)
    total_us = scopes["bench::step"]
    get = scopes.get
    parts = {
        "scoring_forward": get("fa::score", 0.0),
        "significance": get("fa::significance", 0.0),
        "gate": get("fa::gate", 0.0),
        "controller": get("fa::controller", 0.0),
        "gather": get("fa::gather", 0.0),
        "model_update": get("fa::update", 0.0),
        "observe": get("fa::observe", 0.0),
        "work_accounting": get("fa::work", 0.0),
    }
    inside = get("fa::select", 0.0) + get("fa::gather", 0.0) + get("fa::update", 0.0) + get("fa::observe", 0.0) \
        + get("fa::work", 0.0)
    select_rest = get("fa::select", 0.0) - parts["scoring_forward"] - parts["significance"] - parts["gate"] \
        - parts["controller"]
    parts["bookkeeping"] = max(0.0, total_us - inside) + max(0.0, select_rest)
    shares = {k: v / total_us for k, v in parts.items()}
    # Inside model_update (eager step only): the optimiser and the non-finite guard.
    shares["of_update"] = {k: get(f"fa::{k}", 0.0) / total_us for k in ("optimizer", "guard")}
    return shares


def peak_memory(variant: str, args: argparse.Namespace) -> dict:
    """Run `variant` in a fresh process; returns its peak memory growth over the set-up state."""
    cmd = [sys.executable, "-m", "benchmarks.step_speed", "--memory-of", variant, "--device", args.device,
           "--model", args.model, "--batch-size", str(args.batch_size), "--samples", str(args.samples)]
    cmd += ["--malloc-fixed"] if args.malloc_fixed else []
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_child(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    images, labels = make_data(args.samples, args.batch_size, device)
    if args.memory_of.startswith("grad_norm"):
        chunk = None if args.memory_of == "grad_norm_all" else int(args.memory_of.rsplit("_", 1)[1])
        runner = Runner("functional_eager", args, images, labels)
        model = build_model(args.model, num_classes=10).to(device)
        strategy = fa.sundew(RATE, significance=fa.significance.grad_norm, needs=("loss", "grad_norm"))
        tx = fa.sgd(0.05, momentum=0.9)
        runner.state = fa.init_state(model, tx, strategy, device=device)
        runner.step = fa.make_train_step(model, fa.cross_entropy, tx, strategy, grad_norm_keys="all",
                                         grad_norm_chunk_size=chunk)
    else:
        runner = Runner(args.memory_of, args, images, labels)
    runner.one_step()  # first step: FLOP measurement, lazy allocations
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    base_rss = _rss_mb()
    runner.run(3)
    if device.type == "cuda":
        result = {"peak_mb": (torch.cuda.max_memory_allocated(device) - base) / 2**20, "kind": "cuda allocated"}
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result = {"peak_mb": max(0.0, peak - base_rss), "kind": "resident set growth over set-up"}
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.step_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="8 repeats of 2-step blocks (about a minute on 2 CPU cores)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="cnn")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--samples", type=int, default=4096, help="in-memory synthetic samples")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="steps per timed block")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--malloc-fixed", action="store_true",
                   help="fix glibc's mmap/trim thresholds for the run, so that variants do not page-fault for each "
                        "other's allocations (see the module docstring)")
    p.add_argument("--json", default=None, help="write the figures here (default: print them only)")
    p.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    pool = round(args.batch_size / RATE)
    if args.samples < pool:  # a selective step draws a pool of batch-size / rate distinct samples
        print(f"error: --samples {args.samples} is fewer than one selection pool ({pool} = --batch-size "
              f"{args.batch_size} / rate {RATE}); pass --samples {pool} or more", file=sys.stderr)
        return 2
    malloc_fixed = fix_malloc() if args.malloc_fixed else False
    if args.malloc_fixed and not malloc_fixed:
        print("--malloc-fixed: mallopt is not available here (not glibc); allocator left as it is", file=sys.stderr)
    if args.memory_of:
        memory_child(args)
        return 0
    repeats = args.repeats or (8 if args.quick else 7)  # quick: many short rounds, so that the paired ratios
    steps = args.steps or (2 if args.quick else 20)     # see the machine's drift less
    device = torch.device(args.device)
    torch.manual_seed(0)
    images, labels = make_data(args.samples, args.batch_size, device)
    names = [v for v in VARIANTS if not (args.no_compile and v == "functional_compiled")]
    runners = {name: Runner(name, args, images, labels) for name in names}

    graphs_after_warmup = None
    for name, runner in runners.items():  # warm-up: FLOP measurement, compilation, allocator
        runner.run(3 if name != "functional_compiled" else 6)
    if "functional_compiled" in runners:
        graphs_after_warmup = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    for runner in runners.values():
        runner.faults_per_step.clear()

    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            times[name].append(runners[name].pool * steps / runners[name].run(steps))
    graphs_end = torch._dynamo.utils.counters["stats"]["unique_graphs"] if graphs_after_warmup is not None else None

    result = {"device": str(device), "machine": platform.processor() or platform.machine(),
              "cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "model": args.model,
              "batch_size": args.batch_size, "rate": RATE, "repeats": repeats, "steps_per_block": steps,
              "malloc_fixed": malloc_fixed,
              "images_per_s": {n: {"median": statistics.median(v), "min": min(v), "max": max(v)}
                               for n, v in times.items()},
              "page_faults_per_step": {n: statistics.median(runners[n].faults_per_step) for n in names}}
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
    def ratio(a: str, b: str) -> float:  # paired: the median over repeats of a's images/s over b's in that repeat
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    ratios = {"functional_eager/plain_eager": ratio("functional_eager", "plain_eager"),
              "functional_channels_last/functional_eager": ratio("functional_channels_last", "functional_eager")}
    if "functional_compiled" in times:
        ratios["functional_compiled/functional_eager"] = ratio("functional_compiled", "functional_eager")
        ratios["functional_compiled/plain_eager"] = ratio("functional_compiled", "plain_eager")
    for name in GATED:
        ratios[f"{name}/functional_eager"] = ratio(name, "functional_eager")
    result["ratios"] = ratios
    result["compiled_graphs"] = {"after_warmup": graphs_after_warmup, "at_end": graphs_end}
    print(f"device {result['device']} ({result.get('gpu', result['machine'])}), model {args.model}, batch "
          f"{args.batch_size}, {repeats} interleaved repeats x {steps} steps, allocator "
          f"{'thresholds fixed (--malloc-fixed)' if malloc_fixed else 'as is'}", flush=True)
    for name, v in result["images_per_s"].items():
        print(f"  {name:<22} {v['median']:8.1f} images/s  (min {v['min']:.1f}, max {v['max']:.1f})  "
              f"{result['page_faults_per_step'][name]:8.0f} page faults/step")
    for key, value in ratios.items():
        print(f"{key} = {value:.2f}", flush=True)
    if args.json:
        io.atomic_write_json(args.json, result)  # the throughput figures survive a cut in the slower parts below
    result["breakdown"] = {name: breakdown(runners[name], steps) for name in GATED}
    memory_variants = ["plain_eager", "functional_eager", "random", "sundew", "stale", "prioritized",
                       "grad_norm_all", "grad_norm_chunk_16"]
    result["peak_memory"] = {v: peak_memory(v, args) for v in memory_variants}
    base_mem = max(result["peak_memory"]["plain_eager"]["peak_mb"], 1e-9)
    for v in ("functional_eager", *GATED):
        ratios[f"memory {v}/plain_eager"] = result["peak_memory"][v]["peak_mb"] / base_mem

    for key, value in ratios.items():
        if key.startswith("memory "):
            print(f"{key} = {value:.2f}")
    for name, parts in result["breakdown"].items():
        outside = 1 - parts["model_update"] - parts["scoring_forward"]
        shares = ", ".join(f"{k} {100 * v:.1f}%" for k, v in parts.items() if k != "of_update")
        within = ", ".join(f"{k} {100 * v:.1f}%" for k, v in parts["of_update"].items())
        print(f"{name} selection overhead (outside model fwd/bwd) = {100 * outside:.1f}%  [{shares}; "
              f"model_update includes {within}]")
    if graphs_end is not None:
        print(f"compiled graphs: {graphs_after_warmup} after warm-up, {graphs_end} at end "
              f"({graphs_end - graphs_after_warmup} recompiles during timing)")
    for v, m in result["peak_memory"].items():
        print(f"peak memory {v:<20} {m['peak_mb']:8.1f} MB ({m['kind']})")
    if args.json:
        io.atomic_write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
