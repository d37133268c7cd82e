"""Selection strategies: how a step picks the samples it trains on.

A Strategy is three pure functions plus two static facts:
`init(device) -> selector_state`;
`select(selector_state, batch, key, score) -> Selection`, where `score()` runs the
scoring pass on the batch with the current parameters and returns a TensorDict of
per-sample quantities ("loss", and "grad_norm" when `needs` asks for it);
`observe(selector_state, batch, trained, losses) -> selector_state`, called after the
update with the batch positions of the trained samples (ascending) and the per-sample
losses the training forward produced for them (free information: no extra forward),
e.g. to refresh a stale-score table.
A strategy that never calls `score` does no scoring work; the ones that do say so
in `info["n_scored"]`, which the work accounting charges. Every strategy
shares the step skeleton in `step.py`; they differ only here.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from tensordict import TensorDict
from torch import Tensor
from torch.profiler import record_function

from . import controller as ctl
from . import gate as gt
from . import prng
from .config import STALE_RULE_NAMES, STRATEGY_NAMES, ConfigError, check_range
from .significance import intensity as intensity_of
from .significance import loss_intensity, normalise_by_mean

Significance = Callable[[TensorDict, TensorDict], Tensor]


class Selection(NamedTuple):
    """What `select` returns: mask [B] bool, optional loss weights [B], new state, metrics, and, when the
    number selected is fixed by the batch size alone, `index`: the selected positions in ascending order
    (the step then gathers the sub-batch with a static shape and no host sync, instead of `mask.nonzero()`)."""

    mask: Tensor
    weight: Tensor | None
    state: TensorDict
    info: TensorDict
    index: Tensor | None = None


def _mask_of(index: Tensor, n: int) -> Tensor:
    return torch.zeros(n, dtype=torch.bool, device=index.device).index_fill(0, index, True)


def _unchanged(state: TensorDict, batch: TensorDict, trained: Tensor, losses: Tensor) -> TensorDict:
    return state


class PrioritySampling(NamedTuple):
    """Batches are drawn by prioritised sampling (`sampling.prioritized_draw`), not by the epoch order:
    each step draws `k` samples standing for a nominal batch of `batch_size` of the epoch."""

    rate: float
    alpha: float
    beta: float
    batch_size: int

    @property
    def k(self) -> int:
        return max(1, round(self.rate * self.batch_size))


class Strategy(NamedTuple):
    """A named (init, select, observe) triple; `needs` lists what `score()` must compute;
    `sampling` is set when the batches themselves must come from a prioritised sampler;
    `index_only` says that `select` reads only the batch's "index" (never images or scores) and leaves the
    selector state unchanged, so the trainer selects from a pool of indices before it gathers any image
    (`sampling.draw`)."""

    name: str
    init: Callable[..., TensorDict]
    select: Callable[[TensorDict, TensorDict, Tensor, Callable[[], TensorDict]], Selection]
    needs: tuple[str, ...] = ()
    trains_all: bool = False
    observe: Callable[[TensorDict, TensorDict, Tensor, Tensor], TensorDict] = _unchanged
    sampling: PrioritySampling | None = None
    index_only: bool = False


def _zero(batch: TensorDict) -> Tensor:
    return torch.zeros((), dtype=torch.int64, device=batch.device)


def full() -> Strategy:
    """Train on every sample; no scoring. Passes any selector state through unchanged."""

    def select(state, batch, key, score):
        mask = torch.ones(batch.batch_size[0], dtype=torch.bool, device=batch.device)
        return Selection(mask, None, state, TensorDict(n_scored=_zero(batch)))

    return Strategy("full", lambda device=None: TensorDict({}, device=device), select, trains_all=True)


def random_subset(rate: float, min_selected: int = 1) -> Strategy:
    """A fresh uniform random subset of round(rate * B) samples per batch (at least min_selected); no scoring."""
    check_range("random_subset", "rate", rate, 0.0, 1.0, low_open=True)

    def select(state, batch, key, score):
        n = batch.batch_size[0]
        k = max(min_selected, round(rate * n))
        index = torch.argsort(prng.uniform(key, n).to(batch.device))[:k].sort().values
        return Selection(_mask_of(index, n), None, state, TensorDict(n_scored=_zero(batch)), index)

    return Strategy("random", lambda device=None: TensorDict({}, device=device), select, index_only=True)


def all_data(strategy: Strategy) -> Strategy:
    """Train on every sample of the batch (weighted by its "weight", if it has one), leave the selector's
    controller idle, but let `strategy` observe the losses: the warm-up and cool-down epochs (a stale-score
    table fills during warm-up), and the step over samples that `sampling.draw` already selected."""

    def select(state, batch, key, score):
        mask = torch.ones(batch.batch_size[0], dtype=torch.bool, device=batch.device)
        return Selection(mask, batch.get("weight", None), state, TensorDict(n_scored=_zero(batch)))

    return Strategy(f"all_data({strategy.name})", strategy.init, select, trains_all=True,
                    observe=strategy.observe)


def _proportional_draw(weight: Tensor, k: int, explore: float, key: Tensor) -> tuple[Tensor, Tensor]:
    """(k positions ascending, P(selected) per sample, about): k draws without replacement with probability
    p_i = (1 - explore) * weight_i / sum(weight) + explore / n per draw (weights >= 0)."""
    p = (1 - explore) * weight / weight.sum().clamp_min(1e-12) + explore / weight.shape[0]
    return _gumbel_top_k(p.log(), k, key), (k * p).clamp(max=1.0)


def _gumbel_top_k(log_p: Tensor, k: int, key: Tensor) -> Tensor:
    """k positions (ascending) drawn without replacement with probabilities proportional to exp(log_p)."""
    u = prng.uniform(key, log_p.shape[0]).to(log_p.device).clamp(1e-7, 1 - 1e-7)
    keys = log_p - torch.log(-torch.log(u))
    return torch.topk(keys, k).indices.sort().values


STALE_RULES = STALE_RULE_NAMES


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
        top = torch.where(seen, loss, torch.zeros_like(loss)).max().clamp_min(1e-6)
        loss = torch.where(seen, loss.clamp_min(0), top)  # never trained: as hard as the hardest
        hard = _at_or_above_mean(loss)
        if rule == "small_loss":
            index, included = _proportional_draw(torch.exp(-2.0 * loss / loss.mean().clamp_min(1e-6)), k, explore, key)
        elif rule == "proportional":
            index, included = _proportional_draw(loss, k, explore, key)
        else:
            included, index = _hard_first(hard, k, round(explore * k), key)
        weight = 1.0 / (n * included).clamp_min(1e-6) if rescale else None
        info = TensorDict(n_scored=torch.zeros((), dtype=torch.int64, device=idx.device),
                          stale_seen_frac=seen.float().mean(), stale_hard_frac=hard.float().mean())
        return Selection(_mask_of(index, n), weight, state, info, index)

    return Strategy("stale", lambda device=None: _loss_table(num_samples, device), select,
                    observe=_remember_losses, index_only=True)


def infobatch(num_samples: int, prune: float = 0.5) -> Strategy:
    """InfoBatch (Qin et al., ICLR 2024) on remembered losses: of each batch, keep every sample whose loss (from
    the last time it was trained) is at or above the mean over the samples seen so far, and each one below it with
    probability 1 - prune; a kept below-mean sample's loss is weighted 1 / (1 - prune), so the batch's weighted loss
    estimates its unpruned mean. The number trained varies from batch to batch (about 1 - prune * the below-mean
    share); never-trained samples are always kept. Its selection pool is one batch (`plan.pool_size`), and the
    annealing to full data at the end of training is the run's cool-down (`cooldown_epochs`).
    """
    check_range("infobatch", "num_samples", num_samples, 1)
    check_range("infobatch", "prune", prune, 0.0, 1.0, high_open=True)

    def select(state, batch, key, score):
        idx = batch["index"]
        n = idx.shape[0]
        loss, seen = state["loss"], state["seen"]
        mean = torch.where(seen, loss, 0.0).sum() / seen.sum().clamp_min(1)  # over every sample trained so far
        easy = seen[idx] & (loss[idx] < mean)
        keep = ~easy | (prng.uniform(key, n).to(idx.device) >= prune)
        keep = keep | (~keep.any() & (torch.arange(n, device=idx.device) == 0))  # never an empty batch
        weight = torch.where(easy, 1.0 / (1.0 - prune), 1.0)
        info = TensorDict(n_scored=torch.zeros((), dtype=torch.int64, device=idx.device),
                          infobatch_easy_frac=easy.float().mean())
        return Selection(keep, weight, state, info, keep.nonzero()[:, 0])

    return Strategy("infobatch", lambda device=None: _loss_table(num_samples, device), select,
                    observe=_remember_losses, index_only=True)


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
        table = _loss_table(num_samples, device)
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
        reducible = _hardest_if_unseen(state["loss"][idx] - state["reference"][idx], seen)  # clamped at 0
        index, _ = _proportional_draw(reducible, k, explore, key)
        info = TensorDict(n_scored=torch.zeros((), dtype=torch.int64, device=idx.device),
                          stale_seen_frac=seen.float().mean(), rho_reducible_mean=reducible.mean())
        return Selection(_mask_of(index, n), None, state, info, index)

    return Strategy("rho_loss", init, select, observe=_remember_losses, index_only=True)


def with_reference(state: TensorDict, losses: Tensor, seconds: float = 0.0, accuracy: float = 0.0) -> TensorDict:
    """rho_loss's selector state with the irreducible losses [N] written in, and what they cost (seconds) and the
    references' accuracy on the samples they scored, for the summary (a new TensorDict; nothing mutated)."""
    if losses.shape != state["reference"].shape:
        raise ConfigError(f"rho_loss: {losses.shape[0]} reference losses for a table of "
                          f"{state['reference'].shape[0]} samples; compute them on the same training set")
    f64 = dict(dtype=torch.float64, device=state.device)
    return TensorDict(dict(state.items(), reference=losses.detach().to(state["reference"]),
                           has_reference=torch.ones_like(state["has_reference"]),
                           reference_time_s=torch.tensor(seconds, **f64),
                           reference_accuracy=torch.tensor(accuracy, **f64)), device=state.device)


