"""The default job: the regime map's default rule (`infobatch`, 1 warm-up and 1 cool-down epoch on all data) for
the FLOPs of 6 full-data epochs: the same steps on a loaded machine as on a quiet one, its
budget kept for a resume, and a summary that says what ran."""

from __future__ import annotations

import json

from test_cli import _client, _image_folder

from experiments import cifar10


def _run(tmp_path, name: str):
    images = tmp_path / "images"
    data, uri = images if images.is_dir() else _image_folder(images), f"sqlite:///{tmp_path}/{name}/mlflow.db"
    argv = ["--data", str(data), "--batch-size", "16", "--tracking-uri", uri, "--no-progress", "--no-log-model",
            "--eval-every", "1000"]  # evaluated at the end only: this tiny set has many short epochs
    assert cifar10.main(argv) == 0
    client = _client(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("cifar10").experiment_id])
    (info,) = [json.loads(p.read_text()) for p in (tmp_path / name).rglob("run.json")]
    return run, info


def test_the_default_job_runs_the_measured_configuration_for_six_epochs_of_flops(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run, info = _run(tmp_path, "store")
    out = capsys.readouterr().out
    assert "budget 6 epochs = " in out and "FLOPs on any machine" in out
    assert "augmentation: random crop (4 px of zero padding) and horizontal flip (the image classification task's " \
        "default for this data)" in out  # said at the start, as the task's default
    params = run.data.params
    assert (params["strategy"], params["target_rate"], params["warmup_epochs"], params["cooldown_epochs"]) == (
        "infobatch", "0.3", "1", "1")
    assert params["budget_epochs"] == "6.0" and params["budget_kind"] == "flops" and float(params["flop_budget"]) > 0
    assert info["budget_flops"] == float(params["flop_budget"])  # what a --resume trains to
    assert info["config"]["flop_budget"] is None and info["config"]["time_budget"] is None  # flags, not the probe
    assert run.data.metrics["final/flops_spent_gflop"] * 1e9 >= info["budget_flops"]  # it trained for its budget
    summary = out.split("summary")[1]
    assert "epochs begun" in summary and "1 warm-up" in summary and "1 cool-down" in summary
    # infobatch picks its own share of each batch: no target is claimed for it, in the summary, the name or the notes
    assert "(the rule's own rate)" in summary and "(target " not in summary
    assert run.info.run_name == "infobatch-cnn" and "the rule's own rate" in run.data.tags["mlflow.note.content"]


def test_the_default_job_trains_the_same_steps_on_a_slow_machine(tmp_path, monkeypatch, step_clock):
    """Its length is in FLOPs: a machine ten times slower (each step a tenth of a second on the step clock) trains
    exactly the steps a fast one does."""
    monkeypatch.chdir(tmp_path)
    step_clock.tick = 0.001
    fast, _ = _run(tmp_path, "fast")
    step_clock.tick = 0.1
    slow, _ = _run(tmp_path, "slow")
    assert fast.data.metrics["final/steps"] == slow.data.metrics["final/steps"] > 0
    assert slow.data.metrics["final/train_time_s"] > 10 * fast.data.metrics["final/train_time_s"]


def test_an_end_of_training_the_user_gives_replaces_the_default_budget():
    for given in (["--epochs", "3"], ["--time-budget=30"], ["--flop-budget", "1e9"]):
        assert cifar10.build_parser(given).parse_args(given).budget_epochs is None, given
    assert cifar10.build_parser([]).parse_args([]).budget_epochs == 6.0
