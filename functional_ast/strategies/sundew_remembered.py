"""`sundew_remembered`: the Sundew gate and PI controller deciding on remembered significance (the losses and
input statistics of the last time each sample was trained), so no scoring forward runs."""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch.profiler import record_function

from functional_ast.core import controller as ctl
from functional_ast.core import gate as gt
from functional_ast.core.checks import check_range
from functional_ast.core.selection import Selection, Strategy, remembered_mean
from functional_ast.core.significance import normalise_by_mean
from functional_ast.core.state import replace
from functional_ast.core.task import Task, as_task
from functional_ast.strategies.draws import hardest_if_unseen
from functional_ast.strategies.registry import Rule, register
from functional_ast.strategies.sundew import default_gate, gate_and_control


def sundew_remembered(num_samples: int, target_rate: float = 0.1, *, controller: ctl.ControllerConfig | None = None,
                      gate: gt.GateConfig | None = None, loss_weight: float = 0.7, task: Task | None = None
                      ) -> Strategy:
    """The seed's gate and PI controller deciding on *remembered* significance, with no scoring forward.

    Each sample's loss and input statistic (the task's; state key "intensity", as images have it) are kept in a
    per-sample table (filled by `observe` from the training
    forward, during warm-up and after), and significance = loss_weight * normalised remembered loss +
    (1 - loss_weight) * normalised statistic over the pool; never-trained samples count as the hardest seen.
    Selection reads only indices (`index_only`), so the trainer gathers the images of the chosen samples alone.
    """
    check_range("sundew_remembered", "num_samples", num_samples, 1)
    check_range("sundew_remembered", "loss_weight", loss_weight, 0.0, 1.0)
    controller = controller or ctl.ControllerConfig(target_rate=target_rate)
    task = as_task(task)
    gate_cfg = default_gate(controller.target_rate) if gate is None else gate

    def init(device=None) -> TensorDict:
        return TensorDict(gate=gt.init(gate_cfg, device), controller=ctl.init(controller, device),
                          loss=torch.zeros(num_samples, device=device),
                          intensity=torch.zeros(num_samples, device=device),
                          seen=torch.zeros(num_samples, dtype=torch.bool, device=device))

    def select(state, batch, key, score):
        idx = batch["index"]
        seen = state["seen"][idx]
        loss = hardest_if_unseen(state["loss"][idx], seen)
        known = state["intensity"][idx]
        typical = torch.where(seen, known, torch.zeros_like(known)).sum() / seen.sum().clamp_min(1)
        intensity = torch.where(seen, known, typical.clamp_min(1e-6))
        with record_function("fa::significance"):
            scores = loss_weight * normalise_by_mean(loss) + (1 - loss_weight) * normalise_by_mean(intensity)
        mask, gated, info = gate_and_control(state, scores, key, controller, gate_cfg)
        info["n_scored"] = torch.zeros((), dtype=torch.int64, device=idx.device)
        info["loss_seen"] = remembered_mean(state["loss"][idx], seen)
        new_state = replace(state, gate=gated["gate"], controller=gated["controller"])
        return Selection(mask, None, new_state, info)

    def observe(state, batch, trained, losses):
        index = batch["index"][trained]
        statistic = task.statistic(task.inputs(batch)[trained])
        return replace(state, loss=state["loss"].index_put((index,), losses.detach().to(state["loss"].dtype)),
                       intensity=state["intensity"].index_put((index,), statistic.to(state["intensity"].dtype)),
                       seen=state["seen"].index_put((index,), torch.ones_like(index, dtype=torch.bool)))

    return Strategy("sundew_remembered", init, select, observe=observe, index_only=True)


RULE = register(Rule("sundew_remembered", lambda context, options: sundew_remembered(
    context.num_samples, context.target_rate, task=context.task),
                     description="the Sundew gate + PI controller on remembered scores (no scoring forward)"))
