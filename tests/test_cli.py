"""The program end to end: tiny synthetic data through the CLI into an MLflow run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, real_archive
from torchvision.io import write_png

from experiments import cifar10
from functional_ast.cli import main as cli
from functional_ast.edges import checkpoint

CLASSES = ("ant", "bee", "cat", "dog")


def _image_folder(root, per_class_train=24, per_class_test=6, size=8):
    g = torch.Generator().manual_seed(0)
    for split, count in (("train", per_class_train), ("test", per_class_test)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                img = (torch.rand(3, size, size, generator=g) * 80 + 40 * c).clamp(0, 255).to(torch.uint8)
                write_png(img, str(folder / f"{i}.png"))
    return root


@pytest.fixture
def synthetic(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # ./data and ./mlruns of the run land in the temp dir
    return _image_folder(tmp_path / "images"), f"sqlite:///{tmp_path}/store/mlflow.db"


def _client(uri):
    from mlflow.tracking import MlflowClient
    return MlflowClient(tracking_uri=uri)


def test_cli_creates_an_mlflow_run_with_params_curves_and_plots(synthetic, capsys):
    data, uri = synthetic
    code = cli.main(["--data", str(data), "--strategy", "sundew", "--epochs", "3", "--warmup-epochs", "1",
                     "--cooldown-epochs", "0", "--batch-size", "16", "--target-rate", "0.25", "--tracking-uri", uri,
                     "--experiment", "t", "--no-progress", "--log-every", "2"])
    assert code == 0
    out = capsys.readouterr().out
    assert "summary" in out and f"mlflow ui --backend-store-uri {uri}" in out
    client = _client(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["target_rate"] == "0.25" and params["strategy"] == "sundew" and params["warmup_epochs"] == "1"
    assert params["train_samples"] == "96" and params["classes"] == "4"
    # Warm-up: batches of 16 (6 steps); after it each step selects from a pool of 16 / 0.25 = 64 (1 step/epoch).
    steps_per_epoch, pools_per_epoch = 96 // 16, 96 // 64
    assert params["pool_size"] == "64"
    for key in ("loss", "activation_rate", "saved_pct", "n_trained"):
        assert len(client.get_metric_history(run.info.run_id, key)) == steps_per_epoch + 2 * pools_per_epoch, key
    # Gate metrics exist only after warm-up.
    assert len(client.get_metric_history(run.info.run_id, "threshold")) == 2 * pools_per_epoch
    warm = [m.value for m in client.get_metric_history(run.info.run_id, "activation_rate")][:steps_per_epoch]
    assert warm == [1.0] * steps_per_epoch
    trained = [m.value for m in client.get_metric_history(run.info.run_id, "n_trained")][steps_per_epoch:]
    assert all(4 <= n <= 32 for n in trained), trained  # about one batch (16) of the pool of 64
    assert len(client.get_metric_history(run.info.run_id, "epoch/test_accuracy")) == 3
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"rate_threshold.png", "flops_saved.png", "accuracy_vs_time.png", "config.json",
            "summary.json"} <= artifacts
    assert run.data.metrics["final/flops_saved_pct"] > 0  # 25% trained after warm-up saves FLOPs


def test_cooldown_epochs_train_on_all_data_at_the_end(synthetic):
    data, uri = synthetic
    summary = cli.train(cli.build_parser().parse_args([
        "--data", str(data), "--epochs", "4", "--warmup-epochs", "1", "--cooldown-epochs", "1", "--batch-size", "16",
        "--strategy", "stale", "--target-rate", "0.25", "--tracking-uri", uri, "--no-progress"]))
    client = _client(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("functional_ast").experiment_id])
    rates = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "epoch/epoch_activation_rate"),
                                     key=lambda m: m.step)]
    assert rates == [1.0, 0.25, 0.25, 1.0]  # warm-up, two pooled epochs (16 of 64), cool-down
    assert summary["cooldown_epochs"] == 1 and summary["mean_activation_rate_after_warmup"] == 0.25
    assert summary["samples_trained"] == 96 + 16 + 16 + 96


def test_cli_full_strategy_has_no_warmup_and_saves_nothing(synthetic):
    data, uri = synthetic
    assert cli.main(["--data", str(data), "--epochs", "1", "--strategy", "full", "--batch-size", "32",
                         "--tracking-uri", uri, "--no-progress"]) == 0
    client = _client(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("functional_ast").experiment_id])
    assert run.data.metrics["final/flops_saved_pct"] == 0.0
    assert run.data.metrics["final/mean_activation_rate_after_warmup"] == 1.0


@pytest.mark.parametrize("argv,flag", [
    (["--epochs", "-1"], "--epochs"),
    (["--epochs", "zero"], "--epochs"),
    (["--target-rate", "1.5"], "--target-rate"),
    (["--target-rate", "0"], "--target-rate"),
    (["--label-smoothing", "1"], "--label-smoothing"),
    (["--model", "alexnet"], "--model"),
    (["--strategy", "magic"], "--strategy"),
    (["--batch-size", "1"], "--batch-size"),
    (["--compare", "full,magic"], "--compare"),
    (["--compare", "stale:cool=8"], "--compare"),
    (["--compare", "stale:cooldown=x"], "--compare"),
])
def test_bad_flag_values_are_one_line_errors_with_exit_2(argv, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err and "Traceback" not in err


def test_missing_data_path_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["--data", str(tmp_path / "nope"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "nope" in err and "does not exist" in err


def test_offline_without_data_says_how_to_provide_it(tmp_path, monkeypatch, capsys):
    import torchvision

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading cifar-10-python.tar.gz: <urlopen error [Errno -3] no network>")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    monkeypatch.chdir(tmp_path)
    assert cifar10.main(["--no-progress"]) == 2  # the CIFAR-10 program downloads without --data
    err = capsys.readouterr().err
    assert "--data" in err and "Traceback" not in err
    assert cli.main(["--no-progress"]) == 2  # the generic command has nothing to download
    err = capsys.readouterr().err
    assert "--data is required" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("case", ["empty", "corrupt", "mismatched"])
def test_bad_data_is_one_message_exit_2_and_nothing_written(tmp_path, monkeypatch, capsys, case):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "images"
    if case == "empty":
        root.mkdir()
        expected = "no images"
    else:
        _image_folder(root)
        if case == "corrupt":
            (root / "train" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
            expected = "broken.jpg"
        else:
            (root / "test" / "cat").rename(root / "test" / "emu")
            expected = "emu"
    code = cli.main(["--data", str(root), "--no-progress", "--tracking-uri", f"sqlite:///{tmp_path}/s/db"])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()  # no run, no checkpoint folder for a run that never started


def test_batch_larger_than_data_is_named(synthetic, capsys):
    data, uri = synthetic
    assert cli.main(["--data", str(data), "--batch-size", "512", "--tracking-uri", uri, "--no-progress"]) == 2
    assert "--batch-size" in capsys.readouterr().err


def test_help_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "functional_ast", "--help"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    for flag in ("--data", "--epochs", "--warmup-epochs", "--batch-size", "--lr", "--target-rate", "--strategy",
                 "--model", "--device", "--compile", "--seed", "--limit-train", "--limit-test", "--tracking-uri",
                 "--experiment"):
        assert flag in out


def test_real_cifar10_archive_end_to_end(tmp_path, monkeypatch):
    archive = real_archive()
    if archive is None:
        pytest.skip("real CIFAR-10 archive not present: set FUNCTIONAL_AST_CIFAR_ARCHIVE to its .tar.gz (or put it at "
                    "../shared/data/cifar10-jpeg.tar.gz)")
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    summary = cli.train(cli.build_parser().parse_args([
        "--data", str(archive), "--limit-train", "640", "--limit-test", "200", "--epochs", "2", "--strategy", "sundew",
        "--warmup-epochs", "1", "--cooldown-epochs", "0", "--batch-size", "64", "--target-rate", "0.3",
        "--tracking-uri", uri, "--no-progress"]))
    pooled = (640 // round(64 / 0.3)) * round(64 / 0.3)  # epoch 2: whole pools of 213 (the rest dropped)
    assert summary["samples_seen"] == 640 + pooled
    assert summary["samples_trained"] < 640 + pooled and summary["samples_scored"] == pooled
    assert summary["mean_activation_rate_after_warmup"] == pytest.approx(0.3, abs=0.1)
    assert 0.0 <= summary["test_accuracy"] <= 1.0


def test_compare_produces_one_row_per_strategy_with_table_and_plots(synthetic, capsys):
    data, uri = synthetic
    names = ["full", "random", "sundew", "stale", "prioritized"]
    code = cli.main(["--data", str(data), "--epochs", "2", "--warmup-epochs", "1", "--cooldown-epochs", "0",
                     "--batch-size", "16", "--target-rate", "0.25", "--tracking-uri", uri, "--experiment", "cmp",
                     "--no-progress", "--compare", ",".join(names)])
    assert code == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| strategy")]
    assert [line.split("|")[1].strip() for line in table] == names
    client = _client(uri)
    runs = client.search_runs([client.get_experiment_by_name("cmp").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and sorted(r.data.params["strategy"] for r in children) == sorted(names)
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"comparison.md", "comparison.json", "compare_accuracy_vs_time.png", "compare_accuracy_vs_flops.png",
            "compare_rate_threshold.png"} <= artifacts
    metrics = parents[0].data.metrics
    assert metrics["full/flops_ratio_vs_full"] == 1.0
    assert metrics["random/flops_ratio_vs_full"] < metrics["sundew/flops_ratio_vs_full"] < 1.0
    assert metrics["stale/samples_scored"] == 0 and metrics["prioritized/samples_scored"] == 0
    # Every gated strategy trains exactly warm-up (all 96) + its rate of the second epoch's pool (0.25 x 64).
    for name in ("random", "stale", "prioritized"):
        assert metrics[f"{name}/samples_trained"] == 96 + 16, name


def test_compare_runs_variants_with_their_own_cooldown_side_by_side(synthetic):
    data, uri = synthetic
    results = cli.compare_strategies(cli.build_parser().parse_args([
        "--data", str(data), "--epochs", "3", "--warmup-epochs", "1", "--cooldown-epochs", "0", "--batch-size", "16",
        "--target-rate", "0.25", "--tracking-uri", uri, "--no-progress", "--compare", "full,random,random:cooldown=1"]))
    assert [r.summary["strategy"] for r in results] == ["full", "random", "random:cooldown=1"]
    client = _client(uri)  # MLflow accepts the variant's metric keys and run names (no ':' or '=' in them)
    runs = client.search_runs([client.get_experiment_by_name("functional_ast").experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.info.status == "FINISHED" and "random-cooldown1/samples_trained" in parent.data.metrics
    assert "random-cooldown1-cnn" in {r.info.run_name for r in runs}
    plain, tail = results[1], results[2]
    # 96 samples, pools of 64: random trains 96 (warm-up) + 16 + 16; its variant swaps the last epoch for all 96.
    assert [e["all_data"] for e in plain.history.epochs] == [1.0, 0.0, 0.0]
    assert [e["all_data"] for e in tail.history.epochs] == [1.0, 0.0, 1.0]
    assert plain.summary["samples_trained"] == 96 + 16 + 16 and tail.summary["samples_trained"] == 96 + 16 + 96
    assert cli.parse_variant("stale:warmup=2:cooldown=8") == ("stale", {"warmup_epochs": 2, "cooldown_epochs": 8})


def test_time_budget_stops_every_strategy_at_the_budget(synthetic, step_clock):
    data, uri = synthetic
    budget, step_clock.tick = 1.5, 0.03  # 50 steps a run
    results = cli.compare_strategies(cli.build_parser().parse_args([
        "--data", str(data), "--epochs", "3", "--batch-size", "16", "--target-rate", "0.25", "--tracking-uri", uri,
        "--no-progress", "--compare", "full,sundew", "--time-budget", str(budget)]))
    for r in results:
        # Training stops at the first step boundary past the budget: at most one step over.
        assert r.summary["train_time_s"] < budget + 1.0
        assert budget <= r.summary["train_time_s"] < budget + step_clock.tick + 1e-3  # a step is a tick
        assert r.summary["epochs"] >= 1


def test_diverging_run_stops_with_a_clear_error(synthetic, capsys):
    data, uri = synthetic
    with pytest.warns(UserWarning, match="non-finite"):
        code = cli.main(["--data", str(data), "--epochs", "3", "--strategy", "full", "--batch-size", "8",
                             "--lr", "1e30", "--tracking-uri", uri, "--no-progress", "--log-every", "1"])
    assert code == 1
    err = capsys.readouterr().err
    assert "non-finite updates in a row" in err and "--lr" in err
    saved = Path(err.split("The last good parameters are saved in ")[1].split()[0])
    state, _ = checkpoint.load(saved)
    assert all(bool(v.isfinite().all()) for v in state["params"].values())
    client = _client(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("functional_ast").experiment_id])
    assert run.info.status == "FAILED"


def test_airbench94_trains_from_the_command_line_whitened_on_the_training_images(tmp_path, monkeypatch, capsys):
    """`--model airbench94` builds its whitening from the normalised training images and trains; on images too
    small for it the run is refused in one line, exit 2, before anything trains."""
    from functional_ast.models.airbench import whitening_filters
    from functional_ast.tasks import images as images_task
    from functional_ast.train import prepare

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    small = cli.main(["--data", str(_image_folder(tmp_path / "small")), "--model", "airbench94", "--epochs", "1",
                      "--batch-size", "16", "--tracking-uri", uri, "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert small == 2 and len(err.splitlines()) == 1 and "--model airbench94 needs images of at least 16" in err
    folder = _image_folder(tmp_path / "images", size=16)
    data = prepare.load_data(str(folder))
    normalised = (data.train.data["image"].float() / 255 - data.mean.view(1, -1, 1, 1)) / data.std.view(1, -1, 1, 1)
    assert torch.equal(prepare.model_builder("airbench94", data)()[0].weight, whitening_filters(normalised))
    monkeypatch.setattr(images_task, "WHITENING_SAMPLES", 8)  # fewer than the set: spread through it, every class
    spread = torch.linspace(0, len(data.train) - 1, 8).round().long()
    assert set(data.train.data["label"][spread].tolist()) == set(range(len(CLASSES)))
    assert torch.equal(prepare.model_builder("airbench94", data)()[0].weight, whitening_filters(normalised[spread]))
    assert cli.main(["--data", str(folder), "--model", "airbench94", "--epochs", "4", "--strategy", "full",
                     "--lr", "1.0", "--batch-size", "16", "--tracking-uri", uri, "--no-progress"]) == 0
    client = _client(uri)
    runs = client.search_runs([client.get_experiment_by_name("functional_ast").experiment_id])
    (run,) = [r for r in runs if r.info.status == "FINISHED"]
    assert run.data.params["model"] == "airbench94" and run.data.metrics["final/test_accuracy"] >= 0.75


def test_label_smoothing_from_the_command_line_is_a_logged_setting_a_resume_must_match(synthetic, capsys):
    data, uri = synthetic
    flags = ["--data", str(data), "--epochs", "1", "--strategy", "full", "--batch-size", "16", "--tracking-uri", uri,
             "--no-progress", "--run-name", "smooth"]
    assert cli.main(flags + ["--label-smoothing", "0.2"]) == 0
    client = _client(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("functional_ast").experiment_id])
    assert run.data.params["label_smoothing"] == "0.2"
    capsys.readouterr()
    assert cli.main(flags + ["--resume"]) == 2  # started smoothed: plain cross-entropy is another run
    assert "label_smoothing: 0.2 then, 0.0 now" in capsys.readouterr().err
