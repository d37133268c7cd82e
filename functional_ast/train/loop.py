"""Pieces of the training loop: metric gathering in one transfer, evaluation, the non-finite guard."""

from __future__ import annotations

import warnings
from typing import Callable, Iterable, NamedTuple

import torch
from tensordict import TensorDict

from functional_ast.core.task import classification_metrics


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the step and what to try."""


def gather_metrics(pending: list[TensorDict]) -> dict[str, list[float]]:
    """Stack a list of per-step metric TensorDicts and move them to Python lists in one transfer."""
    stacked = torch.stack(pending).to("cpu")
    return {k: v.double().tolist() for k, v in stacked.items()}


class Skips(NamedTuple):
    """The non-finite guard's counters (kept in the state's "loop"): skips in a row, in all, and whether it warned."""

    in_a_row: int = 0
    total: int = 0
    warned: bool = False


def check_skips(skips: Skips, chunk: dict[str, list[float]], first_step: int, max_in_a_row: int = 10) -> Skips:
    """The counters after the steps of `chunk` (metrics from `first_step` on): warns once at the first skipped
    update, raises NonFiniteLossError at `max_in_a_row` skips in a row."""
    in_a_row, total, warned = skips
    for i, skipped in enumerate(chunk.get("skipped_nonfinite", [])):
        if not skipped:
            in_a_row = 0
            continue
        in_a_row, total = in_a_row + 1, total + 1
        if not warned:
            warnings.warn(f"non-finite loss or gradient at step {first_step + i}: update skipped "
                          f"(state unchanged); the run stops after {max_in_a_row} in a row", stacklevel=2)
            warned = True
        if in_a_row >= max_in_a_row:
            raise NonFiniteLossError(
                f"{in_a_row} non-finite updates in a row up to step {first_step + i} (all skipped); "
                "lower the learning rate (--lr), check the data for corrupt values, or use a smaller --batch-size")
    return Skips(in_a_row, total, warned)


def evaluate(eval_step: Callable[[TensorDict, TensorDict], TensorDict], state: TensorDict,
             batches: Iterable[TensorDict], metrics: Callable[[dict[str, float]], dict[str, float]] | None = None
             ) -> dict[str, float]:
    """The task's metrics (`metrics`, default: classification's accuracy and mean loss) of `state` over `batches`:
    the eval step's sums added on device, one transfer at the end."""
    total = None
    for batch in batches:
        out = eval_step(state, batch)
        total = out if total is None else total + out
    if total is None:
        raise ValueError("evaluate: no batches")
    sums = {k: float(v) for k, v in total.items()}
    return (metrics or classification_metrics)(sums)
