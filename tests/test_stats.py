"""Small-sample statistics over seeds, and the banded comparison figure."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pytest
from matplotlib.collections import PolyCollection

from functional_ast.report import stats
from functional_ast.report.plots import compare_bands


@pytest.mark.parametrize("df, expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423),
                                          (100, 1.9840), (10**6, 1.95996), (math.inf, 1.95996)])
def test_t_quantile_975_matches_tables(df, expected):
    assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


def test_t_quantile_other_levels_and_symmetry():
    assert stats.t_quantile(0.995, 2) == pytest.approx(9.9248, abs=1e-4)
    assert stats.t_quantile(0.95, 5) == pytest.approx(2.0150, abs=1e-4)
    assert stats.t_quantile(0.9995, 1) == pytest.approx(636.6192, abs=1e-3)
    assert stats.t_quantile(0.025, 4) == pytest.approx(-stats.t_quantile(0.975, 4))
    assert stats.t_quantile(0.5, 3) == 0.0
    # Round trip through the cdf.
    assert stats.t_cdf(stats.t_quantile(0.9, 7), 7) == pytest.approx(0.9, abs=1e-10)


@pytest.mark.parametrize("p, df", [(0.0, 3), (1.0, 3), (0.975, 0), (0.975, 0.5)])
def test_t_quantile_rejects_bad_arguments(p, df):
    with pytest.raises(ValueError):
        stats.t_quantile(p, df)


def test_mean_std():
    assert stats.mean_std([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]) == pytest.approx((5.0, math.sqrt(32 / 7)))
    assert stats.mean_std([0.3]) == (0.3, 0.0)
    with pytest.raises(ValueError):
        stats.mean_std([])


def test_paired_difference_by_hand():
    d = stats.paired_difference([0.80, 0.82, 0.81], [0.79, 0.80, 0.80])
    # Differences 0.01, 0.02, 0.01: mean 0.04/3, deviations (-1/3, 2/3, -1/3) * 0.01,
    # sum of squares (6/9) * 1e-4, / 2 -> std = 0.01 / sqrt(3).
    diff, std = 0.04 / 3, 0.01 / math.sqrt(3)
    half = 4.3027 * std / math.sqrt(3)
    assert d["n"] == 3
    assert d["diff"] == pytest.approx(diff)
    assert d["std"] == pytest.approx(std)
    assert d["ci"] == pytest.approx([diff - half, diff + half], abs=1e-6)
    assert d["ci"][0] < 0 < d["ci"][1]
    assert d["excludes_zero"] is False
    assert stats.describe_difference(d) == "+1.33 pp (95% CI -0.10 to +2.77, 3 seeds): not distinguishable from 0"


def test_paired_difference_confidence_level_widens_interval():
    a, b = [0.80, 0.82, 0.81, 0.83], [0.79, 0.80, 0.80, 0.80]
    ci90 = stats.paired_difference(a, b, confidence=0.90)["ci"]
    ci99 = stats.paired_difference(a, b, confidence=0.99)["ci"]
    assert ci99[0] < ci90[0] and ci90[1] < ci99[1]


def test_single_seed_has_no_interval():
    d = stats.paired_difference([0.81], [0.79])
    assert d["n"] == 1
    assert d["diff"] == pytest.approx(0.02)
    assert d["ci"] == [None, None]
    assert d["excludes_zero"] is False
    assert d["std"] == 0.0
    assert stats.describe_difference(d) == "+2.00 pp (1 seed, no CI): not distinguishable from 0"


def test_consistent_shift_excludes_zero_both_signs():
    b = [0.70, 0.75, 0.72, 0.78, 0.74]
    a = [x + s for x, s in zip(b, [0.020, 0.022, 0.019, 0.021, 0.020])]
    up = stats.paired_difference(a, b)
    assert up["excludes_zero"] is True and up["ci"][0] > 0
    assert stats.describe_difference(up).endswith(": above 0")
    down = stats.paired_difference(b, a)
    assert down["excludes_zero"] is True and down["ci"][1] < 0
    assert stats.describe_difference(down, unit="", scale=1.0).startswith("-0.02 (95% CI")
    assert stats.describe_difference(down).endswith(": below 0")


def test_paired_difference_rejects_unequal_lengths():
    with pytest.raises(ValueError):
        stats.paired_difference([1.0, 2.0], [1.0])


def test_ratio_interval():
    r = stats.ratio_interval([2.0, 3.3, 4.0], [1.0, 1.5, 2.0])  # ratios 2.0, 2.2, 2.0
    mean, std = 6.2 / 3, math.sqrt(((0.2 / 3) ** 2 * 2 + (0.4 / 3) ** 2) / 2)
    half = 4.3027 * std / math.sqrt(3)
    assert r["ratio"] == pytest.approx(mean)
    assert r["std"] == pytest.approx(std)
    assert r["ci"] == pytest.approx([mean - half, mean + half], abs=1e-5)
    assert r["n"] == 3 and r["excludes_one"] is True and r["excludes_zero"] is True
    assert "diff" not in r
    assert stats.describe_difference(r).endswith(": above 1")
    near_one = stats.ratio_interval([1.0, 1.1, 0.95], [1.0, 1.0, 1.0])
    assert near_one["excludes_one"] is False
    assert stats.describe_difference(near_one).endswith("not distinguishable from 1")
    assert stats.ratio_interval([2.0], [1.0])["ci"] == [None, None]


def _seed(xs, ys):
    return [{"flops_spent": x, "test_accuracy": y, "epoch": i} for i, (x, y) in enumerate(zip(xs, ys))]


def test_compare_bands_lines_and_bands_with_different_x_grids():
    runs = {
        "full": [_seed([1.0, 2.0, 3.0], [0.5, 0.6, 0.7]), _seed([1.1, 2.2, 3.3], [0.52, 0.63, 0.71]),
                 _seed([0.9, 1.7, 2.6, 3.4], [0.49, 0.58, 0.66, 0.72])],
        "sundew": [_seed([0.5, 1.0], [0.40, 0.55]), _seed([0.6, 1.2, 1.5], [0.42, 0.50, 0.58])],
        "single": [_seed([0.3, 0.8, 1.9], [0.3, 0.4, 0.45])],
    }
    fig = compare_bands(runs, "flops_spent", "FLOPs", reference=0.72, reference_label="full data, final")
    (ax,) = fig.axes
    lines = [ln for ln in ax.get_lines() if ln.get_linestyle() != "--"]
    assert len(lines) == 3
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    labels = ax.get_legend_handles_labels()[1]
    assert any("full data, final" in lbl for lbl in labels)
    assert "min to max" in ax.get_title()
    # The mean curve of "full" spans only where all three seeds have data: [1.1, 3.0].
    full_x = lines[0].get_xdata()
    assert full_x[0] == pytest.approx(1.1) and full_x[-1] == pytest.approx(3.0)
    # The single-seed strategy is its raw line.
    assert list(lines[2].get_xdata()) == [0.3, 0.8, 1.9]
    # The reference (0.72) sits where the autoscaled top would be; it must not hide in the frame.
    low, high = ax.get_ylim()
    assert low < 0.72 < high - 0.01
    plt.close(fig)


def test_compare_bands_draws_disjoint_seeds_apart_without_a_band():
    from matplotlib.collections import PolyCollection

    runs = {"x": [_seed([1.0, 2.0], [0.1, 0.2]), _seed([3.0, 4.0], [0.3, 0.4])]}
    fig = compare_bands(runs, "flops_spent", "FLOPs")  # nothing to average over: each seed as it is
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and not any(isinstance(c, PolyCollection) for c in ax.collections)


def test_two_seeds_with_the_same_difference_are_not_called():
    d = stats.paired_difference([0.6080, 0.6050], [0.6035, 0.6005])  # +0.45 pp in both seeds: a zero-width CI
    assert d["excludes_zero"] is True  # the arithmetic is what it is
    words = stats.describe_difference(d)
    assert "too few seeds to call" in words and not words.endswith(": above 0")


def test_a_language_models_comparison_states_bits_per_byte_in_its_own_units():
    from functional_ast.report import tables

    def row(strategy, seed, bpb, acc):
        return dict(strategy=strategy, seed=seed, epochs=2, headline="bits_per_byte", higher_is_better=False,
                    test_bits_per_byte=bpb, test_accuracy=acc, train_time_s=1.0, samples_per_s=1.0,
                    flops_ratio_vs_full=1.0, samples_trained=1, samples_scored=0, energy_j=1.0,
                    energy_kind="estimate", at_random_time=bpb, flops_per_s=1.0)

    rows = [row("full", s, 3.40 + 0.01 * s, 0.39) for s in range(3)]
    rows += [row("small_loss", s, 3.45 + 0.012 * s, 0.38) for s in range(3)]
    (paired,) = tables.paired_against_baselines(rows, "test_bits_per_byte")
    assert paired["words"].startswith("+0.052 bits per byte") and "pp" not in paired["words"]
    text = tables.comparison_markdown(rows)
    assert "small_loss: test bits/byte 3.4620 ± 0.0120, test acc 0.3800" in text
    shifted = [dict(r, test_accuracy=r["test_accuracy"] + 0.01 * (r["strategy"] == "full")) for r in rows]
    image = tables.paired_against_baselines(shifted, "test_accuracy")
    assert image[0]["words"].startswith("-2.00 pp")


def test_compare_bands_keeps_eleven_rules_apart_and_the_legend_off_the_curves():
    runs = {f"rule{i}": [_seed([1.0, 2.0], [0.1 * i, 0.1 * i + 0.05]), _seed([1.0, 2.0], [0.1 * i, 0.1 * i + 0.07])]
            for i in range(11)}
    fig = compare_bands(runs, "flops_spent", "FLOPs")
    (ax,) = fig.axes
    lines = ax.get_lines()
    styles = {(ln.get_color(), ln.get_linestyle()) for ln in lines}
    assert len(lines) == 11 and len(styles) == 11  # no two rules drawn alike
    fig.canvas.draw()
    legend, axes = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= axes.x1  # beside the axes, not over the curves


def test_save_png_writes_a_palette_image_the_size_of_the_figure_at_a_fraction_of_the_bytes(tmp_path):
    from PIL import Image

    from functional_ast.report.plots import save_png

    runs = {f"rule{i}": [_seed([1.0, 2.0, 3.0], [0.1 * i, 0.1 * i + 0.05, 0.1 * i + 0.08])] for i in range(6)}
    fig = compare_bands(runs, "flops_spent", "FLOPs")
    fig.savefig(tmp_path / "full.png", dpi=120)
    save_png(fig, tmp_path / "small.png")
    with Image.open(tmp_path / "small.png") as small, Image.open(tmp_path / "full.png") as full:
        assert small.mode == "P" and small.size == full.size
        assert len(small.getcolors(maxcolors=256)) <= 256
    assert (tmp_path / "small.png").stat().st_size < 0.6 * (tmp_path / "full.png").stat().st_size
