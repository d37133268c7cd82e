"""The state's declared layout (core.state) and the loop's bookkeeping as pure functions (train.loop_state,
train.history, train.budget): each returns a new state and leaves its input as it was."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from conftest import assert_tree_equal
from tensordict import TensorDict
from test_trainer import _net, _tensors

import functional_ast as fa
from functional_ast.core import optim, work
from functional_ast.core.state import (
    CLOCK,
    COUNTERS,
    EPOCH_COLUMNS,
    HISTORY,
    LAYOUT,
    LOOP,
    PARTS,
    STEP_SERIES,
    UNKNOWN,
    StateError,
    check_layout,
    describe,
)
from functional_ast.train import budget, history, loop_state
from functional_ast.train.loop import NonFiniteLossError
from functional_ast.train.plan import NEVER, Plan, remaining_steps
from functional_ast.train.trainer import Data, Run

PLAN = Plan(num_samples=1000, batch_size=10, pool_size=50, epochs=5, warmup_epochs=1, cooldown_epochs=1, gated=True)


def _state(plan: Plan = PLAN, budgeted: bool = False) -> TensorDict:
    """A loop state with the step's parts it reads: work counters, a step count and an optimiser's horizon."""
    state = loop_state.init_loop(plan, "cpu", budgeted=budgeted)
    params = TensorDict(w=torch.zeros(3))
    state.update(dict(work=work.init(), step=torch.tensor(0),
                      opt=optim.sgd(optim.warmup_cosine_over_horizon(1.0, 10, 2)).init(params)))
    return state


def _horizon(state: TensorDict) -> float:
    return float(next(v for k, v in state["opt"].items(True, True) if k[-1] == "horizon"))


# --------------------------------------------------------------------------- the declared layout


def test_the_layout_is_declared_once_and_a_run_builds_exactly_it():
    assert list(LAYOUT) == list(PARTS) and LAYOUT["loop"] == LOOP.meaning and PARTS["history"].spec is HISTORY
    assert tuple(work.init().keys()) == COUNTERS  # the counters the loop notes at each epoch's start
    assert len(EPOCH_COLUMNS) == len(set(EPOCH_COLUMNS)) and "loss" in STEP_SERIES
    run = Run(_net(), Data.prepare(_tensors(), _tensors(n=32, seed=1)), fa.TrainConfig(strategy="stale", batch_size=16))
    assert list(run.state.keys()) == list(LAYOUT)
    check_layout(run.state, tuple(LAYOUT))  # every part present, the loop's with their declared leaves
    assert run.state["history", "epochs"].shape == (run.plan.epochs, len(EPOCH_COLUMNS))
    assert int(run.state["loop", "cooldown_from"]) == run.plan.first_cooldown_epoch()
    text = describe(run.state)
    for name, leaf in LOOP.fields.items():  # each declared leaf is printed with its meaning
        assert name in text and leaf.meaning in text
    assert "cost_all_data" in text and "float64" in text and LAYOUT["params"] in text


def test_a_part_unlike_its_spec_is_refused_naming_the_leaf():
    state = loop_state.init_loop(PLAN, "cpu")
    for spec, key in ((LOOP, "loop"), (CLOCK, "clock"), (HISTORY, "history")):
        spec.check(state[key], key)
    wrong_dtype = state["loop"].clone()
    wrong_dtype["epoch"] = torch.zeros((), dtype=torch.float32)
    with pytest.raises(StateError, match="loop/epoch is torch.float32, declared torch.int64"):
        LOOP.check(wrong_dtype, "loop")
    missing = state["clock"].exclude("joules")
    with pytest.raises(StateError, match="clock/joules missing"):
        CLOCK.check(missing, "clock")
    ragged = state["history"].clone()
    ragged["steps", "loss"] = torch.zeros(7, dtype=torch.float64)  # the series must share one length
    with pytest.raises(StateError, match="history/steps/"):
        HISTORY.check(ragged, "history")
    with pytest.raises(StateError, match="a value is needed"):
        LOOP.build("cpu")  # the cool-down's start has no default: the plan decides it
    with pytest.raises(StateError, match="has no loop"):
        check_layout(state.exclude("loop"), ("loop",))


def test_init_loop_fills_every_leaf_as_declared():
    state = loop_state.init_loop(PLAN, "cpu", budgeted=True)
    assert int(state["loop", "cooldown_from"]) == NEVER  # under a budget, decided as it is spent
    assert float(state["loop", "cost_all_data"]) == UNKNOWN and not bool(state["loop", "finished"])
    assert state["history", "steps", "loss"].shape == (PLAN.total_steps,)
    assert bool(state["history", "epochs"].isnan().all()) and float(state["clock", "train_time"]) == 0.0
    assert int(loop_state.init_loop(PLAN, "cpu")["loop", "cooldown_from"]) == PLAN.epochs - 1


# --------------------------------------------------------------------------- position and guard


def test_position_functions_return_new_states_and_leave_the_input_alone():
    state = _state()
    before = state.clone()
    moved = loop_state.at(state, 2, 7, train_time=3.5)
    assert (int(moved["loop", "epoch"]), int(moved["loop", "batch"])) == (2, 7)
    assert float(moved["clock", "train_time"]) == 3.5
    after = loop_state.next_epoch(moved, 2, finished=True)
    assert (int(after["loop", "epoch"]), int(after["loop", "batch"]), bool(after["loop", "finished"])) == (3, 0, True)
    assert int(loop_state.cooling_from(state, 4)["loop", "cooldown_from"]) == 4
    assert bool(loop_state.ended(state)["loop", "finished"])
    spent = loop_state.charged(state, TensorDict(t=torch.ones(2)), 500, train_time=1.25)
    assert int(spent["work", "flops_spent"]) == 500 and float(spent["clock", "train_time"]) == 1.25
    assert torch.equal(spent["selector", "t"], torch.ones(2))
    assert float(loop_state.with_joules(loop_state.with_joules(state, 2.0), 0.5)["clock", "joules"]) == 2.5
    assert_tree_equal(state, before)  # nothing mutated
    assert loop_state.phase(state, PLAN) == (True, PLAN.all_data_steps)  # epoch 0: warm-up
    assert loop_state.phase(loop_state.at(state, 1, 0, 0.0), PLAN) == (False, PLAN.selective_steps)


def test_epoch_started_notes_the_counters_the_record_counts_from():
    state = _state()
    state = loop_state.epoch_started(loop_state.charged(state, TensorDict(), 100, 0.0))
    assert int(state["loop", "epoch_start", "flops_spent"]) == 100
    state = loop_state.charged(state, TensorDict(), 40, 0.0)
    assert int(state["loop", "epoch_start", "flops_spent"]) == 100  # a copy, not the live counters


def test_the_guard_counts_skips_in_the_state_and_stops_a_diverged_run():
    state = _state()
    with pytest.warns(UserWarning, match="non-finite loss or gradient at step 11"):
        state = loop_state.with_skips(state, {"skipped_nonfinite": [0.0, 1.0, 1.0]}, first_step=10)
    assert loop_state.skips(state) == (2, 2, True)
    state = loop_state.with_skips(state, {"skipped_nonfinite": [0.0]}, first_step=13)
    assert loop_state.skips(state) == (0, 2, True)
    before = state.clone()
    with warnings.catch_warnings(), pytest.raises(NonFiniteLossError, match="10 non-finite updates in a row"):
        warnings.simplefilter("error")  # warned once already: no second warning
        loop_state.with_skips(state, {"skipped_nonfinite": [1.0] * 10}, first_step=14)
    assert_tree_equal(state, before)


# --------------------------------------------------------------------------- history


def test_recording_a_chunk_grows_the_series_and_leaves_the_input_state_unchanged():
    plan = Plan(num_samples=40, batch_size=10, pool_size=10, epochs=1, warmup_epochs=0, cooldown_epochs=0,
                gated=False)  # 4 steps planned
    state = _state(plan)
    before = state.clone()
    chunk = {"loss": [1.0, 2.0, 3.0], "n_trained": [10.0, 10.0, 10.0], "not_kept": [5.0, 5.0, 5.0]}
    out = history.record_steps(state, 3, chunk)  # steps 3..5: past the 4 planned
    assert_tree_equal(state, before)
    loss = out["history", "steps", "loss"]
    assert loss.shape == (8,) and all(out["history", "steps", k].shape == (8,) for k in STEP_SERIES)  # doubled
    assert loss[3:6].tolist() == [1.0, 2.0, 3.0] and bool(loss[:3].isnan().all()) and bool(loss[6:].isnan().all())
    assert "not_kept" not in out["history", "steps"].keys()
    HISTORY.check(out["history"], "history")  # still the declared layout
    assert history.History.from_state(out).series("loss") == ([3, 4, 5], [1.0, 2.0, 3.0])


def test_recording_an_epoch_writes_its_row_and_the_eval_clock():
    state = loop_state.epoch_started(_state())
    state = state.update({"work": TensorDict({k: torch.tensor(v) for k, v in zip(
        COUNTERS, (600, 1000, 80, 40, 20))}), "step": torch.tensor(8)})
    record = history.epoch_record(state, 0, True, {"accuracy": 0.5, "loss": 1.5}, train_time=2.0, eval_time=0.25)
    assert record["epoch"] == 1 and record["steps"] == 8 and record["epoch_activation_rate"] == 20 / 80
    assert record["epoch_saved_pct"] == pytest.approx(40.0) and record["saved_pct"] == pytest.approx(40.0)
    before = state.clone()
    out = history.record_epoch(state, 6, record)  # past the 5 planned epochs: the table grows
    assert_tree_equal(state, before)
    assert out["history", "epochs"].shape == (10, len(EPOCH_COLUMNS)) and float(out["clock", "eval_time"]) == 0.25
    (read,) = history.History.from_state(out).epochs
    assert read == record
    assert history.evaluation_due(out, None)
    assert not history.evaluation_due(loop_state.at(out, 0, 0, train_time=2.5), eval_every=1.0)  # 2.0 + 1.0
    assert history.evaluation_due(loop_state.at(out, 0, 0, train_time=3.0), eval_every=1.0)


# --------------------------------------------------------------------------- budget


def test_replanning_sets_the_horizon_from_the_remaining_budget():
    state = budget.with_costs(_state(budgeted=True), cost_all_data=1.0, cost_selective=0.5)
    state["step"] = torch.tensor(20)
    state = loop_state.at(state, 0, 20, 0.0)
    before = state.clone()
    limit = ("flops", 1000.0)
    out = budget.replanned(state, PLAN, limit, used=600.0, used_before=600.0, steps=0, all_data=True)
    assert_tree_equal(state, before)
    # 80 warm-up steps left and 100 cool-down steps at cost 1 leave 220 for selective steps at 0.5
    assert _horizon(out) == 20 + 80 + 440 + 100
    assert float(out["loop", "cost_all_data"]) == 1.0  # 0 steps: no measurement
    more = budget.replanned(state, PLAN, limit, used=200.0, used_before=0.0, steps=100, all_data=True,
                            batch=20)  # 200 over 100 steps: measured 2.0, mean 0.7 * 1 + 0.3 * 2
    assert float(more["loop", "cost_all_data"]) == pytest.approx(1.3)
    assert _horizon(more) == 20 + round(remaining_steps(PLAN, 0, 20, 800.0, 1.3, 0.5)) == 1332
    spent = budget.replanned(state, PLAN, limit, used=5000.0, used_before=0.0, steps=10, all_data=False)
    assert float(spent["loop", "cost_selective"]) == 0.7 * 0.5 + 0.3 * 500.0
    assert _horizon(spent) == 20 + 80  # nothing left: the warm-up's rest only
    after = loop_state.at(spent, 3, 0, 0.0)
    assert _horizon(budget.replanned(after, PLAN, limit, 5000.0, 5000.0, 0, True)) == 21  # at least one more step


def test_a_first_measured_cost_replaces_unknown_and_the_cooldown_cost_follows_it():
    state = _state(budgeted=True)
    assert budget.running_cost(UNKNOWN, 3.0) == 3.0 and budget.running_cost(1.0, 3.0) == pytest.approx(1.6)
    measured = budget.with_measured_cost(state, False, 0.25)
    assert float(measured["loop", "cost_selective"]) == 0.25 and float(measured["loop", "cost_all_data"]) == UNKNOWN
    costed = budget.with_costs(state, cost_all_data=2.0)
    assert budget.state_cooldown_cost(costed, PLAN) == PLAN.cooldown_epochs * PLAN.all_data_steps * 2.0
    assert budget.only_cooldown_left(("flops", 1000.0), 800.0, 200.0)
    assert not budget.only_cooldown_left(("flops", 1000.0), 799.0, 200.0)
    assert budget.left(("time", 10.0), 12.0) == 0.0 and budget.spent(("time", 10.0), 10.0)
    assert budget.epochs_done(None, PLAN, 5) and not budget.epochs_done(("time", 1.0), PLAN, 5)
    assert budget.horizon(10, 0.2) == 11 and budget.horizon(10, 4.6) == 15


def test_a_pacer_without_a_budget_spends_nothing_and_keeps_the_state():
    class Clock:
        def now(self):
            return 123.0

    state = _state()
    idle = budget.Pacer(None, PLAN, Clock())
    assert not idle.spent(state) and not idle.cooldown_due(state, all_data=False)
    assert idle.replanned(state, 10, True) is state
    timed = budget.Pacer(("time", 100.0), PLAN, Clock())
    assert timed.used(state) == 123.0 and timed.spent(state)
    state = budget.with_costs(state, cost_all_data=1.0, cost_selective=1.0)
    timed.started(state)
    assert timed.used_before == 123.0 and timed.cooldown == PLAN.all_data_steps  # one cool-down epoch at 1 s a step
    out = timed.replanned(state, 0, True)
    assert _horizon(out) == PLAN.all_data_steps and timed.used_before == 123.0  # nothing left: the warm-up only
    assert timed.cooldown == PLAN.all_data_steps
    assert math.isinf(budget.Pacer(("flops", 1.0), PLAN, Clock()).cooldown)  # not started: never "only cool-down"
