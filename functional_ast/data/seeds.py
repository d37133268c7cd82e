"""Seeded CPU generators: a hash of (seed, epoch[, batch[, stream]]) seeds each, so no two streams collide."""

from __future__ import annotations

import hashlib

import torch


def seeded_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded by a hash of `keys`, so (seed, epoch[, batch]) streams never collide."""
    digest = hashlib.blake2b(repr(keys).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


def epoch_generator(seed: int, epoch: int, batch: int, stream: int = 0) -> torch.Generator:
    """The generator of batch `batch` of `epoch`: stream 0 is the augmentation's (as iterate_batches uses),
    other streams are independent ones for other per-batch draws (e.g. prioritised sampling)."""
    return seeded_generator(seed, epoch, batch) if stream == 0 else seeded_generator(seed, epoch, batch, stream)
