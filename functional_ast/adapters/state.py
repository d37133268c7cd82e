"""What both adapters keep and do: `fa.fit`'s step with the model taken out (pure functions of the state).

A loop of your own runs the forward and the backward; an adapter does the rest of what `core.step`'s step and the
trainer's batches do around them, with the rule's own functions, in the same order and with the same keys:

- the state is `fa.fit`'s without the model: `selector` (the rule's), `work` (FLOP and sample counters), `rng` (the
  step's key), `step`, and the position `epoch`, `batch` that a draw's key is made from (`sampling.draw_key`);
- a selection from remembered scores (an index-only rule) is `sampling.select_pool` keyed by (seed, epoch, batch),
  as `fa.fit` draws it; a selection on fresh scores (`sundew`) is the rule's `select` with the step's key, the
  second of `prng.split(state["rng"])`, its scores the losses your forward gave;
- the end of a step (`finished`) is the step's: the key split, `observe` on the trained samples' losses (its result
  kept only where those losses are finite), `work.account`, the step counted.

The rule sees a batch of dataset indices ("index") and, where you give one, each sample's input statistic
("statistic", what significance weighs beside the loss: `fa.significance.intensity(images)` for images, as `fa.fit`
computes it); without one every sample counts as typical (1.0), so significance is the loss alone.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import torch
from tensordict import TensorDict
from torch import Tensor

from functional_ast.core import distributed, prng, sampling, work
from functional_ast.core.checks import ConfigError
from functional_ast.core.losses import LossFn, buffers_of, make_apply, make_loss_and_grad, params_of, per_sample_losses
from functional_ast.core.selection import Selection, Strategy
from functional_ast.core.state import check_compatible, replace
from functional_ast.core.step import keep_if, measure_costs
from functional_ast.core.task import Task, as_task, classification_metrics, classification_sums
from functional_ast.core.work import WorkCosts
from functional_ast.strategies import registry
from functional_ast.train.config import TrainConfig
from functional_ast.train.plan import Plan, build_strategy, strategy_context

NO_COSTS = WorkCosts(score_flops=0, train_flops=0)
FORMAT = 1  # of `state_dict()`


def _your_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    raise ConfigError("the adapters take the losses your forward computed; they compute none")


# The rule's view of an adapter's batch: its "statistic" column stands for the inputs, and the statistic of an input
# is itself. A rule that needs real inputs (a model of its own: `proxy`) names its kinds and is refused on "indices".
INDICES = Task("indices", inputs=lambda batch: batch["statistic"], targets=lambda batch: batch["index"],
               loss=_your_loss, statistic=lambda x: x, eval_sums=classification_sums,
               eval_metrics=classification_metrics, kind="indices")


class Built(NamedTuple):
    """An adapter's configuration, its plan (pools, all-data epochs) and the rule built from them."""

    config: TrainConfig
    plan: Plan
    rule: registry.Rule
    strategy: Strategy


def configure(rule: str, *, target_rate: float, batch_size: int, pool_size: int | None, seed: int,
              warmup_epochs: int, cooldown_epochs: int, epochs: int | None,
              options: Mapping[str, Any] | None) -> TrainConfig:
    """The `TrainConfig` an adapter runs (validated there); `epochs` is needed only to place a cool-down."""
    if cooldown_epochs and epochs is None:
        raise ConfigError(f"cooldown_epochs={cooldown_epochs} needs epochs (the cool-down is the last "
                          f"{cooldown_epochs} of them); give epochs or set cooldown_epochs=0")
    epochs = epochs if epochs is not None else max(1, warmup_epochs)
    return TrainConfig(strategy=rule, target_rate=target_rate, epochs=epochs, warmup_epochs=warmup_epochs,
                       cooldown_epochs=cooldown_epochs, batch_size=batch_size, pool_size=pool_size, seed=seed,
                       options=dict(options or {}))


