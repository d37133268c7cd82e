"""functional_ast: Adaptive Sparse Training with Sundew gating as pure functions over TensorDict state.

High level, bring your own model and data:

    result = fit(model, (train_images, train_labels), (test_images, test_labels), TrainConfig(strategy="stale"))

In a loop you already have (your model, DataLoader and loss; `adapters`):

    sampler = adapters.Sampler("stale", num_samples=len(train), batch_size=64, target_rate=0.3)
    for batch in DataLoader(train, batch_sampler=sampler):
        sampler.loss(batch["index"], per_sample_losses).backward()

Low level, compose the step and run your own loop:

    state = init_state(model, optimizer, strategy, key=0)
    step = make_train_step(model, cross_entropy, optimizer, strategy)
    for batch in batches:
        state, metrics = step(state, batch)
"""

from functional_ast import adapters, strategies
from functional_ast.core import controller, gate, losses, optim, prng, significance, work
from functional_ast.core.controller import ControllerConfig
from functional_ast.core.gate import GateConfig
from functional_ast.core.losses import cross_entropy, make_apply, per_sample_grad_norms, per_sample_losses
from functional_ast.core.optim import adam, chain, sgd, warmup_cosine
from functional_ast.core.step import init_state, make_eval_step, make_train_step
from functional_ast.core.task import Task
from functional_ast.edges.callbacks import Checkpoints, Console, MLflowTracking
from functional_ast.pays import SavingsReport, savings
from functional_ast.strategies import Rule, full, random_subset, register, sundew
from functional_ast.tasks import image_classification, language_modelling
from functional_ast.train import config
from functional_ast.train.base import Callback, Result, RunView, Summary
from functional_ast.train.config import ConfigError, TrainConfig
from functional_ast.train.trainer import compare, fit

__all__ = [
    "Callback", "Checkpoints", "ConfigError", "Console", "ControllerConfig", "GateConfig", "MLflowTracking",
    "Result", "Rule", "RunView", "SavingsReport", "Summary", "Task", "TrainConfig", "adam", "adapters", "chain",
    "compare", "config", "controller", "cross_entropy", "fit", "full", "gate", "image_classification", "init_state",
    "language_modelling", "losses", "make_apply", "make_eval_step", "make_train_step", "optim",
    "per_sample_grad_norms", "per_sample_losses", "prng", "random_subset", "register", "savings", "sgd",
    "significance", "strategies", "sundew", "warmup_cosine", "work",
]
