"""The command line's language modelling (--task lm): a tiny corpus through the CLI into an MLflow run, its bad
inputs (one line, exit code 2), Rho-1's selective LM, a comparison, and resume after SIGKILL, bit-exact."""

from __future__ import annotations

import builtins
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, assert_tree_equal
from test_text_data import _corpus_dir

from functional_ast.cli import main as cli
from functional_ast.data import text
from functional_ast.edges import checkpoint

TINY = ["--task", "lm", "--context", "16", "--gpt", "1x16x2", "--batch-size", "8", "--optimizer", "adam", "--lr",
        "3e-3", "--test-fraction", "0.34", "--target-rate", "0.5"]


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # ./data (the corpus cache) lands in the temp dir
    return _corpus_dir(tmp_path / "src", files=6, lines=12), f"sqlite:///{tmp_path}/store/mlflow.db"


def _client(uri):
    from mlflow.tracking import MlflowClient
    return MlflowClient(tracking_uri=uri)


def test_an_lm_run_reports_bits_per_byte_and_leaves_samples_and_a_model(corpus, capsys):
    src, uri = corpus
    code = cli.main(["--data", str(src), *TINY, "--epochs", "2", "--strategy", "sundew", "--tracking-uri", uri,
                     "--experiment", "lm", "--log-every", "2"])
    assert code == 0
    out = capsys.readouterr().out
    assert "epoch 2: test bits per byte" in out and "test acc" not in out
    assert "test bits per byte" in out.split("summary")[1]
    client = _client(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("lm").experiment_id])
    params = run.data.params
    assert run.info.status == "FINISHED" and params["task"] == "lm" and params["model"] == "gpt"
    assert params["data"] == "src" and params["context"] == "16" and params["gpt"] == "1x16x2"
    assert str(src.parent) not in " ".join(params.values())
    assert len(client.get_metric_history(run.info.run_id, "epoch/test_bits_per_byte")) == 2
    assert [a.path for a in client.list_artifacts(run.info.run_id, "samples")] == \
        ["samples/epoch-001.txt", "samples/epoch-002.txt"]
    assert run.outputs.model_outputs  # the logged byte language model


def test_rho1_selective_lm_runs_from_the_command_line(corpus, capsys):
    src, uri = corpus
    code = cli.main(["--data", str(src), *TINY, "--epochs", "1", "--strategy", "full", "--selective-lm", "0.5",
                     "--tracking-uri", uri, "--experiment", "lm", "--no-log-model", "--no-progress"])
    assert code == 0
    assert "full-gpt-rho1-0.5 epoch 1: test bits per byte" in capsys.readouterr().out


