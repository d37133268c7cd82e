"""Counter-based random numbers as pure tensor functions (JAX-style keys).

A key is a 0-d int64 tensor holding a 32-bit value. The same key gives the same
numbers on any device, with no global generator touched, so random choices made
inside a step are a function of the state alone. Keys are split, never reused.
Built on a 32-bit integer hash (lowbias32, C. Wellons), evaluated in int64 with
no signed overflow; fine for sampling gates and subsets, not for cryptography.
"""

from __future__ import annotations

import torch
from torch import Tensor

_MASK32 = 0xFFFFFFFF
_SPLIT_SALT = 0x5BD1E995
_COUNTER_SALT = 0x9E3779B9


def _mul32(x: Tensor, c: int) -> Tensor:
    """(x * c) mod 2**32 for x in [0, 2**32), computed without int64 overflow."""
    hi = ((x >> 16) * c) & 0xFFFF
    lo = (x & 0xFFFF) * c
    return ((hi << 16) + lo) & _MASK32


def _mix32(x: Tensor) -> Tensor:
    """lowbias32: a bijective avalanche hash on 32-bit values stored in int64."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _hash(key: Tensor, counter: Tensor) -> Tensor:
    """32-bit hash of (key, counter); a bijection in counter for a fixed key."""
    return _mix32(_mix32((counter + _COUNTER_SALT) & _MASK32) ^ _mix32(key))


def key(seed: int, device: torch.device | str | None = None) -> Tensor:
    """A fresh key from a Python int seed."""
    return torch.tensor(int(seed) & _MASK32, dtype=torch.int64, device=device)


def split(key: Tensor, num: int = 2) -> Tensor:
    """`num` new independent keys, shape [num]; unpack with `a, b = split(k)`."""
    counters = torch.arange(num, dtype=torch.int64, device=key.device)
    return _hash(key ^ _SPLIT_SALT, counters)


def bits(key: Tensor, n: int) -> Tensor:
    """n pseudo-random 32-bit values in int64, a pure function of `key`."""
    counters = torch.arange(n, dtype=torch.int64, device=key.device)
    return _hash(key, counters)


def uniform(key: Tensor, n: int, low: float = 0.0, high: float = 1.0) -> Tensor:
    """n float32 samples from U[low, high) with 24-bit resolution."""
    u = (bits(key, n) >> 8).to(torch.float32) * (1.0 / (1 << 24))
    return low + (high - low) * u
