"""`SelectionCallback`: the adapters inside Lightning (`pip install "functional_ast[lightning]"`).

    selection = SelectionCallback(Sampler("stale", num_samples=len(train), batch_size=64, target_rate=0.3))
    loader = DataLoader(train, batch_sampler=selection.sampler)   # a rule on remembered scores: load only the chosen
    L.Trainer(callbacks=[selection]).fit(module, loader)          # module.training_step returns per-sample losses

Your `LightningModule.training_step` returns its per-sample losses (reduction="none"; a tensor, or a dict holding
them under "loss"). At `setup` the callback wraps that method on your module (an attribute of the instance, taken
off again at `teardown`; nothing of Lightning is patched): the wrapper hands the batch's dataset indices and the
losses to the adapter and returns what the adapter returns, the selected samples' weighted mean, for Lightning to
back-propagate. With a `Sampler` (given as the DataLoader's `batch_sampler`) only the selected samples are loaded;
with a `Selector` the forward runs on the whole batch and the backward on the selected samples' loss (masked).

The adapter's state is the callback's `state_dict`, so it is in Lightning's checkpoint; `fit(..., ckpt_path=...)`
restores it and the Sampler continues the epoch where the checkpoint left it (Lightning warns that a plain
DataLoader is not resumable: the sampler is). Under DDP the adapter's collective is the default process group, so
each rank trains its share of one selection (`adapters.sampler`, `adapters.loop`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import lightning.pytorch as pl

from functional_ast.adapters.loop import Selector
from functional_ast.adapters.sampler import Sampler
from functional_ast.core.checks import ConfigError


def dataset_index(batch: Any):
    """A batch's dataset indices: `batch["index"]` of a dict batch, the last item of a tuple or list batch."""
    if isinstance(batch, Mapping):
        if "index" not in batch:
            raise ConfigError("SelectionCallback: the batch has no 'index'; return each sample's dataset index from "
                              "your Dataset, or pass index=lambda batch: ... to the callback")
        return batch["index"]
    if isinstance(batch, (tuple, list)):
        return batch[-1]
    raise ConfigError(f"SelectionCallback: cannot find the dataset indices in a {type(batch).__name__} batch; pass "
                      "index=lambda batch: ... to the callback")


class SelectionCallback(pl.Callback):
    """Selection by `adapter` (a Sampler or a Selector) for a LightningModule whose training_step returns per-sample
    losses; `index(batch)` finds the batch's dataset indices, `statistic(batch)` (optional) each sample's input
    statistic."""

    def __init__(self, adapter: Sampler | Selector, index: Callable[[Any], Any] = dataset_index,
                 statistic: Callable[[Any], Any] | None = None):
        if not isinstance(adapter, (Sampler, Selector)):
            raise ConfigError(f"SelectionCallback: expected an adapters.Sampler or adapters.Selector, got "
                              f"{type(adapter).__name__}")
        self.adapter, self.index, self.statistic = adapter, index, statistic
        self._wrapped: Any = None

    @property
    def sampler(self) -> Sampler:
        """The Sampler, for `DataLoader(..., batch_sampler=callback.sampler)`."""
        if not isinstance(self.adapter, Sampler):
            raise ConfigError("SelectionCallback.sampler: this callback selects with a Selector, after the forward; "
                              "give the DataLoader batches of your own")
        return self.adapter

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or self._wrapped is not None:
            return
        own = pl_module.training_step

        def training_step(batch, *args, **kwargs):
            out = own(batch, *args, **kwargs)
            losses = out["loss"] if isinstance(out, Mapping) else out
            statistic = None if self.statistic is None else self.statistic(batch)
            return self.adapter.loss(self.index(batch), losses, statistic)

        self._wrapped = pl_module
        pl_module.training_step = training_step

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._wrapped is pl_module and "training_step" in vars(pl_module):
            del pl_module.training_step
            self._wrapped = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        # At every batch, not at the epoch's start: Lightning skips that hook on some restarts. The Sampler counts its
        # own epochs; set_epoch of the epoch in progress changes nothing.
        if isinstance(self.adapter, Selector):
            self.adapter.set_epoch(trainer.current_epoch)

    def state_dict(self) -> dict:
        return self.adapter.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.adapter.load_state_dict(state_dict)
