"""`Selector`: selection inside a training loop of your own, from dataset indices and your forward's losses.

    selector = Selector("sundew", num_samples=len(train), target_rate=0.3)
    losses = F.cross_entropy(model(x), y, reduction="none")      # your forward, per sample
    selector.loss(index, losses).backward()                      # the selected samples' weighted mean

Each call is one step of `fa.fit`'s with your batch as the pool: the rule selects (a rule on remembered scores from
the batch's indices with the key of (seed, epoch, batch); a rule on fresh scores from `losses`, with the step's
key), the controller moves, the rule observes the trained samples' losses and the work is counted
(`adapters.state`). Epochs are what `set_epoch` says (as with DistributedSampler): the warm-up and cool-down epochs
train every sample and only fill the rule's tables.

Two ways to train what it selects:
- masked: `selector.loss(index, losses)` (or `select(index, losses).loss`) back-propagates the selected samples'
  weighted mean through the forward you ran on the whole batch. Simple, but the forward ran on every sample;
- compact: `choice = selector.select(index)` before any forward (a rule on remembered scores needs none), then your
  forward on `x[choice.index]` and `selector.observe(losses)`: only the selected samples run. For a rule on fresh
  scores, score under `torch.no_grad()`, `select(index, scores)`, then train `x[choice.index]`.
The work counters count what `fa.fit` would run (the compact way): the trained samples' forward and backward, and a
scoring forward over the batch where the rule scores.

Under torchrun every rank passes its own batch; the ranks' batches, in rank order, are one global batch (the pool)
that every rank selects from alike, so the controller sees the global rate; each rank trains the selected samples
among its own rows, and `loss` is scaled so that DDP's average of the ranks' gradients is the gradient of the whole
selection's weighted mean. Collectives: one all-reduce of the ranks' batch sizes, one all-gather of the batch's
indices (with the losses, for a rule on fresh scores), and, for a rule on remembered scores, one all-gather of the
trained samples' losses. Never the rule's tables.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import torch
from torch import Tensor

from functional_ast.adapters import state as adapter
from functional_ast.core import distributed
from functional_ast.core.checks import ConfigError
from functional_ast.core.selection import all_data
from functional_ast.core.work import WorkCosts
from functional_ast.train.config import DEFAULT_RULE, TrainConfig

WHO = "Selector"


class Choice(NamedTuple):
    """What to train of a batch: `index`, the positions in the batch (ascending, this rank's rows); `weight`, their
    loss weights; `loss`, their weighted mean over your losses (to back-propagate; None until losses are given)."""

    index: Tensor
    weight: Tensor
    loss: Tensor | None = None

    def mask(self, n: int) -> Tensor:
        """The [n] bool mask of the chosen positions."""
        return torch.zeros(n, dtype=torch.bool, device=self.index.device).index_fill(0, self.index, True)


class _Step(NamedTuple):
    """A selection on the global batch (every rank's, in rank order), the same on every rank."""

    source: str  # what chose: "all" (a warm-up or cool-down step), "indices" (remembered scores), "scores" (fresh)
    selector: Any  # the rule's state after the selection
    index: Tensor  # the global batch's dataset indices
    trained: Tensor  # positions in it, ascending
    weight: Tensor | None  # of the trained
    n_scored: Tensor
    scores: Tensor | None = None  # "scores": the global batch's losses
    statistic: Tensor | None = None  # "scores": the global batch's input statistics


class _Waiting(NamedTuple):
    """A selection waiting for the trained samples' losses (`observe`), and this rank's part of it."""

    step: _Step
    n_global: int
    mine: Tensor  # which of `step.trained` are this rank's rows
    local: Tensor  # those rows' positions in this rank's batch
    sizes: list[int]  # every rank's count of trained samples, in rank order


class Selector:
    """A rule's state for a loop of your own: `select`/`loss` per batch, `observe` after a compact forward,
    `set_epoch` at each epoch's start, `state_dict`/`load_state_dict` to resume."""

    def __init__(self, rule: str = DEFAULT_RULE, num_samples: int = 0, target_rate: float = 0.3, *,
                 seed: int = 0, warmup_epochs: int = 0, cooldown_epochs: int = 0, epochs: int | None = None,
                 options: Mapping[str, Any] | None = None, costs: WorkCosts | None = None,
                 collective: distributed.Collective | None = None, device=None):
        config = adapter.configure(rule, target_rate=target_rate, batch_size=2, pool_size=None,
                                   seed=seed, warmup_epochs=warmup_epochs, cooldown_epochs=cooldown_epochs,
                                   epochs=epochs, options=options)
        self._setup(config, num_samples, costs, collective, device)

    @classmethod
    def from_config(cls, config: TrainConfig, num_samples: int, *, costs: WorkCosts | None = None,
                    collective: distributed.Collective | None = None, device=None) -> "Selector":
        """The Selector of `config`'s rule, rate, options, seed and warm-up/cool-down epochs (as `fa.fit` runs it)."""
        self = cls.__new__(cls)
        self._setup(config, num_samples, costs, collective, device)
        return self

    def _setup(self, config, num_samples, costs, collective, device) -> None:
        self.config, self.plan, self.rule, self.strategy = adapter.build(config, num_samples, WHO)
        if self.strategy.sampling is not None:
            raise ConfigError(f"{WHO}: {config.strategy} draws its samples from the whole data set before any forward, "
                              "not from your batch; use functional_ast.adapters.Sampler as the DataLoader's "
                              "batch_sampler for it")
        self.num_samples, self.costs = num_samples, costs or adapter.NO_COSTS
        self.collective = collective if collective is not None else adapter.default_collective()
        self.state = adapter.init(self.strategy, config.seed, device)
        self._waiting: _Waiting | None = None

    # ------------------------------------------------------------------------------------------ position

    @property
    def position(self) -> tuple[int, int]:
        """(epoch, batch): the epoch `set_epoch` named and the steps taken in it (where a resumed loop continues)."""
        return int(self.state["epoch"]), int(self.state["batch"])

    def set_epoch(self, epoch: int) -> None:
        """Start epoch `epoch` (its first batch); the epoch already in progress is left as it is, so a resumed loop
        may call it again."""
        if int(epoch) != int(self.state["epoch"]):
            self.state = adapter.replace(self.state, epoch=torch.tensor(int(epoch), device=self.state.device),
                                         batch=torch.zeros_like(self.state["batch"]))

    @property
    def all_data(self) -> bool:
        """Whether this epoch trains every sample (a warm-up or cool-down epoch, or a rule that never selects)."""
        return self.plan.all_data(int(self.state["epoch"]), self.plan.first_cooldown_epoch())

    @property
    def counters(self) -> dict[str, int]:
        """FLOPs spent and full data's, samples seen, scored and trained so far (`fa.fit`'s work counters)."""
        return adapter.counters(self.state)

    # ------------------------------------------------------------------------------------------ the step

    def select(self, index, losses: Tensor | None = None, statistic: Tensor | None = None) -> Choice:
        """The samples of a batch to train (`Choice`). `index`: each sample's dataset index; `losses`: your forward's
        per-sample losses (reduction="none"), needed by a rule on fresh scores; given, they are also the trained
        samples' losses that the rule remembers, and the step is complete; without them, call `observe` with the
        trained samples' losses. `statistic`: each sample's input statistic (optional, `adapters.state`)."""
        if self._waiting is not None:
            raise ConfigError(f"{WHO}.select: the previous selection is waiting for its losses; call observe(losses) "
                              "after training it, or pass losses to select")
        index = adapter.check_indices(WHO, index, self.num_samples)
        n = index.shape[0]
        if losses is not None:
            losses = adapter.check_losses(WHO, losses, n)
        statistic = adapter.check_statistic(WHO, statistic, n)
        source = "all" if self.all_data else ("indices" if self.strategy.index_only else "scores")
        if source == "scores" and losses is None:
            raise ConfigError(f"{WHO}.select: {self.config.strategy} selects on fresh scores: give your forward's "
                              "per-sample losses (score under torch.no_grad() for a compact step)")
        device = self.state.device or index.device
        sizes = adapter.rank_sizes(self.collective, n, device)
        columns = [index.to(device)]
        if source == "scores":  # fresh scores travel with the indices: the pool's, as fa.fit's step gathers them
            columns += [losses.detach().float().to(device),
                        (statistic if statistic is not None else torch.ones(n)).float().to(device)]
        gathered = adapter.gather_sized(self.collective, columns, sizes)
        step = self._choose(source, gathered, device)
        lo = adapter.offsets(sizes)[self.collective.rank]
        mine = (step.trained >= lo) & (step.trained < lo + n)
        local = (step.trained[mine] - lo).to(index.device)
        trained_sizes = [int(((step.trained >= at) & (step.trained < at + size)).sum())
                         for at, size in zip(adapter.offsets(sizes), sizes)]
        self._waiting = _Waiting(step, sum(sizes), mine, local, trained_sizes)
        weight = torch.ones(local.shape[0], device=index.device) if step.weight is None else \
            step.weight[mine].to(index.device)
        if losses is None:
            return Choice(local, weight)
        loss = self._finish(losses[local], None if statistic is None else statistic[local])
        return Choice(local, weight, loss)

    def _choose(self, source: str, gathered: list[Tensor], device) -> _Step:
        """The selection on the global batch (the same on every rank), before any loss is observed."""
        every = gathered[0]
        zero = torch.zeros((), dtype=torch.int64, device=device)
        if source == "all":
            return _Step(source, self.state["selector"], every, torch.arange(every.shape[0], device=device), None, zero)
        if source == "indices":
            drawn = adapter.select_indices(self.strategy, self.state, every, self.config.seed)
            self.state = adapter.replace(self.state, selector=drawn.selector)
            return _Step(source, drawn.selector, every, drawn.positions.to(device), drawn.weight, zero)
        scores, statistic = gathered[1], gathered[2]
        selection = adapter.select_scored(self.strategy, self.state, adapter.rule_batch(every, statistic), scores)
        trained = selection.index if selection.index is not None else selection.mask.nonzero()[:, 0]
        weight = None if selection.weight is None else selection.weight[trained]
        return _Step(source, selection.state, every, trained, weight, selection.info["n_scored"], scores, statistic)

    def observe(self, losses: Tensor, statistic: Tensor | None = None) -> Tensor:
        """Complete the step that `select(index)` began: the trained samples' per-sample losses (in the order of
        `choice.index`, from the forward you train on) and, optionally, their input statistics. Returns the loss to
        back-propagate, their weighted mean."""
        if self._waiting is None:
            raise ConfigError(f"{WHO}.observe: no selection is waiting for losses; call select(index) first")
        losses = adapter.check_losses(WHO, losses, self._waiting.local.shape[0])
        return self._finish(losses, adapter.check_statistic(WHO, statistic, losses.shape[0]))

    def loss(self, index, losses: Tensor, statistic: Tensor | None = None) -> Tensor:
        """`select(index, losses, statistic).loss`: the selected samples' weighted mean loss, to back-propagate."""
        return self.select(index, losses, statistic).loss

    def _finish(self, losses: Tensor, statistic: Tensor | None) -> Tensor:
        """The step's end on every rank alike (the rule observes every rank's trained losses), and this rank's loss."""
        waiting, self._waiting = self._waiting, None
        step = waiting.step
        device = step.index.device
        if step.source == "scores":  # every rank has the trained samples' losses already: no collective
            batch, trained, trained_losses = adapter.rule_batch(step.index, step.statistic), step.trained, \
                step.scores[step.trained]
        else:
            columns = [losses.detach().float().to(device)]
            if statistic is not None:
                columns.append(statistic.detach().float().to(device))
            gathered = adapter.gather_sized(self.collective, columns, waiting.sizes)
            trained_losses, trained_statistic = gathered[0], (gathered[1] if statistic is not None else None)
            if step.source == "all":  # the batch itself is trained
                batch, trained = adapter.rule_batch(step.index, trained_statistic), step.trained
            else:  # remembered scores: fa.fit's step trains the sub-batch of the selected samples
                batch = adapter.rule_batch(step.index[step.trained], trained_statistic)
                trained = torch.arange(step.trained.shape[0], device=device)
        rule = all_data(self.strategy) if step.source == "all" else self.strategy
        self.state = adapter.finished(rule, self.state, step.selector, batch, trained, trained_losses,
                                      n_seen=waiting.n_global, n_scored=step.n_scored, costs=self.costs)
        self.state = adapter.replace(self.state, batch=self.state["batch"] + 1)
        weight = None if step.weight is None else step.weight[waiting.mine].to(losses.device)
        total = None if self.collective.world == 1 else (
            float(step.trained.shape[0]) if step.weight is None else step.weight.sum())
        return adapter.weighted_loss(losses, weight, total, self.collective.world)

    # ------------------------------------------------------------------------------------------ resume

    def state_dict(self) -> dict:
        """The rule's state, counters, key and position: plain tensors and numbers (torch.save them with your model's
        and optimiser's; `load_state_dict` continues exactly where this left off)."""
        if self._waiting is not None:
            raise ConfigError(f"{WHO}.state_dict: a selection is waiting for its losses; save after observe()")
        return adapter.saved(self.state, self.config, self.num_samples)

    def load_state_dict(self, saved: Mapping) -> None:
        """Continue from a `state_dict()` of a Selector built the same way."""
        self.state = adapter.loaded(saved, self.state, self.config, self.num_samples, WHO)
        self._waiting = None