def build(config: TrainConfig, num_samples: int, who: str) -> Built:
    """The plan and the rule of `config` on a data set of `num_samples` (the rule built by its registry entry, as
    `fa.fit` builds it, on the adapters' task: a rule that needs the inputs themselves is refused by its kinds)."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ConfigError(f"{who}: num_samples must be the data set's size (a positive int), got {num_samples!r}")
    plan = Plan.of(config, num_samples)
    rule = config.rule
    strategy = build_strategy(config, strategy_context(config, plan, (), None, INDICES))
    return Built(config, plan, rule, strategy)


def init(strategy: Strategy, seed: int, device=None) -> TensorDict:
    """A new adapter state: the rule's, zeroed counters, `fa.fit`'s first key (the seed's), at epoch 0, batch 0."""
    zero = torch.zeros((), dtype=torch.int64, device=device)
    return TensorDict(selector=strategy.init(device), work=work.init(device), rng=prng.key(seed, device), step=zero,
                      epoch=zero.clone(), batch=zero.clone())


def costs_of(model: torch.nn.Module, inputs: Tensor, targets: Tensor, loss: LossFn | None = None) -> WorkCosts:
    """Per-sample FLOPs of `model`'s scoring forward and of a training forward and backward, on samples shaped like
    the rows of `inputs` and `targets` with the per-sample `loss` (default: cross-entropy): counted on the meta
    device as `fa.fit`'s step counts them (`step.measure_costs`), for an adapter's work counters."""
    task = as_task(loss)
    apply = make_apply(model)

    def score(params, buffers, x, y):
        return TensorDict(loss=per_sample_losses(apply, task.loss, params, buffers, x, y), statistic=task.statistic(x),
                          batch_size=y.shape[:1])

    state = TensorDict(params=params_of(model), buffers=buffers_of(model))
    return measure_costs(score, make_loss_and_grad(apply, task.loss), state, inputs, targets)


def rule_batch(index: Tensor, statistic: Tensor | None) -> TensorDict:
    """The batch a rule sees: dataset indices and each sample's input statistic (1.0 where none is given)."""
    if statistic is None:
        statistic = torch.ones(index.shape[0], device=index.device)
    return TensorDict(index=index, statistic=statistic.detach().float().to(index.device), batch_size=index.shape[:1],
                      device=index.device)


def select_indices(strategy: Strategy, state: TensorDict, index: Tensor, seed: int) -> sampling.Draw:
    """An index-only rule's selection from `index` (a pool of dataset indices): `sampling.select_pool` with the key of
    the state's (epoch, batch), as `fa.fit`'s batches draw it."""
    key = sampling.draw_key(seed, int(state["epoch"]), int(state["batch"]))
    return sampling.select_pool(strategy, state["selector"], index, key)


def select_scored(strategy: Strategy, state: TensorDict, batch: TensorDict, losses: Tensor) -> Selection:
    """A scoring rule's selection on fresh scores (your forward's `losses`), with the step's key, as `fa.fit`'s step
    selects inside itself."""
    _, key = prng.split(state["rng"])
    scores = TensorDict(loss=losses.detach().float(), statistic=batch["statistic"], batch_size=batch.batch_size)
    return strategy.select(state["selector"], batch, key, lambda: scores)


def finished(strategy: Strategy, state: TensorDict, selector: TensorDict, batch: TensorDict, trained: Tensor,
             losses: Tensor, *, n_seen: int, n_scored: Tensor, costs: WorkCosts) -> TensorDict:
    """The state after a step that trained `batch`'s rows `trained` (ascending) with per-sample `losses`: the step's
    key split, `strategy.observe` on `selector` (the state after the selection), kept only where every loss is
    finite (`fa.fit` also tests the gradients, which an adapter never sees), the work counted for `n_seen` samples
    of the epoch, `n_scored` of them scored, and the step counted."""
    rng, _ = prng.split(state["rng"])
    losses = losses.detach()
    observed = strategy.observe(selector, batch, trained, losses)
    selector = keep_if(torch.isfinite(losses).all(), observed, selector)
    n_trained = torch.tensor(trained.shape[0], dtype=torch.int64, device=losses.device)
    counters, _ = work.account(state["work"], costs, n_seen, n_scored.to(losses.device), n_trained)
    return replace(state, selector=selector, work=counters, rng=rng, step=state["step"] + 1)


def weighted_loss(losses: Tensor, weight: Tensor | None, total_weight: Tensor | float | None = None,
                  world: int = 1) -> Tensor:
    """The loss to back-propagate: sum(weight * losses) / sum(weight), `fa.fit`'s. Under DDP (`world` ranks, each
    holding a share of one selection whose weights sum to `total_weight`) this rank's share of it times `world`, so
    that DDP's average of the ranks' gradients is the gradient of the whole selection's weighted mean."""
    if weight is None:
        weight = torch.ones_like(losses)
    weight = weight.to(losses.device, losses.dtype)
    total = weight.sum() if total_weight is None else torch.as_tensor(total_weight, dtype=losses.dtype,
                                                                      device=losses.device)
    return (losses * weight).sum() / total.clamp_min(torch.finfo(losses.dtype).tiny) * world


def counters(state: TensorDict) -> dict[str, int]:
    """The work counters as ints: FLOPs spent and full-data's counterfactual, samples seen, scored and trained."""
    return {k: int(v) for k, v in state["work"].items()}


def default_collective() -> distributed.Collective:
    """The default process group's `Collective` when torch.distributed is initialised (under torchrun), else LOCAL."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return distributed.process_group_collective()
    return distributed.LOCAL


def rank_sizes(collective: distributed.Collective, n: int, device) -> list[int]:
    """Every rank's `n` (one all-reduce of `world` ints; no collective in one process)."""
    if collective.world == 1:
        return [n]
    mine = torch.zeros(collective.world, dtype=torch.int64, device=device)
    mine[collective.rank] = n
    return [int(v) for v in collective.all_reduce_sum(mine)]


def gather_sized(collective: distributed.Collective, columns: list[Tensor], sizes: list[int]) -> list[Tensor]:
    """Every rank's rows of `columns` (1-d, `sizes[rank]` rows on each rank), concatenated in rank order: one
    all-gather of float64 columns (exact for int64 up to 2**53), each rank's rows padded to the longest."""
    if collective.world == 1:
        return columns
    longest = max(1, max(sizes))
    rows = torch.stack([c.detach().to(torch.float64) for c in columns], dim=1)
    padded = torch.cat([rows, rows.new_zeros((longest - rows.shape[0], rows.shape[1]))])
    gathered = collective.all_gather_rows(padded, longest * collective.world)  # rank r's rows at r * longest
    every = torch.cat([gathered[r * longest:r * longest + size] for r, size in enumerate(sizes)])
    return [every[:, i].to(c.dtype) for i, c in enumerate(columns)]


def offsets(sizes: list[int]) -> list[int]:
    """Where each rank's rows start in the rank-ordered concatenation."""
    out, at = [], 0
    for size in sizes:
        out.append(at)
        at += size
    return out


def check_indices(who: str, index, num_samples: int) -> Tensor:
    """`index` as a 1-d int64 tensor of dataset indices in [0, num_samples); ConfigError naming the fix otherwise."""
    index = torch.as_tensor(index)
    if index.dim() != 1 or index.is_floating_point() or index.dtype == torch.bool:
        raise ConfigError(f"{who}: indices must be a 1-d integer tensor of dataset positions (one per sample), got "
                          f"{tuple(index.shape)} {index.dtype}; give the dataset index of each sample, e.g. "
                          f"batch['index']")
    index = index.to(torch.int64)
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_samples):
        raise ConfigError(f"{who}: indices must be in [0, {num_samples}) (num_samples), got {int(index.min())}.."
                          f"{int(index.max())}; give dataset positions, or build the adapter with the data set's size")
    return index


