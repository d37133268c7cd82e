"""What the trainer offers a rule's `prepare` (`strategies.registry.Services`): reference models trained on part
of the training set, scored on another part, at a cost the run is charged.

`ReferenceServices.fit_and_score(train_index, score_index, epochs)` trains a copy of the run's model on the samples
`train_index` (plain full-data training: the run's optimiser, batch size and augmentation, `epochs` epochs) and
scores `score_index` with it in eval mode, without augmentation. rho_loss's cross-fitted irreducible losses are two
such calls (`strategies.rho_loss.prepare`). The trainer that builds the references is passed in (`fit`), so this
module does not import it.
"""

from __future__ import annotations

import copy
from typing import Callable, NamedTuple

import torch
from tensordict import TensorDict
from torch import nn

from functional_ast.core import work
from functional_ast.core.checks import ConfigError
from functional_ast.core.losses import make_apply
from functional_ast.core.task import Task, as_task
from functional_ast.strategies import registry
from functional_ast.strategies.registry import Services
from functional_ast.strategies.rho_loss import RhoLossOptions, prepare, rho_loss
from functional_ast.train.config import TrainConfig

# fit(model, data, config, name) -> (the trained state, its summary): the trainer's plain training of one config.
Fit = Callable[..., tuple[TensorDict, dict]]


class ReferenceServices(Services):
    """`Services` over the run's model (used as a shape: each reference is a deep copy), data and config."""

    def __init__(self, model: nn.Module, data, config: TrainConfig, fit: Fit, score_batch_size: int = 512,
                 task: Task | None = None):
        self.model, self.data, self.config, self.fit, self.task = model, data, config, fit, as_task(task)
        self.seed, self.batch_size, self.score_batch_size = config.seed, config.batch_size, score_batch_size

    def fit_and_score(self, train_index: torch.Tensor, score_index: torch.Tensor, epochs: int):
        data, config = self.data, self.config
        ref_config = TrainConfig(strategy="full", epochs=epochs, batch_size=config.batch_size,
                                 optimizer=config.optimizer, lr=config.lr, weight_decay=config.weight_decay,
                                 augment=config.augment, seed=config.seed, compile=config.compile)
        probe = score_index[: config.batch_size]  # the reference's own end-of-run evaluation: kept tiny
        model = copy.deepcopy(self.model)
        state, summary = self.fit(model, data.subset(train_index, probe), ref_config,
                                  name=f"{config.strategy}-reference", task=self.task)
        apply = make_apply(model)
        params, buffers = state["params"], state["buffers"]
        losses, correct, x = [], torch.zeros((), dtype=torch.int64, device=data.device), None
        for chunk in score_index.to(data.device).split(self.score_batch_size):
            batch = data.batch(chunk)
            with torch.no_grad():
                x = self.task.inputs(batch)
                outputs = apply.eval(params, buffers, x)
                targets = self.task.targets(batch)
                losses.append(self.task.loss(outputs, targets).float())
            sums = self.task.eval_sums(outputs, targets, losses[-1])
            # "correct" counted per sample (a task that counts per token: scaled to its samples' share)
            right = sums["correct"] if targets.dim() == 1 else sums["correct"] * chunk.shape[0] / sums["count"]
            correct = correct + right
        flops = int(summary.flops_spent) + score_index.shape[0] * _forward_flops(apply, params, buffers, x)
        return torch.cat(losses), int(correct), flops


class ReferenceLosses(NamedTuple):
    """rho_loss's irreducible losses [N], what they cost, and the references' accuracy on what they scored."""

    losses: torch.Tensor
    seconds: float
    flops: int
    accuracy: float


def cross_fitted_losses(model: nn.Module, data, config: TrainConfig, epochs: int, fit: Fit) -> ReferenceLosses:
    """rho_loss's `prepare` on its own: the cross-fitted reference losses of `data.train` and their cost."""
    if epochs < 1:
        raise ConfigError(f"rho_loss: reference_epochs must be >= 1, got {epochs}")
    context = registry.Context(num_samples=data.num_samples, target_rate=config.target_rate,
                               pool_size=config.batch_size)
    options = RhoLossOptions(reference_epochs=epochs)
    selector = rho_loss(data.num_samples, config.target_rate).init()
    prepared, flops = prepare(selector, context, options, ReferenceServices(model, data, config, fit))
    return ReferenceLosses(prepared["reference"].to(data.device), float(prepared["reference_time_s"]), flops,
                           float(prepared["reference_accuracy"]))


def _forward_flops(apply, params, buffers, x: torch.Tensor) -> int:
    """FLOPs of one sample's eval forward, for inputs shaped and typed like `x`'s rows."""
    meta_params, meta_buffers = params.to("meta"), buffers.to("meta")
    return work.flops_per_sample(
        lambda k: apply.eval(meta_params, meta_buffers, torch.empty((k, *x.shape[1:]), dtype=x.dtype, device="meta")))


