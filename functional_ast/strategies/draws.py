"""Draws and remembered-loss tables shared by the rules: pure functions of (weights or losses, key)."""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import Tensor

from functional_ast.core import prng
from functional_ast.core.selection import mask_of
from functional_ast.core.state import replace


def proportional_draw(weight: Tensor, k: int, explore: float, key: Tensor) -> tuple[Tensor, Tensor]:
    """(k positions ascending, P(selected) per sample, about): k draws without replacement with probability
    p_i = (1 - explore) * weight_i / sum(weight) + explore / n per draw (weights >= 0)."""
    p = (1 - explore) * weight / weight.sum().clamp_min(1e-12) + explore / weight.shape[0]
    return gumbel_top_k(p.log(), k, key), (k * p).clamp(max=1.0)


def gumbel_top_k(log_p: Tensor, k: int, key: Tensor) -> Tensor:
    """k positions (ascending) drawn without replacement with probabilities proportional to exp(log_p)."""
    u = prng.uniform(key, log_p.shape[0]).to(log_p.device).clamp(1e-7, 1 - 1e-7)
    keys = log_p - torch.log(-torch.log(u))
    return torch.topk(keys, k).indices.sort().values


def hard_first(hard: Tensor, k: int, k_explore: int, key: Tensor) -> tuple[Tensor, Tensor]:
    """(selection probability per sample, k positions ascending): k_explore uniform picks, then hard samples
    in random order, then easy ones."""
    n = hard.shape[0]
    k_order, k_pick = prng.split(key)
    explored = torch.zeros(n, dtype=torch.bool, device=hard.device)
    if k_explore:
        explored = mask_of(torch.topk(prng.uniform(k_pick, n).to(hard.device), k_explore).indices, n)
    rank_key = prng.uniform(k_order, n).to(hard.device) + 2.0 * hard + 4.0 * explored
    index = torch.topk(rank_key, k).indices.sort().values
    n_hard, rest = hard.sum().float(), float(k - k_explore)
    p_hard = (rest / n_hard.clamp_min(1.0)).clamp(max=1.0)
    p_easy = ((rest - n_hard).clamp_min(0.0) / (n - n_hard).clamp_min(1.0)).clamp(max=1.0)
    return k_explore / n + (1 - k_explore / n) * torch.where(hard, p_hard, p_easy), index


def at_or_above_mean(loss: Tensor) -> Tensor:
    """The samples whose loss is at or above the mean."""
    return loss >= loss.mean()


def hardest_if_unseen(loss: Tensor, seen: Tensor) -> Tensor:
    """Remembered losses clamped at 0, never-trained samples counted as the hardest seen."""
    top = torch.where(seen, loss, torch.zeros_like(loss)).max().clamp_min(1e-6)
    return torch.where(seen, loss.clamp_min(0), top)


def loss_table(num_samples: int, device=None) -> TensorDict:
    """A per-sample remembered-loss table: "loss" [N] and "seen" [N] bool, all unseen."""
    return TensorDict(loss=torch.zeros(num_samples, device=device),
                      seen=torch.zeros(num_samples, dtype=torch.bool, device=device))


def remember_losses(state: TensorDict, batch: TensorDict, trained: Tensor, losses: Tensor) -> TensorDict:
    """The table with the trained samples' losses (from the training forward) written in and marked seen."""
    index = batch["index"][trained]
    loss = state["loss"].index_put((index,), losses.detach().to(state["loss"].dtype))
    seen = state["seen"].index_put((index,), torch.ones_like(index, dtype=torch.bool))
    return replace(state, loss=loss, seen=seen)
