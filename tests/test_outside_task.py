"""A task defined outside the package, in one file (tabular regression: a per-sample squared error on tensors it
makes), runs through fit, compare, savings, the command line (--task package.module:task), MLflow (its metrics and
a loadable model) and resume, with no edit to the package."""

import subprocess
import sys
import textwrap

import pytest
import torch

TASK_FILE = '''
"""A tabular regression task of a user's: features "x" [B, 8], target "y" [B]; the loss is the squared error."""
import torch
from torch import nn

from functional_ast.core.task import Task
from functional_ast.data.tensors import TensorData


def inputs(batch):
    return batch["x"]


def targets(batch):
    return batch["y"]


def squared_error(outputs, y):
    return (outputs.squeeze(-1).float() - y) ** 2


def sums(outputs, y, losses):
    return dict(loss_sum=losses.sum(), count=torch.tensor(y.shape[0], device=y.device))


def metrics(s):
    return {"mse": s["loss_sum"] / s["count"], "loss": s["loss_sum"] / s["count"]}


def load(path, *, seed=0, device="cpu", limit_train=None, **options):
    g = torch.Generator().manual_seed(1234)  # the same data whatever the run's seed
    w = torch.randn(8, generator=g)
    x = torch.randn(320, 8, generator=g)
    y = x @ w + 0.1 * torch.randn(320, generator=g)
    n = limit_train or 256
    return TensorData.of({"x": x[:n], "y": y[:n]}, {"x": x[256:], "y": y[256:]}, device, name="tabular")


def build_model(spec, data, **options):
    return lambda: nn.Sequential(nn.Linear(data.sample_shape[0], 16), nn.ReLU(), nn.Linear(16, 1))


TASK = Task("tabular regression", inputs, targets, squared_error, lambda x: x.std(1), sums, metrics,
            kind="tabular", headline="mse", higher_is_better=False, columns=("mse", "loss"), load=load,
            build_model=build_model, default_model="mlp", data_help="anything (the task makes its data)")
'''


@pytest.fixture()
def tabular(tmp_path, monkeypatch):
    (tmp_path / "tabular_task.py").write_text(textwrap.dedent(TASK_FILE))
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    module = importlib.import_module("tabular_task")
    yield module
    sys.modules.pop("tabular_task", None)


def _config(**changes):
    import functional_ast as fa

    return fa.TrainConfig(**dict(dict(strategy="stale", epochs=3, batch_size=32, target_rate=0.5, optimizer="adam",
                                      lr=1e-2, warmup_epochs=1, cooldown_epochs=0), **changes))


def test_fit_and_compare_report_the_tasks_own_metric(tabular):
    import functional_ast as fa
    from functional_ast.report import tables

    task, data = tabular.TASK, tabular.load(None)
    build = tabular.build_model("mlp", data)
    result = fa.fit(build, data, None, _config(), task=task)
    s = result.summary
    assert s.headline == "mse" and s.higher_is_better is False and s.test_mse == s.result > 0
    assert "accuracy" not in s.test  # a regression has none, and none is made up
    with pytest.raises(AttributeError, match="no field 'test_accuracy'"):
        _ = s.test_accuracy
    first = result.history.epochs[0]["test_headline"]
    assert s.test_mse < first  # it learnt
    results = fa.compare(build, data, None, [_config(strategy="full"), _config()], task=task)
    rows = tables.comparison_table(results)
    assert [r["headline"] for r in rows] == ["mse", "mse"] and all(r["test_mse"] > 0 for r in rows)
    text = tables.comparison_markdown(rows)
    assert "| test mse |" in text.splitlines()[0]


