"""The training state's declared layout, and pure helpers to build new states from old ones.

The state is one TensorDict. `LAYOUT` says what each top-level key holds; `check_layout` refuses a state that
lacks one, `describe` prints it, and `check_compatible` compares two states leaf by leaf (keys, shapes, dtypes),
as a resume must. `replace` and `with_parts` make a new state with some entries changed; nothing is mutated.
"""

from __future__ import annotations

from typing import Mapping

import torch
from tensordict import TensorDict

# Top-level key -> what it holds. The step reads and writes the first seven; the trainer's loop adds the last three.
LAYOUT: dict[str, str] = {
    "params": "the model's parameters, by name (the nn.Module is only a shape)",
    "buffers": "the model's buffers (BatchNorm running statistics), by name",
    "opt": "the optimiser's state (momentum, moments, count, schedule horizon)",
    "selector": "the selection rule's state (gate, controller, remembered-loss tables, a proxy's weights)",
    "work": "counters: flops_spent, flops_full, samples_seen, samples_scored, samples_trained (int64)",
    "rng": "the step's PRNG key (counter-based, split each step)",
    "step": "steps taken (int64)",
    "loop": "the loop's position (epoch, batch), cool-down start, skip counters, cost per step of each phase",
    "clock": "train_time, eval_time (s) and measured joules (float64)",
    "history": "per-epoch records [epochs, len(EPOCH_KEYS)] and per-step series (NaN where not yet written)",
}
STEP_KEYS = ("params", "buffers", "opt", "selector", "work", "rng", "step")


class StateError(RuntimeError):
    """A state cannot be used here; the message names what differs and the fix."""


def check_layout(state: TensorDict, keys: tuple[str, ...] = STEP_KEYS) -> None:
    """Refuse a state that lacks one of `keys` (the step's, by default)."""
    missing = [k for k in keys if k not in state.keys()]
    if missing:
        raise StateError(f"the state has no {', '.join(missing)}; build it with step.init_state (and the trainer's "
                         "loop state) rather than by hand")


def describe(state: TensorDict) -> str:
    """One line per top-level key: what it holds (LAYOUT) and its leaves' count and size."""
    lines = []
    for key in state.keys():
        value = state[key]
        leaves = list(value.values(include_nested=True, leaves_only=True)) if isinstance(value, TensorDict) else [value]
        size = sum(v.numel() * v.element_size() for v in leaves)
        lines.append(f"{key:<9} {len(leaves):>4} leaves {size / 1e6:>9.3f} MB  {LAYOUT.get(key, '(not declared)')}")
    return "\n".join(lines)


def leaf_signature(state: TensorDict) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """{"a/b": (shape, dtype)} for every leaf of `state`."""
    out = {}
    for key, value in state.items(include_nested=True, leaves_only=True):
        path = "/".join((key,) if isinstance(key, str) else key)
        out[path] = (tuple(value.shape), value.dtype)
    return out


def check_compatible(state: TensorDict, template: TensorDict, where: str) -> None:
    """Refuse a loaded state whose keys, shapes or dtypes differ from a freshly initialised one."""
    got, want = leaf_signature(state), leaf_signature(template)
    if got == want:
        return
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    changed = sorted(k for k in set(got) & set(want) if got[k] != want[k])
    parts = [f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
             for label, keys in (("missing", missing), ("unexpected", extra), ("shape/dtype differs", changed))
             if keys]
    raise StateError(f"{where} does not match this configuration's state ({'; '.join(parts)}); "
                     "resume with the configuration it was written with, or start a new run")


def replace(state: TensorDict, **entries) -> TensorDict:
    """A new state with top-level entries replaced (or added); nothing mutated."""
    return TensorDict(dict(state.items(), **entries), batch_size=state.batch_size, device=state.device)


def with_parts(state: TensorDict, **parts: Mapping) -> TensorDict:
    """A new state whose sub-TensorDicts named in `parts` have the given leaves replaced; nothing mutated."""
    out = dict(state.items())
    for name, leaves in parts.items():
        out[name] = replace(state[name], **leaves)
    return TensorDict(out, batch_size=state.batch_size, device=state.device)
