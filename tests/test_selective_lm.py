"""Rho-1's selective language modelling: the masked loss is the hand-computed one, and a run trains with its
reference charged to it."""

from __future__ import annotations

import math

import pytest
import torch
from test_lm import CONTEXT, _batch, _gpt, corpus  # noqa: F401  (corpus: the fixture)

import functional_ast as fa
from functional_ast.core.losses import buffers_of, params_of
from functional_ast.tasks.selective import selective_language_modelling, top_excess_mask
from functional_ast.train.selective import fit_selective


def test_the_masked_loss_is_the_mean_over_each_window_s_top_excess_tokens():
    reference, model = _gpt(), _gpt()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    task = selective_language_modelling(reference, params_of(reference), buffers_of(reference), keep=0.25)
    batch = _batch(3)
    x, window = task.inputs(batch), task.targets(batch)
    got = task.loss(model(x), window)
    k = round(0.25 * CONTEXT)
    with torch.no_grad():
        for b in range(3):
            y = window[b, 1:]
            mine = -model(x[b:b + 1])[0].log_softmax(-1)[torch.arange(CONTEXT), y]
            theirs = -reference(x[b:b + 1])[0].log_softmax(-1)[torch.arange(CONTEXT), y]
            kept = sorted(range(CONTEXT), key=lambda t: float(mine[t] - theirs[t]), reverse=True)[:k]
            assert float(got[b]) == pytest.approx(float(mine[kept].mean()), rel=1e-4)
    logits = model(x).detach().requires_grad_()
    task.loss(logits, window).sum().backward()
    assert (logits.grad.abs().sum(-1) > 0).sum(-1).tolist() == [k] * 3  # the gradient comes from k tokens a window
    # against itself every excess is 0: the loss is still a mean over k of its tokens
    assert top_excess_mask(torch.ones(2, 8), torch.ones(2, 8), 0.5).sum(-1).tolist() == [4.0, 4.0]
    with pytest.raises(fa.ConfigError):
        selective_language_modelling(reference, params_of(reference), buffers_of(reference), keep=0.0)


def test_a_selective_run_trains_and_pays_for_its_reference(corpus):  # noqa: F811
    train, test = corpus
    config = fa.TrainConfig(strategy="full", epochs=2, batch_size=8, optimizer="adam", lr=3e-3)
    plain = fa.fit(lambda: _gpt(), train, test, config, task=fa.language_modelling())
    result = fit_selective(lambda: _gpt(), train, test, config, keep=0.5, reference_epochs=1)
    summary = result.summary
    assert math.isfinite(summary["test_bits_per_byte"]) and summary["test_loss"] < math.log(256)
    # the reference's epoch and every step's reference forward are in the run's FLOPs: more than the plain run's
    assert summary["flops_spent"] > plain.summary["flops_spent"] * 1.3
    assert summary["train_time_s"] > 0


def test_a_reference_slice_smaller_than_a_batch_trains_in_batches_of_its_size(corpus):  # noqa: F811
    """Rho-1's curated slice of a small corpus can hold fewer windows than a batch (the map's text-with-junk cell:
    17 windows against batches of 32): the reference trains on it whole, the run goes on."""
    from functional_ast.data.loaders import as_data
    from functional_ast.pays import rho1

    train, test = corpus
    small = rho1.reference_data(as_data(train, test), 0.1, seed=0)
    config = fa.TrainConfig(strategy="full", epochs=1, batch_size=small.num_samples + 2, optimizer="adam", lr=3e-3)
    assert 0 < small.num_samples < config.batch_size <= len(train)
    result = fit_selective(lambda: _gpt(), train, test, config, keep=0.5, reference_epochs=2, reference_data=small)
    assert math.isfinite(result.summary["test_bits_per_byte"])


def test_a_selective_run_resumed_from_a_safe_point_ends_as_the_uninterrupted_one(corpus, tmp_path):  # noqa: F811
    """Resumed from a checkpoint, a selective run retrains the same reference without charging it again and
    ends bit-identical to the uninterrupted run, its FLOPs (the reference's included once) equal."""
    from conftest import assert_tree_equal

    from functional_ast.edges import checkpoint

    train, test = corpus
    config = fa.TrainConfig(strategy="full", epochs=3, batch_size=8, optimizer="adam", lr=3e-3)
    saved = []

    class KeepSafePoints(fa.Callback):
        def on_safe_point(self, run):
            saved.append(checkpoint.save(tmp_path / str(len(saved)), run.state, {}))

    whole = fit_selective(lambda: _gpt(), train, test, config, keep=0.5, callbacks=[KeepSafePoints()],
                          safe_point_every=3)
    middle, _ = checkpoint.load(saved[1])
    assert 0 < int(middle["step"]) < int(whole.state["step"])
    resumed = fit_selective(lambda: _gpt(), train, test, config, keep=0.5, state=middle, safe_point_every=3)
    assert_tree_equal(resumed.state.exclude("clock", "history"), whole.state.exclude("clock", "history"))
    assert resumed.summary["flops_spent"] == whole.summary["flops_spent"]
    assert resumed.history.series("loss") == whole.history.series("loss")
    assert [e["test_loss"] for e in resumed.history.epochs] == [e["test_loss"] for e in whole.history.epochs]
