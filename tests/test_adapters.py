"""The adapters: one behaviour, three doors (fa.fit, a loop with a Selector, a DataLoader with a Sampler), exact
resume mid-epoch, and one clear line for bad input."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_tree_equal, tiny_mlp
from tensordict import TensorDict
from torch.utils.data import DataLoader, Dataset

import functional_ast as fa
from functional_ast.adapters import Sampler, Selector, costs_of
from functional_ast.core import sampling
from functional_ast.core.losses import make_apply
from functional_ast.core.optim import apply_updates
from functional_ast.core.significance import intensity
from functional_ast.core.step import autograd_loss_and_grad
from functional_ast.train.plan import Plan, build_optimizer
from functional_ast.train.trainer import as_data

N, BATCH, RATE, EPOCHS, SEED = 64, 8, 0.25, 3, 3


def _config(rule: str) -> fa.TrainConfig:
    return fa.TrainConfig(strategy=rule, target_rate=RATE, epochs=EPOCHS, warmup_epochs=1, batch_size=BATCH,
                          augment=False, memory_format="contiguous", seed=SEED)


def _images():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (N,), generator=g)
    images = (torch.rand(N, 3, 4, 4, generator=g) * 120 + labels.view(-1, 1, 1, 1) * 40).to(torch.uint8)
    return images, labels


class Rows(Dataset):
    """A user's dataset of dict samples: the normalised images fa.fit trains on, their labels and indices."""

    def __init__(self):
        images, labels = _images()
        self.all = as_data((images, labels), (images[:8], labels[:8])).batch(torch.arange(N))

    def __len__(self):
        return N

    def __getitem__(self, i):
        row = self.all[i]
        return {"image": row["image"], "label": row["label"], "index": row["index"]}


class Loop:
    """The user's model and update. It uses fa's optimiser (the same schedule as fa.fit's plan), so that parameters
    can be compared with fa.fit's bit for bit; with torch.optim they agree to float tolerance only."""

    def __init__(self, config: fa.TrainConfig):
        model = tiny_mlp()
        self.apply, self.update = make_apply(model), autograd_loss_and_grad(make_apply(model), fa.cross_entropy)
        self.optimizer = build_optimizer(config, Plan.of(config, N))
        self.params = TensorDict({k: v.detach().clone() for k, v in model.named_parameters()})
        self.buffers, self.opt = TensorDict({}), self.optimizer.init(self.params)
        self.costs = costs_of(model, torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.int64))

    def scores(self, x, y):
        with torch.no_grad():
            return fa.cross_entropy(self.apply.train(self.params, self.buffers, x)[0], y)

    def train(self, x, y, weight=None) -> torch.Tensor:
        """One update on (x, y), the samples' weighted mean loss; returns the per-sample losses."""
        weight = torch.ones(y.shape[0]) if weight is None else weight
        grads, (_, self.buffers, losses) = self.update(self.params, self.buffers, x, y, weight)
        updates, self.opt = self.optimizer.update(grads, self.opt, self.params)
        self.params = apply_updates(self.params, updates)
        return losses


def _fit(rule: str):
    images, labels = _images()
    return fa.fit(tiny_mlp, (images, labels), (images[:8], labels[:8]), _config(rule)).state


