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


def energy_saved(steps: Sequence[int], step_saved: Sequence[float], cumulative: Sequence[float]):
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
