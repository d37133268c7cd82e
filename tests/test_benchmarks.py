"""The benchmarks: the savings benchmark's two questions on hand-made results, and smoke runs of each."""

import json

import pytest

from benchmarks import savings
from functional_ast.cli import savings as savings_command
from functional_ast.edges import provenance
from functional_ast.pays import questions
from functional_ast.pays import run as savings_run
from functional_ast.report import tables as report
from functional_ast.train.base import Result, Summary
from functional_ast.train.history import History


def _result(name, curve, flops=100, trained=10, seed=0, **rule):
    h = History()
    h.epochs = [dict(train_time_s=t, test_accuracy=a, flops_spent=flops * t / curve[-1][0]) for t, a in curve]
    summary = Summary.from_dict(dict(
        strategy=name, seed=seed, epochs=len(curve), test_accuracy=curve[-1][1], train_time_s=curve[-1][0],
        flops_spent=flops, samples_trained=trained, samples_scored=0, energy_j=1.0, energy_kind="estimate",
        samples_per_s=trained / curve[-1][0], flops_per_s=flops / curve[-1][0], warmup_epochs=0, cooldown_epochs=0,
        target_rate=0.3, budget="epochs 1", eval_time_s=0.0, mean_activation_rate_after_warmup=0.3,
        flops_saved_pct=0.0, flops_full=flops, samples_seen=trained, steps=1, model_params=1,
        skipped_nonfinite_updates=0, **rule))
    return Result(summary, h)


def test_comparison_table_ratios_and_accuracy_at_random_time():
    results = [_result("full", [(50, 0.7), (100, 0.8)], flops=1000), _result("random", [(10, 0.5), (20, 0.6)]),
               _result("sundew", [(15, 0.55), (40, 0.7)], flops=400)]
    rows = {r["strategy"]: r for r in report.comparison_table(results)}
    assert rows["full"]["speedup_vs_full"] == 1.0 and rows["sundew"]["flops_ratio_vs_full"] == pytest.approx(0.4)
    assert rows["sundew"]["speedup_vs_full"] == pytest.approx(2.5)
    assert rows["sundew"]["at_random_time"] == 0.55 and rows["full"]["at_random_time"] is None
    assert report.headline_at(results[1].history, 20) == 0.6
    assert not {"proxy_flops", "reference_time_s"} & set(rows["sundew"])


def test_comparison_rows_keep_what_a_strategys_own_model_cost():
    proxy = _result("proxy", [(10, 0.5)], flops=300, proxy_flops=120)
    rho = _result("rho_loss", [(10, 0.5)], flops=300, reference_time_s=2.5, reference_accuracy=0.6)
    rows = {r["strategy"]: r for r in report.comparison_table([_result("full", [(10, 0.5)]), proxy, rho])}
    assert rows["proxy"]["proxy_flops"] == 120 and "reference_time_s" not in rows["proxy"]
    assert (rows["rho_loss"]["reference_time_s"], rows["rho_loss"]["reference_accuracy"]) == (2.5, 0.6)


def _seeded(acc_by_strategy):
    return [_result(name, [(50, 0.5), (100, acc)], seed=seed)
            for name, accs in acc_by_strategy.items() for seed, acc in enumerate(accs)]


def test_equal_time_pairs_the_best_selective_strategy_with_the_better_baseline():
    results = _seeded({"full": [0.80, 0.81, 0.79], "random": [0.78, 0.79, 0.77],
                       "stale": [0.82, 0.83, 0.81], "sundew": [0.70, 0.71, 0.72]})
    r = savings.equal_time(report.comparison_table(results))
    assert r["best"] == "stale" and r["baseline"] == "full" and r["seeds"] == 3
    assert r["diff_pp"] == pytest.approx(2.0)
    assert r["ci95"][0] == pytest.approx(2.0) and r["ci95"][1] == pytest.approx(2.0)  # the same +2 in every seed
    assert len(r["rows"]) == 12 and "above 0" in r["words"]
    noisy = savings.equal_time(report.comparison_table(_seeded({"random": [0.80, 0.80], "stale": [0.79, 0.82]})))
    assert noisy["baseline"] == "random" and noisy["ci95"][0] < 0 < noisy["ci95"][1]
    assert "not distinguishable" in noisy["words"]


