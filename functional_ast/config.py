"""Configuration: `TrainConfig`, and the validation shared by the frozen config dataclasses (one clear
message per bad value, naming the field)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch


class ConfigError(ValueError):
    """A configuration value is out of range; the message names the field and the valid range."""


def check_range(owner: str, name: str, value: float, low: float | None = None, high: float | None = None,
                *, low_open: bool = False, high_open: bool = False) -> None:
    """Raise ConfigError unless `value` is a finite number within the given bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{owner}.{name} must be a finite number, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        interval = f"{'(' if low_open else '['}{lo}, {hi}{')' if high_open else ']'}"
        raise ConfigError(f"{owner}.{name} must be in {interval}, got {value!r}")


STRATEGY_NAMES = ("full", "random", "sundew", "stale", "prioritized", "sundew_remembered", "small_loss",
                  "infobatch", "rho_loss", "proxy")
# Strategies that pick their own share of each batch (their selection pool is one batch, not batch / target_rate).
OWN_RATE_STRATEGIES = ("infobatch",)
STALE_RULE_NAMES = ("proportional", "hard_first", "small_loss")
# Layout of image batches in the forward passes: "auto" is channels_last on a CPU (measured faster there) for a
# model that runs on it (the trainer checks once, `step.accepts_channels_last`), and contiguous (NCHW) elsewhere.
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


# A --compare entry may override these per strategy: "stale:cooldown=8" is stale with 8 cool-down epochs.
VARIANT_OPTIONS = {"warmup": "warmup_epochs", "cooldown": "cooldown_epochs", "reference": "reference_epochs",
                   "width": "proxy_width"}


def parse_variant(spec: str) -> tuple[str, dict[str, int]]:
    """"NAME[:option=N[:option=N]]" -> (strategy name, TrainConfig overrides); "stale:cooldown=8" ->
    ("stale", {"cooldown_epochs": 8}). Raises ConfigError naming what is wrong."""
    name, *options = spec.split(":")
    if name not in STRATEGY_NAMES:
        raise ConfigError(f"unknown strategy {name or '(none)'}; choose from {','.join(STRATEGY_NAMES)}")
    overrides = {}
    for option in options:
        key, _, value = option.partition("=")
        if key not in VARIANT_OPTIONS or not value.isdigit():
            raise ConfigError(f"{spec}: expected NAME:option=N with option one of {', '.join(VARIANT_OPTIONS)} "
                              "and N a whole number (epochs; channels for width), e.g. stale:cooldown=8")
        overrides[VARIANT_OPTIONS[key]] = int(value)
    return name, overrides


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run's results (what a resume must match), validated on creation.

    A time or FLOP budget replaces `epochs` as the end of training: the learning-rate schedule is
    re-planned as the budget is spent, so it anneals fully at the budget; `epochs` then only caps the run.
    """

    strategy: str = "sundew"
    target_rate: float = 0.1
    epochs: int = 10
    warmup_epochs: int = 1
    cooldown_epochs: int = 0
    batch_size: int = 128
    pool_size: int | None = None
    stale_rule: str = "proportional"
    explore: float | None = None
    optimizer: str = "sgd"
    lr: float | None = None
    weight_decay: float = 5e-4
    augment: bool = True
    seed: int = 0
    compile: bool = False
    time_budget: float | None = None
    flop_budget: float | None = None
    label_noise: float = 0.0
    reference_epochs: int = 2  # rho_loss: epochs of each half's reference model (`reference.py`), charged to the run
    proxy_width: int = 8  # proxy: width of the scoring network, `models.cnn(width=proxy_width)` (`proxy.py`)
    memory_format: str = "auto"  # image layout in the forward passes (MEMORY_FORMATS): same values, other speed

    def __post_init__(self) -> None:
        name = "TrainConfig"
        _one_of(name, "strategy", self.strategy, STRATEGY_NAMES)
        _one_of(name, "stale_rule", self.stale_rule, STALE_RULE_NAMES)
        _one_of(name, "optimizer", self.optimizer, ("sgd", "adam"))
        _one_of(name, "memory_format", self.memory_format, MEMORY_FORMATS)
        check_range(name, "target_rate", self.target_rate, 0.0, 1.0, low_open=True)
        for field_name, low in (("epochs", 1), ("warmup_epochs", 0), ("cooldown_epochs", 0), ("batch_size", 2),
                                ("reference_epochs", 1), ("proxy_width", 1)):
            _integer(name, field_name, getattr(self, field_name), low)
        if self.pool_size is not None:
            _integer(name, "pool_size", self.pool_size, 1)
        if self.explore is not None:
            check_range(name, "explore", self.explore, 0.0, 1.0)
        if self.lr is not None:
            check_range(name, "lr", self.lr, 0.0, low_open=True)
        check_range(name, "weight_decay", self.weight_decay, 0.0)
        check_range(name, "label_noise", self.label_noise, 0.0, 1.0, high_open=True)
        _integer(name, "seed", self.seed, None)
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
    def gated(self) -> bool:
        """Whether the strategy selects (every strategy but `full`)."""
        return self.strategy != "full"

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
        """A copy with `changes` (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _one_of(owner: str, name: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{owner}.{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def _integer(owner: str, name: str, value, low: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{owner}.{name} must be an integer, got {value!r}")
    if low is not None and value < low:
        raise ConfigError(f"{owner}.{name} must be >= {low}, got {value}")
