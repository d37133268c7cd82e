"""The task contract: everything the step, the rules and evaluation know of a problem.

A `Task` is a bundle of pure functions. `inputs(batch)` and `targets(batch)` take a batch TensorDict apart;
`loss(outputs, targets)` is the per-sample loss [B] (what selection ranks and training averages); `statistic(x)`
is the per-sample input statistic [B] that significance weighs beside the loss; `eval_sums(outputs, targets,
losses)` gives additive sums over an evaluation batch and `eval_metrics(sums)` turns their totals into the
reported metrics; `transform(x, generator)` augments a training batch's inputs where the data gathers them.
Nothing in the step or the rules reads a batch key or assumes a loss: they ask the task.
`kind` names the inputs (a rule may refuse a kind, `strategies.registry.Rule.kinds`); `headline` is the metric
that names a run's result and `higher_is_better` its direction; `from_record(test)` adds the metrics that an epoch
record's test accuracy and loss imply (bits per byte from the loss), for the summary.
`classification` builds the task of a classifier from its batch keys; `tasks.images` adds the batch transform.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from tensordict import TensorDict
from torch import Tensor

from functional_ast.core.losses import LossFn, cross_entropy
from functional_ast.core.significance import intensity


class Task(NamedTuple):
    """A problem as the step, the rules and evaluation see it (every field a pure function)."""

    name: str
    inputs: Callable[[TensorDict], Tensor]
    targets: Callable[[TensorDict], Tensor]
    loss: LossFn
    statistic: Callable[[Tensor], Tensor]
    eval_sums: Callable[[Tensor, Tensor, Tensor], dict[str, Tensor]]
    eval_metrics: Callable[[dict[str, float]], dict[str, float]]
    transform: Callable[[Tensor, torch.Generator], Tensor] | None = None  # training inputs' augmentation
    kind: str = "images"  # what the inputs are: "images", "sequences"
    headline: str = "accuracy"  # the metric of eval_metrics that names a run's result
    higher_is_better: bool = True
    from_record: Callable[[dict[str, float]], dict[str, float]] = lambda test: {}


def classification_sums(outputs: Tensor, targets: Tensor, losses: Tensor) -> dict[str, Tensor]:
    """Correct predictions, summed loss and count of one batch (logits [B, K], labels [B])."""
    return dict(correct=(outputs.argmax(1) == targets).sum(), loss_sum=losses.sum(),
                count=torch.tensor(targets.shape[0], device=outputs.device))


def classification_metrics(sums: dict[str, float]) -> dict[str, float]:
    """Accuracy and mean loss from the summed counts."""
    return {"accuracy": sums["correct"] / sums["count"], "loss": sums["loss_sum"] / sums["count"]}


def classification(name: str = "classification", *, input_key: str = "image", target_key: str = "label",
                   loss: LossFn = cross_entropy, statistic: Callable[[Tensor], Tensor] = intensity) -> Task:
    """A classifier's task: inputs and labels under the given batch keys, cross-entropy, accuracy; the input
    statistic is each input's standard deviation (the seed's "intensity")."""

    def inputs(batch: TensorDict) -> Tensor:
        return batch[input_key]

    def targets(batch: TensorDict) -> Tensor:
        return batch[target_key]

    return Task(name, inputs, targets, loss, statistic, classification_sums, classification_metrics)


def as_task(task_or_loss: Task | LossFn | None) -> Task:
    """`task_or_loss` itself, or the classification task with that per-sample loss (None: cross-entropy)."""
    if isinstance(task_or_loss, Task):
        return task_or_loss
    return classification(loss=task_or_loss or cross_entropy)