def _through_sampler(rule: str, stop_after: int | None = None, saved=None, num_workers: int = 0):
    """The user's loop on a DataLoader whose batch_sampler is a Sampler; stops after `stop_after` batches (saving the
    sampler's and the loop's state) or resumes from `saved`. Returns (sampler, loop, batches trained)."""
    config, rows = _config(rule), Rows()
    loop = Loop(config)
    sampler = Sampler.from_config(config, N, costs=loop.costs)
    if saved is not None:
        sampler.load_state_dict(saved["sampler"])
        loop.params, loop.opt = TensorDict(saved["params"]), TensorDict(saved["opt"])
    loader = DataLoader(rows, batch_sampler=sampler, num_workers=num_workers)
    epoch, b = sampler.position
    in_progress = b < sampler.batches_in(epoch) or bool(sampler.state_dict()["waiting"])
    passes = EPOCHS - epoch - (0 if in_progress else 1)
    seen = []
    for _ in range(passes):
        for batch in loader:
            x, y, index = batch["image"], batch["label"], batch["index"]
            losses = loop.train(x, y, sampler.weight(index))
            sampler.loss(index, losses, intensity(x))
            seen.append(index.tolist())
            if stop_after is not None and len(seen) == stop_after:
                return sampler, loop, seen, {"sampler": sampler.state_dict(), "params": loop.params.to_dict(),
                                        "opt": loop.opt.to_dict()}
    return sampler, loop, seen, None


