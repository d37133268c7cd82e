"""`TrainConfig`: everything that determines a training run's results, validated on creation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from functional_ast.core.checks import ConfigError, check_range, integer, one_of  # noqa: F401 (re-exported)
from functional_ast.core.precision import PRECISIONS
from functional_ast.strategies import registry

# Layout of image batches in the forward passes: "auto" is channels_last on a CPU (measured faster there) for a
# model that runs on it (the trainer checks once, `step.accepts_channels_last`), and contiguous (NCHW) elsewhere.
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


# A --compare entry may override these per strategy: "stale:cooldown=8" is stale with 8 cool-down epochs.
VARIANT_OPTIONS = {"warmup": "warmup_epochs", "cooldown": "cooldown_epochs"}


def parse_variant(spec: str) -> tuple[str, dict]:
    """"NAME[:option=N[:option=N]]" -> (strategy name, TrainConfig overrides): "stale:cooldown=8" ->
    ("stale", {"cooldown_epochs": 8}); a rule's own option goes under "options": "proxy:width=16" ->
    ("proxy", {"options": {"width": 16}}). Raises ConfigError naming what is wrong."""
    name, options = split_spec(spec)
    rule = registry.get(name)
    own = {f.name: f for f in dataclasses.fields(rule.options)}
    short = {f.metadata.get("short"): f.name for f in own.values() if f.metadata.get("short")}
    overrides: dict = {}
    for option in options:
        key, _, value = option.partition("=")
        field_name = short.get(key, key)
        if key in VARIANT_OPTIONS and value.isdigit():
            overrides[VARIANT_OPTIONS[key]] = int(value)
        elif field_name in own and value:
            overrides.setdefault("options", {})[field_name] = _typed(own[field_name], value, spec)
        else:
            valid = ", ".join([*VARIANT_OPTIONS, *(short or own)])
            raise ConfigError(f"{spec}: expected NAME:option=VALUE with option one of {valid}, e.g. stale:cooldown=8")
    return name, overrides


def split_spec(spec: str) -> tuple[str, list[str]]:
    """"NAME[:option=V...]" -> (NAME, options); NAME may be "package.module:attribute" (a rule of the user's: the
    part after its ':' has no '=')."""
    parts = spec.split(":")
    if len(parts) > 1 and "=" not in parts[1]:
        return ":".join(parts[:2]), parts[2:]
    return parts[0], parts[1:]


def _typed(field: dataclasses.Field, text: str, spec: str):
    kind = type(field.default)
    try:
        return kind(text) if kind is not bool else text.lower() in ("1", "true", "yes")
    except ValueError:
        raise ConfigError(f"{spec}: {field.name} must be a {kind.__name__}, got {text!r}") from None


DEFAULT_RULE = "infobatch"  # TrainConfig's and the adapters' rule: the top of the regime map's ranking (a test)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run's results (what a resume must match), validated on creation.

    A time or FLOP budget replaces `epochs` as the end of training: the learning-rate schedule is
    re-planned as the budget is spent, so it anneals fully at the budget; `epochs` then only caps the run.
    """

    # The default rule is the regime map's (docs/results.md, "Where does selection pay?"): `infobatch` never lost to
    # budget-matched full data in a measured cell, where `sundew_remembered` lost 8 points under label noise. One
    # all-data epoch at each end (infobatch's annealing is the cool-down); target_rate is for the rules that take one.
    strategy: str = DEFAULT_RULE  # a registered rule's name, or "package.module:attribute"
    target_rate: float = 0.3
    epochs: int = 10
    warmup_epochs: int = 1
    cooldown_epochs: int = 1
    batch_size: int = 128
    pool_size: int | None = None
    optimizer: str = "sgd"
    lr: float | None = None
    weight_decay: float = 5e-4
    augment: bool | None = None  # the task's training augmentation; None: its default for the data (`Task.augment`)
    seed: int = 0
    compile: bool = False
    time_budget: float | None = None
    flop_budget: float | None = None
    label_noise: float = 0.0
    label_smoothing: float = 0.0  # the built-in image task's cross-entropy against smoothed labels
    memory_format: str = "auto"  # image layout in the forward passes (MEMORY_FORMATS): same values, other speed
    precision: str = "32"  # PRECISIONS: "bf16-mixed"/"16-mixed" autocast the forward passes (`core.precision`)
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the rule's own (its registry entry's)

    def __post_init__(self) -> None:
        name = "TrainConfig"
        try:
            rule = registry.get(self.strategy)
        except ConfigError as error:
            raise ConfigError(f"{name}.strategy must be one of {', '.join(registry.names())} or package.module:"
                              f"attribute (a strategies.Rule), got {self.strategy!r} ({error})") from None
        rule.make_options(self.options)  # validates the rule's own options
        one_of(name, "optimizer", self.optimizer, ("sgd", "adam"))
        one_of(name, "memory_format", self.memory_format, MEMORY_FORMATS)
        one_of(name, "precision", self.precision, PRECISIONS)
        check_range(name, "target_rate", self.target_rate, 0.0, 1.0, low_open=True)
        for field_name, low in (("epochs", 1), ("warmup_epochs", 0), ("cooldown_epochs", 0), ("batch_size", 2)):
            integer(name, field_name, getattr(self, field_name), low)
        if self.pool_size is not None:
            integer(name, "pool_size", self.pool_size, 1)
        if self.lr is not None:
            check_range(name, "lr", self.lr, 0.0, low_open=True)
        check_range(name, "weight_decay", self.weight_decay, 0.0)
        check_range(name, "label_noise", self.label_noise, 0.0, 1.0, high_open=True)
        check_range(name, "label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        integer(name, "seed", self.seed, None)
        for field_name in ("time_budget", "flop_budget"):
            if getattr(self, field_name) is not None:
                check_range(name, field_name, getattr(self, field_name), 0.0, low_open=True)
        if self.time_budget is not None and self.flop_budget is not None:
            raise ConfigError(f"{name}: give time_budget or flop_budget, not both")

    @property
    def peak_lr(self) -> float:
        """`lr`, or the optimiser's default peak: 0.05 for SGD, 1e-3 for Adam."""
        return self.lr if self.lr is not None else (0.05 if self.optimizer == "sgd" else 1e-3)

    @property
    def rule(self) -> registry.Rule:
        """The strategy's registry entry."""
        return registry.get(self.strategy)

    @property
    def gated(self) -> bool:
        """Whether the strategy selects (every rule but `full`)."""
        return self.rule.gated

    @property
    def rate_target(self) -> float | None:
        """The share of samples the rule is held to (`target_rate`); None for `full` and for a rule that picks its
        own share of each batch (`Rule.own_rate`: `infobatch`)."""
        return self.target_rate if self.gated and not self.rule.own_rate else None

    def channels_last(self, device: torch.device | str) -> bool:
        """Whether image batches are to be laid out NHWC on `device` (`memory_format` with "auto" resolved for the
        device; the trainer also keeps NCHW for a model that cannot run on NHWC)."""
        return self.memory_format == "channels_last" or (
            self.memory_format == "auto" and torch.device(device).type == "cpu")

    @property
    def budget(self) -> tuple[str, float] | None:
        """("time", seconds) or ("flops", count), or None when `epochs` ends training."""
        if self.time_budget is not None:
            return "time", float(self.time_budget)
        if self.flop_budget is not None:
            return "flops", float(self.flop_budget)
        return None

    def replace(self, **changes) -> "TrainConfig":
        """A copy with `changes` (validated). A change of strategy without new options keeps only the options the
        new rule has."""
        if "strategy" in changes and "options" not in changes and changes["strategy"] != self.strategy:
            fields = {f.name for f in dataclasses.fields(registry.get(changes["strategy"]).options)}
            changes["options"] = {k: v for k, v in self.options.items() if k in fields}
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["options"] = dict(self.options)
        return out
