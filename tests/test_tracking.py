"""Tracking never costs a run: an unreachable store buffers, saves beside the checkpoint, replays later."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient
from test_cli import _image_folder

from functional_ast.cli import main as cli
from functional_ast.cli import tracking as tracking_cli


def _flags(data, uri, ckpt, epochs=2):
    # --pool-size 16: gated steps select within each batch of 16, so every epoch has 96 / 16 = 6 steps
    return ["--data", str(data), "--strategy", "sundew", "--epochs", str(epochs), "--warmup-epochs", "1",
            "--cooldown-epochs", "0", "--batch-size", "16",
            "--pool-size", "16", "--target-rate", "0.25", "--checkpoint-every", "2", "--no-progress",
            "--tracking-uri", uri,
            "--experiment", "t", "--checkpoint-dir", str(ckpt)]


def test_an_unreachable_store_still_trains_and_saves_replayable_tracking_data(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = _image_folder(tmp_path / "images")
    with pytest.warns(UserWarning, match="unreachable"):
        code = cli.main(_flags(data, "http://127.0.0.1:9", tmp_path / "ckpt"))
    assert code == 0 and "summary" in capsys.readouterr().out
    (folder,) = (tmp_path / "ckpt").glob("*/*/tracking-unsent")
    steps = {json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["key"] == "loss"}
    assert steps == set(range(2 * 6))
    assert (folder / "artifacts" / "summary.json").is_file()

    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    assert tracking_cli.main(["replay", str(folder), "--tracking-uri", uri]) == 0
    assert not folder.exists()
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["strategy"] == "sundew"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == list(range(12))
    assert "summary.json" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_a_store_failing_mid_run_gets_every_metric_once_it_returns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = _image_folder(tmp_path / "images")
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    real_log_batch = MlflowClient.log_batch
    calls = {"n": 0}

    def flaky_log_batch(self, *args, **kwargs):
        calls["n"] += 1
        if 3 <= calls["n"] <= 6:  # the store goes away for a few checkpoints, then comes back
            raise ConnectionError("store down")
        return real_log_batch(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", flaky_log_batch)
    with pytest.warns(UserWarning, match="unreachable"):
        assert cli.main(_flags(data, uri, tmp_path / "ckpt", epochs=3)) == 0
    assert calls["n"] > 6
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == list(range(18))
    assert not list((tmp_path / "ckpt").glob("*/*/tracking-unsent"))


def test_replay_of_a_folder_that_is_not_one_fails_clearly(tmp_path, capsys):
    assert tracking_cli.main(["replay", str(tmp_path)]) == 1
    assert "not a tracking-unsent folder" in capsys.readouterr().err


def test_the_replay_command_the_warning_names_runs_as_a_module(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    from functional_ast.edges import replay

    assert f"{tracking_cli.PROG} replay" in (REPO / "functional_ast" / "edges" / "tracking.py").read_text()
    out = subprocess.run([sys.executable, "-m", "functional_ast.cli.tracking", "replay", str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 1 and "not a tracking-unsent folder" in out.stderr
    assert replay.replay.__module__ == "functional_ast.edges.replay"  # the library keeps the upload itself
