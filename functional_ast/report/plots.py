"""Figures of a run: pure functions from recorded series to matplotlib Figures.

They are built with matplotlib's object API (`matplotlib.figure.Figure`), not pyplot: no backend is chosen, no
global figure list is kept (nothing to close), and importing the package changes nothing of the user's matplotlib.
"""

from __future__ import annotations

import io
from typing import Sequence

from matplotlib.figure import Figure
from PIL import Image


def _subplots(*grid, **options):
    """(figure, axes) as `pyplot.subplots` gives them, on a Figure of no backend (saved and logged as is)."""
    fig = Figure(figsize=options.pop("figsize", None))
    return fig, fig.subplots(*grid, **options)


def close(fig) -> None:
    """Nothing to release: the figures here are not pyplot's (kept for callers that closed them)."""


def save_png(fig, path, dpi: int = 120, colors: int = 256):
    """Write `fig` to `path` as a PNG of at most `colors` colours (a palette image): a chart of a few lines and
    bands reads the same and weighs about a third of the full-colour file, which matters for committed figures."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


PHASE_NAMES = {0: "warm-up (all data)", 1: "selective", 2: "cool-down (all data)"}
_PHASE_COLORS = {0: "0.85", 2: "#d9e8f5"}


def phase_spans(epochs: Sequence[dict], warmup_epochs: int, gated: bool = True) -> list[tuple[int, int, int]]:
    """(first step, end step, phase) of each run of same-phase epochs, from per-epoch records ("steps": the step
    count at the epoch's end, "all_data": 1.0 when it trained on all data): phase 0 warm-up, 1 selective, 2
    cool-down. [] for a strategy that never selects (one phase: nothing to mark)."""
    if not gated:
        return []
    spans: list[list[int]] = []
    start = 0
    for i, record in enumerate(epochs):
        phase = (0 if i < warmup_epochs else 2) if record.get("all_data") else 1
        end = int(record["steps"])
        if spans and spans[-1][2] == phase:
            spans[-1][1] = end
        else:
            spans.append([start, end, phase])
        start = end
    return [tuple(s) for s in spans]


def shade_phases(ax, spans: Sequence[tuple[int, int, int]], label: bool = True) -> None:
    """Shade the all-data phases (warm-up grey, cool-down blue) of `spans` on `ax`, named once in its legend."""
    named = set()
    for start, end, phase in spans:
        if phase in _PHASE_COLORS and end > start:
            ax.axvspan(start, end, color=_PHASE_COLORS[phase], alpha=0.6, lw=0, zorder=0,
                       label=PHASE_NAMES[phase] if label and phase not in named else None)
            named.add(phase)


def _title(fig, what: str, title: str | None) -> None:
    fig.suptitle(f"{what}: {title}" if title else what, fontsize=11)


def _selective(steps: Sequence[int], values: Sequence[float], spans) -> tuple[list[int], list[float]]:
    """The (step, value) pairs that fall in a selective span (all of them when there are no spans)."""
    if not spans:
        return list(steps), list(values)
    keep = [(s, v) for s, v in zip(steps, values) if any(a <= s < b and p == 1 for a, b, p in spans)]
    return [s for s, _ in keep], [v for _, v in keep]


def rate_and_threshold(steps: Sequence[int], rate: Sequence[float], rate_ema: Sequence[float],
                       threshold: Sequence[float], target: float | None, *, title: str | None = None,
                       phases: Sequence[tuple[int, int, int]] = ()):
    """Activation rate vs step on an axis around its target (per step and EMA, the target dashed), the whole run's
    rate on a small 0-1 axis above it, and the gate's threshold below; all-data phases shaded (`phase_spans`).
    The threshold exists only where the gate ran: the warm-up's shading says why it is blank there."""
    fig, (ax0, ax1, ax2) = _subplots(3, 1, figsize=(8, 7.5), sharex=True,
                                        gridspec_kw={"height_ratios": [1, 2.2, 1.6]})
    for ax in (ax0, ax1, ax2):
        shade_phases(ax, phases, label=ax is ax0)
    ax0.plot(steps, rate, lw=0.6, color="C0")
    ax0.set_ylim(-0.05, 1.05)
    ax0.set_ylabel("rate, 0-1")
    if phases:
        ax0.legend(loc="center right", fontsize=8)
    sel_steps, sel_rate = _selective(steps, rate, phases)
    ema_steps = list(steps[-len(rate_ema):]) if rate_ema else []
    sel_ema_steps, sel_ema = _selective(ema_steps, list(rate_ema), phases)
    ax1.plot(sel_steps, sel_rate, ".", ms=3, alpha=0.5, color="C0", label="activation rate (step)")
    if sel_ema:
        ax1.plot(sel_ema_steps, sel_ema, lw=1.5, color="C1", label="activation rate (EMA)")
    if target is not None:
        ax1.axhline(target, color="k", ls="--", lw=1, label=f"target {target:g}")
    shown = [v for v in list(sel_rate) + list(sel_ema) if v == v]
    if shown:
        centre = target if target is not None else sum(shown) / len(shown)
        ordered = sorted(shown)
        lo, hi = ordered[int(0.01 * (len(ordered) - 1))], ordered[int(0.99 * (len(ordered) - 1))]
        half = max(abs(hi - centre), abs(centre - lo), 0.02 * max(centre, 0.05)) * 1.15
        ax1.set_ylim(max(0.0, centre - half), centre + half)
    ax1.set_ylabel("fraction trained\n(selective steps)")
    ax1.legend(loc="upper right", fontsize=8)
    if threshold:
        ax2.plot(steps[-len(threshold):], threshold, color="C3", lw=0.8)
    else:
        ax2.text(0.5, 0.5, "no gate threshold for this strategy", transform=ax2.transAxes, ha="center",
                 va="center", color="0.4")
    ax2.set_ylabel("gate threshold")
    ax2.set_xlabel("step")
    _title(fig, "activation rate and threshold", title)
    fig.tight_layout()
    return fig


def flops_saved(steps: Sequence[int], step_saved: Sequence[float], cumulative: Sequence[float], *,
                title: str | None = None, phases: Sequence[tuple[int, int, int]] = ()):
    """FLOPs saved vs full training, per step and cumulative (%); all-data phases shaded."""
    fig, ax = _subplots(figsize=(8, 4))
    shade_phases(ax, phases)
    ax.plot(steps, step_saved, lw=0.5, alpha=0.4, label="this step")
    ax.plot(steps, cumulative, lw=1.5, label="cumulative")
    ax.set_xlabel("step")
    ax.set_ylabel("FLOPs saved vs full (%)")
    ax.legend(loc="lower right", fontsize=8)
    _title(fig, "FLOPs saved", title)
    fig.tight_layout()
    return fig


def training_loss(steps: Sequence[int], trained: Sequence[float], seen_steps: Sequence[int], seen: Sequence[float],
                  *, title: str | None = None, phases: Sequence[tuple[int, int, int]] = ()):
    """Training loss per step: over the samples trained (`loss`) and over all samples seen (`loss_seen`, the
    objective's curve, continuous across the phases); all-data phases shaded."""
    fig, ax = _subplots(figsize=(8, 4))
    shade_phases(ax, phases)
    ax.plot(steps, trained, lw=0.6, alpha=0.6, color="C3", label="loss of the samples trained (loss)")
    if seen:
        ax.plot(seen_steps, seen, lw=1.2, color="C0", label="loss of all samples seen (loss_seen)")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend(loc="upper right", fontsize=8)
    _title(fig, "training loss", title)
    fig.tight_layout()
    return fig


def accuracy_vs_time(wall_clock: Sequence[float], accuracy: Sequence[float], label: str = "", *,
                     title: str | None = None, references: dict[str, tuple[Sequence[float], Sequence[float]]]
                     | None = None, phases: Sequence[int] = (), metric: str = "test accuracy"):
    """The test `metric` (the task's headline) after each epoch vs cumulative train wall-clock (eval excluded).
    `references` adds other runs' curves (name -> (wall-clock, values)), e.g. full data's in the same comparison,
    grey and dashed; `phases` (one per point: 0 warm-up, 1 selective, 2 cool-down) marks the all-data epochs'
    points."""
    fig, ax = _subplots(figsize=(7, 4.5))
    for i, (name, (x, y)) in enumerate((references or {}).items()):
        ax.plot(x, y, ls="--", marker=".", color=f"{0.25 + 0.2 * i:.2f}", lw=1.2, label=name)
    ax.plot(wall_clock, accuracy, marker="o", color="C0", label=label or "this run")
    for phase, marker in ((0, "s"), (2, "D")):
        pts = [(x, y) for x, y, p in zip(wall_clock, accuracy, phases) if p == phase]
        if pts:
            ax.plot([x for x, _ in pts], [y for _, y in pts], ls="none", marker=marker, ms=8, mfc="none",
                    color="k", label=f"{PHASE_NAMES[phase]} epoch")
    ax.set_xlabel("train wall-clock (s, eval excluded)")
    ax.set_ylabel(metric)
    if references or label or any(p != 1 for p in phases):
        ax.legend(fontsize=8)
    _title(fig, metric, title)
    fig.tight_layout()
    return fig


def compare_rates(rates: dict[str, tuple[tuple[list, list], tuple[list, list]]]):
    """Activation rate (and threshold, where a gate has one) vs step, one line per strategy."""
    fig, (ax1, ax2) = _subplots(2, 1, figsize=(8, 6), sharex=True)
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
    many = len(runs) > 5  # the legend beside the axes, not over the curves
    fig, ax = _subplots(figsize=(10, 4.5) if many else (7, 4.5))
    any_band = False
    for i, (name, seeds) in enumerate(runs.items()):
        color = f"C{i % 10}"  # the 11th rule on: the same colours again, dashed
        style = {"ls": "--"} if i >= 10 else {}
        curves = [c for c in (_seed_curve(s, x_key, y_key) for s in seeds) if len(c[0])]
        if not curves:
            raise ValueError(f"compare_bands: strategy {name!r} has no ({x_key}, {y_key}) points")
        if len(curves) == 1:
            ax.plot(curves[0][0], curves[0][1], marker="o", ms=3, color=color, label=f"{name} (1 seed)", **style)
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
        ax.plot(grid, ys.mean(axis=0), color=color, label=f"{name} (mean of {len(curves)} seeds)", **style)
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
    if many:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    else:
        ax.legend()
    fig.tight_layout()
    return fig