def test_a_budget_of_full_data_epochs_is_measured_on_the_language_model(corpus, capsys):
    src, uri = corpus
    code = cli.main(["--data", str(src), *TINY, "--budget-epochs", "1", "--strategy", "random", "--tracking-uri",
                     uri, "--experiment", "lm", "--no-log-model", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "one full-data epoch takes about" in out and "test bits per byte" in out


def test_an_lm_comparison_runs_every_entry(corpus):
    src, uri = corpus
    results = cli.compare_strategies(cli.build_parser().parse_args(
        ["--data", str(src), *TINY, "--epochs", "1", "--compare", "full,random", "--tracking-uri", uri,
         "--experiment", "lmc", "--no-log-model", "--no-progress"]))
    assert [r.summary["strategy"] for r in results] == ["full", "random"]
    assert all(r.summary["test_bits_per_byte"] > 0 for r in results)
    from functional_ast.report import tables

    rows = tables.comparison_table(results)
    assert [r["test_bits_per_byte"] for r in rows] == [r.summary["test_bits_per_byte"] for r in results]
    header, rule, *lines = tables.comparison_markdown(rows).splitlines()
    assert "| test bits/byte | next-byte acc |" in header and header.count("|") == rule.count("|")
    assert f"{results[0].summary['test_bits_per_byte']:.4f}" in lines[0]


def _bad_inputs(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    short = tmp_path / "short"
    short.mkdir()
    (short / "a.txt").write_text("tiny")
    (short / "b.txt").write_text("text")
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    locked = _corpus_dir(tmp_path / "locked", files=2)

    def locked_open(path, *args, **kwargs):  # root reads anything: refuse this one file as chmod 0 would
        if str(path).endswith("locked/mod0.py"):
            raise PermissionError(13, "Permission denied")
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(text, "open", locked_open, raising=False)
    return {"holds no text": ["--data", str(empty)], "shorter than one window": ["--data", str(short)],
            "is not text": ["--data", str(binary)], "cannot read": ["--data", str(locked)],
            "--data is required": []}


def test_bad_lm_input_gets_one_line_and_exit_code_2(corpus, tmp_path, monkeypatch, capsys):
    src, uri = corpus
    cases = _bad_inputs(tmp_path, monkeypatch)
    cases.update({
        "language model; use it with --task lm": ["--data", str(src), "--model", "gpt", "--task", "images"],
        "strategy proxy runs on images": ["--data", str(src), "--strategy", "proxy"],
        "--label-noise is for images": ["--data", str(src), "--label-noise", "0.1"],
        "--label-smoothing is for images": ["--data", str(src), "--label-smoothing", "0.1"],
        "drop --compare": ["--data", str(src), "--compare", "full,random", "--selective-lm", "0.5"],
        "is an image model": ["--data", str(src), "--model", "cnn"],
    })
    for expected, flags in cases.items():
        argv = [*TINY, *flags, "--tracking-uri", uri, "--experiment", "bad", "--no-progress"]
        if "--task" in flags:
            argv = [a for i, a in enumerate(argv) if not (a == "lm" and argv[i - 1] == "--task")]
            argv.remove("--task")
        code = cli.main(argv)
        err = capsys.readouterr().err
        assert code == 2, (expected, err)
        assert expected in err and err.count("\n") == 1 and "Traceback" not in err, (expected, err)


EPOCHS = 12


def _resume_flags(src, uri):
    return ["--data", str(src), *TINY, "--epochs", str(EPOCHS), "--strategy", "sundew", "--checkpoint-every", "5",
            "--log-every", "3", "--no-progress", "--no-log-model", "--tracking-uri", uri, "--experiment", "resume",
            "--run-name", "lm-r"]


def _final(folder):
    state, _ = checkpoint.load(checkpoint.latest(folder))
    return state, json.loads((folder / "result.json").read_text())


def test_an_lm_run_killed_with_sigkill_resumes_through_the_cli_to_exactly_the_uninterrupted_result(corpus, tmp_path):
    src, uri = corpus
    flags = _resume_flags(src, uri)
    runs = tmp_path / "store" / "checkpoints" / "resume" / "lm-r"
    proc = subprocess.Popen([sys.executable, "-m", "functional_ast", *flags], cwd=tmp_path,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while time.time() < deadline:
        if any(int(p.stem.split("-")[1]) >= 20 for p in runs.glob("*/step-*.pt")):
            break
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    (folder,) = runs.iterdir()
    assert not (folder / "result.json").exists()  # killed part-way
    assert cli.main(flags + ["--resume"]) == 0
    assert cli.main(flags + ["--checkpoint-dir", str(tmp_path / "reference")]) == 0
    (reference,) = (tmp_path / "reference" / "lm-r").iterdir()
    resumed_state, resumed = _final(folder)
    reference_state, uninterrupted = _final(reference)
    assert_tree_equal(resumed_state.exclude("clock", ("history", "epochs")),
                      reference_state.exclude("clock", ("history", "epochs")))
    assert resumed["summary"]["test_bits_per_byte"] == uninterrupted["summary"]["test_bits_per_byte"]
    assert [e["test_loss"] for e in resumed["history"]["epochs"]] == \
        [e["test_loss"] for e in uninterrupted["history"]["epochs"]]
