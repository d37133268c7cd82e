"""Validation shared by every frozen config: one clear message per bad value, naming the field and the range."""

from __future__ import annotations

import math


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


def one_of(owner: str, name: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{owner}.{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def integer(owner: str, name: str, value, low: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{owner}.{name} must be an integer, got {value!r}")
    if low is not None and value < low:
        raise ConfigError(f"{owner}.{name} must be >= {low}, got {value}")
