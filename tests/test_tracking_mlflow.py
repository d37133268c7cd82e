"""RunTracker's MLflow 3 features: experiment kind tag, logged models, dataset inputs, system metrics."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import mlflow
import mlflow.pytorch
import pytest
import torch
from mlflow.tracking import MlflowClient
from tensordict import TensorDict
from torch import nn

from functional_ast.edges import datasets, replay, store, tracking

UNREACHABLE = "http://127.0.0.1:9"
KIND = {"mlflow.experimentKind": "custom_model_development"}


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    """One sqlite store for the module (creating its tables costs seconds); tests use their own experiments."""
    return f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db"


@pytest.fixture(autouse=True)
def _global_tracking_uri_untouched():
    before = mlflow.get_tracking_uri()
    yield
    mlflow.set_tracking_uri(before)


def _kind(client, name):
    tags = client.get_experiment_by_name(name).tags
    return {k: v for k, v in tags.items() if k == "mlflow.experimentKind"}


def test_new_and_existing_experiments_get_the_kind_tag(uri):
    client = MlflowClient(uri)
    with tracking.RunTracker(uri, "kind-new") as tracker:
        assert tracker.online
    assert _kind(client, "kind-new") == KIND

    client.create_experiment("kind-old")  # made by another tool, without the tag
    assert _kind(client, "kind-old") == {}
    with tracking.RunTracker(uri, "kind-old"):
        pass
    assert _kind(client, "kind-old") == KIND

    old = client.create_experiment("kind-resumed")
    run_id = client.create_run(old).info.run_id
    with tracking.RunTracker(uri, "ignored", run_id=run_id) as tracker:  # continuing a run of an untagged one
        assert tracker.run_id == run_id
    assert _kind(client, "kind-resumed") == KIND


def test_a_run_missing_from_the_store_continues_as_a_new_run(uri, tmp_path):
    """Checkpoints moved to a machine with another store: the run id they name is not there. The tracker says
    so and logs into a new run of that store (not buffered forever as if the store were down)."""
    elsewhere = f"sqlite:///{tmp_path}/elsewhere.db"
    gone = MlflowClient(elsewhere).create_run(MlflowClient(elsewhere).create_experiment("moved")).info.run_id
    with pytest.warns(UserWarning, match=f"MLflow run {gone} is not in the store"):
        tracker = tracking.RunTracker(uri, "moved-here", "again", run_id=gone)
    with tracker:
        tracker.log_metrics({"loss": 1.5}, step=3)
    assert tracker.online and tracker.run_id != gone
    run = MlflowClient(uri).get_run(tracker.run_id)
    assert run.data.metrics == {"loss": 1.5} and run.info.run_name == "again"


def _trained(model: nn.Module) -> TensorDict:
    """Params unlike the module's own: logging must take these, not the stale ones in the module."""
    return TensorDict({n: p.detach() * -2 + 0.5 for n, p in model.named_parameters()})


def test_log_model_round_trips_the_given_params(uri):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    params = _trained(model)
    shape = model.to("meta")  # the training code keeps only a meta-device skeleton
    x = torch.randn(5, 3, 2, 2)
    want = torch.func.functional_call(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)), dict(params.items()), (x,))
    with tracking.RunTracker(uri, "models") as tracker:
        model_uri = tracker.log_model(shape, params, TensorDict({}), x[:4])
        run_id = tracker.run_id
    assert model_uri is not None and model_uri.startswith("models:/")
    assert next(shape.parameters()).is_meta  # the caller's module is untouched

    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pytorch.load_model(model_uri)
    assert isinstance(loaded, torch.fx.GraphModule)  # saved as "pt2" (torch.export): no pickle
    torch.testing.assert_close(loaded(x), want)  # another batch size than the example's: batch dim is dynamic
    client = MlflowClient(uri)
    outputs = client.get_run(run_id).outputs.model_outputs
    assert [o.model_id for o in outputs] == [model_uri.split("/")[-1]]
    logged = client.get_logged_model(outputs[0].model_id)
    assert logged.source_run_id == run_id and str(logged.status) == "READY"
    assert logged.experiment_id == client.get_experiment_by_name("models").experiment_id


