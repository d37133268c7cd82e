"""The logged model takes what a user has (raw uint8 images), normalises them itself, and is linked to the final
step's metrics and their datasets; a CLI run's model classifies raw test images at the run's test accuracy."""

from __future__ import annotations

import json
import os

import mlflow
import mlflow.pytorch
import pytest
import torch
from mlflow.tracking import MlflowClient
from tensordict import TensorDict
from test_cli import CLASSES, _image_folder
from torch import nn
from torchvision.io import read_image

from functional_ast.cli import main as cli
from functional_ast.edges import store, tracking
from functional_ast.edges.model_export import RawImageClassifier, description


@pytest.fixture(autouse=True)
def _global_tracking_uri_untouched():
    before = mlflow.get_tracking_uri()
    yield
    mlflow.set_tracking_uri(before)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


MEAN, STD = torch.tensor([0.2, 0.5, 0.7]), torch.tensor([0.1, 0.25, 0.3])


def test_raw_image_classifier_normalises_uint8_and_unit_floats_as_training_did():
    net = _net().eval()
    raw = torch.randint(0, 256, (5, 3, 6, 6), dtype=torch.uint8)
    want = net((raw.float() / 255 - MEAN.view(1, -1, 1, 1)) / STD.view(1, -1, 1, 1))
    wrapped = RawImageClassifier(net, MEAN, STD).eval()
    torch.testing.assert_close(wrapped(raw), want)
    torch.testing.assert_close(wrapped(raw.float() / 255), want)  # floats in [0, 1]: the same
    assert set(dict(wrapped.named_buffers())) == {"mean", "std"}
    with pytest.raises(ValueError, match="channels"):
        RawImageClassifier(net, MEAN, STD[:2])


