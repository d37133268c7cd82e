"""The default job: the measured form of the Sundew mechanism (remembered scores, 30% target, 1 warm-up and 1
cool-down epoch) for the time of 6 full-data epochs, measured on the machine and kept for a resume."""

from __future__ import annotations

import json

from test_cli import _client, _image_folder

from experiments import cifar10


def test_the_default_job_runs_the_measured_configuration_for_six_epochs_of_time(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data, uri = _image_folder(tmp_path / "images"), f"sqlite:///{tmp_path}/store/mlflow.db"
    argv = ["--data", str(data), "--batch-size", "16", "--tracking-uri", uri, "--no-progress", "--no-log-model",
            "--eval-every", "1000"]  # evaluated at the end only: this tiny set has many short epochs
    assert cifar10.main(argv) == 0
    out = capsys.readouterr().out
    assert "time budget 6 epochs = " in out
    client = _client(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("cifar10").experiment_id])
    params = run.data.params
    assert (params["strategy"], params["target_rate"], params["warmup_epochs"], params["cooldown_epochs"]) == (
        "sundew_remembered", "0.3", "1", "1")
    assert params["budget_epochs"] == "6.0" and float(params["time_budget"]) > 0
    (info,) = [json.loads(p.read_text()) for p in (tmp_path / "store").rglob("run.json")]
    assert info["budget_s"] == float(params["time_budget"])  # what a --resume trains to
    assert info["config"]["time_budget"] is None  # the flags compared on resume: not the machine's seconds
    assert run.data.metrics["final/train_time_s"] >= 0.9 * info["budget_s"]  # it trained for its budget


def test_an_end_of_training_the_user_gives_replaces_the_default_budget():
    for given in (["--epochs", "3"], ["--time-budget=30"], ["--flop-budget", "1e9"]):
        assert cifar10.build_parser(given).parse_args(given).budget_epochs is None, given
    assert cifar10.build_parser([]).parse_args([]).budget_epochs == 6.0
