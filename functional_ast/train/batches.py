"""A run's batches: batch b of an epoch is drawn by `sampling.draw` (a pure function of the seed, epoch, position
and the selector state), then gathered and augmented on the data's device."""

from __future__ import annotations

import torch
from tensordict import TensorDict

from functional_ast.core import sampling
from functional_ast.core.selection import Strategy
from functional_ast.core.state import replace
from functional_ast.core.task import Task
from functional_ast.data import images as fdata
from functional_ast.train.plan import Plan


class Batches:
    """The batches of one run's epochs (`draw`); keeps the current epoch's shuffled order on the data's device."""

    def __init__(self, strategy: Strategy, data, task: Task, plan: Plan, seed: int, augment: bool):
        self.strategy, self.data, self.task, self.plan, self.seed, self.augment = (
            strategy, data, task, plan, seed, augment)
        self._order: tuple[int, torch.Tensor] | None = None

    def order(self, epoch: int) -> torch.Tensor:
        """The epoch's shuffled order, moved to the data's device once per epoch: a subset step's selected
        positions then index it where they were computed, with no device-to-host copy (a GPU sync) per step."""
        if self._order is None or self._order[0] != epoch:
            order = sampling.epoch_order(self.plan.num_samples, self.seed, epoch)
            self._order = (epoch, order.to(self.data.device))
        return self._order[1]

    def draw(self, state: TensorDict, epoch: int, b: int, all_data: bool
             ) -> tuple[TensorDict, TensorDict, TensorDict | None]:
        """Batch `b` of `epoch` (a batch on all data, or a selective step's pool): (the state, with the selector
        an index-only selection moved; the batch; that selection's metrics or None)."""
        size = self.plan.batch_size if all_data else self.plan.pool_size
        drawn = sampling.draw(self.strategy, state["selector"], self.order(epoch), batch=b, size=size,
                              seed=self.seed, epoch=epoch, all_data=all_data)
        generator = fdata.epoch_generator(self.seed, epoch, b) if self.augment else None
        batch = self.data.batch(drawn.index, generator, self.task.transform)
        if drawn.weight is not None:
            batch["weight"] = drawn.weight.to(self.data.device)
        if drawn.selector is not None:
            state = replace(state, selector=drawn.selector)
        return state, batch, drawn.info
