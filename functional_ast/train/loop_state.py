"""The loop's part of the state ("loop", "clock" and "history", declared in `core.state`) and its bookkeeping, as
small pure functions (state, ...) -> state: nothing is mutated, each returns a new state that shares its
unchanged leaves with the old one. The trainer's `Run` only calls them; the budget's costs per step and horizon
are `budget`'s, the history's records `history`'s."""

from __future__ import annotations

import torch
from tensordict import TensorDict

from functional_ast.core.state import CLOCK, HISTORY, LOOP, check_compatible, replace, with_parts
from functional_ast.train.loop import Skips, check_skips
from functional_ast.train.plan import NEVER, Plan


def _f64(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float64)


def init_loop(plan: Plan, device, budgeted: bool = False) -> TensorDict:
    """The loop's parts of a new state (position, clock, skip counters, history), built from their specs. Under a
    budget the cool-down starts when only its cost is left (decided as the budget is spent), not at a planned epoch."""
    cooldown_from = NEVER if budgeted else plan.first_cooldown_epoch()
    sizes = {"epochs": max(plan.epochs, 1), "steps": max(plan.total_steps, 1)}
    return TensorDict(loop=LOOP.build(device, cooldown_from=cooldown_from), clock=CLOCK.build(device),
                      history=HISTORY.build(device, sizes), device=device)


def resumed(state: TensorDict, template: TensorDict, device) -> TensorDict:
    """A saved `state` on `device`; refused (core.state.StateError) unless its leaves have the keys, shapes and
    dtypes of `template`, a new state of the same configuration (the history apart: it grows); one saved before
    the loss scaler existed gets the template's (unused by precision "32")."""
    if "scaler" not in state.keys() and "scaler" in template.keys():
        state = replace(state, scaler=template["scaler"].to(state.device))
    check_compatible(state.exclude("history"), template.exclude("history"), "the state to resume")
    table, width = state["history", "epochs"], template["history", "epochs"].shape[1]
    if table.shape[1] < width:  # saved before the epoch table's last columns existed: NaN in them
        pad = torch.full((table.shape[0], width - table.shape[1]), float("nan"), dtype=table.dtype,
                         device=table.device)
        state = with_parts(state, history={"epochs": torch.cat([table, pad], 1)})
    return state.to(device)


def phase(state: TensorDict, plan: Plan) -> tuple[bool, int]:
    """(whether the state's epoch trains on all data, its number of steps), at the state's cool-down start."""
    epoch, cooldown_from = int(state["loop", "epoch"]), int(state["loop", "cooldown_from"])
    return plan.all_data(epoch, cooldown_from), plan.steps_in(epoch, cooldown_from)


def at(state: TensorDict, epoch: int, batch: int, train_time: float) -> TensorDict:
    """The state at batch `batch` of epoch `epoch`, its clock at `train_time` seconds of training."""
    return with_parts(state, loop={"epoch": torch.tensor(epoch), "batch": torch.tensor(batch)},
                      clock={"train_time": _f64(train_time)})


def epoch_started(state: TensorDict) -> TensorDict:
    """The state with its work counters noted as the epoch's start (what the epoch's record counts from)."""
    return with_parts(state, loop={"epoch_start": state["work"].clone()})


def next_epoch(state: TensorDict, epoch: int, finished: bool) -> TensorDict:
    """The state after epoch `epoch` (0-based): at the first batch of the next, finished or not."""
    return with_parts(state, loop={"epoch": torch.tensor(epoch + 1), "batch": torch.tensor(0),
                                   "finished": torch.tensor(finished)})


def ended(state: TensorDict) -> TensorDict:
    """The state marked finished."""
    return with_parts(state, loop={"finished": torch.tensor(True)})


def cooling_from(state: TensorDict, epoch: int) -> TensorDict:
    """The state with the all-data cool-down starting at epoch `epoch`."""
    return with_parts(state, loop={"cooldown_from": torch.tensor(epoch, dtype=torch.int64)})


def skips(state: TensorDict) -> Skips:
    """The non-finite guard's counters kept in the state."""
    loop = state["loop"]
    return Skips(int(loop["skipped_in_a_row"]), int(loop["skipped_total"]), bool(loop["warned"]))


def with_skips(state: TensorDict, chunk: dict[str, list[float]], first_step: int) -> TensorDict:
    """The state with the guard's counters after the steps of `chunk` (metrics from `first_step` on); warns at the
    first skipped update and raises NonFiniteLossError at too many in a row (`loop.check_skips`)."""
    counted = check_skips(skips(state), chunk, first_step)
    return with_parts(state, loop={"skipped_in_a_row": torch.tensor(counted.in_a_row),
                                   "skipped_total": torch.tensor(counted.total),
                                   "warned": torch.tensor(counted.warned)})


def charged(state: TensorDict, selector: TensorDict, flops, train_time: float) -> TensorDict:
    """The state with a rule's prepared selector state and what preparing it cost: `flops` added to the FLOPs
    spent, the clock at `train_time`."""
    state = replace(state, selector=selector)
    return with_parts(state, work={"flops_spent": state["work", "flops_spent"] + flops},
                      clock={"train_time": _f64(train_time)})


def with_joules(state: TensorDict, joules: float) -> TensorDict:
    """The state with `joules` more measured energy on its clock."""
    return with_parts(state, clock={"joules": _f64(float(state["clock", "joules"]) + joules)})