class _DataDependent(nn.Module):
    """torch.export cannot trace a branch on tensor values: logging falls back to pickle."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.register_buffer("scale", torch.ones(()))

    def forward(self, x):
        y = self.fc(x) * self.scale
        return y if y.sum() > 0 else -y


def test_log_model_falls_back_to_pickle_and_keeps_buffers(uri):
    torch.manual_seed(1)
    model = _DataDependent()
    params, buffers = _trained(model), TensorDict({"scale": torch.tensor(3.0)})
    x = torch.randn(3, 4)
    with tracking.RunTracker(uri, "models-pickle") as tracker:
        model_uri = tracker.log_model(model, params, buffers, x)
    assert model_uri is not None
    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pytorch.load_model(model_uri)
    assert isinstance(loaded, _DataDependent)
    reference = _DataDependent()
    reference.load_state_dict({**dict(params.items()), "scale": torch.tensor(3.0)})
    torch.testing.assert_close(loaded(x), reference(x))
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("models-pickle").experiment_id
    assert len(client.search_logged_models([experiment])) == 1  # the failed pt2 attempt was deleted


def test_cpu_module_takes_every_given_tensor_and_refuses_a_mismatch():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten())
    model.register_buffer("offset", torch.zeros(()), persistent=False)
    params = _trained(model)
    buffers = TensorDict({n: b + 1 for n, b in model.named_buffers()})
    copy = tracking.cpu_module(model.to("meta"), params, buffers)
    assert not copy.training and next(model.parameters()).is_meta
    got = {**dict(copy.named_parameters()), **dict(copy.named_buffers())}
    assert set(got) == set(params.keys()) | set(buffers.keys())
    for key, value in {**dict(params.items()), **dict(buffers.items())}.items():
        assert got[key].device.type == "cpu" and torch.equal(got[key], value), key
    with pytest.raises(RuntimeError, match="Missing key"):
        tracking.cpu_module(model, params.exclude("0.bias"), buffers)


def test_log_model_never_raises(uri):
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with pytest.warns(UserWarning, match="unreachable"):
        tracker = tracking.RunTracker(UNREACHABLE, "t")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert tracker.log_model(model, _trained(model), TensorDict({}), torch.zeros(2, 3, 2, 2)) is None
        assert tracker.log_model(model, _trained(model), TensorDict({}), torch.zeros(2, 3, 2, 2)) is None
    messages = [str(w.message) for w in caught if "not logged" in str(w.message)]
    assert len(messages) == 1 and "\n" not in messages[0]  # warned once, one line

    with tracking.RunTracker(uri, "models-bad") as online:  # params that do not fit the module
        with pytest.warns(UserWarning, match="not logged"):
            assert online.log_model(model, TensorDict({"0.weight": torch.zeros(3, 12)}), TensorDict({}),
                                    torch.zeros(2, 3, 2, 2)) is None


def test_log_dataset_shows_as_a_run_input(uri, tmp_path):
    images, labels = torch.randint(0, 255, (20, 3, 4, 4), dtype=torch.uint8), torch.arange(20) % 3
    digest = datasets.dataset_digest(images, labels)
    with tracking.RunTracker(uri, "datasets") as tracker:
        tracker.log_dataset("train", str(tmp_path), digest, num_samples=20, num_classes=3, image_shape=(3, 4, 4))
        tracker.log_dataset("test", "torchvision:CIFAR10", "0123456789ab", context="eval")
        run_id = tracker.run_id
    inputs = {i.dataset.name: i for i in MlflowClient(uri).get_run(run_id).inputs.dataset_inputs}
    assert set(inputs) == {"train", "test"}
    train = inputs["train"]
    assert train.dataset.digest == digest and train.dataset.source_type == "local"
    assert json.loads(train.dataset.source) == {"uri": str(tmp_path.resolve())}
    assert json.loads(train.dataset.profile) == {"num_samples": 20, "num_classes": 3, "image_shape": [3, 4, 4]}
    assert {(t.key, t.value) for t in train.tags} == {("mlflow.data.context", "training")}
    assert {(t.key, t.value) for t in inputs["test"].tags} == {("mlflow.data.context", "eval")}
    assert "torchvision:CIFAR10" in inputs["test"].dataset.source


def test_log_dataset_is_buffered_while_the_store_fails(uri, monkeypatch):
    real = MlflowClient.log_inputs
    down = {"on": True}

    def flaky(self, *args, **kwargs):
        if down["on"]:
            raise ConnectionError("store down")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_inputs", flaky)
    with tracking.RunTracker(uri, "datasets-buffered") as tracker:
        with pytest.warns(UserWarning, match="unreachable"):
            tracker.log_dataset("train", "data", "aaaaaaaaaaaa")
        assert tracker.buffered == 1
        down["on"] = False
        assert tracker.flush() and tracker.buffered == 0
        run_id = tracker.run_id
    (only,) = MlflowClient(uri).get_run(run_id).inputs.dataset_inputs
    assert only.dataset.digest == "aaaaaaaaaaaa"


def test_an_unsent_dataset_is_saved_and_replayed(uri, tmp_path):
    with pytest.warns(UserWarning, match="unreachable"):
        with tracking.RunTracker(UNREACHABLE, "datasets-replayed", fallback_dir=tmp_path) as tracker:
            tracker.log_dataset("train", "data", "bbbbbbbbbbbb", num_classes=10)
    folder = tmp_path / "tracking-unsent"
    assert [json.loads(line)["digest"] for line in (folder / "inputs.jsonl").read_text().splitlines()] == \
        ["bbbbbbbbbbbb"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tracking-unsent"]  # no temporary folder left
    run_id = replay.replay(folder, uri)
    (only,) = MlflowClient(uri).get_run(run_id).inputs.dataset_inputs
    assert (only.dataset.name, only.dataset.digest) == ("train", "bbbbbbbbbbbb")
    assert json.loads(only.dataset.profile) == {"num_classes": 10}


def test_an_artifact_in_a_folder_is_logged_there_and_survives_the_fallback(uri, tmp_path):
    with pytest.warns(UserWarning, match="unreachable"):
        with tracking.RunTracker(UNREACHABLE, "artifact-folders", fallback_dir=tmp_path) as tracker:
            tracker.log_text("what the model wrote", "samples/epoch-001.txt")
    assert (tmp_path / "tracking-unsent" / "artifacts" / "samples" / "epoch-001.txt").is_file()
    run_id = replay.replay(tmp_path / "tracking-unsent", uri)
    client = MlflowClient(uri)
    assert [a.path for a in client.list_artifacts(run_id, "samples")] == ["samples/epoch-001.txt"]
    assert Path(client.download_artifacts(run_id, "samples/epoch-001.txt", str(tmp_path))).read_text() == \
        "what the model wrote"


def test_dataset_digest_is_stable_sensitive_and_fast():
    g = torch.Generator().manual_seed(0)
    images = torch.zeros(50_000, 3, 32, 32, dtype=torch.uint8)  # CIFAR-10's training set size
    images[:, 0, 0, :] = torch.randint(0, 255, (50_000, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (50_000,), generator=g)
    start = time.perf_counter()
    digest = datasets.dataset_digest(images, labels)
    assert time.perf_counter() - start < 1.0  # milliseconds in fact; generous for a loaded machine
    assert len(digest) == 12 and int(digest, 16) >= 0
    assert datasets.dataset_digest(images[:].contiguous(), labels.clone()) == digest
    changed = labels.clone()
    changed[123] = (changed[123] + 1) % 10
    assert datasets.dataset_digest(images, changed) != digest
    images[0, 0, 0, 0] ^= 1  # the first image is always in the sample
    assert datasets.dataset_digest(images, labels) != digest
    images[0, 0, 0, 0] ^= 1
    assert datasets.dataset_digest(images[:-1], labels[:-1]) != digest
    small = images[:100]
    assert datasets.dataset_digest(small.float(), labels[:100]) != datasets.dataset_digest(small, labels[:100])


def test_system_metrics_without_psutil_warn_and_go_on(uri, monkeypatch):
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name, *a: None if name == "psutil" else
                        real(name, *a))
    with pytest.warns(UserWarning, match="system metrics need psutil: pip install psutil"):
        tracker = tracking.RunTracker(uri, "sysmetrics", system_metrics=True)
    with tracker:
        tracker.log_metrics({"loss": 1.0}, step=0)
    run = MlflowClient(uri).get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics == {"loss": 1.0}


def test_system_metrics_are_logged_when_psutil_is_there(uri, monkeypatch):
    pytest.importorskip("psutil")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    with tracking.RunTracker(uri, "sysmetrics", system_metrics=True) as tracker:
        time.sleep(1.0)
    run = MlflowClient(uri).get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert any(key.startswith("system/cpu") for key in run.data.metrics)


def test_the_null_tracker_has_the_new_methods():
    null = tracking.NullTracker()
    assert null.log_model(nn.Linear(1, 1), TensorDict({}), TensorDict({}), torch.zeros(1, 1)) is None
    assert null.log_dataset("d", "s", "x", num_samples=3) is None


def test_the_browse_address_opens_the_training_runs_whatever_the_browsers_switch_says(uri):
    """MLflow 3.17's UI takes its GenAI/Model training view from the browser (GenAI by default) unless the URL's
    workflowType says otherwise: the printed address says so, with the experiment's id."""
    with tracking.RunTracker(uri, "browse") as tracker:
        experiment_id = tracker.experiment_id
    assert experiment_id == MlflowClient(uri).get_experiment_by_name("browse").experiment_id
    assert store.browse_url(experiment_id) == \
        f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    line = store.ui_command(uri, experiment_id)
    assert line.startswith(f"mlflow ui --backend-store-uri {uri} ")
    assert line.endswith(store.browse_url(experiment_id))
    assert store.ui_command("http://mlflow.example:8080/", "3") == \
        "open http://mlflow.example:8080/#/experiments/3/runs?workflowType=machine_learning"
    with tracking.RunTracker(uri, "ignored", run_id=tracker.run_id) as resumed:  # a continued run knows it too
        assert resumed.experiment_id == experiment_id


