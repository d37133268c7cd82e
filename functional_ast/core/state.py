"""The training state's declared layout, and pure helpers to build new states from old ones.

The state is one plain TensorDict (checkpoints flatten it by key path). Its layout is declared here, once:
`PARTS` names every top-level key and what it holds. The step's parts ("params" ... "step") take their shape
from the model, the optimiser and the rule. The trainer's parts ("loop", "clock", "history") carry a typed
`Spec`: every leaf's dtype, shape and meaning. `Spec.build` makes such a part and `Spec.check` verifies one.
`LAYOUT` (key -> meaning) is generated from `PARTS`. `describe` prints a state against it, `check_layout`
refuses a state without a needed part, and `check_compatible` compares two states leaf by leaf (keys, shapes,
dtypes), as a resume must. `replace` and `with_parts` make a new state with some entries changed; nothing is
mutated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Union

import torch
from tensordict import TensorDict

i64, f64 = torch.int64, torch.float64
UNKNOWN = -1.0  # a cost per step not measured yet (not NaN: states must compare equal leaf by leaf)

# The work counters (core.work), also noted at each epoch's start in "loop".
COUNTERS = ("flops_spent", "flops_full", "samples_seen", "samples_scored", "samples_trained")
# Per-step metrics kept in the history's series (for plots and summaries; every metric still goes to callbacks).
STEP_SERIES = ("loss", "loss_seen", "activation_rate", "n_trained", "threshold", "rate_ema", "step_saved_pct",
               "saved_pct")
# Columns of the history's per-epoch table, in order.
EPOCH_COLUMNS = ("epoch", "steps", "all_data", "test_accuracy", "test_loss", "train_time_s", "eval_time_s",
                 "epoch_activation_rate", "epoch_saved_pct", "saved_pct", "flops_spent", "flops_full",
                 "samples_trained", "samples_scored", "test_headline")  # test_headline: the task's headline metric


class StateError(RuntimeError):
    """A state cannot be used here; the message names what differs and the fix."""


# --------------------------------------------------------------------------- typed specs


@dataclass(frozen=True)
class Leaf:
    """One tensor: its dtype, meaning and shape (ints, or names of sizes given to `build`); `fill` is its value
    in a new state (None: given to `build`)."""

    dtype: torch.dtype
    meaning: str
    shape: tuple[int | str, ...] = ()
    fill: float | int | bool | None = 0

    def build(self, device, sizes: Mapping[str, int], value=None) -> torch.Tensor:
        """A tensor of this leaf at `value` (default: its fill)."""
        value = self.fill if value is None else value
        if value is None:
            raise StateError(f"a value is needed for a leaf meaning {self.meaning!r}")
        shape = tuple(sizes[d] if isinstance(d, str) else d for d in self.shape)
        return torch.full(shape, value, dtype=self.dtype, device=device)


@dataclass(frozen=True)
class Spec:
    """A sub-TensorDict of the state: what it holds and its fields (leaves or nested specs), in order."""

    meaning: str
    fields: Mapping[str, Union[Leaf, "Spec"]]

    def build(self, device=None, sizes: Mapping[str, int] | None = None, **values) -> TensorDict:
        """The part with every leaf at its fill, or at values[name] (a nested spec's: a dict); `sizes` gives the
        named dimensions."""
        sizes = sizes or {}
        out = {name: f.build(device, sizes, **values.get(name, {})) if isinstance(f, Spec)
               else f.build(device, sizes, values.get(name)) for name, f in self.fields.items()}
        return TensorDict(out, batch_size=[], device=device)

    def check(self, part: TensorDict, where: str = "the state") -> None:
        """Refuse a part whose keys, dtypes or shapes differ from the spec (a named size alike in all its leaves)."""
        problems: list[str] = []
        self._check(part, where, {}, problems)
        if problems:
            raise StateError(f"{where} does not have the declared layout ({'; '.join(problems[:5])}"
                             f"{' ...' if len(problems) > 5 else ''}); build it with the trainer (core.state.PARTS)")

    def _check(self, part, where: str, sizes: dict, problems: list[str]) -> None:
        if not isinstance(part, TensorDict):
            problems.append(f"{where} is not a TensorDict")
            return
        missing = [k for k in self.fields if k not in part.keys()]
        extra = [k for k in part.keys() if k not in self.fields]
        problems += [f"{where}/{k} missing" for k in missing] + [f"{where}/{k} not declared" for k in extra]
        for name, f in self.fields.items():
            if name in missing:
                continue
            value, path = part[name], f"{where}/{name}"
            if isinstance(f, Spec):
                f._check(value, path, sizes, problems)
                continue
            if not isinstance(value, torch.Tensor):
                problems.append(f"{path} is not a tensor")
                continue
            if value.dtype != f.dtype:
                problems.append(f"{path} is {value.dtype}, declared {f.dtype}")
            if value.dim() != len(f.shape):
                problems.append(f"{path} has shape {tuple(value.shape)}, declared {f.shape}")
                continue
            for dim, size in zip(f.shape, value.shape):
                expected = sizes.setdefault(dim, size) if isinstance(dim, str) else dim
                if size != expected:
                    problems.append(f"{path} has shape {tuple(value.shape)}, declared {f.shape} with {sizes}")
                    break

    def lines(self, indent: str = "  ") -> list[str]:
        """One line per leaf: name, dtype, shape, meaning (a nested spec's leaves indented under it)."""
        out, width = [], 22 - len(indent)
        for name, f in self.fields.items():
            if isinstance(f, Spec):
                out.append(f"{indent}{name + '/':<{width}} {f.meaning}")
                out += f.lines(indent + "  ")
            else:
                shape = "[" + ", ".join(str(d) for d in f.shape) + "]"
                out.append(f"{indent}{name:<{width}} {str(f.dtype).removeprefix('torch.'):<8} {shape:<14} {f.meaning}")
        return out


@dataclass(frozen=True)
class Part:
    """A top-level key of the state: what it holds, who writes it ("step" or "loop") and, for the loop's, its spec."""

    meaning: str
    owner: str
    spec: Spec | None = None


def _scalar(dtype: torch.dtype, meaning: str, fill=0) -> Leaf:
    return Leaf(dtype, meaning, (), fill)


SCALER = Spec("16-mixed's dynamic loss scale (`core.precision`; carried unused by the other precisions)", {
    "scale": _scalar(torch.float32, "the factor the loss is multiplied by before the backward", 2.0 ** 16),
    "growth": _scalar(i64, "finite steps in a row since the scale last changed (it doubles at 2000)"),
})
LOOP = Spec("the loop's position, cool-down start, skip counters and cost per step of each phase", {
    "epoch": _scalar(i64, "epochs done: the epoch being trained (0-based)"),
    "batch": _scalar(i64, "the next batch of that epoch"),
    "cooldown_from": _scalar(i64, "first all-data cool-down epoch (plan.NEVER: not decided; under a budget it "
                                  "is decided as the budget is spent)", None),
    "finished": _scalar(torch.bool, "training is over", False),
    "skipped_in_a_row": _scalar(i64, "non-finite updates skipped in a row (the guard stops the run at 10)"),
    "skipped_total": _scalar(i64, "non-finite updates skipped in all"),
    "warned": _scalar(torch.bool, "the guard has warned of a skipped update", False),
    "epoch_start": Spec("the work counters when this epoch started (for its record)",
                        {k: _scalar(i64, f"{k} at the epoch's start") for k in COUNTERS}),
    "cost_all_data": _scalar(f64, "budget spent per all-data step, running mean (UNKNOWN = -1: not measured)",
                             UNKNOWN),
    "cost_selective": _scalar(f64, "budget spent per selective step, running mean (UNKNOWN = -1: not measured)",
                              UNKNOWN),
})
CLOCK = Spec("the run's clocks: wall-clock and energy, which a resume cannot reproduce exactly", {
    "train_time": _scalar(f64, "train wall-clock, s (a rule's preparation in; evaluation and callbacks out)", 0.0),
    "eval_time": _scalar(f64, "evaluation wall-clock, s", 0.0),
    "joules": _scalar(f64, "energy measured by the run's meter, J (0 without one)", 0.0),
})
HISTORY = Spec("what the run recorded, NaN where not yet written; grown (doubling) when a run outlasts its plan", {
    "epochs": Leaf(f64, f"per-epoch records, one row per epoch, columns {', '.join(EPOCH_COLUMNS)}",
                   ("epochs", len(EPOCH_COLUMNS)), math.nan),
    "steps": Spec("per-step series, indexed by step",
                  {k: Leaf(f64, f"{k} at each step", ("steps",), math.nan) for k in STEP_SERIES}),
})

PARTS: dict[str, Part] = {
    "params": Part("the model's parameters, by name (the nn.Module is only a shape)", "step"),
    "buffers": Part("the model's buffers (BatchNorm running statistics), by name", "step"),
    "opt": Part("the optimiser's state (momentum, moments, count, schedule horizon)", "step"),
    "selector": Part("the selection rule's state (gate, controller, remembered-loss tables, a proxy's weights)",
                     "step"),
    "work": Part(f"counters: {', '.join(COUNTERS)} (int64)", "step"),
    "rng": Part("the step's PRNG key (counter-based, split each step)", "step"),
    "step": Part("steps taken (int64)", "step"),
    "scaler": Part(SCALER.meaning, "step", SCALER),
    "loop": Part(LOOP.meaning, "loop", LOOP),
    "clock": Part(CLOCK.meaning, "loop", CLOCK),
    "history": Part(HISTORY.meaning, "loop", HISTORY),
}
# Top-level key -> what it holds. The step reads and writes its parts; the trainer's loop adds its own.
LAYOUT: dict[str, str] = {key: part.meaning for key, part in PARTS.items()}
STEP_PARTS = tuple(k for k, p in PARTS.items() if p.owner == "step")
LOOP_PARTS = tuple(k for k, p in PARTS.items() if p.owner == "loop")


# --------------------------------------------------------------------------- checks and descriptions


def check_layout(state: TensorDict, keys: tuple[str, ...] = STEP_PARTS) -> None:
    """Refuse a state that lacks one of `keys` (the step's, by default), or whose declared parts among them
    differ from their spec."""
    missing = [k for k in keys if k not in state.keys()]
    if missing:
        raise StateError(f"the state has no {', '.join(missing)}; build it with step.init_state (and the trainer's "
                         "loop state) rather than by hand")
    for key in keys:
        spec = PARTS[key].spec if key in PARTS else None
        if spec is not None:
            spec.check(state[key], key)


def describe(state: TensorDict) -> str:
    """One line per top-level key: its leaves' count and size and what it holds (PARTS); under each declared
    part, its leaves (dtype, shape, meaning)."""
    lines = []
    for key in state.keys():
        value = state[key]
        leaves = list(value.values(include_nested=True, leaves_only=True)) if isinstance(value, TensorDict) else [value]
        size = sum(v.numel() * v.element_size() for v in leaves)
        lines.append(f"{key:<9} {len(leaves):>4} leaves {size / 1e6:>9.3f} MB  {LAYOUT.get(key, '(not declared)')}")
        spec = PARTS[key].spec if key in PARTS else None
        if spec is not None:
            lines += spec.lines()
    return "\n".join(lines)


def leaf_signature(state: TensorDict) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """{"a/b": (shape, dtype)} for every leaf of `state`."""
    out = {}
    for key, value in state.items(include_nested=True, leaves_only=True):
        path = "/".join((key,) if isinstance(key, str) else key)
        out[path] = (tuple(value.shape), value.dtype)
    return out


def differing_leaves(a: TensorDict, b: TensorDict) -> list[str]:
    """Key paths ("a/b") of the leaves in which two states differ: in one only, or not bit-identical (NaN at the
    same places counts as equal: "not recorded")."""
    mine, theirs = leaf_signature(a), leaf_signature(b)
    differ = sorted(set(mine) ^ set(theirs))
    for path in sorted(set(mine) & set(theirs)):
        x, y = a[tuple(path.split("/"))], b[tuple(path.split("/"))]
        if mine[path] != theirs[path]:
            differ.append(path)
        elif x.is_floating_point():
            if not (torch.equal(x.isnan(), y.isnan()) and torch.equal(x.nan_to_num(0.0), y.nan_to_num(0.0))):
                differ.append(path)
        elif not torch.equal(x, y):
            differ.append(path)
    return differ


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


# --------------------------------------------------------------------------- new states from old


def replace(state: TensorDict, **entries) -> TensorDict:
    """A new state with top-level entries replaced (or added); nothing mutated."""
    return TensorDict(dict(state.items(), **entries), batch_size=state.batch_size, device=state.device)


def with_parts(state: TensorDict, **parts: Mapping) -> TensorDict:
    """A new state whose sub-TensorDicts named in `parts` have the given leaves replaced; nothing mutated."""
    out = dict(state.items())
    for name, leaves in parts.items():
        out[name] = replace(state[name], **leaves)
    return TensorDict(out, batch_size=state.batch_size, device=state.device)
