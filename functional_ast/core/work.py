"""Work accounting: the FLOPs and samples a step actually executed (pure functions).

Per-sample costs are measured once per input shape with
`torch.utils.flop_counter.FlopCounterMode` on the meta device (no compute), for
the very functions the step runs: the scoring pass and the training
forward+backward. Each step then adds the work it did (scoring forwards on every
scored sample + forward/backward on the trained ones) and the counterfactual of
full training on the same batch. `saved_pct` is derived from those FLOPs only;
no joules are claimed here (a meter reading belongs beside it, labelled as such).
Work state: TensorDict of int64 counters (joules, where a meter exists, are `meter`'s).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from tensordict import TensorDict
from torch.utils.flop_counter import FlopCounterMode

_COUNTERS = ("flops_spent", "flops_full", "samples_seen", "samples_scored", "samples_trained")


@dataclass(frozen=True)
class WorkCosts:
    """FLOPs per sample of the scoring pass and of one training forward+backward."""

    score_flops: int
    train_flops: int


def count_flops(fn: Callable[..., object], *args: object) -> int:
    """Total FLOPs `fn(*args)` executes, as counted by FlopCounterMode."""
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return int(counter.get_total_flops())


def flops_per_sample(fn: Callable[[int], object], batch_size: int = 8) -> int:
    """FLOPs per sample of `fn(n)`, which runs a batch of n; checks the count is linear in n.

    A count that is not linear raises, except for one known case: under vmap, convolution
    weight gradients run as grouped convolutions, which FlopCounterMode counts as if every
    group saw every sample (quadratic in n). Then the single-sample count is used, with a warning.
    """
    full, half = count_flops(fn, batch_size), count_flops(fn, batch_size // 2)
    per_sample, rest = divmod(full, batch_size)
    if not rest and full == 2 * half:
        return per_sample
    single = count_flops(fn, 1)
    if full > 2 * half and full > batch_size * single:
        warnings.warn(f"FLOP count grows faster than the batch ({half} at {batch_size // 2}, {full} at "
                      f"{batch_size}), as vmapped convolution gradients are counted; using the single-sample "
                      f"count ({single}) per sample", stacklevel=2)
        return single
    raise ValueError(f"FLOPs are not linear in the batch size ({half} at {batch_size // 2}, "
                     f"{full} at {batch_size}); per-sample costs would be wrong")


def init(device: torch.device | str | None = None) -> TensorDict:
    """Zeroed counters."""
    return TensorDict({name: torch.zeros((), dtype=torch.int64, device=device) for name in _COUNTERS})


def account(state: TensorDict, costs: WorkCosts, batch_size: int, n_scored: torch.Tensor,
            n_trained: torch.Tensor, other_flops: torch.Tensor | None = None) -> tuple[TensorDict, TensorDict]:
    """Add one step's work; returns (new counters, step metrics incl. step and cumulative saved_pct).
    `other_flops`: FLOPs the strategy executed outside the main model (a proxy model's, say)."""
    spent = n_scored.to(torch.int64) * costs.score_flops + n_trained.to(torch.int64) * costs.train_flops
    if other_flops is not None:
        spent = spent + other_flops.to(torch.int64)
    full = torch.full_like(spent, batch_size * costs.train_flops)
    new = TensorDict(
        flops_spent=state["flops_spent"] + spent,
        flops_full=state["flops_full"] + full,
        samples_seen=state["samples_seen"] + batch_size,
        samples_scored=state["samples_scored"] + n_scored.to(torch.int64),
        samples_trained=state["samples_trained"] + n_trained.to(torch.int64),
    )
    metrics = TensorDict(step_flops=spent, step_saved_pct=saved_pct(spent, full),
                         saved_pct=saved_pct(new["flops_spent"], new["flops_full"]))
    return new, metrics


def saved_pct(spent: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """100 * (1 - spent / full); 0 when nothing was counted. Negative if more than full was spent."""
    full_f = full.to(torch.float64)
    return torch.where(full > 0, 100.0 * (1.0 - spent.to(torch.float64) / full_f.clamp_min(1.0)),
                       torch.zeros_like(full_f))


DEFAULT_JOULES_PER_GFLOP = 1.0  # assumed; CPUs spend roughly 0.1-10 J per GFLOP in practice


def estimate_joules(flops: int, joules_per_gflop: float = DEFAULT_JOULES_PER_GFLOP) -> float:
    """An ESTIMATE, not a measurement: flops / 1e9 * joules_per_gflop."""
    return flops / 1e9 * joules_per_gflop
