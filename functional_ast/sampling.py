"""Prioritised batch sampling with torchrl's sum tree (the one stateful helper of the loop).

The priorities' source of truth is the state table `selector.priority` (saved with the
state); this object is a cache of it for fast sampling, rebuilt with `sync` after
warm-up or a resume, and kept current with `update` after each step.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import Tensor
from torchrl.data import LazyTensorStorage, ReplayBuffer
from torchrl.data.replay_buffers.samplers import PrioritizedSampler

from .strategies import PrioritySampling


class PrioritizedBatches:
    """Draw index batches with P(i) ~ priority_i ** alpha and importance weights; priorities from state."""

    def __init__(self, num_samples: int, cfg: PrioritySampling, seed: int):
        self.num_samples = num_samples
        sampler = PrioritizedSampler(max_capacity=num_samples, alpha=cfg.alpha, beta=cfg.beta, eps=1e-6)
        self.buffer = ReplayBuffer(storage=LazyTensorStorage(num_samples), sampler=sampler,
                                   generator=torch.Generator().manual_seed(seed))
        self.buffer.extend(TensorDict(index=torch.arange(num_samples), batch_size=[num_samples]))

    def sync(self, priority: Tensor) -> None:
        """Rebuild the tree from the state's priority table."""
        self.buffer.update_priority(torch.arange(self.num_samples), priority.detach().cpu().clamp_min(1e-6))

    def update(self, index: Tensor, priority: Tensor) -> None:
        """Set the priorities of `index` (after they were trained)."""
        self.buffer.update_priority(index.detach().cpu(), priority.detach().cpu().clamp_min(1e-6))

    def draw(self, k: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """k dataset indices (with replacement) and their importance weights (max 1). With a
        `generator` (e.g. one per (seed, epoch, batch)) the draw depends only on it and the priorities,
        so a resumed run draws the same batches."""
        if generator is not None:
            self.buffer.set_rng(generator)
        sample, info = self.buffer.sample(k, return_info=True)
        return sample["index"], torch.as_tensor(info["priority_weight"], dtype=torch.float32)
