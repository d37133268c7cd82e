"""The task seam: the step and the rules reach the data only through a `Task`; a task that is not image
classification (regression on "features" -> "target", squared error) trains through every rule that fits it."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import REPO
from tensordict import TensorDict

import functional_ast as fa
from functional_ast import strategies
from functional_ast.core import significance as sig
from functional_ast.core.task import Task, as_task
from functional_ast.tasks import image_classification

N, POOL = 256, 64


def _squared_error(outputs, targets):
    return (outputs[:, 0] - targets).pow(2)


REGRESSION = Task("regression", inputs=lambda b: b["features"], targets=lambda b: b["target"], loss=_squared_error,
                  statistic=lambda x: x.abs().mean(1),
                  eval_sums=lambda out, y, losses: dict(loss_sum=losses.sum(), count=torch.tensor(y.shape[0])),
                  eval_metrics=lambda s: {"loss": s["loss_sum"] / s["count"]})


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 8, generator=g)
    y = x @ torch.randn(8, generator=g) + 0.1 * torch.randn(N, generator=g)
    return x, y


RULES = {
    "full": lambda: strategies.full(),
    "random": lambda: strategies.random_subset(0.25),
    "sundew": lambda: strategies.sundew(0.25),
    "stale": lambda: strategies.stale(N, 0.25),
    "small_loss": lambda: strategies.stale(N, 0.25, rule="small_loss"),
    "infobatch": lambda: strategies.infobatch(N),
    "sundew_remembered": lambda: strategies.sundew_remembered(N, 0.25, task=REGRESSION),
}


@pytest.mark.parametrize("name", RULES)
def test_a_regression_task_trains_through_the_rule(name):
    x, y = _data()
    model = torch.nn.Linear(8, 1)
    tx = fa.sgd(0.05, momentum=0.9)
    strategy = RULES[name]()
    state = fa.init_state(model, tx, strategy, key=0)
    step = fa.make_train_step(model, REGRESSION, tx, strategy)
    eval_step = fa.make_eval_step(model, REGRESSION)

    def mse(state):
        batch = TensorDict(features=x, target=y, batch_size=[N])
        sums = eval_step(state, batch)
        return REGRESSION.eval_metrics({k: float(v) for k, v in sums.items()})["loss"]

    before = mse(state)
    for epoch in range(6):
        order = torch.randperm(N, generator=torch.Generator().manual_seed(epoch))
        for b in range(N // POOL):
            index = order[b * POOL:(b + 1) * POOL]
            state, metrics = step(state, TensorDict(features=x[index], target=y[index], index=index,
                                                    batch_size=[POOL]))  # no "image", no "label"
            assert 0 < int(metrics["n_trained"]) <= POOL
    assert mse(state) < 0.5 * before, name


def test_the_scoring_pass_gives_the_tasks_statistic_to_significance():
    x, y = _data()
    model = torch.nn.Linear(8, 1)
    tx = fa.sgd(0.0)
    seen = {}

    def spy(scored, batch):
        seen["statistic"] = scored["statistic"]
        return sig.loss_intensity(scored, batch)

    strategy = strategies.sundew(0.25, significance=spy)
    step = fa.make_train_step(model, REGRESSION, tx, strategy)
    step(fa.init_state(model, tx, strategy), TensorDict(features=x[:POOL], target=y[:POOL], batch_size=[POOL]))
    assert torch.allclose(seen["statistic"], x[:POOL].abs().mean(1))


def test_the_image_task_is_the_default_and_its_statistic_is_pixel_intensity():
    images = torch.rand(4, 3, 8, 8)
    task = image_classification()
    assert torch.equal(task.statistic(images), sig.intensity(images))
    assert task.transform is not None and as_task(None).inputs(TensorDict(image=images, batch_size=[4])) is images
    assert as_task(fa.cross_entropy).loss is fa.cross_entropy


def test_nothing_in_the_step_or_the_rules_reads_a_batch_key_of_images_or_assumes_cross_entropy():
    offenders = []
    for folder in ("core", "strategies"):
        for path in (REPO / "functional_ast" / folder).rglob("*.py"):
            if path.name in ("task.py", "losses.py"):  # the task contract's classification default; the loss
                continue
            for i, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#")[0]
                if re.search(r'\["(image|label)"\]|cross_entropy\(', code):
                    offenders.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    assert offenders == []
