import pytest
import torch
from conftest import assert_tree_equal, make_batch, tiny_bn_model, tiny_mlp
from tensordict import TensorDict
from torch import nn

import functional_ast as fa
from functional_ast import strategies
from functional_ast.core import step as step_module

STRATEGIES = {
    "full": lambda: fa.full(),
    "random": lambda: fa.random_subset(0.25),
    "sundew": lambda: fa.sundew(0.25),
    "sundew-gradnorm": lambda: fa.sundew(0.25, significance=fa.significance.grad_norm,
                                         needs=("loss", "grad_norm")),
    "stale": lambda: strategies.stale(num_samples=64, rate=0.25),
    "infobatch": lambda: strategies.infobatch(num_samples=64),
    "rho_loss": lambda: strategies.rho_loss(num_samples=64, rate=0.25),
    "proxy": lambda: strategies.proxy(tiny_mlp(), 0.25),
    "small_loss": lambda: strategies.stale(num_samples=64, rate=0.25, rule="small_loss"),
    "sundew_remembered": lambda: strategies.sundew_remembered(num_samples=64, target_rate=0.25),
}


def _setup(strategy, model=None, lr=0.05):
    model = model or tiny_bn_model()
    tx = fa.sgd(lr, momentum=0.9, weight_decay=1e-4)
    return model, fa.init_state(model, tx, strategy, key=0), fa.make_train_step(model, fa.cross_entropy, tx, strategy)


@pytest.mark.parametrize("name", STRATEGIES)
def test_step_is_pure_and_deterministic(name):
    _, state, step = _setup(STRATEGIES[name]())
    batch = make_batch()
    state_copy, batch_copy = state.clone(), batch.clone()
    a, ma = step(state, batch)
    b, mb = step(state, batch)
    assert_tree_equal(state, state_copy)  # nothing mutated, BatchNorm buffers included
    assert_tree_equal(batch, batch_copy)
    assert_tree_equal(a, b)
    assert_tree_equal(ma, mb)
    assert int(a["step"]) == 1 and not torch.equal(a["rng"], state["rng"])


@pytest.mark.parametrize("name", STRATEGIES)
def test_trains_only_the_selected_samples_in_a_compact_batch(name):
    model = tiny_bn_model()
    seen = []
    model[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]) if i[0].device.type != "meta" else None)
    strategy = STRATEGIES[name]()
    _, state, step = _setup(strategy, model)
    new, metrics = step(state, make_batch(32))
    n = int(metrics["n_trained"])
    scored = int(metrics["n_scored"])
    # Forwards actually executed: the scoring pass over the whole batch (if any; a vmapped
    # per-sample grad-norm pass shows as one forward of batch 1), then the sub-batch only.
    expected = ([scored] if scored else []) + ([1] if "grad_norm" in strategy.needs else []) + [n]
    assert seen == expected
    assert int(new["work"]["samples_trained"]) == n and int(new["work"]["samples_scored"]) == scored
    if name == "full":
        assert n == 32 and scored == 0
    elif name in ("random", "stale", "rho_loss", "proxy", "small_loss"):  # the proxy's forwards are not the model's
        assert n == 8 and scored == 0
    elif name == "infobatch":  # nothing trained yet: every sample counts as hard and is kept
        assert n == 32 and scored == 0
    elif name == "sundew_remembered":  # the gate on remembered significance: a varying count, no scoring forward
        assert 1 <= n <= 32 and scored == 0
    else:
        assert scored == 32 and 2 <= n < 32


@pytest.mark.parametrize("name", STRATEGIES)
def test_steps_lower_the_loss(name):
    _, state, step = _setup(STRATEGIES[name](), tiny_mlp(), lr=0.05)
    batch = make_batch(64)
    eval_step = fa.make_eval_step(tiny_mlp())
    first = float(eval_step(state, batch)["loss_sum"])
    for _ in range(30):
        state, _ = step(state, batch)
    assert float(eval_step(state, batch)["loss_sum"]) < 0.8 * first


def test_full_strategy_equals_plain_pytorch_training():
    torch.manual_seed(0)
    model = tiny_bn_model()
    reference = tiny_bn_model()
    _, state, step = _setup(fa.full(), model)
    opt = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    reference.train()
    for i in range(5):
        batch = make_batch(16, seed=i)
        state, metrics = step(state, batch)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(reference(batch["image"]), batch["label"])
        loss.backward()
        opt.step()
        torch.testing.assert_close(metrics["loss"], loss.detach())
    for name, p in reference.named_parameters():
        torch.testing.assert_close(state["params"][name], p.detach(), rtol=1e-5, atol=1e-6)
    for name, b in reference.named_buffers():
        torch.testing.assert_close(state["buffers"][name], b)


