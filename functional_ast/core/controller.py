"""PI control of the gate threshold toward a target activation rate (pure functions).

error = logit(EMA(observed rate)) - logit(target), the rate's error in log-odds;
threshold = clamp(base + kp*error + ki*integral). For a sigmoid gate a threshold shift
moves the rate's log-odds about linearly (slope 1/temperature), so working in
log-odds gives the loop the same gain at a 5% target as at 50% (an absolute rate
error is tiny at low targets and made the loop lag there on real data).
`base` is `initial_threshold`, or, when that is None, calibrated once from the first
gated batch (`calibrate`) so the loop starts near its operating point instead of
spending hundreds of steps winding the integral up. Anti-windup by back-calculation:
the integral is clamped to +-integral_limit and, while the threshold is held at a
bound, to the value that holds it exactly there, so it never winds up past the bound
and the threshold leaves it as soon as the error changes sign.
Controller state: TensorDict(threshold, base, rate_ema, integral, calibrated).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tensordict import TensorDict
from torch import Tensor

from functional_ast.core.checks import check_range


@dataclass(frozen=True)
class ControllerConfig:
    """Controller constants; defaults converge for targets 0.05..0.5 (see tests and README)."""

    target_rate: float = 0.1
    ema_alpha: float = 0.1
    kp: float = 0.05
    ki: float = 0.04
    integral_limit: float = 50.0
    initial_threshold: float | None = None
    threshold_min: float = 0.0
    threshold_max: float = 1.5

    def __post_init__(self) -> None:
        check_range("ControllerConfig", "target_rate", self.target_rate, 0.0, 1.0, low_open=True)
        check_range("ControllerConfig", "ema_alpha", self.ema_alpha, 0.0, 1.0, low_open=True)
        check_range("ControllerConfig", "kp", self.kp, 0.0)
        check_range("ControllerConfig", "ki", self.ki, 0.0)
        check_range("ControllerConfig", "integral_limit", self.integral_limit, 0.0)
        check_range("ControllerConfig", "threshold_max", self.threshold_max, self.threshold_min)
        if self.initial_threshold is not None:
            check_range("ControllerConfig", "initial_threshold", self.initial_threshold,
                        self.threshold_min, self.threshold_max)


_RATE_EPS = 1e-3


def _logit(rate: Tensor) -> Tensor:
    return torch.logit(rate.clamp(_RATE_EPS, 1.0 - _RATE_EPS))


def init(cfg: ControllerConfig, device: torch.device | str | None = None) -> TensorDict:
    """Initial state: EMA at the target, no integral, threshold at the configured start (or mid-range)."""
    start = cfg.initial_threshold
    if start is None:
        start = 0.5 * (cfg.threshold_min + cfg.threshold_max)
    scalar = lambda v: torch.tensor(float(v), dtype=torch.float32, device=device)  # noqa: E731
    return TensorDict(threshold=scalar(start), base=scalar(start), rate_ema=scalar(cfg.target_rate),
                      integral=scalar(0.0),
                      calibrated=torch.tensor(cfg.initial_threshold is not None, device=device))


def calibrate(state: TensorDict, threshold: Tensor) -> TensorDict:
    """Adopt `threshold` as base and current threshold, once; a no-op after the first call."""
    first = ~state["calibrated"]
    return TensorDict(threshold=torch.where(first, threshold, state["threshold"]),
                      base=torch.where(first, threshold, state["base"]),
                      rate_ema=state["rate_ema"], integral=state["integral"],
                      calibrated=torch.ones_like(state["calibrated"]))


def update(state: TensorDict, observed_rate: Tensor, cfg: ControllerConfig) -> TensorDict:
    """One control step from the rate observed this step; returns the new controller state."""
    rate_ema = (1.0 - cfg.ema_alpha) * state["rate_ema"] + cfg.ema_alpha * observed_rate.float()
    target = min(max(cfg.target_rate, _RATE_EPS), 1.0 - _RATE_EPS)
    error = _logit(rate_ema) - math.log(target / (1.0 - target))
    base = state["base"]
    integral = (state["integral"] + error).clamp(-cfg.integral_limit, cfg.integral_limit)
    if cfg.ki > 0:  # back-calculation: no more integral than holds the threshold at its bounds
        hold_max = (cfg.threshold_max - base - cfg.kp * error) / cfg.ki
        hold_min = (cfg.threshold_min - base - cfg.kp * error) / cfg.ki
        integral = torch.minimum(torch.maximum(integral, hold_min), hold_max)
    threshold = (base + cfg.kp * error + cfg.ki * integral).clamp(cfg.threshold_min, cfg.threshold_max)
    return TensorDict(threshold=threshold, base=base, rate_ema=rate_ema, integral=integral,
                      calibrated=state["calibrated"])
