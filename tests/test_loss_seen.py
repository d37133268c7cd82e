"""`loss_seen`: the step's loss over all samples it saw, beside `loss` (the trained ones'), so the training
objective's curve stays continuous where selection starts."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from conftest import make_batch, tiny_bn_model
from tensordict import TensorDict
from torch import nn
from torch.func import functional_call

import functional_ast as fa
from functional_ast import strategies
from functional_ast.core import optim, sampling
from functional_ast.core.selection import all_data, remembered_mean, with_selection_info
from functional_ast.core.step import init_state, make_train_step


def _step(strategy, model):
    opt = optim.sgd(0.1, momentum=0.9)
    return make_train_step(model, None, opt, strategy), init_state(model, opt, strategy)


def _pool_losses(model: nn.Module, state, batch) -> torch.Tensor:
    """The pool's per-sample losses by hand: a train-mode forward (batch statistics) of the state's parameters."""
    net = copy.deepcopy(model).train()
    with torch.no_grad():
        logits = functional_call(net, {**dict(state["params"].items()), **dict(state["buffers"].items())},
                                 (batch["image"],))
    return F.cross_entropy(logits, batch["label"], reduction="none")


def test_a_fresh_scoring_rule_reports_the_mean_of_the_pools_losses():
    model = tiny_bn_model()
    step, state = _step(strategies.sundew(0.25), model)
    batch = make_batch(64)
    new_state, metrics = step(state, batch)
    expected = _pool_losses(model, state, batch).mean()
    assert int(metrics["n_trained"]) < 64  # the trained ones are a subset: their loss differs
    torch.testing.assert_close(metrics["loss_seen"], expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(metrics["loss"], expected)


def test_full_data_reports_its_loss():
    model = tiny_bn_model()
    for strategy in (strategies.full(), all_data(strategies.sundew(0.25))):
        step, state = _step(strategy, model)
        _, metrics = step(state, make_batch(32))
        assert torch.equal(metrics["loss_seen"], metrics["loss"])


def test_a_remembered_loss_rule_reports_the_mean_of_its_table_over_the_pool():
    model = tiny_bn_model()
    strategy = strategies.stale(64, 0.25)
    step, state = _step(strategy, model)
    batch = make_batch(32)
    table = torch.linspace(0.5, 2.0, 64)
    seen = torch.arange(64) % 3 != 0
    state["selector"] = state["selector"].clone().update(dict(loss=table, seen=seen))
    _, metrics = step(state, batch)
    pool = batch["index"]
    expected = table[pool][seen[pool]].mean()
    torch.testing.assert_close(metrics["loss_seen"], expected)
    state["selector"] = state["selector"].clone().update(dict(seen=torch.zeros(64, dtype=torch.bool)))
    _, metrics = step(state, batch)
    assert torch.equal(metrics["loss_seen"], metrics["loss"])  # nothing remembered: the trained samples' loss


def _hard_and_easy(n=128, seed=0):
    """Images whose class sets their brightness, with a quarter of the labels shuffled: those stay hard."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    images = (torch.rand(n, 1, 8, 8, generator=g) * 40 + 60 * labels.view(-1, 1, 1, 1)).to(torch.uint8)
    noisy = torch.randperm(n, generator=g)[: n // 4]
    labels[noisy] = torch.randint(0, 4, (noisy.shape[0],), generator=g)
    return images, labels


def test_across_the_warmup_boundary_loss_seen_is_continuous_where_loss_jumps():
    def net():
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(8, 4))

    train = _hard_and_easy()
    config = fa.TrainConfig(strategy="sundew", epochs=3, warmup_epochs=2, cooldown_epochs=0, batch_size=16,
                            target_rate=0.25, augment=False, lr=0.05)
    history = fa.fit(net, train, _hard_and_easy(32, seed=1), config, log_every=4).history
    steps, loss = history.series("loss")
    _, seen = history.series("loss_seen")
    boundary = 2 * 128 // 16  # the first selective step
    before = sum(seen[boundary - 3:boundary]) / 3
    loss_before = sum(loss[boundary - 3:boundary]) / 3
    after_loss, after_seen = sum(loss[boundary:boundary + 2]) / 2, sum(seen[boundary:boundary + 2]) / 2
    assert seen[:boundary] == loss[:boundary]  # all data: the same
    assert after_loss - loss_before > 3 * abs(after_seen - before), (loss_before, after_loss, before, after_seen)


def test_an_index_only_rules_pool_mean_reaches_the_metrics_and_prioritized_reports_its_tables_mean():
    step, state = _step(all_data(strategies.full()), tiny_bn_model())
    metrics = step(state, make_batch(8))[1]
    merged = with_selection_info(metrics, TensorDict(loss_seen=torch.tensor(0.25), threshold=torch.tensor(0.5)))
    assert float(merged["loss_seen"]) == 0.25 and float(merged["threshold"]) == 0.5
    assert torch.equal(merged["loss"], metrics["loss"])
    nothing = with_selection_info(metrics, TensorDict(loss_seen=torch.tensor(float("nan"))))
    assert torch.equal(nothing["loss_seen"], metrics["loss"])  # nothing remembered: the trained samples' loss
    strategy = strategies.prioritized(16, 0.5, batch_size=8)
    selector = strategy.init()
    selector = selector.update(dict(priority=torch.linspace(0.1, 1.6, 16), seen=torch.arange(16) < 10))
    drawn = sampling.draw(strategy, selector, torch.arange(16), batch=0, size=8, seed=0, epoch=1, all_data=False)
    expected = remembered_mean(selector["priority"], selector["seen"])
    torch.testing.assert_close(drawn.info["loss_seen"], expected)
    torch.testing.assert_close(expected, torch.linspace(0.1, 1.6, 16)[:10].mean())


def test_a_run_of_a_remembered_loss_rule_logs_its_tables_mean_over_each_pool():
    def net():
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(8, 4))

    config = fa.TrainConfig(strategy="stale", epochs=2, warmup_epochs=1, cooldown_epochs=0, batch_size=16,
                            target_rate=0.25, augment=False)
    history = fa.fit(net, _hard_and_easy(), _hard_and_easy(32, seed=1), config, log_every=4).history
    _, loss = history.series("loss")
    _, seen = history.series("loss_seen")
    warmup = 128 // 16
    assert seen[:warmup] == loss[:warmup] and len(seen) == len(loss) > warmup
    assert all(s == s for s in seen) and all(s != t for s, t in zip(seen[warmup:], loss[warmup:]))
