"""functional_ast: Adaptive Sparse Training with Sundew gating as pure functions over TensorDict state.

High level, bring your own model and data:

    result = fit(model, (train_images, train_labels), (test_images, test_labels), TrainConfig(strategy="stale"))

Low level, compose the step and run your own loop:

    state = init_state(model, optimizer, strategy, key=0)
    step = make_train_step(model, cross_entropy, optimizer, strategy)
    for batch in batches:
        state, metrics = step(state, batch)
"""

from . import config, controller, gate, optim, prng, significance, strategies, work
from .controller import ControllerConfig
from .gate import GateConfig
from .losses import cross_entropy, make_apply, per_sample_grad_norms, per_sample_losses
from .optim import adam, chain, sgd, warmup_cosine
from .step import init_state, make_eval_step, make_train_step
from .strategies import full, random_subset, sundew
from .config import ConfigError, TrainConfig
from .trainer import Callback, Result, compare, fit
from .callbacks import Checkpoints, Console, MLflowTracking

__all__ = [
    "Callback", "Checkpoints", "ConfigError", "Console", "MLflowTracking", "Result", "TrainConfig", "compare", "fit",
    "ControllerConfig", "GateConfig", "adam", "chain", "controller", "cross_entropy", "full", "gate",
    "init_state", "make_apply", "make_eval_step", "make_train_step", "optim", "per_sample_grad_norms",
    "per_sample_losses", "prng", "random_subset", "sgd", "significance", "strategies", "sundew", "work",
    "warmup_cosine",
]