def test_savings_answers_for_the_outside_task(tabular, tmp_path):
    import functional_ast as fa
    from functional_ast.edges.tracked import Tracking

    task, data = tabular.TASK, tabular.load(None)
    where = Tracking(uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="tab", checkpoint_dir=tmp_path / "ck",
                     log_model=False)
    report = fa.savings(tabular.build_model("mlp", data), data, task=task, rules=("full", "random", "stale"),
                        budgets=(3,), seeds=(0, 1, 2), budget_kind="flops",
                        config=_config(warmup_epochs=1, cooldown_epochs=0), where=where, eval_points=3,
                        json_path=tmp_path / "s.json", announce=None)
    (answer,) = report.answers
    assert report.metric == "mse" and not report.higher_is_better and answer.unit == "mse"
    assert answer.verdict in ("pays", "ties", "loses") and answer.best == "stale"
    assert (tmp_path / "s-3-epochs.png").is_file() and report.record["verdicts"] == {"3-epochs": answer.verdict}


def test_the_command_line_trains_logs_and_resumes_the_outside_task(tabular, tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {"PYTHONPATH": f"{tmp_path}:{sys.path[0]}", "PATH": "/usr/bin:/bin"}
    common = ["--task", "tabular_task:TASK", "--data", "unused", "--strategy", "stale", "--target-rate", "0.5",
              "--epochs", "3", "--batch-size", "32", "--optimizer", "adam", "--lr", "0.01", "--tracking-uri", uri,
              "--no-progress", "--checkpoint-dir", str(tmp_path / "ck"), "--run-name", "tab"]
    out = subprocess.run([sys.executable, "-m", "functional_ast", *common], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "test mse" in out.stdout
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("functional_ast").experiment_id])
    assert run.data.metrics["final/test_mse"] > 0 and "final/test_accuracy" not in run.data.metrics
    mlflow.set_tracking_uri(uri)
    (logged,) = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    model = mlflow.pytorch.load_model(f"models:/{logged.model_id}")
    assert model(torch.zeros(2, 8)).shape == (2, 1)
    again = subprocess.run([sys.executable, "-m", "functional_ast", *common, "--resume"], capture_output=True,
                           text=True, cwd=tmp_path, env=env, timeout=600)
    assert again.returncode == 0 and "already finished" in again.stdout
    savings = subprocess.run([sys.executable, "-m", "functional_ast", "savings", "--task", "tabular_task:TASK",
                              "--data", "unused", "--strategies", "full,stale", "--budget-epochs", "3", "--seeds",
                              "0", "--budget-kind", "flops", "--batch-size", "32", "--eval-points", "2",
                              "--warmup-epochs", "1", "--cooldown-epochs", "0", "--tracking-uri", uri, "--json",
                              str(tmp_path / "q.json")], capture_output=True, text=True, cwd=tmp_path, env=env,
                             timeout=600)
    assert savings.returncode == 0, savings.stderr
    assert "metric: held-out mse (lower is better)" in savings.stdout and "selection TOO FEW SEEDS" in savings.stdout


def test_a_stopped_outside_task_run_resumes_bit_identical(tabular, tmp_path):
    import functional_ast as fa
    from functional_ast.edges.tracked import Tracking, tracked_fit

    task, data = tabular.TASK, tabular.load(None)
    build = tabular.build_model("mlp", data)
    where = Tracking(uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="tab", checkpoint_dir=tmp_path / "ck",
                     log_model=False)
    whole = fa.fit(build, data, None, _config(), task=task)

    class Stop(fa.Callback):
        def on_epoch_end(self, run, record):
            if record["epoch"] == 2:
                raise KeyboardInterrupt

    from functional_ast.edges import tracked

    original = tracked._callbacks
    tracked._callbacks = lambda *a, **k: original(*a, **k) + [Stop()]
    try:
        with pytest.raises(KeyboardInterrupt):
            tracked_fit(build, data, _config(), "tab", where, task=task, progress=False)
    finally:
        tracked._callbacks = original
    resumed = tracked_fit(build, data, _config(), "tab", where, resume=True, task=task, progress=False).result
    for name, p in whole.state["params"].items():
        assert torch.equal(p, resumed.state["params"][name])
    assert resumed.summary.test_mse == whole.summary.test_mse
