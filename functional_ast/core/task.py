"""The task contract: everything the step, the rules and evaluation know of a problem.

A `Task` is a bundle of pure functions. `inputs(batch)` and `targets(batch)` take a batch TensorDict apart;
`loss(outputs, targets)` is the per-sample loss [B] (what selection ranks and training averages); `statistic(x)`
is the per-sample input statistic [B] that significance weighs beside the loss; `eval_sums(outputs, targets,
losses)` gives additive sums over an evaluation batch and `eval_metrics(sums)` turns their totals into the
reported metrics; `transform(x, generator)` augments a training batch's inputs where the data gathers them.
Nothing in the step or the rules reads a batch key or assumes a loss: they ask the task.
`kind` names the inputs (a rule may refuse a kind, `strategies.registry.Rule.kinds`); `headline` is the metric
that names a run's result and `higher_is_better` its direction; `columns` are its evaluation metrics in the order
reports show them; `from_record(test)` adds the metrics that an epoch record's test accuracy and loss imply (bits
per byte from the loss), for the summary.

What the edges and the command line ask of a task, each optional (a task of the user's may leave them unset):
- `columns` its evaluation metrics in the order reports show them, `labels` words for one whose name misleads;
- `export(network, data) -> Export`, the model MLflow logs (a wrapper taking raw inputs, its example input, its
  description and metadata; None: the network itself on the test set's first inputs);
- `sample(model, params, buffers, data, seed, epoch) -> str`, a text artifact written at each evaluation;
- `load(path, **options) -> DataSource`, the command line's `--data`; `data_help` says what that is;
- `build_model(spec, data, **options)`, `--model` as a function building the network (`default_model` when none is
  named; with data None it only checks the spec: ConfigError or None);
- `flags`, the command line's options it takes beyond the common ones; `recipe`, the savings command's defaults for
  it (optimiser, batch, budgets, rules; the sizes of --quick and of the full mode);
- `augment(data)`, whether `transform` is on by default for the data, and `describe_augment` in words.
`classification` builds the task of a classifier from its batch keys; `tasks.images` adds the rest.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch
from tensordict import TensorDict
from torch import Tensor

from functional_ast.core.checks import ConfigError
from functional_ast.core.losses import LossFn, cross_entropy
from functional_ast.core.significance import intensity


class Export(NamedTuple):
    """The model a task logs: `module` (CPU, eval mode: the network, or a wrapper taking raw inputs), an example
    input batch for its signature, its one-paragraph description and the metadata its MLmodel file records."""

    module: torch.nn.Module
    example: Tensor
    description: str
    metadata: dict


class Task(NamedTuple):
    """A problem as the step, the rules, evaluation, the edges and the command line see it."""

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
    columns: tuple[str, ...] = ("accuracy", "loss")  # its evaluation metrics, in the order reports show them
    labels: Any = {}  # words for a metric whose name alone misleads in a table or console ({"accuracy": "..."})
    export: Callable[[torch.nn.Module, Any], Export] | None = None
    sample: Callable[..., str] | None = None  # (model, params, buffers, data, seed, epoch) -> text
    load: Callable[..., Any] | None = None  # (path, **options) -> DataSource
    build_model: Callable[..., Callable[[], torch.nn.Module]] | None = None  # (spec, data, **options) -> builder
    flags: tuple[str, ...] = ()  # the command line's options it takes beyond the common ones (argparse dests)
    augment: Callable[[Any], bool] = lambda data: True  # whether `transform` is on by default for this data
    describe_augment: str = "none"  # the default augmentation, in words, for the console
    default_model: str | None = None  # the --model `build_model` builds when none is named
    recipe: Any = None  # defaults of the savings command for it: {"savings": {flag: value}, "quick": ..., "full": ...}
    data_help: str = "a path its `load` reads"  # what --data is, for the command line's error lines


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


def check_kind(task: Task, kinds: tuple[str, ...], what: str) -> None:
    """ConfigError naming `what` and the kinds it takes when `task`'s inputs are of another kind."""
    if task.kind not in kinds:
        raise ConfigError(f"{what} runs on {' or '.join(kinds)}, not on the {task.name} task's {task.kind}")


def default_export(task: Task, network: torch.nn.Module, data) -> Export:
    """A task's logged model when it has no `export`: the network itself, on the test set's first two inputs."""
    example = task.inputs(next(iter(data.test_batches(2))))[:2].detach().cpu()
    return Export(network, example, f"the {task.name} task's network: the inputs its batches feed it in, its "
                  "outputs out", {"task": task.name, "headline": task.headline})


def as_task(task_or_loss: Task | LossFn | None) -> Task:
    """`task_or_loss` itself, or the classification task with that per-sample loss (None: cross-entropy)."""
    if isinstance(task_or_loss, Task):
        return task_or_loss
    return classification(loss=task_or_loss or cross_entropy)