def _loss_table(num_samples: int, device=None) -> TensorDict:
    return TensorDict(loss=torch.zeros(num_samples, device=device),
                      seen=torch.zeros(num_samples, dtype=torch.bool, device=device))


def _remember_losses(state: TensorDict, batch: TensorDict, trained: Tensor, losses: Tensor) -> TensorDict:
    """The table with the trained samples' losses (from the training forward) written in and marked seen."""
    index = batch["index"][trained]
    loss = state["loss"].index_put((index,), losses.detach().to(state["loss"].dtype))
    seen = state["seen"].index_put((index,), torch.ones_like(index, dtype=torch.bool))
    return TensorDict(dict(state.items(), loss=loss, seen=seen), device=state.device)


def _at_or_above_mean(loss: Tensor) -> Tensor:
    return loss >= loss.mean()


def _hard_first(hard: Tensor, k: int, k_explore: int, key: Tensor) -> tuple[Tensor, Tensor]:
    """(selection probability per sample, k positions ascending): k_explore uniform picks, then hard samples
    in random order, then easy ones."""
    n = hard.shape[0]
    k_order, k_pick = prng.split(key)
    explored = torch.zeros(n, dtype=torch.bool, device=hard.device)
    if k_explore:
        explored = _mask_of(torch.topk(prng.uniform(k_pick, n).to(hard.device), k_explore).indices, n)
    rank_key = prng.uniform(k_order, n).to(hard.device) + 2.0 * hard + 4.0 * explored
    index = torch.topk(rank_key, k).indices.sort().values
    n_hard, rest = hard.sum().float(), float(k - k_explore)
    p_hard = (rest / n_hard.clamp_min(1.0)).clamp(max=1.0)
    p_easy = ((rest - n_hard).clamp_min(0.0) / (n - n_hard).clamp_min(1.0)).clamp(max=1.0)
    return k_explore / n + (1 - k_explore / n) * torch.where(hard, p_hard, p_easy), index


