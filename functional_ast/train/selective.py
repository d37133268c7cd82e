"""Selective language modelling's run: train a reference, then the model on the tokens of top excess loss
(`tasks.selective`), the reference's wall-clock and FLOPs charged to the run as `rho_loss`'s references are."""

from __future__ import annotations

import copy
import time

from torch import nn

from functional_ast.core.task import check_kind
from functional_ast.tasks import language_modelling
from functional_ast.tasks.selective import selective_language_modelling
from functional_ast.train import budget
from functional_ast.train.config import ConfigError, TrainConfig
from functional_ast.train.trainer import Result, Run, as_data, full_epoch_cost, train_full

KINDS = ("sequences",)  # the task kinds Rho-1 selects tokens of


def fit_selective(model, train, test, config: TrainConfig, *, keep: float = 0.6, reference_epochs: int = 1,
                  reference_data=None, charge_reference: bool = True, device=None, state=None, task=None,
                  **run_options) -> Result:
    """Rho-1 on `config`'s rule: a copy of `model` (an nn.Module, or a function building one) trained for
    `reference_epochs` epochs with the plain byte loss on `reference_data` (a `DataSource`; default all of `train`)
    is the reference; `model` then trains with the loss on each window's top-`keep` excess-loss tokens. The
    reference's wall-clock and FLOPs are charged to the run unless `charge_reference` is False (a reference given
    free, as a curated model one already has); under a budget, one it cannot pay for and still train is refused
    first. A resumed run (`state`) retrains the same reference (same seed, same data: same parameters) without
    charging it again: its state holds that charge. `task`, if given, is the plain language-modelling task this run
    selects tokens of (as `fit` takes it; ConfigError else)."""
    if task is not None:
        check_kind(task, KINDS, "selective language modelling (Rho-1: it selects tokens)")
    data = as_data(train, test, device)
    reference_data = data if reference_data is None else reference_data
    if charge_reference and config.budget is not None and state is None:
        kind = config.budget[0]
        epoch_cost = full_epoch_cost(model, data, config.batch_size, config.seed, kind, task=language_modelling())
        share = reference_data.num_samples / data.num_samples
        refusal = budget.preparation_refusal(config.budget, epoch_cost, reference_epochs * share, 0,
                                             "Rho-1's reference model")
        if refusal is not None:
            raise ConfigError(refusal)
    start = time.perf_counter()
    # a curated slice smaller than a batch (10% of a small corpus's clean files) trains in batches of its size
    ref_config = TrainConfig(strategy="full", epochs=reference_epochs,
                             batch_size=min(config.batch_size, reference_data.num_samples),
                             optimizer=config.optimizer, lr=config.lr, weight_decay=config.weight_decay,
                             seed=config.seed, compile=config.compile)
    reference = copy.deepcopy(model) if isinstance(model, nn.Module) else model  # a function builds its own
    ref_state, ref_summary = train_full(reference, reference_data, ref_config, name="selective-reference",
                                        task=language_modelling())
    seconds = time.perf_counter() - start
    shape = reference if isinstance(reference, nn.Module) else reference()  # only a shape for the parameters
    task = selective_language_modelling(shape, ref_state["params"], ref_state["buffers"], keep)
    run = Run(model, data, config, task=task, state=state, **run_options)
    if state is None and charge_reference:
        run.charge(seconds, int(ref_summary.flops_spent))
    return run.finish()
