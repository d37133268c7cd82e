import pytest
import torch
from tensordict import TensorDict
from torch import nn

from functional_ast import strategies
from functional_ast.core import optim, work
from functional_ast.core.losses import cross_entropy
from functional_ast.core.step import init_state, make_train_step


def test_account_counts_scoring_and_training_exactly():
    costs = work.WorkCosts(score_flops=10, train_flops=30)
    state = work.init()
    state, m = work.account(state, costs, 100, torch.tensor(100), torch.tensor(10))
    assert int(m["step_flops"]) == 100 * 10 + 10 * 30
    assert float(m["step_saved_pct"]) == pytest.approx(100 * (1 - 1300 / 3000))
    state, m = work.account(state, costs, 100, torch.tensor(0), torch.tensor(100))
    assert int(state["flops_spent"]) == 1300 + 3000 and int(state["flops_full"]) == 6000
    assert float(m["step_saved_pct"]) == 0 and float(m["saved_pct"]) == pytest.approx(100 * (1 - 4300 / 6000))
    assert (int(state["samples_seen"]), int(state["samples_scored"]), int(state["samples_trained"])) == (200, 100, 110)


def test_saved_can_be_negative_when_scoring_costs_more_than_it_saves():
    costs = work.WorkCosts(score_flops=10, train_flops=30)
    _, m = work.account(work.init(), costs, 10, torch.tensor(10), torch.tensor(9))
    assert float(m["step_saved_pct"]) < 0


def test_costs_are_measured_with_the_flop_counter():
    # One Linear layer 16 -> 4: forward 2*16*4 per sample; backward computes only the weight grad.
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    tx = optim.sgd(0.1)
    strategy = strategies.sundew(0.5)
    step = make_train_step(model, cross_entropy, tx, strategy)
    state = init_state(model, tx, strategy)
    batch = TensorDict(image=torch.randn(8, 1, 4, 4), label=torch.randint(0, 4, (8,)), batch_size=[8])
    _, m = step(state, batch)
    n = int(m["n_trained"])
    assert int(m["step_flops"]) == 8 * 128 + n * 256


def test_flops_per_sample_rejects_counts_that_do_not_grow_with_the_batch():
    with pytest.raises(ValueError, match="not linear"):
        work.flops_per_sample(lambda n: torch.ones(4, 4) @ torch.ones(4, 4))


def test_flops_per_sample_falls_back_to_one_sample_for_superlinear_counts():
    with pytest.warns(UserWarning, match="single-sample"):
        assert work.flops_per_sample(lambda n: torch.ones(n, 3) @ torch.ones(3, n)) == 2 * 3
