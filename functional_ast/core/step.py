"""The training step: `state, metrics = step(state, batch)`, composed from pure pieces.

state (one TensorDict): params, buffers, opt (optimiser state), selector (strategy
state: gate, controller, ...), work (FLOP and sample counters), rng (key), step (count), scaler (16-mixed's
loss scale, `core.precision`).
batch (TensorDict [B]): the task takes its inputs and targets apart (`core.task`); optional "index".
Each step: split the key -> strategy.select (scoring pass if the strategy asks) ->
gather the selected samples into a compact sub-batch -> forward/backward on that
sub-batch only -> optimiser update -> strategy.observe (the trained samples'
losses) -> work accounting (FLOPs). `metrics["loss_seen"]` is the mean loss over every sample the step saw
(the rule's `info["loss_seen"]`, else the scored losses' mean, else the trained loss). A non-finite loss or
gradient skips the update: params, buffers, optimiser and selector state are kept (the FLOPs spent are still
counted, a proxy's included) and `metrics["skipped_nonfinite"]` is 1.
Nothing is mutated; the returned state shares unchanged leaves with the input.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from tensordict import TensorDict
from torch import nn
from torch.profiler import record_function

from functional_ast.core import distributed, prng, work
from functional_ast.core import precision as amp
from functional_ast.core.distributed import LOCAL, Collective
from functional_ast.core.losses import (
    Apply,
    LossFn,
    buffers_of,
    last_layer_keys,
    make_apply,
    make_loss_and_grad,
    params_of,
    per_sample_grad_norms,
    per_sample_losses,
)
from functional_ast.core.optim import GradientTransformation, apply_updates, flatten, unflatten
from functional_ast.core.selection import Strategy, seen_loss
from functional_ast.core.state import replace
from functional_ast.core.task import Task, as_task

Step = Callable[[TensorDict, TensorDict], tuple[TensorDict, TensorDict]]


def init_state(model: nn.Module, optimizer: GradientTransformation, strategy: Strategy, key: int = 0,
               device: torch.device | str | None = None) -> TensorDict:
    """The whole training state as one TensorDict, on `device` (default: the model's)."""
    params = params_of(model)
    if device is not None:
        params = params.to(device)
    device = next(iter(params.values())).device
    return TensorDict(
        params=params,
        buffers=buffers_of(model).to(device),
        opt=optimizer.init(params),
        selector=strategy.init(device),
        work=work.init(device),
        rng=prng.key(key, device),
        step=torch.zeros((), dtype=torch.int64, device=device),
        scaler=amp.init_scaler(device),
    )


def make_train_step(model: nn.Module, loss_fn: Task | LossFn | None, optimizer: GradientTransformation,
                    strategy: Strategy,
                    *, compile: bool = False, grad_norm_keys: str | list[str] = "last",
                    grad_norm_chunk_size: int | None = None, score_chunk_size: int | None = None,
                    collective: Collective = LOCAL, seen_per_step: int | None = None,
                    channels_last: bool = False, precision: str | amp.Precision = "32") -> Step:
    """Build `step(state, batch) -> (state, metrics)`; metrics is a TensorDict of 0-d tensors.

    loss_fn: the task (`core.task.Task`: inputs, targets, per-sample loss, input statistic), or a per-sample loss
    for the default classification task ("image", "label").

    compile=True wraps the scoring pass and the update (forward/backward + optimiser)
    in torch.compile; the update is compiled with dynamic shapes since the number of
    selected samples varies per batch. grad_norm_keys: parameters whose per-sample
    gradient norm a "grad_norm" significance uses ("last" = classifier head, "all").
    score_chunk_size: score a large batch (a selection pool) in chunks of this many samples, so the
    scoring pass needs no more memory than a training batch (and BatchNorm normalises over as many).
    collective: under torch.distributed every rank passes the same global batch; the step scores its
    shard of the rows, trains its share of the selected samples and all-reduces the gradient (see
    `distributed`), so every rank returns the state one process would.
    seen_per_step: the samples of the epoch one step stands for, in the work counters (default: the batch
    size; a batch of samples already selected from a pool of n stands for n).
    channels_last: lay 4-D images out as NHWC before the forward passes (same values; on CPU convolutions
    run faster on it, `in_layout`).
    precision: "32", "bf16-mixed" or "16-mixed" (`core.precision`): the forward passes of scoring and training in
    autocast, params, optimiser state and losses float32; 16-mixed scales the loss by the state's "scaler", and a
    non-finite scaled gradient both skips the update and halves the scale.
    """
    task = as_task(loss_fn)
    loss_fn = task.loss
    precision = amp.of(precision)
    apply = make_apply(model, precision)
    loss_and_grad = make_loss_and_grad(apply, loss_fn)

    def score(params, buffers, x, y) -> TensorDict:
        if score_chunk_size and y.shape[0] > score_chunk_size:
            return torch.cat([score(params, buffers, xc, yc) for xc, yc in
                              zip(x.split(score_chunk_size), y.split(score_chunk_size))])
        out = {"loss": per_sample_losses(apply, loss_fn, params, buffers, x, y), "statistic": task.statistic(x)}
        if "grad_norm" in strategy.needs:
            keys = None if grad_norm_keys == "all" else (
                last_layer_keys(params) if grad_norm_keys == "last" else grad_norm_keys)
            out["grad_norm"] = per_sample_grad_norms(apply, loss_fn, params, buffers, x, y, keys,
                                                     grad_norm_chunk_size)
        return TensorDict(out, batch_size=y.shape[:1])

    def make_update(loss_and_grad, scope=lambda name: contextlib.nullcontext()):
        def update(params, buffers, opt_state, scaler, x, y, w):
            with scope("fa::grad"):
                if precision.scaled:  # the gradients of scale * loss, unscaled (the scale is a power of 2: exact)
                    grads, (loss, new_buffers, losses) = loss_and_grad(params, buffers, x, y, w, scaler["scale"])
                    grads = grads.apply(lambda g: g * scaler["scale"].reciprocal())
                else:
                    grads, (loss, new_buffers, losses) = loss_and_grad(params, buffers, x, y, w)
            if sharded:
                with scope("fa::all_reduce"):
                    grads, loss, new_buffers = distributed.reduce_update(collective, grads, loss, w.sum(),
                                                                         new_buffers, buffers)
            with scope("fa::optimizer"):
                updates, new_opt_state = optimizer.update(grads, opt_state, params)
                new_params = apply_updates(params, updates)
            with scope("fa::guard"):
                # Non-finite guard: a NaN/inf loss or gradient keeps the old params, buffers and optimiser state.
                # 16-mixed: the same test on the unscaled gradients (inf stays inf) halves the scale.
                finite = all_finite(loss, grads)
                kept = (keep_if(finite, new_params, params), keep_if(finite, new_buffers, buffers),
                        keep_if(finite, new_opt_state, opt_state),
                        amp.rescaled(scaler, finite) if precision.scaled else scaler)
            return (*kept, loss, losses, finite)

        return update

    sharded = collective.world > 1
    run_score = score
    if compile:
        run_score = torch.compile(score)
        run_update = torch.compile(make_update(loss_and_grad), dynamic=True)
    else:
        # Same function, gradients by torch.autograd.grad: it frees each saved activation as the backward
        # reaches it, where torch.func.grad keeps the whole graph to the end (higher peak memory, and on CPU
        # fresh pages to fault in every step: about 12% of a cnn step).
        run_update = make_update(autograd_loss_and_grad(apply, loss_fn), record_function)

    def no_samples(params, buffers, x, y, w, scale=None):  # loss_and_grad's contract for an empty sub-batch
        return params.apply(torch.zeros_like), (x.new_zeros(()), buffers, x.new_zeros((0,)))

    run_empty_update = make_update(no_samples, record_function)
    costs_by_shape: dict[tuple, work.WorkCosts] = {}  # memo of a pure function of the input shape

    def work_costs(state: TensorDict, x: torch.Tensor, y: torch.Tensor) -> work.WorkCosts:
        shape_key = (tuple(x.shape[1:]), x.dtype)
        if shape_key not in costs_by_shape:
            costs_by_shape[shape_key] = measure_costs(score, loss_and_grad, state, x, y)
        return costs_by_shape[shape_key]

    def step(state: TensorDict, batch: TensorDict) -> tuple[TensorDict, TensorDict]:
        x, y = in_layout(task.inputs(batch), channels_last), task.targets(batch)
        amp.check_device(precision, x.device)
        n = y.shape[0]
        costs = work_costs(state, x, y)
        rng, select_key = prng.split(state["rng"])
        params, buffers = state["params"], state["buffers"]

        scored: list[TensorDict] = []  # what score_batch returned, for loss_seen

        def score_batch() -> TensorDict:
            with record_function("fa::score"):
                if not sharded:
                    out = run_score(params, buffers, x, y)
                else:
                    lo, hi = distributed.shard_bounds(n, collective.rank, collective.world)  # this rank's rows
                    out = distributed.gather_rows(collective, run_score(params, buffers, x[lo:hi], y[lo:hi]), n)
            scored.append(out)
            return out

        with record_function("fa::select"):
            selection = strategy.select(state["selector"], batch, select_key, score_batch)
        with record_function("fa::gather"):
            # Positions trained, in batch order: a strategy with a fixed count gives them (static shape),
            # otherwise `nonzero` does (the one host sync of the step: a compact sub-batch needs its size).
            if strategy.trains_all:
                trained = torch.arange(n, device=x.device)
            else:
                trained = selection.index if selection.index is not None else selection.mask.nonzero()[:, 0]
            part = trained
            if sharded:  # this rank trains its even share of them
                lo, hi = distributed.shard_bounds(trained.shape[0], collective.rank, collective.world)
                part = trained[lo:hi]
            whole = strategy.trains_all and not sharded  # the batch itself is the sub-batch: no copy
            sub_x, sub_y = (x, y) if whole else (x[part], y[part])
            if selection.weight is None:
                sub_w = torch.ones(sub_y.shape[0], device=x.device)
            else:
                sub_w = selection.weight if whole else selection.weight[part]
        with record_function("fa::update"):
            # Under torch.distributed a rank may have no sample to train: it still joins the global update.
            update = run_empty_update if sharded and not sub_y.shape[0] else run_update
            new_params, new_buffers, new_opt, scaler, loss, losses, finite = update(
                params, buffers, state["opt"], state["scaler"], sub_x, sub_y, sub_w)
        if sharded:  # every rank's trained losses, in batch order (what observe expects)
            losses = distributed.gather_rows(collective, TensorDict(loss=losses, batch_size=losses.shape),
                                             trained.shape[0])["loss"]
        with record_function("fa::observe"):
            observed = strategy.observe(selection.state, batch, trained, losses)
            selector = keep_if(finite, observed, selection.state)
            if "flops" in observed.keys():  # executed even when the update is skipped: counted either way
                selector = replace(selector, flops=observed["flops"])
        with record_function("fa::work"):
            n_trained = selection.mask.sum()
            # A sampling strategy's batch stands for a larger nominal batch of the epoch.
            n_seen = seen_per_step or (strategy.sampling.batch_size if strategy.sampling is not None else n)
            # A strategy that runs a model of its own (a proxy) counts its FLOPs in its state's "flops".
            other = selector["flops"] - state["selector", "flops"] if "flops" in selector.keys() else None
            work_state, work_metrics = work.account(state["work"], costs, n_seen,
                                                    selection.info["n_scored"], n_trained, other)
        # A new TensorDict over the same keys (any extra ones kept): built in one go, never set in place.
        new_state = replace(state, params=new_params, buffers=new_buffers, opt=new_opt, selector=selector,
                            work=work_state, rng=rng, step=state["step"] + 1, scaler=scaler)
        info = dict(selection.info.items())
        metrics = TensorDict(loss=loss, loss_seen=seen_loss(info.pop("loss_seen", None), scored, loss),
                             n_trained=n_trained, activation_rate=n_trained.float() / n_seen,
                             skipped_nonfinite=(~finite).to(torch.int64), **work_metrics, **info)
        return new_state, metrics

    return step


def in_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """`x` itself, or for a 4-D batch with channels_last=True the same values laid out NHWC (the convolutions'
    fast layout on CPU; every slice, gather and per-sample vmap of it keeps that layout)."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def accepts_channels_last(model: nn.Module, image_shape: tuple[int, ...]) -> bool:
    """Whether `model`'s train-mode forward runs on an NHWC batch of `image_shape` ([C, H, W]); a model that
    `.view`s its activations does not. One forward of two zero images on the model's device (the meta device
    does not propagate the layout, so it cannot tell); nothing of the model is changed."""
    if len(image_shape) != 3:
        return False
    params, buffers = params_of(model), buffers_of(model)
    device = next(iter(params.values())).device if len(params.keys()) else torch.device("cpu")
    x = torch.zeros((2, *image_shape), device=device).contiguous(memory_format=torch.channels_last)
    try:
        with torch.no_grad():
            make_apply(model).train(params, buffers, x)
    except RuntimeError:
        return False
    return True


def keep_if(condition: torch.Tensor, new: TensorDict, old: TensorDict) -> TensorDict:
    """Leaf-wise torch.where(condition, new, old): a pure, sync-free 'apply this update only if ...'.

    The result has the structure of `new` (empty sub-TensorDicts included); `old` must hold every leaf of it.
    """
    if type(new) is not TensorDict or type(old) is not TensorDict:
        return new.apply(lambda n, o: torch.where(condition, n, o), old)
    previous = dict(old.items())
    out = {key: torch.where(condition, value, previous[key]) if isinstance(value, torch.Tensor)
           else keep_if(condition, value, previous[key]) for key, value in new.items()}
    return TensorDict(out, batch_size=new.batch_size, device=new.device)


def all_finite(loss: torch.Tensor, grads: TensorDict) -> torch.Tensor:
    """0-d bool: the loss and every gradient entry are finite, without a sync: the largest |g| of each
    leaf (NaN if any entry is NaN) in two foreach calls, then one isfinite over those maxima."""
    leaves = [g for g in flatten(grads)[1] if g.numel()]
    finite = torch.isfinite(loss)
    if not leaves:
        return finite
    if torch.compiler.is_compiling():  # dynamo cannot trace _foreach_max; inductor fuses these reductions
        return finite & torch.stack([g.isfinite().all() for g in leaves]).all()
    return finite & torch.stack(torch._foreach_max(torch._foreach_abs(leaves))).isfinite().all()


def autograd_loss_and_grad(apply: Apply, loss_fn: LossFn) -> Callable:
    """`losses.make_loss_and_grad` with torch.autograd.grad in place of torch.func.grad_and_value.

    Same contract and values: (params, buffers, x, y, w[, scale]) -> (grads, (loss, new_buffers, per-sample
    losses)), loss = sum(w * losses) / sum(w), nothing mutated (gradients flow into fresh aliases
    of the parameters). The backward frees saved activations as it goes, so it is leaner and faster
    in eager mode; the compiled step keeps torch.func, which torch.compile traces.
    """

    def loss_and_grad(params, buffers, x, y, w, scale=None):
        keys, leaves = flatten(params)
        wrt = [p.detach().requires_grad_() for p in leaves]
        with torch.enable_grad():
            logits, new_buffers = apply.train(unflatten(keys, wrt, params), buffers, x)
            losses = loss_fn(logits, y)
            loss = (losses * w).sum() / w.sum()
            grads = torch.autograd.grad(loss if scale is None else loss * scale, wrt, allow_unused=True,
                                        materialize_grads=True)
        return unflatten(keys, grads, params), (loss.detach(), new_buffers, losses.detach())

    return loss_and_grad


def measure_costs(score: Callable, loss_and_grad: Callable, state: TensorDict, x: torch.Tensor,
                  y: torch.Tensor | None = None) -> work.WorkCosts:
    """Per-sample FLOPs of the scoring pass and of training, counted on the meta device (targets shaped like
    `y`'s rows; without `y`, one int64 label per sample)."""
    shape = tuple(x.shape[1:])
    y_shape, y_dtype = (tuple(y.shape[1:]), y.dtype) if y is not None else ((), torch.int64)
    params, buffers = state["params"].to("meta"), state["buffers"].to("meta")

    def inputs(n):
        return (torch.empty((n, *shape), dtype=x.dtype, device="meta"),
                torch.zeros((n, *y_shape), dtype=y_dtype, device="meta"))

    def score_n(n):
        return score(params, buffers, *inputs(n))

    def train_n(n):
        return loss_and_grad(params, buffers, *inputs(n), torch.ones(n, device="meta"))

    return work.WorkCosts(score_flops=work.flops_per_sample(score_n),
                            train_flops=work.flops_per_sample(train_n))


def make_eval_step(model: nn.Module, loss_fn: Task | LossFn | None = None, *, channels_last: bool = False,
                   precision: str | amp.Precision = "32") -> Callable[[TensorDict, TensorDict], TensorDict]:
    """Pure `eval_step(state, batch) -> TensorDict` of the task's additive sums (classification: correct,
    loss_sum, count) in eval mode, its forward in `precision`'s autocast; `loop.evaluate` totals them."""
    task = as_task(loss_fn)
    precision = amp.of(precision)
    apply = make_apply(model, precision)

    def eval_step(state: TensorDict, batch: TensorDict) -> TensorDict:
        amp.check_device(precision, state["step"].device)
        with torch.no_grad():
            outputs = apply.eval(state["params"], state["buffers"], in_layout(task.inputs(batch), channels_last))
            targets = task.targets(batch)
            losses = task.loss(outputs, targets)
        return TensorDict(task.eval_sums(outputs, targets, losses))

    return eval_step