def prioritized(num_samples: int, rate: float, *, batch_size: int = 128, alpha: float = 0.6,
                beta: float = 0.4) -> Strategy:
    """Prioritised replay over the whole dataset: each step trains on round(rate * batch_size) samples drawn
    with replacement with P(i) ~ priority_i ** alpha, weighted by the importance weights
    (p_i / p_min) ** -beta (`sampling.prioritized_draw`, a pure function of the table and a key). Priorities
    are the per-sample losses of the last time a sample was trained (state table `priority`), updated by
    `observe`; no scoring forward. The trainer draws the batches (`Strategy.sampling`); the step trains them
    all and accounts each step as `batch_size` samples seen, so savings are against full training of the
    same epoch."""
    check_range("prioritized", "rate", rate, 0.0, 1.0, low_open=True)
    check_range("prioritized", "batch_size", batch_size, 1)
    check_range("prioritized", "alpha", alpha, 0.0)
    check_range("prioritized", "beta", beta, 0.0)

    def init(device=None) -> TensorDict:
        return TensorDict(priority=torch.ones(num_samples, device=device),
                          seen=torch.zeros(num_samples, dtype=torch.bool, device=device))

    def select(state, batch, key, score):
        n = batch.batch_size[0]
        mask = torch.ones(n, dtype=torch.bool, device=batch.device)
        weight = batch.get("weight", None)
        return Selection(mask, weight, state, TensorDict(n_scored=_zero(batch)))

    def observe(state, batch, trained, losses):
        trained = batch["index"][trained]
        return TensorDict(
            priority=state["priority"].index_put((trained,), losses.detach().to(state["priority"].dtype)),
            seen=state["seen"].index_put((trained,), torch.ones_like(trained, dtype=torch.bool)))

    return Strategy("prioritized", init, select, trains_all=True, observe=observe,
                    sampling=PrioritySampling(rate, alpha, beta, batch_size))