def test_warmup_step_passes_the_gate_state_through():
    strategy = fa.sundew(0.2)
    model, state, _ = _setup(strategy)
    tx = fa.sgd(0.05)
    warm = fa.make_train_step(model, fa.cross_entropy, tx, fa.full())
    new, metrics = warm(state, make_batch())
    assert_tree_equal(new["selector"], state["selector"])  # controller idle during warm-up
    assert int(metrics["n_trained"]) == 32


def test_sundew_rate_converges_in_training():
    strategy = fa.sundew(0.25)
    _, state, step = _setup(strategy, tiny_mlp())
    rates = []
    for i in range(120):
        state, m = step(state, make_batch(64, seed=i))
        rates.append(float(m["activation_rate"]))
    assert sum(rates[-60:]) / 60 == pytest.approx(0.25, abs=0.04)


def test_sundew_flops_include_the_scoring_forward():
    model = tiny_mlp()
    tx = fa.sgd(0.05)
    results = {}
    for strategy in (fa.random_subset(0.25), fa.sundew(0.25)):
        state = fa.init_state(model, tx, strategy)
        step = fa.make_train_step(model, fa.cross_entropy, tx, strategy)
        for i in range(20):
            state, m = step(state, make_batch(64, seed=i))
        results[strategy.name] = (int(state["work"]["flops_spent"]), int(state["work"]["samples_trained"]))
    per_trained = {k: v[0] / v[1] for k, v in results.items()}
    assert per_trained["sundew"] > per_trained["random"]


def test_compiled_and_eager_steps_agree():
    pytest.importorskip("torch._inductor")
    torch._dynamo.reset()
    model, tx, strategy = tiny_mlp(), fa.sgd(0.05, momentum=0.9), fa.sundew(0.25)
    state = fa.init_state(model, tx, strategy)
    eager = fa.make_train_step(model, fa.cross_entropy, tx, strategy)
    compiled = fa.make_train_step(model, fa.cross_entropy, tx, strategy, compile=True)
    se = sc = state
    for i in range(4):
        batch = make_batch(32, seed=i)
        se, me = eager(se, batch)
        sc, mc = compiled(sc, batch)
        assert int(me["n_trained"]) == int(mc["n_trained"])
        torch.testing.assert_close(mc["loss"], me["loss"], rtol=1e-5, atol=1e-6)
    for key in se["params"].keys():
        torch.testing.assert_close(sc["params"][key], se["params"][key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", STRATEGIES)
def test_channels_last_trains_the_same_values_as_contiguous(name):
    """The NHWC layout changes how the convolutions run, not what they compute: every strategy (the per-sample
    gradient vmap of "sundew-gradnorm" included) trains the same samples to the same parameters, and the batch
    given is left as it was."""
    model, tx = tiny_bn_model(), fa.sgd(0.05, momentum=0.9, weight_decay=1e-4)
    steps = {layout: fa.make_train_step(model, fa.cross_entropy, tx, STRATEGIES[name](), channels_last=layout)
             for layout in (False, True)}
    states = {layout: fa.init_state(model, tx, STRATEGIES[name](), key=0) for layout in (False, True)}
    for i in range(3):
        batch = make_batch(32, seed=i)
        kept = batch.clone()
        metrics = {}
        for layout, step in steps.items():
            states[layout], metrics[layout] = step(states[layout], batch)
        assert_tree_equal(batch, kept)
        assert batch["image"].is_contiguous()
        assert int(metrics[True]["n_trained"]) == int(metrics[False]["n_trained"])
        torch.testing.assert_close(metrics[True]["loss"], metrics[False]["loss"], rtol=1e-5, atol=1e-6)
    for key in states[False]["params"].keys():
        torch.testing.assert_close(states[True]["params"][key], states[False]["params"][key], rtol=1e-5, atol=1e-6)
    evals = {layout: fa.make_eval_step(model, channels_last=layout)(states[False], make_batch(32, seed=9))
             for layout in (False, True)}
    assert int(evals[True]["correct"]) == int(evals[False]["correct"])
    torch.testing.assert_close(evals[True]["loss_sum"], evals[False]["loss_sum"], rtol=1e-5, atol=1e-5)


def test_in_layout_lays_out_image_batches_only():
    x = make_batch(8)["image"]
    nhwc = step_module.in_layout(x, True)
    assert nhwc.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous(
        memory_format=torch.channels_last)
    assert torch.equal(nhwc, x) and step_module.in_layout(x, False) is x
    flat = torch.randn(8, 48)
    assert step_module.in_layout(flat, True) is flat


def test_state_is_saveable_and_loads_back(tmp_path):
    _, state, step = _setup(fa.sundew(0.25))
    state, _ = step(state, make_batch())
    state.memmap(tmp_path / "state")
    loaded = TensorDict.load_memmap(tmp_path / "state")
    assert_tree_equal(state, loaded.to_tensordict())


def test_unknown_strategy_is_named():
    with pytest.raises(fa.config.ConfigError, match="unknown strategy"):
        strategies.build("bogus", strategies.Context(num_samples=10, target_rate=0.1, pool_size=10))


def test_stale_does_no_scoring_forward_and_refreshes_its_table():
    model = tiny_mlp()
    seen = []
    model[1].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]) if i[0].device.type != "meta" else None)
    strategy = strategies.stale(num_samples=64, rate=0.25)
    tx = fa.sgd(0.05)
    state = fa.init_state(model, tx, strategy)
    warm = fa.make_train_step(model, fa.cross_entropy, tx, strategies.all_data(strategy))
    step = fa.make_train_step(model, fa.cross_entropy, tx, strategy)
    batch = make_batch(64)
    state, _ = warm(state, batch)  # warm-up trains all and fills the table
    assert bool(state["selector"]["seen"].all()) and float(state["selector"]["loss"].min()) > 0
    seen.clear()
    before = state["selector"]["loss"].clone()
    state, m = step(state, batch)
    assert seen == [16] and int(m["n_scored"]) == 0  # one forward, of the 16 trained samples only
    changed = (state["selector"]["loss"] != before).sum()
    assert 0 < changed <= 16