def check_losses(who: str, losses, n: int) -> Tensor:
    """`losses` as a 1-d float tensor of n per-sample losses; ConfigError naming the fix otherwise."""
    if not isinstance(losses, Tensor):
        raise ConfigError(f"{who}: losses must be a tensor of per-sample losses, got {type(losses).__name__}")
    if losses.dim() != 1 or not losses.is_floating_point():
        raise ConfigError(f"{who}: losses must be 1-d per-sample losses (reduction='none'), got shape "
                          f"{tuple(losses.shape)} {losses.dtype}; compute them with reduction='none' (and average "
                          "token losses per sample first)")
    if losses.shape[0] != n:
        raise ConfigError(f"{who}: {losses.shape[0]} losses for {n} indices; give one loss per sample of the batch")
    return losses


def check_statistic(who: str, statistic, n: int) -> Tensor | None:
    if statistic is None:
        return None
    statistic = torch.as_tensor(statistic)
    if statistic.shape != (n,):
        raise ConfigError(f"{who}: statistic must hold one value per sample ({n}), got shape {tuple(statistic.shape)}")
    return statistic


def saved(state: TensorDict, config: TrainConfig, num_samples: int, **extra) -> dict:
    """What `state_dict()` returns: plain tensors and numbers (loadable with torch.load(weights_only=True))."""
    return {"format": FORMAT, "rule": config.strategy, "num_samples": num_samples, "seed": config.seed,
            "target_rate": config.target_rate, "state": state.to_dict(), **extra}


def loaded(saved_state: Mapping, template: TensorDict, config: TrainConfig, num_samples: int, who: str) -> TensorDict:
    """The state in `saved_state` (a `state_dict()`), on the template's device; refused (ConfigError) when it was
    written by another rule, data set size, seed or rate, or its leaves differ from the template's."""
    if not isinstance(saved_state, Mapping) or saved_state.get("format") != FORMAT:
        raise ConfigError(f"{who}.load_state_dict: not a state_dict() of a {who} (format {FORMAT})")
    theirs = tuple(saved_state.get(k) for k in ("rule", "num_samples", "seed", "target_rate"))
    ours = (config.strategy, num_samples, config.seed, config.target_rate)
    if theirs != ours:
        raise ConfigError(f"{who}.load_state_dict: saved for rule, num_samples, seed, target_rate = {theirs}, this "
                          f"{who} has {ours}; build it as the saved one was")
    state = TensorDict(dict(saved_state["state"]), batch_size=[]).to(template.device)
    check_compatible(state, template, f"the {who}'s saved state")
    return state
