"""The registry: a rule from outside the package (the README's example, as written) runs through `fit` and the
command line with no edit to the package; options are validated; names are unique."""

from __future__ import annotations

import re
import sys

import pytest
import torch
from conftest import REPO
from test_cli import _client, _image_folder

import functional_ast as fa
from functional_ast import strategies
from functional_ast.cli import main as cli


def _readme_rule(tmp_path, monkeypatch) -> str:
    """The README's one-file rule, written out as module my_rules.py on sys.path; returns its spec."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Adding a selection rule"):text.index("## Limits")]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    (tmp_path / "my_rules.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_rules", raising=False)
    return "my_rules:RULE"


def test_the_package_lists_its_rules_only_in_the_registry():
    assert strategies.names()[:3] == ("full", "random", "sundew")
    assert {"stale", "small_loss", "sundew_remembered", "infobatch", "rho_loss", "proxy", "prioritized"} <= set(
        strategies.names())
    for name in strategies.names():  # each built-in name is written once, in its own file's registration
        hits = [p for p in (REPO / "functional_ast").rglob("*.py") if re.search(rf'Rule\(\s*"{name}"', p.read_text())]
        assert len(hits) == 1, (name, hits)


def test_a_rule_from_outside_the_package_runs_through_fit(tmp_path, monkeypatch):
    spec = _readme_rule(tmp_path, monkeypatch)
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(256, 1, 8, 8, generator=g), torch.randint(0, 4, (256,), generator=g)
    config = fa.TrainConfig(strategy=spec, options={"scale": 0.5}, target_rate=0.5, epochs=2, warmup_epochs=1,
                            cooldown_epochs=0,
                            batch_size=16)
    result = fa.fit(lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4)), (images, labels),
                    (images[:32], labels[:32]), config)
    # warm-up: 16 batches of 16 = 256; then 8 pools of round(16 / 0.5) = 32, each training round(0.25 * 32) = 8
    assert result.summary["samples_trained"] == 256 + 8 * 8
    assert result.summary["strategy"] == spec and "top_loss" in strategies.names()
    assert not any("top_loss" in p.read_text() for p in (REPO / "functional_ast").rglob("*.py"))


def test_a_rule_from_outside_the_package_runs_through_the_command_line_with_its_own_flag(tmp_path, monkeypatch):
    spec = _readme_rule(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    data, uri = _image_folder(tmp_path / "images"), f"sqlite:///{tmp_path}/store/mlflow.db"
    code = cli.main(["--data", str(data), "--strategy", spec, "--top-loss-scale", "0.5", "--epochs", "2",
                     "--cooldown-epochs", "0", "--warmup-epochs", "1", "--batch-size", "16", "--target-rate", "0.5",
                     "--tracking-uri", uri, "--experiment", "rules", "--no-progress", "--no-log-model"])
    assert code == 0
    client = _client(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("rules").experiment_id])
    assert run.data.params["strategy"] == spec
    # 96 samples: 6 warm-up batches of 16, then 3 pools of 32, each training round(0.25 * 32) = 8
    assert run.data.metrics["final/samples_trained"] == 96 + 3 * 8


def test_a_rule_that_does_not_import_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = _image_folder(tmp_path / "images")
    with pytest.raises(SystemExit) as exit_:  # argparse's exit, with the parser's one line
        cli.main(["--data", str(data), "--strategy", "no_such_module:RULE", "--epochs", "1"])
    code = exit_.value.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "no_such_module:RULE" in err


def test_options_are_the_rules_own_and_validated():
    with pytest.raises(fa.ConfigError, match=r"stale\.rule must be one of"):
        fa.TrainConfig(strategy="stale", options={"rule": "bogus"})
    with pytest.raises(fa.ConfigError, match="has no option width"):
        fa.TrainConfig(strategy="stale", options={"width": 3})
    assert fa.TrainConfig(strategy="rho_loss", options={"reference_epochs": 3}).replace(
        strategy="stale").options == {}  # a change of rule keeps only the options the new rule has
    with pytest.raises(fa.ConfigError, match="already registered"):
        strategies.register(strategies.Rule("stale", lambda context, options: strategies.full()))
