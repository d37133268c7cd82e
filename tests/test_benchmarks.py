"""The savings benchmark's P1/P2 logic on hand-made results (no training)."""

import pytest

from benchmarks import savings
from experiments.cifar10 import History, Result, accuracy_at, comparison_table


def _result(name, curve, flops=100, trained=10):
    h = History()
    h.epochs = [dict(train_time_s=t, test_accuracy=a, flops_spent=flops) for t, a in curve]
    summary = dict(strategy=name, epochs=len(curve), test_accuracy=curve[-1][1], train_time_s=curve[-1][0],
                   flops_spent=flops, samples_trained=trained, samples_scored=0, energy_j=1.0, energy_kind="estimate")
    return Result(summary, h)


def test_p1_takes_the_fastest_strategy_that_comes_within_a_point():
    results = [_result("full", [(50, 0.70), (100, 0.80)]),
               _result("sundew", [(20, 0.75), (40, 0.795), (60, 0.80)]),
               _result("stale", [(10, 0.60), (30, 0.792)])]
    r = savings.p1(results)
    assert r["strategy"] == "stale" and r["time_ratio"] == pytest.approx(0.30) and r["met"]
    assert r["acc_gap_pp"] == pytest.approx(0.8)


def test_p1_not_met_reports_smallest_gap():
    results = [_result("full", [(100, 0.80)]), _result("sundew", [(40, 0.70)]), _result("stale", [(20, 0.75)])]
    r = savings.p1(results)
    assert r["strategy"] == "stale" and not r["met"] and not r["reached"]
    assert r["acc_gap_pp"] == pytest.approx(5.0)


def test_p2_compares_best_ast_with_random():
    results = [_result("random", [(30, 0.60)]), _result("sundew", [(30, 0.62)]), _result("stale", [(30, 0.605)])]
    r = savings.p2(results)
    assert r["strategy"] == "sundew" and r["acc_vs_random_pp"] == pytest.approx(2.0) and r["met"]
    assert not savings.p2(results[:1] + results[2:])["met"]


def test_comparison_table_ratios_and_accuracy_at_random_time():
    results = [_result("full", [(50, 0.7), (100, 0.8)], flops=1000), _result("random", [(10, 0.5), (20, 0.6)]),
               _result("sundew", [(15, 0.55), (40, 0.7)], flops=400)]
    rows = {r["strategy"]: r for r in comparison_table(results)}
    assert rows["full"]["speedup_vs_full"] == 1.0 and rows["sundew"]["flops_ratio_vs_full"] == pytest.approx(0.4)
    assert rows["sundew"]["speedup_vs_full"] == pytest.approx(2.5)
    assert rows["sundew"]["acc_at_random_time"] == 0.55 and rows["full"]["acc_at_random_time"] is None
    assert accuracy_at(results[1].history, 20) == 0.6


def test_controller_targets_benchmark_runs_and_reports_each_target(tmp_path, monkeypatch, capsys):
    import json

    from benchmarks import controller_targets
    from test_cli import _image_folder

    monkeypatch.chdir(tmp_path)
    data = _image_folder(tmp_path / "images")
    code = controller_targets.main(["--data", str(data), "--targets", "0.25,0.5", "--epochs", "3", "--batch-size",
                                    "16", "--limit-test", "24", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--json",
                                    str(tmp_path / "c.json")])
    rows = json.loads((tmp_path / "c.json").read_text())
    assert [r["target"] for r in rows] == [0.25, 0.5] and code in (0, 1)
    assert all(len(r["gated_epoch_rates"]) == 2 and 0 < r["gated_epoch_rates"][-1] <= 1 for r in rows)
    # one controller update per pool of batch/target samples: the higher target has smaller pools, more updates
    assert rows[1]["updates_per_gated_epoch"] > rows[0]["updates_per_gated_epoch"] > 0
    assert "| 0.25 |" in capsys.readouterr().out


def test_savings_benchmark_runs_both_phases_and_prints_both_ratios(tmp_path, monkeypatch, capsys):
    import json

    from test_cli import _image_folder

    monkeypatch.chdir(tmp_path)
    data = _image_folder(tmp_path / "images")
    code = savings.main(["--data", str(data), "--epochs", "3", "--target-rate", "0.25", "--batch-size", "16",
                         "--tracking-uri",
                         f"sqlite:///{tmp_path}/mlflow.db", "--json", str(tmp_path / "s.json")])
    assert code == 0
    out = capsys.readouterr().out
    assert "P1 time_ratio = " in out and "P2 acc_vs_random_at_equal_time = " in out
    report = json.loads((tmp_path / "s.json").read_text())
    assert [r["strategy"] for r in report["epoch_budget"]] == ["full", "random", *savings.AST]
    assert [r["strategy"] for r in report["equal_time"]] == ["random", *savings.AST]
