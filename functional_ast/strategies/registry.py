"""The registry: the only list of selection rules' names.

A rule is one file that builds a `Strategy` and registers a `Rule`: its name, its builder, its own options (a
frozen dataclass that validates itself; each field's metadata names its command-line flag and help), its summary
fields and what it needs prepared before training. A rule from outside the package is registered the same way,
or named as "package.module:attribute" (an attribute holding a `Rule`), as `--model` names a model.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from tensordict import TensorDict

from functional_ast.core.checks import ConfigError
from functional_ast.core.selection import Strategy


@dataclass(frozen=True)
class Context:
    """What a rule is built from: the training set's size, the run's target rate, the samples of one selective
    step (its pool; `prioritized`'s nominal batch), the shape of one sample, the number of classes (None when the
    task has none) and the task (its per-sample loss, input statistic and inputs)."""

    num_samples: int
    target_rate: float
    pool_size: int
    sample_shape: tuple[int, ...] = ()
    num_classes: int | None = None
    task: Any = None


@dataclass(frozen=True)
class NoOptions:
    """A rule without options of its own."""


def option(default, help: str, flag: str | None = None, choices: tuple | None = None, short: str | None = None):
    """A field of a rule's options: its default, its --help line, its flag (default --<field-name>), its allowed
    values, and the short name a --compare variant may use ("rho_loss:reference=4")."""
    return field(default=default, metadata=dict(help=help, flag=flag, choices=choices, short=short))


class Services:
    """What the trainer offers a rule's `prepare`: `fit_and_score(train_index, score_index, epochs)` trains a
    full-data copy of the run's model on the samples `train_index` and returns (per-sample eval losses of
    `score_index`, how many of them it classified right, the FLOPs spent). The trainer charges the wall-clock of
    `prepare` and those FLOPs to the run's budget. `seed` and `batch_size` are the run's."""

    seed: int = 0
    batch_size: int = 1

    def fit_and_score(self, train_index, score_index, epochs: int):  # pragma: no cover - the contract
        raise NotImplementedError


@dataclass(frozen=True)
class Rule:
    """A selection rule as the trainer, the command line and the reports see it.

    build(context, options) -> Strategy. `gated`: False for a rule that trains every sample (no warm-up or
    cool-down phases). `own_rate`: the rule picks its own share of each batch (its pool is one batch, not
    batch / target_rate). `summary(selector_state) -> dict` adds the rule's own fields to a run's summary.
    `prepare(selector_state, context, options, services) -> (selector_state, flops)` runs once before the first
    step while `needs_prepare(selector_state)` holds (a resumed run that was prepared is not prepared again).
    `kinds`: the task kinds (`core.task.Task.kind`) the rule runs on; None for any. `baseline`: a rule others are
    measured against (full data, a random subset), never the "best selective rule". `prepare_epochs(options)`: what
    `prepare` costs in full-data epochs, about, so a budget it would leave no training in is refused before it runs.
    """

    name: str
    build: Callable[[Context, Any], Strategy]
    options: type = NoOptions
    gated: bool = True
    own_rate: bool = False
    summary: Callable[[TensorDict], dict] = lambda selector: {}
    prepare: Callable | None = None
    needs_prepare: Callable[[TensorDict], bool] = lambda selector: False
    prepare_epochs: Callable[[Any], float] = lambda options: 0.0
    description: str = ""
    kinds: tuple[str, ...] | None = None
    baseline: bool = False

    def check_kind(self, kind: str) -> None:
        """ConfigError when the rule cannot run on inputs of `kind`."""
        if self.kinds is not None and kind not in self.kinds:
            usable = ", ".join(r.name for r in _RULES.values() if r.kinds is None or kind in r.kinds)
            raise ConfigError(f"strategy {self.name} runs on {' or '.join(self.kinds)}, not on {kind}; "
                              f"choose one of {usable}")

    def make_options(self, values: Mapping[str, Any] | None = None):
        """The rule's options from a mapping of field names (unknown names refused with the valid ones)."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(self.options)}
        unknown = sorted(set(values) - known)
        if unknown:
            valid = ", ".join(sorted(known)) or "none"
            raise ConfigError(f"strategy {self.name} has no option {', '.join(unknown)} (its options: {valid})")
        try:
            return self.options(**values)
        except TypeError as error:
            raise ConfigError(f"strategy {self.name}: {error}") from None

    def __call__(self, context: Context, options: Mapping[str, Any] | None = None) -> Strategy:
        return self.build(context, self.make_options(options))


_RULES: dict[str, Rule] = {}


def register(rule: Rule) -> Rule:
    """Add `rule` under its name (a second rule of the same name is refused) and return it."""
    if not isinstance(rule, Rule):
        raise ConfigError(f"register: expected a strategies.Rule, got {type(rule).__name__}")
    existing = _RULES.get(rule.name)
    reloaded = existing is not None and _origin(existing) == _origin(rule)  # the same module imported again
    if existing is not None and existing is not rule and not reloaded:
        raise ConfigError(f"a strategy named {rule.name!r} is already registered; choose another name")
    _RULES[rule.name] = rule
    return rule


def _origin(rule: Rule) -> tuple[str, str]:
    return getattr(rule.build, "__module__", ""), getattr(rule.build, "__qualname__", "")


def names() -> tuple[str, ...]:
    """The registered rules' names, in registration order."""
    return tuple(_RULES)


def rules() -> tuple[Rule, ...]:
    return tuple(_RULES.values())


def get(name: str) -> Rule:
    """The rule registered as `name`, or the Rule at "package.module:attribute" (imported and registered)."""
    if name in _RULES:
        return _RULES[name]
    if ":" in name:
        module_name, _, attribute = name.partition(":")
        try:
            rule = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise ConfigError(f"strategy {name}: cannot import it ({error}); give package.module:attribute, "
                              "an attribute holding a strategies.Rule") from None
        if not isinstance(rule, Rule):
            raise ConfigError(f"strategy {name} is a {type(rule).__name__}, not a strategies.Rule")
        return register(rule)
    raise ConfigError(f"unknown strategy {name or '(none)'}; choose from {','.join(_RULES)} "
                      "or name your own as package.module:attribute")


def build(name: str, context: Context, options: Mapping[str, Any] | None = None) -> Strategy:
    """The Strategy of rule `name` for `context`, with `options` (validated by the rule)."""
    return get(name)(context, options)
