import pytest
import torch
from conftest import assert_tree_equal
from tensordict import TensorDict
from torch import nn

from functional_ast.core import optim


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


def _optimisers():
    sched = optim.warmup_cosine(0.1, total_steps=10, warmup_steps=2)
    return {"sgd": optim.sgd(0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
            "sgd-schedule": optim.sgd(sched, momentum=0.9, weight_decay=0.01),
            "adamw": optim.adam(0.01, weight_decay=0.1),
            "adam-l2-schedule": optim.adam(sched, weight_decay=0.1, decoupled=False)}


@pytest.mark.parametrize("name", list(_optimisers()))
def test_every_update_is_pure(name):
    tx = _optimisers()[name]
    params = TensorDict(w=torch.randn(3), b=torch.randn(2, 2))
    state = tx.init(params)
    grads = TensorDict(w=torch.randn(3), b=torch.randn(2, 2))
    for _ in range(2):  # the second update starts from non-zero moments
        copies = params.clone(), state.clone(), grads.clone()
        updates, new_state = tx.update(grads, state, params)
        new_params = optim.apply_updates(params, updates)
        for a, b in zip((params, state, grads), copies):
            assert_tree_equal(a, b)
        assert set(new_state.keys(True, True)) == set(state.keys(True, True))
        params, state = new_params, new_state


@pytest.mark.parametrize("name", list(_optimisers()))
def test_nested_and_flat_params_give_the_same_updates(name):
    tx = _optimisers()[name]
    torch.manual_seed(1)
    flat = TensorDict({"a.w": torch.randn(4), "a.b": torch.randn(2), "c": torch.randn(3, 2)})
    nested = TensorDict(a=TensorDict(w=flat["a.w"], b=flat["a.b"]), c=flat["c"])
    grads_flat = flat.apply(torch.randn_like)
    grads_nested = TensorDict(a=TensorDict(w=grads_flat["a.w"], b=grads_flat["a.b"]), c=grads_flat["c"])
    sf, sn = tx.init(flat), tx.init(nested)
    for _ in range(3):
        uf, sf = tx.update(grads_flat, sf, flat)
        un, sn = tx.update(grads_nested, sn, nested)
        flat, nested = optim.apply_updates(flat, uf), optim.apply_updates(nested, un)
    assert isinstance(nested["a"], TensorDict)
    for fk, nk in (("a.w", ("a", "w")), ("a.b", ("a", "b")), ("c", "c")):
        assert torch.equal(flat[fk], nested[nk])


class _CountOps(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def _ops_per_step(tx, n_leaves):
    params = TensorDict({f"p{i}": torch.randn(5) for i in range(n_leaves)})
    state = tx.init(params)
    grads = params.apply(torch.randn_like)
    with _CountOps() as count:
        updates, _ = tx.update(grads, state, params)
        optim.apply_updates(params, updates)
    return count.n


@pytest.mark.parametrize("name", list(_optimisers()))
def test_op_count_does_not_grow_with_the_number_of_parameters(name):
    tx = _optimisers()[name]
    few, many = _ops_per_step(tx, 2), _ops_per_step(tx, 40)
    assert few == many <= 40, (few, many)  # multi-tensor (foreach) ops and 0-d schedule maths, not per leaf
