"""Mixed precision as one option: every precision trains, the losses that drive selection are float32, resume is
bit-exact, compiled agrees with eager, and 16-mixed's loss scale halves on a non-finite gradient (the guard's skip)."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_tree_equal, make_batch, tiny_bn_model, tiny_mlp
from test_compile import needs_compile

import functional_ast as fa
from functional_ast import strategies
from functional_ast.core import precision as amp
from functional_ast.core.losses import (
    buffers_of,
    last_layer_keys,
    make_apply,
    params_of,
    per_sample_grad_norms,
    per_sample_losses,
)
from functional_ast.core.significance import grad_norm
from functional_ast.edges import checkpoint
from functional_ast.train.config import ConfigError
from functional_ast.train.trainer import Data

PRECISIONS = ("32", "bf16-mixed", "16-mixed")
MIXED = PRECISIONS[1:]


def _setup(precision, strategy=None, model_fn=tiny_bn_model, compile=False):
    model, strategy = model_fn(), strategy or strategies.full()
    tx = fa.sgd(0.1, momentum=0.9)
    return fa.init_state(model, tx, strategy), fa.make_train_step(model, fa.cross_entropy, tx, strategy,
                                                                  precision=precision, compile=compile)


def test_the_option_is_validated_in_one_line():
    with pytest.raises(ConfigError, match=r"TrainConfig.precision must be one of 32, bf16-mixed, 16-mixed, got 'fp8'"):
        fa.TrainConfig(precision="fp8")
    assert fa.TrainConfig().precision == "32"
    from functional_ast.cli import main as cli

    assert cli.train_config(cli.build_parser().parse_args(["--data", "x", "--precision", "16-mixed"])).precision == (
        "16-mixed")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_each_precision_trains_and_keeps_params_and_optimiser_state_float32(precision):
    state, step = _setup(precision)
    batch = make_batch(32)
    losses = []
    for _ in range(15):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
        assert int(metrics["skipped_nonfinite"]) == 0
    assert all(v == v for v in losses) and losses[-1] < 0.8 * losses[0], losses
    for key, value in state.exclude("step", "rng", "work", "scaler").items(True, True):
        assert value.dtype in (torch.float32, torch.int64), (key, value.dtype)
    assert metrics["loss"].dtype == torch.float32


@pytest.mark.parametrize("precision", MIXED)
def test_mixed_logits_are_cast_to_float32_before_the_per_sample_losses(precision):
    model, batch = tiny_bn_model(), make_batch(32)
    params, buffers = params_of(model), buffers_of(model)
    mixed, full = make_apply(model, precision), make_apply(model, "32")
    logits, _ = mixed.train(params, buffers, batch["image"])
    assert logits.dtype == torch.float32
    scored = per_sample_losses(mixed, fa.cross_entropy, params, buffers, batch["image"], batch["label"])
    exact = per_sample_losses(full, fa.cross_entropy, params, buffers, batch["image"], batch["label"])
    assert scored.dtype == torch.float32
    assert not torch.equal(scored, exact)  # the forward really ran in the lower precision
    torch.testing.assert_close(scored, exact, rtol=5e-2, atol=5e-2)
    # ... and in the step: the losses a scoring rule selects on
    seen = []
    sundew = strategies.sundew(0.25)

    def select(state, b, key, score):
        def spy():
            out = score()
            seen.append(out["loss"].dtype)
            return out
        return sundew.select(state, b, key, spy)

    state, step = _setup(precision, sundew._replace(select=select))
    step(state, batch)
    assert seen == [torch.float32]


@pytest.mark.parametrize("precision", MIXED)
def test_per_sample_gradient_norms_run_under_vmap_in_autocast(precision):
    model, batch = tiny_mlp(), make_batch(16)
    params, buffers = params_of(model), buffers_of(model)
    keys = last_layer_keys(params)
    norms = [per_sample_grad_norms(make_apply(model, p), fa.cross_entropy, params, buffers, batch["image"],
                                   batch["label"], keys) for p in (precision, "32")]
    assert norms[0].dtype == torch.float32 and bool(norms[0].isfinite().all())
    torch.testing.assert_close(norms[0], norms[1], rtol=5e-2, atol=5e-3)
    strategy = strategies.sundew(0.25, significance=grad_norm, needs=("loss", "grad_norm"))
    state, step = _setup(precision, strategy, tiny_mlp)
    _, metrics = step(state, batch)
    assert int(metrics["n_trained"]) > 0 and bool(metrics["loss"].isfinite())


def test_a_non_finite_scaled_gradient_skips_the_update_and_halves_the_scale():
    state, step = _setup("16-mixed")
    batch = make_batch(32)
    state["scaler"] = state["scaler"].clone().update(dict(scale=torch.tensor(2.0 ** 40)))  # overflows float16
    new, metrics = step(state, batch)
    assert int(metrics["skipped_nonfinite"]) == 1 and bool(metrics["loss"].isfinite())  # the unscaled loss is fine
    assert float(new["scaler", "scale"]) == 2.0 ** 39 and int(new["scaler", "growth"]) == 0
    assert_tree_equal(new["params"], state["params"])
    assert_tree_equal(new["opt"], state["opt"])
    bad = make_batch(32)
    bad["image"][0, 0, 0, 0] = float("nan")  # a non-finite loss: the same skip, the same halving
    newer, metrics = step(new, bad)
    assert int(metrics["skipped_nonfinite"]) == 1 and float(newer["scaler", "scale"]) == 2.0 ** 38
    steady, metrics = step(fa.init_state(tiny_bn_model(), fa.sgd(0.1, momentum=0.9), strategies.full()), batch)
    assert int(metrics["skipped_nonfinite"]) == 0
    assert float(steady["scaler", "scale"]) == 2.0 ** 16 and int(steady["scaler", "growth"]) == 1
    for precision in ("32", "bf16-mixed"):  # no scaling: the scaler is carried unchanged
        other, step_other = _setup(precision)
        assert_tree_equal(step_other(other, batch)[0]["scaler"], other["scaler"])


def test_the_scale_doubles_after_an_interval_of_finite_steps():
    scaler = amp.init_scaler()
    yes, no = torch.tensor(True), torch.tensor(False)
    for _ in range(2):
        scaler = amp.rescaled(scaler, yes, interval=3)
    assert float(scaler["scale"]) == 2.0 ** 16 and int(scaler["growth"]) == 2
    scaler = amp.rescaled(scaler, yes, interval=3)
    assert float(scaler["scale"]) == 2.0 ** 17 and int(scaler["growth"]) == 0
    scaler = amp.rescaled(amp.rescaled(scaler, yes, interval=3), no, interval=3)
    assert float(scaler["scale"]) == 2.0 ** 16 and int(scaler["growth"]) == 0


def _tensors(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    images = (torch.rand(n, 1, 8, 8, generator=g) * 60 + 60 * labels.view(-1, 1, 1, 1)).to(torch.uint8)
    return images, labels


def _net():
    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_resume_is_bit_exact_in_each_precision(precision, tmp_path):
    config = fa.TrainConfig(strategy="sundew", epochs=3, batch_size=16, target_rate=0.25, precision=precision)
    data = Data.prepare(_tensors(), _tensors(32, seed=1))
    saved = []

    class SaveSecondSafePoint(fa.Callback):
        def on_safe_point(self, run):
            if len(saved) < 2:
                saved.append(checkpoint.save(tmp_path / str(len(saved)), run.state, {}))

    reference = fa.fit(_net, data, None, config, callbacks=[SaveSecondSafePoint()], safe_point_every=3)
    middle, _ = checkpoint.load(saved[1])
    assert 0 < int(middle["step"]) < int(reference.state["step"])
    resumed = fa.fit(_net, data, None, config, state=middle, safe_point_every=3)
    assert_tree_equal(resumed.state.exclude("clock", "history"), reference.state.exclude("clock", "history"))
    assert resumed.history.series("loss") == reference.history.series("loss")
    assert "scaler" in middle.keys()


def test_a_state_saved_before_the_scaler_existed_resumes(tmp_path):
    config = fa.TrainConfig(strategy="full", epochs=2, batch_size=16)
    data = Data.prepare(_tensors(), _tensors(32, seed=1))
    saved = []

    class SaveFirst(fa.Callback):
        def on_safe_point(self, run):
            saved.append(run.state.exclude("scaler")) if not saved else None

    reference = fa.fit(_net, data, None, config, callbacks=[SaveFirst()], safe_point_every=2)
    resumed = fa.fit(_net, data, None, config, state=saved[0], safe_point_every=2)
    assert_tree_equal(resumed.state.exclude("clock", "history"), reference.state.exclude("clock", "history"))


@needs_compile
@pytest.mark.parametrize("precision", PRECISIONS)
def test_compiled_equals_eager_in_each_precision(precision):
    torch._dynamo.reset()
    tolerance = {"32": (1e-4, 1e-5), "bf16-mixed": (2e-2, 2e-2), "16-mixed": (5e-3, 5e-3)}[precision]
    strategy = strategies.sundew(0.5)
    (eager_state, eager), (compiled_state, compiled) = (
        _setup(precision, strategy, tiny_bn_model, compile=c) for c in (False, True))
    for i in range(2):
        batch = make_batch(32, seed=i)
        eager_state, eager_metrics = eager(eager_state, batch)
        compiled_state, compiled_metrics = compiled(compiled_state, batch)
        assert int(compiled_metrics["n_trained"]) == int(eager_metrics["n_trained"]) > 0
    rtol, atol = tolerance
    for key in eager_state.keys(True, True):
        torch.testing.assert_close(compiled_state[key], eager_state[key], rtol=rtol, atol=atol,
                                   msg=lambda m: f"{key}: {m}")
    assert_tree_equal(compiled_state["scaler"], eager_state["scaler"])
