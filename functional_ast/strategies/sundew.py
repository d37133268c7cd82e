"""`sundew`: the seed's method with fresh scores: score every sample of a pool, gate on significance
(0.7 x normalised loss + 0.3 x normalised input statistic), PI-control the threshold toward the target rate."""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import Tensor
from torch.profiler import record_function

from functional_ast.core import controller as ctl
from functional_ast.core import gate as gt
from functional_ast.core.checks import ConfigError
from functional_ast.core.selection import Selection, Strategy
from functional_ast.core.significance import Significance, loss_intensity
from functional_ast.strategies.registry import Rule, register


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
        mask, gated, info = gate_and_control(state, scores, key, controller, gate_cfg)
        info["n_scored"] = torch.tensor(batch.batch_size[0], dtype=torch.int64, device=batch.device)
        return Selection(mask, None, gated, info)

    return Strategy("sundew", init, select, needs=tuple(needs))


def gate_and_control(state: TensorDict, scores: Tensor, key: Tensor, controller: ctl.ControllerConfig,
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


RULE = register(Rule("sundew", lambda context, options: sundew(context.target_rate),
                     description="the seed's gate + PI controller on fresh scores (a scoring forward per pool)"))