def test_a_baseline_with_its_own_cooldown_is_a_baseline_not_the_best_selective_strategy():
    results = _seeded({"full": [0.80, 0.81], "random:cooldown=8": [0.83, 0.84], "stale:cooldown=8": [0.82, 0.83]})
    rows = report.comparison_table(results)
    r = savings.equal_time(rows)
    assert r["best"] == "stale:cooldown=8" and r["baseline"] == "random:cooldown=8"
    assert r["diff_pp"] == pytest.approx(-1.0)
    paired = {(p["strategy"], p["baseline"]) for p in report.paired_against_baselines(rows)}
    assert paired == {("stale:cooldown=8", "full"), ("stale:cooldown=8", "random:cooldown=8")}
    assert set(savings.equal_accuracy(results)["strategies"]) == {"stale:cooldown=8"}


def test_equal_accuracy_is_the_time_to_full_s_final_accuracy_over_full_s_time():
    results = [_result("full", [(50, 0.70), (100, 0.80)], seed=0), _result("full", [(50, 0.70), (100, 0.80)], seed=1),
               _result("stale", [(40, 0.81), (100, 0.85)], seed=0), _result("stale", [(60, 0.80), (100, 0.84)], seed=1),
               _result("sundew", [(100, 0.75)], seed=0), _result("sundew", [(100, 0.82)], seed=1)]
    r = savings.equal_accuracy(results)
    assert r["best"] == "stale" and r["time_ratio"] == pytest.approx(0.5) and r["reached_in"] == "2 of 2 seeds"
    assert r["flop_ratio"] == pytest.approx(0.5)  # FLOPs executed by then (here in proportion to time)
    assert r["strategies"]["sundew"]["time_ratio"] is None  # missed it in one seed: no ratio claimed
    assert r["strategies"]["sundew"]["reached_in"] == "1 of 2 seeds"


def test_savings_benchmark_writes_both_questions_for_each_budget(tmp_path, monkeypatch, capsys, step_clock):
    from test_cli import _image_folder

    monkeypatch.chdir(tmp_path)
    data = _image_folder(tmp_path / "images")
    code = savings.main(["--data", str(data), "--seeds", "0,1", "--budget-epochs", "1,2", "--strategies",
                         "full,random,stale", "--target-rate", "0.25", "--batch-size", "16", "--eval-points", "2",
                         "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--json", str(tmp_path / "s.json")])
    assert code == 0
    out = capsys.readouterr().out
    assert "short budget" in out and "long budget" in out and "equal time: stale minus" in out
    result = json.loads((tmp_path / "s.json").read_text())
    for key in ("best", "baseline", "diff_pp", "ci95", "seeds", "rows"):
        assert key in result["equal_time"], key
    for key in ("best", "baseline", "time_ratio", "ci95", "seeds", "rows"):
        assert key in result["equal_accuracy"], key
    assert set(result["by_budget"]) == {"short", "long"} and result["equal_time"]["seeds"] == 2
    assert result["device"] == "cpu" and "device cpu" in out  # a reader can tell which device gave the figures
    assert "6 runs per budget (3 strategies x 2 seeds)" in out  # the duration is announced before the runs
    rows = result["equal_time"]["rows"]
    assert sorted((r["strategy"], r["seed"]) for r in rows) == sorted(
        (s, seed) for s in ("full", "random", "stale") for seed in (0, 1))
    long_s = result["by_budget"]["long"]["budget_s"]
    # every run trained for the budget (the first step boundary past it), full data included
    assert all(long_s <= r["train_time_s"] < long_s + 1.0 for r in rows)
    assert all(r["train_time_s"] < long_s + step_clock.tick + 1e-3 for r in rows)  # a step is a tick
    assert (tmp_path / "s-short.png").is_file() and (tmp_path / "s-long.png").is_file()
    assert result["code"] == provenance.git_state()  # the commit the figures came from, when a checkout


