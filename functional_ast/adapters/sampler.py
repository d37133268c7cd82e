"""`Sampler`: a DataLoader's `batch_sampler` that selects from remembered scores before any forward.

    sampler = Sampler("stale", num_samples=len(train), batch_size=64, target_rate=0.3)
    loader = DataLoader(train, batch_sampler=sampler)             # any Dataset, any collate
    for batch in loader:
        losses = F.cross_entropy(model(batch["x"]), batch["y"], reduction="none")
        sampler.loss(batch["index"], losses).backward()           # weighted mean; the rule remembers the losses

Each batch is a step of `fa.fit`'s, drawn by the very call its batches make (`sampling.draw` on the epoch's order,
keyed by (seed, epoch, batch)): on all data in the warm-up and cool-down epochs (batches of `batch_size`), else the
samples the rule selects from a pool of `batch_size / target_rate` (`prioritized`: its draws over the whole data
set). Only the selected samples are loaded and run. `loss` then does the step's end: the rule observes the trained
samples' losses, the work is counted, and it returns their weighted mean. For rules that select on remembered scores
(`Strategy.index_only`: `stale`, `small_loss`, `infobatch`, `sundew_remembered`, `rho_loss` without its references,
`random`), `prioritized`, and `full`; a rule on fresh scores needs a forward first: `adapters.Selector`.

A DataLoader asks for batches ahead of the loop (`num_workers > 0`: `prefetch_factor * num_workers` of them), so a
batch may be drawn before the losses of the batches before it are observed. The sampler keeps the drawn batches that
wait for their losses in its state, in order: the selections are the same in every run of the same loop (with no
look-ahead, `num_workers=0`, they are `fa.fit`'s), and `load_state_dict` gives back the waiting batches first, so a
job resumed mid-epoch draws exactly what the uninterrupted one drew. Each `__iter__` continues the epoch in progress,
or starts the next one when it is done.

Under torchrun every rank draws the same batch (the same state, the same keys) and yields its contiguous share of it
(`distributed.shard_bounds`): the shares are disjoint, the controller sees the global rate, and `loss` all-gathers
the trained samples' losses only (so every rank's tables stay identical) and scales this rank's loss so that DDP's
average of the gradients is that of the whole batch's weighted mean.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Sampler as TorchSampler

from functional_ast.adapters import state as adapter
from functional_ast.core import distributed, sampling
from functional_ast.core.checks import ConfigError
from functional_ast.core.selection import all_data
from functional_ast.core.work import WorkCosts
from functional_ast.train.config import DEFAULT_RULE, TrainConfig

WHO = "Sampler"


class Drawn(NamedTuple):
    """A drawn batch waiting for its losses: its dataset indices (every rank's), loss weights, what it stands for in
    the epoch (`n_seen`) and whether it is an all-data batch."""

    index: Tensor
    weight: Tensor | None
    n_seen: int
    all_data: bool


class Sampler(TorchSampler):
    """Batches of dataset indices selected by a rule on remembered scores; `loss` after each batch's forward."""

    def __init__(self, rule: str = DEFAULT_RULE, num_samples: int = 0, batch_size: int = 128,
                 target_rate: float = 0.3, *, seed: int = 0, pool_size: int | None = None, warmup_epochs: int = 0,
                 cooldown_epochs: int = 0, epochs: int | None = None, options: Mapping[str, Any] | None = None,
                 costs: WorkCosts | None = None, collective: distributed.Collective | None = None, device=None):
        config = adapter.configure(rule, target_rate=target_rate, batch_size=batch_size,
                                   pool_size=pool_size, seed=seed, warmup_epochs=warmup_epochs,
                                   cooldown_epochs=cooldown_epochs, epochs=epochs, options=options)
        self._setup(config, num_samples, costs, collective, device)

    @classmethod
    def from_config(cls, config: TrainConfig, num_samples: int, *, costs: WorkCosts | None = None,
                    collective: distributed.Collective | None = None, device=None) -> "Sampler":
        """The Sampler of `config` (rule, rate, options, seed, batch and pool size, warm-up/cool-down), as `fa.fit`
        draws its batches."""
        self = cls.__new__(cls)
        self._setup(config, num_samples, costs, collective, device)
        return self

    def _setup(self, config, num_samples, costs, collective, device) -> None:
        self.config, self.plan, self.rule, self.strategy = adapter.build(config, num_samples, WHO)
        if self.rule.gated and not self.strategy.index_only and self.strategy.sampling is None:
            raise ConfigError(f"{WHO}: {config.strategy} selects on fresh scores, which need a forward over the pool "
                              "first; use functional_ast.adapters.Selector in your loop for it (or a rule on "
                              "remembered scores: stale, small_loss, infobatch, sundew_remembered)")
        self.num_samples, self.costs = num_samples, costs or adapter.NO_COSTS
        self.collective = collective if collective is not None else adapter.default_collective()
        self.state = adapter.init(self.strategy, config.seed, device)
        self._waiting: list[Drawn] = []  # drawn, not yet observed, in order
        self._replay = 0  # of them, how many a fresh iterator yields again (those loaded by load_state_dict)
        self._order: tuple[int, Tensor] | None = None

    # ------------------------------------------------------------------------------------------ the batches

    @property
    def position(self) -> tuple[int, int]:
        """(epoch, batch) of the next draw."""
        return int(self.state["epoch"]), int(self.state["batch"])

    @property
    def counters(self) -> dict[str, int]:
        """FLOPs spent and full data's, samples seen, scored and trained so far (`fa.fit`'s work counters)."""
        return adapter.counters(self.state)

    def batches_in(self, epoch: int) -> int:
        """The batches epoch `epoch` yields: all-data batches of `batch_size`, or one per pool."""
        return self.plan.steps_in(epoch, self.plan.first_cooldown_epoch())

    def __len__(self) -> int:
        """The most batches an epoch yields (selective epochs yield fewer than all-data ones): what DataLoader's and
        Lightning's len read."""
        epochs = {0, self.plan.warmup_epochs}
        if self.plan.cooldown_epochs:
            epochs.add(self.plan.first_cooldown_epoch())
        return max(self.batches_in(e) for e in epochs)

    def _epoch_order(self, epoch: int) -> Tensor:
        if self._order is None or self._order[0] != epoch:
            device = self.state.device or torch.device("cpu")
            self._order = (epoch, sampling.epoch_order(self.num_samples, self.config.seed, epoch).to(device))
        return self._order[1]

    def _draw(self) -> Drawn:
        """The next batch, as `fa.fit`'s `Batches.draw` draws it (the selector moved by an index-only selection)."""
        epoch, b = self.position
        on_all_data = self.plan.all_data(epoch, self.plan.first_cooldown_epoch())
        size = self.plan.batch_size if on_all_data else self.plan.pool_size
        drawn = sampling.draw(self.strategy, self.state["selector"], self._epoch_order(epoch), batch=b, size=size,
                              seed=self.config.seed, epoch=epoch, all_data=on_all_data)
        selector = self.state["selector"] if drawn.selector is None else drawn.selector
        self.state = adapter.replace(self.state, selector=selector, batch=self.state["batch"] + 1)
        n_seen = drawn.index.shape[0] if on_all_data else self.plan.pool_size
        return Drawn(drawn.index, drawn.weight, n_seen, on_all_data)

    def _share(self, drawn: Drawn) -> list[int]:
        lo, hi = distributed.shard_bounds(drawn.index.shape[0], self.collective.rank, self.collective.world)
        return drawn.index[lo:hi].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        replay, self._replay = self._waiting[:self._replay], 0
        epoch, b = self.position
        if not replay and b >= self.batches_in(epoch):  # the epoch is done: start the next
            self.state = adapter.replace(self.state, epoch=self.state["epoch"] + 1,
                                         batch=torch.zeros_like(self.state["batch"]))
        for drawn in replay:
            yield self._share(drawn)
        while self.position[1] < self.batches_in(self.position[0]):
            drawn = self._draw()
            self._waiting.append(drawn)
            yield self._share(drawn)

    # ------------------------------------------------------------------------------------------ the step's end

    def weight(self, index) -> Tensor:
        """The loss weights of this rank's samples `index` of the oldest batch waiting for its losses (ones where the
        rule gives none): for a loss you reduce yourself; `loss` applies them for you."""
        drawn, _ = self._oldest(index)
        lo, hi = distributed.shard_bounds(drawn.index.shape[0], self.collective.rank, self.collective.world)
        return torch.ones(hi - lo) if drawn.weight is None else drawn.weight[lo:hi].cpu()

    def _oldest(self, index) -> tuple[Drawn, Tensor]:
        """The oldest drawn batch waiting for its losses, and `index` (this rank's share of it) checked against it."""
        if not self._waiting:
            raise ConfigError(f"{WHO}.loss: no drawn batch is waiting for losses; call it once per batch the "
                              "DataLoader gave, after its forward")
        drawn = self._waiting[0]
        index = adapter.check_indices(WHO, index, self.num_samples)
        expected = torch.tensor(self._share(drawn), dtype=torch.int64)
        if not torch.equal(index.cpu(), expected):
            raise ConfigError(f"{WHO}.loss: indices {index.tolist()[:8]}... are not the oldest batch waiting for its "
                              f"losses ({expected.tolist()[:8]}...); call loss once per batch, in the order the "
                              "DataLoader gave them, with that batch's dataset indices")
        return drawn, index

    def loss(self, index, losses: Tensor, statistic: Tensor | None = None) -> Tensor:
        """The end of the oldest drawn batch's step: `index` (this rank's samples of it, as yielded), your forward's
        per-sample `losses` (reduction="none") and optionally their input statistics (`adapters.state`). The rule
        observes every rank's losses, the work is counted; returns the loss to back-propagate, their weighted mean."""
        drawn, index = self._oldest(index)
        losses = adapter.check_losses(WHO, losses, index.shape[0])
        statistic = adapter.check_statistic(WHO, statistic, index.shape[0])
        self._waiting.pop(0)
        device = self.state.device or losses.device
        k = drawn.index.shape[0]
        sizes = [hi - lo for lo, hi in (distributed.shard_bounds(k, r, self.collective.world)
                                        for r in range(self.collective.world))]
        columns = [losses.detach().float().to(device)]
        if statistic is not None:
            columns.append(statistic.detach().float().to(device))
        gathered = adapter.gather_sized(self.collective, columns, sizes)
        batch = adapter.rule_batch(drawn.index.to(device), gathered[1] if statistic is not None else None)
        rule = all_data(self.strategy)  # fa.fit's step on a drawn batch: train all of it, let the rule observe
        self.state = adapter.finished(rule, self.state, self.state["selector"], batch,
                                      torch.arange(k, device=device), gathered[0], n_seen=drawn.n_seen,
                                      n_scored=torch.zeros((), dtype=torch.int64, device=device), costs=self.costs)
        lo, hi = distributed.shard_bounds(k, self.collective.rank, self.collective.world)
        weight = None if drawn.weight is None else drawn.weight[lo:hi].to(losses.device)
        total = None if self.collective.world == 1 else (float(k) if drawn.weight is None else drawn.weight.sum())
        return adapter.weighted_loss(losses, weight, total, self.collective.world)

    # ------------------------------------------------------------------------------------------ resume

    def state_dict(self) -> dict:
        """The rule's state, counters, key, the next draw's position and the drawn batches still waiting for their
        losses: plain tensors and numbers."""
        waiting = [{"index": d.index.cpu(), "weight": None if d.weight is None else d.weight.cpu(),
                    "n_seen": d.n_seen, "all_data": d.all_data} for d in self._waiting]
        return adapter.saved(self.state, self.config, self.num_samples, waiting=waiting)

    def load_state_dict(self, saved: Mapping) -> None:
        """Continue from a `state_dict()` of a Sampler built the same way: the next iterator yields the batches that
        were drawn and not yet observed, then draws on."""
        self.state = adapter.loaded(saved, self.state, self.config, self.num_samples, WHO)
        device = self.state.device or torch.device("cpu")
        self._waiting = [Drawn(d["index"].to(device), None if d["weight"] is None else d["weight"].to(device),
                               int(d["n_seen"]), bool(d["all_data"])) for d in saved.get("waiting", [])]
        self._replay = len(self._waiting)
