"""Checkpoints and exact resume: atomic files, kept count, a SIGKILLed run resumed to identical results."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO, assert_tree_equal, tiny_bn_model
from test_cli import _image_folder

from functional_ast import strategies
from functional_ast.cli import main as cli
from functional_ast.core import optim
from functional_ast.core.step import init_state
from functional_ast.edges import checkpoint


def _state(num_samples=10):
    model = tiny_bn_model()
    strategy = strategies.build("stale", strategies.Context(num_samples, 0.3, 128))
    return init_state(model, optim.adam(1e-3), strategy, key=3)


def test_checkpoint_round_trip_keeps_every_leaf_and_batch_size(tmp_path):
    state = _state()
    path = checkpoint.save(tmp_path, state, {"note": "x"})
    loaded, meta = checkpoint.load(path)
    assert meta == {"note": "x"}
    assert_tree_equal(loaded, state)
    for key in state.keys(True):
        if hasattr(state[key], "batch_size"):
            assert loaded[key].batch_size == state[key].batch_size, key
    # Parameter names contain dots; they survive as keys.
    assert set(loaded["params"].keys()) == set(state["params"].keys())
    checkpoint.check_compatible(loaded, state, "x")


def test_save_keeps_the_newest_k_and_never_lists_temporary_files(tmp_path):
    state = _state()
    for step in range(5):
        checkpoint.save(tmp_path, state.set("step", torch.tensor(step)), {}, keep=2)
    (tmp_path / ".step-000000009.pt.tmp-123").write_bytes(b"half a checkpoint")  # a write cut by SIGKILL
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step-000000003.pt", "step-000000004.pt"]
    assert checkpoint.latest(tmp_path).name == "step-000000004.pt"


def test_corrupt_or_foreign_checkpoints_are_refused_with_a_clear_error(tmp_path):
    bad = tmp_path / "step-000000001.pt"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(checkpoint.CheckpointError, match="unreadable"):
        checkpoint.load(bad)
    torch.save({"something": torch.zeros(1)}, bad)
    with pytest.raises(checkpoint.CheckpointError, match="not a functional_ast checkpoint"):
        checkpoint.load(bad)


def test_a_state_of_another_configuration_is_refused(tmp_path):
    loaded, _ = checkpoint.load(checkpoint.save(tmp_path, _state(num_samples=10), {}))
    with pytest.raises(checkpoint.CheckpointError, match="shape/dtype differs"):
        checkpoint.check_compatible(loaded, _state(num_samples=12), "ckpt")


def test_unwritable_checkpoint_dir_is_a_clear_error_before_training(tmp_path, capsys):
    data = _image_folder(tmp_path / "images")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code = cli.main(["--data", str(data), "--epochs", "1", "--batch-size", "16", "--no-progress",
                         "--tracking-uri", f"sqlite:///{tmp_path}/store/mlflow.db",
                         "--checkpoint-dir", str(blocker / "ckpts")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write checkpoints" in err and "--checkpoint-dir" in err
    assert "Traceback" not in err


def _flags(data, uri, strategy, epochs):
    # Warm-up epochs: 96 / 16 = 6 steps; then pools of 32 (3 steps, 8 samples trained each).
    return ["--data", str(data), "--epochs", str(epochs), "--warmup-epochs", "1", "--cooldown-epochs", "0",
            "--batch-size", "16", "--pool-size", "32", "--strategy", strategy, "--target-rate", "0.25",
            "--checkpoint-every", "5", "--log-every", "3",
            "--no-progress", "--tracking-uri", uri, "--experiment", "resume", "--run-name", f"r-{strategy}"]


def _total_steps(epochs):
    return 6 + 3 * (epochs - 1)


def _final(folder):
    state, _ = checkpoint.load(checkpoint.latest(folder))
    return state, json.loads((folder / "result.json").read_text())


def _loss_by_step(client, run_id):
    return {m.step: m.value for m in client.get_metric_history(run_id, "loss")}


@pytest.mark.parametrize("strategy", ["sundew", "prioritized"])
def test_a_run_killed_with_sigkill_resumes_to_exactly_the_uninterrupted_result(tmp_path, monkeypatch, strategy):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    data = _image_folder(tmp_path / "images")
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    epochs = 16  # 51 steps, long enough to be killed part-way
    flags = _flags(data, uri, strategy, epochs)
    runs = tmp_path / "store" / "checkpoints" / "resume" / f"r-{strategy}"

    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "functional_ast", *flags], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        found = list(runs.glob("*/step-*.pt"))
        if any(int(p.stem.split("-")[1]) >= 30 for p in found):
            break
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed part-way, not finished
    (folder,) = runs.iterdir()
    assert not (folder / "result.json").exists()
    killed_at = int(checkpoint.latest(folder).stem.split("-")[1])
    assert killed_at < _total_steps(epochs)
    run_id = json.loads((folder / "run.json").read_text())["run_id"]

    # A resume that would change results is refused, and touches nothing.
    before = sorted(p.name for p in folder.iterdir())
    code = cli.main(flags + ["--resume", "--lr", "0.01"])
    assert code == 2 and sorted(p.name for p in folder.iterdir()) == before

    assert cli.main(flags + ["--resume"]) == 0
    assert cli.main(flags + ["--checkpoint-dir", str(tmp_path / "reference")]) == 0
    (reference,) = (tmp_path / "reference" / f"r-{strategy}").iterdir()

    resumed_state, resumed = _final(folder)
    reference_state, uninterrupted = _final(reference)
    # params, optimiser, selector, work, rng, loop position and per-step history: exact (the clock is wall time)
    assert_tree_equal(resumed_state.exclude("clock", ("history", "epochs")),
                      reference_state.exclude("clock", ("history", "epochs")))
    assert resumed["summary"]["test_accuracy"] == uninterrupted["summary"]["test_accuracy"]
    assert [e["test_accuracy"] for e in resumed["history"]["epochs"]] == \
        [e["test_accuracy"] for e in uninterrupted["history"]["epochs"]]

    # The same MLflow run continued: finished, every step logged once with the uninterrupted values.
    client = MlflowClient(tracking_uri=uri)
    assert resumed["summary"]["mlflow_run_id"] == run_id
    assert client.get_run(run_id).info.status == "FINISHED"
    losses = _loss_by_step(client, run_id)
    assert sorted(losses) == list(range(_total_steps(epochs)))
    assert losses == _loss_by_step(client, uninterrupted["summary"]["mlflow_run_id"])


def test_resume_without_a_run_and_resume_of_a_finished_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = _image_folder(tmp_path / "images")
    flags = _flags(data, f"sqlite:///{tmp_path}/store/mlflow.db", "random", 2)
    assert cli.main(flags + ["--resume"]) == 2
    assert "no run named 'r-random' to resume" in capsys.readouterr().err
    assert cli.main(flags) == 0
    assert cli.main(flags + ["--resume"]) == 0
    assert "already finished; nothing to resume" in capsys.readouterr().out


@pytest.mark.parametrize("interleave", [False, True])
def test_compare_killed_in_its_second_strategy_resumes_to_the_uninterrupted_table(tmp_path, monkeypatch, interleave):
    monkeypatch.chdir(tmp_path)
    data = _image_folder(tmp_path / "images")
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    flags = _flags(data, uri, "sundew", 12)[:-2] + ["--compare", "random,stale", "--run-name", "cmp"]
    if not interleave:
        flags.append("--no-interleave")
    runs = tmp_path / "store" / "checkpoints" / "resume" / "cmp"
    proc = subprocess.Popen([sys.executable, "-m", "functional_ast", *flags], cwd=tmp_path,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not list(runs.glob("*/stale/step-*.pt")):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    (folder,) = runs.iterdir()
    assert not (folder / "stale" / "result.json").exists()
    # One after another, the first strategy had finished; taking turns, it had not (both resume mid-run).
    assert (folder / "random" / "result.json").exists() == (not interleave)

    resumed = cli.compare_strategies(cli.build_parser().parse_args(flags + ["--resume"]))
    reference = cli.compare_strategies(cli.build_parser().parse_args(flags + ["--checkpoint-dir", str(tmp_path / "r")]))
    for a, b in zip(resumed, reference):
        assert a.summary["strategy"] == b.summary["strategy"]
        assert a.summary["test_accuracy"] == b.summary["test_accuracy"]
        assert a.summary["samples_trained"] == b.summary["samples_trained"]
    assert resumed[0].summary["mlflow_run_id"] != reference[0].summary["mlflow_run_id"]


def _small(data, uri):
    # 12 steps (a warm-up epoch of 6, two of 3); checkpoints at steps 5, 6, 9, 10 and 12, the newest 2 kept
    return ["--data", str(data), "--model", "benchmarks.kill_anywhere:tiny_net", "--strategy", "sundew_remembered",
            "--epochs", "3", "--warmup-epochs",
            "1", "--cooldown-epochs", "0", "--batch-size", "16", "--pool-size", "32", "--target-rate", "0.25",
            "--checkpoint-every", "5", "--keep-checkpoints", "2", "--no-progress", "--no-log-model",
            "--tracking-uri", uri, "--experiment", "disk", "--run-name", "d"]


def test_a_disk_full_mid_checkpoint_and_a_truncated_newest_checkpoint_lose_nothing(tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    flags = _small(_image_folder(tmp_path / "images"), uri)
    real_save, writes = torch.save, []

    def fills_up(obj, f, *args, **kwargs):  # the 4th checkpoint (step 10): part written, then the disk is full
        if os.path.basename(getattr(f, "name", "")).startswith(".step-"):
            writes.append(f.name)
            if len(writes) == 4:
                f.write(b"\0" * 100)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", fills_up)
    assert cli.main(flags) == 2
    monkeypatch.setattr(torch, "save", real_save)
    err = capsys.readouterr().err
    assert "No space left on device" in err and "--resume" in err and "Traceback" not in err
    (folder,) = (tmp_path / "store" / "checkpoints" / "disk" / "d").iterdir()
    assert [p.name for p in checkpoint.list_checkpoints(folder)] == ["step-000000006.pt", "step-000000009.pt"]
    assert not list(folder.glob(".step-*"))  # the part written is gone
    assert int(checkpoint.load(checkpoint.latest(folder))[0]["step"]) == 9

    newest = checkpoint.latest(folder)  # and the disk lost the newest one's tail
    newest.write_bytes(newest.read_bytes()[:1000])
    assert cli.main(flags + ["--resume"]) == 0
    assert "step-000000006.pt (passed over the unreadable step-000000009.pt)" in capsys.readouterr().out
    assert cli.main(flags + ["--checkpoint-dir", str(tmp_path / "reference")]) == 0
    (reference,) = (tmp_path / "reference" / "d").iterdir()

    (resumed_state, resumed), (reference_state, uninterrupted) = _final(folder), _final(reference)
    assert_tree_equal(resumed_state.exclude("clock", ("history", "epochs")),
                      reference_state.exclude("clock", ("history", "epochs")))
    assert resumed["summary"]["test_accuracy"] == uninterrupted["summary"]["test_accuracy"]
    client = MlflowClient(tracking_uri=uri)
    run_id = resumed["summary"]["mlflow_run_id"]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run_id, "loss")) == list(range(12))
    assert _loss_by_step(client, run_id) == _loss_by_step(client, uninterrupted["summary"]["mlflow_run_id"])


def test_a_resume_with_no_readable_checkpoint_says_so(tmp_path):
    from functional_ast.edges import runs

    (tmp_path / "step-000000005.pt").write_bytes(b"\0truncated")
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint in .* is readable"):
        runs.resume_state(tmp_path, {"run_id": "x"}, "cpu")
    assert runs.resume_state(tmp_path / "none", {"run_id": "x"}, "cpu") is None