def default_gate(target_rate: float) -> gt.GateConfig:
    """The seed's budget (100, cost 10, regen U(1, 3) at a 10% target) with regen scaled to the target.

    The seed's constants cap the sustained rate at 20%; scaling keeps the cap at twice the
    target (up to 100%), so every target is reachable and bursts stay bounded.
    """
    scale = target_rate / 0.1
    return gt.GateConfig(regen_low=1.0 * scale, regen_high=3.0 * scale)


def sundew(target_rate: float | None = None, *, controller: ctl.ControllerConfig | None = None,
           gate: gt.GateConfig | None = None, significance: Significance = loss_intensity,
           needs: tuple[str, ...] = ("loss",)) -> Strategy:
    """The seed's method with fresh scores: score every sample, gate on significance, PI-control the threshold."""
    if controller is None:
        controller = ctl.ControllerConfig(target_rate=0.1 if target_rate is None else target_rate)
    elif target_rate is not None and target_rate != controller.target_rate:
        raise ConfigError(f"sundew: target_rate={target_rate} disagrees with "
                          f"controller.target_rate={controller.target_rate}; give one of them")
    gate_cfg = default_gate(controller.target_rate) if gate is None else gate

    def init(device=None) -> TensorDict:
        return TensorDict(gate=gt.init(gate_cfg, device), controller=ctl.init(controller, device))

    def select(state, batch, key, score):
        scored = score()
        with record_function("fa::significance"):
            scores = significance(scored, batch)
        mask, gated, info = _gate_and_control(state, scores, key, controller, gate_cfg)
        info["n_scored"] = torch.tensor(batch.batch_size[0], dtype=torch.int64, device=batch.device)
        return Selection(mask, None, gated, info)

    return Strategy("sundew", init, select, needs=tuple(needs))


def _gate_and_control(state: TensorDict, scores: Tensor, key: Tensor, controller: ctl.ControllerConfig,
                      gate_cfg: gt.GateConfig) -> tuple[Tensor, TensorDict, TensorDict]:
    """Sundew's decision on `scores`: (calibrate on the first gated batch,) gate at the controller's threshold,
    then one PI step on the observed rate. Returns the mask, the new gate/controller state and metrics."""
    ctrl_state = state["controller"]
    with record_function("fa::gate"):
        if controller.initial_threshold is None:
            start = gt.threshold_for_rate(scores, controller.target_rate, gate_cfg.temperature,
                                          controller.threshold_min, controller.threshold_max)
            ctrl_state = ctl.calibrate(ctrl_state, start)
        mask, gate_state, gate_info = gt.gate(scores, ctrl_state["threshold"], state["gate"], key, gate_cfg)
    with record_function("fa::controller"):
        new_ctrl = ctl.update(ctrl_state, mask.float().mean(), controller)
    info = TensorDict(threshold=ctrl_state["threshold"], rate_ema=new_ctrl["rate_ema"],
                      significance_mean=scores.mean(), **gate_info)
    return mask, TensorDict(gate=gate_state, controller=new_ctrl), info