def _stale_table(loss):
    return TensorDict(loss=torch.as_tensor(loss, dtype=torch.float32), seen=torch.ones(len(loss), dtype=torch.bool))


def _pool(n):
    return TensorDict(index=torch.arange(n), batch_size=[n])


def test_stale_trains_hard_samples_first_in_random_order():
    # 30 hard samples (loss 5, above the mean) and 70 easy ones (0.01); k = 10 of 100.
    strategy = strategies.stale(num_samples=100, rate=0.1, rule="hard_first", explore=0.0)
    state = _stale_table([5.0] * 30 + [0.01] * 70)
    picked = torch.zeros(100)
    for i in range(30):
        sel = strategy.select(state, _pool(100), fa.prng.key(i), None)
        assert int(sel.mask.sum()) == 10 and torch.equal(sel.index, sel.mask.nonzero()[:, 0])
        assert bool(sel.mask[:30].sum() == 10)  # only hard ones while there are enough
        picked += sel.mask
    assert int((picked[:30] > 0).sum()) >= 25  # ... chosen at random among them, not always the same
    assert sel.weight is None


def test_stale_fills_with_random_easy_samples_and_explores():
    strategy = strategies.stale(num_samples=100, rate=0.2, rule="hard_first", explore=0.0)
    state = _stale_table([5.0] * 5 + [0.01] * 95)
    sel = strategy.select(state, _pool(100), fa.prng.key(0), None)
    assert bool(sel.mask[:5].all()) and int(sel.mask.sum()) == 20  # all 5 hard, then 15 easy
    # explore=0.5 reserves 10 of the 20 slots for a uniform draw: hard ones are still all taken in the rest.
    exploring = strategies.stale(num_samples=100, rate=0.2, rule="hard_first", explore=0.5)
    counts = torch.stack([exploring.select(state, _pool(100), fa.prng.key(i), None).mask for i in range(200)])
    assert bool(counts[:, :5].all())
    easy_rate = counts[:, 5:].float().mean(0)
    assert float(easy_rate.min()) > 0.05 and float(easy_rate.max()) < 0.4  # every easy sample gets looked at


def test_stale_never_trained_samples_count_as_hard():
    strategy = strategies.stale(num_samples=10, rate=0.3, rule="hard_first", explore=0.0)
    # seen: one hard (9 > mean 1.2), seven easy; two never trained: the 3 trained are the hard one and those two
    state = TensorDict(loss=torch.tensor([9.0] + [0.1] * 7 + [0.0] * 2), seen=torch.tensor([True] * 8 + [False] * 2))
    for i in range(10):
        mask = strategy.select(state, _pool(10), fa.prng.key(i), None).mask
        assert bool(mask[8:].all()) and bool(mask[0])


