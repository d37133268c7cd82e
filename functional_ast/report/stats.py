"""Small-sample statistics over seeds (pure Python, no scipy): t quantiles, paired t-intervals.

Typical use: a strategy and a baseline run on the same n seeds; `paired_difference` gives
the mean of the per-seed differences with a Student-t interval (n - 1 df), and
`describe_difference` turns it into one plain-words line.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

_CF_EPS = 1e-15
_CF_TINY = 1e-300


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _CF_TINY else _CF_TINY)
    h = d
    for m in range(1, 100_000):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > _CF_TINY else _CF_TINY)
            c = 1.0 + num / c
            c = c if abs(c) > _CF_TINY else _CF_TINY
            delta = c * d
            h *= delta
        if abs(delta - 1.0) < _CF_EPS:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if not (a > 0 and b > 0 and 0.0 <= x <= 1.0):
        raise ValueError(f"betainc needs a, b > 0 and 0 <= x <= 1, got a={a}, b={b}, x={x}")
    if x == 0.0 or x == 1.0:
        return x
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df > 0 degrees of freedom (df = inf: standard normal)."""
    if df <= 0:
        raise ValueError(f"df must be > 0, got {df}")
    if math.isinf(df):
        return 0.5 * math.erfc(-t / math.sqrt(2.0))
    if t == 0.0:
        return 0.5
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p for Student's t, df >= 1 (math.inf: the normal); bisected to ~1e-12 relative.

    Bisection on `t_cdf` (the regularized incomplete beta function); no table.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if not df >= 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 2.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
        if hi > 1e300:
            raise ArithmeticError(f"t_quantile({p}, {df}) out of range")
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return 0.5 * (lo + hi)


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """(mean, sample std with ddof=1) of the values; std is 0.0 for a single value. Raises on none."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_std of no values")
    mean = math.fsum(xs) / len(xs)
    if len(xs) < 2:
        return mean, 0.0
    return mean, math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


def _t_interval(xs: list[float], confidence: float) -> tuple[float, float, list[float | None]]:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    mean, std = mean_std(xs)
    n = len(xs)
    if n < 2:
        return mean, std, [None, None]
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return mean, std, [mean - half, mean + half]


def _paired(a: Sequence[float], b: Sequence[float]) -> tuple[list[float], list[float]]:
    xa, xb = [float(v) for v in a], [float(v) for v in b]
    if len(xa) != len(xb):
        raise ValueError(f"paired samples need equal lengths, got {len(xa)} and {len(xb)}")
    if not xa:
        raise ValueError("paired samples are empty")
    return xa, xb


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean of a_i - b_i with a t-interval (n - 1 df) over the paired differences.

    Returns {diff, ci: [low, high] (both None when n < 2), n, std (of the differences, ddof=1),
    excludes_zero (low > 0 or high < 0; False when n < 2), confidence}.
    """
    xa, xb = _paired(a, b)
    mean, std, ci = _t_interval([x - y for x, y in zip(xa, xb)], confidence)
    excludes = ci[0] is not None and (ci[0] > 0 or ci[1] < 0)
    return {"diff": mean, "ci": ci, "n": len(xa), "std": std, "excludes_zero": excludes,
            "confidence": confidence}


def ratio_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean of the paired ratios a_i / b_i with a t-interval (n - 1 df) over the ratios.

    Same shape as `paired_difference` with `ratio` for `diff`, plus `excludes_one`
    (low > 1 or high < 1; False when n < 2), the test that usually matters for a ratio.
    """
    xa, xb = _paired(a, b)
    if any(y == 0.0 for y in xb):
        raise ValueError("ratio_interval: b has a zero")
    mean, std, ci = _t_interval([x / y for x, y in zip(xa, xb)], confidence)
    has_ci = ci[0] is not None
    return {"ratio": mean, "ci": ci, "n": len(xa), "std": std,
            "excludes_zero": has_ci and (ci[0] > 0 or ci[1] < 0),
            "excludes_one": has_ci and (ci[0] > 1 or ci[1] < 1),
            "confidence": confidence}


MIN_SEEDS_FOR_VERDICT = 3  # below this, an interval that excludes the null is reported but not called


def describe_difference(d: dict, unit: str = "pp", scale: float = 100.0) -> str:
    """One plain-words line for a `paired_difference` (or `ratio_interval`) result.

    E.g. "+1.23 pp (95% CI -0.40 to +2.86, 3 seeds): not distinguishable from 0"; the verdict
    is "above 0" / "below 0" when the interval excludes 0. A ratio dict is written as "1.050x
    ..." against 1 (unit and scale are then ignored).
    """
    n = d["n"]
    seeds = f"{n} seed" + ("" if n == 1 else "s")
    conf = f"{100 * d.get('confidence', 0.95):g}% CI"
    low, high = d["ci"]
    if "ratio" in d:
        null, value = 1.0, d["ratio"]
        fmt = lambda v: f"{v:.3f}x"  # noqa: E731
        text = fmt(value)
    else:
        null, value = 0.0, d["diff"]
        digits = 3 if unit and unit != "pp" else 2  # percentage points to 0.01; bits per byte and the like to 0.001
        fmt = lambda v: f"{v * scale:+.{digits}f}"  # noqa: E731
        text = fmt(value) + (f" {unit}" if unit else "")
    if low is None:
        return f"{text} ({seeds}, no CI): not distinguishable from {null:g}"
    if low > null:
        verdict = f"above {null:g}"
    elif high < null:
        verdict = f"below {null:g}"
    else:
        verdict = f"not distinguishable from {null:g}"
    if verdict != f"not distinguishable from {null:g}" and n < MIN_SEEDS_FOR_VERDICT:
        # Two seeds that happen to differ by the same amount give a zero-width interval: not evidence.
        verdict = f"{verdict} in both seeds, but too few seeds to call (fewer than {MIN_SEEDS_FOR_VERDICT})"
    return f"{text} ({conf} {fmt(low)} to {fmt(high)}, {seeds}): {verdict}"