# --------------------------------------------------------------------------- continued after a kill


def _steps(client, run_id, key):
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_a_continued_run_sends_once_what_its_killed_process_had_sent(uri):
    """A process flushed steps 0-5 and its epoch, then was killed before its checkpoint at step 5 was written; the
    run resumed from step 3 logs steps 3-7 and the epoch again: each is in the store once. A param the store holds is
    not sent again (MLflow refuses a changed value: the tracker would think the store down)."""
    first = tracking.RunTracker(uri, "continued", "r")
    first.log_params({"lr": 0.1})
    for step in range(6):
        first.log_metrics({"loss": step / 10}, step=step)
    first.log_metrics({"epoch/test_accuracy": 0.5}, step=1)
    assert first.flush()  # ... and killed here

    again = tracking.RunTracker(uri, "continued", "r", run_id=first.run_id)
    again.log_params({"lr": 0.1, "resume": True})
    for step in range(3, 8):
        again.log_metrics({"loss": step / 10}, step=step)
    again.log_metrics({"epoch/test_accuracy": 0.5}, step=1)
    again.log_metrics({"epoch/test_accuracy": 0.75}, step=2)
    again.finish()
    assert again.online
    client = MlflowClient(uri)
    assert _steps(client, first.run_id, "loss") == list(range(8))
    assert _steps(client, first.run_id, "epoch/test_accuracy") == [1, 2]
    assert client.get_run(first.run_id).data.params == {"lr": "0.1", "resume": "True"}


