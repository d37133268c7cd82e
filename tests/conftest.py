"""Shared fixtures: tiny models and batches, a sampler of realistic significance scores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict
from torch import nn

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def data_root(tmp_path_factory) -> Path:
    """Every test's default data root (downloads and decoded caches, `io.default_data_root`): one temporary folder
    for the session, shared by its tests and the programs they start, never the user's ~/.cache."""
    root = tmp_path_factory.mktemp("data-root")
    os.environ["FUNCTIONAL_AST_DATA"] = str(root)
    return root


def real_archive() -> Path | None:
    """The real CIFAR-10 JPEG archive beside the checkout, or None (a user's checkout has none)."""
    env = os.environ.get("FUNCTIONAL_AST_CIFAR_ARCHIVE")
    path = Path(env) if env else REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
    return path if path.is_file() else None


def tiny_bn_model(num_classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, num_classes))


def tiny_mlp(num_classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.ReLU(), nn.Linear(16, num_classes))


def make_batch(n: int = 32, seed: int = 0, num_classes: int = 4) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    # Learnable: the class shifts the mean of the image.
    images = torch.randn(n, 3, 4, 4, generator=g) + labels.view(-1, 1, 1, 1).float() * 0.5
    return TensorDict(image=images, label=labels, index=torch.arange(n), batch_size=[n])


def significance_sample(kind: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """Scores as the seed's rule produces them from a loss distribution of the given kind."""
    from functional_ast.core.significance import normalise_by_mean

    if kind == "lognormal":
        loss = torch.randn(n, generator=generator).exp()
    elif kind == "heavy":
        loss = torch.rand(n, generator=generator).pow(-1 / 1.2)
    elif kind == "uniform":
        loss = torch.rand(n, generator=generator)
    elif kind == "constant":
        loss = torch.ones(n)
    elif kind == "zero":
        loss = torch.zeros(n)
    else:
        raise ValueError(kind)
    std = (1 + 0.3 * torch.randn(n, generator=generator)).clamp_min(0.05)
    return 0.7 * normalise_by_mean(loss) + 0.3 * normalise_by_mean(std)


def assert_tree_equal(a: TensorDict, b: TensorDict) -> None:
    """Same keys and bit-identical leaves (NaN at the same places counts as equal: "not recorded")."""
    from functional_ast.core.state import differing_leaves

    assert not (differ := differing_leaves(a, b)), f"leaves differ: {', '.join(differ)}"


@pytest.fixture
def batch() -> TensorDict:
    return make_batch()


class StepClock:
    """A train clock that load cannot move, for tests of time budgets: each training step takes `tick` seconds
    and each reading a microsecond (so readings still increase). Stands in for `time` in the trainer."""

    def __init__(self, tick: float):
        self.tick, self.now = tick, 0.0

    def perf_counter(self) -> float:
        self.now += 1e-6
        return self.now

    def stepping(self, step):
        def timed(state, batch):
            self.now += self.tick
            return step(state, batch)
        return timed


@pytest.fixture
def step_clock(monkeypatch) -> StepClock:
    """Runs built in this test time their training steps on a `StepClock` of 10 ms a step (probes included)."""
    from functional_ast.train import selective, trainer

    clock, make = StepClock(tick=0.01), trainer.make_train_step
    monkeypatch.setattr(trainer, "make_train_step", lambda *args, **kwargs: clock.stepping(make(*args, **kwargs)))
    monkeypatch.setattr(trainer, "time", clock)
    monkeypatch.setattr(selective, "time", clock)
    return clock
