"""A time or FLOP budget as a run spends it. A budget is `TrainConfig.budget`: ("time", seconds), ("flops",
FLOPs) or None (epochs end the run).

Plain-number arithmetic (what is used and left, whether it is spent, what the cool-down costs, the running mean
of a phase's cost per step, the schedule's horizon); the budget's part of the state as pure functions
(state, ...) -> state (the costs per step, the re-planned horizon); and `Pacer`, which applies them on a run's
clock and keeps the two Python numbers a run needs between re-plans.
"""

from __future__ import annotations

import math

import torch
from tensordict import TensorDict

from functional_ast.core import optim
from functional_ast.core.state import UNKNOWN, replace, with_parts
from functional_ast.train.plan import Plan, remaining_steps

Budget = tuple[str, float] | None


# --------------------------------------------------------------------------- numbers


def budget_used(limit: tuple[str, float], train_time: float, state: TensorDict) -> float:
    """What the budget has used: the train time (a time budget) or the state's FLOPs spent."""
    return train_time if limit[0] == "time" else float(state["work", "flops_spent"])


def left(limit: tuple[str, float], used: float) -> float:
    """What is left of the budget (never negative)."""
    return max(0.0, limit[1] - used)


def spent(limit: tuple[str, float], used: float) -> bool:
    """Whether the budget is used up."""
    return used >= limit[1]


def epochs_done(limit: Budget, plan: Plan, epoch: int) -> bool:
    """Whether `epoch` epochs end the run: without a budget, at the planned epochs (a budget ends it otherwise)."""
    return limit is None and epoch >= plan.epochs


def cooldown_cost(plan: Plan, cost_all_data: float) -> float:
    """What the cool-down epochs cost at `cost_all_data` per all-data step."""
    return plan.cooldown_epochs * plan.all_data_steps * cost_all_data


def only_cooldown_left(limit: tuple[str, float], used: float, cooldown: float) -> bool:
    """Whether no more than the cool-down's cost is left: a selective epoch then ends, the cool-down begins."""
    return not limit[1] - used > cooldown


MIN_TRAINING_EPOCHS = 0.5  # what a budget must leave to train selectively after preparation, in full-data epochs


def smallest_budget_epochs(prepare_epochs: float, all_data_epochs: int) -> float:
    """The smallest budget, in full-data epochs (rounded up to a tenth), that pays for `prepare_epochs` of
    preparation and the `all_data_epochs` and leaves `MIN_TRAINING_EPOCHS` to train selectively."""
    return math.ceil((prepare_epochs + all_data_epochs + MIN_TRAINING_EPOCHS) * 10 - 1e-9) / 10


def preparation_refusal(limit: tuple[str, float], epoch_cost: float, prepare_epochs: float, all_data_epochs: int,
                        what: str) -> str | None:
    """A one-line refusal when `prepare_epochs` full-data epochs of preparation (a rule's reference models, at
    `epoch_cost` each) and the run's `all_data_epochs` (warm-up and cool-down) leave less than `MIN_TRAINING_EPOCHS` of
    the budget to train selectively; None when the budget affords them. It names the smallest budget that works."""
    smallest = smallest_budget_epochs(prepare_epochs, all_data_epochs)
    if limit[1] >= smallest * epoch_cost:
        return None
    unit = "s" if limit[0] == "time" else "FLOPs"
    return (f"a {limit[1]:.4g} {unit} budget ({limit[1] / epoch_cost:.2f} full-data epochs here) leaves no selective "
            f"training after {what} ({prepare_epochs:.2f} epochs) and {all_data_epochs} all-data epoch(s); the "
            f"smallest budget that works is {smallest:g} full-data epochs ({smallest * epoch_cost:.4g} {unit}): "
            "raise the budget, or give the reference fewer epochs")


def running_cost(previous: float, measured: float) -> float:
    """A phase's cost per step after a new measurement: the measurement at first (previous UNKNOWN), then an
    exponential mean weighting it 0.3."""
    return measured if previous == UNKNOWN else 0.7 * previous + 0.3 * measured


