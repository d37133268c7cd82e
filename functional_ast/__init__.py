"""functional_ast: Adaptive Sparse Training with Sundew gating as pure functions over TensorDict state.

    state = init_state(model, optimizer, strategy, key=0)
    step = make_train_step(model, cross_entropy, optimizer, strategy)
    for batch in batches:
        state, metrics = step(state, batch)
"""

from . import config, controller, energy, gate, optim, random, significance, strategies
from .controller import ControllerConfig
from .gate import GateConfig
from .losses import cross_entropy, make_apply, per_sample_grad_norms, per_sample_losses
from .optim import adam, chain, sgd, warmup_cosine
from .step import init_state, make_eval_step, make_train_step
from .strategies import full, random_subset, sundew

__all__ = [
    "ControllerConfig", "GateConfig", "adam", "chain", "controller", "cross_entropy", "energy", "full", "gate",
    "init_state", "make_apply", "make_eval_step", "make_train_step", "optim", "per_sample_grad_norms",
    "per_sample_losses", "random", "random_subset", "sgd", "significance", "strategies", "sundew",
    "warmup_cosine",
]
