"""Driving a step over batches: metric gathering at an interval, evaluation, a loss guard."""

from __future__ import annotations

import warnings
from typing import Callable, Iterable

import torch
from tensordict import TensorDict


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the step and what to try."""


def gather_metrics(pending: list[TensorDict]) -> dict[str, list[float]]:
    """Stack a list of per-step metric TensorDicts and move them to Python lists in one transfer."""
    stacked = torch.stack(pending).to("cpu")
    return {k: v.double().tolist() for k, v in stacked.items()}


class SkipGuard:
    """Watches `skipped_nonfinite` in gathered metrics: warns once, stops after `max_in_a_row` skips in a row."""

    def __init__(self, max_in_a_row: int = 10):
        self.max_in_a_row = max_in_a_row
        self.in_a_row = 0
        self.total = 0
        self.warned = False

    def check(self, chunk: dict[str, list[float]], first_step: int) -> None:
        for i, skipped in enumerate(chunk.get("skipped_nonfinite", [])):
            if not skipped:
                self.in_a_row = 0
                continue
            self.in_a_row += 1
            self.total += 1
            if not self.warned:
                warnings.warn(f"non-finite loss or gradient at step {first_step + i}: update skipped "
                              f"(state unchanged); the run stops after {self.max_in_a_row} in a row", stacklevel=2)
                self.warned = True
            if self.in_a_row >= self.max_in_a_row:
                raise NonFiniteLossError(
                    f"{self.in_a_row} non-finite updates in a row up to step {first_step + i} (all skipped); "
                    "lower the learning rate (--lr), check the data for corrupt values, or use a smaller --batch-size")


def run_steps(step: Callable, state: TensorDict, batches: Iterable[TensorDict], *, first_step: int,
              log_every: int, on_metrics: Callable[[int, dict[str, list[float]]], None],
              guard: SkipGuard | None = None, checkpoint_every: int = 0,
              on_checkpoint: Callable[[TensorDict, int], None] | None = None) -> TensorDict:
    """Fold `step` over `batches` and return the last state. Every `log_every` steps (and at
    the end) the metrics gathered so far go through the skip guard and to
    on_metrics(first_step_of_chunk, metrics); no per-step host transfer happens in between.
    With `checkpoint_every` N > 0, after each global step that is a multiple of N the pending
    metrics are flushed first, then on_checkpoint(state, steps_done_in_this_call) is called."""
    pending: list[TensorDict] = []
    chunk_start = first_step
    guard = guard or SkipGuard()

    def flush() -> None:
        nonlocal pending, chunk_start
        chunk = gather_metrics(pending)
        guard.check(chunk, chunk_start)
        on_metrics(chunk_start, chunk)
        chunk_start += len(pending)
        pending = []

    done = 0
    try:
        for batch in batches:
            state, metrics = step(state, batch)
            pending.append(metrics)
            done += 1
            if len(pending) >= log_every:
                flush()
            if checkpoint_every and on_checkpoint is not None and (first_step + done) % checkpoint_every == 0:
                if pending:
                    flush()
                on_checkpoint(state, done)
        if pending:
            flush()
    except NonFiniteLossError as error:
        # Skipped updates leave params/optimiser untouched: this state holds the last good ones.
        error.state, error.steps_done = state, done
        raise
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
