"""How a step's samples are drawn: epoch order, selection pools and prioritised draws.

Pure functions of (seed, epoch, position) and the selector state: there is no sampler object
to keep in step with the state, so a resumed run re-draws exactly the batches it would have
drawn. A draw returns dataset indices only; the trainer gathers (and augments) the images
of just those samples, so a strategy that selects from indices alone (`Strategy.index_only`,
or a prioritised draw) never pays for the images of samples it does not train.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import torch
from tensordict import TensorDict
from torch import Tensor

from functional_ast.core import prng
from functional_ast.core.selection import Strategy, remembered_mean


class Draw(NamedTuple):
    """Dataset indices to gather, their loss weights (or None), whether they are already the trained set (True)
    or a pool the step still selects from by scores (False); for an index-only selection, the selector state
    after it (a gate and controller move), its metrics and the selected positions in the pool (ascending)."""

    index: Tensor
    weight: Tensor | None
    selected: bool
    selector: TensorDict | None = None
    info: TensorDict | None = None
    positions: Tensor | None = None


def stream_seed(seed: int, epoch: int, batch: int = -1, stream: int = 0) -> int:
    """A 63-bit seed from a hash of (seed, epoch, batch, stream): streams that never collide."""
    parts = (seed, epoch) if batch < 0 else ((seed, epoch, batch) if stream == 0 else (seed, epoch, batch, stream))
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def epoch_order(num_samples: int, seed: int, epoch: int) -> Tensor:
    """The shuffled order of an epoch (as `data.iterate_batches` uses): a function of (seed, epoch) alone."""
    return torch.randperm(num_samples, generator=torch.Generator().manual_seed(stream_seed(seed, epoch)))


def prioritized_draw(priority: Tensor, k: int, alpha: float, beta: float, key: Tensor) -> tuple[Tensor, Tensor]:
    """k indices drawn with replacement with P(i) ~ max(priority_i, 1e-6) ** alpha, and their importance
    weights (P(i) / min P) ** -beta (at most 1), as prioritised replay defines them; pure in (priority, key)."""
    p = priority.detach().double().clamp_min(1e-6).pow(alpha)
    cdf = p.cumsum(0)
    u = prng.uniform(key, k).to(cdf.device).double() * cdf[-1]
    index = torch.searchsorted(cdf, u, right=True).clamp(max=p.shape[0] - 1)
    weight = (p[index] / p.min()).pow(-beta)
    return index, weight.float()


def draw_key(seed: int, epoch: int, batch: int) -> Tensor:
    """The key of the draw of batch `batch` of `epoch` (a prioritised draw, or an index-only rule's selection from
    its pool): a function of (seed, epoch, batch) alone, apart from the state's own key."""
    return prng.key(stream_seed(seed, epoch, batch, stream=1))


def select_pool(strategy: Strategy, selector: TensorDict, pool: Tensor, key: Tensor) -> Draw:
    """The samples an index-only `strategy` selects from `pool` (dataset indices) with `key`, on the selector's
    device: their indices in pool order, loss weights, the selector state after the selection and its metrics."""
    device = selector.device or next((t.device for t in selector.values(True, True)), pool.device)  # the tables'
    candidates = TensorDict(index=pool.to(device), batch_size=[pool.shape[0]], device=device)
    picked = strategy.select(selector, candidates, key.to(device), _no_scores)
    positions = picked.index if picked.index is not None else picked.mask.nonzero()[:, 0]
    weight = None if picked.weight is None else picked.weight[positions]
    return Draw(pool[positions.to(pool.device)], weight, True, picked.state, picked.info, positions)


def draw(strategy: Strategy, selector: TensorDict, order: Tensor, *, batch: int, size: int, seed: int, epoch: int,
         all_data: bool) -> Draw:
    """Batch `batch` of `epoch`: the slice [batch*size, (batch+1)*size) of `order` (all-data epochs, and pools
    for a scoring strategy); the samples an index-only strategy selects from that pool; or `rate * size`
    prioritised draws over the whole data set for a sampling strategy."""
    key = draw_key(seed, epoch, batch)
    if strategy.sampling is not None and not all_data:
        index, weight = prioritized_draw(selector["priority"], strategy.sampling.k, strategy.sampling.alpha,
                                         strategy.sampling.beta, key)
        # The step stands for a nominal batch of the epoch: its loss over all samples is the remembered table's mean.
        info = TensorDict(loss_seen=remembered_mean(selector["priority"], selector["seen"]))
        return Draw(index.to(order.device), weight, True, info=info)
    pool = order[batch * size:(batch + 1) * size]
    if all_data or not strategy.index_only:
        return Draw(pool, None, all_data)
    return select_pool(strategy, selector, pool, key)


def _no_scores() -> TensorDict:
    raise RuntimeError("an index-only strategy asked for scores; set Strategy.index_only=False for it")