def test_the_logged_model_takes_uint8_and_is_linked_to_the_final_metrics_and_datasets(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    net = _net()
    params = TensorDict({n: p.detach() * 0.5 for n, p in net.named_parameters()})
    raw = torch.randint(0, 256, (6, 3, 6, 6), dtype=torch.uint8)
    reference = RawImageClassifier(_net(), MEAN, STD).eval()
    reference.network.load_state_dict(dict(params.items()))
    with tracking.RunTracker(uri, "export") as tracker:
        tracker.log_metrics({"loss": 2.5}, step=0)  # step 0: the untrained model's, not to be linked
        tracker.log_metrics({"loss": 0.5}, step=7)
        tracker.flush()
        model_uri = tracker.log_model(
            net.to("meta"), params, TensorDict({}), raw[:2], step=7,
            metrics={"final/test_accuracy": 0.75, "final/train_time_s": 3.0},
            datasets={"final/test_accuracy": ("toy-test", "bbbbbbbbbbbb"), "final/train_time_s": ("toy", "aaaa")},
            normalisation=(MEAN, STD), description=lambda form: f"takes uint8 ({form})",
            metadata={"classes": ["a", "b", "c"]})
        run_id = tracker.run_id
    assert model_uri is not None
    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pytorch.load_model(model_uri)
    assert isinstance(loaded, torch.fx.GraphModule)  # still "pt2": loads without this package
    torch.testing.assert_close(loaded(raw), reference(raw))  # raw uint8 in, the normalisation inside
    torch.testing.assert_close(loaded(raw.float() / 255), reference(raw))  # floats in [0, 1]: the same graph
    torch.testing.assert_close(loaded(raw[:1]), reference(raw[:1]))  # any batch size

    info = mlflow.models.get_model_info(model_uri)
    (spec,) = info.signature.inputs.inputs
    assert str(spec.type) == "uint8"
    assert tuple(spec.shape) == (-1, 3, 6, 6)
    assert info.metadata["classes"] == ["a", "b", "c"]

    client = MlflowClient(uri)
    model_id = model_uri.split("/")[-1]
    logged = client.get_logged_model(model_id)
    assert logged.tags[tracking.NOTE_TAG] == "takes uint8 (pt2)"
    linked = {m.key: m for m in logged.metrics}
    # The step's own metrics too (MLflow links every run metric at the step): the final loss, not step 0's.
    assert set(linked) == {"final/test_accuracy", "final/train_time_s", "loss"} and linked["loss"].value == 0.5
    assert {m.step for m in logged.metrics} == {7}
    assert (linked["final/test_accuracy"].value, linked["final/test_accuracy"].dataset_name,
            linked["final/test_accuracy"].dataset_digest) == (0.75, "toy-test", "bbbbbbbbbbbb")
    assert linked["final/train_time_s"].dataset_name == "toy"
    run = client.get_run(run_id)
    assert [(o.model_id, o.step) for o in run.outputs.model_outputs] == [(model_id, 7)]
    assert run.data.metrics["final/test_accuracy"] == 0.75  # the run has them too


def test_metrics_of_a_model_that_is_not_logged_still_reach_the_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    net = _net()
    with tracking.RunTracker(uri, "export-fails") as tracker:
        with pytest.warns(UserWarning, match="not logged"):
            assert tracker.log_model(net, TensorDict({"0.weight": torch.zeros(1)}), TensorDict({}),
                                     torch.zeros(2, 3, 6, 6, dtype=torch.uint8), step=3,
                                     metrics={"final/test_accuracy": 0.5}, normalisation=(MEAN, STD)) is None
    history = MlflowClient(uri).get_metric_history(tracker.run_id, "final/test_accuracy")
    assert [(m.step, m.value) for m in history] == [(3, 0.5)]


def test_description_says_what_goes_in_and_what_comes_out():
    text = description(CLASSES, MEAN.tolist(), STD.tolist(), (3, 32, 32), "sundew", "run-a", 0.7369)
    assert "uint8 images [B, 3, 32, 32]" in text and "0-255" in text and "float32 in [0, 1]" in text
    assert "mean (0.2000, 0.5000, 0.7000)" in text and "std (0.1000, 0.2500, 0.3000)" in text
    assert "logits [B, 4]" in text and "ant, bee, cat, dog" in text and "0.7369" in text
    assert "Test accuracy" not in description(CLASSES, MEAN, STD, (3, 8, 8), "s", "r", None)


# --------------------------------------------------------------------------- a CLI run, end to end


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """One CLI run on the tiny synthetic set (warm-up, selective epochs), as the user starts it."""
    tmp = tmp_path_factory.mktemp("cli-model")
    data = _image_folder(tmp / "images")
    uri = f"sqlite:///{tmp}/store/mlflow.db"
    here = os.getcwd()
    os.chdir(tmp)
    try:
        assert cli.main(["--data", str(data), "--strategy", "sundew_remembered", "--epochs", "4",
                         "--warmup-epochs", "1", "--batch-size", "16", "--target-rate", "0.5",
                         "--tracking-uri", uri, "--experiment", "t", "--no-progress",
                         "--log-every", "2"]) == 0
    finally:
        os.chdir(here)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    return tmp, uri, client, run


def _raw_test_images(root):
    """The test images as a user has them: PNG files read as uint8 [C, H, W], the class from the folder."""
    images, labels = [], []
    for label, name in enumerate(CLASSES):
        for path in sorted((root / "test" / name).glob("*.png")):
            images.append(read_image(str(path)))
            labels.append(label)
    return torch.stack(images), torch.tensor(labels)


def test_the_cli_runs_model_classifies_raw_uint8_test_images_at_the_runs_test_accuracy(cli_run):
    tmp, uri, client, run = cli_run
    (output,) = run.outputs.model_outputs
    mlflow.set_tracking_uri(uri)
    model = mlflow.pytorch.load_model(f"models:/{output.model_id}")
    info = mlflow.models.get_model_info(f"models:/{output.model_id}")
    assert info.metadata["classes"] == list(CLASSES)
    images, labels = _raw_test_images(tmp / "images")
    assert images.dtype == torch.uint8
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
        assert torch.equal(model(images.float() / 255).argmax(dim=1), predicted)  # or as ToTensor gives them
    accuracy = (predicted == labels).sum().item() / len(labels)
    assert accuracy == run.data.metrics["final/test_accuracy"]  # exactly: the same images, the same arithmetic
    assert accuracy > 1 / len(CLASSES)  # and it learnt something (the classes differ in brightness)

    final_step = int(run.data.metrics["final/steps"])
    assert output.step == final_step
    logged = client.get_logged_model(output.model_id)
    linked = {m.key: m for m in logged.metrics}
    assert linked and all(k.startswith("final/") for k in linked) and {m.step for m in logged.metrics} == {final_step}
    assert linked["final/test_accuracy"].value == run.data.metrics["final/test_accuracy"]
    (train,) = run.inputs.dataset_inputs  # the training set is the run's input
    assert train.dataset.name == "images"
    assert (linked["final/train_time_s"].dataset_name, linked["final/train_time_s"].dataset_digest) == \
        ("images", train.dataset.digest)
    test = linked["final/test_accuracy"]  # the test metrics name the test split they were measured on
    assert test.dataset_name == "images-test" and len(test.dataset_digest) == 12
    assert test.dataset_digest != train.dataset.digest
    assert "uint8 images [B, 3, 8, 8]" in logged.tags[tracking.NOTE_TAG]


def test_the_run_records_the_normalisation_and_resolved_values(cli_run):
    tmp, uri, client, run = cli_run
    mean = [float(v) for v in run.data.params["normalise_mean"].split(",")]
    std = [float(v) for v in run.data.params["normalise_std"].split(",")]
    assert len(mean) == len(std) == 3 and all(0 < v < 1 for v in mean + std)
    client.download_artifacts(run.info.run_id, "config.json", str(tmp))
    client.download_artifacts(run.info.run_id, "summary.json", str(tmp))
    config = json.loads((tmp / "config.json").read_text())
    summary = json.loads((tmp / "summary.json").read_text())
    assert config["lr"] == 0.05 and config["pool_size"] == 32  # resolved (16 / 0.5), not null
    assert config["normalise_mean"] == pytest.approx(mean, abs=1e-5)
    assert summary["normalise_std"] == pytest.approx(std, abs=1e-5)
    # The data by name and digest, not a path on this machine.
    (train,) = run.inputs.dataset_inputs
    assert run.data.params["data"] == "images" and run.data.params["data_digest"] == train.dataset.digest
    assert "download" not in run.data.params  # the generic command has no download


def test_a_comparison_logs_the_data_by_name_and_prints_the_training_runs_address(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = _image_folder(tmp_path / "images")
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    assert cli.main(["--data", str(data), "--epochs", "1", "--batch-size", "32", "--tracking-uri", uri,
                     "--no-progress", "--no-log-model", "--compare", "full"]) == 0
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("functional_ast").experiment_id
    assert f"Browse the runs: {store.ui_command(uri, experiment)}" in capsys.readouterr().out
    assert {r.data.params["data"] for r in client.search_runs([experiment])} == {"images"}


def test_the_logged_model_is_named_after_its_rule_and_task_and_says_how_to_handle_it(cli_run):
    tmp, uri, client, run = cli_run
    (output,) = run.outputs.model_outputs
    logged = client.get_logged_model(output.model_id)
    assert logged.name == f"{run.data.params['strategy']}-image-classification"
    note = logged.tags[tracking.NOTE_TAG]
    mlflow.set_tracking_uri(uri)
    model = mlflow.pytorch.load_model(f"models:/{output.model_id}")
    if isinstance(model, torch.nn.Module) and type(model).__name__ != "GraphModule":
        model.eval()  # a pickled module takes eval(), and its description says so
        assert "an nn.Module in eval mode" in note
    else:
        assert "already in eval mode: call it directly" in note  # torch.export's program: no eval(), as said
    assert "pyfunc flavour's signature takes uint8 inputs" in note
