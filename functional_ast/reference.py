"""Irreducible losses for RHO-LOSS: each training sample's loss under a model that never trained on it.

`cross_fitted_losses(model, data, config, epochs)` splits the training set into two seeded halves, trains a
reference copy of the model on each half (plain full-data training, `epochs` epochs, the run's optimiser, batch
size and augmentation) and scores the *other* half with it in eval mode, without augmentation. This is
Mindermann et al.'s (ICML 2022) irreducible-loss model when no hold-out set is given. A mislabelled sample
keeps a high reference loss (the reference predicts its true class), so its reducible loss (learner's loss
minus the reference's) stays low. The cost (wall-clock and FLOPs of both trainings and the scoring forward) is
returned so that a run can charge it to its budget.
"""

from __future__ import annotations

import copy
import math
import time
from typing import NamedTuple

import torch
from torch import nn

from . import data as fdata, work
from .config import ConfigError, TrainConfig
from .losses import cross_entropy, make_apply


class ReferenceLosses(NamedTuple):
    """Per-sample irreducible losses [N] (float32, on the data's device), what obtaining them cost, and the
    references' accuracy on the halves they scored (a check that they learnt something)."""

    losses: torch.Tensor
    seconds: float
    flops: int
    accuracy: float


def halves(num_samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded split of range(num_samples) into two halves (ascending index tensors, sizes differ by at most 1)."""
    g = torch.Generator().manual_seed(int(seed) * 7919 + 17)
    perm = torch.randperm(num_samples, generator=g)
    first, second = perm[: num_samples // 2], perm[num_samples // 2:]
    return first.sort().values, second.sort().values


def cross_fitted_losses(model: nn.Module, data, config: TrainConfig, epochs: int,
                        score_batch_size: int = 512) -> ReferenceLosses:
    """Train a reference on each half of `data.train` (a trainer.Data) for `epochs` epochs, score the other half.

    `model` is the run's module (used as a shape: each reference is a deep copy). Pure in its inputs: the same
    (model, data, config, epochs) give the same losses.
    """
    from .trainer import Data, Run  # the trainer builds references with its own run; imported late (no cycle)

    if epochs < 1:
        raise ConfigError(f"rho_loss: reference_epochs must be >= 1, got {epochs}")
    n = len(data.train)
    if n // 2 < config.batch_size:
        raise ConfigError(f"rho_loss: each half of the training set ({n // 2} samples) must hold a batch of "
                          f"{config.batch_size}; lower --batch-size or use more data")
    start = time.perf_counter()
    losses = torch.zeros(n, dtype=torch.float32, device=data.device)
    correct, flops = torch.zeros((), dtype=torch.int64, device=data.device), 0
    ref_config = TrainConfig(strategy="full", epochs=epochs, batch_size=config.batch_size, optimizer=config.optimizer,
                             lr=config.lr, weight_decay=config.weight_decay, augment=config.augment, seed=config.seed,
                             compile=config.compile)
    first, second = halves(n, config.seed)
    for scored, trained_on in ((first, second), (second, first)):
        subset = fdata.LabelledImages(data.train.data[trained_on.to(data.train.data.device)], data.train.classes)
        probe = fdata.LabelledImages(data.train.data[scored[: config.batch_size].to(data.train.data.device)],
                                     data.train.classes)  # the run's own end-of-run evaluation: kept tiny
        run = Run(copy.deepcopy(model), Data(subset, probe, data.mean, data.std, data.device), ref_config,
                  name="rho_loss-reference", eval_every=math.inf)
        result = run.finish()
        flops += int(result.summary["flops_spent"])
        apply = make_apply(run.model)
        params, buffers = run.state["params"], run.state["buffers"]
        for chunk in scored.to(data.train.data.device).split(score_batch_size):
            batch = fdata.batch_at(data.train, chunk, mean=data.mean, std=data.std, device=data.device)
            with torch.no_grad():
                logits = apply.eval(params, buffers, batch["image"])
            losses = losses.index_put((chunk.to(data.device),), cross_entropy(logits, batch["label"]).float())
            correct = correct + (logits.argmax(1) == batch["label"]).sum()
    flops += n * _forward_flops(apply, params, buffers, tuple(data.train.data["image"].shape[1:]))  # both halves
    accuracy = int(correct) / n  # one read, which also waits for the device before the clock is read
    return ReferenceLosses(losses, time.perf_counter() - start, flops, accuracy)


def _forward_flops(apply, params, buffers, shape: tuple[int, ...]) -> int:
    meta_params, meta_buffers = params.to("meta"), buffers.to("meta")
    return work.flops_per_sample(
        lambda k: apply.eval(meta_params, meta_buffers, torch.empty((k, *shape), device="meta")))
