"""Nothing stray: each case a newcomer met (issue 37) runs in an empty working directory and leaves nothing there
but what it was asked to write; checks that can refuse run before any data is read."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig

import pytest
from conftest import REPO
from test_cli import _image_folder

from functional_ast.cli import main as cli


@pytest.fixture
def empty(tmp_path, monkeypatch):
    """An empty working directory, and the folder beside it where the test's inputs live."""
    work, inputs = tmp_path / "work", tmp_path / "inputs"
    work.mkdir()
    inputs.mkdir()
    monkeypatch.chdir(work)
    return work, inputs


def test_the_offline_download_error_leaves_no_data_folder(empty, monkeypatch, capsys):
    from experiments import cifar10

    work, _ = empty
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # no network, whatever this machine has
    assert cifar10.main(["--no-progress"]) == 2
    assert "CIFAR-10 not found" in capsys.readouterr().err
    assert list(work.iterdir()) == []


def test_a_refused_run_leaves_no_cache_and_no_store(empty, capsys):
    work, inputs = empty
    data = _image_folder(inputs / "images")
    assert cli.main(["--data", str(data), "--batch-size", "512", "--no-progress"]) == 2
    assert "larger than the training set" in capsys.readouterr().err
    assert list(work.iterdir()) == []


def test_the_readme_text_example_writes_nothing_where_it_runs(empty):
    work, _ = empty
    from functional_ast.data import text

    text.load_corpus(sysconfig.get_paths()["stdlib"] + "/json", "*.py")
    assert list(work.iterdir()) == []


def test_an_unwritable_checkpoint_dir_is_refused_before_any_data_is_read(empty, capsys, monkeypatch):
    work, inputs = empty
    data = _image_folder(inputs / "images")
    blocker = inputs / "file"
    blocker.write_text("not a directory")
    from functional_ast.cli import objects

    read = []
    monkeypatch.setattr(objects, "load_data", lambda args: read.append(args) or pytest.fail("data read"))
    code = cli.main(["--data", str(data), "--epochs", "1", "--batch-size", "16", "--no-progress",
                     "--tracking-uri", f"sqlite:///{inputs}/store/mlflow.db", "--checkpoint-dir", str(blocker / "c")])
    assert code == 2 and "cannot write checkpoints" in capsys.readouterr().err and not read
    assert list(work.iterdir()) == []


def test_resume_with_nothing_to_resume_is_refused_before_any_data_is_read(empty, capsys, monkeypatch):
    work, inputs = empty
    data = _image_folder(inputs / "images")
    from functional_ast.cli import main as cli_main

    monkeypatch.setattr(cli_main, "load_data", lambda args: pytest.fail("data read before the refusal"))
    code = cli.main(["--data", str(data), "--resume", "--no-progress",
                     "--tracking-uri", f"sqlite:///{inputs}/store/mlflow.db"])
    assert code == 2 and "no run named" in capsys.readouterr().err
    assert list(work.iterdir()) == []


def test_the_step_speed_benchmark_writes_no_file_unless_asked(empty, capsys, monkeypatch):
    work, _ = empty
    from benchmarks import step_speed

    # its slow parts (a memory probe per variant in a subprocess, a profile) stubbed: what is written is the point
    monkeypatch.setattr(step_speed, "peak_memory", lambda variant, args: {"peak_mb": 1.0, "kind": "stub"})
    monkeypatch.setattr(step_speed, "breakdown", lambda runner, steps: {"model_update": 0.5, "scoring_forward": 0.1,
                                                                        "of_update": {}})

    assert step_speed.main(["--quick", "--device", "cpu", "--samples", "320", "--batch-size", "32", "--repeats", "1",
                            "--steps", "1", "--no-compile"]) in (0, None)
    assert list(work.iterdir()) == []


def test_the_console_holds_the_programs_lines_not_mlflows_logs(empty):
    """A fresh interpreter, as a newcomer starts it: MLflow configures its loggers when first imported, after the
    program began, and creating a new store logs "Creating initial MLflow database tables..." at INFO."""
    work, inputs = empty
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_LOGGING_LEVEL"}
    done = subprocess.run([sys.executable, "-m", "functional_ast", "--data", str(_image_folder(inputs / "images")),
                           "--epochs", "1", "--warmup-epochs", "0", "--cooldown-epochs", "0", "--batch-size", "16",
                           "--no-progress"],
                          cwd=work, env=dict(env, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    console = done.stdout + done.stderr
    assert "summary" in console and "INFO" not in console and "database tables" not in console, console[-2000:]
