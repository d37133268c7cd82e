"""`rho_loss`: RHO-LOSS (Mindermann et al., ICML 2022) on remembered losses: train the samples that are learnable
and not yet learnt. Its irreducible losses come from two cross-fitted reference models that the trainer trains
before the first step (`prepare`) and charges to the run's budget."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tensordict import TensorDict
from torch import Tensor

from functional_ast.core.checks import ConfigError, check_range, integer
from functional_ast.core.selection import Selection, Strategy, mask_of, remembered_mean
from functional_ast.core.state import replace
from functional_ast.strategies.draws import hardest_if_unseen, loss_table, proportional_draw, remember_losses
from functional_ast.strategies.registry import Context, Rule, option, register


def rho_loss(num_samples: int, rate: float, *, explore: float = 0.2, min_selected: int = 1) -> Strategy:
    """RHO-LOSS (Mindermann et al., ICML 2022) on remembered losses: train the samples that are learnable and not
    yet learnt.

    Of each pool of n samples, k = round(rate * n) are drawn without replacement with probability
    p_i = (1 - explore) * r_i / sum(r) + explore / n, where r_i = max(loss_i - reference_i, 0) is the reducible
    loss: the learner's loss from the last time i was trained (as `stale` keeps it) minus i's irreducible loss,
    the loss of a model that never trained on i (state "reference", written once by `with_reference`; the trainer
    computes it with `reference.cross_fitted_losses` and charges its cost to the run). Never-trained samples count
    as the pool's largest. The paper scores a fresh candidate batch; here no scoring forward runs. Until a
    reference is written it is 0 and the rule is `stale`'s proportional one.
    """
    check_range("rho_loss", "rate", rate, 0.0, 1.0, low_open=True)
    check_range("rho_loss", "explore", explore, 0.0, 1.0)
    check_range("rho_loss", "num_samples", num_samples, 1)

    def init(device=None) -> TensorDict:
        table = loss_table(num_samples, device)
        table["reference"] = torch.zeros(num_samples, device=device)
        table["has_reference"] = torch.zeros((), dtype=torch.bool, device=device)
        table["reference_time_s"] = torch.zeros((), dtype=torch.float64, device=device)
        table["reference_accuracy"] = torch.zeros((), dtype=torch.float64, device=device)
        return table

    def select(state, batch, key, score):
        idx = batch["index"]
        n = idx.shape[0]
        k = min(n, max(min_selected, round(rate * n)))
        seen = state["seen"][idx]
        reducible = hardest_if_unseen(state["loss"][idx] - state["reference"][idx], seen)  # clamped at 0
        index, _ = proportional_draw(reducible, k, explore, key)
        info = TensorDict(n_scored=torch.zeros((), dtype=torch.int64, device=idx.device),
                          stale_seen_frac=seen.float().mean(), rho_reducible_mean=reducible.mean(),
                          loss_seen=remembered_mean(state["loss"][idx], seen))
        return Selection(mask_of(index, n), None, state, info, index)

    return Strategy("rho_loss", init, select, observe=remember_losses, index_only=True)


def with_reference(state: TensorDict, losses: Tensor, seconds: float = 0.0, accuracy: float = 0.0) -> TensorDict:
    """rho_loss's selector state with the irreducible losses [N] written in, and what they cost (seconds) and the
    references' accuracy on the samples they scored, for the summary (a new TensorDict; nothing mutated)."""
    if losses.shape != state["reference"].shape:
        raise ConfigError(f"rho_loss: {losses.shape[0]} reference losses for a table of "
                          f"{state['reference'].shape[0]} samples; compute them on the same training set")
    f64 = dict(dtype=torch.float64, device=state.device)
    return replace(state, reference=losses.detach().to(state["reference"]),
                   has_reference=torch.ones_like(state["has_reference"]), reference_time_s=torch.tensor(seconds, **f64),
                   reference_accuracy=torch.tensor(accuracy, **f64))


