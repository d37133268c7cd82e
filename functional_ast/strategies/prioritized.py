"""`prioritized`: prioritised replay over the whole data set (Schaul et al., 2016), on remembered losses."""

from __future__ import annotations

import torch
from tensordict import TensorDict

from functional_ast.core.checks import check_range
from functional_ast.core.selection import PrioritySampling, Selection, Strategy, no_scoring
from functional_ast.strategies.registry import Rule, register


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
        return Selection(mask, weight, state, TensorDict(n_scored=no_scoring(batch)))

    def observe(state, batch, trained, losses):
        trained = batch["index"][trained]
        return TensorDict(
            priority=state["priority"].index_put((trained,), losses.detach().to(state["priority"].dtype)),
            seen=state["seen"].index_put((trained,), torch.ones_like(trained, dtype=torch.bool)))

    return Strategy("prioritized", init, select, trains_all=True, observe=observe,
                    sampling=PrioritySampling(rate, alpha, beta, batch_size))


RULE = register(Rule("prioritized", lambda context, options: prioritized(context.num_samples, context.target_rate,
                                                                          batch_size=context.pool_size),
                     description="prioritised replay on remembered losses"))
