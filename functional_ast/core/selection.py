"""The selection contract: what a rule gives the step (`Strategy`) and what its `select` returns (`Selection`).

A Strategy is three pure functions plus static facts:
`init(device) -> selector_state`;
`select(selector_state, batch, key, score) -> Selection`, where `score()` runs the scoring pass on the batch with
the current parameters and returns a TensorDict of per-sample quantities ("loss", the task's input "statistic",
and "grad_norm" when `needs` asks for it);
`observe(selector_state, batch, trained, losses) -> selector_state`, called after the update with the batch
positions of the trained samples (ascending) and the per-sample losses the training forward produced for them
(free information: no extra forward), e.g. to refresh a remembered-loss table.
A strategy that never calls `score` does no scoring work; the ones that do say so in `info["n_scored"]`, which
the work accounting charges.
`info["loss_seen"]` (optional) is the rule's mean loss over all the samples the step saw; without it the step
takes the mean of the scored losses if `score` ran, else the trained samples' loss (`step`'s `loss_seen`).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from tensordict import TensorDict
from torch import Tensor


class Selection(NamedTuple):
    """What `select` returns: mask [B] bool, optional loss weights [B], new state, metrics, and, when the
    number selected is fixed by the batch size alone, `index`: the selected positions in ascending order
    (the step then gathers the sub-batch with a static shape and no host sync, instead of `mask.nonzero()`)."""

    mask: Tensor
    weight: Tensor | None
    state: TensorDict
    info: TensorDict
    index: Tensor | None = None


def unchanged(state: TensorDict, batch: TensorDict, trained: Tensor, losses: Tensor) -> TensorDict:
    """The `observe` of a rule that remembers nothing."""
    return state


class PrioritySampling(NamedTuple):
    """Batches are drawn by prioritised sampling (`sampling.prioritized_draw`), not by the epoch order:
    each step draws `k` samples standing for a nominal batch of `batch_size` of the epoch."""

    rate: float
    alpha: float
    beta: float
    batch_size: int

    @property
    def k(self) -> int:
        return max(1, round(self.rate * self.batch_size))


class Strategy(NamedTuple):
    """A named (init, select, observe) triple; `needs` lists what `score()` must compute;
    `sampling` is set when the batches themselves must come from a prioritised sampler;
    `index_only` says that `select` reads only the batch's "index" (never inputs or scores), so the trainer
    selects from a pool of indices before it gathers any sample (`sampling.draw`)."""

    name: str
    init: Callable[..., TensorDict]
    select: Callable[[TensorDict, TensorDict, Tensor, Callable[[], TensorDict]], Selection]
    needs: tuple[str, ...] = ()
    trains_all: bool = False
    observe: Callable[[TensorDict, TensorDict, Tensor, Tensor], TensorDict] = unchanged
    sampling: PrioritySampling | None = None
    index_only: bool = False


def no_scoring(batch: TensorDict) -> Tensor:
    """`info["n_scored"]` of a selection that ran no scoring forward."""
    return torch.zeros((), dtype=torch.int64, device=batch.device)


def remembered_mean(loss: Tensor, seen: Tensor) -> Tensor:
    """A remembered-loss rule's `info["loss_seen"]`: the mean of the remembered losses of the samples seen before
    (NaN where none was: the step then takes the trained loss), sync-free."""
    return torch.where(seen, loss, torch.zeros_like(loss)).sum() / seen.sum()


def seen_loss(given: Tensor | None, scored: list[TensorDict], trained_loss: Tensor) -> Tensor:
    """The step's loss over all samples seen: the rule's own figure (remembered losses; where it has none, NaN, the
    trained loss), else the mean of the scored pool's fresh losses, else the trained loss (full data: the same; a
    uniform subset: its estimate)."""
    if given is not None:
        given = given.to(trained_loss.dtype)
        return torch.where(given.isnan(), trained_loss, given)
    if scored:
        return scored[0]["loss"].mean().to(trained_loss.dtype)
    return trained_loss


def with_selection_info(metrics: TensorDict, info: TensorDict) -> TensorDict:
    """A step's metrics with those of the selection made before it (`sampling.draw`'s, an index-only rule's):
    the selection's win, its `loss_seen` as `seen_loss` takes it."""
    merged = {**dict(metrics.items()), **dict(info.items())}
    if "loss_seen" in info.keys():
        merged["loss_seen"] = seen_loss(info["loss_seen"], [], metrics["loss"])
    return TensorDict(merged, device=metrics.device)


def mask_of(index: Tensor, n: int) -> Tensor:
    """The [n] bool mask with `index` set."""
    return torch.zeros(n, dtype=torch.bool, device=index.device).index_fill(0, index, True)


def all_data(strategy: Strategy) -> Strategy:
    """Train on every sample of the batch (weighted by its "weight", if it has one), leave the selector's
    controller idle, but let `strategy` observe the losses: the warm-up and cool-down epochs (a remembered-loss
    table fills during warm-up), and the step over samples that `sampling.draw` already selected."""

    def select(state, batch, key, score):
        mask = torch.ones(batch.batch_size[0], dtype=torch.bool, device=batch.device)
        return Selection(mask, batch.get("weight", None), state, TensorDict(n_scored=no_scoring(batch)))

    return Strategy(f"all_data({strategy.name})", strategy.init, select, trains_all=True,
                    observe=strategy.observe)
