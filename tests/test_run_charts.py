"""Charts that read right: epoch metrics on an epoch axis, the phase per step, `final/*` results only, FLOPs in
GFLOP, the metrics that never move explained in the run's description; the run's own figures titled, with the
phases marked, the rate around its target, and full data's curve beside a selective run of a comparison."""

from __future__ import annotations

import os
import re

import pytest
from matplotlib.patches import Polygon, Rectangle
from mlflow.tracking import MlflowClient
from test_cli import _image_folder

from functional_ast.cli import main as cli
from functional_ast.edges import callbacks, tracking
from functional_ast.report import plots
from functional_ast.train.history import History

# 96 samples in batches of 16: a warm-up or cool-down epoch has 6 steps, a selective one (pool 32, rate 0.5) 3.
EPOCH_STEPS = (6, 3, 3, 6)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A sundew run (warm-up, two selective epochs, cool-down) and a full-data run, through the command line."""
    tmp = tmp_path_factory.mktemp("charts")
    data = _image_folder(tmp / "images")
    uri = f"sqlite:///{tmp}/store/mlflow.db"
    here = os.getcwd()
    os.chdir(tmp)
    try:
        common = ["--data", str(data), "--batch-size", "16", "--tracking-uri", uri, "--experiment", "charts",
                  "--no-progress", "--log-every", "2", "--no-log-model"]
        assert cli.main(common + ["--strategy", "sundew", "--epochs", "4", "--warmup-epochs", "1",
                                  "--cooldown-epochs", "1", "--target-rate", "0.5", "--run-name", "gated"]) == 0
        assert cli.main(common + ["--epochs", "2", "--strategy", "full", "--run-name", "plain"]) == 0
    finally:
        os.chdir(here)
    client = MlflowClient(uri)
    found = client.search_runs([client.get_experiment_by_name("charts").experiment_id])
    return client, {r.info.run_name: r for r in found}


def _history(client, run, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))


def test_epoch_metrics_are_at_the_epoch_and_per_step_ones_carry_phase_and_epoch(runs):
    client, found = runs
    gated = found["gated"]
    assert [s for s, _ in _history(client, gated, "epoch/test_accuracy")] == [1, 2, 3, 4]
    assert [v for _, v in _history(client, gated, "epoch/phase")] == [0, 1, 1, 2]
    phases = [v for _, v in _history(client, gated, "phase")]
    assert phases == [0] * 6 + [1] * 6 + [2] * 6  # warm-up, two selective epochs of 3 steps, cool-down
    epochs = _history(client, gated, "epoch")
    assert [s for s, _ in epochs] == list(range(sum(EPOCH_STEPS)))
    ends = [sum(EPOCH_STEPS[:i + 1]) - 1 for i in range(len(EPOCH_STEPS))]
    assert [v for s, v in epochs if s in ends] == pytest.approx([1.0, 2.0, 3.0, 4.0])  # each epoch's last step
    assert all(a < b for (_, a), (_, b) in zip(epochs, epochs[1:]))
    plain = found["plain"]
    assert not client.get_metric_history(plain.info.run_id, "phase")  # one phase: nothing to mark
    assert "epoch/phase" not in plain.data.metrics and "epoch/all_data" not in plain.data.metrics


def test_final_metrics_are_results_only_and_flops_are_in_gflop(runs):
    client, found = runs
    metrics = found["gated"].data.metrics
    final = {k for k in metrics if k.startswith("final/")}
    for config in ("seed", "epochs", "warmup_epochs", "cooldown_epochs", "target_rate", "model_params"):
        assert f"final/{config}" not in final, config
    assert {"final/test_accuracy", "final/flops_saved_pct", "final/flops_spent_gflop", "final/flops_full_gflop",
            "final/gflop_per_s", "final/train_time_s", "final/samples_trained"} <= final
    assert not any(k.endswith(("flops_spent", "flops_full", "flops_per_s", "step_flops")) for k in metrics)
    gflop = metrics["final/flops_spent_gflop"]
    assert 0 < gflop < 1e3  # a readable number, not 5e13
    assert metrics["epoch/flops_spent_gflop"] == pytest.approx(gflop)  # the last epoch's count is the total
    steps = _history(client, found["gated"], "step_gflop")
    assert len(steps) == sum(EPOCH_STEPS) and sum(v for _, v in steps) == pytest.approx(gflop, rel=1e-6)


def test_the_description_names_the_phases_and_the_metrics_that_never_moved(runs):
    client, found = runs
    text = found["gated"].data.tags[tracking.NOTE_TAG]
    assert "**sundew**" in text and "0 warm-up" in text and "2 cool-down on all data for 1 epoch(s)" in text
    assert "`epoch` metric as x-axis" in text and "GFLOP" in text
    flat = []
    for key in ("budget", "n_blocked", "n_fallback", "skipped_nonfinite", "loss", "activation_rate"):
        values = {v for _, v in _history(client, found["gated"], key)}
        if len(values) == 1:
            flat.append(key)
            assert f"`{key}` = {values.pop():g} ({callbacks.GLOSSARY[key]})" in text, key
        else:
            assert f"`{key}` =" not in text, key
    assert "skipped_nonfinite" in flat and "activation_rate" not in flat
    assert "rises at the warm-up/selective boundary" in text  # why the loss jumps


def test_the_description_holds_the_final_results_once_as_a_table_equal_to_the_final_metrics(runs):
    client, found = runs
    run = found["gated"]
    text = run.data.tags[tracking.NOTE_TAG]
    rows = dict(re.findall(r"^\| ([a-z0-9_]+) \| ([^|]+) \|$", text, re.M))
    final = {k.removeprefix("final/"): v for k, v in run.data.metrics.items() if k.startswith("final/")}
    assert set(rows) == set(final) and text.count("| result (`final/*`) | value |") == 1
    for key, value in final.items():
        assert float(rows[key]) == pytest.approx(value, rel=1e-5), key


def test_the_runs_figures_are_titled_and_mark_the_phases():
    epochs = [dict(steps=6, all_data=1.0, test_accuracy=0.3, train_time_s=1.0),
              dict(steps=9, all_data=0.0, test_accuracy=0.4, train_time_s=1.5),
              dict(steps=12, all_data=0.0, test_accuracy=0.5, train_time_s=2.0),
              dict(steps=18, all_data=1.0, test_accuracy=0.6, train_time_s=3.0)]
    assert plots.phase_spans(epochs, 1) == [(0, 6, 0), (6, 12, 1), (12, 18, 2)]
    assert plots.phase_spans(epochs, 1, gated=False) == []
    rate = [1.0] * 6 + [0.09, 0.11, 0.1, 0.12, 0.08, 0.1] + [1.0] * 6
    history = History({"activation_rate": list(enumerate(rate)),
                       "rate_ema": list(enumerate([1.0] * 6 + [0.1] * 6 + [1.0] * 6)),
                       "threshold": [(s, 0.5) for s in range(6, 12)],
                       "step_saved_pct": [(s, 0.0) for s in range(18)], "saved_pct": [(s, 0.0) for s in range(18)]},
                      epochs)
    figures = callbacks.run_figures(history, 0.1, title="sundew, run gated", warmup_epochs=1,
                                    references={"full data (same comparison, seed 0)": ([1.0, 3.0], [0.4, 0.7])})
    for name, fig in figures.items():
        assert "sundew, run gated" in fig._suptitle.get_text(), name
    rate_fig = figures["rate_threshold.png"]
    overview, around, threshold = rate_fig.axes
    low, high = around.get_ylim()
    assert low < 0.08 and 0.12 < high < 0.3  # the selective rate on its own axis around the target, not 0-1
    assert overview.get_ylim()[1] > 1.0
    shaded = [p for p in threshold.patches if isinstance(p, (Polygon, Rectangle))]
    assert len(shaded) == 2  # warm-up and cool-down shaded where the threshold is blank
    labels = overview.get_legend_handles_labels()[1]
    assert "warm-up (all data)" in labels and "cool-down (all data)" in labels
    accuracy = figures["accuracy_vs_time.png"].axes[0]
    labels = accuracy.get_legend_handles_labels()[1]
    assert "full data (same comparison, seed 0)" in labels and "warm-up (all data) epoch" in labels
    for fig in figures.values():
        plots.close(fig)


def test_a_selective_run_of_a_comparison_draws_full_datas_curve_beside_its_own(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = _image_folder(tmp_path / "images")
    drawn = {}
    real = plots.accuracy_vs_time

    def spy(*args, title=None, references=None, **kwargs):
        drawn[title] = dict(references or {})
        return real(*args, title=title, references=references, **kwargs)

    monkeypatch.setattr(plots, "accuracy_vs_time", spy)
    assert cli.main(["--data", str(data), "--epochs", "2", "--warmup-epochs", "1", "--batch-size", "16",
                     "--target-rate", "0.25", "--tracking-uri", f"sqlite:///{tmp_path}/store/mlflow.db",
                     "--no-progress", "--no-log-model", "--compare", "full,random"]) == 0
    (full_title,) = [t for t in drawn if t.startswith("full")]
    (random_title,) = [t for t in drawn if t.startswith("random")]
    assert drawn[full_title] == {}  # full data is the reference, not compared with itself
    (curve,) = drawn[random_title].values()
    assert len(curve[0]) == len(curve[1]) == 2  # full's two epochs, beside random's own
    assert "seed 0" in next(iter(drawn[random_title]))


def test_the_loss_over_all_samples_seen_is_logged_beside_loss_and_plotted(runs):
    client, found = runs
    for name in ("gated", "plain"):
        run = found[name]
        assert "loss_seen" in run.data.metrics and "loss" in run.data.metrics
        seen, trained = _history(client, run, "loss_seen"), _history(client, run, "loss")
        assert [s for s, _ in seen] == [s for s, _ in trained]
        if name == "plain":  # full data: the same
            assert seen == trained
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert "loss.png" in artifacts, artifacts
    selective = [(a, b) for (s, a), (_, b) in zip(_history(client, found["gated"], "loss_seen"),
                                                  _history(client, found["gated"], "loss")) if 6 <= s < 12]
    assert any(a != b for a, b in selective)  # sundew scores its pools: the seen are not the trained
    assert "`loss_seen`: " in found["gated"].data.tags[tracking.NOTE_TAG]
