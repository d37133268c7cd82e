"""`infobatch`: InfoBatch (Qin et al., ICLR 2024) on remembered losses; the rule picks its own share of a batch."""

from __future__ import annotations

import torch
from tensordict import TensorDict

from functional_ast.core import prng
from functional_ast.core.checks import check_range
from functional_ast.core.selection import Selection, Strategy, remembered_mean
from functional_ast.strategies.draws import loss_table, remember_losses
from functional_ast.strategies.registry import Rule, register


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
                          infobatch_easy_frac=easy.float().mean(), loss_seen=remembered_mean(loss[idx], seen[idx]))
        return Selection(keep, weight, state, info, keep.nonzero()[:, 0])

    return Strategy("infobatch", lambda device=None: loss_table(num_samples, device), select,
                    observe=remember_losses, index_only=True)


RULE = register(Rule("infobatch", lambda context, options: infobatch(context.num_samples), own_rate=True,
                     description="InfoBatch: prune below-mean remembered losses, rescale the kept"))
