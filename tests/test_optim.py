import pytest
import torch
from tensordict import TensorDict
from torch import nn

from functional_ast import optim
from conftest import assert_tree_equal


def _problem():
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    x, y = torch.randn(16, 5), torch.randn(16, 3)
    return model, x, y


def _compare(ours, theirs_factory, steps=5):
    model, x, y = _problem()
    params = TensorDict({n: p.detach().clone() for n, p in model.named_parameters()})
    theirs = theirs_factory(model.parameters())
    state = ours.init(params)
    for _ in range(steps):
        theirs.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        theirs.step()
        grads = torch.func.grad(lambda p: nn.functional.mse_loss(
            torch.func.functional_call(model, dict(p.items()), (x,)), y))(params)
        updates, state = ours.update(grads, state, params)
        params = optim.apply_updates(params, updates)
    for name, p in model.named_parameters():
        torch.testing.assert_close(params[name], p.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_matches_torch(nesterov):
    _compare(optim.sgd(0.1, momentum=0.9, nesterov=nesterov, weight_decay=0.01),
             lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=nesterov, weight_decay=0.01))


def test_plain_sgd_matches_torch():
    _compare(optim.sgd(0.2, momentum=0.0), lambda p: torch.optim.SGD(p, lr=0.2))


def test_adamw_matches_torch():
    _compare(optim.adam(0.01, weight_decay=0.1), lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1))


def test_l2_adam_matches_torch():
    _compare(optim.adam(0.01, weight_decay=0.1, decoupled=False),
             lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1))


def test_schedule_is_applied_per_update():
    sched = optim.warmup_cosine(1.0, total_steps=10, warmup_steps=2)
    values = [float(sched(torch.tensor(i))) for i in range(12)]
    assert values[0] == pytest.approx(0.5) and values[1] == pytest.approx(1.0)
    assert values[2] == pytest.approx(1.0) and values[9] < 0.05 and values[11] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(values[2:], values[3:]))
    tx = optim.sgd(sched, momentum=0.0)
    params = TensorDict(w=torch.zeros(()))
    state = tx.init(params)
    grads = TensorDict(w=torch.ones(()))
    for expected in values[:3]:
        updates, state = tx.update(grads, state, params)
        assert float(updates["w"]) == pytest.approx(-expected)


def test_update_is_pure():
    tx = optim.adam(0.1)
    params = TensorDict(w=torch.randn(3))
    state = tx.init(params)
    grads = TensorDict(w=torch.randn(3))
    copies = params.clone(), state.clone(), grads.clone()
    tx.update(grads, state, params)
    for a, b in zip((params, state, grads), copies):
        assert_tree_equal(a, b)