def horizon(done: int, remaining: float) -> int:
    """The schedule's horizon: the steps done plus the `remaining` the budget affords (at least one more)."""
    return max(done + 1, done + int(round(remaining)))


# --------------------------------------------------------------------------- the budget's part of the state


def with_costs(state: TensorDict, **costs: float) -> TensorDict:
    """The state with the cost per step of the phases named (cost_all_data, cost_selective) set."""
    return with_parts(state, loop={k: torch.tensor(v, dtype=torch.float64) for k, v in costs.items()})


def with_measured_cost(state: TensorDict, all_data: bool, measured: float) -> TensorDict:
    """The state with the phase's cost per step moved toward `measured` (`running_cost`)."""
    phase = "cost_all_data" if all_data else "cost_selective"
    return with_costs(state, **{phase: running_cost(float(state["loop", phase]), measured)})


def with_horizon(state: TensorDict, plan: Plan, budget_left: float, batch: int | None = None) -> TensorDict:
    """The state with its schedule's horizon at the steps taken plus those `budget_left` affords from its position
    (batch `batch` of its epoch, default the state's batch), at its costs per step."""
    loop = state["loop"]
    batch = int(loop["batch"]) if batch is None else batch
    remaining = remaining_steps(plan, int(loop["epoch"]), batch, budget_left, float(loop["cost_all_data"]),
                                float(loop["cost_selective"]))
    return replace(state, opt=optim.set_horizon(state["opt"], horizon(int(state["step"]), remaining)))


def replanned(state: TensorDict, plan: Plan, limit: tuple[str, float], used: float, used_before: float,
              steps: int, all_data: bool, batch: int | None = None) -> TensorDict:
    """The state re-planned after `steps` steps of a phase (all data or not) took the budget from `used_before` to
    `used`: that phase's cost per step updated (not after 0 steps), the horizon set from what is left."""
    if steps:
        state = with_measured_cost(state, all_data, (used - used_before) / steps)
    return with_horizon(state, plan, left(limit, used), batch)


def state_cooldown_cost(state: TensorDict, plan: Plan) -> float:
    """What the cool-down epochs cost at the state's cost per all-data step."""
    return cooldown_cost(plan, float(state["loop", "cost_all_data"]))


# --------------------------------------------------------------------------- on a run's clock


class Pacer:
    """A run's budget (`limit`; None: none) spent on its clock. Beside the state it keeps two Python numbers: what
    the budget had used at the last re-plan (a phase's cost per step is measured between re-plans) and the
    cool-down's cost (the state's, read once per re-plan: it is checked every step, and on a GPU each read of the
    state waits for the device). Without a budget nothing is spent and re-planning keeps the state."""

    def __init__(self, limit: Budget, plan: Plan, clock):
        self.limit, self.plan, self.clock = limit, plan, clock
        self.used_before, self.cooldown = 0.0, math.inf

    def used(self, state: TensorDict) -> float:
        """What the budget has used: the clock's train time, or the state's FLOPs."""
        return budget_used(self.limit, self.clock.now(), state)

    def spent(self, state: TensorDict) -> bool:
        return self.limit is not None and spent(self.limit, self.used(state))

    def cooldown_due(self, state: TensorDict, all_data: bool) -> bool:
        """Whether a selective epoch ends now, only the cool-down's cost being left."""
        return (self.limit is not None and not all_data and self.plan.cooldown_epochs > 0
                and only_cooldown_left(self.limit, self.used(state), self.cooldown))

    def started(self, state: TensorDict) -> None:
        """Count the costs per step from here (a run starting, or resuming, with `state`)."""
        self.used_before, self.cooldown = self.used(state), state_cooldown_cost(state, self.plan)

    def replanned(self, state: TensorDict, steps: int, all_data: bool, batch: int | None = None) -> TensorDict:
        """`replanned` after `steps` steps of a phase since the last re-plan (the state itself without a budget)."""
        if self.limit is None:
            return state
        used = self.used(state)
        state = replanned(state, self.plan, self.limit, used, self.used_before, steps, all_data, batch)
        self.used_before, self.cooldown = used, state_cooldown_cost(state, self.plan)
        return state
