"""Rho-1's selective language modelling (Lin et al., 2024) as a task: the loss is taken only on the tokens whose
excess loss over a frozen reference model is in the top `keep` share of each window.

Masking tokens saves no FLOPs: the forward and backward still run over every token of the window, and the
reference's forward is added (the step's FLOP count includes it, since it runs inside the loss). What it changes is
which tokens the gradient comes from. The selection is per window (the top k of its T tokens, k = round(keep * T)),
not over the whole batch. `train.selective.fit_selective` trains the reference inside the run's budget.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import Tensor, nn

from functional_ast.core.checks import check_range
from functional_ast.core.losses import make_apply
from functional_ast.core.task import Task
from functional_ast.tasks import text


def token_losses(logits: Tensor, targets: Tensor) -> Tensor:
    """Next-token cross-entropy of every token: logits [B, T, V], targets [B, T] -> [B, T]."""
    return F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten(), reduction="none").view(targets.shape)


def top_excess_mask(losses: Tensor, reference: Tensor, keep: float) -> Tensor:
    """1.0 on the k = max(1, round(keep * T)) tokens of each window with the largest excess loss
    (losses - reference, both [B, T]), 0.0 elsewhere."""
    k = max(1, round(keep * losses.shape[-1]))
    top = (losses.detach() - reference).topk(k, dim=-1).indices
    return torch.zeros_like(losses).scatter(-1, top, 1.0)


def selective_loss(reference: nn.Module, params: TensorDict, buffers: TensorDict, keep: float):
    """The per-window loss [B]: the mean over the kept tokens (`top_excess_mask`) of the model's token losses;
    `targets` are whole windows [B, T + 1] (the reference reads their first T bytes)."""
    check_range("selective language modelling", "keep", keep, 0.0, 1.0, low_open=True)
    apply = make_apply(reference)

    def loss(logits: Tensor, window: Tensor) -> Tensor:
        x, y = window[..., :-1], window[..., 1:]
        with torch.no_grad():
            ref_logits = apply.eval(params.to(logits.device), buffers.to(logits.device), x)
            ref = token_losses(ref_logits, y).detach()
        losses = token_losses(logits, y)
        mask = top_excess_mask(losses, ref, keep)
        return (losses * mask).sum(-1) / mask.sum(-1)

    return loss


def window_sums(outputs: Tensor, window: Tensor, losses: Tensor) -> dict[str, Tensor]:
    """Evaluation over every token (bits per byte as the plain task reports it), whatever was trained."""
    return text.token_sums(outputs, window[..., 1:], losses)


def selective_language_modelling(reference: nn.Module, params: TensorDict, buffers: TensorDict,
                                 keep: float = 0.6) -> Task:
    """The language-modelling task with Rho-1's token selection against `reference` (its `params`, `buffers`)."""
    plain = text.language_modelling()
    return plain._replace(name=f"selective language modelling (keep {keep:g})",
                          targets=lambda batch: batch["tokens"],
                          loss=selective_loss(reference, params, buffers, keep), eval_sums=window_sums)
