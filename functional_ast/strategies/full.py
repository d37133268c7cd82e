"""`full`: train on every sample; no scoring. The baseline every saving is stated against."""

from __future__ import annotations

import torch
from tensordict import TensorDict

from functional_ast.core.selection import Selection, Strategy, no_scoring
from functional_ast.strategies.registry import Rule, register


def full() -> Strategy:
    """Train on every sample; no scoring. Passes any selector state through unchanged."""

    def select(state, batch, key, score):
        mask = torch.ones(batch.batch_size[0], dtype=torch.bool, device=batch.device)
        return Selection(mask, None, state, TensorDict(n_scored=no_scoring(batch)))

    return Strategy("full", lambda device=None: TensorDict({}, device=device), select, trains_all=True)


RULE = register(Rule("full", lambda context, options: full(), gated=False, baseline=True,
                     description="every sample (the budget-matched baseline)"))