@pytest.mark.parametrize("rule", strategies.STALE_RULES)
def test_stale_rescale_weights_make_the_weighted_loss_an_estimate_of_the_pool_mean(rule):
    losses = torch.tensor([5.0] * 10 + [1.0] * 90)
    state = _stale_table(losses)
    estimates = []
    rescaled = strategies.stale(num_samples=100, rate=0.3, rule=rule, rescale=True)
    for i in range(400):
        sel = rescaled.select(state, _pool(100), fa.prng.key(i), None)
        estimates.append(float((sel.weight[sel.index] * losses[sel.index]).sum()))
    # P(selected) of draws without replacement is approximated, so the estimate is close, not exact.
    assert sum(estimates) / len(estimates) == pytest.approx(float(losses.mean()), rel=0.08)
    biased = strategies.stale(num_samples=100, rate=0.3, rule=rule).select(state, _pool(100), fa.prng.key(0), None)
    assert biased.weight is None
    if rule == "small_loss":  # without it: the easy ones weigh in
        assert float(losses[biased.index].mean()) < 0.9 * float(losses.mean())
    else:  # without it: the hard ones weigh in
        assert float(losses[biased.index].mean()) > 1.3 * float(losses.mean())


def test_stale_proportional_rule_draws_in_proportion_to_remembered_loss():
    strategy = strategies.stale(num_samples=100, rate=0.05, explore=0.2)
    state = _stale_table([4.0] * 50 + [1.0] * 50)
    counts = torch.stack([strategy.select(state, _pool(100), fa.prng.key(i), None).mask
                          for i in range(300)]).float().sum(0)
    ratio = float(counts[:50].sum() / counts[50:].sum())
    assert 2.5 < ratio < 4.0  # p = 0.8 * l / sum(l) + 0.2 / n: 0.0068 vs 0.0032 per draw, about 3.1 : 1


def test_prioritized_updates_priorities_of_trained_indices():
    from functional_ast.core.sampling import prioritized_draw

    model, tx = tiny_mlp(), fa.sgd(0.05)
    strategy = strategies.prioritized(num_samples=64, rate=0.25, batch_size=64)
    state = fa.init_state(model, tx, strategy)
    step = fa.make_train_step(model, fa.cross_entropy, tx, strategy)
    cfg = strategy.sampling
    data = make_batch(64)
    index, weight = prioritized_draw(state["selector"]["priority"], 16, cfg.alpha, cfg.beta, fa.prng.key(0))
    batch = data[index]
    batch["weight"] = weight
    new, metrics = step(state, batch)
    assert int(metrics["n_trained"]) == 16 and int(metrics["n_scored"]) == 0
    changed = (new["selector"]["priority"] != state["selector"]["priority"]).nonzero().squeeze(1)
    assert set(changed.tolist()) <= set(index.tolist()) and len(changed) > 0
    assert bool(new["selector"]["seen"][index].all())
    # The draw follows the state: a sample given a huge priority is drawn far more often.
    table = torch.full((64,), 1e-3)
    table[7] = 100.0
    drawn, _ = prioritized_draw(table, 200, cfg.alpha, cfg.beta, fa.prng.key(1))
    assert (drawn == 7).float().mean() > 0.5


def test_nonfinite_batch_skips_the_update_and_keeps_the_state():
    strategy = strategies.stale(num_samples=32, rate=0.5)
    _, state, step = _setup(strategy)
    state, _ = step(state, make_batch(32))  # a good step first: the table holds finite losses
    poisoned = make_batch(32, seed=1)
    poisoned["image"][:] = float("nan")
    new, metrics = step(state, poisoned)
    assert int(metrics["skipped_nonfinite"]) == 1
    for key in ("params", "buffers", "opt", "selector"):
        assert_tree_equal(new[key], state[key])
    assert int(new["step"]) == int(state["step"]) + 1


def test_skip_guard_warns_once_then_stops():
    from functional_ast.train.loop import NonFiniteLossError, Skips, check_skips

    with pytest.warns(UserWarning, match="step 10"):
        skips = check_skips(Skips(), {"skipped_nonfinite": [0, 1, 1, 0]}, first_step=9, max_in_a_row=3)
    skips = check_skips(skips, {"skipped_nonfinite": [1, 1]}, first_step=13, max_in_a_row=3)
    assert skips == Skips(in_a_row=2, total=4, warned=True)  # counters are values (kept in the state's "loop")
    with pytest.raises(NonFiniteLossError, match="3 non-finite updates in a row up to step 15"):
        check_skips(skips, {"skipped_nonfinite": [1]}, first_step=15, max_in_a_row=3)


