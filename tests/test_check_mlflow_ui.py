"""tools/check_mlflow_ui.py against a CLI run: MLflow's REST API and the UI's routes (always), and what a fresh
headless Chromium profile renders at the printed address (skipped where chromium is not installed)."""

from __future__ import annotations

import importlib.util
import os

import pytest
from conftest import REPO

_spec = importlib.util.spec_from_file_location("check_mlflow_ui", REPO / "tools" / "check_mlflow_ui.py")
ui = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ui)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A demo run (the tool's own: the CLI on tiny synthetic images) and `mlflow ui` on a free port over it."""
    tmp = tmp_path_factory.mktemp("ui")
    here = os.getcwd()
    os.chdir(tmp)
    try:
        uri = ui.demo_store(tmp, epochs=3)
    finally:
        os.chdir(here)
    with ui.mlflow_ui(uri, ui.free_port(0)) as base:
        yield base


def test_rest_and_ui_routes_show_the_runs_and_the_models_final_metrics(server):
    found = ui.check_rest(server, "functional_ast")
    assert found["runs"] == ["demo-sundew"] and len(found["models"]) == 1
    assert found["kind"] == "custom_model_development" and "static/js/main." in found["script"]


def test_a_model_linked_to_another_step_or_without_datasets_fails_the_check():
    def model(step, dataset="images"):
        return {"info": {"model_id": "m-1", "status": "LOGGED_MODEL_READY",
                         "tags": [{"key": "mlflow.note.content", "value": "takes uint8"}]},
                "data": {"metrics": [{"key": "final/test_accuracy", "value": 0.7, "step": step,
                                      "dataset_name": dataset}]}}
    run = {"final/steps": {"value": 12}, "final/test_accuracy": {"value": 0.7}}
    assert ui.check_model(model(12), {"step": 12}, run, "r") == "m-1"
    with pytest.raises(ui.CheckFailed, match="not the final step"):
        ui.check_model(model(0), {"step": 0}, run, "r")  # the untrained model's metrics (issue 28)
    with pytest.raises(ui.CheckFailed, match="Datasets used"):
        ui.check_model(model(12, dataset=None), {"step": 12}, run, "r")
    with pytest.raises(ui.CheckFailed, match="workflowType"):
        ui.check_view_selection('const k="mlflow.workflowType";')


@pytest.mark.skipif(ui.chromium_path() is None, reason="headless chromium is not installed (apt-get install chromium)")
def test_a_fresh_browser_profile_lands_on_the_training_runs(server, tmp_path):
    found = ui.check_rest(server, "functional_ast")
    shot = tmp_path / "runs.png"
    seen = ui.check_browser(ui.chromium_path(), server, found, screenshot=shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "demo-sundew" in seen["runs"] and found["models"][0] in seen