def sundew_remembered(num_samples: int, target_rate: float = 0.1, *, controller: ctl.ControllerConfig | None = None,
                      gate: gt.GateConfig | None = None, loss_weight: float = 0.7) -> Strategy:
    """The seed's gate and PI controller deciding on *remembered* significance, with no scoring forward.

    Each sample's loss and input intensity are kept in a per-sample table (filled by `observe` from the training
    forward, during warm-up and after), and significance = loss_weight * normalised remembered loss +
    (1 - loss_weight) * normalised intensity over the pool; never-trained samples count as the hardest seen.
    Selection reads only indices (`index_only`), so the trainer gathers the images of the chosen samples alone.
    """
    check_range("sundew_remembered", "num_samples", num_samples, 1)
    check_range("sundew_remembered", "loss_weight", loss_weight, 0.0, 1.0)
    controller = controller or ctl.ControllerConfig(target_rate=target_rate)
    gate_cfg = default_gate(controller.target_rate) if gate is None else gate

    def init(device=None) -> TensorDict:
        return TensorDict(gate=gt.init(gate_cfg, device), controller=ctl.init(controller, device),
                          loss=torch.zeros(num_samples, device=device),
                          intensity=torch.zeros(num_samples, device=device),
                          seen=torch.zeros(num_samples, dtype=torch.bool, device=device))

    def select(state, batch, key, score):
        idx = batch["index"]
        seen = state["seen"][idx]
        loss = _hardest_if_unseen(state["loss"][idx], seen)
        known = state["intensity"][idx]
        typical = torch.where(seen, known, torch.zeros_like(known)).sum() / seen.sum().clamp_min(1)
        intensity = torch.where(seen, known, typical.clamp_min(1e-6))
        with record_function("fa::significance"):
            scores = loss_weight * normalise_by_mean(loss) + (1 - loss_weight) * normalise_by_mean(intensity)
        mask, gated, info = _gate_and_control(state, scores, key, controller, gate_cfg)
        info["n_scored"] = torch.zeros((), dtype=torch.int64, device=idx.device)
        new_state = TensorDict(dict(state.items(), gate=gated["gate"], controller=gated["controller"]),
                               device=state.device)
        return Selection(mask, None, new_state, info)

    def observe(state, batch, trained, losses):
        index = batch["index"][trained]
        images = batch["image"][trained]
        return TensorDict(dict(
            state.items(),
            loss=state["loss"].index_put((index,), losses.detach().to(state["loss"].dtype)),
            intensity=state["intensity"].index_put((index,), intensity_of(images).to(state["intensity"].dtype)),
            seen=state["seen"].index_put((index,), torch.ones_like(index, dtype=torch.bool))), device=state.device)

    return Strategy("sundew_remembered", init, select, observe=observe, index_only=True)


def _hardest_if_unseen(loss: Tensor, seen: Tensor) -> Tensor:
    top = torch.where(seen, loss, torch.zeros_like(loss)).max().clamp_min(1e-6)
    return torch.where(seen, loss.clamp_min(0), top)


def by_name(name: str, target_rate: float, num_samples: int | None = None, batch_size: int = 128,
            explore: float | None = None, stale_rule: str = "proportional", proxy_model=None) -> Strategy:
    """Build a strategy from its CLI name (one of STRATEGIES); `stale` and `prioritized` need the dataset size
    (`batch_size` is prioritized's nominal batch); `explore` (None: its default) and `stale_rule` are stale's;
    `proxy` needs its small model (`proxy_model`, an nn.Module taking the batch's images)."""
    if name == "full":
        return full()
    if name == "random":
        return random_subset(target_rate)
    if name == "sundew":
        return sundew(target_rate)
    if name == "stale":
        if num_samples is None:
            raise ConfigError("strategy 'stale' needs num_samples (the dataset size) for its score table")
        return stale(num_samples, target_rate, rule=stale_rule,
                     **({} if explore is None else {"explore": explore}))
    if name == "small_loss":  # stale's small-loss rule under its own name, to compare it beside `stale`
        if num_samples is None:
            raise ConfigError("strategy 'small_loss' needs num_samples (the dataset size) for its score table")
        return stale(num_samples, target_rate, rule="small_loss", **({} if explore is None else {"explore": explore}))
    if name == "infobatch":
        if num_samples is None:
            raise ConfigError("strategy 'infobatch' needs num_samples (the dataset size) for its loss table")
        return infobatch(num_samples)
    if name == "rho_loss":
        if num_samples is None:
            raise ConfigError("strategy 'rho_loss' needs num_samples (the dataset size) for its loss tables")
        return rho_loss(num_samples, target_rate, **({} if explore is None else {"explore": explore}))
    if name == "proxy":
        if proxy_model is None:
            raise ConfigError("strategy 'proxy' needs proxy_model, the small network that scores the pool "
                              "(e.g. models.cnn(width=8))")
        from .proxy import proxy  # proxy.py builds on this module and step.py
        rule = "hardest" if stale_rule == "hard_first" else "proportional"  # --stale-rule hard_first: airbench's top-k
        return proxy(proxy_model, target_rate, rule=rule, **({} if explore is None else {"explore": explore}))
    if name == "sundew_remembered":
        if num_samples is None:
            raise ConfigError("strategy 'sundew_remembered' needs num_samples (the dataset size) for its tables")
        return sundew_remembered(num_samples, target_rate)
    if name == "prioritized":
        if num_samples is None:
            raise ConfigError("strategy 'prioritized' needs num_samples (the dataset size) for its priorities")
        return prioritized(num_samples, target_rate, batch_size=batch_size)
    raise ConfigError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")


STRATEGIES = STRATEGY_NAMES
