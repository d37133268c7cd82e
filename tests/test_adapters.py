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
    loop, sampler = Loop(config), Sampler.from_config(config, N, costs=None)
    sampler.costs = loop.costs
    if saved is not None:
        sampler.load_state_dict(saved["sampler"])
        loop.params, loop.opt = saved["params"], saved["opt"]
    loader = DataLoader(rows, batch_sampler=sampler, num_workers=num_workers)
    epoch, b = sampler.position
    passes = EPOCHS - epoch - (0 if b < sampler._steps(epoch) or sampler._waiting else 1)  # the epoch in progress too
    seen = []
    for _ in range(passes):
        for batch in loader:
            x, y, index = batch["image"], batch["label"], batch["index"]
            losses = loop.train(x, y, sampler._waiting[0].weight)
            sampler.loss(index, losses, intensity(x))
            seen.append(index.tolist())
            if stop_after is not None and len(seen) == stop_after:
                return sampler, loop, seen, {"sampler": sampler.state_dict(), "params": loop.params, "opt": loop.opt}
    return sampler, loop, seen, None


def _through_selector(rule: str, start=None, stop_after: int | None = None):
    """The user's loop over fa.fit's own batches (the epoch order's batches, then its pools) with a Selector."""
    config = _config(rule)
    plan, rows, loop = Plan.of(config, N), Rows(), Loop(config)
    selector = Selector.from_config(config, N, costs=loop.costs)
    if start is not None:
        selector.load_state_dict(start["selector"])
        loop.params, loop.opt = start["params"], start["opt"]
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
                return selector, loop, {"selector": selector.state_dict(), "params": loop.params, "opt": loop.opt}
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