def halves(num_samples: int, seed: int) -> tuple[Tensor, Tensor]:
    """A seeded split of range(num_samples) into two halves (ascending index tensors, sizes differ by at most 1)."""
    g = torch.Generator().manual_seed(int(seed) * 7919 + 17)
    perm = torch.randperm(num_samples, generator=g)
    first, second = perm[: num_samples // 2], perm[num_samples // 2:]
    return first.sort().values, second.sort().values


@dataclass(frozen=True)
class RhoLossOptions:
    explore: float = option(0.2, "share of each draw made uniformly, so out-of-date losses get looked at again")
    reference_epochs: int = option(2, "epochs of each reference model (over its own samples), charged to the run's "
                                   "budget", short="reference")
    holdout: float = option(0.0, "0: two references cross-fitted on the halves of the training set; else one small "
                            "reference trained on this seeded share of it scores every sample (the paper's holdout "
                            "model)", flag="--rho-holdout")

    def __post_init__(self):
        check_range("rho_loss", "explore", self.explore, 0.0, 1.0)
        integer("rho_loss", "reference_epochs", self.reference_epochs, 1)
        check_range("rho_loss", "holdout", self.holdout, 0.0, 1.0, high_open=True)


def holdout_slice(num_samples: int, share: float, seed: int) -> Tensor:
    """A seeded `share` of range(num_samples) (at least one), ascending: the holdout reference's samples."""
    g = torch.Generator().manual_seed(int(seed) * 7919 + 29)
    return torch.randperm(num_samples, generator=g)[: max(1, round(share * num_samples))].sort().values


def prepare_epochs(options: RhoLossOptions) -> float:
    """What `prepare` costs, in full-data epochs of training (a scoring forward counted as a third of a step):
    the references' training plus one scoring pass over the training set."""
    trained = options.reference_epochs * (options.holdout or 1.0)
    return trained + 1.0 / 3.0


def prepare(selector: TensorDict, context: Context, options: RhoLossOptions, services) -> tuple[TensorDict, int]:
    """Irreducible losses, scored in eval mode without augmentation: cross-fitted (a reference trained on each
    seeded half scores the other half) or, with `holdout`, one reference trained on a seeded slice scores every
    sample (its own slice included, which it has seen). Returns the selector with them written in and the FLOPs
    they cost."""
    start = time.perf_counter()
    n = context.num_samples
    every = torch.arange(n)
    if options.holdout:
        slice_ = holdout_slice(n, options.holdout, services.seed)
        if len(slice_) < services.batch_size:
            raise ConfigError(f"rho_loss: the holdout slice ({len(slice_)} samples) must hold a batch of "
                              f"{services.batch_size}; raise holdout, lower --batch-size or use more data")
        plan = ((every, slice_),)
    else:
        if n // 2 < services.batch_size:
            raise ConfigError(f"rho_loss: each half of the training set ({n // 2} samples) must hold a batch of "
                              f"{services.batch_size}; lower --batch-size or use more data")
        first, second = halves(n, services.seed)
        plan = ((first, second), (second, first))
    losses = torch.zeros(n, dtype=torch.float32)
    correct, flops = 0, 0
    for scored, trained_on in plan:
        part, right, spent = services.fit_and_score(trained_on, scored, options.reference_epochs)
        losses = losses.index_put((scored,), part.float().cpu())
        correct, flops = correct + right, flops + spent
    accuracy = correct / n  # a read of the device's count: the clock below waits for the device
    return with_reference(selector, losses, time.perf_counter() - start, accuracy), flops


def _summary(selector: TensorDict) -> dict:
    return dict(reference_time_s=float(selector["reference_time_s"]),
                reference_accuracy=float(selector["reference_accuracy"]))


RULE = register(Rule(
    "rho_loss", lambda context, options: rho_loss(context.num_samples, context.target_rate, explore=options.explore),
    RhoLossOptions, summary=_summary, prepare=prepare, prepare_epochs=prepare_epochs,
    needs_prepare=lambda selector: not bool(selector["has_reference"]),
    description="RHO-LOSS: remembered loss minus a cross-fitted reference's"))
