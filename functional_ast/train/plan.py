"""The plan of a run: which epochs train on all data, steps per epoch, pools, the optimiser and strategy a
config builds, and how many steps the rest of a budget affords (pure functions of config and counts)."""

from __future__ import annotations

from dataclasses import dataclass

from functional_ast import strategies
from functional_ast.core import optim
from functional_ast.data import images as fdata
from functional_ast.strategies import registry
from functional_ast.train.config import ConfigError, TrainConfig

NEVER = 2**62  # "no cool-down epoch planned yet"


@dataclass(frozen=True)
class Plan:
    """The run's shape: which epochs train on all data, batches per epoch, the schedule's first horizon."""

    num_samples: int
    batch_size: int
    pool_size: int
    epochs: int  # planned epochs (a budget run may take more or fewer)
    warmup_epochs: int
    cooldown_epochs: int
    gated: bool

    @classmethod
    def of(cls, config: TrainConfig, num_samples: int) -> "Plan":
        if num_samples < config.batch_size:
            raise ConfigError(f"batch size {config.batch_size} is larger than the training set ({num_samples} "
                              "samples); lower --batch-size or use more data")
        gated = config.gated
        warmup = min(config.warmup_epochs, config.epochs) if gated else 0
        # Under a budget `epochs` does not end training, so it does not cap the cool-down either.
        cooldown = config.cooldown_epochs if config.budget else min(config.cooldown_epochs, config.epochs - warmup)
        return cls(num_samples, config.batch_size, pool_size(config, num_samples), config.epochs, warmup,
                   cooldown if gated else 0, gated)

    def no_selection(self, budget_epochs: float | None = None) -> str | None:
        """One line saying that a rule asked to select never will, with the fix: its epochs (or a budget of
        `budget_epochs` full-data epochs) go to the all-data warm-up and cool-down; None when it selects."""
        if not self.gated:
            return None
        all_data = self.warmup_epochs + self.cooldown_epochs
        if budget_epochs is None and self.epochs <= all_data:
            return (f"{self.epochs} epoch(s) with {self.warmup_epochs} warm-up and {self.cooldown_epochs} "
                    f"cool-down epoch(s) on all data leave no selective epoch: the run trains on all data; give "
                    f"--epochs {all_data + 1} or more, or fewer --warmup-epochs/--cooldown-epochs")
        if budget_epochs is not None and budget_epochs <= all_data:
            return (f"a budget of {budget_epochs:.2f} full-data epochs is spent by the {self.warmup_epochs} warm-up "
                    f"and {self.cooldown_epochs} cool-down epoch(s) on all data: nothing is left to select in; "
                    f"give a budget of more than {all_data} epochs, or fewer --warmup-epochs/--cooldown-epochs")
        return None

    @property
    def all_data_steps(self) -> int:
        """Steps of an epoch on all data (batches of batch_size, the last partial one dropped)."""
        return fdata.num_batches(self.num_samples, self.batch_size, drop_last=True)

    @property
    def selective_steps(self) -> int:
        """Steps of a selective epoch (one per pool)."""
        return fdata.num_batches(self.num_samples, self.pool_size, drop_last=True)

    def first_cooldown_epoch(self) -> int:
        return self.epochs - self.cooldown_epochs if self.cooldown_epochs else NEVER

    def all_data(self, epoch: int, cooldown_from: int) -> bool:
        return not self.gated or epoch < self.warmup_epochs or epoch >= cooldown_from

    def steps_in(self, epoch: int, cooldown_from: int) -> int:
        return self.all_data_steps if self.all_data(epoch, cooldown_from) else self.selective_steps

    @property
    def total_steps(self) -> int:
        cooldown_from = self.first_cooldown_epoch()
        return sum(self.steps_in(e, cooldown_from) for e in range(self.epochs))


def pool_size(config: TrainConfig, num_samples: int) -> int:
    """Samples a selective step draws from: `pool_size`, or batch_size / target_rate (a step then trains about
    one batch, as a fresh random subset per epoch (RS2) does); batch_size for `full` and for a strategy that picks
    its own share of each batch (its registry entry's `own_rate`)."""
    if not config.gated or config.rule.own_rate:
        return config.batch_size
    size = config.pool_size if config.pool_size is not None else round(config.batch_size / config.target_rate)
    return max(1, min(size, num_samples))


def build_optimizer(config: TrainConfig, plan: Plan) -> optim.GradientTransformation:
    """SGD (Nesterov) or AdamW on a warm-up + cosine schedule over the steps this strategy takes (the horizon,
    re-planned under a budget); the warm-up is the first epoch's steps, at most a fifth of the run."""
    total = plan.total_steps
    first = plan.all_data_steps if plan.all_data(0, plan.first_cooldown_epoch()) else plan.selective_steps
    schedule = optim.warmup_cosine_over_horizon(config.peak_lr, total, warmup_steps=min(first, total // 5))
    if config.optimizer == "sgd":
        return optim.sgd(schedule, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    return optim.adam(schedule, weight_decay=config.weight_decay)


def strategy_context(config: TrainConfig, plan: Plan, sample_shape: tuple[int, ...] = (),
                     num_classes: int | None = None, task=None) -> registry.Context:
    """What the config's rule is built from."""
    return registry.Context(num_samples=plan.num_samples, target_rate=config.target_rate, pool_size=plan.pool_size,
                            sample_shape=tuple(sample_shape), num_classes=num_classes, task=task)


def build_strategy(config: TrainConfig, context: registry.Context) -> strategies.Strategy:
    """The config's strategy, built by its registry entry with the config's options (a rule that cannot run on the
    task's kind of inputs refused)."""
    if context.task is not None:
        config.rule.check_kind(context.task.kind)
    return config.rule(context, config.options)


def remaining_steps(plan: Plan, epoch: int, batch: int, left: float, cost_all_data: float,
                    cost_selective: float) -> float:
    """Steps that `left` budget affords from (epoch, batch): the rest of the warm-up on all data, selective
    steps, then the cool-down epochs on all data (at the measured cost per step of each phase)."""
    if not plan.gated:
        return left / cost_all_data
    warm_done = batch if epoch < plan.warmup_epochs else 0
    warm_left = max(0, (plan.warmup_epochs - epoch) * plan.all_data_steps - warm_done)
    cool_steps = plan.cooldown_epochs * plan.all_data_steps
    middle = max(0.0, left - warm_left * cost_all_data - cool_steps * cost_all_data)
    return warm_left + middle / cost_selective + min(cool_steps, left / cost_all_data)