def test_a_run_whose_id_was_never_recorded_is_continued_by_its_key(uri):
    first = tracking.RunTracker(uri, "keyed", "r", key="k1")  # killed before its run.json held the run's id
    first.log_metrics({"loss": 1.0}, step=0)
    assert first.flush()
    again, other = tracking.RunTracker(uri, "keyed", "r", key="k1"), tracking.RunTracker(uri, "keyed", "r", key="k2")
    assert again.run_id == first.run_id != other.run_id
    again.log_metrics({"loss": 1.0}, step=0)
    again.log_metrics({"loss": 0.5}, step=1)
    again.finish()
    assert _steps(MlflowClient(uri), first.run_id, "loss") == [0, 1]


def test_unsent_tracking_taken_back_and_logged_again_is_sent_once(uri, tmp_path, monkeypatch):
    """The store was down: steps 0-5 were saved in tracking-unsent/ at the safe point of step 5, then the process was
    killed before that checkpoint; resumed from step 3 with the store back, steps 3-7 are logged again."""
    real_log_batch = MlflowClient.log_batch

    def down(self, run_id, metrics=(), *args, **kwargs):
        if metrics:
            raise ConnectionError("store down")
        return real_log_batch(self, run_id, metrics, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", down)
    first = tracking.RunTracker(uri, "unsent-again", "r", fallback_dir=tmp_path)
    for step in range(6):
        first.log_metrics({"loss": step / 10}, step=step)
    with pytest.warns(UserWarning, match="unreachable"):
        assert not first.flush()
    first.save_fallback()
    monkeypatch.setattr(MlflowClient, "log_batch", real_log_batch)

    again = tracking.RunTracker(uri, "unsent-again", "r", run_id=first.run_id, fallback_dir=tmp_path)
    again.adopt(tmp_path / "tracking-unsent")
    for step in range(3, 8):
        again.log_metrics({"loss": step / 10}, step=step)
    again.finish()
    assert _steps(MlflowClient(uri), first.run_id, "loss") == list(range(8))
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # sent: the folder is gone, nothing left aside


def test_a_run_holds_one_model_when_its_end_is_logged_again(uri):
    """A process killed mid-upload left an unfinished logged model; its resume logs the model and the final metrics;
    killed before result.json, the next resume logs them again: one finished model, each final metric once."""
    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)), torch.randn(4, 3, 2, 2)
    first = tracking.RunTracker(uri, "model-once", "r")
    client = MlflowClient(uri)
    client.create_logged_model(first.experiment_id, name="model", source_run_id=first.run_id)  # killed mid-upload
    for _ in range(2):
        again = tracking.RunTracker(uri, "model-once", "r", run_id=first.run_id)
        uri_logged = again.log_model(model, input_example=x, step=7, metrics={"final/test_accuracy": 0.5})
        again.finish()
    (logged,) = client.search_logged_models([first.experiment_id])
    assert str(logged.status) == "READY" and uri_logged.endswith(logged.model_id)
    assert _steps(client, first.run_id, "final/test_accuracy") == [7]
