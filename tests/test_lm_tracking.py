"""An LM run tracked in MLflow: params from the data's
description, per-epoch validation bits per byte, a description that names the corpus and its bits per byte."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from test_lm import _gpt, corpus  # noqa: F401  (corpus: the fixture)

import functional_ast as fa
from functional_ast.data import text
from functional_ast.edges import tracking
from functional_ast.edges.callbacks import MLflowTracking


def test_an_lm_run_logs_bits_per_byte_per_epoch(tmp_path, monkeypatch, corpus):  # noqa: F811
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    train, test = corpus
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    callback = MLflowTracking(uri, "lm", "gpt-sundew", log_model=False, announce=None)
    config = fa.TrainConfig(strategy="sundew", epochs=2, cooldown_epochs=0, batch_size=8, target_rate=0.5,
                            optimizer="adam", lr=3e-3)
    result = fa.fit(_gpt, train, test, config, task=fa.language_modelling(), callbacks=[callback])
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(callback.run_id)
    assert run.info.status == "FINISHED"
    assert int(run.data.params["train_samples"]) == len(train) and run.data.params["classes"] == "0"
    bpb = client.get_metric_history(run.info.run_id, "epoch/test_bits_per_byte")
    assert sorted(m.step for m in bpb) == [1, 2] and all(math.isfinite(m.value) for m in bpb)
    last = max(bpb, key=lambda m: m.step).value
    assert math.isclose(last, result.summary["test_bits_per_byte"], rel_tol=1e-6)
    note = run.data.tags[tracking.NOTE_TAG]
    assert "training windows of" in note and "test bits per byte" in note


def test_a_tracked_lm_fit_logs_the_corpus_a_sample_per_evaluation_and_a_model_that_generates(tmp_path, monkeypatch,
                                                                                             corpus):  # noqa: F811
    import mlflow
    import mlflow.pytorch
    from mlflow.tracking import MlflowClient

    from functional_ast.edges import samples
    from functional_ast.edges.tracked import Tracking, tracked_fit

    monkeypatch.chdir(tmp_path)
    train, test = corpus
    data = text.TextData.of(train, test)
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    config = fa.TrainConfig(strategy="sundew", epochs=2, cooldown_epochs=0, batch_size=8, target_rate=0.5,
                            optimizer="adam", lr=3e-3)
    out = tracked_fit(_gpt, data, config, "lm-run", Tracking(uri, "lm", data_name="tiny-corpus"), progress=False,
                      task=fa.language_modelling())
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(out.run_id)
    params = run.data.params
    assert run.info.status == "FINISHED" and params["data"] == "tiny-corpus"
    assert params["corpus_digest"] == train.corpus.digest and params["context"] == str(train.context)
    assert params["data_digest"] == train.corpus.digest[:12]
    assert params["train_samples"] == str(len(train)) and params["test_samples"] == str(len(test))
    assert "image_shape" not in params and str(tmp_path) not in " ".join(params.values())
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "tiny-corpus" and dataset.dataset.digest == train.corpus.digest[:12]
    assert '"context": 16' in dataset.dataset.profile
    final = client.get_metric_history(out.run_id, "final/test_bits_per_byte")
    assert final and math.isclose(final[-1].value, out.result.summary["test_bits_per_byte"], rel_tol=1e-6)
    for key in ("loss", "loss_seen", "activation_rate", "threshold"):
        assert client.get_metric_history(out.run_id, key), key
    names = sorted(a.path for a in client.list_artifacts(out.run_id, "samples"))
    assert names == ["samples/epoch-001.txt", "samples/epoch-002.txt"]
    sample = \
        Path(client.download_artifacts(out.run_id, "samples/epoch-002.txt", str(tmp_path))).read_text()
    assert "--- prompt ---" in sample and "--- generated ---" in sample
    logged = client.search_logged_models([run.info.experiment_id])
    (model_info,) = logged
    assert "byte-level language model" in model_info.tags[tracking.NOTE_TAG]
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pytorch.load_model(f"models:/{model_info.model_id}")
    finally:
        mlflow.set_tracking_uri(before)
    out_bytes = samples.generate(model, samples.prompt_of(data), train.context, length=20, temperature=0)
    assert out_bytes.shape == (20,) and int(out_bytes.min()) >= 0 and int(out_bytes.max()) < 256
    x = test.gather(torch.arange(2))[:, :-1]
    reference = torch.func.functional_call(_gpt(), dict(out.result.state["params"].items()), (x,))
    assert torch.allclose(model(x), reference, atol=1e-5)
