"""An LM run tracked in MLflow (without the logged model, which is image-only for now): params from the data's
description, per-epoch validation bits per byte, a description that names the corpus and its bits per byte."""

from __future__ import annotations

import math

from test_lm import _gpt, corpus  # noqa: F401  (corpus: the fixture)

import functional_ast as fa
from functional_ast.edges import tracking
from functional_ast.edges.callbacks import MLflowTracking


def test_an_lm_run_logs_bits_per_byte_per_epoch(tmp_path, monkeypatch, corpus):  # noqa: F811
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    train, test = corpus
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    callback = MLflowTracking(uri, "lm", "gpt-sundew", log_model=False, announce=None)
    config = fa.TrainConfig(strategy="sundew", epochs=2, batch_size=8, target_rate=0.5, optimizer="adam", lr=3e-3)
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
