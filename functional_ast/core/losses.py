"""Stateless models and per-sample losses/gradients with torch.func.

The nn.Module is only a shape: `make_apply` keeps a train-mode and an eval-mode
copy of it on the meta device and runs them with `functional_call` on params and
buffers taken from state, so no module attribute is read or flipped at run time.
BatchNorm: in train mode the batch statistics are used and the running stats are
written to a *copy* of the buffers that is returned (inputs are never mutated);
in eval mode running stats are used, so samples are independent, which is what
`vmap(grad(...))` per-sample gradients need. Scoring uses train mode without
keeping the buffer update, i.e. the same normalisation the update step sees.
"""

from __future__ import annotations

import copy
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import Tensor, nn
from torch.func import functional_call, grad, grad_and_value, vmap

from functional_ast.core import precision as amp

LossFn = Callable[[Tensor, Tensor], Tensor]


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-sample cross-entropy (reduction='none'); the default loss_fn."""
    return F.cross_entropy(logits, labels, reduction="none")


def smoothed_cross_entropy(label_smoothing: float) -> LossFn:
    """Per-sample cross-entropy against labels smoothed by `label_smoothing` (0: `cross_entropy` itself)."""
    if not label_smoothing:
        return cross_entropy

    def loss(logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits, labels, reduction="none", label_smoothing=label_smoothing)

    return loss


def params_of(model: nn.Module) -> TensorDict:
    """Detached copies of the module's parameters, flat keys ('0.weight', ...)."""
    return TensorDict({n: p.detach().clone() for n, p in model.named_parameters()})


def buffers_of(model: nn.Module) -> TensorDict:
    """Detached copies of the module's buffers (BatchNorm running stats, ...)."""
    return TensorDict({n: b.detach().clone() for n, b in model.named_buffers()})


class Apply(NamedTuple):
    """Pure forward functions of (params, buffers, x)."""

    train: Callable[[TensorDict, TensorDict, Tensor], tuple[Tensor, TensorDict]]
    eval: Callable[[TensorDict, TensorDict, Tensor], Tensor]


def _as_dict(td: TensorDict) -> dict[str, Tensor]:
    return dict(td.items())


def make_apply(model: nn.Module, precision: "str | amp.Precision | None" = None) -> Apply:
    """Pure train-mode forward (-> logits, new buffers) and eval-mode forward (-> logits); under a mixed
    `precision` (`core.precision`) the forward runs in autocast and its logits come back as float32."""
    train_shape = copy.deepcopy(model).to("meta").train()
    eval_shape = copy.deepcopy(model).to("meta").eval()
    precision = amp.of(precision)

    def train(params: TensorDict, buffers: TensorDict, x: Tensor) -> tuple[Tensor, TensorDict]:
        new_buffers = buffers.clone()  # BatchNorm updates running stats in place: never on the input
        with amp.autocast(precision, x):
            logits = functional_call(train_shape, (_as_dict(params), _as_dict(new_buffers)), (x,))
        return as_float32(logits, precision), new_buffers

    def eval(params: TensorDict, buffers: TensorDict, x: Tensor) -> Tensor:
        with amp.autocast(precision, x):
            logits = functional_call(eval_shape, (_as_dict(params), _as_dict(buffers)), (x,))
        return as_float32(logits, precision)

    return Apply(train, eval)


def as_float32(logits: Tensor, precision: "amp.Precision") -> Tensor:
    """Autocast logits as float32, so every loss (the per-sample ones that drive selection included) is computed
    in float32: bf16's 8-bit mantissa ties and reorders close losses, which would change what is selected."""
    if precision.dtype is None or not isinstance(logits, Tensor) or not logits.is_floating_point():
        return logits
    return logits.float()


def per_sample_losses(apply: Apply, loss_fn: LossFn, params: TensorDict, buffers: TensorDict,
                      x: Tensor, y: Tensor) -> Tensor:
    """Per-sample losses of a train-mode forward, without gradients or buffer updates."""
    with torch.no_grad():
        logits, _ = apply.train(params, buffers, x)
        return loss_fn(logits, y)


def last_layer_keys(params: TensorDict) -> list[str]:
    """Keys of the parameters of the last module that has any (usually the classifier head)."""
    names = list(params.keys())
    prefix = names[-1].rsplit(".", 1)[0] if "." in names[-1] else ""
    return [n for n in names if (n.rsplit(".", 1)[0] if "." in n else "") == prefix]


def per_sample_grad_norms(apply: Apply, loss_fn: LossFn, params: TensorDict, buffers: TensorDict,
                          x: Tensor, y: Tensor, keys: Sequence[str] | None = None,
                          chunk_size: int | None = None) -> Tensor:
    """L2 norm of each sample's loss gradient w.r.t. `keys` (all params if None), eval mode.

    Computed with vmap(grad(...)); `chunk_size` bounds memory (at most chunk_size
    per-sample copies of the selected parameters exist at once).
    """
    keys = list(params.keys()) if keys is None else list(keys)
    wrt = {k: params[k] for k in keys}
    fixed = {k: v for k, v in params.items() if k not in wrt}

    def loss_one(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        logits = apply.eval(TensorDict({**fixed, **p}), buffers, xi.unsqueeze(0))
        return loss_fn(logits, yi.unsqueeze(0)).sum()

    with torch.no_grad():
        grads = vmap(grad(loss_one), in_dims=(None, 0, 0), chunk_size=chunk_size)(wrt, x, y)
        squares = sum(g.flatten(1).pow(2).sum(1) for g in grads.values())
    return squares.sqrt()


def make_loss_and_grad(apply: Apply, loss_fn: LossFn) -> Callable:
    """Pure (params, buffers, x, y, w[, scale]) -> (grads, (loss, new_buffers, per-sample losses)).

    loss = sum(w * per-sample loss) / sum(w): the plain mean when w is all ones. With `scale` (a loss scale,
    16-mixed) the gradients are those of scale * loss, still to be unscaled; the loss returned is unscaled.
    """

    def objective(params: TensorDict, buffers: TensorDict, x: Tensor, y: Tensor, w: Tensor, scale):
        logits, new_buffers = apply.train(params, buffers, x)
        losses = loss_fn(logits, y)
        loss = (losses * w).sum() / w.sum()
        return loss if scale is None else loss * scale, (new_buffers, losses.detach(), loss.detach())

    value_and_grad = grad_and_value(objective, has_aux=True)

    def loss_and_grad(params, buffers, x, y, w, scale=None):
        grads, (_, (new_buffers, losses, loss)) = value_and_grad(params, buffers, x, y, w, scale)
        return grads, (loss, new_buffers, losses)

    return loss_and_grad
