"""`random`: a fresh uniform random subset of each pool (RS2, Okanovic et al., 2023); no scoring."""

from __future__ import annotations

import torch
from tensordict import TensorDict

from functional_ast.core import prng
from functional_ast.core.checks import check_range
from functional_ast.core.selection import Selection, Strategy, mask_of, no_scoring
from functional_ast.strategies.registry import Rule, register


def random_subset(rate: float, min_selected: int = 1) -> Strategy:
    """A fresh uniform random subset of round(rate * B) samples per batch (at least min_selected); no scoring."""
    check_range("random_subset", "rate", rate, 0.0, 1.0, low_open=True)

    def select(state, batch, key, score):
        n = batch.batch_size[0]
        k = max(min_selected, round(rate * n))
        index = torch.argsort(prng.uniform(key, n).to(batch.device))[:k].sort().values
        return Selection(mask_of(index, n), None, state, TensorDict(n_scored=no_scoring(batch)), index)

    return Strategy("random", lambda device=None: TensorDict({}, device=device), select, index_only=True)


RULE = register(Rule("random", lambda context, options: random_subset(context.target_rate), baseline=True,
                     description="a fresh random subset per pool (RS2)"))
