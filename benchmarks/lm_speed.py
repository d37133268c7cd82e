"""Language-model step speed: tokens/s of the functional step against a plain PyTorch loop of the same gpt.

    python -m benchmarks.lm_speed [--quick] [--device cpu|cuda] [--compile] [--json lm_speed.json]

The functional step is `make_train_step(gpt, language_modelling(), adam(...), full)`; the plain loop is
`loss.backward()` and `torch.optim.AdamW` (same lr, betas, eps, decoupled weight decay), both from the same
initial weights on the same in-memory batches of random bytes. Blocks of steps run round-robin (the order rotates
each repeat), so machine noise hits every variant alike; a ratio is the median over repeats of the two variants'
tokens/s within one repeat, with its spread. `--compile` adds both compiled (`torch.compile` of the plain model,
`compile=True` of the step): compiled against eager. The functional step's profiler scopes (`fa::*`) are
reported as shares of its step, beside the plain loop's forward+backward and optimiser.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch
from tensordict import TensorDict
from torch.profiler import record_function

import functional_ast as fa
from functional_ast import io, strategies
from functional_ast.models import gpt
from functional_ast.tasks import language_modelling

LR, BETAS, EPS, WEIGHT_DECAY = 3e-4, (0.9, 0.95), 1e-8, 0.1
# quick: the text savings benchmark's --quick gpt (some 0.1 s a step on 2 quiet CPU cores); full: a larger one.
SIZES = {"quick": dict(depth=2, width=128, heads=4, context=128, batch_size=32, steps=8, repeats=10),
         "full": dict(depth=4, width=256, heads=8, context=256, batch_size=32, steps=8, repeats=12)}
SCOPES = ("fa::select", "fa::gather", "fa::update", "fa::grad", "fa::optimizer", "fa::guard", "fa::observe",
          "fa::work", "plain::forward_backward", "plain::optimizer")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_batches(n: int, batch_size: int, context: int, device: torch.device, seed: int = 0) -> list[TensorDict]:
    """`n` batches of "tokens" int64 [batch_size, context + 1], uniform random bytes."""
    g = torch.Generator().manual_seed(seed)
    return [TensorDict(tokens=torch.randint(0, 256, (batch_size, context + 1), generator=g),
                       index=torch.arange(i * batch_size, (i + 1) * batch_size), batch_size=[batch_size]).to(device)
            for i in range(n)]


class Variant:
    """One way of training the gpt; `run(batches)` trains one step per batch and returns seconds."""

    def __init__(self, name: str, sizes: dict, device: torch.device):
        self.name, self.device = name, device
        torch.manual_seed(0)  # every variant starts from the same weights
        model = gpt(256, sizes["context"], sizes["depth"], sizes["width"], sizes["heads"]).to(device)
        self.functional = name.startswith("functional")
        if self.functional:
            tx = fa.adam(LR, *BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
            strategy = strategies.full()
            self.state = fa.init_state(model, tx, strategy, key=0, device=device)
            self.step = fa.make_train_step(model, language_modelling(), tx, strategy,
                                           compile=name == "functional_compiled")
        else:
            self.model = model.train()
            self.forward = torch.compile(model) if name == "plain_compiled" else model
            self.opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)

    def one_step(self, batch: TensorDict) -> torch.Tensor:
        if self.functional:
            self.state, metrics = self.step(self.state, batch)
            return metrics["loss"]
        tokens = batch["tokens"]
        with record_function("plain::forward_backward"):
            self.opt.zero_grad(set_to_none=True)
            logits = self.forward(tokens[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
            loss.backward()
        with record_function("plain::optimizer"):
            self.opt.step()
        return loss.detach()

    def run(self, batches: list[TensorDict]) -> float:
        _sync(self.device)
        start = time.perf_counter()
        for batch in batches:
            with record_function("bench::step"):
                loss = self.one_step(batch)
        float(loss)
        _sync(self.device)
        return time.perf_counter() - start

    def params(self) -> dict[str, torch.Tensor]:
        if self.functional:
            return {".".join(k) if isinstance(k, tuple) else k: v for k, v in self.state["params"].items(True, True)}
        return dict(self.model.named_parameters())


def max_param_difference(a: Variant, b: Variant) -> float:
    """The largest |difference| between two variants' parameters (same start, same batches: ~0 if they agree)."""
    pa, pb = a.params(), b.params()
    return max(float((pa[k].detach() - pb[k].detach()).abs().max()) for k in pb)


