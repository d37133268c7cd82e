"""`stale` and `small_loss`: no scoring forward; select on the losses remembered from the last time each sample
was trained (Loshchilov & Hutter's online batch selection on stale losses; `small_loss` is Co-teaching's
small-loss trick for noisy labels)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict

from functional_ast.core.checks import ConfigError, check_range, one_of
from functional_ast.core.selection import Selection, Strategy, mask_of, remembered_mean
from functional_ast.strategies.draws import (
    at_or_above_mean,
    hard_first,
    hardest_if_unseen,
    loss_table,
    proportional_draw,
    remember_losses,
)
from functional_ast.strategies.registry import Context, Rule, option, register

STALE_RULES = ("proportional", "hard_first", "small_loss")


def stale(num_samples: int, rate: float, *, rule: str = "proportional", explore: float = 0.2,
          rescale: bool = False, min_selected: int = 1) -> Strategy:
    """No scoring forward: train the samples whose loss was high the last time they were trained.

    Each sample's loss is remembered from the last time it was trained (a per-sample table in state,
    filled during warm-up and refreshed by `observe` with the training forward's losses; never-trained
    samples count as the batch's hardest). Of each batch (a selection pool) of n samples,
    k = round(rate * n) are trained, drawn without replacement:
    - rule "proportional": with probability p_i = (1 - explore) * loss_i / sum(loss) + explore / n;
    - rule "hard_first": an `explore` share of k uniformly, then the *hard* samples (remembered loss at
      or above the batch mean) in random order, then random easy ones if fewer than k are hard;
    - rule "small_loss": the opposite, for noisy labels (Co-teaching's small-loss trick): with probability
      p_i = (1 - explore) * w_i / sum(w) + explore / n, w_i = exp(-2 loss_i / mean(loss)), so samples the model
      keeps getting wrong (often mislabelled ones) are rarely trained.
    `explore` keeps looking at samples whose remembered loss may be out of date. With `rescale`, each
    trained loss is weighted by 1 / (n * P(selected)), so the (self-normalised) loss estimates the
    batch's mean loss, InfoBatch-style; measured on CIFAR-10 it trained worse than without (README), so it is off.
    """
    check_range("stale", "rate", rate, 0.0, 1.0, low_open=True)
    check_range("stale", "explore", explore, 0.0, 1.0)
    check_range("stale", "num_samples", num_samples, 1)
    if rule not in STALE_RULES:
        raise ConfigError(f"stale: unknown rule {rule!r}; choose one of: {', '.join(STALE_RULES)}")

    def select(state, batch, key, score):
        idx = batch["index"]
        n = idx.shape[0]
        k = min(n, max(min_selected, round(rate * n)))
        loss, seen = state["loss"][idx], state["seen"][idx]
        loss_seen = remembered_mean(loss, seen)
        loss = hardest_if_unseen(loss, seen)  # never trained: as hard as the hardest
        hard = at_or_above_mean(loss)
        if rule == "small_loss":
            index, included = proportional_draw(torch.exp(-2.0 * loss / loss.mean().clamp_min(1e-6)), k, explore, key)
        elif rule == "proportional":
            index, included = proportional_draw(loss, k, explore, key)
        else:
            included, index = hard_first(hard, k, round(explore * k), key)
        weight = 1.0 / (n * included).clamp_min(1e-6) if rescale else None
        info = TensorDict(n_scored=torch.zeros((), dtype=torch.int64, device=idx.device),
                          stale_seen_frac=seen.float().mean(), stale_hard_frac=hard.float().mean(), loss_seen=loss_seen)
        return Selection(mask_of(index, n), weight, state, info, index)

    return Strategy("stale", lambda device=None: loss_table(num_samples, device), select,
                    observe=remember_losses, index_only=True)


@dataclass(frozen=True)
class StaleOptions:
    rule: str = option("proportional", "how stale draws from remembered losses: in proportion to them, hard "
                       "(above the mean) first, or small losses first (for noisy labels)", flag="--stale-rule",
                       choices=STALE_RULES)
    explore: float = option(0.2, "share of each draw made uniformly, so out-of-date losses get looked at again")

    def __post_init__(self):
        one_of("stale", "rule", self.rule, STALE_RULES)
        check_range("stale", "explore", self.explore, 0.0, 1.0)


@dataclass(frozen=True)
class SmallLossOptions:
    explore: float = option(0.2, "share of each draw made uniformly, so out-of-date losses get looked at again")

    def __post_init__(self):
        check_range("small_loss", "explore", self.explore, 0.0, 1.0)


def _build_stale(context: Context, options: StaleOptions) -> Strategy:
    return stale(context.num_samples, context.target_rate, rule=options.rule, explore=options.explore)


def _build_small_loss(context: Context, options: SmallLossOptions) -> Strategy:
    return stale(context.num_samples, context.target_rate, rule="small_loss", explore=options.explore)


RULE = register(Rule("stale", _build_stale, StaleOptions, description="remembered losses, no scoring forward"))
SMALL_LOSS = register(Rule("small_loss", _build_small_loss, SmallLossOptions,
                           description="stale's small-loss rule (noisy labels)"))