def test_a_stopped_savings_benchmark_resumes_with_its_first_budgets_and_finished_runs(tmp_path, monkeypatch, capsys,
        step_clock):
    """Stopped in its long budget (after some checkpoints), the benchmark continues with --resume: the short
    budget's runs are read back as they finished, the long ones continue from their checkpoints to the budget
    probed at the start, and the JSON lists both parts. Other flags, or nothing to resume, are refused."""
    from test_cli import _image_folder

    from functional_ast.edges import callbacks

    monkeypatch.chdir(tmp_path)
    data = _image_folder(tmp_path / "images")
    flags = ["--data", str(data), "--seeds", "0,1", "--budget-epochs", "1,2", "--strategies", "full,stale",
             "--target-rate", "0.25", "--batch-size", "16", "--eval-points", "3",
             "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--json", str(tmp_path / "s.json")]
    assert savings.main(flags + ["--resume"]) == 2
    assert "--resume: no benchmark to resume" in capsys.readouterr().err

    first, compare, save = {}, savings_run.tracked_compare, callbacks.Checkpoints.on_safe_point
    saves = []

    def stop_in_the_long_budget(self, run):
        save(self, run)
        if first.get("short") is not None:
            saves.append(run.name)
            if len(saves) > 4:  # the long budget's runs have checkpoints: stopped as a machine handed back
                raise KeyboardInterrupt

    def remember(build, data, configs, name, *args, **kwargs):
        label = "long" if name.endswith("long") else "short"
        compared = compare(build, data, configs, name, *args, **kwargs)
        first[label] = compared.results
        return compared

    monkeypatch.setattr(callbacks.Checkpoints, "on_safe_point", stop_in_the_long_budget)
    monkeypatch.setattr(savings_run, "tracked_compare", remember)
    with pytest.raises(KeyboardInterrupt):
        savings.main(flags)
    assert "long" not in first and not (tmp_path / "s.json").exists()
    monkeypatch.setattr(callbacks.Checkpoints, "on_safe_point", save)
    monkeypatch.setattr(savings_run, "tracked_compare", compare)

    assert savings.main(flags[:3] + ["0"] + flags[4:] + ["--resume"]) == 2
    assert "started with other flags (seeds: [0, 1] then, [0] now)" in capsys.readouterr().err
    assert savings.main(flags + ["--resume"]) == 0
    out = capsys.readouterr().out
    assert "resuming the benchmark started" in out and "resuming from" in out  # the long runs from checkpoints
    result = json.loads((tmp_path / "s.json").read_text())
    assert len(result["parts"]) == 2
    short = {(r["strategy"], r["seed"]): r for r in result["by_budget"]["short"]["equal_time"]["rows"]}
    for r in first["short"]:  # read back, not trained again
        assert short[r.summary["strategy"], r.summary["seed"]]["test_accuracy"] == r.summary["test_accuracy"]
        assert short[r.summary["strategy"], r.summary["seed"]]["train_time_s"] == r.summary["train_time_s"]
    long_s = result["by_budget"]["long"]["budget_s"]
    assert long_s == pytest.approx(2 * result["full_epoch_s"])
    assert sorted((r["strategy"], r["seed"]) for r in result["by_budget"]["long"]["equal_time"]["rows"]) == sorted(
        (s, seed) for s in ("full", "stale") for seed in (0, 1))
    assert all(long_s <= r["train_time_s"] < long_s + 1.0 for r in result["by_budget"]["long"]["equal_time"]["rows"])
    assert all(r["train_time_s"] < long_s + step_clock.tick + 1e-3
               for r in result["by_budget"]["long"]["equal_time"]["rows"])


