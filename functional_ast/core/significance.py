"""Per-sample significance scores in [0, 1]: pure functions of scored quantities.

A significance function has the signature `fn(scored, batch) -> Tensor[B]`, where
`scored` is the TensorDict a scorer produced (per-sample "loss", the task's input
"statistic", optionally "grad_norm") and `batch` is the batch scored. Swap one in through
`strategies.sundew(significance=...)`.
"""

from __future__ import annotations

from typing import Callable

import torch
from tensordict import TensorDict
from torch import Tensor

_EPS = 1e-12

Significance = Callable[[TensorDict, TensorDict], Tensor]  # (scored, batch) -> scores [B] in [0, 1]


def normalise_by_mean(values: Tensor) -> Tensor:
    """clamp(v / mean(v), 0, 2) / 2: relative to the batch mean, in [0, 1] (0.5 = average)."""
    values = torch.nan_to_num(values.float(), nan=0.0, posinf=0.0, neginf=0.0)
    return (values / values.mean().clamp_min(_EPS)).clamp(0.0, 2.0) / 2.0


def intensity(images: Tensor) -> Tensor:
    """Per-sample standard deviation over all non-batch dims (the seed's 'intensity')."""
    return images.flatten(1).float().std(dim=1, unbiased=False)


def loss_intensity(scored: TensorDict, batch: TensorDict, loss_weight: float = 0.7) -> Tensor:
    """The seed's rule: 0.7 * normalised per-sample loss + 0.3 * normalised input statistic (the task's; for
    images, each image's standard deviation)."""
    return loss_weight * normalise_by_mean(scored["loss"]) + (1.0 - loss_weight) * normalise_by_mean(
        scored["statistic"])


def loss_only(scored: TensorDict, batch: TensorDict) -> Tensor:
    """Normalised per-sample loss alone."""
    return normalise_by_mean(scored["loss"])


def grad_norm(scored: TensorDict, batch: TensorDict) -> Tensor:
    """Normalised per-sample gradient norm (needs a scorer that fills "grad_norm")."""
    return normalise_by_mean(scored["grad_norm"])


