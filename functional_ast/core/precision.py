"""Mixed precision as one option: autocast for the forward passes, and 16-mixed's dynamic loss scale.

"32" runs everything in float32; "bf16-mixed" and "16-mixed" run the forward passes under
`torch.autocast` in bfloat16 / float16, with parameters, optimiser state, logits and losses in float32.
16-mixed scales the loss before the backward with a scale kept in the state ("scaler", `core.state.SCALER`):
a non-finite gradient skips the update and halves it, `GROWTH_INTERVAL` finite steps in a row double it
(torch.amp.GradScaler's rule), as pure functions of the state.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
from tensordict import TensorDict

from functional_ast.core.checks import ConfigError, one_of
from functional_ast.core.state import SCALER

PRECISIONS = ("32", "bf16-mixed", "16-mixed")
GROWTH_INTERVAL, GROWTH, BACKOFF = 2000, 2.0, 0.5  # torch.amp.GradScaler's defaults


class Precision(NamedTuple):
    """A precision: its name, the autocast dtype (None: float32 throughout) and whether the loss is scaled."""

    name: str
    dtype: torch.dtype | None
    scaled: bool


def of(name: "str | Precision | None") -> Precision:
    """The Precision called `name` (one of PRECISIONS; None is "32")."""
    if isinstance(name, Precision):
        return name
    name = "32" if name is None else name
    one_of("precision", "name", name, PRECISIONS)
    return {"32": Precision("32", None, False), "bf16-mixed": Precision("bf16-mixed", torch.bfloat16, False),
            "16-mixed": Precision("16-mixed", torch.float16, True)}[name]


def check_device(precision: Precision, device: torch.device | str) -> None:
    """Refuse a mixed precision on a device where torch has no autocast."""
    device_type = torch.device(device).type
    if precision.dtype is not None and not torch.amp.is_autocast_available(device_type):
        raise ConfigError(f"precision {precision.name!r} needs torch.autocast, which torch {torch.__version__} "
                          f"does not have on {device_type}; use precision '32'")


def autocast(precision: Precision, x: torch.Tensor):
    """The forward pass's context on `x`'s device: autocast to the precision's dtype, or nothing ("32", and the
    meta device, where FLOPs are counted)."""
    if precision.dtype is None or x.device.type == "meta":
        return contextlib.nullcontext()
    return torch.autocast(x.device.type, dtype=precision.dtype)


def init_scaler(device=None) -> TensorDict:
    """A new loss scaler (scale 2**16, no finite step yet); precisions without scaling carry it unused."""
    return SCALER.build(device)


def rescaled(scaler: TensorDict, finite: torch.Tensor, interval: int = GROWTH_INTERVAL) -> TensorDict:
    """The scaler after a step: halved (count reset) if its gradient was non-finite, else counted, and doubled
    (count reset) at `interval` finite steps in a row; sync-free."""
    count = torch.where(finite, scaler["growth"] + 1, torch.zeros_like(scaler["growth"]))
    grow = count >= interval
    scale = torch.where(finite, torch.where(grow, scaler["scale"] * GROWTH, scaler["scale"]), scaler["scale"] * BACKOFF)
    return TensorDict(scale=scale, growth=torch.where(grow, torch.zeros_like(count), count), device=scaler.device)