def _through_selector(rule: str, start=None, stop_after: int | None = None):
    """The user's loop over fa.fit's own batches (the epoch order's batches, then its pools) with a Selector."""
    config = _config(rule)
    plan, rows, loop = Plan.of(config, N), Rows(), Loop(config)
    selector = Selector.from_config(config, N, costs=loop.costs)
    if start is not None:
        selector.load_state_dict(start["selector"])
        loop.params, loop.opt = TensorDict(start["params"]), TensorDict(start["opt"])
    first_epoch, first_batch = selector.position
    steps = 0
    for epoch in range(first_epoch, EPOCHS):
        selector.set_epoch(epoch)
        size = plan.batch_size if selector.all_data else plan.pool_size
        order = sampling.epoch_order(N, SEED, epoch)
        for b in range(first_batch if epoch == first_epoch else 0, N // size):
            batch = rows.all[order[b * size:(b + 1) * size]]
            x, y, index = batch["image"], batch["label"], batch["index"]
            if selector.all_data or selector.strategy.index_only:  # compact: select from indices, train those
                choice = selector.select(index)
                losses = loop.train(x[choice.index], y[choice.index], choice.weight)
                selector.observe(losses, intensity(x[choice.index]))
            else:  # fresh scores: score the pool, select, train the chosen
                choice = selector.select(index, loop.scores(x, y), intensity(x))
                loop.train(x[choice.index], y[choice.index], choice.weight)
            steps += 1
            if steps == stop_after:
                return selector, loop, {"selector": selector.state_dict(), "params": loop.params.to_dict(),
                                        "opt": loop.opt.to_dict()}
    return selector, loop, None


def _assert_same(state: TensorDict, adapter_state: TensorDict, params: TensorDict):
    for part in ("selector", "work", "rng", "step"):
        assert_tree_equal(TensorDict({part: state[part]}), TensorDict({part: adapter_state[part]}))
    assert_tree_equal(state["params"], params)


SAMPLER_RULES = ["stale", "small_loss", "infobatch", "sundew_remembered", "random", "prioritized", "full"]
SELECTOR_RULES = ["stale", "small_loss", "infobatch", "sundew_remembered", "random", "sundew", "full"]


@pytest.mark.parametrize("rule", sorted(set(SAMPLER_RULES) | set(SELECTOR_RULES)))
def test_one_behaviour_three_doors(rule):
    """fa.fit, a loop with a Selector and a DataLoader with a Sampler select the same samples: the rule's tables,
    gate and controller, the key, the step count, the work counters and the parameters are bit for bit fa.fit's."""
    fitted = _fit(rule)
    if rule in SAMPLER_RULES:
        sampler, loop, _, _ = _through_sampler(rule)
        _assert_same(fitted, sampler.state, loop.params)
    if rule in SELECTOR_RULES:
        selector, loop, _ = _through_selector(rule)
        _assert_same(fitted, selector.state, loop.params)
    assert int(fitted["work", "samples_trained"]) < EPOCHS * N or rule == "full"


def _saved_and_loaded(saved: dict, tmp_path) -> dict:
    """Through a file, as a job saves it: torch.save, then torch.load(weights_only=True)."""
    torch.save(saved, tmp_path / "checkpoint.pt")
    return torch.load(tmp_path / "checkpoint.pt", weights_only=True)


@pytest.mark.parametrize("rule,num_workers", [("sundew_remembered", 0), ("stale", 0), ("prioritized", 0),
                                              ("stale", 1)])
def test_a_sampler_resumed_mid_epoch_draws_what_the_uninterrupted_one_drew(rule, num_workers, tmp_path):
    """Stopped in the middle of a selective epoch and resumed from its state_dict: the same batches, the same final
    tables and parameters. With a worker the DataLoader asks for batches ahead of the loop; the drawn batches that
    wait for their losses are in the state and come back first."""
    whole, whole_loop, whole_seen, _ = _through_sampler(rule, num_workers=num_workers)
    stop = 8 + 3  # the warm-up epoch's 8 batches, then 3 of the first selective epoch's 8 pools
    _, _, first, saved = _through_sampler(rule, stop_after=stop, num_workers=num_workers)
    assert num_workers == 0 or saved["sampler"]["waiting"], "a worker draws ahead: some drawn batches wait"
    resumed, loop, rest, _ = _through_sampler(rule, saved=_saved_and_loaded(saved, tmp_path), num_workers=num_workers)
    assert first + rest == whole_seen
    assert_tree_equal(resumed.state, whole.state)
    assert_tree_equal(loop.params, whole_loop.params)


@pytest.mark.parametrize("rule", ["sundew", "sundew_remembered"])
def test_a_selector_resumed_mid_epoch_ends_as_the_uninterrupted_one(rule, tmp_path):
    whole, whole_loop, _ = _through_selector(rule)
    _, _, saved = _through_selector(rule, stop_after=8 + 1)
    assert saved["selector"]["state"]["batch"] == 1  # one step into the first selective epoch
    resumed, loop, _ = _through_selector(rule, start=_saved_and_loaded(saved, tmp_path))
    assert_tree_equal(resumed.state, whole.state)
    assert_tree_equal(loop.params, whole_loop.params)


def test_the_controller_reaches_its_target_rate_from_a_users_losses():
    """sundew's gate and PI controller, fed losses from outside, hold the target rate (as in fa.fit)."""
    selector = Selector("sundew", num_samples=4096, target_rate=0.2)
    g = torch.Generator().manual_seed(0)
    rates = []
    for step in range(300):
        index = torch.randint(0, 4096, (64,), generator=g)
        losses = torch.randn(64, generator=g).exp() * (1 + step / 300)  # a drifting loss distribution
        rates.append(selector.select(index, losses).index.shape[0] / 64)
    assert abs(sum(rates[-100:]) / 100 - 0.2) < 0.03
    counters = selector.counters
    assert counters["samples_seen"] == 300 * 64 and counters["samples_scored"] == 300 * 64
    assert counters["samples_trained"] == round(sum(rates) * 64)


def test_a_masked_loss_is_the_selected_samples_weighted_mean_and_backpropagates():
    selector = Selector("stale", num_samples=16, target_rate=0.5)
    w = torch.ones(3, requires_grad=True)
    x = torch.randn(16, 3)
    losses = (x @ w).pow(2)
    choice = selector.select(torch.arange(16), losses)
    assert choice.index.shape[0] == 8
    torch.testing.assert_close(choice.loss, losses[choice.index].mean())
    choice.loss.backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()


@pytest.mark.parametrize("make,message", [
    (lambda: Sampler("sundew", num_samples=64, batch_size=8), "fresh scores"),
    (lambda: Selector("prioritized", num_samples=64), "whole data set"),
    (lambda: Selector("proxy", num_samples=64), "runs on images"),
    (lambda: Sampler("stale", num_samples=4, batch_size=8), "larger than the training set"),
    (lambda: Selector("nope", num_samples=64), "strategy must be one of"),
    (lambda: Selector("stale", num_samples=64, target_rate=1.5), "target_rate"),
    (lambda: Selector("stale", num_samples=0), "num_samples"),
    (lambda: Selector("stale", num_samples=64, cooldown_epochs=1), "needs epochs"),
])
def test_bad_configuration_is_one_clear_line(make, message):
    with pytest.raises(fa.ConfigError, match=message) as error:
        make()
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("call,message", [
    (lambda s: s.select(torch.tensor([0, 99]), torch.ones(2)), r"in \[0, 64\)"),
    (lambda s: s.select(torch.tensor([[0, 1]]), torch.ones(2)), "1-d integer"),
    (lambda s: s.select(torch.tensor([0, 1]), torch.ones(2, 3)), "reduction='none'"),
    (lambda s: s.select(torch.tensor([0, 1]), torch.ones(3)), "3 losses for 2 indices"),
    (lambda s: s.select(torch.tensor([0, 1]), torch.ones(2), torch.ones(5)), "one value per sample"),
    (lambda s: s.observe(torch.ones(2)), "no selection is waiting"),
    (lambda s: s.load_state_dict({"format": 1, "rule": "sundew", "num_samples": 64, "seed": 0, "target_rate": 0.3,
                                  "state": {}}), "build it as the saved one was"),
])
def test_bad_input_to_a_selector_is_one_clear_line(call, message):
    with pytest.raises(fa.ConfigError, match=message) as error:
        call(Selector("stale", num_samples=64))
    assert "\n" not in str(error.value)


def test_bad_input_to_a_sampler_is_one_clear_line():
    sampler = Sampler("stale", num_samples=64, batch_size=8)
    with pytest.raises(fa.ConfigError, match="no drawn batch"):
        sampler.loss(torch.arange(8), torch.ones(8))
    first = next(iter(sampler))
    with pytest.raises(fa.ConfigError, match="not the oldest batch"):
        sampler.loss(torch.tensor(first[::-1]), torch.ones(len(first)))
    with pytest.raises(fa.ConfigError, match="reduction='none'"):
        sampler.loss(torch.tensor(first), torch.ones(len(first), 2))
    sampler.loss(torch.tensor(first), torch.ones(len(first)))  # the right call still works after the refusals
    assert sampler.counters["samples_trained"] == len(first)


def test_compare_runs_each_arm_at_the_same_trained_samples_and_pairs_by_seed():
    calls = []

    def train(sampler, epochs, seed):  # a stand-in loop: trains nothing, "scores" by the rule and the seed
        for _ in range(epochs):
            for index in sampler:
                sampler.loss(torch.tensor(index), torch.rand(len(index)))
        calls.append((sampler.config.strategy, seed, epochs))
        return {"full": 0.5, "random": 0.4}.get(sampler.config.strategy, 0.6) + 0.01 * seed

    result = fa.adapters.compare(train, "stale", num_samples=N, batch_size=BATCH, target_rate=RATE, budget_epochs=2,
                                 seeds=(0, 1, 2))
    assert [(rule, seed) for rule, seed, _ in calls] == [(r, s) for s in (0, 1, 2) for r in ("full", "random", "stale")]
    for arm in result.arms:  # the same budget of trained samples: 2 epochs of 64, or 1 warm-up + 4 of 2 pools of 8
        assert arm.counters["samples_trained"] == result.budget_samples == 2 * N
    assert result.versus["full"]["diff"] == pytest.approx(0.1) and result.versus["random"]["diff"] == pytest.approx(0.2)
    assert result.versus["full"]["excludes_zero"] and "stale minus random: +20.00 pp" in result.report()
    with pytest.raises(fa.ConfigError, match="baseline"):
        fa.adapters.compare(train, "random", num_samples=N, batch_size=BATCH)


def test_the_adapters_import_without_lightning():
    import subprocess
    import sys

    from conftest import REPO

    code = "import sys, functional_ast.adapters; assert 'lightning' not in sys.modules, 'lightning was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": ""})
