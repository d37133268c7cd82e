"""RHO-LOSS: cross-fitted irreducible losses, selection by reducible loss, and the trainer charging the reference."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_tree_equal
from tensordict import TensorDict
from test_trainer import _net, _tensors

import functional_ast as fa
from functional_ast import strategies
from functional_ast.data import images as fdata
from functional_ast.strategies.rho_loss import halves
from functional_ast.train import reference
from functional_ast.train.trainer import Data, Run, train_full


def test_halves_split_every_sample_into_one_of_two_seeded_halves():
    a, b = halves(101, seed=3)
    assert sorted(torch.cat([a, b]).tolist()) == list(range(101))
    assert abs(len(a) - len(b)) <= 1
    assert torch.equal(a, halves(101, seed=3)[0])
    assert not torch.equal(a, halves(101, seed=4)[0])


def test_the_reference_loss_of_a_flipped_label_is_high_because_no_reference_trained_on_it():
    images, labels = _tensors(n=640, seed=2)
    noisy = fdata.with_label_noise(fdata.from_tensors(images, labels), 0.3, seed=0)
    data = Data.prepare(noisy, _tensors(n=32, seed=3))
    config = fa.TrainConfig(strategy="rho_loss", batch_size=16, seed=0, lr=0.2)
    torch.manual_seed(0)
    ref = reference.cross_fitted_losses(_net()(), data, config, epochs=3, fit=train_full)
    flipped = noisy.data["label"] != noisy.data["clean_label"]
    assert ref.losses.shape == (640,) and ref.seconds > 0 and ref.flops > 0
    assert ref.accuracy > 0.4  # of the labels as given (chance: 0.25)
    assert float(ref.losses[flipped].mean()) > 2 * float(ref.losses[~flipped].mean())
    torch.manual_seed(0)
    again = reference.cross_fitted_losses(_net()(), data, config, epochs=3, fit=train_full)
    assert torch.equal(ref.losses, again.losses)  # a pure function of its inputs


def test_rho_loss_draws_the_learnable_not_yet_learnt_and_skips_what_the_reference_cannot_fit():
    strategy = strategies.rho_loss(num_samples=300, rate=0.2)
    loss = torch.full((300,), 2.0)
    ref = torch.cat([torch.full((100,), 0.2),    # learnable, not learnt yet: reducible 1.8
                     torch.full((100,), 2.0),    # as hard for a model that never saw them (noise): reducible 0
                     torch.full((100,), 0.2)])   # learnt already:
    loss[200:] = 0.2                             # reducible 0
    state = strategies.with_reference(strategy.init(), ref, seconds=1.5, accuracy=0.6)
    state["loss"], state["seen"] = loss, torch.ones(300, dtype=torch.bool)
    before = state.clone()
    pool = TensorDict(index=torch.arange(300), batch_size=[300])
    picks = torch.stack([strategy.select(state, pool, fa.prng.key(i), None).mask for i in range(50)]).float()
    assert_tree_equal(state, before)  # nothing mutated
    assert int(picks[0].sum()) == 60  # round(0.2 * 300), a fixed count
    assert picks[:, :100].mean() > 5 * picks[:, 100:].mean()
    # without a reference written it is stale's proportional rule (every sample equally hard here)
    bare = strategy.init()
    bare["loss"], bare["seen"] = loss, torch.ones(300, dtype=torch.bool)
    plain = torch.stack([strategy.select(bare, pool, fa.prng.key(i), None).mask for i in range(50)]).float()
    assert plain[:, :200].mean() > 3 * plain[:, 200:].mean()


def test_with_reference_refuses_losses_of_another_training_set():
    with pytest.raises(fa.ConfigError, match="same training set"):
        strategies.with_reference(strategies.rho_loss(num_samples=10, rate=0.5).init(), torch.zeros(11))


def _config(**changes):
    return fa.TrainConfig(strategy="rho_loss", epochs=3, batch_size=16, target_rate=0.25,
                          options={"reference_epochs": 2}).replace(**changes)


def test_the_run_pays_for_its_references_in_time_and_flops():
    train, test = _tensors(n=640, seed=2), _tensors(n=64, seed=3)
    rho = fa.fit(_net(), train, test, _config())
    stale = fa.fit(_net(), train, test, _config().replace(strategy="stale"))
    s = rho.summary
    assert 0 < s["reference_time_s"] < s["train_time_s"] and 0 < s["reference_accuracy"] <= 1
    assert s["samples_trained"] == stale.summary["samples_trained"]  # same rate, pools and epochs
    per_sample = s["flops_full"] / s["samples_seen"]  # one training forward + backward
    extra = s["flops_spent"] - stale.summary["flops_spent"]
    trained = 2 * 2 * (320 // 16) * 16  # two references x 2 epochs x the full batches of a half
    assert trained * per_sample < extra < (trained + 640 / 2) * per_sample  # + a forward over every sample
    assert bool(rho.state["selector", "has_reference"]) and float(rho.state["selector", "reference"].std()) > 0


def test_a_flop_budget_includes_the_references():
    train, test = _tensors(n=640, seed=2), _tensors(n=64, seed=3)
    one_epoch = fa.fit(_net(), train, test, _config(strategy="full", epochs=1)).summary
    per_sample = one_epoch["flops_full"] / one_epoch["samples_seen"]
    budget = 6 * 640 * per_sample  # six epochs' worth; the references take about two of them
    runs = {name: fa.fit(_net(), train, test, _config(strategy=name, epochs=100, flop_budget=budget))
            for name in ("rho_loss", "stale")}
    for result in runs.values():  # each stops at the first step past the budget
        assert budget <= result.summary["flops_spent"] < budget + 16 * 4 * per_sample
    assert runs["rho_loss"].summary["samples_trained"] < 0.75 * runs["stale"].summary["samples_trained"]


def test_a_resumed_run_keeps_its_reference_and_does_not_train_another(monkeypatch):
    train, test = _tensors(n=640, seed=2), _tensors(n=64, seed=3)
    data = Data.prepare(train, test)
    first = Run(_net(), data, _config())
    first.advance()
    saved = first.state.clone()

    def refuse(*args, **kwargs):
        raise AssertionError("a resumed run trained its references again")

    monkeypatch.setattr(reference, "cross_fitted_losses", refuse)
    resumed = Run(_net(), data, _config(), state=saved)
    resumed.advance()
    assert torch.equal(resumed.state["selector", "reference"], saved["selector", "reference"])
    assert resumed.epoch == 2