def test_a_savings_benchmark_adds_seeds_on_another_machine_from_its_json_files_alone(tmp_path, monkeypatch, capsys,
        step_clock):
    """Run with --seeds 0, then moved (only its .json files, a new run store) and resumed with --seeds 0,1:
    seed 0 is read back as it finished, seed 1 trains to the same budget; dropping a seed is refused."""
    import shutil

    from PIL import Image
    from test_cli import CLASSES, _image_folder

    from functional_ast import ConfigError

    monkeypatch.chdir(tmp_path)
    data = _image_folder(tmp_path / "images")
    flags = ["--data", str(data), "--budget-epochs", "1", "--strategies", "full,stale", "--target-rate", "0.25",
             "--batch-size", "16", "--eval-points", "2", "--json", str(tmp_path / "s.json"),
             "--classes", ",".join(CLASSES)]  # a flag parsed to a tuple, read back from JSON as a list: the same
    first = tmp_path / "first"
    assert savings.main(flags + ["--seeds", "0", "--checkpoint-dir", str(first),
                                 "--tracking-uri", f"sqlite:///{tmp_path}/one.db"]) == 0
    before = json.loads((tmp_path / "s.json").read_text())
    moved = tmp_path / "moved"
    for path in first.rglob("*.json"):  # what a part needs to continue elsewhere: no checkpoints
        (moved / path.relative_to(first)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, moved / path.relative_to(first))
    # the figures drawn again from the runs' JSON files alone, no training
    (tmp_path / "s-1-epochs.png").unlink()
    assert savings_run.redraw(tmp_path / "s.json", moved) == [tmp_path / "s-1-epochs.png"]
    with Image.open(tmp_path / "s-1-epochs.png") as figure:
        assert figure.mode == "P" and figure.size[0] > 500
    with pytest.raises(ConfigError, match="no finished run savings-1-epochs/.*/full-seed0"):
        savings_run.redraw(tmp_path / "s.json", tmp_path / "elsewhere")
    elsewhere = flags + ["--checkpoint-dir", str(moved), "--tracking-uri", f"sqlite:///{tmp_path}/two.db", "--resume"]
    capsys.readouterr()
    assert savings.main(elsewhere + ["--seeds", "0,1"]) == 0
    out = capsys.readouterr().out
    assert "adding seeds [1] to the benchmark's [0]" in out
    # the time estimate names this part's share: 2 strategies x 1 added seed x a 1-epoch budget
    assert f"({2 * before['full_epoch_s'] / 60:.0f} min for the seeds added now)" in out
    after = json.loads((tmp_path / "s.json").read_text())
    rows = {(r["strategy"], r["seed"]): r for r in after["equal_time"]["rows"]}
    assert sorted(rows) == [("full", 0), ("full", 1), ("stale", 0), ("stale", 1)]
    for r in before["equal_time"]["rows"]:  # read back, not trained again
        assert rows[r["strategy"], 0]["test_accuracy"] == r["test_accuracy"]
        assert rows[r["strategy"], 0]["train_time_s"] == r["train_time_s"]
    budget = after["by_budget"]["1-epochs"]["budget_s"]
    assert budget == before["by_budget"]["1-epochs"]["budget_s"]  # the budget as first probed
    assert all(budget <= rows[s, 1]["train_time_s"] < budget + 1.0 for s in ("full", "stale"))
    assert all(rows[s, 1]["train_time_s"] < budget + step_clock.tick + 1e-3 for s in ("full", "stale"))
    assert after["equal_time"]["seeds"] == 2 and len(after["parts"]) == 2
    # the comparison's parent run continued as a new run of the new store, its table there
    from mlflow.tracking import MlflowClient

    parents = MlflowClient(f"sqlite:///{tmp_path}/two.db").search_runs(
        [MlflowClient(f"sqlite:///{tmp_path}/two.db").get_experiment_by_name("savings-benchmark").experiment_id],
        "attributes.run_name = 'savings-1-epochs'")
    assert len(parents) == 1 and any(m.startswith("stale/seed1/") for m in parents[0].data.metrics)
    assert savings.main(elsewhere + ["--seeds", "1"]) == 2
    assert "--seeds may add seeds, not drop them" in capsys.readouterr().err