def breakdown(variant: Variant, batches: list[TensorDict]) -> dict[str, float]:
    """Share of the variant's step time (bench::step) in each profiler scope it has (fa::*, plain::*), and the
    step's milliseconds under the profiler (`step_ms`)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if variant.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        variant.run(batches)
    scopes: dict[str, float] = {}
    for e in prof.key_averages():  # on CUDA a scope is listed twice (host, and a GPU annotation with no host time)
        if e.key in SCOPES or e.key == "bench::step":
            scopes[e.key] = max(scopes.get(e.key, 0.0), e.cpu_time_total)
    total = scopes.pop("bench::step", 0.0) or 1.0
    return dict({k: v / total for k, v in scopes.items()}, step_ms=total / 1000 / len(batches))


def measure(names: list[str], sizes: dict, device: torch.device) -> tuple[dict, dict[str, Variant], list]:
    """Interleaved blocks: {name: [tokens/s per repeat]}, the variants, the batches of one block."""
    batches = make_batches(sizes["steps"], sizes["batch_size"], sizes["context"], device)
    variants = {n: Variant(n, sizes, device) for n in names}
    for v in variants.values():  # warm-up: the FLOP count, compilation, allocator
        v.run(batches[:1] * (3 if "compiled" in v.name else 1))
    tokens = sizes["steps"] * sizes["batch_size"] * sizes["context"]
    rates: dict[str, list[float]] = {n: [] for n in names}
    for r in range(sizes["repeats"]):
        for n in names[r % len(names):] + names[:r % len(names)]:
            rates[n].append(tokens / variants[n].run(batches))
    return rates, variants, batches


def ratio(rates: dict, a: str, b: str) -> dict:
    """a over b, paired within each repeat: median and spread, with the median tokens/s of each."""
    per_repeat = [x / y for x, y in zip(rates[a], rates[b])]
    return dict(ratio=statistics.median(per_repeat), spread=[min(per_repeat), max(per_repeat)],
                tokens_per_s=[statistics.median(rates[a]), statistics.median(rates[b])])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.lm_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="gpt depth 2, width 128, context 128, batch 32; 10 "
                                                        "repeats of 8-step blocks (a minute or two on 2 CPU cores)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", action="store_true", help="also both compiled: compiled against eager")
    for key in ("depth", "width", "heads", "context", "batch_size", "steps", "repeats"):
        p.add_argument(f"--{key.replace('_', '-')}", type=int, default=None)
    p.add_argument("--no-profile", action="store_true", help="skip the profiler breakdown")
    p.add_argument("--json", default="lm_speed.json")
    args = p.parse_args(argv)
    sizes = dict(SIZES["quick" if args.quick else "full"])
    sizes.update({k: getattr(args, k) for k in sizes if getattr(args, k) is not None})
    device = torch.device(args.device)
    names = ["plain_eager", "functional_eager"] + (["plain_compiled", "functional_compiled"] if args.compile else [])
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"gpt depth {sizes['depth']}, width {sizes['width']}, heads {sizes['heads']}, context {sizes['context']}, "
          f"batch {sizes['batch_size']}; AdamW lr {LR}, betas {BETAS}, eps {EPS}, weight decay {WEIGHT_DECAY}; "
          f"{device} ({card}), {torch.get_num_threads()} threads, torch {torch.__version__}; {sizes['repeats']} "
          f"interleaved repeats x {sizes['steps']} steps", flush=True)
    rates, variants, batches = measure(names, sizes, device)
    pairs = [("functional_eager", "plain_eager")]
    if args.compile:
        pairs += [("functional_compiled", "plain_compiled"), ("functional_compiled", "functional_eager"),
                  ("plain_compiled", "plain_eager")]
    ratios = {f"{a}/{b}": ratio(rates, a, b) for a, b in pairs}
    result = dict(device=str(device), card=card, cpu_threads=torch.get_num_threads(), torch=torch.__version__,
                  model=dict(name="gpt", vocab=256, **{k: sizes[k] for k in ("depth", "width", "heads", "context")}),
                  batch_size=sizes["batch_size"], steps_per_block=sizes["steps"], repeats=sizes["repeats"],
                  optimizer=dict(lr=LR, betas=list(BETAS), eps=EPS, weight_decay=WEIGHT_DECAY),
                  tokens_per_s={n: dict(median=statistics.median(v), min=min(v), max=max(v)) for n, v in rates.items()},
                  ratios=ratios, max_param_difference=max_param_difference(variants["functional_eager"],
                                                                           variants["plain_eager"]))
    for key, r in ratios.items():
        print(f"{key} = {r['ratio']:.3f} (tokens/s {r['tokens_per_s'][0]:.0f} vs {r['tokens_per_s'][1]:.0f}; "
              f"per-repeat {r['spread'][0]:.3f}-{r['spread'][1]:.3f})", flush=True)
    print(f"max |parameter difference| functional_eager vs plain_eager after the same steps: "
          f"{result['max_param_difference']:.2e}")
    io.atomic_write_json(args.json, result)  # the ratios survive a cut in the profile below
    if not args.no_profile:
        result["breakdown"] = {n: breakdown(variants[n], batches) for n in ("functional_eager", "plain_eager")}
        for n, shares in result["breakdown"].items():
            print(f"{n} step ({shares['step_ms']:.1f} ms under the profiler) shares: "
                  + ", ".join(f"{k} {100 * v:.1f}%" for k, v in shares.items() if k != "step_ms"))
        io.atomic_write_json(args.json, result)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
