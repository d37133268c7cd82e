"""Data-parallel training on torch.distributed: the same step on every process, its work split.

The contract that keeps every rank identical to one process over the same global batches:
- every rank gets the *same* global batch (the dataset is in memory on each rank; building a
  batch of a few hundred images is cheap next to the model's work) and runs the *same*
  selection on it with the same key, so gate, controller, work counters and stale-score /
  priority tables stay bit-identical on every rank without being sent, and the controller
  sees the global activation rate;
- the model's work is split: each rank scores its contiguous shard of the batch's rows
  (scores are all-gathered, `gather_rows`) and trains an even share of the *selected*
  samples (`shard_bounds` over the selected positions), so ranks stay balanced however the
  gate picks;
- one all-reduce (`reduce_update`) combines the gradients, the loss and BatchNorm buffers,
  weighted by the loss weight each rank trained on, so the update equals the single-process
  update over the same samples (to floating-point reassociation).
Why not DDP: DDP averages gradients with equal weight per rank, which is wrong when ranks
train different numbers of samples, and it wraps a stateful module; one weighted all-reduce
of the gradient TensorDict does the job inside the functional step.
BatchNorm statistics are per rank (each normalises its share), as in DDP without
SyncBatchNorm; running statistics are averaged over the ranks that trained.

Collectives are torch's functional ones (`_functional_collectives`): they return new
tensors (inputs untouched) and torch.compile traces them. `LOCAL` (one process) is the
default everywhere; the step then calls none of this.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
from tensordict import TensorDict
from torch import Tensor

from functional_ast.core.optim import flatten, unflatten


class Collective(NamedTuple):
    """This process's rank, the process count, and the process group (None for LOCAL)."""

    rank: int
    world: int
    group: object = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        """Sum of `t` over ranks (a new tensor)."""
        if self.world == 1:
            return t
        import torch.distributed._functional_collectives as funcol

        return funcol.wait_tensor(funcol.all_reduce(t, "sum", self.group))

    def all_gather_rows(self, rows: Tensor, n_global: int) -> Tensor:
        """Every rank's shard of a global batch of `n_global` rows, concatenated in rank order."""
        if self.world == 1:
            return rows
        import torch.distributed._functional_collectives as funcol

        sizes = [stop - start for start, stop in (shard_bounds(n_global, r, self.world) for r in range(self.world))]
        longest = max(sizes)
        padded = rows if rows.shape[0] == longest else torch.cat(
            [rows, rows.new_zeros((longest - rows.shape[0], *rows.shape[1:]))])
        gathered = funcol.wait_tensor(funcol.all_gather_single(padded.contiguous(), 0, self.group))
        parts = gathered.split(longest)
        return torch.cat([p[:size] for p, size in zip(parts, sizes)])


LOCAL = Collective(rank=0, world=1)


def shard_bounds(n_global: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of `rank`'s contiguous shard of n_global rows (sizes differ by at most one)."""
    base, extra = divmod(n_global, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def gather_rows(collective: Collective, td: TensorDict, n_global: int) -> TensorDict:
    """All-gather every per-sample (1-d) entry of `td` in one collective; returns a global [n_global] TensorDict."""
    keys = list(td.keys())
    if not keys:
        return TensorDict({}, batch_size=[n_global], device=td.device)
    columns = torch.stack([td[k].to(torch.float64) for k in keys], dim=1)  # exact for int64 up to 2**53
    gathered = collective.all_gather_rows(columns, n_global)
    return TensorDict({k: gathered[:, i].to(td[k].dtype) for i, k in enumerate(keys)}, batch_size=[n_global],
                      device=td.device)


def reduce_update(collective: Collective, grads: TensorDict, loss: Tensor, weight_sum: Tensor,
                  new_buffers: TensorDict, buffers: TensorDict) -> tuple[TensorDict, Tensor, TensorDict]:
    """Combine each rank's (grads, loss) of its weighted-mean objective into those of the global one.

    Rank r trained on samples of total loss weight W_r and computed g_r = grad(sum(w l) / W_r);
    the global gradient is sum_r W_r g_r / sum_r W_r, and likewise the loss. Float buffers (BatchNorm
    running statistics) are averaged over the ranks that trained this step; other buffers (counts)
    are taken from those ranks too. One all-reduce carries everything.
    """
    g_keys, g = flatten(grads)
    b_keys, b = flatten(new_buffers)
    dtype = g[0].dtype if g else torch.float32  # the gradients' precision: no wider message than needed
    w = weight_sum.to(dtype).reshape(1)
    trained = (w > 0).to(dtype)
    flat = torch.cat([*(t.reshape(-1) * w for t in g), loss.to(dtype).reshape(1) * w,
                      w, trained, *(t.reshape(-1).to(dtype) * trained for t in b)])
    parts = iter(collective.all_reduce_sum(flat).split([*(t.numel() for t in g), 1, 1, 1, *(t.numel() for t in b)]))
    g_sum = [next(parts) for _ in g]
    loss_sum, w_all, ranks_trained = next(parts), next(parts), next(parts)
    b_sum = [next(parts) for _ in b]
    w_all = w_all.clamp_min(torch.finfo(dtype).tiny)  # 0 only if no rank trained (then g_sum is 0)
    out_grads = unflatten(g_keys, [(s / w_all).reshape(t.shape).to(t.dtype) for s, t in zip(g_sum, g)], grads)
    out_buffers = []
    for s, new, key in zip(b_sum, b, b_keys):
        mean = (s / ranks_trained.clamp_min(1.0)).reshape(new.shape)
        mean = mean if new.is_floating_point() else mean.round()
        out_buffers.append(torch.where(ranks_trained.reshape(()) > 0, mean.to(new.dtype), buffers.get(key)))
    return out_grads, (loss_sum / w_all).reshape(()).to(loss.dtype), unflatten(b_keys, out_buffers, new_buffers)


def launched_by_torchrun() -> bool:
    """True when the environment describes a multi-process launch (torchrun sets WORLD_SIZE, RANK, ...)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> Collective:
    """Join the process group torchrun described (NCCL on CUDA, gloo otherwise); LOCAL when not launched."""
    if not launched_by_torchrun():
        return LOCAL
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return process_group_collective()


def process_group_collective() -> Collective:
    """The Collective of the default (already initialised) torch.distributed process group."""
    import torch.distributed as dist

    return Collective(dist.get_rank(), dist.get_world_size(), dist.group.WORLD)


def teardown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj, collective: Collective):
    """Rank 0's `obj` on every rank (e.g. the run folder rank 0 chose)."""
    if collective.world == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
