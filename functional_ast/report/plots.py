"""Figures of a run (matplotlib, headless): pure functions from recorded series to Figures."""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def rate_and_threshold(steps: Sequence[int], rate: Sequence[float], rate_ema: Sequence[float],
                       threshold: Sequence[float], target: float | None):
    """Activation rate (per step and EMA) with the target line, and the threshold, vs step."""
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    ax1.plot(steps, rate, lw=0.5, alpha=0.4, label="activation rate (step)")
    if rate_ema:
        ax1.plot(steps[-len(rate_ema):], rate_ema, lw=1.5, label="activation rate (EMA)")
    if target is not None:
        ax1.axhline(target, color="k", ls="--", lw=1, label=f"target {target:g}")
    ax1.set_ylabel("fraction trained")
    ax1.legend(loc="upper right")
    if threshold:
        ax2.plot(steps[-len(threshold):], threshold, color="C3")
    ax2.set_ylabel("gate threshold")
    ax2.set_xlabel("step")
    fig.tight_layout()
    return fig


def flops_saved(steps: Sequence[int], step_saved: Sequence[float], cumulative: Sequence[float]):
    """FLOPs saved vs full training, per step and cumulative (%)."""
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(steps, step_saved, lw=0.5, alpha=0.4, label="this step")
    ax.plot(steps, cumulative, lw=1.5, label="cumulative")
    ax.set_xlabel("step")
    ax.set_ylabel("FLOPs saved vs full (%)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def accuracy_vs_time(wall_clock: Sequence[float], accuracy: Sequence[float], label: str = ""):
    """Test accuracy after each epoch vs cumulative train wall-clock (eval excluded)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(wall_clock, accuracy, marker="o", label=label or None)
    ax.set_xlabel("train wall-clock (s, eval excluded)")
    ax.set_ylabel("test accuracy")
    if label:
        ax.legend()
    fig.tight_layout()
    return fig


def compare_curves(curves: dict[str, list[dict]], x_key: str, x_label: str):
    """Test accuracy after each epoch vs `x_key` (train_time_s or flops_spent), one line per strategy."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, epochs in curves.items():
        ax.plot([e[x_key] for e in epochs], [e["test_accuracy"] for e in epochs], marker="o", ms=3, label=name)
    if x_key == "flops_spent":
        ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel("test accuracy")
    ax.legend()
    fig.tight_layout()
    return fig


def compare_rates(rates: dict[str, tuple[tuple[list, list], tuple[list, list]]]):
    """Activation rate (and threshold, where a gate has one) vs step, one line per strategy."""
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for name, ((steps, rate), (thr_steps, threshold)) in rates.items():
        ax1.plot(steps, rate, lw=0.6, label=name)
        if threshold:
            ax2.plot(thr_steps, threshold, lw=0.8, label=name)
    ax1.set_ylabel("fraction trained")
    ax1.legend(loc="upper right")
    ax2.set_ylabel("gate threshold")
    ax2.set_xlabel("step")
    fig.tight_layout()
    return fig


def _seed_curve(records: list[dict], x_key: str, y_key: str):
    """One seed's (x, y) as float arrays sorted by x, records lacking either key skipped."""
    import numpy as np

    pts = sorted((float(r[x_key]), float(r[y_key])) for r in records
                 if r.get(x_key) is not None and r.get(y_key) is not None)
    return np.array([p[0] for p in pts]), np.array([p[1] for p in pts])


def compare_bands(runs: dict[str, list[list[dict]]], x_key: str, x_label: str, y_key: str = "test_accuracy",
                  y_label: str = "test accuracy", reference: float | None = None,
                  reference_label: str = "reference"):
    """Mean `y_key` vs `x_key` over seeds, one line per strategy, shaded min-max over seeds.

    `runs[name]` is a list of seeds, each a list of per-epoch records. Seeds are interpolated
    (numpy.interp) onto a common grid over the x range every seed of that strategy covers; a
    strategy with one seed is its plain line. `reference` adds a dashed horizontal line.
    Raises ValueError for a strategy whose seeds have no x range in common or no points.
    """
    import numpy as np

    log_x = x_key == "flops_spent"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    any_band = False
    for i, (name, seeds) in enumerate(runs.items()):
        color = f"C{i % 10}"
        curves = [c for c in (_seed_curve(s, x_key, y_key) for s in seeds) if len(c[0])]
        if not curves:
            raise ValueError(f"compare_bands: strategy {name!r} has no ({x_key}, {y_key}) points")
        if len(curves) == 1:
            ax.plot(curves[0][0], curves[0][1], marker="o", ms=3, color=color, label=f"{name} (1 seed)")
            continue
        lo, hi = max(c[0][0] for c in curves), min(c[0][-1] for c in curves)
        if lo > hi:  # no common range to average over: draw each seed as it is
            for k, (x, y) in enumerate(curves):
                ax.plot(x, y, marker="o", ms=3, color=color, lw=0.8, label=f"{name} (seeds apart)" if not k else None)
            continue
        if hi == lo:
            grid = np.array([lo])
        elif log_x and lo > 0:
            grid = np.geomspace(lo, hi, 200)
        else:
            grid = np.linspace(lo, hi, 200)
        ys = np.stack([np.interp(grid, x, y) for x, y in curves])
        ax.plot(grid, ys.mean(axis=0), color=color, label=f"{name} (mean of {len(curves)} seeds)")
        ax.fill_between(grid, ys.min(axis=0), ys.max(axis=0), color=color, alpha=0.2, lw=0)
        any_band = True
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=1, label=f"{reference_label} ({reference:.4g})")
        # axhline rescales only when outside the current view: one on its edge would hide in the frame.
        ax.update_datalim([(ax.dataLim.x0, reference)], updatex=False)
        ax.autoscale_view(scalex=False)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    if any_band:
        ax.set_title("shaded: min to max over seeds", fontsize=9)
    ax.legend()
    fig.tight_layout()
    return fig