def test_prioritized_accounts_the_nominal_batch():
    model, tx = tiny_mlp(), fa.sgd(0.05)
    strategy = strategies.prioritized(num_samples=64, rate=0.25, batch_size=32)
    assert strategy.sampling.k == 8
    state = fa.init_state(model, tx, strategy)
    step = fa.make_train_step(model, fa.cross_entropy, tx, strategy)
    batch = make_batch(64)[:8]
    new, m = step(state, batch)
    assert float(m["activation_rate"]) == 0.25 and float(m["step_saved_pct"]) > 0
    assert int(new["work"]["samples_seen"]) == 32 and int(new["work"]["samples_trained"]) == 8


def test_autograd_loss_and_grad_matches_torch_func():
    from functional_ast.core.losses import make_apply, make_loss_and_grad
    from functional_ast.core.step import autograd_loss_and_grad

    model = tiny_bn_model()
    apply = make_apply(model)
    params, buffers = fa.losses.params_of(model), fa.losses.buffers_of(model)
    batch = make_batch(16)
    w = torch.linspace(0.5, 2.0, 16)
    copies = params.clone(), buffers.clone()
    ours = autograd_loss_and_grad(apply, fa.cross_entropy)(params, buffers, batch["image"], batch["label"], w)
    ref = make_loss_and_grad(apply, fa.cross_entropy)(params, buffers, batch["image"], batch["label"], w)
    assert_tree_equal(params, copies[0])  # nothing mutated
    assert_tree_equal(buffers, copies[1])
    for a, b in zip((ours[0], *ours[1]), (ref[0], *ref[1])):
        if isinstance(a, TensorDict):
            assert set(a.keys()) == set(b.keys())
            for key in b.keys():
                torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7)
        else:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
            assert not a.requires_grad
    assert all(not g.requires_grad for g in ours[0].values())


def test_all_finite_and_keep_if():
    from functional_ast.core.step import all_finite, keep_if

    ok = TensorDict(a=torch.ones(3), b=TensorDict(c=torch.zeros(2, 2)))
    assert bool(all_finite(torch.tensor(1.0), ok))
    assert not bool(all_finite(torch.tensor(float("nan")), ok))
    for bad in (float("nan"), float("inf"), -float("inf")):
        grads = ok.clone()
        grads["b", "c"][1, 0] = bad
        assert not bool(all_finite(torch.tensor(1.0), grads))
    # keep_if keeps the structure of `new`, empty sub-TensorDicts included (an optimiser's stateless transform).
    new = TensorDict({"0": TensorDict({}), "1": TensorDict(m=torch.ones(2)), "count": torch.tensor(3)})
    old = TensorDict({"0": TensorDict({}), "1": TensorDict(m=torch.zeros(2)), "count": torch.tensor(2)})
    assert_tree_equal(keep_if(torch.tensor(True), new, old), new)
    kept = keep_if(torch.tensor(False), new, old)
    assert_tree_equal(kept, old)
    assert "0" in kept.keys() and kept["0"].is_empty()


@pytest.mark.parametrize("model_fn", [tiny_mlp, tiny_bn_model], ids=["mlp", "batchnorm"])
def test_scoring_in_chunks_scores_each_chunk_as_a_batch_of_its_own(model_fn):
    from functional_ast.core.losses import make_apply, per_sample_losses
    from functional_ast.core.significance import loss_intensity

    seen = []

    def capture(scored, batch):
        seen.append(scored["loss"])
        return loss_intensity(scored, batch)

    model, batch = model_fn(), make_batch(32)
    strategy = fa.sundew(0.25, significance=capture)
    tx = fa.sgd(0.1)
    state = fa.init_state(model, tx, strategy)
    for chunk in (None, 8):
        fa.make_train_step(model, fa.cross_entropy, tx, strategy, score_chunk_size=chunk)(state, batch)
    whole, chunked = seen[-2:]
    apply = make_apply(model)
    expected = torch.cat([per_sample_losses(apply, fa.cross_entropy, state["params"], state["buffers"], x, y)
                          for x, y in zip(batch["image"].split(8), batch["label"].split(8))])
    torch.testing.assert_close(chunked, expected)
    if model_fn is tiny_mlp:  # samples are independent: chunking changes nothing
        torch.testing.assert_close(chunked, whole)
    else:  # BatchNorm normalises over the chunk, as over a training batch of that size
        assert not torch.allclose(chunked, whole)
