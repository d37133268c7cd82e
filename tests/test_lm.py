"""Language modelling: the task's loss and statistic, the gpt model under functional_call / vmap / compile, and
`fit` on a tiny byte corpus for every rule that runs on sequences."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from test_text_data import _corpus_dir

import functional_ast as fa
from functional_ast import models, strategies
from functional_ast.core import optim
from functional_ast.core.losses import buffers_of, make_apply, params_of, per_sample_grad_norms
from functional_ast.core.selection import all_data
from functional_ast.core.step import init_state, make_train_step
from functional_ast.data import text
from functional_ast.tasks import language_modelling
from functional_ast.train.config import ConfigError

CONTEXT = 16


def _gpt():
    torch.manual_seed(0)
    return models.gpt(context=CONTEXT, depth=1, width=16, heads=2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    return text.split(text.load_corpus(_corpus_dir(root / "src", files=6, lines=12), root=root / "cache"),
                      context=CONTEXT, test_fraction=0.34, seed=0)


def _batch(n=6, seed=0):
    tokens = torch.randint(0, 256, (n, CONTEXT + 1), generator=torch.Generator().manual_seed(seed))
    return TensorDict(tokens=tokens, index=torch.arange(n), batch_size=[n])


def test_the_task_takes_windows_apart_and_its_loss_and_metrics_are_the_hand_computed_ones():
    task, batch = language_modelling(), _batch()
    x, y = task.inputs(batch), task.targets(batch)
    assert torch.equal(x, batch["tokens"][:, :-1]) and torch.equal(y, batch["tokens"][:, 1:])
    logits = torch.randn(6, CONTEXT, 256, generator=torch.Generator().manual_seed(1))
    hand = torch.stack([torch.stack([-logits[b, t].log_softmax(-1)[y[b, t]] for t in range(CONTEXT)]).mean()
                        for b in range(6)])
    assert torch.allclose(task.loss(logits, y), hand, atol=1e-5)
    sums = {k: float(v) for k, v in task.eval_sums(logits, y, task.loss(logits, y)).items()}
    metrics = task.eval_metrics(sums)
    assert metrics["loss"] == pytest.approx(float(hand.mean()), rel=1e-5)
    assert metrics["bits_per_byte"] == pytest.approx(float(hand.mean()) / math.log(2), rel=1e-5)
    assert task.headline == "bits_per_byte" and not task.higher_is_better and task.kind == "sequences"


def test_the_input_statistic_is_each_window_s_byte_entropy():
    x = torch.tensor([[65] * 8, [65, 66] * 4, list(range(8))])
    assert language_modelling().statistic(x).tolist() == pytest.approx([0.0, 1.0, 3.0])


def test_gpt_maps_tokens_to_logits_and_is_causal():
    model, x = _gpt(), _batch()["tokens"][:, :-1]
    logits = model(x)
    assert logits.shape == (6, CONTEXT, 256)
    changed = x.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 256
    assert torch.allclose(model(changed)[:, :-1], logits[:, :-1], atol=1e-6)  # the past never sees the future
    assert not torch.allclose(model(changed)[:, -1], logits[:, -1])
    with pytest.raises(ValueError, match="built for 16 tokens"):
        model(torch.zeros(1, CONTEXT + 1, dtype=torch.int64))


def test_per_sample_gradient_norms_over_sequences_equal_a_loop():
    model, task, batch = _gpt(), language_modelling(), _batch(4)
    apply, params, buffers = make_apply(model), params_of(model), buffers_of(model)
    x, y = task.inputs(batch), task.targets(batch)
    norms = per_sample_grad_norms(apply, task.loss, params, buffers, x, y)
    for i in range(4):
        model.zero_grad()
        task.loss(model(x[i:i + 1]), y[i:i + 1]).sum().backward()
        loop = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
        assert float(norms[i]) == pytest.approx(float(loop), rel=1e-4)


def test_the_compiled_step_equals_the_eager_one():
    task, batch = language_modelling(), _batch(8)
    states = []
    for compile in (False, True):
        model = _gpt()
        strategy = all_data(strategies.full())
        step = make_train_step(model, task, optim.sgd(0.1), strategy, compile=compile)
        state = init_state(model, optim.sgd(0.1), strategy)
        for _ in range(2):
            state, metrics = step(state, batch)
        states.append((state, float(metrics["loss"])))
    (eager, loss_e), (compiled, loss_c) = states
    assert loss_c == pytest.approx(loss_e, rel=1e-4)
    for key in eager["params"].keys():
        assert torch.allclose(eager["params", key], compiled["params", key], atol=1e-5, rtol=1e-4), key


RULES = ["full", "random", "stale", "small_loss", "sundew", "sundew_remembered", "infobatch", "rho_loss",
         "prioritized"]


@pytest.mark.parametrize("strategy", RULES)
def test_fit_trains_and_evaluates_on_text_for_every_rule_that_runs_on_sequences(corpus, strategy):
    train, test = corpus
    config = fa.TrainConfig(strategy=strategy, epochs=3, batch_size=8, target_rate=0.5, optimizer="adam", lr=3e-3,
                            options={"reference_epochs": 1} if strategy == "rho_loss" else {})
    result = fa.fit(_gpt(), train, test, config, task=language_modelling())
    summary, epochs = result.summary, result.history.epochs
    assert summary["test_bits_per_byte"] == pytest.approx(summary["test_loss"] / math.log(2))
    assert len(epochs) == 3 and all(math.isfinite(e["test_loss"]) for e in epochs)
    assert epochs[-1]["test_loss"] < math.log(256)  # learnt something: below a uniform guess over bytes
    if strategy not in ("full", "prioritized"):
        assert summary["mean_activation_rate_after_warmup"] < 1.0


def test_a_rule_that_cannot_run_on_sequences_is_refused_in_one_line(corpus):
    train, test = corpus
    with pytest.raises(ConfigError, match="strategy proxy runs on images, not on sequences; choose one of") as info:
        fa.fit(_gpt(), train, test, fa.TrainConfig(strategy="proxy", epochs=1, batch_size=8),
               task=language_modelling())
    assert "\n" not in str(info.value)


def test_a_grad_norm_significance_gates_sequences_on_their_head_s_per_sample_gradients():
    from functional_ast.core import significance
    from functional_ast.core.losses import last_layer_keys

    model, task, batch = _gpt(), language_modelling(), _batch(8)
    assert last_layer_keys(params_of(model)) == ["head.weight"]  # the untied head is the last layer
    strategy = strategies.sundew(0.5, significance=significance.grad_norm, needs=("loss", "grad_norm"))
    step = make_train_step(model, task, optim.sgd(0.1), strategy)
    state, metrics = step(init_state(model, optim.sgd(0.1), strategy), batch)
    assert 0 < int(metrics["n_trained"]) <= 8 and torch.isfinite(metrics["loss"])
    norms = per_sample_grad_norms(make_apply(model), task.loss, params_of(model), buffers_of(model),
                                  task.inputs(batch), task.targets(batch), ["head.weight"])
    assert norms.shape == (8,) and bool((norms > 0).all())


class Bigram(torch.nn.Module):
    """A user's own model: int64 tokens [B, T] -> logits [B, T, 256]."""

    def __init__(self):
        super().__init__()
        self.table = torch.nn.Embedding(256, 256)

    def forward(self, tokens):
        return self.table(tokens)


def test_a_user_s_own_token_model_trains_through_fit(corpus):
    train, test = corpus
    config = fa.TrainConfig(strategy="stale", epochs=2, batch_size=8, target_rate=0.5, optimizer="adam", lr=0.05)
    result = fa.fit(Bigram, train, test, config, task=language_modelling())
    first, last = result.history.epochs[0]["test_loss"], result.history.epochs[-1]["test_loss"]
    assert last < first < math.log(256) + 1.0
