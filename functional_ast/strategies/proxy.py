"""Selection by a cheap proxy model: a small network scores every sample of a pool, the main model trains the
ones it finds hard (airbench96_faster's data filtering; Coleman et al., "Selection via Proxy", ICLR 2020).

`proxy(model, rate)` is a Strategy whose selector state holds the proxy's parameters, buffers and SGD state:
- `select`: a train-mode forward of the proxy over the pool (no gradient, BatchNorm statistics of the pool, its
  running statistics left alone), then k = round(rate * n) samples drawn in proportion to the proxy's loss
  (rule "proportional", with an `explore` share uniform) or the k with the highest (rule "hardest", airbench's);
- `observe`: one SGD step of the proxy on every `train_every`-th sample the main model just trained (of the
  whole batch during warm-up and cool-down, of the selected ones otherwise; airbench trains its proxy on a
  quarter of the steps), so the proxy keeps learning at a fraction of the cost;
  a non-finite proxy gradient leaves the proxy as it was.
Both count the FLOPs they execute in the state's "flops" counter, which the step adds to the run's work (so a
time or FLOP budget pays for the proxy). Everything is a pure function of (state, batch, key).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict
from torch import nn

from functional_ast import models
from functional_ast.core import optim, work
from functional_ast.core.checks import ConfigError, check_range, integer, one_of
from functional_ast.core.losses import buffers_of, make_apply, make_loss_and_grad, params_of
from functional_ast.core.selection import Selection, Strategy, mask_of
from functional_ast.core.state import replace
from functional_ast.core.step import all_finite, keep_if, measure_costs
from functional_ast.core.task import Task, as_task
from functional_ast.strategies.draws import proportional_draw
from functional_ast.strategies.registry import Context, Rule, option, register

RULES = ("proportional", "hardest")


def proxy(model: nn.Module, rate: float, *, rule: str = "proportional", explore: float = 0.2, train_every: int = 4,
          lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 5e-4, min_selected: int = 1,
          task: Task | None = None) -> Strategy:
    """Train round(rate * n) samples of each pool of n, chosen by `model`'s loss (the proxy, used as a shape and
    for its initial parameters): rule "proportional" draws them as `stale` does from remembered losses
    (p_i = (1 - explore) * loss_i / sum(loss) + explore / n), rule "hardest" keeps the k highest (airbench's).
    The proxy learns by Nesterov SGD at a constant `lr` on every `train_every`-th sample the main model trains
    (a strided share: a static shape, no host sync). `task` gives its inputs, targets and loss (default: the
    classification task)."""
    check_range("proxy", "rate", rate, 0.0, 1.0, low_open=True)
    check_range("proxy", "explore", explore, 0.0, 1.0)
    check_range("proxy", "train_every", train_every, 1)
    if rule not in RULES:
        raise ConfigError(f"proxy: unknown rule {rule!r}; choose one of: {', '.join(RULES)}")
    check_range("proxy", "lr", lr, 0.0, low_open=True)
    task = as_task(task)
    apply = make_apply(model)
    loss_and_grad = make_loss_and_grad(apply, task.loss)
    optimizer = optim.sgd(lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)
    params0, buffers0 = params_of(model), buffers_of(model)
    costs: dict[tuple, work.WorkCosts] = {}  # memo of a pure function of the input shape

    def flops_of(state: TensorDict, x: torch.Tensor) -> work.WorkCosts:
        """FLOPs per sample of the proxy's scoring forward and of its training step, on rows shaped like x's."""
        key = (tuple(x.shape[1:]), x.dtype)
        if key not in costs:
            costs[key] = measure_costs(lambda p, b, xs, ys: apply.train(p, b, xs), loss_and_grad, state, x)
        return costs[key]

    def init(device=None) -> TensorDict:
        params = params0.to(device) if device is not None else params0.clone()
        return TensorDict(params=params, buffers=buffers0.to(params.device), opt=optimizer.init(params),
                          flops=torch.zeros((), dtype=torch.int64, device=params.device))

    def select(state, batch, key, score):
        x, y = task.inputs(batch), task.targets(batch)
        n = y.shape[0]
        k = min(n, max(min_selected, round(rate * n)))
        with torch.no_grad():
            logits, _ = apply.train(state["params"], state["buffers"], x)  # the pool's BatchNorm statistics
            loss = task.loss(logits, y)
        if rule == "hardest":
            index = torch.topk(loss, k).indices.sort().values
        else:
            index, _ = proportional_draw(loss, k, explore, key)
        spent = state["flops"] + n * flops_of(state, x).score_flops
        info = TensorDict(n_scored=torch.zeros((), dtype=torch.int64, device=y.device),
                          proxy_loss_mean=loss.mean(), proxy_selected_loss_mean=loss[index].mean())
        return Selection(mask_of(index, n), None, replace(state, flops=spent), info, index)

    def observe(state, batch, trained, losses):
        trained = trained[::train_every]
        x, y = task.inputs(batch)[trained], task.targets(batch)[trained]
        grads, (_, buffers, _) = loss_and_grad(state["params"], state["buffers"], x, y,
                                               torch.ones(y.shape[0], device=y.device))
        updates, opt = optimizer.update(grads, state["opt"], state["params"])
        learnt = TensorDict(params=optim.apply_updates(state["params"], updates), buffers=buffers, opt=opt,
                            device=state.device)
        kept = keep_if(all_finite(torch.zeros((), device=y.device), grads), learnt, state.exclude("flops"))
        return replace(kept, flops=state["flops"] + y.shape[0] * flops_of(state, x).train_flops)

    return Strategy("proxy", init, select, observe=observe)


@dataclass(frozen=True)
class ProxyOptions:
    width: int = option(8, "width of the scoring network, models.cnn(width=...)", flag="--proxy-width", short="width")
    rule: str = option("proportional", "draw in proportion to the proxy's loss, or keep the hardest (airbench's)",
                       flag="--proxy-rule", choices=RULES)
    explore: float = option(0.2, "share of each draw made uniformly, so out-of-date losses get looked at again")

    def __post_init__(self):
        integer("proxy", "width", self.width, 1)
        one_of("proxy", "rule", self.rule, RULES)
        check_range("proxy", "explore", self.explore, 0.0, 1.0)


def _build(context: Context, options: ProxyOptions) -> Strategy:
    if context.num_classes is None or len(context.sample_shape) != 3:
        raise ConfigError("strategy proxy scores images with a small cnn; it needs an image classification task")
    scorer = models.cnn(num_classes=context.num_classes, in_channels=context.sample_shape[0], width=options.width)
    return proxy(scorer, context.target_rate, rule=options.rule, explore=options.explore, task=context.task)


def _summary(selector) -> dict:
    return dict(proxy_flops=int(selector["flops"]))


RULE = register(Rule("proxy", _build, ProxyOptions, summary=_summary, kinds=("images",),
                     description="a small cnn scores each pool (airbench96_faster's filter)"))