def test_savings_benchmark_can_match_flops_instead_of_time(tmp_path, monkeypatch, capsys):
    from test_cli import _image_folder

    monkeypatch.chdir(tmp_path)
    data = _image_folder(tmp_path / "images")
    axes, bands = [], savings_run.plots.compare_bands
    monkeypatch.setattr(savings_run.plots, "compare_bands",
                        lambda runs, *a, **k: axes.append(a[:2]) or bands(runs, *a, **k))
    code = savings.main(["--data", str(data), "--seeds", "0,1", "--budget-epochs", "2", "--budget-kind", "flops",
                         "--strategies", "full,infobatch,stale:cooldown=2", "--target-rate", "0.25",
                         "--batch-size", "16",
                         "--eval-points", "2", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
                         "--json", str(tmp_path / "s.json")])
    assert code == 0
    assert "2-epochs budget" in capsys.readouterr().out
    result = json.loads((tmp_path / "s.json").read_text())
    entry = result["by_budget"]["2-epochs"]
    assert entry["budget_kind"] == "flops" and entry["budget"] == pytest.approx(2 * result["full_epoch_flops"])
    step_flops = result["full_epoch_flops"] / (96 // 16)  # 96 images in batches of 16
    # every run stops at the first step past the FLOP budget, full data and infobatch alike
    assert all(entry["budget"] <= r["flops_spent"] < entry["budget"] + 1.01 * step_flops
               for r in result["equal_time"]["rows"])
    assert "flop_ratio" in result["equal_accuracy"]
    assert axes[-1] == ("flops_spent", "training FLOPs executed")  # the benchmark's figure: x is what was matched
    # a variant is a row and an equal-accuracy entry of its own; its cool-down (2 of the 2 epochs' budget left
    # after the warm-up) means all data from the warm-up to the budget
    assert {r["strategy"] for r in result["equal_time"]["rows"]} == {"full", "infobatch", "stale:cooldown=2"}
    assert set(result["equal_accuracy"]["strategies"]) == {"infobatch", "stale:cooldown=2"}


def test_controller_targets_benchmark_runs_and_reports_each_target(tmp_path, monkeypatch, capsys):
    from test_cli import _image_folder

    from benchmarks import controller_targets

    monkeypatch.chdir(tmp_path)
    data = _image_folder(tmp_path / "images")
    code = controller_targets.main(["--data", str(data), "--targets", "0.25,0.5", "--epochs", "3", "--batch-size",
                                    "16", "--limit-test", "24", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
                                    "--json",
                                    str(tmp_path / "c.json")])
    rows = json.loads((tmp_path / "c.json").read_text())
    assert [r["target"] for r in rows] == [0.25, 0.5] and code in (0, 1)
    assert all(len(r["gated_epoch_rates"]) == 2 and 0 < r["gated_epoch_rates"][-1] <= 1 for r in rows)
    # one controller update per pool of batch/target samples: the higher target has smaller pools, more updates
    assert rows[1]["updates_per_gated_epoch"] > rows[0]["updates_per_gated_epoch"] > 0
    assert "| 0.25 |" in capsys.readouterr().out


@pytest.mark.parametrize("strategies", ["full,random:cooldown=2", "stale,stale:cooldown=2"])
def test_savings_benchmark_needs_a_baseline_and_a_selective_strategy(strategies, capsys):
    assert savings.main(["--data", "unused", "--strategies", strategies]) == 2
    assert "needs a baseline (full or random) and a selective strategy" in capsys.readouterr().err


def test_step_speed_refuses_fewer_samples_than_one_pool(tmp_path, capsys):
    from benchmarks import step_speed

    path = tmp_path / "speed.json"
    code = step_speed.main(["--batch-size", "512", "--samples", "4096", "--json", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not path.exists()
    assert len(err) == 1 and "--samples 5120 or more" in err[0]


def test_step_speed_keeps_its_throughput_figures_when_a_later_part_is_cut(tmp_path, monkeypatch):
    from benchmarks import step_speed

    def cut(*args, **kwargs):  # as a call's time limit or a profiler crash would, after the figures print
        raise RuntimeError("cut during the profile breakdown")

    monkeypatch.setattr(step_speed, "breakdown", cut)
    path = tmp_path / "speed.json"
    with pytest.raises(RuntimeError, match="cut"):
        step_speed.main(["--no-compile", "--steps", "1", "--repeats", "1", "--batch-size", "16", "--samples", "320",
                         "--json", str(path)])
    result = json.loads(path.read_text())
    assert {"plain_eager", "functional_eager", "random", "stale"} <= set(result["images_per_s"])
    assert result["ratios"]["functional_eager/plain_eager"] > 0 and "breakdown" not in result


def test_precision_speed_benchmark_prints_the_ratio_to_float32(tmp_path, capsys):
    from benchmarks import precision_speed

    out = tmp_path / "p.json"
    assert precision_speed.main(["--batch-size", "4", "--steps", "1", "--repeats", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "bf16-mixed/32 = " in printed and "interleaved" in printed
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"32", "bf16-mixed"} and results["32"]["ratio"] == 1.0 and results["bf16-mixed"]["ratio"] > 0


def test_lm_speed_prints_the_tokens_per_second_ratio_and_its_parts(tmp_path, capsys):
    from benchmarks import lm_speed

    out = tmp_path / "lm.json"
    assert lm_speed.main(["--depth", "1", "--width", "16", "--heads", "2", "--context", "8", "--batch-size", "2",
                          "--steps", "1", "--repeats", "2", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "functional_eager/plain_eager = " in printed and "tokens/s" in printed
    result = json.loads(out.read_text())
    assert set(result["tokens_per_s"]) == {"plain_eager", "functional_eager"}
    r = result["ratios"]["functional_eager/plain_eager"]
    assert r["ratio"] > 0 and r["spread"][0] <= r["ratio"] <= r["spread"][1] and len(r["tokens_per_s"]) == 2
    assert result["model"]["context"] == 8 and result["repeats"] == 2
    assert result["max_param_difference"] < 1e-4  # the same model, optimiser and batches: the same weights
    assert {"fa::grad", "fa::optimizer", "fa::guard"} <= set(result["breakdown"]["functional_eager"])
    assert {"plain::forward_backward", "plain::optimizer"} <= set(result["breakdown"]["plain_eager"])


def test_a_resume_may_add_seeds_and_continue_a_benchmark_started_before_the_text_flags():
    old = dict(data="c10", quick=True, seeds=[0], budget_kind="time", eval_points=12)  # an image plan, pre --task
    now = dict(old, seeds=[0, 1], task="images", warmup_epochs=1, cooldown_epochs=1, context=None, rho1_keep=None)
    before = savings_command.BEFORE_THEY_EXISTED
    assert savings_run.differences(old, now, before) == []
    assert savings_run.differences(old, dict(now, task="lm"), before) == ["task: 'images' then, 'lm' now"]
    assert savings_run.differences(dict(old, seeds=[0, 1]), dict(now, seeds=[0]), before) == \
        ["seeds: [0, 1] then, [0] now"]


def _bpb_result(name, curve, seed=0, flops=100):
    """A text run: `curve` is (train time, bits per byte) at each evaluation."""
    import math

    h = History()
    h.epochs = [dict(train_time_s=t, test_accuracy=0.5, test_loss=b * math.log(2), flops_spent=flops * t / curve[-1][0])
                for t, b in curve]
    from functional_ast.tasks import language_modelling

    summary = Summary.from_dict(dict(
        strategy=name, seed=seed, epochs=len(curve), test_accuracy=0.5, test_bits_per_byte=curve[-1][1],
        train_time_s=curve[-1][0], flops_spent=flops, samples_trained=10, samples_scored=0, energy_j=1.0,
        energy_kind="estimate", samples_per_s=1.0, flops_per_s=1.0, warmup_epochs=0, cooldown_epochs=0,
        target_rate=0.3, budget="epochs 1", eval_time_s=0.0, mean_activation_rate_after_warmup=0.3,
        flops_saved_pct=0.0, flops_full=flops, samples_seen=10, steps=1, model_params=1, skipped_nonfinite_updates=0),
        language_modelling())
    return Result(summary, h)


def test_on_text_lower_bits_per_byte_is_better_in_both_questions():
    from functional_ast.tasks import language_modelling

    bpb = savings.metric_of(language_modelling())
    assert bpb.key == "test_bits_per_byte" and not bpb.higher_is_better
    results = [_bpb_result(name, [(50, b + 0.5), (100, b)], seed=seed)
               for name, bs in {"full": [2.0, 2.1], "random": [2.4, 2.5], "small_loss": [1.8, 1.9],
                                "sundew_remembered": [2.6, 2.7]}.items() for seed, b in enumerate(bs)]
    r = savings.equal_time(questions.rows_with_metric(results, bpb), bpb)
    assert (r["best"], r["baseline"]) == ("small_loss", "full")  # the lowest of each side, not the highest
    assert r["diff"] == pytest.approx(-0.2) and r["unit"] == "bits per byte" and "diff_pp" not in r
    a = savings.equal_accuracy(results, bpb)
    assert a["strategies"]["small_loss"]["time_ratio"] == pytest.approx(1.0)  # 2.3 at 50 s is above full's 2.0
    assert a["strategies"]["small_loss"]["reached_in"] == "2 of 2 seeds"
    assert a["strategies"]["sundew_remembered"]["time_ratio"] is None  # 2.6 at the end: never down to 2.0
    early = [_bpb_result("full", [(50, 2.5), (100, 2.0)]), _bpb_result("stale", [(30, 1.9), (100, 1.5)])]
    e = savings.equal_accuracy(early, bpb)
    assert e["best"] == "stale" and e["time_ratio"] == pytest.approx(0.3)
    assert savings.time_to_reach(early[1].history, 1.95, bpb) == 30
    assert savings.time_to_reach(early[1].history, 1.0, bpb) is None  # never that low


def _corpus(folder, files=6, size=900):
    import random

    folder.mkdir()
    rng = random.Random(0)
    words = ["def", "return", "self", "import", "class", "None", "for", "in", "if", "else", "x", "y", "(", ")", ":"]
    for i in range(files):
        (folder / f"m{i}.py").write_text(" ".join(rng.choice(words) for _ in range(size // 4))[:size])
    return folder


def test_savings_on_text_writes_both_questions_per_budget_lower_bpb_better(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = _corpus(tmp_path / "text")
    # budgets in FLOPs: the same work whatever the machine's load (a time probe in a slow spell would lengthen it)
    flags = ["--task", "lm", "--data", str(data), "--seeds", "0,1", "--budget-epochs", "2,3", "--budget-kind", "flops",
             "--strategies", "full,random,small_loss,sundew_remembered", "--context", "8", "--depth", "1",
             "--width", "16", "--heads", "2", "--batch-size", "16", "--eval-points", "2",
             "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--json", str(tmp_path / "t.json")]
    assert savings.main(flags) == 0
    out = capsys.readouterr().out
    assert "12 runs per budget (6 strategies (with Rho-1 selective LM at keep 0.6, its reference paid and free) x 2 " \
        "seeds)" in out
    assert "held-out bits per byte (lower is better)" in out and "rho1:keep=0.6" in out and "rho1-free:keep=0.6" in out
    result = json.loads((tmp_path / "t.json").read_text())
    assert result["task"] == "lm" and result["metric"] == "bits_per_byte" and result["higher_is_better"] is False
    assert set(result["by_budget"]) == {"short", "long"} and "equal_metric" in result
    for label, entry in result["by_budget"].items():
        t, m = entry["equal_time"], entry["equal_metric"]
        assert t["seeds"] == 2 and t["higher_is_better"] is False and m["metric"] == "bits_per_byte"
        mean = {}
        for row in t["rows"]:
            mean.setdefault(row["strategy"], []).append(row["test_bits_per_byte"])
        mean = {k: sum(v) / len(v) for k, v in mean.items()}
        assert t["best"] == min(("small_loss", "sundew_remembered"), key=mean.get)  # lower bpb wins
        assert t["baseline"] == min(("full", "random"), key=mean.get)
        assert t["diff"] == pytest.approx(mean[t["best"]] - mean[t["baseline"]])
        for row in m["rows"]:
            assert row["goal_bits_per_byte"] == next(r["test_bits_per_byte"] for r in t["rows"]
                                                     if r["strategy"] == "full" and r["seed"] == row["seed"])
        s, free = entry["selective_lm"]["paid"], entry["selective_lm"]["free"]
        assert s["strategy"] == "rho1:keep=0.6" and s["seeds"] == 2 and len(s["rows"]) == 2
        assert all(r["flops_spent"] >= entry["budget"] for r in s["rows"])  # the reference's FLOPs counted in
        assert free["strategy"] == "rho1-free:keep=0.6" and not free["paid"] and len(free["rows"]) == 2
        # given free, the reference's FLOPs are not counted: the model trains the whole budget itself
        assert all(f["steps"] > p["steps"] for f, p in zip(free["rows"], s["rows"]))
        assert (tmp_path / f"t-{label}.png").is_file()
    assert result["text"]["train_files"] >= 1 and result["text"]["model"]["context"] == 8

    assert savings.main(flags + ["--resume"]) == 0  # everything finished: read back, Rho-1's runs included
    assert "savings-long-rho1-seed1: the run in" in capsys.readouterr().out
    again = json.loads((tmp_path / "t.json").read_text())
    assert len(again["parts"]) == 2
    for label in ("short", "long"):
        for how in ("paid", "free"):
            assert (again["by_budget"][label]["selective_lm"][how]["rows"]
                    == result["by_budget"][label]["selective_lm"][how]["rows"])
        assert again["by_budget"][label]["equal_time"]["rows"] == result["by_budget"][label]["equal_time"]["rows"]


def test_adapter_overhead_quick_mode_runs_and_prints_each_variant_against_plain(capsys, tmp_path):
    """Smoke only: the figures of a --quick run on a shared machine mean nothing, so none is asserted; the JSON
    holds what the table printed."""
    import torch

    from benchmarks import adapter_overhead

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a smoke run on a shared machine: no threads waiting for each other
    try:
        assert adapter_overhead.main(["--quick", "--json", str(tmp_path / "o.json")]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "--quick: not a measurement" in out and "load average" in out
    assert all(f"| {name} |" in out for name in adapter_overhead.VARIANTS)
    written = json.loads((tmp_path / "o.json").read_text())
    assert written["quick"] and set(written["variants"]) == set(adapter_overhead.VARIANTS)
    for name, row in written["variants"].items():
        assert f"| {name} | {row['median_s']:.3f} | {row['throughput_vs_plain']:.3f}x (" in out
        assert min(row["paired"]) <= row["throughput_vs_plain"] <= max(row["paired"])
        assert len(row["epoch_s"]) == 2
