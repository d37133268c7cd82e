"""Run folders, resume compatibility and tracked comparisons as a library: objects in, no command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from functional_ast.edges import runs
from functional_ast.edges.tracked import Tracking, portable_path, portable_uri, tracked_compare
from functional_ast.models import build_model
from functional_ast.train.config import ConfigError, TrainConfig
from functional_ast.train.trainer import Data


def test_a_compared_run_folder_names_its_seed_and_finds_one_made_before(tmp_path):
    """Under --seeds every run's folder names its seed (so seeds can be added later); a comparison started with
    a single --seeds value before that (folder "<label>") is still found for that seed, and only for it."""
    assert runs.seed_folder(tmp_path, "stale", 0, seeded=False) == tmp_path / "stale"
    assert runs.seed_folder(tmp_path, "stale", 0, seeded=True) == tmp_path / "stale-seed0"
    (tmp_path / "stale").mkdir()
    (tmp_path / "stale" / "run.json").write_text(json.dumps({"config": {"seed": 3}, "run_id": None}))
    assert runs.seed_folder(tmp_path, "stale", 3, seeded=True) == tmp_path / "stale"
    assert runs.seed_folder(tmp_path, "stale", 4, seeded=True) == tmp_path / "stale-seed4"


def test_a_run_from_before_a_flag_existed_resumes_with_the_flag_it_ran_as(tmp_path):
    # memory_format was added later: a run.json without it ran NCHW, which --memory-format contiguous names
    info = dict(config=dict(lr=0.05, strategy="stale"), run_id="r")
    (tmp_path / "run.json").write_text(json.dumps(info))
    assert runs.read_run_info(tmp_path, dict(lr=0.05, strategy="stale", memory_format="contiguous")) == info
    with pytest.raises(ConfigError, match="'contiguous' then, 'auto' now.*--memory-format contiguous"):
        runs.read_run_info(tmp_path, dict(lr=0.05, strategy="stale", memory_format="auto"))
    with pytest.raises(ConfigError, match="lr: 0.05 then, 0.1 now") as refused:
        runs.read_run_info(tmp_path, dict(lr=0.1, strategy="stale", memory_format="contiguous"))
    assert "--lr" not in str(refused.value)  # only flags the old run.json lacks get a suggestion
    # label_smoothing too: a run.json without it trained on plain cross-entropy
    assert runs.read_run_info(tmp_path, dict(lr=0.05, strategy="stale", label_smoothing=0.0)) == info
    with pytest.raises(ConfigError, match="label_smoothing: 0.0 then, 0.2 now"):
        runs.read_run_info(tmp_path, dict(lr=0.05, strategy="stale", label_smoothing=0.2))
    # and in a comparison's configs, as tracked_compare saves them
    old = dict(config=dict(configs={"stale": dict(lr=0.05)}), run_id="r")
    (tmp_path / "run.json").write_text(json.dumps(old))
    now = dict(lr=0.05, label_smoothing=0.0, precision="32", memory_format="contiguous")
    assert runs.read_run_info(tmp_path, dict(configs={"stale": now})) == old
    with pytest.raises(ConfigError, match=r"\(configs.stale.label_smoothing: 0.0 then, 0.2 now\)") as refused:
        runs.read_run_info(tmp_path, dict(configs={"stale": dict(now, label_smoothing=0.2)}))
    assert "configs.stale.lr" not in str(refused.value) and "{" not in str(refused.value)  # only what changed
    with pytest.raises(ConfigError, match="configs.stale.memory_format: 'contiguous' then.*--memory-format contiguous"):
        runs.read_run_info(tmp_path, dict(configs={"stale": dict(now, memory_format="auto")}))


def test_params_hold_no_path_of_this_machine(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert portable_path(tmp_path / "store" / "x") == "store/x" and portable_path("./data") == "./data"
    assert portable_path("/elsewhere/deep/ckpt/a") == ".../ckpt/a"
    assert portable_path(tmp_path / "ckpt" / "cmp" / "1", root=tmp_path / "ckpt") == "cmp/1"
    assert portable_uri(f"sqlite:///{tmp_path}/store/mlflow.db") == "sqlite:///store/mlflow.db"
    assert portable_uri("sqlite:///mlruns/mlflow.db") == "sqlite:///mlruns/mlflow.db"
    assert portable_uri("http://host:5000") == "http://host:5000"


def _tensors(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = (torch.rand(n, 3, 8, 8, generator=g) * 60 + 60 * labels.view(-1, 1, 1, 1)).to(torch.uint8)
    return images, labels


def test_a_library_user_runs_a_tracked_comparison_with_objects_and_resumes_it(tmp_path, monkeypatch, capsys):
    """No argv: a model builder, a Data, named TrainConfigs, a Tracking. The comparison leaves its folder
    (run.json, one sub-folder per entry and seed with its result.json), a parent MLflow run with the table, figures
    and per-entry metrics over nested runs, params without machine paths; resumed, it reads every run back, and
    a resume that drops a seed is refused."""
    monkeypatch.chdir(tmp_path)
    data = Data.prepare(_tensors(64, 0), _tensors(16, 1))
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    where = Tracking(uri, "lib", checkpoint_dir=tmp_path / "ckpt", log_model=False, data_name="blobs")
    base = TrainConfig(strategy="full", epochs=2, warmup_epochs=1, batch_size=16, target_rate=0.5)
    configs = {"full": base, "random": base.replace(strategy="random"),
               "random:cooldown=1": base.replace(strategy="random", cooldown_epochs=1)}

    def build():
        return build_model("cnn", num_classes=4, in_channels=3, image_size=8)

    out = tracked_compare(build, data, configs, "cmp", where, seeds=[0, 1], progress=False, model_label="cnn")
    assert [(r.summary["strategy"], r.summary["seed"]) for r in out.results] == [
        (name, seed) for seed in (0, 1) for name in configs]
    (folder,) = (tmp_path / "ckpt" / "cmp").iterdir()
    assert out.folder == folder
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == sorted(
        f"{label}-seed{seed}" for label in ("full", "random", "random-cooldown1") for seed in (0, 1))
    info = json.loads((folder / "run.json").read_text())
    assert info["run_id"] == out.run_id and info["run_name"] == "cmp" and info["config"]["seeds"] == "0,1"
    sub = json.loads((folder / "random-cooldown1-seed1" / "run.json").read_text())
    assert sub["config"]["strategy"] == "random:cooldown=1" and sub["config"]["seed"] == 1
    assert (folder / "random-cooldown1-seed1" / "result.json").is_file()

    client = MlflowClient(uri)
    parent = client.get_run(out.run_id)
    assert parent.info.status == "FINISHED" and parent.info.experiment_id == out.experiment_id
    assert {"comparison.md", "comparison.json", "compare_accuracy_vs_time.png"} <= {
        a.path for a in client.list_artifacts(out.run_id)}
    assert "random-cooldown1/seed1/samples_trained" in parent.data.metrics
    assert parent.data.params["compare"] == "full,random,random:cooldown=1" and parent.data.params["seeds"] == "0,1"
    children = client.search_runs([out.experiment_id], f"tags.mlflow.parentRunId = '{out.run_id}'")
    assert sorted(r.info.run_name for r in children) == sorted(
        f"{label}-cnn-seed{seed}" for label in ("full", "random", "random-cooldown1") for seed in (0, 1))
    for run in [parent, *children]:  # no path of this machine in any param, nor in the data set's source
        assert not [k for k, v in run.data.params.items() if str(tmp_path) in v], run.data.params
    child = client.get_run(children[0].info.run_id)
    assert child.data.params["tracking_uri"] == "sqlite:///store/mlflow.db"
    assert child.data.params["checkpoint_folder"] == Path(folder.relative_to(tmp_path / "ckpt"),
                                                          child.info.run_name.replace("-cnn", "")).as_posix()
    (dataset,) = child.inputs.dataset_inputs
    assert dataset.dataset.name == "blobs" and dataset.dataset.digest in dataset.dataset.source
    assert child.data.params["data"] == "blobs" and child.data.params["data_digest"] == dataset.dataset.digest

    capsys.readouterr()
    again = tracked_compare(build, data, configs, "cmp", where, seeds=[0, 1], resume=True, progress=False)
    keys = ("strategy", "seed", "test_accuracy", "train_time_s", "samples_trained")
    assert [[r.summary[k] for k in keys] for r in again.results] == [[r.summary[k] for k in keys] for r in out.results]
    assert again.run_id == out.run_id and "resuming from" not in capsys.readouterr().out
    with pytest.raises(ConfigError, match="--seeds may add seeds, not drop them"):
        tracked_compare(build, data, configs, "cmp", where, seeds=[1], resume=True, progress=False)
