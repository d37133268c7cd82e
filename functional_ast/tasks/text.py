"""Language modelling on bytes: a batch's "tokens" [B, context + 1] int64 are inputs tokens[:, :-1] and targets
tokens[:, 1:]; a sample's loss is its window's mean next-byte cross-entropy; evaluation reports the mean token loss
(nats), bits per byte (the loss / ln 2: one token is one byte) and next-byte accuracy."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import Tensor

from functional_ast.core.task import Task

VOCAB = 256


def window_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean next-token cross-entropy of each window: logits [B, T, V], targets [B, T] -> [B]."""
    losses = F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten(), reduction="none")
    return losses.view(targets.shape).mean(-1)


def byte_entropy(x: Tensor) -> Tensor:
    """Shannon entropy (bits) of each window's bytes, [B, T] -> [B]: the text analogue of an image's pixel spread,
    low for boilerplate and repeats, high for varied text."""
    counts = torch.zeros((x.shape[0], VOCAB), device=x.device).scatter_add(1, x, torch.ones(x.shape, device=x.device))
    p = counts / x.shape[1]
    return -(p * torch.log2(p.clamp_min(1e-12))).sum(1)


def token_sums(outputs: Tensor, targets: Tensor, losses: Tensor) -> dict[str, Tensor]:
    """Summed token loss, correct next-byte predictions and token count of one batch."""
    token_loss = F.cross_entropy(outputs.flatten(0, -2).float(), targets.flatten(), reduction="sum")
    return dict(loss_sum=token_loss, correct=(outputs.argmax(-1) == targets).sum(),
                count=torch.tensor(targets.numel(), device=outputs.device))


def bits_per_byte(test: dict[str, float]) -> dict[str, float]:
    """The metrics a mean token loss in nats implies: itself and bits per byte."""
    return {"loss": test["loss"], "bits_per_byte": test["loss"] / math.log(2)}


def token_metrics(sums: dict[str, float]) -> dict[str, float]:
    """Mean token loss, bits per byte and next-byte accuracy from the summed counts."""
    loss = sums["loss_sum"] / sums["count"]
    return {"accuracy": sums["correct"] / sums["count"], **bits_per_byte({"loss": loss})}


def inputs(batch: TensorDict) -> Tensor:
    return batch["tokens"][:, :-1]


def targets(batch: TensorDict) -> Tensor:
    return batch["tokens"][:, 1:]


def language_modelling(name: str = "language modelling") -> Task:
    """Byte-level next-token prediction; the headline metric is bits per byte (lower is better)."""
    return Task(name, inputs, targets, window_loss, byte_entropy, token_sums, token_metrics, transform=None,
                kind="sequences", headline="bits_per_byte", higher_is_better=False, from_record=bits_per_byte)
