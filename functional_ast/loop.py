"""Driving a step over batches: metric gathering at an interval, evaluation, a loss guard."""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from tensordict import TensorDict


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the step and what to try."""


def gather_metrics(pending: list[TensorDict]) -> dict[str, list[float]]:
    """Stack a list of per-step metric TensorDicts and move them to Python lists in one transfer."""
    stacked = torch.stack(pending).to("cpu")
    return {k: v.double().tolist() for k, v in stacked.items()}


def check_finite(losses: list[float], first_step: int) -> None:
    """Raise NonFiniteLossError at the first NaN/inf loss in a gathered chunk."""
    for i, value in enumerate(losses):
        if value != value or value in (float("inf"), float("-inf")):
            raise NonFiniteLossError(
                f"training loss became {value} at step {first_step + i}; lower the learning rate (--lr), "
                "check the data for corrupt values, or use a smaller --batch-size")


def run_steps(step: Callable, state: TensorDict, batches: Iterable[TensorDict], *, first_step: int,
              log_every: int, on_metrics: Callable[[int, dict[str, list[float]]], None]) -> TensorDict:
    """Fold `step` over `batches` and return the last state. Every `log_every` steps (and at
    the end) the metrics gathered so far are checked for a finite loss and passed to
    on_metrics(first_step_of_chunk, metrics); no per-step host transfer happens in between."""
    pending: list[TensorDict] = []
    chunk_start = first_step

    def flush() -> None:
        nonlocal pending, chunk_start
        chunk = gather_metrics(pending)
        check_finite(chunk["loss"], chunk_start)
        on_metrics(chunk_start, chunk)
        chunk_start += len(pending)
        pending = []

    for batch in batches:
        state, metrics = step(state, batch)
        pending.append(metrics)
        if len(pending) >= log_every:
            flush()
    if pending:
        flush()
    return state


def evaluate(eval_step: Callable[[TensorDict, TensorDict], TensorDict], state: TensorDict,
             batches: Iterable[TensorDict]) -> dict[str, float]:
    """Accuracy and mean loss of `state` over `batches` (sums on device, one transfer at the end)."""
    total = None
    for batch in batches:
        out = eval_step(state, batch)
        total = out if total is None else total + out
    if total is None:
        raise ValueError("evaluate: no batches")
    correct, loss_sum, count = (float(total[k]) for k in ("correct", "loss_sum", "count"))
    return {"accuracy": correct / count, "loss": loss_sum / count}
