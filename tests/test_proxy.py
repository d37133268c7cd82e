"""The proxy strategy: a small model picks the pool's hardest samples, learns from what the main model trains, and
its FLOPs are charged to the run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_tree_equal, make_batch, tiny_mlp
from test_trainer import _net, _tensors
from torch.utils.flop_counter import FlopCounterMode

import functional_ast as fa
from functional_ast import strategies
from functional_ast.strategies.proxy import proxy
from functional_ast.train.config import ConfigError, parse_variant
from functional_ast.train.trainer import Data, Run


def _proxy_losses(model, batch):
    with torch.no_grad():
        return F.cross_entropy(model(batch["image"]), batch["label"], reduction="none")


def test_rule_hardest_keeps_the_samples_the_proxy_finds_hardest_and_mutates_nothing():
    scorer = tiny_mlp()
    strategy = proxy(scorer, rate=0.25, rule="hardest")
    state, batch = strategy.init(), make_batch(32)
    before, batch_before = state.clone(), batch.clone()
    selection = strategy.select(state, batch, fa.prng.key(0), None)
    expected = torch.topk(_proxy_losses(scorer, batch), 8).indices.sort().values
    assert torch.equal(selection.index, expected)
    assert int(selection.mask.sum()) == 8 and torch.equal(selection.mask.nonzero()[:, 0], expected)
    assert int(selection.info["n_scored"]) == 0  # the main model scores nothing
    assert_tree_equal(state, before)
    assert_tree_equal(batch, batch_before)


def test_rule_proportional_draws_high_proxy_loss_more_often_but_not_only():
    strategy = proxy(tiny_mlp(), rate=0.25, train_every=1, lr=0.1)  # the default rule
    state, batch = strategy.init(), make_batch(32)
    for _ in range(20):  # a proxy that has learnt something: its losses spread out
        state = strategy.observe(state, batch, torch.arange(32), torch.zeros(32))
    picks = torch.stack([strategy.select(state, batch, fa.prng.key(i), None).mask for i in range(400)]).float()
    assert (picks.sum(1) == 8).all()
    loss = fa.losses.per_sample_losses(fa.losses.make_apply(tiny_mlp()), fa.cross_entropy, state["params"],
                                       state["buffers"], batch["image"], batch["label"])
    order = loss.argsort()
    low, high = picks[:, order[:8]].mean(), picks[:, order[-8:]].mean()
    assert high > 1.5 * low and low > 0.05  # the easiest are still drawn (the explore share)
    assert torch.corrcoef(torch.stack([picks.mean(0), loss]))[0, 1] > 0.8


def test_the_proxy_learns_from_the_samples_the_main_model_trains():
    scorer = tiny_mlp()
    strategy = proxy(scorer, rate=0.25, train_every=1, lr=0.1)
    state, batch = strategy.init(), make_batch(64)
    first = state.clone()
    everything = torch.arange(64)
    for _ in range(30):
        state = strategy.observe(state, batch, everything, torch.zeros(64))
    assert_tree_equal(strategy.init(), first)  # observe returned new states, the first one is untouched
    trained = fa.losses.per_sample_losses(fa.losses.make_apply(scorer), fa.cross_entropy, state["params"],
                                          state["buffers"], batch["image"], batch["label"])
    assert float(trained.mean()) < 0.8 * float(_proxy_losses(scorer, batch).mean())


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def test_the_proxys_forward_and_training_flops_are_charged_to_the_step():
    model, scorer = tiny_mlp(), tiny_mlp()
    batch = make_batch(32)
    tx = fa.sgd(0.05, momentum=0.9)
    spent = {}
    for name, strategy in (("random", strategies.random_subset(0.25)), ("proxy", proxy(scorer, 0.25, train_every=4))):
        state = fa.init_state(model, tx, strategy)
        new, metrics = fa.make_train_step(model, fa.cross_entropy, tx, strategy)(state, batch)
        assert int(metrics["n_trained"]) == 8
        spent[name] = int(new["work", "flops_spent"])
    forward = _flops(lambda: scorer(batch["image"][:1]))
    train = _flops(lambda: F.cross_entropy(scorer(batch["image"][:1]), batch["label"][:1]).backward())
    # the pool's 32 proxy forwards, and proxy training on every 4th of the 8 trained samples
    assert spent["proxy"] - spent["random"] == 32 * forward + 2 * train
    assert forward > 0 and train > 2 * forward


def test_a_skipped_update_still_charges_the_proxy_flops_it_executed():
    model, scorer = tiny_mlp(), tiny_mlp()
    tx, strategy = fa.sgd(0.05, momentum=0.9), proxy(scorer, 0.25, train_every=4)
    step = fa.make_train_step(model, fa.cross_entropy, tx, strategy)
    state = fa.init_state(model, tx, strategy)
    clean, clean_metrics = step(state, make_batch(32, seed=1))
    poisoned = make_batch(32, seed=1)
    poisoned["image"][:] = float("nan")
    skipped, metrics = step(state, poisoned)
    assert int(metrics["skipped_nonfinite"]) == 1 and int(clean_metrics["skipped_nonfinite"]) == 0
    # the same forwards and proxy updates ran (their results were discarded): the same FLOPs charged
    assert int(metrics["step_flops"]) == int(clean_metrics["step_flops"])
    assert int(skipped["work", "flops_spent"]) == int(clean["work", "flops_spent"])
    assert int(skipped["selector", "flops"]) == int(clean["selector", "flops"]) > 0
    assert_tree_equal(skipped["selector"].exclude("flops"), state["selector"].exclude("flops"))


def test_a_run_with_the_proxy_charges_it_reports_it_and_resumes_it_exactly():
    train, test = _tensors(n=640, seed=2), _tensors(n=64, seed=3)
    data = Data.prepare(train, test)
    config = fa.TrainConfig(strategy="proxy", target_rate=0.25, epochs=3, warmup_epochs=1, batch_size=16, lr=0.2,
                            options={"width": 4})
    whole = Run(_net(), data, config)
    result = whole.finish()
    summary = result.summary
    assert summary["proxy_flops"] > 0 and summary["flops_spent"] > summary["proxy_flops"]
    assert summary["samples_scored"] == 0
    initial = Run(_net(), data, config).state["selector", "params"]
    assert initial["0.weight"].shape[:2] == (4, 1)  # models.cnn(width=4) on the data's one channel
    assert not torch.equal(whole.state["selector", "params", "0.weight"], initial["0.weight"])  # it learnt
    first = Run(_net(), data, config)
    first.advance()
    first.advance()
    resumed = Run(_net(), data, config, state=first.state.clone())
    resumed.finish()
    assert_tree_equal(resumed.state["selector"], whole.state["selector"])
    assert_tree_equal(resumed.state["params"], whole.state["params"])


def test_the_proxy_needs_its_model_and_a_width_variant_sets_the_config():
    with pytest.raises(ConfigError, match="image classification"):  # it builds its cnn from the images' shape
        strategies.build("proxy", strategies.Context(num_samples=10, target_rate=0.3, pool_size=10))
    assert parse_variant("proxy:width=16") == ("proxy", {"options": {"width": 16}})
    context = strategies.Context(num_samples=10, target_rate=0.3, pool_size=10, sample_shape=(1, 8, 8), num_classes=4)
    assert strategies.build("proxy", context, {"rule": "hardest"}).name == "proxy"
    with pytest.raises(ConfigError, match="unknown rule"):
        proxy(tiny_mlp(), 0.3, rule="top")
    with pytest.raises(ConfigError, match="proxy.width"):
        fa.TrainConfig(strategy="proxy", options={"width": 0})
